/*
 * dsmkit/inspect.h: looking at a cluster from the outside, and cleaning up
 * after a dead one.
 *
 * dsm_cluster_inspect() reads a cluster directory's state file and lock
 * file and takes a snapshot of its control segment: the supervisor, the
 * backends, and every segment with its size, reference count, pin and the
 * processes that map it.  It changes nothing: the control segment is
 * copied without taking its lock, so it works while the cluster runs,
 * after it crashed, and from a process that belongs to no cluster (or to
 * another one).  dsm_cluster_cleanup() removes what a dead cluster left.
 * "dsmctl" is built on these two functions and dsm_control_check().
 *
 * These functions temporarily configure this process's dsm_impl layer for
 * the inspected cluster and restore the previous configuration before
 * they return (also on ERROR), so a backend may inspect another cluster.
 */
#ifndef DSMKIT_INSPECT_H
#define DSMKIT_INSPECT_H

#include <sys/types.h>
#include <time.h>
#include <dsmkit/common.h>
#include <dsmkit/dsm_impl.h>
#include <dsmkit/palloc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Process-local: one backend slot in use, as seen in the snapshot. */
typedef struct DsmBackendInfo
{
	int index;          /* backend slot number */
	pid_t pid;          /* process id, 0 while a spawn is still in progress */
	bool alive;         /* the process runs (pid and start time match) */
	bool joined;        /* came through backend_join(), not spawned */
	const char *state;  /* "starting", "running" or "exited" (static string) */
	uint32_t nsegments; /* segments it maps, from its reference bits */
} DsmBackendInfo;

/* Process-local: one segment slot in use, as seen in the snapshot. */
typedef struct DsmSegmentInfo
{
	dsm_handle handle; /* the segment's handle */
	uint32_t slot;     /* its slot in the control segment */
	uint64_t size;     /* bytes, as created or last resized */
	uint32_t refcnt;   /* reference count: mappings + pin + 1; 1 while created or destroyed */
	bool pinned;       /* dsm_pin_segment() keeps it */
	bool moribund;     /* refcnt 1: being created or destroyed */
	int npids;         /* entries in pids */
	pid_t *pids;       /* the backends whose reference bits say they map it */
	time_t ctime;      /* creation time (seconds since the epoch) */
	int64_t age;       /* seconds from ctime to the inspection, never negative */
	char *os_name;     /* dsm_impl_segment_name() of the handle */
} DsmSegmentInfo;

/*
 * Process-local: what dsm_cluster_inspect() saw.  Every pointer points
 * into the same allocation tree (see dsm_cluster_info_free()).
 */
typedef struct DsmClusterInfo
{
	char *directory;            /* the directory as given */
	int impl;                   /* DSM_IMPL_* from the state file */
	const char *impl_name;      /* "posix", "sysv" or "mmap" (static string) */
	uint32_t cluster_id;        /* the cluster id from the state file */
	pid_t supervisor_pid;       /* the supervisor named by the state file */
	bool supervisor_alive;      /* it runs (pid and start time match) */
	bool stale;                 /* !supervisor_alive: what is shown was left by a dead cluster */
	dsm_handle control_handle;  /* the control segment's handle */
	char *control_os_name;      /* its operating-system name */
	bool control_present;       /* the control segment was mapped and is sane */
	char *control_problem;      /* why not (a sentence), NULL when control_present */
	bool consistent;            /* the snapshot is a committed state (see dsm_cluster_inspect()) */
	uint64_t control_size;      /* bytes of the control segment */
	uint64_t repairs;           /* rollbacks after dead lock holders, since start-up */
	uint32_t slots_total;       /* segment slots */
	uint32_t slots_used;        /* slots with a segment (active or moribund) */
	uint64_t bytes;             /* sum of the sizes of the segments in use */
	uint32_t max_backends;      /* backend slots */
	int nbackends;              /* entries in backends (slots not free) */
	DsmBackendInfo *backends;   /* in slot order */
	int nsegments;              /* entries in segments (== slots_used) */
	DsmSegmentInfo *segments;   /* in slot order */
	time_t inspected_at;        /* when the snapshot was taken */
} DsmClusterInfo;

/*
 * Inspect the cluster in directory.  The result and everything it points
 * to are allocated in a new child context of mcxt, owned by the caller:
 * free it with dsm_cluster_info_free() or by deleting or resetting mcxt.
 *
 * A stale cluster (its supervisor is dead) is not an error: the result
 * has stale set and shows what the control segment still holds; if the
 * control segment is gone or corrupt, control_present is false and
 * control_problem says why (then there are no backends and segments);
 * with the supervisor alive, which normally means it is still starting,
 * it first waits up to about a second for the control segment.
 * consistent is true when the snapshot is the state at the last commit:
 * two copies of the control segment agreed, and an update half done at
 * that moment (by a live lock holder, or a dead one) was rolled back in
 * the copy from its undo log.  It is false when the segment kept changing
 * while it was copied; the numbers are then a best effort.
 *
 * ERROR (nothing is left behind, nothing is changed) when directory is
 * NULL or empty, does not exist or is not a directory (errcode for the
 * file access, or ERRCODE_INVALID_PARAMETER_VALUE), holds no state file
 * (ERRCODE_UNDEFINED_FILE: "... is not a dsmkit cluster"), when the state
 * file cannot be read or the control segment cannot be mapped for lack of
 * permission (ERRCODE_INSUFFICIENT_PRIVILEGE), or when the state file is
 * garbage or belongs to another directory (ERRCODE_DATA_CORRUPTED).
 * Every message names the directory or file.  Safe in any process.
 */
DSMKIT_API DsmClusterInfo *dsm_cluster_inspect(MemoryContext mcxt, const char *directory);

/* Free a result of dsm_cluster_inspect() and everything it points to.  NULL is allowed. */
DSMKIT_API void dsm_cluster_info_free(DsmClusterInfo *info);

/* dsm_cluster_cleanup() flag: go on even if backends of the dead cluster still run. */
#define DSM_CLEANUP_FORCE 0x0001

/*
 * Remove everything a dead cluster left in directory: every segment its
 * control segment lists, the control segment, the operating-system
 * segments named for the cluster ("dsmkit.<cluster>.*" in /dev/shm and,
 * for mmap, in the directory), the state file and the lock file.  The
 * cleanup holds the directory's lock file while it works, so no
 * supervisor can start there meanwhile.  Each object removed is passed
 * to report(what, arg) as a sentence without final period (report NULL:
 * logged at LOG).  Returns the number of objects removed (0 for a
 * directory that is already clean but still holds a lock or state file).
 *
 * ERROR with ERRCODE_OBJECT_IN_USE, removing nothing, while the
 * supervisor named by the lock file or the state file runs, or, unless
 * flags has DSM_CLEANUP_FORCE, while a backend the control segment lists
 * as running is alive.  ERROR as dsm_cluster_inspect() for a missing
 * directory or one that is no cluster (neither a state file nor a lock
 * file).  A garbage state file is not an error here: it is removed and
 * the cluster's names are swept.  Failures to remove single objects are
 * reported at WARNING and do not stop the cleanup.
 */
DSMKIT_API int dsm_cluster_cleanup(const char *directory, int flags,
								   void (*report)(const char *what, void *arg), void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_INSPECT_H */
