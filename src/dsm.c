/*
 * dsm.c: dynamic shared memory segments with reference counts, resource
 * owner lifetimes and a shared control segment.
 *
 * Lifetime model.  A segment lives while anyone references it: each
 * process that maps it (a bit in the slot's word for backend slots 0-30,
 * which attach and detach without the lock; a bitmap bit counted in refcnt
 * for the others) and the cluster's pin (counted in refcnt).  The process
 * that takes the last reference away makes the slot moribund, destroys
 * the operating-system segment and then frees the slot (dsm_int.h,
 * invariants 4 and 5).  A mapping (a dsm_segment in this process) belongs
 * to the resource owner that was current when it was made, or to the
 * session when that was NULL or after dsm_keep_mapping(); session mappings
 * are detached by an exit hook.
 *
 * O(1) lookups.  A handle carries its slot index in its low bits and the
 * slot's generation (bumped at every reuse) in its high bits, so attaching
 * by handle touches one slot, and this process's mapping of a slot is found
 * in a process-local array indexed by slot.  The cost does not depend on
 * how many segments exist.
 *
 * The control segment's layout and its crash-safety protocol are described
 * in dsm_int.h.
 */
#define _GNU_SOURCE
#include "dsm_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dsmkit/elog.h>
#include <dsmkit/ipc.h>
#include <dsmkit/memutils.h>
#include <dsmkit/resowner.h>

#include "dsm_impl_int.h"
#include "injection.h"

/* Process-local: a registered detach callback (a LIFO stack per mapping). */
typedef struct dsm_detach_callback
{
	on_dsm_detach_callback function;   /* called with (seg, arg) */
	Datum arg;                         /* its argument */
	struct dsm_detach_callback *next;  /* the one registered before it */
} dsm_detach_callback;

/* Process-local: this process's mapping of one segment. */
struct dsm_segment
{
	dsm_segment *prev;                 /* neighbours in the list of all mappings */
	dsm_segment *next;
	ResourceOwner resowner;            /* owner that remembers it, NULL for session lifetime */
	dsm_handle handle;                 /* the segment's handle */
	uint32_t control_slot;             /* its slot, DSM_NO_SLOT once the reference is dropped */
	void *impl_private;                /* dsm_impl_op() private data */
	void *mapped_address;              /* mapping, or NULL */
	size_t mapped_size;                /* bytes mapped */
	dsm_detach_callback *callbacks;    /* most recently registered first */
};

/* Process-local state shared with supervisor.c (see dsm_int.h). */
DsmkitRole dsm_role = DSMKIT_ROLE_NONE;
int dsm_backend_index = -1;
dsm_control_header *dsm_control = NULL;
dsm_handle dsm_control_handle = DSM_HANDLE_INVALID;
size_t dsm_control_mapped_size = 0;
void *dsm_control_impl_private = NULL;
const char *dsm_cluster_directory = NULL;

/* Process-local: every mapping of this process (for dsm_detach_all), and the same by slot. */
static dsm_segment *dsm_mappings_head = NULL;
static dsm_segment **dsm_mappings_by_slot = NULL;
static uint32_t dsm_mappings_nslots = 0;

/*
 * Process-local: a small static pool of mapping descriptors, so that an
 * attach+detach pair pays no allocation and no free.  Mappings beyond the
 * pool come from TopMemoryContext.  Static rather than a cache of freed
 * blocks, so that TopMemoryContext does not grow after a detach (callers
 * check their memory that way, as the demo server does per connection).
 * The free entries are linked through next; pool_ready false means "all
 * free" (the state of a new process, or of a child after fork).
 */
#define DSM_SEGMENT_POOL_SIZE 16
static dsm_segment dsm_segment_pool[DSM_SEGMENT_POOL_SIZE];
static dsm_segment *dsm_segment_pool_free = NULL;
static bool dsm_segment_pool_ready = false;

/*
 * Process-local: this backend's slot cache (dsm_int.h, DSM_BUSY_CACHED):
 * slots of segments it destroyed, kept for its next creates so that
 * neither the destroy nor the create takes the lock for the slot.
 */
#define DSM_SLOT_CACHE_MAX 4
static uint32_t dsm_slot_cache[DSM_SLOT_CACHE_MAX];
static int dsm_slot_cache_count = 0;

/* Process-local: a repair happened under the lock; logged once the lock is released. */
static int dsm_repair_pending_backend = INT32_MIN;
static uint32_t dsm_repair_pending_op = 0;
static uint32_t dsm_repair_pending_nundo = 0;
static uint32_t dsm_repair_pending_slot = DSM_NO_SLOT;

static void dsm_resowner_release(Datum res);
static char *dsm_resowner_print(Datum res);

/*
 * A zeroed mapping descriptor, from the pool or else TopMemoryContext,
 * with no slot yet.  ERROR on out of memory (nothing changed).  Give it
 * back with dsm_segment_free().
 */
static dsm_segment *
dsm_segment_alloc(void)
{
	dsm_segment *seg;

	if (unlikely(!dsm_segment_pool_ready))
	{
		dsm_segment_pool_free = NULL;
		for (int i = DSM_SEGMENT_POOL_SIZE - 1; i >= 0; i--)
		{
			dsm_segment_pool[i].next = dsm_segment_pool_free;
			dsm_segment_pool_free = &dsm_segment_pool[i];
		}
		dsm_segment_pool_ready = true;
	}
	seg = dsm_segment_pool_free;
	if (seg != NULL)
	{
		dsm_segment_pool_free = seg->next;
		memset(seg, 0, sizeof *seg);
	}
	else
		seg = MemoryContextAllocZero(TopMemoryContext, sizeof(dsm_segment));
	seg->control_slot = DSM_NO_SLOT;
	return seg;
}

/* Give a descriptor back: to the pool if it came from there, else to the allocator.  Never fails. */
static void
dsm_segment_free(dsm_segment *seg)
{
	uintptr_t p = (uintptr_t) seg;

	if (p >= (uintptr_t) &dsm_segment_pool[0] &&
		p < (uintptr_t) &dsm_segment_pool[DSM_SEGMENT_POOL_SIZE])
	{
		seg->next = dsm_segment_pool_free;
		dsm_segment_pool_free = seg;
	}
	else
		pfree(seg);
}

/* How the resource owner module knows a mapping. */
static const ResourceOwnerDesc dsm_resowner_desc = {
	.name = "dynamic shared memory segment",
	.release_phase = RESOURCE_RELEASE_BEFORE_LOCKS,
	.release_priority = RELEASE_PRIO_DSMS,
	.ReleaseResource = dsm_resowner_release,
	.DebugPrint = dsm_resowner_print,
};

/* ---------------------------------------------------------------------
 * Control segment geometry and sanity
 * ---------------------------------------------------------------------
 */

static size_t
align8(size_t n)
{
	return (n + 7) & ~(size_t) 7;
}

/*
 * The number of low handle bits used for the slot index: the smallest b
 * with 2^b - 1 >= maxitems, so that every slot index is below the all-ones
 * value, which the control segment's own handle uses.  Never fails.
 */
uint32_t
dsm_control_slot_bits(uint32_t maxitems)
{
	uint32_t bits = 1;

	while (((1u << bits) - 1) < maxitems)
		bits++;
	return bits;
}

static uint32_t
dsm_bitmap_words(uint32_t maxitems)
{
	return (maxitems + 31) / 32;
}

/*
 * Bytes needed by a control segment for maxitems slots and max_backends
 * backends (the caller has checked both against the limits).  Never fails.
 */
size_t
dsm_control_bytes_needed(uint32_t maxitems, uint32_t max_backends)
{
	size_t size = align8(sizeof(dsm_control_header));

	size += align8((size_t) maxitems * sizeof(dsm_control_item));
	size += align8((size_t) max_backends * sizeof(dsm_control_backend));
	size += (size_t) max_backends * dsm_bitmap_words(maxitems) * sizeof(uint32_t);
	return size;
}

/*
 * Lay out and initialise a new control segment of size bytes (zero-filled
 * by the system), with a robust process-shared mutex and every slot on the
 * free list.  The magic number is written last, so a segment whose creator
 * died half-way never looks sane.  Only the supervisor calls this, before
 * any backend exists.  Raises ERROR if the mutex cannot be initialised.
 */
void
dsm_control_init(dsm_control_header *control, size_t size, uint32_t maxitems,
				 uint32_t max_backends, uint32_t cluster_id, uint32_t impl)
{
	pthread_mutexattr_t attr;
	dsm_control_item *items;
	int rc;

	control->version = DSM_CONTROL_VERSION;
	control->total_size = size;
	control->maxitems = maxitems;
	control->max_backends = max_backends;
	control->slot_bits = dsm_control_slot_bits(maxitems);
	control->bitmap_words = dsm_bitmap_words(maxitems);
	control->item_offset = (uint32_t) align8(sizeof(dsm_control_header));
	control->backend_offset =
		(uint32_t) (control->item_offset + align8((size_t) maxitems * sizeof(dsm_control_item)));
	control->refs_offset = (uint32_t) (control->backend_offset +
									   align8((size_t) max_backends * sizeof(dsm_control_backend)));
	control->cluster_id = cluster_id;
	control->impl = impl;
	control->supervisor_pid = (int32_t) getpid();
	control->supervisor_start_time = dsm_process_start_time(getpid());
	control->intent.op = DSM_INTENT_NONE;
	control->intent.nundo = 0;
	control->intent.slot = DSM_NO_SLOT;

	items = dsm_control_items(control);
	for (uint32_t i = 0; i < maxitems; i++)
	{
		items[i].word = 0;
		items[i].refcnt = 0;
		items[i].busy = DSM_BUSY_NONE;
		items[i].generation = 0;
		items[i].impl_id = DSM_IMPL_ID_NONE;
		items[i].next_free = (i + 1 < maxitems) ? i + 1 : DSM_NO_SLOT;
	}
	control->freelist_head = 0;
	control->nfree = maxitems;

	if ((rc = pthread_mutexattr_init(&attr)) != 0 ||
		(rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) != 0 ||
		(rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) != 0 ||
		(rc = pthread_mutex_init(&control->lock, &attr)) != 0)
	{
		errno = rc;
		ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("could not initialize the dynamic shared memory control lock: %m"));
	}
	pthread_mutexattr_destroy(&attr);
	__atomic_store_n(&control->magic, DSM_CONTROL_MAGIC, __ATOMIC_RELEASE);
}

dsm_control_item *
dsm_control_items(dsm_control_header *control)
{
	return (dsm_control_item *) ((char *) control + control->item_offset);
}

dsm_control_backend *
dsm_control_backends(dsm_control_header *control)
{
	return (dsm_control_backend *) ((char *) control + control->backend_offset);
}

static uint32_t *
dsm_control_bitmap(dsm_control_header *control, int backend)
{
	return (uint32_t *) ((char *) control + control->refs_offset) +
		(size_t) backend * control->bitmap_words;
}

/*
 * Decide whether a mapped control segment can be trusted: it is big
 * enough to read the header, has our magic and layout version, its
 * dimensions are within limits and every offset and size agrees with what
 * dsm_control_bytes_needed() computes for them.  Never fails.
 */
bool
dsm_control_segment_sane(const dsm_control_header *control, size_t mapped_size)
{
	size_t needed;

	if (control == NULL || mapped_size < sizeof(dsm_control_header))
		return false;
	if (control->magic != DSM_CONTROL_MAGIC || control->version != DSM_CONTROL_VERSION)
		return false;
	if (control->maxitems == 0 || control->maxitems > DSM_MAX_SEGMENTS_LIMIT ||
		control->max_backends == 0 || control->max_backends > DSM_MAX_BACKENDS_LIMIT)
		return false;
	needed = dsm_control_bytes_needed(control->maxitems, control->max_backends);
	if (control->total_size != needed || needed > mapped_size)
		return false;
	if (control->slot_bits != dsm_control_slot_bits(control->maxitems) ||
		control->bitmap_words != dsm_bitmap_words(control->maxitems))
		return false;
	if (control->item_offset != align8(sizeof(dsm_control_header)) ||
		control->backend_offset !=
			control->item_offset + align8((size_t) control->maxitems * sizeof(dsm_control_item)) ||
		control->refs_offset !=
			control->backend_offset +
				align8((size_t) control->max_backends * sizeof(dsm_control_backend)))
		return false;
	if (control->nfree > control->maxitems ||
		(control->freelist_head != DSM_NO_SLOT && control->freelist_head >= control->maxitems))
		return false;
	if (control->intent.nundo > DSM_UNDO_MAX)
		return false;
	return true;
}

/* ---------------------------------------------------------------------
 * The lock and the undo log (see dsm_int.h for the protocol)
 * ---------------------------------------------------------------------
 */

