/*
 * dsm_int.h: PRIVATE to libdsmkit; shared by dsm.c, supervisor.c and inspect.c only.
 *
 * The layout of the dynamic shared memory control segment, the protocol
 * that keeps it repairable when a lock holder dies, and the process-local
 * state both files need.  Nothing here is installed or exported.
 *
 * Control segment invariants (copied into doc/design.md):
 *
 *   1. Every change to the control segment is made by a process that holds
 *      control->lock, a process-shared robust pthread mutex, except the
 *      lock-free attach and detach of invariant 4 and the owner's writes
 *      of invariant 6.
 *
 *   2. Each change (but those of invariant 4) is written through dsm_ctl_write(), which first appends
 *      the field's offset and old value to the undo log in control->intent
 *      and only then stores the new value; dsm_ctl_commit() empties the log
 *      before the lock is released.  So, at any instant, the segment equals
 *      "the state at the last commit" plus the changes listed in the log.
 *      "First" and "then" are program order, which compiler barriers keep;
 *      no CPU fence is needed, because the only process that ever sees an
 *      unfinished update is the next locker after the writer died, and it
 *      sees every store the writer executed (dsm_store_barrier() in dsm.c
 *      explains why).
 *
 *   3. When a holder dies, the kernel hands the mutex to the next locker
 *      with EOWNERDEAD.  That locker applies the undo log backwards (which
 *      restores the state at the last commit exactly, whether the dead
 *      process stopped before or after any given store), empties it, marks
 *      the mutex consistent and goes on.  A commit point is therefore the
 *      only state any other process can ever observe.
 *
 *   4. A slot's word (handle, fast holder bits, OTHERS bit; see
 *      dsm_control_item) changes without the lock in two ways: backends
 *      0..DSM_FAST_BACKENDS-1 attach and detach an active segment with one
 *      compare-and-swap on it, and a slot's owner (invariant 6) names and
 *      publishes it.  The compare-and-swaps never make an inactive word
 *      active or an active one inactive, so under the lock "active" is
 *      stable for every slot nobody owns, and only a lock holder makes a
 *      word inactive.  A lock holder writes an inactive word nobody owns
 *      through the undo log, and an active one, or the transition between
 *      the two, with an unlogged compare-and-swap, having first named the
 *      slot in intent.slot; at most one slot per update.  The repair after
 *      its death then re-derives that slot's word and busy from the
 *      rolled-back fields (dsm_control_repair()).
 *
 *   5. Every committed state satisfies, for each slot i:
 *        free:     refcnt 0, word inactive, on the free list, no bit set;
 *        moribund: refcnt 1, word inactive (being created or destroyed, or
 *                  kept in a backend's slot cache), no bit set; busy names
 *                  the process doing it, or whose cache holds it
 *                  (DSM_BUSY_CACHED), so that the supervisor can finish the
 *                  job or free the slot if that process dies;
 *        active:   word active; refcnt = 1 + pinned + (backends at or above
 *                  DSM_FAST_BACKENDS whose bitmap bit i is set); OTHERS is
 *                  set iff refcnt >= 2; the word's fast bits are the fast
 *                  backends that map it.  So the segment lives while anyone
 *                  maps or pins it, and whoever takes the last reference
 *                  away makes it moribund and destroys it.
 *      A backend's reference is its bit (fast bit in the word, or bitmap bit
 *      with refcnt), set when it maps the segment and cleared when it unmaps
 *      it.  A bit is set or cleared in one step, never left ambiguous by a
 *      death, which is what lets supervisor_reap() drop exactly a dead
 *      backend's references.

 *   6. A moribund slot whose busy names a live backend b ("owned" by b:
 *      reserved for its create, or destroyed by it) is written by b alone,
 *      without the lock: its generation, word, size, ctime and impl_id,
 *      and busy when b publishes the segment (its fast bit first, so the
 *      word goes from inactive to active in one step) or caches the slot
 *      (a compare-and-swap).  b changes the word only by compare-and-swap,
 *      so that shutdown can take the slot away (DSM_WORD_REVOKED).  Lock holders leave owned slots alone (but
 *      for b's reap and the supervisor's shutdown), and take a cached slot
 *      only by a compare-and-swap on busy.  impl_id tells b's reap what
 *      may exist under the handle, so that it never removes what another
 *      process made under a colliding System V key.
 *
 *   7. Nobody raises ERROR while holding the lock (reports are made after
 *      the unlock), so a live process never leaves the mutex held.
 */
