/*
 * dsmkit/common.h: the small vocabulary every dsmkit header shares.
 *
 * Datum, the export macro and the pointer/integer conversion macros.  This
 * header is public and self-contained; it never includes config.h.
 */
#ifndef DSMKIT_COMMON_H
#define DSMKIT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * DSMKIT_API marks a name that libdsmkit exports.  The library is compiled
 * with -fvisibility=hidden, so anything without it stays internal.
 */
#if defined(__GNUC__) || defined(__clang__)
#define DSMKIT_API __attribute__((visibility("default")))
#define DSMKIT_NORETURN __attribute__((noreturn))
#define DSMKIT_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DSMKIT_API
#define DSMKIT_NORETURN
#define DSMKIT_PRINTF(fmt, args)
#endif

/*
 * A Datum is an integer wide enough to hold a pointer.  Callbacks (exit
 * hooks, detach callbacks, resource release functions) take one so that a
 * caller can pass either a small integer or a pointer to its own state.
 */
typedef uintptr_t Datum;

#define PointerGetDatum(p) ((Datum) (p))
#define DatumGetPointer(d) ((void *) (d))
#define Int32GetDatum(i) ((Datum) (intptr_t) (int32_t) (i))
#define DatumGetInt32(d) ((int32_t) (intptr_t) (d))
#define UInt32GetDatum(u) ((Datum) (uint32_t) (u))
#define DatumGetUInt32(d) ((uint32_t) (d))
#define BoolGetDatum(b) ((Datum) ((b) ? 1 : 0))
#define DatumGetBool(d) ((bool) ((d) != 0))

/* PostgreSQL spells size_t "Size"; keep the name for readers of its code. */
typedef size_t Size;

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_COMMON_H */