/*
 * Order the stores of an update (log entry, log length, field) as the
 * program wrote them.  Only the compiler has to be kept from reordering
 * them; no CPU fence is needed, for two reasons.  (1) Other processes read
 * the control segment under the lock only, and the mutex's acquire and
 * release already order everything for them.  (2) The one reader that
 * sees a half-done update is the next locker after the writer died.  The
 * writer's stores are then complete: a process cannot die between a store
 * and its becoming visible; it stops at an instruction boundary, and the
 * kernel, on that CPU, marks the robust futex FUTEX_OWNER_DIED with a fully
 * ordered atomic operation after every store the process executed, which
 * the next locker's acquire of the futex synchronises with.  So the
 * repairer sees exactly a prefix of the program-ordered stores, which is
 * what the undo protocol (dsm_int.h, invariant 2) needs.  A full fence
 * here cost 3 mfences per logged field, about a third of the library's
 * overhead on attach+detach.
 */
#define dsm_store_barrier() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* Start an update of kind op; the caller holds the lock. */
static void
dsm_ctl_begin(uint32_t op)
{
	dsm_control->intent.backend = dsm_backend_index;
	dsm_control->intent.op = op;
	dsm_control->intent.slot = DSM_NO_SLOT;
	dsm_store_barrier();
}

/*
 * Announce that this update is about to change slot's word without the
 * undo log (invariant 4), so that a repair knows which slot to re-derive.
 */
static void
dsm_ctl_word_slot(uint32_t slot)
{
	Assert(dsm_control->intent.slot == DSM_NO_SLOT || dsm_control->intent.slot == slot);
	dsm_control->intent.slot = slot;
	dsm_store_barrier();
}

/*
 * Change one field of the control segment (the caller holds the lock and
 * has begun an update): record its old value in the undo log, then store
 * the new one.  Aborts the process if the log is full, a programming error
 * that would otherwise make the segment unrepairable.
 */
static inline __attribute__((always_inline)) void
dsm_ctl_write(void *field, uint32_t width, uint64_t value)
{
	dsm_control_intent *intent = &dsm_control->intent;
	dsm_control_undo *u;
	uint32_t n = intent->nundo;

	if (NEVER(n >= DSM_UNDO_MAX))
		abort();
	u = &intent->undo[n];
	u->offset = (uint32_t) ((char *) field - (char *) dsm_control);
	u->width = width;
	u->old = (width == 8) ? *(volatile uint64_t *) field : *(volatile uint32_t *) field;
	dsm_store_barrier();
	intent->nundo = n + 1;
	dsm_store_barrier();
	/* Atomic stores: slot words are read without the lock (dsm_int.h, invariant 4). */
	if (width == 8)
		__atomic_store_n((uint64_t *) field, value, __ATOMIC_RELEASE);
	else
		__atomic_store_n((uint32_t *) field, (uint32_t) value, __ATOMIC_RELEASE);
	dsm_store_barrier();
}

#define CTL_SET32(field, value) dsm_ctl_write(&(field), 4, (uint32_t) (value))
#define CTL_SET64(field, value) dsm_ctl_write(&(field), 8, (uint64_t) (value))

/* Make the update permanent: empty the undo log. */
static void
dsm_ctl_commit(void)
{
	dsm_store_barrier();
	dsm_control->intent.nundo = 0;
	dsm_store_barrier();
	dsm_control->intent.slot = DSM_NO_SLOT; /* the word change, if any, is committed too */
	dsm_control->intent.op = DSM_INTENT_NONE;
}

/*
 * After a rollback: re-derive the word and busy of the slot whose word the
 * dead holder was changing without the log (invariant 4) from the restored
 * refcnt.  OTHERS is set iff refcnt >= 2, which may revive a segment whose
 * last reference the dead process was dropping.  An active word means the
 * segment lives (busy none).  An inactive word on a slot that was live
 * means that the dead process took its last reference away: the slot
 * becomes that process's unfinished destroy (busy = its backend index,
 * which the supervisor's reap settles) or, when it was the supervisor
 * (no backend index), the supervisor's, which the next start-up's
 * cleanup finishes.  Never fails.
 */
void
dsm_control_reconcile_slot(dsm_control_header *control, uint32_t slot, int32_t holder)
{
	dsm_control_item *item = &dsm_control_items(control)[slot];
	uint64_t w = dsm_item_word(item);
	uint64_t nw;

	if (item->refcnt == 0)
		return; /* free: its word was never made active in this update */
	do
		nw = item->refcnt >= 2 ? (w | DSM_WORD_OTHERS) : (w & ~DSM_WORD_OTHERS);
	while (nw != w &&
		   !__atomic_compare_exchange_n(&item->word, &w, nw, false, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE));
	if (DSM_WORD_ACTIVE(nw))
		item->busy = DSM_BUSY_NONE;
	else /* whatever busy was restored to (even a publisher's stale index), the job is the holder's */
		item->busy = (holder >= 0 && (uint32_t) holder < control->max_backends) ? holder
																				 : DSM_BUSY_SUPERVISOR;
}

/*
 * Roll back the update a dead lock holder left half done, by applying its
 * undo log backwards, then recount every backend's nrefs from its restored
 * bitmap (nrefs is not logged, see dsm_ctl_set_ref()).  Entries whose
 * offset lies outside the segment are skipped (a sane header bounds them
 * anyway).  Called with the lock held, after EOWNERDEAD.  Never fails.
 */
static void
dsm_control_repair(dsm_control_header *control)
{
	dsm_control_intent *intent = &control->intent;
	uint32_t n = intent->nundo;

	if (n > DSM_UNDO_MAX)
		n = DSM_UNDO_MAX;
	while (n-- > 0)
	{
		dsm_control_undo *u = &intent->undo[n];
		char *field = (char *) control + u->offset;

		if ((uint64_t) u->offset + u->width > control->total_size)
			continue;
		if (u->width == 8)
			__atomic_store_n((uint64_t *) field, u->old, __ATOMIC_RELEASE);
		else if (u->width == 4)
			__atomic_store_n((uint32_t *) field, (uint32_t) u->old, __ATOMIC_RELEASE);
	}
	for (uint32_t b = 0; b < control->max_backends; b++)
	{
		dsm_control_backend *be = &dsm_control_backends(control)[b];
		const uint32_t *map = dsm_control_bitmap(control, (int) b);
		uint32_t bits = 0;

		if (be->state == DSM_BACKEND_FREE && be->nrefs == 0)
			continue; /* a free backend maps nothing (the check verifies it) */
		for (uint32_t w = 0; w < control->bitmap_words; w++)
			bits += (uint32_t) __builtin_popcount(map[w]);
		be->nrefs = bits;
	}
	if (intent->slot < control->maxitems)
		dsm_control_reconcile_slot(control, intent->slot, intent->backend);
	dsm_store_barrier();
	intent->nundo = 0;
	intent->op = DSM_INTENT_NONE;
	intent->slot = DSM_NO_SLOT;
	control->repairs++;
}

/*
 * Take the control lock.  If the previous holder died, roll back its
 * unfinished update and make the mutex consistent again, so that no
 * process ever waits for a dead one.  Returns true with the lock held; on
 * failure (which needs a corrupted mutex) reports at elevel and returns
 * false.  elevel must be below ERROR when the caller must not raise.
 */
bool
dsm_control_lock(int elevel)
{
	int rc;

	Assert(dsm_control != NULL);
	rc = pthread_mutex_lock(&dsm_control->lock);
	if (rc == EOWNERDEAD)
	{
		dsm_repair_pending_backend = dsm_control->intent.backend;
		dsm_repair_pending_op = dsm_control->intent.op;
		dsm_repair_pending_nundo = dsm_control->intent.nundo;
		dsm_repair_pending_slot = dsm_control->intent.op != DSM_INTENT_NONE ? dsm_control->intent.slot
																			: DSM_NO_SLOT;
		dsm_control_repair(dsm_control);
		rc = pthread_mutex_consistent(&dsm_control->lock);
	}
	if (rc != 0)
	{
		errno = rc;
		ereport(elevel, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("could not lock the dynamic shared memory control segment: %m"));
		return false;
	}
	/* Who holds the lock now, for the diagnostics of a later repair. */
	dsm_control->intent.backend = dsm_backend_index;
	(void) INJECTION_POINT("dsm-control-locked");
	return true;
}

/* Release the control lock, then log a repair made while taking it.  Never fails. */
void
dsm_control_unlock(void)
{
	pthread_mutex_unlock(&dsm_control->lock);
	if (dsm_repair_pending_backend != INT32_MIN)
	{
		int backend = dsm_repair_pending_backend;
		uint32_t op = dsm_repair_pending_op;

		dsm_repair_pending_backend = INT32_MIN;
		if (dsm_repair_pending_nundo == 0 && dsm_repair_pending_slot == DSM_NO_SLOT)
			ereport(LOG, errmsg("took over the dynamic shared memory control lock from a dead holder"),
					errdetail("The holder was backend %d; it had changed nothing.", backend));
		else
			ereport(LOG, errmsg("repaired the dynamic shared memory control segment after its lock holder died"),
					errdetail("The holder was backend %d; its unfinished update (kind %u, %u changes) was rolled back.",
							  backend, op, dsm_repair_pending_nundo));
	}
}

/* ---------------------------------------------------------------------
 * Slot helpers (caller holds the lock and has begun an update)
 * ---------------------------------------------------------------------
 */

static uint32_t
dsm_handle_slot(dsm_handle h)
{
	return h & ((1u << dsm_control->slot_bits) - 1);
}

/* Take a slot off the free list; DSM_NO_SLOT if there is none. */
static uint32_t
dsm_ctl_pop_free(void)
{
	uint32_t slot = dsm_control->freelist_head;
	dsm_control_item *item;

	if (slot == DSM_NO_SLOT || NEVER(slot >= dsm_control->maxitems))
		return DSM_NO_SLOT;
	item = &dsm_control_items(dsm_control)[slot];
	CTL_SET32(dsm_control->freelist_head, item->next_free);
	CTL_SET32(dsm_control->nfree, dsm_control->nfree - 1);
	CTL_SET32(item->next_free, DSM_NO_SLOT);
	return slot;
}

/* Mark a slot free and put it on the free list. */
static void
dsm_ctl_free_slot(uint32_t slot)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

	CTL_SET32(item->refcnt, 0);
	if (item->pinned != 0)
		CTL_SET32(item->pinned, 0);
	if (item->impl_id != DSM_IMPL_ID_NONE)
		CTL_SET32(item->impl_id, DSM_IMPL_ID_NONE);
	CTL_SET32(item->busy, DSM_BUSY_NONE);
	CTL_SET32(item->next_free, dsm_control->freelist_head);
	CTL_SET32(dsm_control->freelist_head, slot);
	CTL_SET32(dsm_control->nfree, dsm_control->nfree + 1);
}

/* Does backend b attach and detach without the lock (its references are bits of the words)? */
static inline bool
dsm_backend_is_fast(int b)
{
	return b >= 0 && b < DSM_FAST_BACKENDS;
}

/*
 * Set or clear bit slot in a slow backend's reference bitmap, keeping
 * nrefs.  The bit is logged; nrefs, which only counts the bits, is stored
 * without an undo entry (that saves a logged write on every attach and
 * detach): dsm_control_repair() recounts it from the restored bitmaps
 * instead.
 */
static void
dsm_ctl_set_ref(int backend, uint32_t slot, bool on)
{
	uint32_t *word = &dsm_control_bitmap(dsm_control, backend)[slot / 32];
	uint32_t bit = 1u << (slot % 32);
	dsm_control_backend *b = &dsm_control_backends(dsm_control)[backend];

	Assert(!dsm_backend_is_fast(backend));
	if (on == ((*word & bit) != 0))
		return;
	CTL_SET32(*word, on ? (*word | bit) : (*word & ~bit));
	b->nrefs = on ? b->nrefs + 1 : b->nrefs - 1;
}

bool
dsm_control_ref_is_set(dsm_control_header *control, uint32_t b, uint32_t slot)
{
	if (b < DSM_FAST_BACKENDS)
		return (dsm_item_word(&dsm_control_items(control)[slot]) & DSM_WORD_FAST_BIT(b)) != 0;
	return (dsm_control_bitmap(control, (int) b)[slot / 32] & (1u << (slot % 32))) != 0;
}

uint32_t
dsm_control_backend_nrefs(dsm_control_header *control, uint32_t b)
{
	dsm_control_item *items = dsm_control_items(control);
	uint32_t n = 0;

	if (b >= DSM_FAST_BACKENDS)
		return dsm_control_backends(control)[b].nrefs;
	for (uint32_t i = 0; i < control->maxitems; i++)
		if (dsm_item_word(&items[i]) & DSM_WORD_FAST_BIT(b))
			n++;
	return n;
}

/*
 * Make slot's OTHERS bit agree with its refcnt (set iff refcnt >= 2) with
 * an unlogged compare-and-swap (invariant 4).  If that leaves the word
 * inactive, the last reference is gone: the slot is now moribund with busy
 * = busy_as (logged), and true tells the caller to destroy the segment
 * after the unlock.  Lock held, update begun, logged changes made.
 */
