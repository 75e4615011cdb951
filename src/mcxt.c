/*
 * mcxt.c: memory contexts (palloc and friends) built on talloc.
 *
 * A MemoryContext is a talloc object of type struct MemoryContextData.  Its
 * talloc name is the constant mcxt_context_name, and every chunk palloc()
 * hands out is a talloc child of the context whose talloc name is the
 * constant mcxt_chunk_name.  Comparing a talloc name pointer with those two
 * constants (plus the magic number in the context struct) is how this file
 * tells a context from a chunk from a foreign talloc object.
 *
 * Child contexts are talloc children of their parent as well, so freeing a
 * context with talloc_free() frees the whole subtree; a talloc destructor
 * on every context makes that equivalent to MemoryContextDelete() (reset
 * callbacks run, CurrentMemoryContext falls back to the parent).  Besides
 * the talloc hierarchy each context keeps its own list of child contexts,
 * so that reset and delete can remove children before running the parent's
 * callbacks (children before parents) without walking every chunk.
 *
 * Contexts created with a nonzero initBlockSize are talloc pooled objects:
 * chunks are carved out of a block reserved with the context, and a chunk
 * freed right after it was allocated gives its space back at once.  This is
 * what makes palloc/pfree cheaper than talloc_size/talloc_free.  The pool
 * is only reused once all its chunks are gone (reset), like an AllocSet's
 * keeper block; requests that do not fit go to malloc as usual.
 *
 * Everything here is process-local and not thread-safe, as in PostgreSQL.
 */
#include "dsmkit_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <talloc.h>

#include <dsmkit/elog.h>
#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>

/* "MCXT" in ASCII; cleared when a context is destroyed. */
#define MCXT_MAGIC 0x4d435854u

/* Memory reserved for ErrorContext up front, so an out-of-memory error can still be reported. */
#define ERROR_CONTEXT_RESERVE (8 * 1024)

/*
 * The talloc names of contexts and chunks.  Only the addresses matter: a
 * talloc object is a context or a chunk exactly when its name pointer is
 * one of these.
 */
static const char mcxt_context_name[] = "dsmkit MemoryContext";
static const char mcxt_chunk_name[] = "dsmkit palloc chunk";

/*
 * A memory context.  Process-local (it lives in talloc memory of this
 * process and is never placed in shared memory).
 */
struct MemoryContextData
{
	uint32_t magic;                    /* MCXT_MAGIC while the context is alive */
	bool pooled;                       /* created as a talloc pooled object */
	const char *name;                  /* caller's name (a string that outlives the context) */
	MemoryContext parent;              /* context this one lives under; NULL for TopMemoryContext */
	MemoryContext firstchild;          /* newest child context, or NULL */
	MemoryContext prevchild;           /* siblings under the same parent */
	MemoryContext nextchild;
	MemoryContextCallback *reset_cbs;  /* reset callbacks, newest first */
};

MemoryContext CurrentMemoryContext = NULL;
MemoryContext TopMemoryContext = NULL;
MemoryContext ErrorContext = NULL;

/*
 * Pointer probing.  talloc validates the header in front of a pointer and,
 * when it is not a live talloc chunk, calls its abort function.  While
 * mcxt_probe_caller is set, our abort function turns that into an ERROR
 * naming the caller instead of aborting the process.
 */
static const char *mcxt_probe_caller = NULL;
static const void *mcxt_probe_pointer = NULL;

/* True while MemoryContextInit() runs, so that a report it makes cannot recurse into it. */
static bool mcxt_initializing = false;

static int mcxt_destructor(MemoryContext context);
static void mcxt_delete_children(MemoryContext context);
static void mcxt_call_callbacks(MemoryContext context);

/*
 * talloc's abort function, installed by MemoryContextInit().  During a
 * pointer probe it raises ERROR (talloc has changed nothing at that
 * point, so leaving with longjmp is safe).  Otherwise it prints the reason
 * and aborts, as talloc's own default does.
 */
static void
mcxt_talloc_abort(const char *reason)
{
	const char *caller = mcxt_probe_caller;
	char why[128];
	size_t len;

	snprintf(why, sizeof why, "%s", reason ? reason : "unknown");
	len = strlen(why);
	while (len > 0 && (why[len - 1] == '\n' || why[len - 1] == '.'))
		why[--len] = '\0';

	if (caller != NULL)
	{
		mcxt_probe_caller = NULL;
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with invalid pointer %p", caller, mcxt_probe_pointer),
				errdetail("The pointer was not returned by palloc (talloc says: %s).", why));
	}
	fprintf(stderr, "PANIC:  talloc: %s\n", why);
	fflush(stderr);
	abort();
}

