/*
 * dsmkit/supervisor.h: the supervisor that owns a cluster, and backends.
 *
 * A cluster is a directory.  supervisor_startup() makes the calling process
 * its supervisor: it removes what a crashed predecessor left behind,
 * creates the control segment and writes the state file.  Backends are
 * forked with supervisor_spawn_backend(), or started any other way and
 * attached with backend_join().  When the supervisor leaves through
 * proc_exit() (or exit()), after its backends are gone, every remaining
 * segment, the control segment, the state file and the lock file are
 * removed.
 *
 * Files in the directory: "dsmkit.pid" (lock file: the supervisor's pid),
 * "dsmkit.state" (the control segment's handle and the settings backends
 * need), and, for DSM_IMPL_MMAP, the segment files.
 */
#ifndef DSMKIT_SUPERVISOR_H
#define DSMKIT_SUPERVISOR_H

#include <sys/types.h>
#include <dsmkit/common.h>
#include <dsmkit/dsm_impl.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct DsmkitConfig
{
	const char *directory; /* cluster directory (required): state file, mmap files */
	int dsm_impl;          /* DSM_IMPL_POSIX (the default, also when 0), DSM_IMPL_SYSV, DSM_IMPL_MMAP */
	int max_backends;      /* sizes the control segment; 0 means a default of 100 */
	int max_segments;      /* segment slots; 0 means 64 + 2 * max_backends */
} DsmkitConfig;

/*
 * Become the supervisor of config->directory.  ERROR (nothing left
 * behind) if the directory is missing or not writable, if another live
 * supervisor owns it (ERRCODE_OBJECT_IN_USE: the lock file "dsmkit.pid"
 * is held with flock(2) for the supervisor's whole life), or the
 * configuration is invalid.  If a dead supervisor's backends still run,
 * it waits up to 5 seconds for them to exit and then raises
 * ERRCODE_OBJECT_IN_USE, leaving the dead cluster's files and segments as
 * they are (those backends may map them).  Call once.  Fork: only
 * children made by supervisor_spawn_backend() drop the lock's descriptor;
 * a child forked otherwise keeps the directory locked until it exits or
 * execs.
 */
DSMKIT_API void supervisor_startup(const DsmkitConfig *config);

/*
 * Fork a backend that runs backend_main(arg) and then proc_exit(0).  The
 * child forgets the supervisor's exit hooks and resource owners and starts
 * with fresh memory contexts below TopMemoryContext.  Returns the child's
 * pid to the supervisor; ERROR if fork fails or there are already
 * max_backends backends.
 */
DSMKIT_API pid_t supervisor_spawn_backend(void (*backend_main)(Datum arg), Datum arg);

/*
 * Collect backends that exited.  With wait true, block until one exits,
 * unless none runs.  Only backends are waited for: the exit status of any
 * other child of the process is left for its own waitpid().  Returns how
 * many backends still run.
 */
DSMKIT_API int supervisor_reap(bool wait);

/*
 * Join the cluster whose supervisor runs in directory, from a process the
 * supervisor did not fork.  ERROR if there is no live supervisor there or
 * its state file is unreadable.
 */
DSMKIT_API void backend_join(const char *directory);

/* Roles a process can have. */
typedef enum
{
	DSMKIT_ROLE_NONE = 0,   /* neither */
	DSMKIT_ROLE_SUPERVISOR, /* called supervisor_startup() */
	DSMKIT_ROLE_BACKEND     /* spawned or joined */
} DsmkitRole;

DSMKIT_API DsmkitRole dsmkit_role(void);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_SUPERVISOR_H */