static bool
dsm_ctl_sync_others(uint32_t slot, int32_t busy_as)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];
	uint64_t w = dsm_item_word(item);
	bool was_active = DSM_WORD_ACTIVE(w);
	uint64_t nw;

	dsm_ctl_word_slot(slot);
	do
		nw = item->refcnt >= 2 ? (w | DSM_WORD_OTHERS) : (w & ~DSM_WORD_OTHERS);
	while (nw != w &&
		   !__atomic_compare_exchange_n(&item->word, &w, nw, false, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE));
	(void) INJECTION_POINT("dsm-word-changed");
	if (was_active && !DSM_WORD_ACTIVE(nw))
	{
		CTL_SET32(item->busy, busy_as);
		return true;
	}
	return false;
}

/*
 * Give backend b a reference to slot, which is active or (when its creator
 * publishes it) moribund with busy already cleared.  Lock held, update
 * begun.
 */
static void
dsm_ctl_add_ref(uint32_t slot, int b)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

	if (dsm_backend_is_fast(b))
	{
		dsm_ctl_word_slot(slot);
		__atomic_fetch_or(&item->word, DSM_WORD_FAST_BIT(b), __ATOMIC_SEQ_CST);
		(void) INJECTION_POINT("dsm-word-changed");
		return;
	}
	dsm_ctl_set_ref(b, slot, true);
	CTL_SET32(item->refcnt, item->refcnt + 1);
	(void) dsm_ctl_sync_others(slot, DSM_BUSY_NONE);
}

/*
 * Take backend b's reference to slot away, if it has one.  Returns true if
 * that was the last reference: the slot is then moribund with busy =
 * busy_as, and the caller destroys the segment after the unlock.  Lock
 * held, update begun.
 */
static bool
dsm_ctl_drop_ref(uint32_t slot, int b, int32_t busy_as)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

	if (dsm_backend_is_fast(b))
	{
		uint64_t old;

		dsm_ctl_word_slot(slot);
		old = __atomic_fetch_and(&item->word, ~DSM_WORD_FAST_BIT(b), __ATOMIC_SEQ_CST);
		(void) INJECTION_POINT("dsm-word-changed");
		if ((old & DSM_WORD_FAST_BIT(b)) && !DSM_WORD_ACTIVE(old & ~DSM_WORD_FAST_BIT(b)))
		{
			CTL_SET32(item->busy, busy_as);
			return true;
		}
		return false;
	}
	if (!dsm_control_ref_is_set(dsm_control, (uint32_t) b, slot))
		return false;
	dsm_ctl_set_ref(b, slot, false);
	CTL_SET32(item->refcnt, item->refcnt - 1);
	return dsm_ctl_sync_others(slot, busy_as);
}

static bool dsm_os_segment_exists(dsm_handle h);
static int64_t dsm_os_segment_size(dsm_handle h);

/* ---------------------------------------------------------------------
 * Owned slots and the slot cache (dsm_int.h, invariant 6)
 * ---------------------------------------------------------------------
 */

/*
 * Give a slot we own (moribund, busy = us) a new generation, the handle
 * that goes with it, and the size and creation time of the segment we are
 * about to make under it; impl_id says last that a segment may now exist.
 * No lock: nobody else writes an owned slot, but the supervisor's
 * shutdown may take it away (dsm_control_destroy_all() makes its word
 * DSM_WORD_REVOKED), which the compare-and-swap on the word tells us.
 * Returns the handle, or DSM_HANDLE_INVALID if the slot was taken away
 * (nothing of ours is under it).
 */
static dsm_handle
dsm_owned_new_generation(uint32_t slot, size_t size)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];
	uint32_t genbits = 32 - dsm_control->slot_bits;
	uint32_t genmask = genbits >= 32 ? UINT32_MAX : ((1u << genbits) - 1);
	uint32_t gen = (item->generation + 1) & genmask;
	uint64_t old = dsm_item_word(item);
	dsm_handle h;

	if (gen == 0)
		gen = 1; /* keeps every handle nonzero, even slot 0's */
	h = (gen << dsm_control->slot_bits) | slot;
	if (old == DSM_WORD_REVOKED || DSM_WORD_ACTIVE(old))
		return DSM_HANDLE_INVALID;
	/* The generation first: a handle is never drawn twice, whatever dies when. */
	__atomic_store_n(&item->generation, gen, __ATOMIC_RELEASE);
	if (!__atomic_compare_exchange_n(&item->word, &old, (uint64_t) h, false, __ATOMIC_SEQ_CST,
									 __ATOMIC_ACQUIRE))
		return DSM_HANDLE_INVALID;
	__atomic_store_n(&item->size, (uint64_t) size, __ATOMIC_RELEASE);
	__atomic_store_n(&item->ctime, (uint64_t) time(NULL), __ATOMIC_RELEASE);
	__atomic_store_n(&item->impl_id, DSM_IMPL_ID_CREATING, __ATOMIC_RELEASE);
	return h;
}

