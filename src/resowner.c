/*
 * resowner.c: resource owners, hierarchical scopes that release what they
 * hold.
 *
 * Lifetime model.  An owner is a talloc object.  A child owner is a talloc
 * child of its parent owner; a top-level owner is a talloc child of
 * TopMemoryContext, or of the context given to
 * ResourceOwnerCreateInContext().  Besides the talloc tree, owners keep
 * their own parent/children links, because an owner created in a context
 * may still have an owner parent.  Every owner carries a talloc destructor
 * that releases it (and its descendants) as on abort if anything is still
 * remembered, frees its child owners and unlinks it from its parent, so that
 * freeing any talloc ancestor of an owner leaks nothing.
 *
 * Storage.  The most recent resources sit in a small array inside the
 * owner; when the array is full, ResourceOwnerEnlarge() moves its contents
 * into an open-addressing hash table (linear probing, power-of-two
 * capacity, load factor at most 3/4, keyed on the value and the kind
 * pointer).  Deletion from the table shifts the following entries of the
 * probe run backwards instead of leaving tombstones, so lookups never slow
 * down however many removals happen.  The table is allocated only when the
 * array first overflows, which keeps the empty request scope cheap: an
 * owner that never holds more than RESOWNER_ARRAY_SIZE resources costs one
 * talloc allocation.
 *
 * Release.  Releasing one phase of an owner releases its children first
 * (recursively), then its own resources of that phase by ascending
 * release_priority, then calls the registered release callbacks.  Priority
 * order is obtained without allocating (a cleanup path must not fail for
 * lack of memory): each pass finds the smallest priority still present in
 * the phase and releases every resource of that priority, so the cost is
 * O(n * p) where p, the number of distinct priorities in the phase, is
 * bounded by the number of resource kinds (a handful).  Each resource is
 * removed from the owner before its ReleaseResource runs.  While an owner
 * is being released its storage is frozen: remembering, forgetting,
 * releasing again and deleting it raise ERROR.
 *
 * Failure model.  Enlarge is the only operation that allocates; it raises
 * ERROR before anything changes.  Remember after Enlarge cannot fail.
 * ReleaseResource and the release callbacks must not raise ERROR; if one
 * does, the error is caught, logged at WARNING and the release carries on
 * with the next resource.  Catching it forgets only that error: an error
 * the caller is handling (a release in PG_CATCH) stays on the error stack
 * (elog_stack_mark/elog_stack_restore).
 *
 * Everything here is process-local (no shared memory) and not thread-safe.
 * After fork() the child has a copy of every owner and of the resources'
 * bookkeeping; what releasing them there means is up to each kind.
 */
#include "dsmkit_int.h"

#include <inttypes.h>
#include <string.h>
#include <talloc.h>

#include <dsmkit/elog.h>
#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>
#include <dsmkit/resowner.h>

/* Slots in the owner's inline array of recent resources. */
#define RESOWNER_ARRAY_SIZE 16

/* First capacity of the hash table (a power of two, > RESOWNER_ARRAY_SIZE * 4 / 3). */
#define RESOWNER_HASH_INIT_CAPACITY 64

/* Largest hash capacity we allow ourselves to ask for (entries). */
#define RESOWNER_HASH_MAX_CAPACITY (((size_t) 1) << 40)

/*
 * One remembered resource (process-local).  kind == NULL marks a free slot
 * of the hash table.
 */
typedef struct ResourceElem
{
	Datum item;
	const ResourceOwnerDesc *kind;
} ResourceElem;

/*
 * A resource owner (process-local).  Allocated with talloc; see the file
 * header for the talloc relationships.
 */
typedef struct ResourceOwnerData
{
	ResourceOwner parent;     /* owner parent, or NULL for a top-level owner */
	ResourceOwner firstchild; /* most recently added child */
	ResourceOwner nextchild;  /* next sibling (older) */
	ResourceOwner prevchild;  /* previous sibling (newer), NULL if first */
	const char *name;         /* caller's string, must outlive the owner */
	void *home;               /* context given to ...InContext, or NULL */
	ResourceElem *hash;       /* hash table (talloc child), or NULL */
	size_t hash_capacity;     /* slots in hash (0 or a power of two) */
	size_t nhash;             /* entries in hash */
	uint32_t narr;            /* entries used in arr */
	bool releasing;           /* a release of this owner is running */
	uint32_t release_exit_entries; /* ipc_exit_entries when that release began */
	ResourceElem arr[RESOWNER_ARRAY_SIZE]; /* recent resources, unordered */
} ResourceOwnerData;