/*
 * The talloc name of pointer, or an ERROR naming caller if pointer is not
 * a live talloc object (see the abort function above).  What can be
 * detected: pointers into the middle of a talloc block, pointers to other
 * heap memory whose 96 bytes before the pointer are readable, and freed
 * talloc chunks whose memory has not been reused.  A pointer whose
 * preceding bytes are unmapped crashes the process instead.
 */
static inline const char *
mcxt_probe_name(const void *pointer, const char *caller)
{
	const char *name;

	mcxt_probe_pointer = pointer;
	mcxt_probe_caller = caller;
	name = talloc_get_name(pointer);
	mcxt_probe_caller = NULL;
	return name;
}

/* Raise the ERROR for a pointer that is a talloc object but not a chunk. */
static DSMKIT_NORETURN void
mcxt_not_a_chunk(const char *caller, const void *pointer, const char *name)
{
	if (name == mcxt_context_name)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with memory context \"%s\" instead of a chunk", caller,
					   ((const struct MemoryContextData *) pointer)->name),
				errhint("Use MemoryContextDelete() to free a memory context."));
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
			errmsg("%s called with invalid pointer %p", caller, pointer),
			errdetail("The pointer is a talloc object named \"%s\", not a chunk returned by palloc.",
					  name));
}

/* Check that pointer is a palloc'd chunk; raise ERROR naming caller otherwise. */
static inline void
mcxt_check_chunk(const void *pointer, const char *caller)
{
	const char *name;

	if (unlikely(pointer == NULL))
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with NULL pointer", caller));
	if (unlikely(TopMemoryContext == NULL))
		MemoryContextInit();
	name = mcxt_probe_name(pointer, caller);
	if (unlikely(name != mcxt_chunk_name))
		mcxt_not_a_chunk(caller, pointer, name);
}

/* True if p is a live context; p must be a valid talloc pointer. */
static inline bool
mcxt_is_context(const void *p)
{
	return talloc_get_name(p) == mcxt_context_name &&
		((const struct MemoryContextData *) p)->magic == MCXT_MAGIC;
}

/* Raise ERROR unless context looks like a live context (checks the magic only). */
static inline void
mcxt_check_context(MemoryContext context, const char *caller)
{
	if (unlikely(context == NULL || context->magic != MCXT_MAGIC))
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with invalid memory context %p", caller, (void *) context));
}

/*
 * The context palloc() should use when CurrentMemoryContext is NULL: set
 * everything up on first use; afterwards a NULL CurrentMemoryContext is a
 * caller's mistake and raises ERROR.
 */
static MemoryContext
mcxt_lazy_current(void)
{
	if (TopMemoryContext == NULL)
		MemoryContextInit();
	if (CurrentMemoryContext == NULL)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("no current memory context"),
				errhint("Switch to a memory context with MemoryContextSwitchTo() before palloc()."));
	return CurrentMemoryContext;
}

/*
 * Raise the ERROR for a request size above what flags allow, or above the
 * largest chunk talloc can make.
 */
static DSMKIT_NORETURN void
mcxt_size_error(Size size, int flags)
{
	if (size > MaxAllocSize && !(flags & MCXT_ALLOC_HUGE))
		ereport(ERROR, errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("invalid memory alloc request size %zu", size),
				errdetail("Requests over %zu bytes need MCXT_ALLOC_HUGE.", (Size) MaxAllocSize));
	ereport(ERROR, errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			errmsg("invalid memory alloc request size %zu", size),
			errdetail("talloc allocates at most %zu bytes in one chunk.",
					  (Size) MaxTallocChunkSize));
}

/* Raise the out-of-memory ERROR for a request of size bytes in context. */
static DSMKIT_NORETURN void
mcxt_out_of_memory(MemoryContext context, Size size)
{
	ereport(ERROR, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
			errdetail("Failed on request of size %zu in memory context \"%s\".", size,
					  context ? context->name : "(none)"));
}

/*
 * The allocation every palloc variant ends in.  context must be live.
 * Returns a chunk of size bytes owned by context, or NULL only with
 * MCXT_ALLOC_NO_OOM; raises ERROR on a bad size or out of memory.
 */