/* Take a slot from our cache: it becomes ours (busy = us).  DSM_NO_SLOT if the cache is empty. */
static uint32_t
dsm_slot_cache_take(void)
{
	while (dsm_slot_cache_count > 0)
	{
		uint32_t slot = dsm_slot_cache[--dsm_slot_cache_count];
		int32_t expect = DSM_BUSY_CACHED(dsm_backend_index);

		/* Fails only if a creator that found no free slot took it meanwhile. */
		if (__atomic_compare_exchange_n(&dsm_control_items(dsm_control)[slot].busy, &expect,
										dsm_backend_index, false, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
			return slot;
	}
	return DSM_NO_SLOT;
}

/*
 * Keep slot, whose segment we just destroyed (moribund, busy = us), in our
 * cache instead of freeing it under the lock.  false (nothing changed) if
 * the cache is full or we are no backend.  No lock; never fails.
 */
static bool
dsm_slot_cache_put(uint32_t slot)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];
	int32_t expect = dsm_backend_index;

	if (dsm_role != DSMKIT_ROLE_BACKEND || dsm_backend_index < 0 ||
		dsm_slot_cache_count >= DSM_SLOT_CACHE_MAX)
		return false;
	/* No segment under the handle any more: a reap after our death frees the slot as it is. */
	__atomic_store_n(&item->impl_id, DSM_IMPL_ID_NONE, __ATOMIC_RELEASE);
	if (!__atomic_compare_exchange_n(&item->busy, &expect, DSM_BUSY_CACHED(dsm_backend_index), false,
									 __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
		return false;
	dsm_slot_cache[dsm_slot_cache_count++] = slot;
	(void) INJECTION_POINT("dsm-slot-cached");
	return true;
}

/* Free the slots of our cache (the exit hook; lock held, no update begun).  Never fails. */
static void
dsm_slot_cache_give_back(void)
{
	while (dsm_slot_cache_count > 0)
	{
		uint32_t slot = dsm_slot_cache[--dsm_slot_cache_count];
		dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

		if (item->busy != DSM_BUSY_CACHED(dsm_backend_index) || NEVER(item->refcnt != 1))
			continue; /* taken by a creator meanwhile */
		dsm_ctl_begin(DSM_INTENT_BACKEND);
		dsm_ctl_free_slot(slot);
		dsm_ctl_commit();
	}
}

/*
 * Reserve a slot for a create: off the free list, or, when it is empty,
 * out of another backend's cache (a compare-and-swap on busy, which that
 * backend's own take would otherwise win).  The slot is then ours
 * (moribund, busy = us, no segment).  *slot is DSM_NO_SLOT if every slot
 * is in use.  false if the lock could not be taken (reported at WARNING;
 * nothing changed).  Never raises.
 */
static bool
dsm_slot_reserve(uint32_t *slotp)
{
	dsm_control_item *items = dsm_control_items(dsm_control);
	uint32_t slot;

	*slotp = DSM_NO_SLOT;
	if (!dsm_control_lock(WARNING))
		return false;
	dsm_ctl_begin(DSM_INTENT_CREATE);
	slot = dsm_ctl_pop_free();
	if (slot != DSM_NO_SLOT)
	{
		CTL_SET32(items[slot].refcnt, 1);
		CTL_SET32(items[slot].busy, dsm_backend_index);
	}
	dsm_ctl_commit();
	for (uint32_t i = 0; slot == DSM_NO_SLOT && i < dsm_control->maxitems; i++)
	{
		int32_t b = __atomic_load_n(&items[i].busy, __ATOMIC_ACQUIRE);

		if (DSM_BUSY_IS_CACHED(b) && items[i].refcnt == 1 &&
			__atomic_compare_exchange_n(&items[i].busy, &b, dsm_backend_index, false,
										__ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
		{
			slot = i;
			(void) INJECTION_POINT("dsm-slot-taken"); /* another backend's cached slot is ours, lock held */
		}
	}
	dsm_control_unlock();
	*slotp = slot;
	return true;
}


/*
 * Destroy the operating-system segment of a moribund slot (refcnt 1, whose
 * busy field names us), then free the slot.  priv is the implementation's
 * private data from this process's mapping, if it had one (it saves System
 * V a key lookup), else NULL.  A segment that is already gone counts as
 * destroyed: its creator may have died before making it, or its destroyer
 * after removing it, and keeping the slot then would lose it until
 * shutdown.  If the destroy fails and the segment is still there, the slot
 * stays moribund with nobody busy on it, so that no one attaches it and
 * the supervisor retries at shutdown.  Called without the lock.  Never
 * raises: problems are reported at elevel (< ERROR).
 */
static void
dsm_destroy_moribund(uint32_t slot, dsm_handle handle, void *priv, int elevel)
{
	void *addr = NULL;
	size_t size = 0;
	bool ok;
	dsm_control_item *item;

	ok = dsm_impl_op(DSM_OP_DESTROY, handle, 0, &priv, &addr, &size, elevel);
	if (!ok && !dsm_os_segment_exists(handle))
		ok = true;
	(void) INJECTION_POINT("dsm-destroy-before-free");
	if (ok && dsm_slot_cache_put(slot))
		return; /* kept for our next create: no lock */
	if (!dsm_control_lock(WARNING))
		return;
	item = &dsm_control_items(dsm_control)[slot];
	if (ALWAYS(dsm_item_handle(item) == handle && dsm_item_moribund(item)))
	{
		dsm_ctl_begin(DSM_INTENT_DETACH);
		if (ok)
			dsm_ctl_free_slot(slot);
		else
			CTL_SET32(item->busy, DSM_BUSY_NONE);
		dsm_ctl_commit();
	}
	dsm_control_unlock();
}

/*
 * Destroy the operating-system segment that slot of control names, if
 * there is one, and never one another process made under a colliding
 * System V key (System V keys hold 16 bits of the handle, and a creator
 * names its slot without the lock).  By what the slot records (impl_id):
 * nothing, for a slot that is free, cached, or reserved and not yet
 * named; the recorded System V id, if that segment still carries the
 * key; for a segment still being created, the one under the key if the
 * creator (the backend busy names) made it and no other slot records its
 * id; POSIX and mmap names are unique per handle.  Returns 1 if a segment
 * was removed, 0 if there was none, -1 if one is still there (reported
 * at elevel, below ERROR).  control may be a dead cluster's.  Never
 * raises.
 */
static int dsm_destroy_recorded(dsm_control_header *control, uint32_t slot, dsm_handle h, uint32_t id,
								int32_t busy, int elevel);

int
dsm_control_destroy_segment(dsm_control_header *control, uint32_t slot, int elevel)
{
	dsm_control_item *item = &dsm_control_items(control)[slot];
	uint64_t w = dsm_item_word(item);

	if (item->refcnt == 0)
		return 0;
	/* Revoked by a shutdown that died before destroying it: the handle was kept in next_free. */
	return dsm_destroy_recorded(control, slot,
								w == DSM_WORD_REVOKED ? (dsm_handle) item->next_free : DSM_WORD_HANDLE(w),
								__atomic_load_n(&item->impl_id, __ATOMIC_ACQUIRE),
								__atomic_load_n(&item->busy, __ATOMIC_ACQUIRE), elevel);
}

/* dsm_control_destroy_segment() of a slot's handle h, impl_id id and busy, read by the caller. */
static int
dsm_destroy_recorded(dsm_control_header *control, uint32_t slot, dsm_handle h, uint32_t id,
					 int32_t busy, int elevel)
{
	dsm_control_item *items = dsm_control_items(control);

	if (DSM_BUSY_IS_CACHED(busy) || id == DSM_IMPL_ID_NONE || h == DSM_HANDLE_INVALID ||
		h == (dsm_handle) DSM_WORD_REVOKED)
		return 0;
	if (dsm_impl_current() == DSM_IMPL_SYSV)
	{
		int shmid;
		pid_t creator;

		if (id != DSM_IMPL_ID_CREATING)
			return dsm_impl_sysv_remove_orphan(h, (int) (id - 1), 0, elevel);
		if (busy < 0 || (uint32_t) busy >= control->max_backends)
			return 0; /* no creator known: nothing it made can be told apart */
		creator = (pid_t) dsm_control_backends(control)[busy].pid;
		if (creator <= 0 || (shmid = dsm_impl_sysv_find(h)) < 0)
			return 0;
		for (uint32_t i = 0; i < control->maxitems; i++)
			if (i != slot && items[i].refcnt != 0 &&
				__atomic_load_n(&items[i].impl_id, __ATOMIC_ACQUIRE) == (uint32_t) shmid + 1)
				return 0; /* another slot's segment (its creator may be the same backend) */
		return dsm_impl_sysv_remove_orphan(h, shmid, creator, elevel);
	}
	else
	{
		void *priv = NULL;
		void *addr = NULL;
		size_t size = 0;

		if (dsm_impl_op(DSM_OP_DESTROY, h, 0, &priv, &addr, &size, elevel))
			return 1;
		return dsm_os_segment_exists(h) ? -1 : 0;
	}
}

/*
 * Settle a moribund slot that a dead backend was creating or destroying,
 * or kept in its cache (busy names it): destroy what it made under the
 * slot's handle (dsm_control_destroy_segment()), then free the slot,
 * unless that segment is still there; then nobody is busy on it and the
 * supervisor retries at shutdown.  Runs under the lock, inside an update.
 * Never raises.
 */
static void
dsm_ctl_settle_orphan(uint32_t slot)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

	ereport(DEBUG1, errmsg("settling dynamic shared memory slot %u left by a dead backend", slot));
	if (dsm_control_destroy_segment(dsm_control, slot, DEBUG1) >= 0)
		dsm_ctl_free_slot(slot);
	else
		CTL_SET32(item->busy, DSM_BUSY_NONE);
}

/* ---------------------------------------------------------------------
 * Process-local mapping table
 * ---------------------------------------------------------------------
 */

static void
dsm_local_link(dsm_segment *seg)
{
	seg->prev = NULL;
	seg->next = dsm_mappings_head;
	if (dsm_mappings_head != NULL)
		dsm_mappings_head->prev = seg;
	dsm_mappings_head = seg;
	dsm_mappings_by_slot[seg->control_slot] = seg;
}

static void
dsm_local_unlink(dsm_segment *seg, uint32_t slot)
{
	if (seg->prev != NULL)
		seg->prev->next = seg->next;
	else if (dsm_mappings_head == seg)
		dsm_mappings_head = seg->next;
	if (seg->next != NULL)
		seg->next->prev = seg->prev;
	seg->prev = seg->next = NULL;
	if (slot < dsm_mappings_nslots && dsm_mappings_by_slot[slot] == seg)
		dsm_mappings_by_slot[slot] = NULL;
}

/*
 * Forget all process-local dsm state without touching shared memory: used
 * in a child right after fork, which must not act on its parent's
 * mappings, and after a joined backend detached its control segment.  The
 * local tables are freed only if this process allocated them (a fork
 * child's copies are just dropped: they belong to the parent's heap
 * image, freed with TopMemoryContext if ever).  Never fails.
 */
void
dsm_local_reset(void)
{
	dsm_mappings_head = NULL;
	dsm_mappings_by_slot = NULL;
	dsm_mappings_nslots = 0;
	dsm_segment_pool_ready = false;
	dsm_backend_index = -1;
	dsm_role = DSMKIT_ROLE_NONE;
	dsm_repair_pending_backend = INT32_MIN;
	dsm_slot_cache_count = 0; /* a forked child owns none of its parent's cached slots */
}

static void dsm_backend_shutdown(int code, Datum arg);

/*
 * Make this process backend index of the mapped control segment: allocate
 * the by-slot table in TopMemoryContext and register the exit hook that
 * detaches everything and gives the backend slot back.  The caller has
 * already reserved (or been given) the backend slot.  ERROR on out of
 * memory or a full exit-hook chain; the caller undoes its reservation.
 */
void
dsm_backend_attach_local(int index, bool joined)
{
	dsm_segment **table;

	table = MemoryContextAllocZero(TopMemoryContext,
								   (size_t) dsm_control->maxitems * sizeof(dsm_segment *));
	PG_TRY();
	{
		on_shmem_exit(dsm_backend_shutdown, BoolGetDatum(joined));
	}
	PG_CATCH();
	{
		pfree(table);
		PG_RE_THROW();
	}
	PG_END_TRY();
	dsm_mappings_by_slot = table;
	dsm_mappings_nslots = dsm_control->maxitems;
	dsm_mappings_head = NULL;
	dsm_backend_index = index;
	dsm_role = DSMKIT_ROLE_BACKEND;
}

/*
 * The backend exit hook: detach every mapping, then give the backend slot
 * back (a spawned backend marks it EXITED for the supervisor's reap; a
 * joined one frees it and unmaps the control segment).  Never raises.
 */
static void
dsm_backend_shutdown(int code, Datum arg)
{
	bool joined = DatumGetBool(arg);
	int index = dsm_backend_index;

	(void) code;
	dsm_detach_all();
	if (dsm_control != NULL && index >= 0 && dsm_control_lock(WARNING))
	{
		dsm_control_backend *b = &dsm_control_backends(dsm_control)[index];

		dsm_slot_cache_give_back();
		dsm_ctl_begin(DSM_INTENT_BACKEND);
		if (dsm_control_backend_nrefs(dsm_control, (uint32_t) index) == 0 &&
			b->pid == (int32_t) getpid())
			CTL_SET32(b->state, joined ? DSM_BACKEND_FREE : DSM_BACKEND_EXITED);
		dsm_ctl_commit();
		dsm_control_unlock();
	}
	if (dsm_mappings_by_slot != NULL)
		pfree(dsm_mappings_by_slot);
	dsm_local_reset();
	if (joined && dsm_control != NULL)
	{
		void *addr = dsm_control;

		dsm_impl_op(DSM_OP_DETACH, dsm_control_handle, 0, &dsm_control_impl_private, &addr,
					&dsm_control_mapped_size, WARNING);
		dsm_control = NULL;
		dsm_control_handle = DSM_HANDLE_INVALID;
		dsm_control_impl_private = NULL;
		if (dsm_cluster_directory != NULL)
			pfree((void *) dsm_cluster_directory);
		dsm_cluster_directory = NULL;
	}
}

/* ---------------------------------------------------------------------
 * Backend slots
 * ---------------------------------------------------------------------
 */

/*
 * Reserve a free backend slot.  A joined backend (joined true) fills in
 * its own pid and start time and is RUNNING at once; a slot for a backend
 * the supervisor is about to fork is STARTING with pid 0.  Returns the
 * index, or -1 if every slot is taken (or the lock failed, reported at
 * WARNING).  The caller may raise ERROR afterwards; nothing is held.
 */
int
dsm_backend_reserve(bool joined)
{
	dsm_control_backend *backends;
	int found = -1;
	pid_t me = getpid();
	uint64_t start = joined ? dsm_process_start_time(me) : 0;

	if (!dsm_control_lock(WARNING))
		return -1;
	backends = dsm_control_backends(dsm_control);
	for (uint32_t i = 0; i < dsm_control->max_backends; i++)
	{
		if (backends[i].state != DSM_BACKEND_FREE)
			continue;
		dsm_ctl_begin(DSM_INTENT_BACKEND);
		CTL_SET32(backends[i].pid, joined ? me : 0);
		CTL_SET64(backends[i].start_time, start);
		CTL_SET32(backends[i].joined, joined ? 1 : 0);
		CTL_SET32(backends[i].state, joined ? DSM_BACKEND_RUNNING : DSM_BACKEND_STARTING);
		dsm_ctl_commit();
		found = (int) i;
		break;
	}
	dsm_control_unlock();
	return found;
}

/* Record the pid of a backend being spawned (the supervisor's half).  Never raises. */
void
dsm_backend_set_pid(int index, pid_t pid)
{
	if (!dsm_control_lock(WARNING))
		return;
	dsm_ctl_begin(DSM_INTENT_BACKEND);
	CTL_SET32(dsm_control_backends(dsm_control)[index].pid, pid);
	dsm_ctl_commit();
	dsm_control_unlock();
}

/* The spawned child's half: pid, start time, RUNNING.  Never raises. */
void
dsm_backend_set_running(int index)
{
	dsm_control_backend *b;
	pid_t me = getpid();
	uint64_t start = dsm_process_start_time(me);

	if (!dsm_control_lock(WARNING))
		return;
	b = &dsm_control_backends(dsm_control)[index];
	dsm_ctl_begin(DSM_INTENT_BACKEND);
	CTL_SET32(b->pid, me);
	CTL_SET64(b->start_time, start);
	CTL_SET32(b->state, DSM_BACKEND_RUNNING);
	dsm_ctl_commit();
	dsm_control_unlock();
}

/* Does backend slot b belong to expect_pid (0: anyone) started at expect_start (0: any time)?  Call under the lock. */
static bool
dsm_backend_slot_is(const dsm_control_backend *b, pid_t expect_pid, uint64_t expect_start)
{
	if (expect_pid == 0)
		return true;
	return b->pid == (int32_t) expect_pid && (expect_start == 0 || b->start_time == expect_start);
}

/*
 * Reclaim everything a backend that is gone left in the control segment:
 * each reference it held is dropped (one commit per slot, so the undo log
 * stays small), a segment left with no reference and no pin is destroyed
 * and its slot freed, a segment it was creating or destroying is destroyed,
 * and finally its backend slot is freed.  Called by the supervisor after
 * the process is known dead (waitpid, or a failed liveness check).  With
 * expect_pid nonzero, each step first checks under the lock that the slot
 * still belongs to that pid (and, with expect_start nonzero, to the
 * process that started at that time: the pid may have been reused by a
 * process that joined into the same slot), so a slot that changed hands
 * is left alone.  Other backends go on meanwhile.  Returns the number of
 * references dropped.  Never raises.
 */
int
dsm_backend_reclaim(int index, pid_t expect_pid, uint64_t expect_start)
{
	dsm_control_item *items;
	uint32_t maxitems;
	int dropped = 0;

	if (dsm_control == NULL || index < 0 || (uint32_t) index >= dsm_control->max_backends)
		return 0;
	items = dsm_control_items(dsm_control);
	maxitems = dsm_control->maxitems;
	/*
	 * Take the lock once before peeking without it: if the backend died
	 * holding it, that repairs its update, which may restore a reference
	 * bit the peeks below must see.
	 */
	if (!dsm_control_lock(WARNING))
		return 0;
	dsm_control_unlock();
	for (uint32_t slot = 0; slot < maxitems; slot++)
	{
		dsm_handle destroy = DSM_HANDLE_INVALID;

		/* Cheap unlocked peek; re-checked under the lock. */
		if (!dsm_control_ref_is_set(dsm_control, (uint32_t) index, slot) &&
			!(dsm_item_moribund(&items[slot]) &&
			  (items[slot].busy == index || items[slot].busy == DSM_BUSY_CACHED(index))))
			continue;
		if (!dsm_control_lock(WARNING))
			return dropped;
		if (!dsm_backend_slot_is(&dsm_control_backends(dsm_control)[index], expect_pid, expect_start))
		{
			/* The slot changed hands meanwhile: not the backend we were asked about. */
			dsm_control_unlock();
			return dropped;
		}
		dsm_ctl_begin(DSM_INTENT_RECLAIM);
		if (dsm_control_ref_is_set(dsm_control, (uint32_t) index, slot))
		{
			if (ALWAYS(dsm_item_active(&items[slot])) &&
				dsm_ctl_drop_ref(slot, index, DSM_BUSY_SUPERVISOR))
				destroy = dsm_item_handle(&items[slot]);
			else if (items[slot].busy == index)
				CTL_SET32(items[slot].busy, DSM_BUSY_NONE); /* it died publishing its create */
			if (dropped++ == 1)
				(void) INJECTION_POINT("supervisor-reap-mid-reclaim");
		}
		else if (dsm_item_moribund(&items[slot]) &&
				 (items[slot].busy == index || items[slot].busy == DSM_BUSY_CACHED(index)))
			dsm_ctl_settle_orphan(slot);
		dsm_ctl_commit();
		dsm_control_unlock();
		if (destroy != DSM_HANDLE_INVALID)
		{
			ereport(DEBUG1, errmsg("destroying dynamic shared memory segment %u left by a dead backend",
								   destroy));
			dsm_destroy_moribund(slot, destroy, NULL, DEBUG1);
		}
	}
	if (dsm_control_lock(WARNING))
	{
		dsm_control_backend *b = &dsm_control_backends(dsm_control)[index];

		dsm_ctl_begin(DSM_INTENT_BACKEND);
		if (dsm_control_backend_nrefs(dsm_control, (uint32_t) index) == 0 &&
			dsm_backend_slot_is(b, expect_pid, expect_start))
		{
			CTL_SET32(b->state, DSM_BACKEND_FREE);
			CTL_SET32(b->pid, 0);
			CTL_SET64(b->start_time, 0);
		}
		dsm_ctl_commit();
		dsm_control_unlock();
	}
	return dropped;
}

/* ---------------------------------------------------------------------
 * Process liveness
 * ---------------------------------------------------------------------
 */

/*
 * The start time of process pid in clock ticks since boot (field 22 of
 * /proc/<pid>/stat), which with the pid identifies a process even after
 * its pid is reused.  Returns 0 if the process does not exist or /proc is
 * unreadable.  Never raises.
 */
uint64_t
dsm_process_start_time(pid_t pid)
{
	char path[64];
	char buf[1024];
	ssize_t n;
	int fd;
	char *p;
	unsigned long long start = 0;

	snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	do
		n = read(fd, buf, sizeof buf - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	p = strrchr(buf, ')');
	if (p == NULL)
		return 0;
	p++;
	/* Field 3 is the state: a zombie (Z) or dead (X) process no longer runs. */
	if (p[0] == ' ' && (p[1] == 'Z' || p[1] == 'X'))
		return 0;
	/* Fields 3..22 follow; skip 19 of them to reach field 22. */
	for (int field = 3; field < 22; field++)
	{
		p = strchr(p + 1, ' ');
		if (p == NULL)
			return 0;
	}
	if (sscanf(p, " %llu", &start) != 1)
		return 0;
	return (uint64_t) start;
}

/*
 * True if process pid runs (a zombie does not) and, when start_time is
 * nonzero, started at start_time, so a reused pid is not mistaken for the
 * process we knew.  Never raises.
 */
bool
dsm_process_alive(pid_t pid, uint64_t start_time)
{
	uint64_t now;

	if (pid <= 0)
		return false;
	if (kill(pid, 0) != 0 && errno == ESRCH)
		return false;
	now = dsm_process_start_time(pid);
	if (now == 0)
		return false;
	return start_time == 0 || now == start_time;
}

/* ---------------------------------------------------------------------
 * The public API
 * ---------------------------------------------------------------------
 */

/* ERROR unless this process is a backend (the supervisor and strangers are refused). */
static void
dsm_require_backend(const char *what)
{
	if (likely(dsm_role == DSMKIT_ROLE_BACKEND && dsm_control != NULL))
		return;
	if (dsm_role == DSMKIT_ROLE_SUPERVISOR)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("%s cannot be called in the supervisor", what),
				errhint("Create and attach segments in backends started with supervisor_spawn_backend()."));
	ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg("%s called in a process that is not a backend", what),
			errhint("Call backend_join() with the cluster directory first, or start the process with supervisor_spawn_backend()."));
}

/* ERROR naming the caller if seg is NULL, a programming error; nothing is touched. */
static void
dsm_require_segment(const dsm_segment *seg, const char *what)
{
	if (unlikely(seg == NULL))
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s called with a NULL dynamic shared memory segment", what));
}

/*
 * A create found its slot's word revoked: shutdown took the slot away (and
 * freed it), or it was a free slot that shutdown marked.  In the second
 * case the slot is still ours: put it back on the free list (its word
 * stays revoked), so that every create after shutdown gets the same
 * ERROR instead of using up the slots.  Never raises.
 */
static void
dsm_give_back_revoked(uint32_t slot)
{
	dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

	if (!dsm_control_lock(WARNING))
		return;
	if (item->busy == dsm_backend_index && item->refcnt == 1 && dsm_item_word(item) == DSM_WORD_REVOKED)
	{
		dsm_ctl_begin(DSM_INTENT_CREATE);
		dsm_ctl_free_slot(slot);
		dsm_ctl_commit();
	}
	dsm_control_unlock();
}

/* The ERROR of a create whose slot the supervisor's shutdown took away. */
static void
dsm_raise_slot_taken(void)
{
	ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg("could not create dynamic shared memory segment: the cluster is shutting down"),
			errdetail("The supervisor is destroying every segment of the cluster."));
}

/* Raise the errno an injection point asked for, as the failing call would. */
static void
dsm_injected_error(int e, const char *point)
{
	errno = e;
	ereport(ERROR, errcode(ERRCODE_INSUFFICIENT_RESOURCES),
			errmsg("could not create dynamic shared memory segment: %m"),
			errdetail("Injection point \"%s\" failed the operation.", point));
}

/*
 * Make the operating-system segment of a freshly reserved slot (moribund,
 * busy = us) for seg, drawing a new handle when the name is taken, and
 * return the handle it was made under.  On ERROR (the creation failed, or
 * an injection point asked) the slot is freed and seg is given back before
 * the error propagates.  A function of its own so that the only locals
 * live across its sigsetjmp() are its arguments and the handle (volatile),
 * never the inlined slot helpers' temporaries (-Wclobbered).
 */
static dsm_handle
dsm_create_os_segment(dsm_segment *seg, uint32_t slot, dsm_handle first, size_t size)
{
	volatile dsm_handle handle = first;

	PG_TRY();
	{
		int attempts = 0;
		int e;

		if ((e = INJECTION_POINT("dsm-create-after-slot")) != 0)
			dsm_injected_error(e, "dsm-create-after-slot");
		/* EEXIST (a leftover, or a System V key collision): new generation, new handle. */
		while (!dsm_impl_op(DSM_OP_CREATE, handle, size, &seg->impl_private, &seg->mapped_address,
							&seg->mapped_size, ERROR))
		{
			if (++attempts > 1000)
				ereport(ERROR, errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						errmsg("could not find a free name for a dynamic shared memory segment"),
						errdetail("1000 handles were taken already."));
			(void) INJECTION_POINT("dsm-create-new-handle");
			handle = dsm_owned_new_generation(slot, size);
			if (handle == DSM_HANDLE_INVALID)
				dsm_raise_slot_taken();
		}
	}
	PG_CATCH();
	{
		/*
		 * The operating-system segment was not made (dsm_impl_op undoes its
		 * own half).  Free the slot, unless shutdown took it away.
		 */
		bool taken = false;

		if (dsm_control_lock(WARNING))
		{
			dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

			taken = dsm_item_word(item) == DSM_WORD_REVOKED || item->busy != dsm_backend_index;
			if (!taken && !dsm_item_active(item))
			{
				dsm_ctl_begin(DSM_INTENT_CREATE);
				dsm_ctl_free_slot(slot);
				dsm_ctl_commit();
			}
			dsm_control_unlock();
		}
		dsm_segment_free(seg);
		if (taken)
		{
			/* Shutdown took the slot (and maybe removed what we were making): say so. */
			FlushErrorState();
			dsm_raise_slot_taken();
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	return handle;
}

/*
 * Create a segment (see dsm.h).  Order: resource owner slot, descriptor,
 * control slot (moribund, busy = us, so nobody attaches it: from our slot
 * cache, else reserved under the lock), its new handle, then the
 * operating-system segment under that handle, then publication: our
 * reference makes the slot's word active.  Each failure undoes what came
 * before, so nothing leaks.  Only backends may call it.
 */
dsm_segment *
dsm_create(size_t size, int flags)
{
	dsm_segment *seg;
	uint32_t slot;
	dsm_handle handle = DSM_HANDLE_INVALID;
	dsm_control_item *item;
	bool published = false;
	bool locked = true;
	int e;

	dsm_require_backend("dsm_create");
	if (size == 0)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("cannot create a dynamic shared memory segment of size 0"));
	if (CurrentResourceOwner != NULL)
		ResourceOwnerEnlarge(CurrentResourceOwner);
	seg = dsm_segment_alloc();

	if ((e = INJECTION_POINT("dsm-create-before-slot")) != 0)
	{
		dsm_segment_free(seg);
		dsm_injected_error(e, "dsm-create-before-slot");
	}

	/*
	 * A slot of our own, moribund and busy = us until the segment exists:
	 * from our cache without the lock, else reserved under it.
	 */
	slot = dsm_slot_cache_take();
	if (slot == DSM_NO_SLOT)
	{
		if (!dsm_slot_reserve(&slot))
		{
			dsm_segment_free(seg);
			ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not lock the dynamic shared memory control segment"));
		}
		if (slot == DSM_NO_SLOT)
		{
			dsm_segment_free(seg);
			if (flags & DSM_CREATE_NULL_IF_MAXSEGMENTS)
				return NULL;
			ereport(ERROR, errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					errmsg("too many dynamic shared memory segments"),
					errdetail("All %u segment slots of the control segment are in use.",
							  dsm_control->maxitems),
					errhint("Raise max_segments in the supervisor's configuration, or detach segments sooner."));
		}
	}
	(void) INJECTION_POINT("dsm-create-slot-owned");
	handle = dsm_owned_new_generation(slot, size);
	if (handle == DSM_HANDLE_INVALID)
	{
		dsm_give_back_revoked(slot);
		dsm_segment_free(seg);
		dsm_raise_slot_taken();
	}
	seg->control_slot = slot;
	handle = dsm_create_os_segment(seg, slot, handle, size);

	/*
	 * Record what exists (System V: the segment's id, so that a reap never
	 * needs to guess by key), then publish: active, with our reference.  A
	 * lock-free backend sets its bit in the word of the slot it owns, and
	 * only then gives up ownership (busy): a death in between leaves an
	 * active segment with our reference, which the reap drops.  The others
	 * publish under the lock, as they attach.
	 */
	seg->handle = handle;
	(void) INJECTION_POINT("dsm-create-made");
	item = &dsm_control_items(dsm_control)[slot];
	__atomic_store_n(&item->impl_id,
					 dsm_impl_current() == DSM_IMPL_SYSV
						 ? (uint32_t) (uintptr_t) seg->impl_private /* shmid + 1, never 0 */
						 : 1u,
					 __ATOMIC_RELEASE);
	if (likely(dsm_backend_is_fast(dsm_backend_index)))
	{
		uint64_t expect = (uint64_t) handle;
		int32_t me = dsm_backend_index;

		published = __atomic_compare_exchange_n(&item->word, &expect,
												expect | DSM_WORD_FAST_BIT(dsm_backend_index), false,
												__ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
		if (published)
		{
			(void) INJECTION_POINT("dsm-create-published");
			(void) __atomic_compare_exchange_n(&item->busy, &me, DSM_BUSY_NONE, false,
											   __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
		}
	}
	else if (!(locked = dsm_control_lock(WARNING)))
		published = false;
	else
	{
		published = dsm_item_word(item) == (uint64_t) handle && item->busy == dsm_backend_index;
		if (published)
		{
			dsm_ctl_begin(DSM_INTENT_CREATE);
			CTL_SET32(item->busy, DSM_BUSY_NONE);
			dsm_ctl_add_ref(slot, dsm_backend_index); /* makes the word active: the last change */
			dsm_ctl_commit();
		}
		dsm_control_unlock();
	}
	if (!published)
	{
		/* Shutdown took the slot away (or the lock failed): the segment is nobody's but ours. */
		void *priv = seg->impl_private;

		(void) dsm_impl_op(DSM_OP_DESTROY, handle, 0, &priv, &seg->mapped_address, &seg->mapped_size,
						   WARNING);
		dsm_segment_free(seg);
		if (!locked)
			ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not publish dynamic shared memory segment %u: could not lock the control segment",
						   handle));
		dsm_raise_slot_taken();
	}
	dsm_local_link(seg);
	if (CurrentResourceOwner != NULL)
	{
		seg->resowner = CurrentResourceOwner;
		ResourceOwnerRemember(CurrentResourceOwner, PointerGetDatum(seg), &dsm_resowner_desc);
	}
	return seg;
}

/*
 * Map an existing segment (see dsm.h).  The handle names its slot, so this
 * looks at one slot, whatever the number of segments.  Only backends may
 * call it.
 */
dsm_segment *
dsm_attach(dsm_handle h)
{
	dsm_segment *seg;
	dsm_segment *existing;
	dsm_control_item *item;
	uint32_t slot;
	bool found = false;

	dsm_require_backend("dsm_attach");
	if (h == DSM_HANDLE_INVALID)
		return NULL;
	slot = dsm_handle_slot(h);
	if (slot >= dsm_control->maxitems)
		return NULL;
	existing = dsm_mappings_by_slot[slot];
	if (existing != NULL)
	{
		if (existing->handle == h)
			ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
					errmsg("dynamic shared memory segment %u is already attached", h),
					errhint("Use dsm_find_mapping() to find an existing mapping."));
		return NULL; /* the slot holds a newer segment: h was destroyed */
	}
	if (CurrentResourceOwner != NULL)
		ResourceOwnerEnlarge(CurrentResourceOwner);
	seg = dsm_segment_alloc();
	seg->handle = h;

	item = &dsm_control_items(dsm_control)[slot];
	if (likely(dsm_backend_is_fast(dsm_backend_index)))
	{
		/* Lock-free: set our bit in the word if it still names h and is active (dsm_int.h, 4). */
		uint64_t w = dsm_item_word(item);

		while (DSM_WORD_HANDLE(w) == h && DSM_WORD_ACTIVE(w))
		{
			if (__atomic_compare_exchange_n(&item->word, &w,
											w | DSM_WORD_FAST_BIT(dsm_backend_index), false,
											__ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
			{
				found = true;
				(void) INJECTION_POINT("dsm-attach-after-refcount");
				break;
			}
		}
	}
	else
	{
		if (!dsm_control_lock(WARNING))
		{
			dsm_segment_free(seg);
			ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not lock the dynamic shared memory control segment"));
		}
		if (dsm_item_handle(item) == h && dsm_item_active(item))
		{
			dsm_ctl_begin(DSM_INTENT_ATTACH);
			dsm_ctl_add_ref(slot, dsm_backend_index);
			(void) INJECTION_POINT("dsm-attach-after-refcount");
			dsm_ctl_commit();
			found = true;
		}
		dsm_control_unlock();
	}
	if (!found)
	{
		/* Unknown, destroyed, or moribund (being created or destroyed). */
		dsm_segment_free(seg);
		return NULL;
	}
	seg->control_slot = slot;
	dsm_local_link(seg);

	PG_TRY();
	{
		/* The recorded size: our reference keeps the slot; a resize keeps it <= the real size. */
		size_t size = (size_t) __atomic_load_n(&item->size, __ATOMIC_ACQUIRE);

		dsm_impl_op(DSM_OP_ATTACH, h, size, &seg->impl_private, &seg->mapped_address,
					&seg->mapped_size, ERROR);
	}
	PG_CATCH();
	{
		dsm_detach(seg);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (CurrentResourceOwner != NULL)
	{
		seg->resowner = CurrentResourceOwner;
		ResourceOwnerRemember(CurrentResourceOwner, PointerGetDatum(seg), &dsm_resowner_desc);
	}
	return seg;
}

/*
 * Detach (see dsm.h): callbacks (each popped before it is called), the
 * owner forgets the mapping, unmap, then drop the reference (lock-free
 * unless it is the last one); the process that drops the last reference
 * destroys the segment.  Unmapping before dropping the reference
 * guarantees that whoever drops the last one knows no mapping remains.  Never raises ERROR itself (a callback that raises
 * propagates its error, having been removed); a NULL seg draws a WARNING.
 */
void
dsm_detach(dsm_segment *seg)
{
	uint32_t slot;
	dsm_handle destroy = DSM_HANDLE_INVALID;
	void *impl_private;

	if (seg == NULL)
	{
		ereport(WARNING, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("dsm_detach called with a NULL dynamic shared memory segment"));
		return;
	}
	slot = seg->control_slot;
	impl_private = seg->impl_private;

	while (seg->callbacks != NULL)
	{
		dsm_detach_callback *cb = seg->callbacks;
		on_dsm_detach_callback function = cb->function;
		Datum arg = cb->arg;

		seg->callbacks = cb->next;
		pfree(cb);
		function(seg, arg);
	}

	if (seg->resowner != NULL)
	{
		ResourceOwner owner = seg->resowner;

		seg->resowner = NULL;
		ResourceOwnerForget(owner, PointerGetDatum(seg), &dsm_resowner_desc);
	}

	if (seg->mapped_address != NULL)
	{
		/* impl_private (System V's shmid) stays known for a destroy below. */
		impl_private = seg->impl_private;
		dsm_impl_op(DSM_OP_DETACH, seg->handle, 0, &seg->impl_private, &seg->mapped_address,
					&seg->mapped_size, WARNING);
		seg->impl_private = NULL;
		seg->mapped_address = NULL;
		seg->mapped_size = 0;
	}

	if (slot != DSM_NO_SLOT && dsm_control != NULL)
	{
		dsm_control_item *item = &dsm_control_items(dsm_control)[slot];
		bool dropped = false;

		(void) INJECTION_POINT("dsm-detach-before-refcount");
		if (likely(dsm_backend_is_fast(dsm_backend_index)))
		{
			/* Lock-free unless ours is the last reference (dsm_int.h, invariant 4). */
			uint64_t bit = DSM_WORD_FAST_BIT(dsm_backend_index);
			uint64_t w = dsm_item_word(item);

			while (DSM_WORD_HANDLE(w) == seg->handle && (w & bit) && DSM_WORD_ACTIVE(w & ~bit))
			{
				if (__atomic_compare_exchange_n(&item->word, &w, w & ~bit, false, __ATOMIC_SEQ_CST,
												__ATOMIC_ACQUIRE))
				{
					dropped = true;
					break;
				}
			}
		}
		if (!dropped && dsm_control_lock(WARNING))
		{
			if (ALWAYS(dsm_item_handle(item) == seg->handle && dsm_item_active(item) &&
					   dsm_control_ref_is_set(dsm_control, (uint32_t) dsm_backend_index, slot)))
			{
				dsm_ctl_begin(DSM_INTENT_DETACH);
				/* Last reference: we destroy it; busy lets the supervisor finish if we die. */
				if (dsm_ctl_drop_ref(slot, dsm_backend_index, dsm_backend_index))
					destroy = seg->handle;
				dsm_ctl_commit();
			}
			dsm_control_unlock();
		}
		seg->control_slot = DSM_NO_SLOT;
		if (destroy != DSM_HANDLE_INVALID)
		{
			(void) INJECTION_POINT("dsm-detach-before-destroy");
			dsm_destroy_moribund(slot, destroy, impl_private, WARNING);
		}
	}

	dsm_local_unlink(seg, slot);
	dsm_segment_free(seg);
}

/* Resource owner release: the owner already forgot the mapping. */
static void
dsm_resowner_release(Datum res)
{
	dsm_segment *seg = DatumGetPointer(res);

	seg->resowner = NULL;
	dsm_detach(seg);
}

static char *
dsm_resowner_print(Datum res)
{
	dsm_segment *seg = DatumGetPointer(res);

	return psprintf("dynamic shared memory segment %u", seg->handle);
}

/*
 * Record slot's size, which attachers map.  With size 0, record the
 * object's real size as the system reports it now (keeping the record
 * unchanged if it cannot be read), under the lock, so that of two
 * overlapping resizes the one that records last records what the object
 * really is.  Never raises.
 */
static void
dsm_record_size(uint32_t slot, dsm_handle h, size_t size)
{
	if (dsm_control != NULL && dsm_control_lock(WARNING))
	{
		dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

		if (size == 0)
		{
			int64_t real = dsm_os_segment_size(h);

			size = real > 0 ? (size_t) real : (size_t) item->size;
		}
		dsm_ctl_begin(DSM_INTENT_RESIZE);
		CTL_SET64(item->size, size);
		dsm_ctl_commit();
		dsm_control_unlock();
	}
}

/*
 * Resize (see dsm.h): the implementation changes the size and remaps; the
 * slot records the new size, which dsm_attach() maps without asking the
 * system.  So the record must not exceed the object: a shrink is recorded
 * before the object shrinks, and every resize ends by recording the
 * object's real size (a kill in between leaves a record that is too
 * small, which is safe).  System V cannot resize; its ERROR comes before
 * anything is recorded.  ERROR if the system refuses; the mapping is then
 * unchanged and the record is the smaller of its old value and the
 * object's real size.
 */
void *
dsm_resize(dsm_segment *seg, size_t size)
{
	uint32_t slot;
	size_t recorded;
	volatile bool lowered = false;
	int e;

	dsm_require_segment(seg, "dsm_resize");
	Assert(seg->control_slot != DSM_NO_SLOT);
	if ((e = INJECTION_POINT("dsm-resize-before")) != 0)
	{
		errno = e;
		ereport(ERROR, errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				errmsg("could not resize dynamic shared memory segment %u: %m", seg->handle));
	}
	if (size == 0)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("cannot resize dynamic shared memory segment %u to size 0", seg->handle));
	slot = seg->control_slot;
	recorded = (size_t) dsm_control_items(dsm_control)[slot].size;
	if (size < recorded && dsm_impl_current() != DSM_IMPL_SYSV)
	{
		dsm_record_size(slot, seg->handle, size);
		lowered = true;
	}
	PG_TRY();
	{
		dsm_impl_op(DSM_OP_RESIZE, seg->handle, size, &seg->impl_private, &seg->mapped_address,
					&seg->mapped_size, ERROR);
	}
	PG_CATCH();
	{
		if (lowered)
		{
			/* The implementation tried to put the old size back; trust only what the system says. */
			int64_t real = dsm_os_segment_size(seg->handle);

			if (real > (int64_t) size)
				dsm_record_size(slot, seg->handle, real < (int64_t) recorded ? (size_t) real : recorded);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	dsm_record_size(slot, seg->handle, 0);
	return seg->mapped_address;
}

/*
 * Remap after another process resized: map the segment anew at its
 * current size, then drop the old mapping.  ERROR if the new mapping
 * fails; the old one is then kept.
 */
void *
dsm_remap(dsm_segment *seg)
{
	void *priv = NULL;
	void *addr = NULL;
	size_t size = 0;

	dsm_require_segment(seg, "dsm_remap");
	dsm_impl_op(DSM_OP_ATTACH, seg->handle, 0, &priv, &addr, &size, ERROR);
	if (seg->mapped_address != NULL)
		dsm_impl_op(DSM_OP_DETACH, seg->handle, 0, &seg->impl_private, &seg->mapped_address,
					&seg->mapped_size, WARNING);
	seg->impl_private = priv;
	seg->mapped_address = addr;
	seg->mapped_size = size;
	return addr;
}

/* Give the mapping session lifetime.  Never fails, except ERROR for a NULL seg. */
void
dsm_keep_mapping(dsm_segment *seg)
{
	dsm_require_segment(seg, "dsm_keep_mapping");
	if (seg->resowner != NULL)
	{
		ResourceOwner owner = seg->resowner;

		seg->resowner = NULL;
		ResourceOwnerForget(owner, PointerGetDatum(seg), &dsm_resowner_desc);
	}
}

void
dsm_pin_mapping(dsm_segment *seg)
{
	dsm_keep_mapping(seg);
}

/*
 * Put the mapping under CurrentResourceOwner (moving it from another
 * owner if it has one).  With CurrentResourceOwner NULL the mapping keeps
 * session lifetime: NULL means "session" everywhere in dsmkit.  ERROR only
 * on out of memory, before anything changed.
 */
void
dsm_unpin_mapping(dsm_segment *seg)
{
	ResourceOwner owner = CurrentResourceOwner;

	dsm_require_segment(seg, "dsm_unpin_mapping");
	if (seg->resowner == owner)
		return;
	if (owner != NULL)
		ResourceOwnerEnlarge(owner);
	dsm_keep_mapping(seg);
	if (owner != NULL)
	{
		seg->resowner = owner;
		ResourceOwnerRemember(owner, PointerGetDatum(seg), &dsm_resowner_desc);
	}
}

/*
 * Pin the segment: one more reference, held by the cluster rather than by
 * a process, so the segment survives the death of every backend.  ERROR if
 * it is already pinned.
 */
void
dsm_pin_segment(dsm_segment *seg)
{
	bool already = false;
	bool gone = false;
	int e;

	dsm_require_segment(seg, "dsm_pin_segment");
	if ((e = INJECTION_POINT("dsm-pin-segment")) != 0)
	{
		errno = e;
		ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("could not pin dynamic shared memory segment %u: %m", seg->handle));
	}
	if (seg->control_slot == DSM_NO_SLOT || dsm_control == NULL)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("dynamic shared memory segment %u is not attached", seg->handle));
	if (!dsm_control_lock(WARNING))
		ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("could not lock the dynamic shared memory control segment"));
	{
		dsm_control_item *item = &dsm_control_items(dsm_control)[seg->control_slot];

		if (item->pinned)
			already = true;
		else if (dsm_item_handle(item) != seg->handle || !dsm_item_active(item))
			gone = true; /* our reference was taken away (shutdown): never revive the word */
		else
		{
			dsm_ctl_begin(DSM_INTENT_PIN);
			CTL_SET32(item->pinned, 1);
			CTL_SET32(item->refcnt, item->refcnt + 1);
			(void) dsm_ctl_sync_others(seg->control_slot, DSM_BUSY_NONE);
			dsm_ctl_commit();
		}
	}
	dsm_control_unlock();
	if (already)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot pin dynamic shared memory segment %u: it is already pinned",
					   seg->handle));
	if (gone)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot pin dynamic shared memory segment %u: it is being destroyed",
					   seg->handle),
				errdetail("The cluster is shutting down."));
}