/* One registered release callback (process-local, in TopMemoryContext). */
typedef struct ReleaseCallbackItem
{
	struct ReleaseCallbackItem *next;
	ResourceReleaseCallback callback;
	void *arg;
} ReleaseCallbackItem;

ResourceOwner CurrentResourceOwner = NULL;

static ReleaseCallbackItem *release_callbacks = NULL;

static void release_internal(ResourceOwner owner, ResourceReleasePhase phase, bool isCommit,
							 bool isTopLevel);

/* ---------------------------------------------------------------------
 * Hash table
 * ---------------------------------------------------------------------
 */

/* Mix a (value, kind) pair into a well-spread 64-bit hash. */
static inline uint64_t
resowner_hash(Datum item, const ResourceOwnerDesc *kind)
{
	uint64_t h = (uint64_t) item * UINT64_C(0x9e3779b97f4a7c15);

	h ^= (uint64_t) (uintptr_t) kind;
	h ^= h >> 31;
	h *= UINT64_C(0xbf58476d1ce4e5b9);
	h ^= h >> 29;
	return h;
}

/* Insert into a table known to have a free slot.  Never fails. */
static inline void
hash_insert(ResourceElem *table, size_t capacity, Datum item, const ResourceOwnerDesc *kind)
{
	size_t mask = capacity - 1;
	size_t idx = resowner_hash(item, kind) & mask;

	while (table[idx].kind != NULL)
		idx = (idx + 1) & mask;
	table[idx].item = item;
	table[idx].kind = kind;
}

/* The slot of (item, kind) in the owner's table, or SIZE_MAX if absent. */
static inline size_t
hash_lookup(ResourceOwner owner, Datum item, const ResourceOwnerDesc *kind)
{
	size_t mask = owner->hash_capacity - 1;
	size_t idx = resowner_hash(item, kind) & mask;

	while (owner->hash[idx].kind != NULL)
	{
		if (owner->hash[idx].item == item && owner->hash[idx].kind == kind)
			return idx;
		idx = (idx + 1) & mask;
	}
	return SIZE_MAX;
}

/*
 * Remove the entry at slot idx, then close the gap: every later entry of
 * the probe run whose home slot is at or before the gap (cyclically) moves
 * back into it.  Entries only ever move towards the gap, i.e. to slots at
 * or after idx in probe order; release_phase_pass() relies on that.
 */
static void
hash_delete_at(ResourceOwner owner, size_t idx)
{
	ResourceElem *table = owner->hash;
	size_t mask = owner->hash_capacity - 1;
	size_t hole = idx;
	size_t j = idx;

	for (;;)
	{
		size_t home;

		j = (j + 1) & mask;
		if (table[j].kind == NULL)
			break;
		home = resowner_hash(table[j].item, table[j].kind) & mask;
		if (((j - home) & mask) >= ((j - hole) & mask))
		{
			table[hole] = table[j];
			hole = j;
		}
	}
	table[hole].kind = NULL;
	table[hole].item = 0;
	owner->nhash--;
}

/*
 * Give owner's table room for at least `needed` entries within the load
 * factor, doubling its capacity as often as necessary.  Raises ERROR on out
 * of memory; the owner is unchanged then.
 */
static void
hash_reserve(ResourceOwner owner, size_t needed)
{
	size_t newcap = owner->hash_capacity ? owner->hash_capacity : RESOWNER_HASH_INIT_CAPACITY;
	ResourceElem *newtable;

	while (needed > newcap / 4 * 3)
	{
		if (newcap >= RESOWNER_HASH_MAX_CAPACITY)
			ereport(ERROR, errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					errmsg("resource owner \"%s\" cannot hold more resources", owner->name),
					errdetail("It already holds %zu resources.", owner->nhash + owner->narr));
		newcap *= 2;
	}
	if (newcap == owner->hash_capacity)
		return;

	/*
	 * A talloc child of the owner, so that it goes with the owner and counts
	 * against any talloc memory limit of the owner's context.
	 */
	newtable = talloc_zero_array(owner, ResourceElem, newcap);
	if (newtable == NULL)
		ereport(ERROR, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
				errdetail("Failed on request of size %zu in resource owner \"%s\".",
						  newcap * sizeof(ResourceElem), owner->name));
	talloc_set_name_const(newtable, "ResourceOwner hash");

	for (size_t i = 0; i < owner->hash_capacity; i++)
		if (owner->hash[i].kind != NULL)
			hash_insert(newtable, newcap, owner->hash[i].item, owner->hash[i].kind);
	talloc_free(owner->hash);
	owner->hash = newtable;
	owner->hash_capacity = newcap;
}