#ifndef DSMKIT_DSM_INT_H
#define DSMKIT_DSM_INT_H

#include "dsmkit_int.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <dsmkit/dsm.h>
#include <dsmkit/supervisor.h>

#define DSM_CONTROL_MAGIC 0x6b6d7364u /* "dsmk" in memory on little-endian */
#define DSM_CONTROL_VERSION 3u

/* Limits on the configuration (they keep the control segment below 1 GB). */
#define DSM_MAX_SEGMENTS_LIMIT 65534u
#define DSM_MAX_BACKENDS_LIMIT 8192u

#define DSM_NO_SLOT UINT32_MAX   /* ends the free list; "no slot" in descriptors */
#define DSM_BUSY_NONE (-1)       /* item.busy: nobody is creating or destroying it */
#define DSM_BUSY_SUPERVISOR (-2) /* item.busy: the supervisor is destroying it */
/*
 * item.busy of a slot kept in backend b's slot cache (dsm.c): moribund,
 * its segment destroyed, not on the free list.  It leaves that state only
 * by a compare-and-swap on busy: b takes it back for a create, or a
 * creator under the lock takes it when the free list is empty; b's exit
 * hook or its reap frees it.
 */
#define DSM_BUSY_CACHED(b) (-3 - (int32_t) (b))
#define DSM_BUSY_IS_CACHED(v) ((v) <= -3)
#define DSM_BUSY_CACHED_BY(v) (-3 - (v))

/* item.impl_id: what exists under the slot's current handle. */
#define DSM_IMPL_ID_NONE 0u           /* no operating-system segment (free, reserved, cached) */
#define DSM_IMPL_ID_CREATING UINT32_MAX /* its creator may have made one; its id is not known yet */
/* Any other value: the segment exists or did; System V: its shmid + 1, else 1. */

/* Backend slot states (dsm_control_backend.state). */
#define DSM_BACKEND_FREE 0     /* unused */
#define DSM_BACKEND_STARTING 1 /* reserved by the supervisor, fork in progress */
#define DSM_BACKEND_RUNNING 2  /* the process runs and may hold references */
#define DSM_BACKEND_EXITED 3   /* a spawned backend exited cleanly; the supervisor frees it at reap */

/* Intent operations (dsm_control_intent.op), for diagnostics. */
#define DSM_INTENT_NONE 0
#define DSM_INTENT_CREATE 1
#define DSM_INTENT_ATTACH 2
#define DSM_INTENT_DETACH 3
#define DSM_INTENT_PIN 4
#define DSM_INTENT_RESIZE 5
#define DSM_INTENT_BACKEND 6
#define DSM_INTENT_RECLAIM 7
#define DSM_INTENT_SHUTDOWN 8

#define DSM_UNDO_MAX 24

/*
 * Backends with an index below this attach and detach without the lock:
 * their references are bits 32..62 of the slot's word.  The others use the
 * lock, their reference bitmap and refcnt.
 */
#define DSM_FAST_BACKENDS 31

/* The parts of a slot's word. */
#define DSM_WORD_OTHERS ((uint64_t) 1 << 63)  /* refcnt >= 2: pinned or held by a slow backend */
#define DSM_WORD_FAST_BIT(b) ((uint64_t) 1 << (32 + (b)))
#define DSM_WORD_HANDLE(w) ((dsm_handle) ((w) & 0xffffffffu))
#define DSM_WORD_FAST_MASK(w) ((uint32_t) ((w) >> 32) & 0x7fffffffu)
#define DSM_WORD_ACTIVE(w) (((w) >> 32) != 0)   /* a fast holder or OTHERS */
/* The word of a slot the supervisor's shutdown took from its owner (handle bits all ones: never a segment's). */
#define DSM_WORD_REVOKED ((uint64_t) UINT32_MAX)

/* Shared memory: one entry of the undo log. */
typedef struct dsm_control_undo
{
	uint32_t offset; /* byte offset of the changed field from the segment's start */
	uint32_t width;  /* 4 or 8: the field's size in bytes */
	uint64_t old;    /* the field's value before the change */
} dsm_control_undo;