/*
 * Drop the cluster's pin of segment h; destroy the segment if that was its
 * last reference.  Backends and the supervisor may call it.  ERROR if no
 * live segment h is pinned.
 */
void
dsm_unpin_segment(dsm_handle h)
{
	uint32_t slot;
	bool ok = false;
	bool destroy = false;
	int e;

	if (dsm_control == NULL)
		dsm_require_backend("dsm_unpin_segment");
	if ((e = INJECTION_POINT("dsm-unpin-segment")) != 0)
	{
		errno = e;
		ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("could not unpin dynamic shared memory segment %u: %m", h));
	}
	slot = dsm_handle_slot(h);
	if (h != DSM_HANDLE_INVALID && slot < dsm_control->maxitems)
	{
		dsm_control_item *item = &dsm_control_items(dsm_control)[slot];

		if (!dsm_control_lock(WARNING))
			ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not lock the dynamic shared memory control segment"));
		if (dsm_item_handle(item) == h && dsm_item_active(item) && item->pinned)
		{
			ok = true;
			dsm_ctl_begin(DSM_INTENT_PIN);
			CTL_SET32(item->pinned, 0);
			CTL_SET32(item->refcnt, item->refcnt - 1);
			destroy = dsm_ctl_sync_others(slot, dsm_role == DSMKIT_ROLE_BACKEND ? dsm_backend_index
																			   : DSM_BUSY_SUPERVISOR);
			dsm_ctl_commit();
		}
		dsm_control_unlock();
	}
	if (!ok)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot unpin dynamic shared memory segment %u: it is not a pinned live segment",
					   h));
	if (destroy)
		dsm_destroy_moribund(slot, h, NULL, WARNING);
}