/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

static inline bool
owner_is_empty(ResourceOwner owner)
{
	return owner->narr == 0 && owner->nhash == 0;
}

/*
 * Walk owner's subtree.  Returns the first owner found that still holds
 * resources (or NULL) in *holder, and the first one being released (or
 * NULL) in *busy.  Never fails.
 */
static void
subtree_scan(ResourceOwner owner, ResourceOwner *holder, ResourceOwner *busy)
{
	if (*holder == NULL && !owner_is_empty(owner))
		*holder = owner;
	if (*busy == NULL && owner->releasing)
		*busy = owner;
	for (ResourceOwner child = owner->firstchild; child != NULL; child = child->nextchild)
		subtree_scan(child, holder, busy);
}

/* Link owner as the newest child of parent.  Never fails. */
static void
link_child(ResourceOwner owner, ResourceOwner parent)
{
	owner->parent = parent;
	owner->prevchild = NULL;
	owner->nextchild = parent->firstchild;
	if (parent->firstchild != NULL)
		parent->firstchild->prevchild = owner;
	parent->firstchild = owner;
}

/* Unlink owner from its parent's list of children (if any).  Never fails. */
static void
unlink_child(ResourceOwner owner)
{
	ResourceOwner parent = owner->parent;

	if (parent == NULL)
		return;
	if (owner->prevchild != NULL)
		owner->prevchild->nextchild = owner->nextchild;
	else
		parent->firstchild = owner->nextchild;
	if (owner->nextchild != NULL)
		owner->nextchild->prevchild = owner->prevchild;
	owner->parent = owner->nextchild = owner->prevchild = NULL;
}

/*
 * Report the error being handled (caught by a release loop) as a WARNING
 * and forget it, and any error raised since mark, but not an error the
 * caller was handling before (elog_stack_restore()).  what names the
 * thing that failed.  The memory context is put back to oldcxt, because
 * the failed code may have switched it; the
 * copy of the error is made in TopMemoryContext and freed at once, since
 * the current context may be the one whose deletion is releasing us.
 * Never raises ERROR: when there is no memory left for the copy (the
 * failure may well be an out-of-memory error), the WARNING goes out
 * without the original message.
 */
static void
report_release_failure(ResourceOwner owner, MemoryContext oldcxt, ErrorStackMark mark,
					   const char *what)
{
	ErrorData *volatile edata = NULL;
	const int code = geterrcode();

	MemoryContextSwitchTo(TopMemoryContext);
	PG_TRY();
	{
		edata = CopyErrorData();
	}
	PG_CATCH();
	{
		/* Out of memory: edata stays NULL; the restore below forgets both errors. */
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	elog_stack_restore(mark); /* an error the caller is handling stays */
	if (edata != NULL)
	{
		ereport(WARNING, errcode(edata->sqlerrcode),
				errmsg("could not release %s of resource owner \"%s\"", what, owner->name),
				errdetail_internal("%s", edata->message));
		FreeErrorData(edata);
	}
	else
		ereport(WARNING, errcode(code),
				errmsg("could not release %s of resource owner \"%s\"", what, owner->name),
				errdetail("The message of the error was lost: no memory to copy it."));
}

/*
 * Draw the leak warning for a resource found still remembered at commit.
 * DebugPrint (or psprintf) may fail; that is caught and reported like a
 * failed release, so the caller goes on to release the resource anyway.
 */
static void
warn_leaked(ResourceOwner owner, ResourceElem elem)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorStackMark mark = elog_stack_mark();

	PG_TRY();
	{
		char *text;

		if (elem.kind->DebugPrint != NULL)
			text = elem.kind->DebugPrint(elem.item);
		else
			text = psprintf("%s 0x%" PRIxPTR, elem.kind->name, elem.item);
		ereport(WARNING, errcode(ERRCODE_WARNING),
				errmsg("resource was not closed: %s", text != NULL ? text : elem.kind->name),
				errdetail("Resource owner \"%s\" still held a resource of kind \"%s\" at commit.",
						  owner->name, elem.kind->name));
		if (text != NULL)
			pfree(text);
	}
	PG_CATCH();
	{
		report_release_failure(owner, oldcxt, mark, elem.kind->name);
	}
	PG_END_TRY();
	elog_stack_restore(mark); /* lift the floor (and forget what was caught) */
}