/* Shared memory: the intent record, an undo log of the update in progress. */
typedef struct dsm_control_intent
{
	uint32_t op;                          /* DSM_INTENT_*, NONE when no update is in progress */
	int32_t backend;                      /* backend index of the updater, -1 for another process */
	uint32_t nundo;                       /* valid entries in undo[]; 0 at every commit */
	uint32_t slot;                        /* slot whose word the update changes unlogged, or DSM_NO_SLOT */
	dsm_control_undo undo[DSM_UNDO_MAX];  /* old values, oldest first */
} dsm_control_intent;

/* Shared memory: one segment slot. */
typedef struct dsm_control_item
{
	uint64_t word;       /* bits 0-31: handle (valid when refcnt > 0); 32-62: fast holders; 63: OTHERS */
	uint32_t refcnt;     /* 0 free, 1 moribund or active; active: 1 + pinned + slow holders */
	uint32_t pinned;     /* 1 if dsm_pin_segment() holds a reference for the cluster */
	uint32_t generation; /* bumped on every reuse; the handle's high bits; never 0 once used */
	int32_t busy;        /* while moribund: backend index creating or destroying it, or DSM_BUSY_* */
	uint32_t next_free;  /* while refcnt is 0: next free slot, DSM_NO_SLOT at the end */
	uint32_t impl_id;    /* DSM_IMPL_ID_*, or the segment's System V shmid + 1 (see above) */
	uint64_t size;       /* bytes, as created or last resized */
	uint64_t ctime;      /* creation time, seconds since the epoch */
} dsm_control_item;

/* Shared memory: one backend slot. */
typedef struct dsm_control_backend
{
	int32_t pid;         /* process id; 0 until known */
	uint32_t state;      /* DSM_BACKEND_* */
	uint64_t start_time; /* process start time (/proc/<pid>/stat field 22), 0 until known */
	uint32_t joined;     /* 1 if it came through backend_join(), 0 if spawned */
	uint32_t nrefs;      /* bits set in its reference bitmap (segments it maps); not undo-logged: a repair recounts it */
} dsm_control_backend;

/*
 * Shared memory: the control segment's header.  It is followed, at the
 * offsets it records, by maxitems items, max_backends backend slots, and
 * max_backends reference bitmaps of bitmap_words 32-bit words each (bit i
 * of backend b's bitmap: b maps slot i).
 */
typedef struct dsm_control_header
{
	uint32_t magic;                 /* DSM_CONTROL_MAGIC, written last at creation */
	uint32_t version;               /* DSM_CONTROL_VERSION */
	uint64_t total_size;            /* bytes used, as computed by dsm_control_bytes_needed() */
	uint32_t maxitems;              /* segment slots */
	uint32_t max_backends;          /* backend slots */
	uint32_t slot_bits;             /* low handle bits that hold the slot index */
	uint32_t bitmap_words;          /* 32-bit words in one backend's reference bitmap */
	uint32_t item_offset;           /* offset of item[0] */
	uint32_t backend_offset;        /* offset of backend[0] */
	uint32_t refs_offset;           /* offset of the first reference bitmap */
	uint32_t cluster_id;            /* dsm_impl_cluster_id() of the cluster */
	uint32_t freelist_head;         /* first free slot, DSM_NO_SLOT if none */
	uint32_t nfree;                 /* slots on the free list */
	int32_t supervisor_pid;         /* the supervisor's pid */
	uint32_t impl;                  /* DSM_IMPL_* of the cluster */
	uint64_t supervisor_start_time; /* the supervisor's start time (see backend.start_time) */
	uint64_t repairs;               /* times a dead lock holder's update was rolled back */
	pthread_mutex_t lock;           /* robust, process-shared; protects everything below and above */
	dsm_control_intent intent;      /* undo log of the update in progress */
} dsm_control_header;

/*
 * Process-local: what this process knows of its cluster.  Set by
 * supervisor_startup(), supervisor_spawn_backend() (in the child) and
 * backend_join(); reset by dsm_local_reset().
 */
extern DsmkitRole dsm_role;              /* this process's role */
extern int dsm_backend_index;            /* our backend slot, -1 if none */
extern dsm_control_header *dsm_control;  /* mapping of the control segment, or NULL */
extern dsm_handle dsm_control_handle;    /* its handle */
extern size_t dsm_control_mapped_size;   /* its mapped size */
extern void *dsm_control_impl_private;   /* dsm_impl_op() private data for it */
extern const char *dsm_cluster_directory; /* the cluster directory (TopMemoryContext copy), or NULL */

