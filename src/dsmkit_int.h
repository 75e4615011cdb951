/*
 * dsmkit_int.h: PRIVATE to libdsmkit; never installed, never included by a
 * public header.  Small helpers every module of the library uses.
 */
#ifndef DSMKIT_INT_H
#define DSMKIT_INT_H

#include "config.h"

#include <assert.h>
#include <dsmkit/common.h>

/* Defensive branches that "cannot happen", marked as in SQLite. */
#define ALWAYS(x) (__builtin_expect(!!(x), 1))
#define NEVER(x) (__builtin_expect(!!(x), 0))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#ifndef NDEBUG
#define Assert(x) assert(x)
#else
#define Assert(x) ((void) 0)
#endif

#define lengthof(array) (sizeof(array) / sizeof((array)[0]))
#define pg_unreachable() __builtin_unreachable()

/*
 * Cross-module hooks inside the library (not exported).
 */

/* elog.c: the process's pid changed (after fork): forget inherited error state. */
void elog_after_fork(void);

/*
 * elog.c: a mark of the error stack, taken before a PG_TRY whose PG_CATCH
 * reports its error itself and goes on; elog_stack_restore() then forgets
 * only the errors raised since the mark, not an error the caller was
 * handling when it made the mark (which FlushErrorState() would drop).
 */
typedef struct ErrorStackMark
{
	int depth;
	int recursion;
} ErrorStackMark;
ErrorStackMark elog_stack_mark(void);
void elog_stack_restore(ErrorStackMark mark);

/* ipc.c: the process's pid changed (after fork): forget inherited hooks. */
void ipc_after_fork(void);

/* mcxt.c: after fork in a spawned backend, nothing to do (contexts are inherited copies). */

#endif /* DSMKIT_INT_H */