static inline void *
mcxt_alloc(MemoryContext context, Size size, int flags)
{
	void *p;

	/* MaxTallocChunkSize < MaxAllocSize: one test covers both limits. */
	if (unlikely(size > MaxTallocChunkSize))
		mcxt_size_error(size, flags);
	p = talloc_named_const(context, size, mcxt_chunk_name);
	if (unlikely(p == NULL))
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		mcxt_out_of_memory(context, size);
	}
	if (flags & MCXT_ALLOC_ZERO)
		memset(p, 0, size);
	return p;
}

/*
 * Create a context object below parent (NULL: a root), or return NULL out
 * of memory.  It is allocated outside any parent pool and then moved
 * below the parent, so that a child context never pins its parent's
 * reserved block.
 */
static MemoryContext
mcxt_try_new(const char *name, Size initBlockSize, MemoryContext parent)
{
	MemoryContext context;

	if (initBlockSize > 0)
		context = _talloc_pooled_object(NULL, sizeof(struct MemoryContextData), mcxt_context_name,
										0, initBlockSize);
	else
		context = talloc_named_const(NULL, sizeof(struct MemoryContextData), mcxt_context_name);
	if (context == NULL)
		return NULL;
	memset(context, 0, sizeof *context);
	context->magic = MCXT_MAGIC;
	context->pooled = initBlockSize > 0;
	context->name = name;
	talloc_set_destructor(context, mcxt_destructor);
	if (parent != NULL)
	{
		(void) talloc_steal(parent, context);
		context->parent = parent;
		context->nextchild = parent->firstchild;
		if (parent->firstchild != NULL)
			parent->firstchild->prevchild = context;
		parent->firstchild = context;
	}
	return context;
}

/* mcxt_try_new, raising ERROR out of memory. */
static MemoryContext
mcxt_new(const char *name, Size initBlockSize, MemoryContext parent)
{
	MemoryContext context = mcxt_try_new(name, initBlockSize, parent);

	if (context == NULL)
		ereport(ERROR, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
				errdetail("Failed while creating memory context \"%s\".", name));
	return context;
}

/* Remove context from its parent's list of children (bookkeeping only). */
static void
mcxt_unlink(MemoryContext context)
{
	MemoryContext parent = context->parent;

	if (parent == NULL)
		return;
	if (context->prevchild != NULL)
		context->prevchild->nextchild = context->nextchild;
	else
		parent->firstchild = context->nextchild;
	if (context->nextchild != NULL)
		context->nextchild->prevchild = context->prevchild;
	context->prevchild = context->nextchild = NULL;
	context->parent = NULL;
}

/* Create ErrorContext under TopMemoryContext, with its reserve; false out of memory. */
static bool
mcxt_create_error_context(void)
{
	ErrorContext = mcxt_try_new("ErrorContext", ERROR_CONTEXT_RESERVE, TopMemoryContext);
	return ErrorContext != NULL;
}

/*
 * MemoryContextInit: create TopMemoryContext (made current) and
 * ErrorContext and install the talloc abort function used to catch bad
 * pointers.  Any code may call it at any time; every entry point that
 * needs a context calls it on first use.  Calls after the first do
 * nothing.  Out of memory here is FATAL: the process cannot work without
 * these contexts.  After fork() the child keeps its copies.
 */
void
MemoryContextInit(void)
{
	if (TopMemoryContext != NULL || mcxt_initializing)
		return;
	/* Stays set if we fail, so the FATAL report cannot recurse into here. */
	mcxt_initializing = true;
	talloc_set_abort_fn(mcxt_talloc_abort);
	TopMemoryContext = mcxt_try_new("TopMemoryContext", ALLOCSET_DEFAULT_INITSIZE, NULL);
	if (TopMemoryContext == NULL)
		ereport(FATAL, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
				errdetail("Failed while creating memory context \"TopMemoryContext\"."));
	CurrentMemoryContext = TopMemoryContext;
	if (!mcxt_create_error_context())
		ereport(FATAL, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
				errdetail("Failed while creating memory context \"ErrorContext\"."));
	mcxt_initializing = false;
}

/*
 * AllocSetContextCreateInternal: create a context below parent (NULL
 * means TopMemoryContext, which is created on first use).  With a nonzero
 * initBlockSize the context reserves that many bytes up front as a talloc
 * pool; the other two sizes are accepted for source compatibility.  The
 * new context belongs to its parent: deleting or resetting the parent
 * deletes it.  Raises ERROR out of memory; never returns NULL.
 */
MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name, Size minContextSize,
							  Size initBlockSize, Size maxBlockSize)
{
	(void) minContextSize;
	(void) maxBlockSize;
	if (TopMemoryContext == NULL)
		MemoryContextInit();
	if (parent == NULL)
		parent = TopMemoryContext;
	mcxt_check_context(parent, "AllocSetContextCreate");
	if (name == NULL)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("memory context name must not be NULL"));
	return mcxt_new(name, initBlockSize, parent);
}

/*
 * Run one reset callback; an ERROR it raises is printed, forgotten and
 * followed by a WARNING, because a reset or delete is a cleanup path and
 * must not throw.
 */
static void
mcxt_call_one(MemoryContext context, MemoryContextCallback *cb)
{
	PG_TRY();
	{
		cb->func(cb->arg);
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		ereport(WARNING,
				errmsg("reset callback of memory context \"%s\" raised an error", context->name));
	}
	PG_END_TRY();
}

/*
 * Run and forget context's reset callbacks, newest first.  Each is popped
 * before it runs, so an error inside it cannot make it run twice.  Never
 * throws.
 */
static void
mcxt_call_callbacks(MemoryContext context)
{
	MemoryContextCallback *cb;

	while ((cb = context->reset_cbs) != NULL)
	{
		context->reset_cbs = cb->next;
		mcxt_call_one(context, cb);
	}
}

/*
 * Delete every child context of context (each runs its own children's and
 * its own callbacks first).  The list is re-read after every deletion, so
 * a callback that deletes a sibling is harmless.  Never throws.
 */
static void
mcxt_delete_children(MemoryContext context)
{
	MemoryContext child;

	while ((child = context->firstchild) != NULL)
	{
		if (talloc_free(child) != 0)
		{
			/* talloc refused (a talloc_reference to it exists): forget it here. */
			mcxt_unlink(child);
			ereport(WARNING,
					errmsg("could not free memory context \"%s\"", child->name),
					errdetail("talloc_free() refused; the context has talloc references."));
		}
	}
}

/*
 * The talloc destructor of every context, so that talloc_free() of a
 * context (directly, or through its talloc parent) is a full delete:
 * child contexts go first, then the context's reset callbacks run, then
 * talloc frees its chunks.  CurrentMemoryContext pointing at a dying
 * context falls back to its parent.  TopMemoryContext refuses to die.
 */
static int
mcxt_destructor(MemoryContext context)
{
	if (context == TopMemoryContext)
		return -1;
	mcxt_delete_children(context);
	mcxt_call_callbacks(context);
	if (CurrentMemoryContext == context)
		CurrentMemoryContext = context->parent;
	if (ErrorContext == context)
		ErrorContext = NULL;
	mcxt_unlink(context);
	context->magic = 0;
	return 0;
}

/*
 * Free every talloc child of context (chunks and the caller's objects).
 * talloc_free_children() begins by looking for the context's talloc name
 * among the children, because it keeps a name that is a child; with our
 * constant name that search walks every chunk, a second full pass over
 * memory.  For the duration we give the context a name that is its newest
 * child, where the search starts, so it stops at once; the marker then
 * goes too.  Without memory for the marker, the plain call does the same
 * job more slowly.  Never throws.
 */
static void
mcxt_free_chunks(MemoryContext context)
{
	char *marker = talloc_named_const(context, 1, mcxt_chunk_name);

	if (marker == NULL)
	{
		talloc_free_children(context);
		return;
	}
	marker[0] = '\0';
	talloc_set_name_const(context, marker);
	talloc_free_children(context);
	talloc_set_name_const(context, mcxt_context_name);
	talloc_free(marker);
}

/*
 * MemoryContextReset: delete every child context, run context's reset
 * callbacks, then free every chunk and every talloc object the caller
 * hung below the context.  The context itself stays, empty, and so does
 * its reserved pool.  Resetting TopMemoryContext re-creates ErrorContext.
 * Never throws except for an invalid context.
 */
void
MemoryContextReset(MemoryContext context)
{
	mcxt_check_context(context, "MemoryContextReset");
	mcxt_delete_children(context);
	mcxt_call_callbacks(context);
	mcxt_free_chunks(context);
	if (context == TopMemoryContext && ErrorContext == NULL && !mcxt_create_error_context())
		ereport(WARNING, errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("could not re-create memory context \"ErrorContext\""),
				errdetail("Out of memory after resetting TopMemoryContext."));
}

