/*
 * dsmkit_int.h: PRIVATE to libdsmkit; never installed, never included by a
 * public header.  Small helpers every module of the library uses.
 */
#ifndef DSMKIT_INT_H
#define DSMKIT_INT_H

#include "config.h"

#include <assert.h>
#include <stdint.h>
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
 * elog.c: a mark of the error stack, taken before running code whose
 * errors are caught, reported and forgotten (a ReleaseResource, a reset
 * callback), so that an error the caller is handling survives.  Until
 * elog_stack_restore(), FlushErrorState() (in that code's own PG_CATCH)
 * does not pop below the mark.  elog_stack_restore() forgets the errors
 * raised since the mark and lifts that floor again; call it on every way
 * out of the marked code (success, PG_CATCH, before a PG_RE_THROW).
 * Marks nest.
 */
typedef struct ErrorStackMark
{
	int depth;
	int recursion;
	int floor;     /* the floor before this mark */
	int floor_rec; /* and its recursion depth */
} ErrorStackMark;
ErrorStackMark elog_stack_mark(void);
void elog_stack_restore(ErrorStackMark mark);

/* ipc.c: the process's pid changed (after fork): forget inherited hooks. */
void ipc_after_fork(void);

/*
 * ipc.c: how many times proc_exit() (or the atexit backstop) has begun in
 * this process.  Code that a FATAL interrupted never resumes once a later
 * entry began (resowner.c uses it to tell an interrupted release).
 */
extern uint32_t ipc_exit_entries;

/* mcxt.c: after fork in a spawned backend, nothing to do (contexts are inherited copies). */

#endif /* DSMKIT_INT_H */