/*
 * Release one resource that has already been removed from owner: on commit
 * draw the leak warning first, then call the kind's ReleaseResource.  An
 * ERROR raised by either is caught, logged at WARNING and swallowed; a
 * failed warning does not keep the resource from being released.
 */
static void
release_one(ResourceOwner owner, ResourceElem elem, bool isCommit)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorStackMark mark = elog_stack_mark();

	if (isCommit)
		warn_leaked(owner, elem);
	PG_TRY();
	{
		elem.kind->ReleaseResource(elem.item);
	}
	PG_CATCH();
	{
		report_release_failure(owner, oldcxt, mark, elem.kind->name);
	}
	PG_END_TRY();
	elog_stack_restore(mark); /* lift the floor (and forget what was caught) */
}

/*
 * Release, from owner itself (not its children), every resource of phase
 * with the smallest priority still present in that phase.  Returns false
 * when the phase has nothing left.  Entries are removed before they are
 * released; the storage cannot change meanwhile because owner->releasing
 * forbids Remember/Forget.
 */
static bool
release_phase_pass(ResourceOwner owner, ResourceReleasePhase phase, bool isCommit)
{
	bool found = false;
	ResourceReleasePriority prio = RELEASE_PRIO_LAST;

	for (uint32_t i = 0; i < owner->narr; i++)
	{
		const ResourceOwnerDesc *k = owner->arr[i].kind;

		if (k->release_phase == phase && (!found || k->release_priority < prio))
		{
			prio = k->release_priority;
			found = true;
		}
	}
	if (owner->nhash > 0)
	{
		for (size_t i = 0; i < owner->hash_capacity; i++)
		{
			const ResourceOwnerDesc *k = owner->hash[i].kind;

			if (k != NULL && k->release_phase == phase && (!found || k->release_priority < prio))
			{
				prio = k->release_priority;
				found = true;
			}
		}
	}
	if (!found)
		return false;

	/* The array, newest first. */
	for (uint32_t i = owner->narr; i-- > 0;)
	{
		ResourceElem elem = owner->arr[i];

		if (elem.kind->release_phase != phase || elem.kind->release_priority != prio)
			continue;
		owner->arr[i] = owner->arr[--owner->narr];
		release_one(owner, elem, isCommit);
	}

	/*
	 * The table in slot order.  Deleting slot i may pull a later entry into
	 * slot i, so slot i is examined again; entries never move to slots the
	 * scan has passed except from slots it has also passed, which hold no
	 * matching entry any more.
	 */
	for (size_t i = 0; owner->nhash > 0 && i < owner->hash_capacity;)
	{
		ResourceElem elem = owner->hash[i];

		if (elem.kind == NULL || elem.kind->release_phase != phase ||
			elem.kind->release_priority != prio)
		{
			i++;
			continue;
		}
		hash_delete_at(owner, i);
		release_one(owner, elem, isCommit);
	}
	return true;
}

/* Call every release callback for one owner's phase, catching errors. */
static void
call_release_callbacks(ResourceOwner owner, ResourceReleasePhase phase, bool isCommit,
					   bool isTopLevel)
{
	ReleaseCallbackItem *volatile item = release_callbacks;

	while (item != NULL)
	{
		MemoryContext oldcxt = CurrentMemoryContext;
		ErrorStackMark mark = elog_stack_mark();

		PG_TRY();
		{
			while (item != NULL)
			{
				ReleaseCallbackItem *current = item;

				/* Step first: the callback may unregister itself. */
				item = current->next;
				current->callback(phase, isCommit, isTopLevel, current->arg);
			}
		}
		PG_CATCH();
		{
			report_release_failure(owner, oldcxt, mark, "a release callback");
		}
		PG_END_TRY();
		elog_stack_restore(mark); /* lift the floor (and forget what was caught) */
	}
}