/*
 * MemoryContextDelete: reset context and free it.  If it (or a
 * descendant) is CurrentMemoryContext, its parent becomes current.
 * Deleting TopMemoryContext or ErrorContext raises ERROR and changes
 * nothing.
 */
void
MemoryContextDelete(MemoryContext context)
{
	mcxt_check_context(context, "MemoryContextDelete");
	if (context == TopMemoryContext)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot delete memory context \"%s\"", context->name),
				errdetail("TopMemoryContext lives as long as the process."));
	if (context == ErrorContext)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot delete memory context \"%s\"", context->name),
				errdetail("Error reporting needs ErrorContext; reset it instead."));
	if (talloc_free(context) != 0)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot delete memory context \"%s\"", context->name),
				errdetail("talloc_free() refused; the context has talloc references."));
}

/*
 * MemoryContextSetParent: move context (with its chunks and children)
 * below new_parent.  Raises ERROR when new_parent is NULL, is context
 * itself or one of its descendants, or when context is TopMemoryContext.
 */
void
MemoryContextSetParent(MemoryContext context, MemoryContext new_parent)
{
	MemoryContext p;

	mcxt_check_context(context, "MemoryContextSetParent");
	mcxt_check_context(new_parent, "MemoryContextSetParent");
	if (context == TopMemoryContext)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("cannot move memory context \"%s\"", context->name));
	for (p = new_parent; p != NULL; p = p->parent)
		if (p == context)
			ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("cannot move memory context \"%s\" below \"%s\"", context->name,
						   new_parent->name),
					errdetail("The new parent is the context itself or one of its descendants."));
	if (context->parent == new_parent)
		return;
	mcxt_unlink(context);
	(void) talloc_steal(new_parent, context);
	context->parent = new_parent;
	context->nextchild = new_parent->firstchild;
	if (new_parent->firstchild != NULL)
		new_parent->firstchild->prevchild = context;
	new_parent->firstchild = context;
}

/* MemoryContextGetName: the name given at creation.  ERROR for an invalid context. */
const char *
MemoryContextGetName(MemoryContext context)
{
	mcxt_check_context(context, "MemoryContextGetName");
	return context->name;
}

/* MemoryContextGetParent: the parent context, NULL for TopMemoryContext. */
MemoryContext
MemoryContextGetParent(MemoryContext context)
{
	mcxt_check_context(context, "MemoryContextGetParent");
	return context->parent;
}

/* Callback of talloc_report_depth_cb counting the immediate children. */
static void
mcxt_count_children_cb(const void *ptr, int depth, int max_depth, int is_ref, void *private_data)
{
	(void) ptr;
	(void) max_depth;
	(void) is_ref;
	if (depth == 1)
		(*(size_t *) private_data)++;
}

/* MemoryContextIsEmpty: true when context holds no chunk, talloc object or child context. */
bool
MemoryContextIsEmpty(MemoryContext context)
{
	size_t n = 0;

	mcxt_check_context(context, "MemoryContextIsEmpty");
	talloc_report_depth_cb(context, 0, 1, mcxt_count_children_cb, &n);
	return n == 0;
}

/*
 * MemoryContextRegisterResetCallback: run cb->func(cb->arg) when context
 * is next reset or deleted, before its memory goes.  Callbacks run newest
 * first, after those of the child contexts; each runs once and is then
 * forgotten.  cb must stay valid until then (allocating it in context is
 * the usual way).  Never fails for a valid context.
 */
void
MemoryContextRegisterResetCallback(MemoryContext context, MemoryContextCallback *cb)
{
	mcxt_check_context(context, "MemoryContextRegisterResetCallback");
	cb->next = context->reset_cbs;
	context->reset_cbs = cb;
}

/*
 * GetMemoryChunkContext: the context owning a palloc'd chunk (the nearest
 * context among its talloc ancestors, which matters only if the caller
 * talloc_steal()ed the chunk under another object).  Raises ERROR for
 * NULL, for a pointer palloc did not return, and for a chunk that no
 * context owns.  Costs one talloc_parent() a level, which talloc makes
 * linear in the number of chunks allocated after this one in the context.
 */
