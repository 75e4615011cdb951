/*
 * dsmkit/ipc.h: exit-hook chains for backend and supervisor shutdown.
 *
 * Three chains, run by proc_exit() in this order, each last-registered
 * first: before_shmem_exit callbacks (while shared memory is still fully
 * usable), on_shmem_exit callbacks (detach and clean up shared memory),
 * on_proc_exit callbacks (process-level cleanup).  A callback is removed
 * from its chain before it is called, so one that raises ERROR is not
 * called again and does not stop the others.
 *
 * A process that registered hooks and leaves by exit() or by returning
 * from main() still runs them (an atexit backstop), and so does one whose
 * hook calls exit() while proc_exit() runs the chains.  Hooks are per
 * process: a child made by fork() must call on_exit_reset() (the
 * supervisor's spawn does), and as a backstop a child never runs the hooks
 * its parent registered.
 */
#ifndef DSMKIT_IPC_H
#define DSMKIT_IPC_H

#include <dsmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*pg_on_exit_callback)(int code, Datum arg);

/* How many callbacks each chain holds; one more raises ERROR. */
#define MAX_ON_EXITS 64

/* Register a callback; ERROR (program limit exceeded) when the chain is full. */
DSMKIT_API void on_proc_exit(pg_on_exit_callback function, Datum arg);
DSMKIT_API void before_shmem_exit(pg_on_exit_callback function, Datum arg);
DSMKIT_API void on_shmem_exit(pg_on_exit_callback function, Datum arg);

/*
 * Remove the most recently registered before_shmem_exit callback if it is
 * (function, arg); ERROR if it is not (as PostgreSQL 15 does), since only
 * the latest registration may be cancelled.
 */
DSMKIT_API void cancel_before_shmem_exit(pg_on_exit_callback function, Datum arg);

/* Forget every registered callback without running any (after fork). */
DSMKIT_API void on_exit_reset(void);

/* Run the before_shmem_exit and on_shmem_exit chains (not on_proc_exit). */
DSMKIT_API void shmem_exit(int code);

/* Run all three chains, then exit(code).  Never returns. */
DSMKIT_API DSMKIT_NORETURN void proc_exit(int code);

/* True while proc_exit() is running the chains. */
DSMKIT_API extern bool proc_exit_inprogress;

/* True while shmem_exit() is running its chains. */
DSMKIT_API extern bool shmem_exit_inprogress;

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_IPC_H */