/*
 * Release one phase of owner and its descendants.  The caller has checked
 * that no owner of the subtree is being released.  Never raises ERROR
 * itself (errors of ReleaseResource and callbacks are logged).
 */
static void
release_internal(ResourceOwner owner, ResourceReleasePhase phase, bool isCommit, bool isTopLevel)
{
	ResourceOwner save = CurrentResourceOwner;

	owner->releasing = true;
	owner->release_exit_entries = ipc_exit_entries;
	for (ResourceOwner child = owner->firstchild; child != NULL; child = child->nextchild)
		release_internal(child, phase, isCommit, isTopLevel);

	CurrentResourceOwner = owner;
	while (!owner_is_empty(owner) && release_phase_pass(owner, phase, isCommit))
		;
	/* A big table that emptied goes back to the system (never fails). */
	if (owner->hash != NULL && owner->nhash == 0 && owner->narr == 0)
	{
		talloc_free(owner->hash);
		owner->hash = NULL;
		owner->hash_capacity = 0;
	}
	if (release_callbacks != NULL)
		call_release_callbacks(owner, phase, isCommit, isTopLevel);
	CurrentResourceOwner = save;
	owner->releasing = false;
}

/* Raise ERROR if a release of owner or of one of its descendants is running. */
static void
check_not_releasing(ResourceOwner owner)
{
	ResourceOwner holder = NULL;
	ResourceOwner busy = NULL;

	subtree_scan(owner, &holder, &busy);
	if (busy != NULL)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("resource owner \"%s\" is already being released", busy->name),
				busy != owner ? errdetail("It is a descendant of resource owner \"%s\".",
										  owner->name)
							  : 0);
}

/*
 * The talloc destructor of an owner.  If anything in the subtree is still
 * remembered, release it all as on abort (children first, all phases);
 * then free the child owners, unlink the owner from its parent and clear
 * CurrentResourceOwner if it pointed here.  An owner whose release is
 * running cannot be freed: the destructor logs a WARNING and returns -1, so
 * talloc_free() fails (talloc then keeps the memory alive).
 */
static int
resowner_destructor(ResourceOwner owner)
{
	ResourceOwner holder = NULL;
	ResourceOwner busy = NULL;

	/* The common case: an empty, idle leaf (a deleted request scope). */
	if (likely(owner->firstchild == NULL && owner_is_empty(owner) && !owner->releasing))
	{
		if (owner->parent != NULL)
			unlink_child(owner);
		if (CurrentResourceOwner == owner)
			CurrentResourceOwner = NULL;
		return 0;
	}

	subtree_scan(owner, &holder, &busy);
	if (unlikely(busy != NULL))
	{
		ereport(WARNING, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot free resource owner \"%s\" while it is being released",
					   busy->name));
		return -1;
	}
	if (unlikely(holder != NULL))
	{
		bool top = owner->parent == NULL;

		release_internal(owner, RESOURCE_RELEASE_BEFORE_LOCKS, false, top);
		release_internal(owner, RESOURCE_RELEASE_LOCKS, false, top);
		release_internal(owner, RESOURCE_RELEASE_AFTER_LOCKS, false, top);
	}
	while (owner->firstchild != NULL)
	{
		ResourceOwner child = owner->firstchild;

		if (talloc_free(child) != 0)
		{
			/* Refused (cannot happen after the check above): orphan it. */
			unlink_child(child);
		}
	}
	unlink_child(owner);
	if (CurrentResourceOwner == owner)
		CurrentResourceOwner = NULL;
	return 0;
}

/* ---------------------------------------------------------------------
 * Public API
 * ---------------------------------------------------------------------
 */

/*
 * ResourceOwnerCreateInContext: create an owner named name below parent
 * (NULL: top level), as a talloc child of context (NULL: of parent, or of
 * TopMemoryContext for a top-level owner).  Any thread-less caller may call
 * it at any time; the owner lives until ResourceOwnerDelete() or until its
 * talloc parent is freed.  Raises ERROR on out of memory, with nothing
 * created.
 */