/* Bytes a control segment with these dimensions needs. */
size_t dsm_control_bytes_needed(uint32_t maxitems, uint32_t max_backends);
/* The slot bits for maxitems slots (the all-ones slot value stays free for the control segment). */
uint32_t dsm_control_slot_bits(uint32_t maxitems);
/* Fill a freshly created, zeroed control segment; the magic is written last. */
void dsm_control_init(dsm_control_header *control, size_t size, uint32_t maxitems,
					  uint32_t max_backends, uint32_t cluster_id, uint32_t impl);
/* True if control (mapped_size bytes) can be trusted: magic, version, sizes, counts, offsets. */
bool dsm_control_segment_sane(const dsm_control_header *control, size_t mapped_size);

/* Lock/unlock the control segment (repairs it after a dead holder).  false only if locking failed (reported at elevel < ERROR). */
bool dsm_control_lock(int elevel);
void dsm_control_unlock(void);

/*
 * Destroy the operating-system segment slot of control names, if any, and
 * never another process's under a colliding System V key: 1 removed, 0
 * none, -1 still there (reported at elevel).  Never raises.
 */
int dsm_control_destroy_segment(dsm_control_header *control, uint32_t slot, int elevel);

/* Destroy every segment the control segment lists (shutdown and crash cleanup); never raises. */
void dsm_control_destroy_all(dsm_control_header *control, int elevel);

/* Accessors. */
dsm_control_item *dsm_control_items(dsm_control_header *control);
dsm_control_backend *dsm_control_backends(dsm_control_header *control);

/* A slot's word, read atomically. */
static inline uint64_t
dsm_item_word(const dsm_control_item *item)
{
	return __atomic_load_n(&item->word, __ATOMIC_ACQUIRE);
}

static inline dsm_handle
dsm_item_handle(const dsm_control_item *item)
{
	return DSM_WORD_HANDLE(dsm_item_word(item));
}

/* Slot states (invariant 5).  Exact under the lock; a snapshot otherwise. */
static inline bool
dsm_item_active(const dsm_control_item *item)
{
	return DSM_WORD_ACTIVE(dsm_item_word(item));
}

static inline bool
dsm_item_moribund(const dsm_control_item *item)
{
	return item->refcnt != 0 && !dsm_item_active(item);
}

/* Does the slot stand for an operating-system segment (made, or being made)?  Not when free, cached, or reserved and not yet named. */
static inline bool
dsm_item_holds_segment(const dsm_control_item *item)
{
	return item->refcnt != 0 && !DSM_BUSY_IS_CACHED(__atomic_load_n(&item->busy, __ATOMIC_ACQUIRE)) &&
		   __atomic_load_n(&item->impl_id, __ATOMIC_ACQUIRE) != DSM_IMPL_ID_NONE;
}

/* The reference count as users know it: mappings + pin + 1 (1 while moribund, 0 when free). */
static inline uint32_t
dsm_item_refcount(const dsm_control_item *item)
{
	return item->refcnt + (uint32_t) __builtin_popcount(DSM_WORD_FAST_MASK(dsm_item_word(item)));
}

/* After a repair's rollback: re-derive slot's word and busy (dsm.c explains; holder: the dead updater's backend index). */
void dsm_control_reconcile_slot(dsm_control_header *control, uint32_t slot, int32_t holder);
/* Does backend b hold a reference to slot i (its fast bit or its bitmap bit)? */
bool dsm_control_ref_is_set(dsm_control_header *control, uint32_t b, uint32_t i);
/* The number of segments backend b holds references to. */
uint32_t dsm_control_backend_nrefs(dsm_control_header *control, uint32_t b);

/*
 * Backend slots.  dsm_backend_reserve() takes a free slot for a spawned
 * (joined false: state STARTING) or joining (joined true: state RUNNING,
 * our pid) backend; returns -1 if none is free.  dsm_backend_set_running()
 * is the spawned child's half.  dsm_backend_reclaim() drops every
 * reference a (dead) backend holds, finishes segments it was creating or
 * destroying, destroys segments left with no reference, and frees the
 * slot, if it still belongs to expect_pid (0: whoever) with start time
 * expect_start (0: not compared), both checked under the lock; returns
 * the number of references dropped.  Never raise.
 */
int dsm_backend_reserve(bool joined);
void dsm_backend_set_pid(int index, pid_t pid);
void dsm_backend_set_running(int index);
int dsm_backend_reclaim(int index, pid_t expect_pid, uint64_t expect_start);