/* This process's mapping of h, or NULL.  O(1).  Never fails. */
dsm_segment *
dsm_find_mapping(dsm_handle h)
{
	dsm_segment *seg;

	if (dsm_mappings_by_slot == NULL || dsm_control == NULL || h == DSM_HANDLE_INVALID)
		return NULL;
	seg = dsm_mappings_by_slot[dsm_handle_slot(h) < dsm_mappings_nslots ? dsm_handle_slot(h) : 0];
	if (seg != NULL && seg->handle == h)
		return seg;
	return NULL;
}

void *
dsm_segment_address(dsm_segment *seg)
{
	return seg->mapped_address;
}

size_t
dsm_segment_map_length(dsm_segment *seg)
{
	return seg->mapped_size;
}

dsm_handle
dsm_segment_handle(dsm_segment *seg)
{
	return seg->handle;
}

/*
 * Register a detach callback (LIFO).  ERROR on out of memory or a NULL
 * argument, before anything changed.
 */
void
on_dsm_detach(dsm_segment *seg, on_dsm_detach_callback function, Datum arg)
{
	dsm_detach_callback *cb;

	dsm_require_segment(seg, "on_dsm_detach");
	if (function == NULL)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("on_dsm_detach called with a NULL callback for dynamic shared memory segment %u",
					   seg->handle));
	cb = MemoryContextAlloc(TopMemoryContext, sizeof(dsm_detach_callback));

	cb->function = function;
	cb->arg = arg;
	cb->next = seg->callbacks;
	seg->callbacks = cb;
}