ResourceOwner
ResourceOwnerCreateInContext(MemoryContext context, ResourceOwner parent, const char *name)
{
	void *tparent;
	ResourceOwner owner;

	if (context != NULL)
		tparent = context;
	else if (parent != NULL)
		tparent = parent;
	else
	{
		if (unlikely(TopMemoryContext == NULL))
			MemoryContextInit();
		tparent = TopMemoryContext;
	}

	owner = talloc(tparent, ResourceOwnerData);
	if (unlikely(owner == NULL))
		ereport(ERROR, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
				errdetail("Failed while creating resource owner \"%s\".", name));

	owner->parent = NULL;
	owner->firstchild = NULL;
	owner->nextchild = NULL;
	owner->prevchild = NULL;
	owner->name = name;
	owner->home = context;
	owner->hash = NULL;
	owner->hash_capacity = 0;
	owner->nhash = 0;
	owner->narr = 0;
	owner->releasing = false;
	if (parent != NULL)
		link_child(owner, parent);
	talloc_set_destructor(owner, resowner_destructor);
	return owner;
}

/* ResourceOwnerCreate: ResourceOwnerCreateInContext(NULL, parent, name). */
ResourceOwner
ResourceOwnerCreate(ResourceOwner parent, const char *name)
{
	return ResourceOwnerCreateInContext(NULL, parent, name);
}

/*
 * ResourceOwnerRelease: release one phase of owner and its descendants
 * (children first), then the owner's resources of the phase by ascending
 * priority, each followed by nothing but the release callbacks of that
 * owner and phase.  isCommit selects leak warnings; isTopLevel is passed
 * through to the callbacks.  CurrentResourceOwner is set to each owner
 * while its resources and callbacks run, and restored afterwards.  owner
 * NULL does nothing.  Raises ERROR (before releasing anything) if a
 * release of owner or of a descendant is already running; otherwise never
 * fails: errors raised by resources and callbacks are logged at WARNING.
 */
void
ResourceOwnerRelease(ResourceOwner owner, ResourceReleasePhase phase, bool isCommit,
					 bool isTopLevel)
{
	if (owner == NULL)
		return;
	check_not_releasing(owner);
	release_internal(owner, phase, isCommit, isTopLevel);
}

/*
 * ResourceOwnerReleaseAll: the three phases in order, with isTopLevel true
 * for an owner without parent.  Same contract as ResourceOwnerRelease().
 * An empty owner with no children and no callbacks returns at once.
 */
void
ResourceOwnerReleaseAll(ResourceOwner owner, bool isCommit)
{
	bool top;

	if (owner == NULL)
		return;
	if (likely(owner->firstchild == NULL && !owner->releasing && owner_is_empty(owner) &&
			   release_callbacks == NULL))
		return;

	check_not_releasing(owner);
	top = owner->parent == NULL;
	release_internal(owner, RESOURCE_RELEASE_BEFORE_LOCKS, isCommit, top);
	release_internal(owner, RESOURCE_RELEASE_LOCKS, isCommit, top);
	release_internal(owner, RESOURCE_RELEASE_AFTER_LOCKS, isCommit, top);
}

/*
 * ResourceOwnerDelete: delete a released owner and its descendants, and
 * free their memory.  Raises ERROR, deleting nothing, if an owner of the
 * subtree still holds resources or is being released.  If
 * CurrentResourceOwner was one of the deleted owners it becomes NULL.
 * owner NULL does nothing.
 */
void
ResourceOwnerDelete(ResourceOwner owner)
{
	ResourceOwner holder = NULL;
	ResourceOwner busy = NULL;

	if (owner == NULL)
		return;
	if (likely(owner->firstchild == NULL))
	{
		if (!owner_is_empty(owner))
			holder = owner;
		if (owner->releasing)
			busy = owner;
	}
	else
		subtree_scan(owner, &holder, &busy);

	if (unlikely(busy != NULL))
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot delete resource owner \"%s\" while it is being released",
					   owner->name),
				busy != owner ? errdetail("Its descendant \"%s\" is being released.", busy->name)
							  : 0);
	if (unlikely(holder != NULL))
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot delete resource owner \"%s\" because it still holds resources",
					   owner->name),
				errdetail("Resource owner \"%s\" holds %zu resources.", holder->name,
						  holder->narr + holder->nhash),
				errhint("Release the owner with ResourceOwnerReleaseAll() before deleting it."));

	talloc_free(owner);
}