MemoryContext
GetMemoryChunkContext(void *pointer)
{
	const void *p = pointer;

	mcxt_check_chunk(pointer, "GetMemoryChunkContext");
	while ((p = talloc_parent(p)) != NULL)
	{
		if (mcxt_is_context(p))
			return (MemoryContext) p;
	}
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
			errmsg("chunk %p belongs to no memory context", pointer));
}

/* GetMemoryChunkSpace: the usable size of a palloc'd chunk; ERROR as GetMemoryChunkContext. */
Size
GetMemoryChunkSpace(void *pointer)
{
	mcxt_check_chunk(pointer, "GetMemoryChunkSpace");
	return talloc_get_size(pointer);
}

/*
 * Allocation entry points.  Contract (all of them): the chunk belongs to
 * the given context (CurrentMemoryContext for the p* names) and lives
 * until pfree(), or until that context is reset or deleted.  They raise
 * ERROR ERRCODE_PROGRAM_LIMIT_EXCEEDED for a size over MaxTallocChunkSize
 * (talloc's ceiling, whatever the flags; the detail says whether
 * MCXT_ALLOC_HUGE would have passed PostgreSQL's check), and ERROR
 * ERRCODE_OUT_OF_MEMORY when memory runs out, unless MCXT_ALLOC_NO_OOM
 * was given (then they return NULL).
 */
void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	mcxt_check_context(context, "MemoryContextAlloc");
	return mcxt_alloc(context, size, 0);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	mcxt_check_context(context, "MemoryContextAllocZero");
	return mcxt_alloc(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	mcxt_check_context(context, "MemoryContextAllocExtended");
	return mcxt_alloc(context, size, flags);
}

void *
palloc(Size size)
{
	MemoryContext context = CurrentMemoryContext;

	if (unlikely(context == NULL))
		context = mcxt_lazy_current();
	mcxt_check_context(context, "palloc");
	return mcxt_alloc(context, size, 0);
}

void *
palloc0(Size size)
{
	MemoryContext context = CurrentMemoryContext;

	if (unlikely(context == NULL))
		context = mcxt_lazy_current();
	mcxt_check_context(context, "palloc0");
	return mcxt_alloc(context, size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	MemoryContext context = CurrentMemoryContext;

	if (unlikely(context == NULL))
		context = mcxt_lazy_current();
	mcxt_check_context(context, "palloc_extended");
	return mcxt_alloc(context, size, flags);
}

/*
 * pfree: free a chunk palloc returned.  Raises ERROR (and frees nothing)
 * for NULL, for a memory context, for a talloc object palloc did not
 * make, and for a pointer talloc recognises as not its own (see
 * mcxt_probe_name for the limits of that check).
 */
void
pfree(void *pointer)
{
	mcxt_check_chunk(pointer, "pfree");
	if (unlikely(talloc_free(pointer) != 0))
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not free chunk %p", pointer),
				errdetail("talloc_free() refused: a destructor failed or the chunk has talloc references."));
}

/*
 * repalloc: resize a chunk, in its own context; the data up to the
 * smaller of the two sizes is kept.  Returns the (possibly moved) chunk;
 * the old pointer is invalid afterwards unless it is the same.  Raises
 * ERROR as pfree for a bad pointer, as palloc for a bad size or out of
 * memory (the old chunk is then left untouched).
 */
void *
repalloc(void *pointer, Size size)
{
	void *p;

	mcxt_check_chunk(pointer, "repalloc");
	if (unlikely(size > MaxTallocChunkSize))
		mcxt_size_error(size, 0);
	if (unlikely(size == 0))
	{
		/* talloc_realloc to 0 bytes frees; palloc semantics keep a chunk. */
		const void *parent = talloc_parent(pointer);

		p = talloc_named_const(parent, 0, mcxt_chunk_name);
		if (p == NULL)
			mcxt_out_of_memory(GetMemoryChunkContext(pointer), size);
		talloc_free(pointer);
		return p;
	}
	p = _talloc_realloc(NULL, pointer, size, mcxt_chunk_name);
	if (unlikely(p == NULL))
		mcxt_out_of_memory(GetMemoryChunkContext(pointer), size);
	return p;
}

/* MemoryContextStrdup: a copy of string in context; ERROR as palloc. */
char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	size_t len = strlen(string);
	char *p;

	mcxt_check_context(context, "MemoryContextStrdup");
	p = mcxt_alloc(context, len + 1, 0);
	memcpy(p, string, len + 1);
	return p;
}

