/*
 * dsmkit/resowner.h: resource owners, hierarchical scopes that release what
 * they hold.
 *
 * A resource owner remembers resources (a segment mapping, a file, a lock,
 * anything a caller describes with a ResourceOwnerDesc) and releases them
 * when the owner is released: children first, then in three phases
 * (before locks, locks, after locks), and within a phase in ascending
 * release_priority.  Releasing on commit (isCommit true) means the code
 * should already have released everything itself, so each leftover draws a
 * WARNING naming its kind; releasing on abort is silent, because an ERROR
 * skipped the code that would have released it.
 *
 * CurrentResourceOwner is the owner new resources go to; NULL means
 * session lifetime (nothing is remembered): ResourceOwnerEnlarge,
 * ResourceOwnerRemember, ResourceOwnerForget, ResourceOwnerRelease(All)
 * and ResourceOwnerDelete do nothing when given a NULL owner.
 *
 * An owner is a talloc object: a child owner is a talloc child of its
 * parent owner; a top-level owner is a talloc child of TopMemoryContext,
 * or of the context given to ResourceOwnerCreateInContext().  Every owner
 * has a talloc destructor: freeing an owner's talloc parent (for instance
 * deleting the memory context that holds it) releases whatever the owner
 * and its descendants still hold as on abort (all phases, isCommit false,
 * ReleaseResource called for each), frees its child owners, unlinks it
 * from its parent and resets CurrentResourceOwner if it pointed there.
 * So freeing a context that holds an owner leaks nothing.  Do not
 * talloc_reference() an owner.
 *
 * While a release of an owner is running, its storage is frozen:
 * ResourceOwnerEnlarge/Remember/Forget on it, releasing it again and
 * deleting it raise ERROR.  ReleaseResource functions and release
 * callbacks must not raise ERROR; if one does anyway, the error is caught,
 * reported at WARNING ("could not release ... of resource owner ...") and
 * the release carries on with the next resource.  Only that error is
 * forgotten: an error a PG_CATCH block is handling while it releases
 * owners is still there afterwards (to copy, report or re-throw).
 *
 * Typical request scope:
 *
 *     ResourceOwner request = ResourceOwnerCreate(NULL, "request");
 *     ResourceOwner saved = CurrentResourceOwner;
 *     CurrentResourceOwner = request;
 *     PG_TRY();
 *     {
 *         handle_request();          // attaches segments, opens files...
 *         CurrentResourceOwner = saved;
 *         ResourceOwnerReleaseAll(request, true);
 *     }
 *     PG_CATCH();
 *     {
 *         CurrentResourceOwner = saved;
 *         EmitErrorReport();  // or CopyErrorData()
 *         FlushErrorState();
 *         ResourceOwnerReleaseAll(request, false);
 *     }
 *     PG_END_TRY();
 *     ResourceOwnerDelete(request);
 *
 * Owners are process-local and not thread-safe.  A forked child gets a copy
 * of every owner; what releasing them there does is up to each kind.
 */
#ifndef DSMKIT_RESOWNER_H
#define DSMKIT_RESOWNER_H

#include <dsmkit/common.h>
#include <dsmkit/palloc.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ResourceOwnerData *ResourceOwner;

DSMKIT_API extern ResourceOwner CurrentResourceOwner;

typedef enum
{
	RESOURCE_RELEASE_BEFORE_LOCKS = 1, /* buffers, mappings: what others may wait on */
	RESOURCE_RELEASE_LOCKS,            /* locks */
	RESOURCE_RELEASE_AFTER_LOCKS       /* files, memory, anything else */
} ResourceReleasePhase;

/* Within a phase, lower priorities are released first. */
typedef uint32_t ResourceReleasePriority;
#define RELEASE_PRIO_FIRST 1
#define RELEASE_PRIO_DSMS 400 /* dynamic shared memory mappings */
#define RELEASE_PRIO_FILES 600
#define RELEASE_PRIO_LAST UINT32_MAX

/*
 * The description of one kind of resource.  Define one static const
 * instance per kind; the owner keeps only a pointer to it.
 *  - name: printed in leak warnings and errors;
 *  - ReleaseResource: releases the resource; it must not raise ERROR (log
 *    at WARNING and carry on), and must not call ResourceOwnerForget for
 *    it: the owner has already forgotten it.  It runs with
 *    CurrentResourceOwner set to the owner being released.  If it raises
 *    FATAL, the release never resumes, and the exit hooks may still
 *    ResourceOwnerForget() what that owner holds;
 *  - DebugPrint: optional; returns a palloc'd description for the leak
 *    warning "resource was not closed: <description>" (without it the
 *    description is "<name> 0x<value in hex>"); the warning's detail names
 *    the kind and the owner.  Within a priority the release order is
 *    unspecified.
 */
