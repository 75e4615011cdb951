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
 * session lifetime (nothing is remembered).
 *
 * An owner is a talloc object: a child owner is a talloc child of its
 * parent owner; a top-level owner is a talloc child of TopMemoryContext,
 * or of the context given to ResourceOwnerCreateInContext().  Freeing an
 * owner's talloc parent releases the owner as on abort and then frees it,
 * so deleting a memory context that holds an owner leaks nothing.
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
 *         ResourceOwnerReleaseAll(request, false);
 *         EmitErrorReport();  // or CopyErrorData()
 *         FlushErrorState();
 *     }
 *     PG_END_TRY();
 *     ResourceOwnerDelete(request);
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
 *    it: the owner has already forgotten it;
 *  - DebugPrint: optional; returns a palloc'd description for the leak
 *    warning (NULL means "<name> <value>").
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
 * Release one phase of owner and of all its descendants (children first).
 * isTopLevel is passed to the release callbacks.  ERROR if a release of
 * the same owner is already running.
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
/* Move owner below newparent (NULL: make it top-level). */
DSMKIT_API void ResourceOwnerNewParent(ResourceOwner owner, ResourceOwner newparent);

/*
 * Make room for one more resource.  Call it BEFORE acquiring the resource,
 * so that ResourceOwnerRemember() cannot fail once the resource exists.
 * ERROR on out of memory.
 */
DSMKIT_API void ResourceOwnerEnlarge(ResourceOwner owner);
/* Remember a resource; never fails after ResourceOwnerEnlarge (ERROR without it). */
DSMKIT_API void ResourceOwnerRemember(ResourceOwner owner, Datum value, const ResourceOwnerDesc *kind);
/* Forget a resource; ERROR if (value, kind) is not remembered by owner. */
DSMKIT_API void ResourceOwnerForget(ResourceOwner owner, Datum value, const ResourceOwnerDesc *kind);

/*
 * Callbacks run for every owner release phase, after the owner's own
 * resources of that phase are released.  Unregister with the same
 * (callback, arg).
 */
typedef void (*ResourceReleaseCallback)(ResourceReleasePhase phase, bool isCommit, bool isTopLevel,
										void *arg);
DSMKIT_API void RegisterResourceReleaseCallback(ResourceReleaseCallback callback, void *arg);
DSMKIT_API void UnregisterResourceReleaseCallback(ResourceReleaseCallback callback, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_RESOWNER_H */