/* ResourceOwnerGetParent: the owner parent of owner, or NULL.  Never fails. */
ResourceOwner
ResourceOwnerGetParent(ResourceOwner owner)
{
	return owner != NULL ? owner->parent : NULL;
}

/* ResourceOwnerGetName: the name given at creation (not a copy).  Never fails. */
const char *
ResourceOwnerGetName(ResourceOwner owner)
{
	return owner != NULL ? owner->name : NULL;
}

/*
 * ResourceOwnerNewParent: move owner below newparent (NULL: make it top
 * level).  The talloc parent follows, unless owner was created in an
 * explicit context, which stays its talloc parent.  Raises ERROR, changing
 * nothing, if newparent is owner or one of its descendants, or if a
 * release of owner is running.
 */
void
ResourceOwnerNewParent(ResourceOwner owner, ResourceOwner newparent)
{
	if (owner == NULL || owner->parent == newparent)
		return;

	/*
	 * The release of an owner walks its children's sibling links; moving
	 * one of them (or the owner itself) meanwhile would end that walk early
	 * and leave siblings unreleased.
	 */
	if (unlikely(owner->releasing))
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot move resource owner \"%s\" while it is being released", owner->name));

	for (ResourceOwner p = newparent; p != NULL; p = p->parent)
		if (p == owner)
			ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("cannot move resource owner \"%s\" below its own descendant \"%s\"",
						   owner->name, newparent->name));

	if (owner->home == NULL)
	{
		void *tparent = newparent;

		if (tparent == NULL)
		{
			if (TopMemoryContext == NULL)
				MemoryContextInit();
			tparent = TopMemoryContext;
		}
		/* talloc_steal only relinks; it cannot fail for a valid pointer. */
		(void) talloc_steal(tparent, owner);
	}
	unlink_child(owner);
	if (newparent != NULL)
		link_child(owner, newparent);
}

/*
 * The ERROR of Enlarge/Remember/Forget on an owner being released: its
 * storage is frozen until the release is over.  kind may be NULL (Enlarge).
 */
static DSMKIT_NORETURN void
error_owner_releasing(ResourceOwner owner, const char *action, const ResourceOwnerDesc *kind)
{
	if (kind == NULL)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("cannot %s resource owner \"%s\" while it is being released", action,
					   owner->name));
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
			errmsg("cannot %s a resource of kind \"%s\" in resource owner \"%s\" while it is being released",
				   action, kind->name, owner->name));
	pg_unreachable();
}

/*
 * The ERROR for a kind that is NULL or cannot release (no name or no
 * ReleaseResource): the owner could neither report nor release it.
 */
static DSMKIT_NORETURN void
error_bad_kind(ResourceOwner owner, const char *action, const ResourceOwnerDesc *kind)
{
	ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("cannot %s a resource in resource owner \"%s\": %s", action, owner->name,
				   kind == NULL ? "its kind is NULL"
								: "its kind has no name, no ReleaseResource function or no valid release phase"));
	pg_unreachable();
}

#define KIND_IS_BAD(kind) \
	((kind) == NULL || (kind)->name == NULL || (kind)->ReleaseResource == NULL || \
	 (kind)->release_phase < RESOURCE_RELEASE_BEFORE_LOCKS || \
	 (kind)->release_phase > RESOURCE_RELEASE_AFTER_LOCKS)

/*
 * ResourceOwnerEnlarge: make sure the next ResourceOwnerRemember() on
 * owner cannot fail.  Call it before acquiring the resource.  When the
 * inline array is full its contents move to the hash table, which is
 * allocated or doubled first.  Raises ERROR on out of memory (or while
 * owner is being released), with the owner unchanged.  owner NULL does
 * nothing.  Amortized O(1).
 */
void
ResourceOwnerEnlarge(ResourceOwner owner)
{
	if (owner == NULL)
		return;
	if (unlikely(owner->releasing))
		error_owner_releasing(owner, "enlarge", NULL);
	if (likely(owner->narr < RESOWNER_ARRAY_SIZE))
		return;

	hash_reserve(owner, owner->nhash + owner->narr);
	for (uint32_t i = 0; i < owner->narr; i++)
	{
		hash_insert(owner->hash, owner->hash_capacity, owner->arr[i].item, owner->arr[i].kind);
		owner->nhash++;
	}
	owner->narr = 0;
}