/* Remove the most recent registration of (function, arg), if any.  Never fails (seg NULL: nothing). */
void
cancel_on_dsm_detach(dsm_segment *seg, on_dsm_detach_callback function, Datum arg)
{
	dsm_detach_callback **link;

	if (seg == NULL)
		return;
	link = &seg->callbacks;

	for (dsm_detach_callback *cb = seg->callbacks; cb != NULL; cb = cb->next)
	{
		if (cb->function == function && cb->arg == arg)
		{
			*link = cb->next;
			pfree(cb);
			return;
		}
		link = &cb->next;
	}
}

/* Detach every mapping of this process.  Never raises ERROR itself. */
void
dsm_detach_all(void)
{
	while (dsm_mappings_head != NULL)
		dsm_detach(dsm_mappings_head);
}

/* ---------------------------------------------------------------------
 * Supervisor side: destroy everything
 * ---------------------------------------------------------------------
 */

/*
 * Destroy every segment a control segment lists (refcnt != 0).  With
 * locked true the caller is the live supervisor, the control segment is
 * this process's (dsm_control) and each slot is freed in its own commit;
 * otherwise control is a dead cluster's, read without its lock.  Moribund
 * segments may already be gone, so their failures are reported at DEBUG1.
 * Slots that hold no segment (cached, or reserved and not yet named) are
 * not destroyed: their handle's name or key may be another's by now.
 * Never raises.
 */
