/*
 * dsmkit/palloc.h: allocating in memory contexts (palloc and friends).
 *
 * A memory context is a talloc context: code that already uses talloc may
 * hang its own objects (with destructors) below a context, and freeing the
 * context with talloc_free() deletes it.  The chunks palloc() returns are
 * not talloc objects: they are carved out of blocks the context owns (as
 * in PostgreSQL's AllocSet), which is what makes palloc/pfree about as
 * cheap as malloc/free and a reset cost per block, not per chunk.  Freeing
 * or resetting the context frees its chunks.  Never pass a chunk to a
 * talloc function.  See memutils.h for creating and managing contexts.
 *
 * Failure model: palloc() and friends never return NULL; out of memory
 * raises ERROR with ERRCODE_OUT_OF_MEMORY, unless MCXT_ALLOC_NO_OOM is
 * given to palloc_extended(), which then returns NULL.
 */
#ifndef DSMKIT_PALLOC_H
#define DSMKIT_PALLOC_H

#include <stdarg.h>
#include <dsmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A memory context: a talloc context with a name, blocks of chunks and reset callbacks. */
typedef struct MemoryContextData *MemoryContext;

/*
 * A callback run when its context is reset or deleted, before the memory
 * goes.  Register with MemoryContextRegisterResetCallback(); the struct is
 * usually allocated in the context itself.
 */
typedef void (*MemoryContextCallbackFunction)(void *arg);
typedef struct MemoryContextCallback
{
	MemoryContextCallbackFunction func; /* called with arg */
	void *arg;                          /* passed to func */
	struct MemoryContextCallback *next; /* next in the context's list */
} MemoryContextCallback;

/* The context palloc() allocates in; switch it with MemoryContextSwitchTo. */
DSMKIT_API extern MemoryContext CurrentMemoryContext;

/* Flags for palloc_extended() and MemoryContextAllocExtended(). */
#define MCXT_ALLOC_HUGE 0x01   /* allow sizes over MaxAllocSize */
#define MCXT_ALLOC_NO_OOM 0x02 /* return NULL instead of raising out of memory */
#define MCXT_ALLOC_ZERO 0x04   /* zero the chunk */

DSMKIT_API void *MemoryContextAlloc(MemoryContext context, Size size);
DSMKIT_API void *MemoryContextAllocZero(MemoryContext context, Size size);
DSMKIT_API void *MemoryContextAllocExtended(MemoryContext context, Size size, int flags);
DSMKIT_API char *MemoryContextStrdup(MemoryContext context, const char *string);

DSMKIT_API void *palloc(Size size);
DSMKIT_API void *palloc0(Size size);
DSMKIT_API void *palloc_extended(Size size, int flags);
/* Resize a chunk in its own context; ERROR on a bad pointer or size. */
DSMKIT_API void *repalloc(void *pointer, Size size);
/*
 * Free a chunk; ERROR (not corruption) on NULL, on a chunk already freed
 * and on a pointer palloc did not return (see palloc(3) for the limits).
 */
DSMKIT_API void pfree(void *pointer);

DSMKIT_API char *pstrdup(const char *in);
DSMKIT_API char *pnstrdup(const char *in, Size len);
DSMKIT_API char *psprintf(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
DSMKIT_API char *pvsprintf(const char *fmt, va_list args) DSMKIT_PRINTF(1, 0);

/* Make context current; returns the one that was. Never fails. */
static inline MemoryContext
MemoryContextSwitchTo(MemoryContext context)
{
	MemoryContext old = CurrentMemoryContext;

	CurrentMemoryContext = context;
	return old;
}

DSMKIT_API void MemoryContextRegisterResetCallback(MemoryContext context, MemoryContextCallback *cb);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_PALLOC_H */