/* pstrdup: MemoryContextStrdup in CurrentMemoryContext. */
char *
pstrdup(const char *in)
{
	MemoryContext context = CurrentMemoryContext;

	if (unlikely(context == NULL))
		context = mcxt_lazy_current();
	return MemoryContextStrdup(context, in);
}

/* pnstrdup: a NUL-terminated copy of at most len bytes of in, in CurrentMemoryContext. */
char *
pnstrdup(const char *in, Size len)
{
	char *p;

	len = strnlen(in, len);
	p = palloc(len + 1);
	memcpy(p, in, len);
	p[len] = '\0';
	return p;
}

/*
 * pvsprintf: the formatted string, in CurrentMemoryContext.  Raises ERROR
 * as palloc, or ERRCODE_INTERNAL_ERROR if vsnprintf fails (a bad format).
 */
char *
pvsprintf(const char *fmt, va_list args)
{
	va_list copy;
	int len;
	char *p;

	va_copy(copy, args);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not format string \"%s\": %m", fmt));
	p = palloc((Size) len + 1);
	vsnprintf(p, (size_t) len + 1, fmt, args);
	return p;
}

/* psprintf: pvsprintf with a variable argument list. */
char *
psprintf(const char *fmt, ...)
{
	va_list args;
	char *p;

	va_start(args, fmt);
	p = pvsprintf(fmt, args);
	va_end(args);
	return p;
}

/*
 * Statistics.  A context's own figures are its talloc subtree minus the
 * subtrees of its child contexts and minus the context object itself:
 * "chunks" counts every talloc object below it (palloc chunks and any
 * object a caller hung there), "bytes" their requested sizes, without
 * talloc's headers or the unused part of a reserved pool.
 */
typedef struct McxtCounts
{
	size_t contexts;
	size_t chunks;
	size_t bytes;
} McxtCounts;

static void
mcxt_own_counts(MemoryContext context, McxtCounts *own)
{
	MemoryContext child;

	own->contexts = 1;
	own->chunks = talloc_total_blocks(context) - 1;
	own->bytes = talloc_total_size(context) - talloc_get_size(context);
	for (child = context->firstchild; child != NULL; child = child->nextchild)
	{
		own->chunks -= talloc_total_blocks(child);
		own->bytes -= talloc_total_size(child);
	}
}

static void
mcxt_stats_walk(MemoryContext context, int depth, FILE *out, McxtCounts *total)
{
	McxtCounts own;
	MemoryContext child;

	mcxt_own_counts(context, &own);
	if (out != NULL)
		fprintf(out, "%*s%s: %zu chunks, %zu bytes\n", depth * 2, "", context->name, own.chunks,
				own.bytes);
	total->contexts += own.contexts;
	total->chunks += own.chunks;
	total->bytes += own.bytes;
	for (child = context->firstchild; child != NULL; child = child->nextchild)
		mcxt_stats_walk(child, depth + 1, out, total);
}

/*
 * MemoryContextMemAllocated: bytes requested by the chunks of context
 * (and of all its descendants when recurse), as defined above.
 */
Size
MemoryContextMemAllocated(MemoryContext context, bool recurse)
{
	McxtCounts c = {0, 0, 0};

	mcxt_check_context(context, "MemoryContextMemAllocated");
	if (recurse)
		mcxt_stats_walk(context, 0, NULL, &c);
	else
		mcxt_own_counts(context, &c);
	return c.bytes;
}

/*
 * MemoryContextStatsToFile: write the tree below context to out, one
 * line a context ("<indent><name>: N chunks, B bytes", two spaces of
 * indent a level, children newest first), then
 * "Grand total: C contexts, N chunks, B bytes".  Allocates nothing.
 */
void
MemoryContextStatsToFile(MemoryContext context, FILE *out)
{
	McxtCounts total = {0, 0, 0};

	mcxt_check_context(context, "MemoryContextStats");
	mcxt_stats_walk(context, 0, out, &total);
	fprintf(out, "Grand total: %zu contexts, %zu chunks, %zu bytes\n", total.contexts, total.chunks,
			total.bytes);
	fflush(out);
}

/* MemoryContextStats: MemoryContextStatsToFile to stderr. */
void
MemoryContextStats(MemoryContext context)
{
	MemoryContextStatsToFile(context, stderr);
}