/* This process becomes backend index (after fork or join): local tables, exit hook. */
void dsm_backend_attach_local(int index, bool joined);
/* Forget all process-local dsm state (the child after fork, before becoming a backend). */
void dsm_local_reset(void);

/* Process start time (field 22 of /proc/<pid>/stat); 0 if the process does not exist. */
uint64_t dsm_process_start_time(pid_t pid);
/* True if pid runs and (when start_time != 0) started at start_time. */
bool dsm_process_alive(pid_t pid, uint64_t start_time);

/*
 * The state file ("dsmkit.state"), parsed.  dsm_read_state_file() returns
 * false (with a LOG line naming the problem when it is not just missing)
 * if the file is missing, empty, truncated or garbage; it never raises.
 */
typedef struct dsm_state_info
{
	int impl;                  /* DSM_IMPL_* */
	dsm_handle control_handle; /* the control segment (never 0) */
	uint32_t cluster_id;       /* cluster id the supervisor computed */
	uint32_t maxitems;         /* segment slots */
	uint32_t max_backends;     /* backend slots */
	pid_t supervisor_pid;      /* the supervisor */
	uint64_t supervisor_start; /* its start time */
} dsm_state_info;

bool dsm_read_state_file(const char *directory, dsm_state_info *info);

/*
 * The lock file "<directory>/dsmkit.pid" (supervisor.c; the protocol is
 * described at the top of that file).  Process-local: who holds it, as
 * far as a refused caller could tell.
 */
typedef struct dsm_lock_holder
{
	pid_t pid;         /* refused: the pid the lock file names, 0 if it is garbage */
	bool alive;        /* refused: that process runs (with the recorded start time) */
	int stale_removed; /* stale lock files removed on the way (normally 0 or 1) */
	pid_t stale_pid;   /* the pid the last of them named, 0 for garbage */
} dsm_lock_holder;

/*
 * Make this process the owner of directory's lock file.  Returns a
 * close-on-exec descriptor holding an exclusive flock on the lock file,
 * which now names this process (pid and start time); the caller keeps it
 * open while it owns the directory and gives it back with
 * dsm_lock_file_release().  Returns -1, having changed nothing, if
 * another process owns the directory (*holder says which pid the lock
 * file names and whether it runs; a locked file naming a dead process is
 * waited for up to about a second first).  A stale lock file (not locked,
 * naming a dead process, a reused pid or garbage) is removed while this
 * process holds its flock; *holder counts it for the caller to report
 * once it has stored the descriptor (no callback runs inside, so nothing
 * can raise while the temporary file exists).  ERROR for a failed system
 * call, with nothing left behind.  Fork: a child shares the lock through
 * the descriptor and must close() it, never flock(LOCK_UN) it.
 */
int dsm_lock_file_acquire(const char *directory, dsm_lock_holder *holder);
/* Give the lock file back: unlink lock_path, then close fd (-1: none).  A failed unlink is reported at elevel.  Never raises. */
void dsm_lock_file_release(const char *lock_path, int fd, int elevel);

/*
 * Told that dsm_sweep_cluster_names() removed an object: what is
 * "leftover shared memory segment", "leftover segment file" or "leftover
 * temporary file"; name is the POSIX name or the file's path.
 */
typedef void (*dsm_sweep_callback)(const char *what, const char *name, void *arg);

/*
 * The name sweep of a dead cluster: remove the POSIX objects
 * "dsmkit.<cluster>.*" of /dev/shm, the mmap segment files
 * "dsmkit.<x>.<y>" in directory (whatever cluster id they carry: the
 * directory may have been moved), and the temporary state and lock files
 * ("dsmkit.state.tmp.<pid>", "dsmkit.pid.tmp.<pid>") whose writer is
 * gone.  Only for a caller that holds the directory's lock file and knows
 * that no live process uses those objects (supervisor start-up and
 * dsm_cluster_cleanup()).  Each removal is passed to removed(what, name,
 * arg), or with removed NULL logged at LOG ("removed <what> \"<name>\"");
 * a failure other than ENOENT is reported at fail_elevel (below ERROR)
 * and the sweep goes on.  System V segments are not found this way.
 * Returns the number of objects removed.  Never raises, except what
 * removed raises (the directory stream is closed first).
 */
int dsm_sweep_cluster_names(const char *directory, uint32_t cluster, dsm_sweep_callback removed,
							void *arg, int fail_elevel);

#endif /* DSMKIT_DSM_INT_H */
