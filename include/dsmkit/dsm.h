/*
 * dsmkit/dsm.h: dynamic shared memory segments.
 *
 * A backend creates a segment with dsm_create() and passes its 32-bit
 * handle (dsm_segment_handle()) to other backends, which map it with
 * dsm_attach().  Each mapping belongs to CurrentResourceOwner and is
 * detached when that owner is released (with a WARNING if released on
 * commit), unless dsm_keep_mapping()/dsm_pin_mapping() gave it session
 * lifetime; with CurrentResourceOwner NULL a mapping has session lifetime
 * from the start.  Session mappings are detached at process exit by an
 * exit hook.  A segment is destroyed when its last mapping goes, unless
 * dsm_pin_segment() pinned it; every segment is destroyed at supervisor
 * shutdown, and after a crash at the next supervisor start.
 *
 * All these functions are for backends (processes started by
 * supervisor_spawn_backend() or joined with backend_join()); dsm_create()
 * in the supervisor raises ERROR.
 */
#ifndef DSMKIT_DSM_H
#define DSMKIT_DSM_H

#include <dsmkit/common.h>
#include <dsmkit/dsm_impl.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsm_segment dsm_segment;
typedef void (*on_dsm_detach_callback)(dsm_segment *seg, Datum arg);

/* dsm_create() flag: return NULL instead of raising ERROR when all slots are in use. */
#define DSM_CREATE_NULL_IF_MAXSEGMENTS 0x0001

/*
 * Create a segment of size bytes (size > 0), mapped and zero-filled.
 * ERROR when the system refuses (the message names the segment), when the
 * control segment has no free slot (unless DSM_CREATE_NULL_IF_MAXSEGMENTS),
 * or in the supervisor.  Nothing is left behind on failure.
 */
DSMKIT_API dsm_segment *dsm_create(size_t size, int flags);

/*
 * Map the segment with handle h, at the size the control segment records.
 * Returns NULL if no such segment exists (or it is being destroyed).
 * ERROR if this process has it mapped already (use dsm_find_mapping()
 * first) or the system refuses.  In backend slots 0-30 the reference is
 * taken with one atomic operation, without the control lock.
 */
DSMKIT_API dsm_segment *dsm_attach(dsm_handle h);

/*
 * Unmap the segment after running its detach callbacks (LIFO), drop this
 * process's reference and destroy the segment if that was the last one.
 * Never raises ERROR: problems are logged at WARNING.  seg is freed.
 */
DSMKIT_API void dsm_detach(dsm_segment *seg);

/*
 * Change the segment's size and return the (possibly new) address; later
 * attaches map the new size.  Other processes that map the old size must
 * stop touching pages beyond a new, smaller end before a shrink (SIGBUS).
 */
DSMKIT_API void *dsm_resize(dsm_segment *seg, size_t size);
/* Remap after another process resized; returns the (possibly new) address. */
DSMKIT_API void *dsm_remap(dsm_segment *seg);

/* Give the mapping session lifetime (detached at process exit). */
DSMKIT_API void dsm_keep_mapping(dsm_segment *seg);
/* The same as dsm_keep_mapping() (PostgreSQL 9.5+ spelling). */
DSMKIT_API void dsm_pin_mapping(dsm_segment *seg);
/* Put a kept mapping back under CurrentResourceOwner. */
DSMKIT_API void dsm_unpin_mapping(dsm_segment *seg);

/*
 * Keep the segment alive after its last mapping goes, until
 * dsm_unpin_segment() or supervisor shutdown.  ERROR if already pinned.
 */
DSMKIT_API void dsm_pin_segment(dsm_segment *seg);
/* Undo dsm_pin_segment() by handle; ERROR if no such pinned segment. */
DSMKIT_API void dsm_unpin_segment(dsm_handle h);

/* This process's mapping of h, or NULL.  O(1). */
DSMKIT_API dsm_segment *dsm_find_mapping(dsm_handle h);

DSMKIT_API void *dsm_segment_address(dsm_segment *seg);
DSMKIT_API size_t dsm_segment_map_length(dsm_segment *seg);
DSMKIT_API dsm_handle dsm_segment_handle(dsm_segment *seg);

/* Register/cancel a callback run when seg is detached (LIFO), before the unmap. */
DSMKIT_API void on_dsm_detach(dsm_segment *seg, on_dsm_detach_callback function, Datum arg);
DSMKIT_API void cancel_on_dsm_detach(dsm_segment *seg, on_dsm_detach_callback function, Datum arg);

/* Detach every mapping of this process (exit hook; also callable directly). */
DSMKIT_API void dsm_detach_all(void);

/*
 * Consistency check of a cluster's control segment (used by the tests and
 * by "dsmctl check").  Under the control lock it verifies that every
 * active slot's reference count equals the number of live backends that
 * map it, plus one if it is pinned, plus one; that free and moribund slots
 * are held by nobody; that the free list and per-backend reference counts
 * agree with the slots; that every active slot has its operating-system
 * segment; and that no operating-system segment of the cluster exists
 * without a slot.  A backend that died and was not yet reaped by
 * supervisor_reap() counts as a problem (its references are not live).
 *
 * directory NULL checks this process's own cluster (the supervisor or a
 * backend); otherwise a process that belongs to no cluster names the
 * cluster directory, and the control segment is mapped for the duration
 * of the check (this configures the process's dsm_impl for that cluster).
 * Each problem is passed to report(problem, arg) as one sentence without
 * final period (report NULL: each is logged at WARNING), after the control
 * lock is released, so report may raise ERROR or call dsm functions; an
 * ERROR from it propagates with nothing held.  Returns the
 * number of problems, 0 for a consistent cluster.  ERROR if there is no
 * cluster to check (no usable state file or control segment).
 */
typedef void (*dsm_check_callback)(const char *problem, void *arg);
DSMKIT_API int dsm_control_check(const char *directory, dsm_check_callback report, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_DSM_H */