void
dsm_control_destroy_all(dsm_control_header *control, int elevel)
{
	bool live = (control == dsm_control);
	dsm_control_item *items = dsm_control_items(control);
	uint32_t maxitems = control->maxitems;
	uint32_t destroyed = 0;

	if (live && !dsm_control_lock(WARNING))
		live = false;
	for (uint32_t i = 0; i < maxitems; i++)
	{
		int32_t busy = __atomic_load_n(&items[i].busy, __ATOMIC_ACQUIRE);
		uint64_t w = dsm_item_word(&items[i]);
		dsm_handle h = DSM_WORD_HANDLE(w);
		uint32_t refcnt = dsm_item_refcount(&items[i]);
		bool moribund;

		if (refcnt == 0)
			continue;
		if (DSM_BUSY_IS_CACHED(busy))
		{
			/* No segment.  Live: take it from its backend's cache as a creator would, and free it. */
			if (live)
			{
				if (!__atomic_compare_exchange_n(&items[i].busy, &busy, DSM_BUSY_SUPERVISOR, false,
												 __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
				{
					i--; /* its backend took it back meanwhile: look again */
					continue;
				}
				dsm_ctl_begin(DSM_INTENT_SHUTDOWN);
				dsm_ctl_free_slot(i);
				dsm_ctl_commit();
			}
			continue;
		}
		if (live && busy >= 0 && !DSM_WORD_ACTIVE(w))
		{
			/*
			 * A backend that may still run owns the slot (it is creating or
			 * destroying its segment without the lock).  Take the slot away
			 * first: its next compare-and-swap on the word fails, so it
			 * publishes nothing and destroys what it made itself.  Then
			 * destroy what may be there already, and free the slot.
			 */
			uint32_t id;

			/* The handle survives the revocation here, for a crash clean-up if we die before the destroy. */
			__atomic_store_n(&items[i].next_free, h, __ATOMIC_SEQ_CST);
			if (!__atomic_compare_exchange_n(&items[i].word, &w, DSM_WORD_REVOKED, false,
											 __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
			{
				i--; /* it named or published the slot meanwhile: look again */
				continue;
			}
			id = __atomic_load_n(&items[i].impl_id, __ATOMIC_ACQUIRE);
			(void) dsm_destroy_recorded(control, i, h, id, busy, DEBUG1);
			dsm_ctl_begin(DSM_INTENT_SHUTDOWN);
			dsm_ctl_free_slot(i);
			dsm_ctl_commit();
			continue;
		}
		if (__atomic_load_n(&items[i].impl_id, __ATOMIC_ACQUIRE) == DSM_IMPL_ID_NONE)
			continue; /* reserved and not yet named: no segment */
		ereport(DEBUG1, errmsg("destroying dynamic shared memory segment %u (reference count %u)", h,
							   refcnt));
		moribund = dsm_item_moribund(&items[i]);
		if (live && !moribund)
		{
			/*
			 * Backends may still run: make the slot moribund first (the word
			 * inactive), so that no lock-free attach succeeds from here on.
			 */
			dsm_ctl_begin(DSM_INTENT_SHUTDOWN);
			CTL_SET32(items[i].refcnt, 1);
			CTL_SET32(items[i].busy, DSM_BUSY_SUPERVISOR);
			dsm_ctl_word_slot(i);
			__atomic_store_n(&items[i].word, (uint64_t) h, __ATOMIC_SEQ_CST);
			dsm_ctl_commit();
		}
		(void) dsm_control_destroy_segment(control, i, moribund ? DEBUG1 : elevel);
		if (++destroyed == 1)
			(void) INJECTION_POINT("supervisor-shutdown-mid"); /* first one destroyed, slot not yet freed */
		if (live)
		{
			/* One commit per change group keeps the undo log short. */
			for (uint32_t b = DSM_FAST_BACKENDS; b < control->max_backends; b++)
			{
				if (!dsm_control_ref_is_set(control, b, i))
					continue;
				dsm_ctl_begin(DSM_INTENT_SHUTDOWN);
				dsm_ctl_set_ref((int) b, i, false);
				dsm_ctl_commit();
			}
			dsm_ctl_begin(DSM_INTENT_SHUTDOWN);
			dsm_ctl_free_slot(i);
			dsm_ctl_commit();
		}
	}
	if (live)
	{
		/*
		 * Backends may outlive the supervisor for a while, still mapping
		 * this control segment, which is about to go: no slot may get a
		 * new segment from here on (a create's naming fails on the word).
		 */
		for (uint32_t i = 0; i < maxitems; i++)
			if (items[i].refcnt == 0)
				__atomic_store_n(&items[i].word, DSM_WORD_REVOKED, __ATOMIC_SEQ_CST);
		dsm_control_unlock();
	}
}

/* ---------------------------------------------------------------------
 * Consistency check
 * ---------------------------------------------------------------------
 */

/*
 * Process-local: the state of one dsm_control_check() call.  While the
 * control lock is held (deferred true) problems are only queued, in
 * malloc'd memory that cannot raise ERROR; dsm_check_flush() reports them
 * after the unlock.  The caller's callback may raise ERROR or call dsm
 * functions, neither of which is allowed under the lock (dsm_int.h,
 * invariant 7).
 */
typedef struct dsm_check_state
{
	dsm_check_callback report; /* caller's callback, or NULL to log at WARNING */
	void *arg;                 /* its argument */
	int problems;              /* problems found so far */
	bool deferred;             /* queue problems instead of reporting them */
	char **queue;              /* malloc'd queued problems, oldest first */
	int nqueued;               /* entries in queue */
	int queue_size;            /* allocated entries of queue */
	int lost;                  /* problems that could not be queued (out of memory) */
} dsm_check_state;

static void dsm_check_problem(dsm_check_state *st, const char *fmt, ...) DSMKIT_PRINTF(2, 3);

/* Report one problem to the caller's callback, or at WARNING. */
static void
dsm_check_report(dsm_check_state *st, const char *problem)
{
	if (st->report != NULL)
		st->report(problem, st->arg);
	else
		ereport(WARNING, errmsg("dynamic shared memory check: %s", problem));
}

/*
 * Count a problem and report it, or queue it while the lock is held.
 * Never raises while deferred.
 */
static void
dsm_check_problem(dsm_check_state *st, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	st->problems++;
	if (!st->deferred)
	{
		dsm_check_report(st, buf);
		return;
	}
	if (st->nqueued == st->queue_size)
	{
		int n = st->queue_size == 0 ? 16 : 2 * st->queue_size;
		char **q = realloc(st->queue, sizeof(char *) * (size_t) n);

		if (q == NULL)
		{
			st->lost++;
			return;
		}
		st->queue = q;
		st->queue_size = n;
	}
	if ((st->queue[st->nqueued] = strdup(buf)) == NULL)
		st->lost++;
	else
		st->nqueued++;
}

/* Free the queue without reporting.  Never fails. */
static void
dsm_check_discard(dsm_check_state *st)
{
	for (int i = 0; i < st->nqueued; i++)
		free(st->queue[i]);
	free(st->queue);
	st->queue = NULL;
	st->nqueued = st->queue_size = 0;
}

/*
 * Report the queued problems, the lock no longer held.  If a report
 * raises ERROR, the rest of the queue is freed before the error goes on.
 */
static void
dsm_check_flush(dsm_check_state *st)
{
	st->deferred = false;
	PG_TRY();
	{
		for (int i = 0; i < st->nqueued; i++)
			dsm_check_report(st, st->queue[i]);
		if (st->lost > 0)
		{
			char buf[128];

			snprintf(buf, sizeof buf, "%d more problems could not be recorded (out of memory)",
					 st->lost);
			dsm_check_report(st, buf);
		}
	}
	PG_FINALLY();
	{
		dsm_check_discard(st);
	}
	PG_END_TRY();
}

/*
 * The size in bytes of the operating-system segment of handle h, or -1 if
 * it does not exist (or cannot be looked at).  Never raises.
 */
static int64_t
dsm_os_segment_size(dsm_handle h)
{
	char name[4096];
	struct stat st;

	if (dsm_impl_segment_name(h, name, sizeof name) >= (int) sizeof name)
		return -1;
	switch (dsm_impl_current())
	{
		case DSM_IMPL_POSIX:
		{
			char path[4200];

			snprintf(path, sizeof path, "/dev/shm%s%s", name[0] == '/' ? "" : "/", name);
			return stat(path, &st) == 0 ? (int64_t) st.st_size : -1;
		}
		case DSM_IMPL_MMAP:
			return stat(name, &st) == 0 ? (int64_t) st.st_size : -1;
		case DSM_IMPL_SYSV:
		{
			unsigned int key;
			struct shmid_ds ds;
			int id;

			/* Key 0 is IPC_PRIVATE, which no segment of ours uses (and shmget would make one). */
			if (sscanf(name, "key 0x%x", &key) != 1 || key == 0)
				return -1;
			id = shmget((key_t) key, 0, 0);
			if (id < 0)
				return -1;
			return shmctl(id, IPC_STAT, &ds) == 0 ? (int64_t) ds.shm_segsz : 0;
		}
		default:
			return -1;
	}
}

/* Does the operating-system segment of handle h exist?  Never raises. */
static bool
dsm_os_segment_exists(dsm_handle h)
{
	return dsm_os_segment_size(h) >= 0;
}

/* Is h the handle of a slot that may have an operating-system segment now? */
static bool
dsm_handle_listed(dsm_control_header *control, dsm_handle h)
{
	uint32_t slot;
	dsm_control_item *item;

	if (h == dsm_control_handle)
		return true;
	slot = h & ((1u << control->slot_bits) - 1);
	if (slot >= control->maxitems)
		return false;
	item = &dsm_control_items(control)[slot];
	return dsm_item_holds_segment(item) && dsm_item_handle(item) == h;
}

/* Report operating-system segments of this cluster that no slot lists. */
static void
dsm_check_orphans(dsm_control_header *control, dsm_check_state *st, const char *directory)
{
	char prefix[32];
	uint32_t cluster = dsm_impl_cluster_id();
	int impl = dsm_impl_current();

	snprintf(prefix, sizeof prefix, "dsmkit.%08x.", cluster);
	if (impl == DSM_IMPL_POSIX || impl == DSM_IMPL_MMAP)
	{
		DIR *d = opendir(impl == DSM_IMPL_POSIX ? "/dev/shm" : directory);
		struct dirent *de;

		if (d == NULL)
			return;
		while ((de = readdir(d)) != NULL)
		{
			unsigned int h;
			char extra;

			if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
				continue;
			if (sscanf(de->d_name + strlen(prefix), "%8x%c", &h, &extra) != 1 ||
				!dsm_handle_listed(control, h))
				dsm_check_problem(st, "operating-system segment \"%s\" has no slot", de->d_name);
		}
		closedir(d);
	}
	else if (impl == DSM_IMPL_SYSV)
	{
		FILE *f = fopen("/proc/sysvipc/shm", "re");
		char line[512];
		uint32_t tag = ((cluster >> 16) ^ (cluster & 0xffff)) & 0xffff;

		if (f == NULL)
			return;
		if (fgets(line, sizeof line, f) != NULL)
		{
			while (fgets(line, sizeof line, f) != NULL)
			{
				long long key;
				int shmid;
				bool listed = false;
				char name[64];

				if (sscanf(line, "%lld %d", &key, &shmid) != 2 || ((uint32_t) key >> 16) != tag ||
					(uint32_t) key == 0)
					continue;
				/*
				 * Listed: a slot records its id, or a slot whose segment is
				 * being made (id not yet recorded) has its key, or it is the
				 * control segment.
				 */
				snprintf(name, sizeof name, "key 0x%08x", (unsigned) key);
				for (uint32_t i = 0; i < control->maxitems && !listed; i++)
				{
					dsm_control_item *item = &dsm_control_items(control)[i];
					uint32_t id = __atomic_load_n(&item->impl_id, __ATOMIC_ACQUIRE);
					char other[64];

					if (!dsm_item_holds_segment(item))
						continue;
					if (id != DSM_IMPL_ID_CREATING)
					{
						listed = id == (uint32_t) shmid + 1;
						continue;
					}
					dsm_impl_segment_name(dsm_item_handle(item), other, sizeof other);
					listed = strcmp(name, other) == 0;
				}
				if (!listed)
				{
					char other[64];

					dsm_impl_segment_name(dsm_control_handle, other, sizeof other);
					listed = strcmp(name, other) == 0;
				}
				if (!listed)
					dsm_check_problem(st, "System V segment with key 0x%08x has no slot",
									  (unsigned) key);
			}
		}
		fclose(f);
	}
}

/*
 * Check the control segment of this process's cluster under its lock (see
 * dsm.h).  The caller is the supervisor or a backend, holds the lock and
 * has set st->deferred, so problems are queued, not reported.  Never
 * raises.
 */
static int
dsm_check_locked(dsm_check_state *st, const char *directory, bool *live)
{
	dsm_control_header *control = dsm_control;
	dsm_control_item *items = dsm_control_items(control);
	dsm_control_backend *backends = dsm_control_backends(control);
	uint32_t nfree = 0;

	for (uint32_t b = 0; b < control->max_backends; b++)
	{
		dsm_control_backend *be = &backends[b];
		uint32_t bits = 0;
		uint32_t *map = dsm_control_bitmap(control, (int) b);

		for (uint32_t w = 0; w < control->bitmap_words; w++)
			bits += (uint32_t) __builtin_popcount(map[w]);
		if (bits != be->nrefs)
			dsm_check_problem(st, "backend %u counts %u references but its bitmap has %u", b,
							  be->nrefs, bits);
		if (b < DSM_FAST_BACKENDS)
		{
			if (bits != 0)
				dsm_check_problem(st, "backend %u uses the lock-free path but its bitmap has %u bits", b,
								  bits);
			bits = dsm_control_backend_nrefs(control, b);
		}
		if (be->state == DSM_BACKEND_RUNNING)
			live[b] = dsm_process_alive(be->pid, be->start_time) || be->pid == (int32_t) getpid();
		else if (be->state == DSM_BACKEND_STARTING)
			live[b] = be->pid == 0 || dsm_process_alive(be->pid, 0);
		if (bits != 0 && !live[b])
			dsm_check_problem(st, "backend %u (pid %d, state %u) is gone but holds %u references", b,
							  (int) be->pid, be->state, bits);
	}
	for (uint32_t i = 0; i < control->maxitems; i++)
	{
		dsm_control_item *item = &items[i];
		/*
		 * busy before the word: an owner publishes by setting its bit and
		 * only then clearing busy, so "busy none" read first means that a
		 * word read inactive after it is no owner's half-done create.
		 */
		int32_t busy = __atomic_load_n(&item->busy, __ATOMIC_ACQUIRE);
		uint64_t w = dsm_item_word(item); /* one snapshot: fast bits change without the lock */
		dsm_handle h = DSM_WORD_HANDLE(w);
		uint32_t fast = DSM_WORD_FAST_MASK(w);
		uint32_t holders = 0;
		uint32_t any = 0;

		for (uint32_t b = 0; b < control->max_backends; b++)
		{
			bool set = b < DSM_FAST_BACKENDS ? (fast >> b) & 1
											  : dsm_control_ref_is_set(control, b, i);

			if (set)
			{
				any++;
				if (live[b])
					holders++;
			}
		}
		if (item->refcnt == 0)
		{
			nfree++;
			if (any != 0)
				dsm_check_problem(st, "free slot %u is held by %u backends", i, any);
			if (DSM_WORD_ACTIVE(w))
				dsm_check_problem(st, "free slot %u is marked active", i);
			continue;
		}
		/* A slot reserved before it was ever named still has handle 0. */
		if (h != DSM_HANDLE_INVALID && (h & ((1u << control->slot_bits) - 1)) != i)
			dsm_check_problem(st, "slot %u holds handle %u of another slot", i, h);
		if (!DSM_WORD_ACTIVE(w))
		{
			if (any != 0)
				dsm_check_problem(st, "moribund segment %u (slot %u) is held by %u backends", h, i,
								  any);
			if (item->refcnt != 1)
				dsm_check_problem(st, "moribund segment %u (slot %u) has reference count %u", h, i,
								  item->refcnt);
			if (busy >= 0 && ((uint32_t) busy >= control->max_backends || !live[busy]))
				dsm_check_problem(st, "moribund segment %u (slot %u) waits for backend %d, which is gone",
								  h, i, busy);
			if (DSM_BUSY_IS_CACHED(busy))
			{
				int32_t b = DSM_BUSY_CACHED_BY(busy);

				if ((uint32_t) b >= control->max_backends || !live[b])
					dsm_check_problem(st, "slot %u is kept in the slot cache of backend %d, which is gone",
									  i, (int) b);
				/* Still cached after the test: its owner did not take it and make a segment meanwhile. */
				if (dsm_impl_current() != DSM_IMPL_SYSV && h != DSM_HANDLE_INVALID &&
					dsm_os_segment_exists(h) &&
					__atomic_load_n(&item->busy, __ATOMIC_ACQUIRE) == busy && dsm_item_word(item) == w)
					dsm_check_problem(st, "slot %u is kept in a slot cache, but segment %u still exists",
									  i, h);
			}
			/* Nobody busy: a destroy failed and shutdown retries it, so the segment must exist. */
			if (busy == DSM_BUSY_NONE && !dsm_os_segment_exists(h))
				dsm_check_problem(st, "moribund segment %u (slot %u) has no operating-system segment, so nobody will free its slot",
								  h, i);
			continue;
		}
		if (item->refcnt + (uint32_t) __builtin_popcount(fast) != holders + (item->pinned ? 1 : 0) + 1)
			dsm_check_problem(st,
							  "segment %u (slot %u) has reference count %u, but %u live backends hold it%s",
							  h, i, item->refcnt + (uint32_t) __builtin_popcount(fast), holders,
							  item->pinned ? " and it is pinned" : "");
		if (((w & DSM_WORD_OTHERS) != 0) != (item->refcnt >= 2))
			dsm_check_problem(st, "segment %u (slot %u) has reference count %u but its word says %s",
							  h, i, item->refcnt,
							  (w & DSM_WORD_OTHERS) ? "it is pinned or held by a slow backend"
													: "only fast backends hold it");
		if (!dsm_os_segment_exists(h))
			dsm_check_problem(st, "segment %u (slot %u) has no operating-system segment", h, i);
	}
	if (nfree != control->nfree)
		dsm_check_problem(st, "%u slots are free but the free list counts %u", nfree, control->nfree);
	else
	{
		uint32_t n = 0;

		for (uint32_t s = control->freelist_head; s != DSM_NO_SLOT && n <= control->maxitems;
			 s = items[s].next_free)
		{
			if (s >= control->maxitems || items[s].refcnt != 0)
			{
				dsm_check_problem(st, "the free list holds slot %u, which is not free", s);
				break;
			}
			n++;
		}
		if (n != nfree)
			dsm_check_problem(st, "the free list has %u entries, expected %u", n, nfree);
	}
	if (control->intent.nundo != 0)
		dsm_check_problem(st, "the undo log holds %u entries outside an update",
						  control->intent.nundo);
	dsm_check_orphans(control, st, directory);
	return st->problems;
}

/*
 * The consistency check (see dsm.h).
 */
int
dsm_control_check(const char *directory, dsm_check_callback report, void *arg)
{
	dsm_check_state st = {.report = report, .arg = arg};
	dsm_state_info info;
	void *addr = NULL;
	void *priv = NULL;
	size_t size = 0;
	bool *volatile live = NULL;

	if (directory == NULL)
	{
		if (dsm_control == NULL)
			ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("dsm_control_check called without a directory in a process that has no cluster"));
		if (!dsm_control_segment_sane(dsm_control, dsm_control_mapped_size))
		{
			dsm_check_problem(&st, "the control segment is not sane (magic, version or sizes)");
			return st.problems;
		}
		live = palloc0(sizeof(bool) * dsm_control->max_backends);
		if (!dsm_control_lock(WARNING))
			dsm_check_problem(&st, "the control segment's lock cannot be taken");
		else
		{
			st.deferred = true;
			dsm_check_locked(&st, dsm_cluster_directory, live);
			dsm_control_unlock();
		}
		pfree(live);
		dsm_check_flush(&st);
		return st.problems;
	}

	if (dsm_control != NULL)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("dsm_control_check with a directory called in a process that belongs to a cluster"),
				errhint("Pass NULL to check this process's own cluster."));
	if (!dsm_read_state_file(directory, &info))
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("no usable state file in cluster directory \"%s\"", directory));
	dsm_impl_configure(info.impl, directory);
	dsm_impl_op(DSM_OP_ATTACH, info.control_handle, 0, &priv, &addr, &size, ERROR);
	dsm_control = addr;
	dsm_control_handle = info.control_handle;
	dsm_control_mapped_size = size;
	dsm_control_impl_private = priv;
	PG_TRY();
	{
		if (!dsm_control_segment_sane(dsm_control, size))
			dsm_check_problem(&st, "the control segment is not sane (magic, version or sizes)");
		else
		{
			live = palloc0(sizeof(bool) * dsm_control->max_backends);
			if (!dsm_control_lock(WARNING))
				dsm_check_problem(&st, "the control segment's lock cannot be taken");
			else
			{
				st.deferred = true;
				dsm_check_locked(&st, directory, live);
				dsm_control_unlock();
			}
		}
		dsm_check_flush(&st);
	}
	PG_FINALLY();
	{
		if (live != NULL)
			pfree(live);
		dsm_impl_op(DSM_OP_DETACH, info.control_handle, 0, &dsm_control_impl_private, &addr, &size,
					WARNING);
		dsm_control = NULL;
		dsm_control_handle = DSM_HANDLE_INVALID;
		dsm_control_mapped_size = 0;
		dsm_control_impl_private = NULL;
	}
	PG_END_TRY();
	return st.problems;
}