typedef struct ResourceOwnerDesc
{
	const char *name;
	ResourceReleasePhase release_phase;
	ResourceReleasePriority release_priority;
	void (*ReleaseResource)(Datum res);
	char *(*DebugPrint)(Datum res);
} ResourceOwnerDesc;

/*
 * Create an owner below parent (NULL: a top-level owner, allocated in
 * TopMemoryContext).  name must outlive the owner (a literal).  ERROR on
 * out of memory.
 */
DSMKIT_API ResourceOwner ResourceOwnerCreate(ResourceOwner parent, const char *name);

/* Like ResourceOwnerCreate, but the owner is a talloc child of context. */
DSMKIT_API ResourceOwner ResourceOwnerCreateInContext(MemoryContext context, ResourceOwner parent,
													  const char *name);

/*
 * Release one phase of owner and of all its descendants (children first):
 * for each owner, its resources of that phase by ascending priority, each
 * forgotten before its ReleaseResource runs, then the release callbacks.
 * isTopLevel is passed to the release callbacks.  ERROR (releasing
 * nothing) if a release of the same owner or of a descendant is already
 * running; otherwise never fails.
 */
DSMKIT_API void ResourceOwnerRelease(ResourceOwner owner, ResourceReleasePhase phase, bool isCommit,
									 bool isTopLevel);

/* All three phases in order; isTopLevel is true for an owner without parent. */
DSMKIT_API void ResourceOwnerReleaseAll(ResourceOwner owner, bool isCommit);

/*
 * Delete a released owner and its children.  ERROR if the owner (or a
 * child) still holds resources, i.e. was not released.  If owner is
 * CurrentResourceOwner, CurrentResourceOwner becomes NULL.
 */
DSMKIT_API void ResourceOwnerDelete(ResourceOwner owner);

DSMKIT_API ResourceOwner ResourceOwnerGetParent(ResourceOwner owner);
DSMKIT_API const char *ResourceOwnerGetName(ResourceOwner owner);
/*
 * Move owner below newparent (NULL: make it top-level).  Its talloc parent
 * follows (TopMemoryContext for top level), except for an owner created
 * with ResourceOwnerCreateInContext(), which stays in its context.  ERROR if
 * newparent is owner or one of its descendants, or while a release of
 * owner is running.
 */
DSMKIT_API void ResourceOwnerNewParent(ResourceOwner owner, ResourceOwner newparent);

/*
 * Make room for one more resource.  Call it BEFORE acquiring the resource,
 * so that ResourceOwnerRemember() cannot fail once the resource exists.
 * ERROR on out of memory.
 */
DSMKIT_API void ResourceOwnerEnlarge(ResourceOwner owner);
/*
 * Remember a resource; never fails after ResourceOwnerEnlarge (ERROR
 * without it, or with a kind that is NULL or lacks a name, a
 * ReleaseResource function or a valid release_phase).
 */
DSMKIT_API void ResourceOwnerRemember(ResourceOwner owner, Datum value, const ResourceOwnerDesc *kind);
/*
 * Forget a resource; ERROR if (value, kind) is not remembered by owner
 * itself (a child's resources do not count).  A pair remembered twice must
 * be forgotten twice.
 */
DSMKIT_API void ResourceOwnerForget(ResourceOwner owner, Datum value, const ResourceOwnerDesc *kind);

/*
 * Callbacks run for every owner release phase, after the owner's own
 * resources of that phase are released.  Unregister with the same
 * (callback, arg).  Callbacks run for each owner of a released subtree,
 * children first, newest registration first, with CurrentResourceOwner
 * set to that owner.  A callback may unregister itself, not another one.
 * Register raises ERROR on out of memory.
 */
typedef void (*ResourceReleaseCallback)(ResourceReleasePhase phase, bool isCommit, bool isTopLevel,
										void *arg);
DSMKIT_API void RegisterResourceReleaseCallback(ResourceReleaseCallback callback, void *arg);
DSMKIT_API void UnregisterResourceReleaseCallback(ResourceReleaseCallback callback, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_RESOWNER_H */