/*
 * ResourceOwnerRemember: record (value, kind) in owner.  Never fails after
 * a ResourceOwnerEnlarge() on the same owner with no Remember in between;
 * without that room, or while owner is being released, raises ERROR (the
 * resource is then not remembered: a bug in the caller).  owner NULL does
 * nothing (session lifetime).  O(1).
 */
void
ResourceOwnerRemember(ResourceOwner owner, Datum value, const ResourceOwnerDesc *kind)
{
	if (owner == NULL)
		return;
	if (unlikely(owner->narr >= RESOWNER_ARRAY_SIZE || owner->releasing || KIND_IS_BAD(kind)))
	{
		if (KIND_IS_BAD(kind))
			error_bad_kind(owner, "remember", kind);
		if (owner->releasing)
			error_owner_releasing(owner, "remember", kind);
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("resource owner \"%s\" has no room for a resource of kind \"%s\"",
					   owner->name, kind->name),
				errhint("Call ResourceOwnerEnlarge() before acquiring the resource."));
	}
	owner->arr[owner->narr].item = value;
	owner->arr[owner->narr].kind = kind;
	owner->narr++;
}

/*
 * ResourceOwnerForget: remove one record of (value, kind) from owner; the
 * caller has released or is releasing the resource itself.  The array is
 * searched newest first, then the hash table.  Raises ERROR if the pair is
 * not remembered by owner (not in a child either: ownership is exact), or
 * while owner is being released.  owner NULL does nothing.  O(1) expected.
 */
void
ResourceOwnerForget(ResourceOwner owner, Datum value, const ResourceOwnerDesc *kind)
{
	size_t idx;

	if (owner == NULL)
		return;
	if (unlikely(KIND_IS_BAD(kind)))
		error_bad_kind(owner, "forget", kind);
	/*
	 * A release still marked running although proc_exit() has begun (again)
	 * since it started was interrupted by a FATAL and never resumes: during
	 * the exit hooks its owner's storage may change, so that they
	 * (dsm_detach_all(), for one) can still give back what it holds.
	 */
	if (unlikely(owner->releasing) && ipc_exit_entries == owner->release_exit_entries)
		error_owner_releasing(owner, "forget", kind);

	for (uint32_t i = owner->narr; i-- > 0;)
	{
		if (owner->arr[i].item == value && owner->arr[i].kind == kind)
		{
			owner->arr[i] = owner->arr[--owner->narr];
			return;
		}
	}
	if (owner->nhash > 0 && (idx = hash_lookup(owner, value, kind)) != SIZE_MAX)
	{
		hash_delete_at(owner, idx);
		return;
	}
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
			errmsg("resource 0x%" PRIxPTR " of kind \"%s\" is not remembered by resource owner \"%s\"",
				   value, kind->name, owner->name));
}

/*
 * RegisterResourceReleaseCallback: call callback(phase, isCommit,
 * isTopLevel, arg) after the resources of every owner release phase.  The
 * newest registration runs first.  The item lives in TopMemoryContext until
 * unregistered.  Raises ERROR on out of memory.
 */
void
RegisterResourceReleaseCallback(ResourceReleaseCallback callback, void *arg)
{
	ReleaseCallbackItem *item;

	if (TopMemoryContext == NULL)
		MemoryContextInit();
	item = MemoryContextAlloc(TopMemoryContext, sizeof(ReleaseCallbackItem));
	item->callback = callback;
	item->arg = arg;
	item->next = release_callbacks;
	release_callbacks = item;
}

/*
 * UnregisterResourceReleaseCallback: remove the newest registration of
 * (callback, arg); nothing if there is none.  A callback may unregister
 * itself while it runs, but not another callback.  Never fails.
 */
void
UnregisterResourceReleaseCallback(ResourceReleaseCallback callback, void *arg)
{
	for (ReleaseCallbackItem **link = &release_callbacks; *link != NULL; link = &(*link)->next)
	{
		ReleaseCallbackItem *item = *link;

		if (item->callback == callback && item->arg == arg)
		{
			*link = item->next;
			pfree(item);
			return;
		}
	}
}
