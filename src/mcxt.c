/*
 * mcxt.c: memory contexts (palloc and friends) built on talloc.
 *
 * Lifetime model.  A MemoryContext is a talloc object (struct
 * MemoryContextData).  Child contexts are talloc children of their parent,
 * so freeing a context with talloc_free() frees the whole subtree; a talloc
 * destructor on every context makes that equivalent to MemoryContextDelete()
 * (reset callbacks run, CurrentMemoryContext falls back to the parent).
 * Besides the talloc hierarchy each context keeps its own list of child
 * contexts, so that reset and delete can remove children before running the
 * parent's callbacks (children before parents).  Callers may hang their own
 * talloc objects (with destructors) below a context; reset and delete free
 * them.
 *
 * Chunks are not talloc objects.  palloc() carves them out of blocks that
 * the context owns, as PostgreSQL's AllocSet does, because a talloc
 * allocation per chunk costs well over malloc() and makes a reset walk
 * every chunk:
 *
 *   - Small requests (up to MCXT_SMALL_LIMIT bytes) are rounded up to a
 *     power-of-two size class (16 bytes to 8 kB) and served from the
 *     class's free list, else carved from the current block.  A freed small
 *     chunk goes back on its class's free list.
 *   - Larger requests get a talloc object of their own (a "large chunk"),
 *     given back to the system by pfree().
 *   - Every chunk has a 16-byte header in front of it: the block it lives
 *     in, the size requested, and a check word that pfree(), repalloc() and
 *     GetMemoryChunkContext() verify before they trust the header.
 *
 * The talloc layout of one context:
 *
 *   context (struct MemoryContextData)
 *     +- [caller's talloc objects, child contexts ...]   newest first
 *     +- store (oldest child): the context's talloc name, then the keeper
 *          +- blocks and large chunks (talloc children of the store)
 *
 * The store is a talloc child of the context whose memory begins with the
 * string "dsmkit MemoryContext", and the context's talloc name points at
 * it.  talloc_free_children() never frees a child that is its parent's
 * name, so a reset first frees the caller's objects (whose destructors may
 * still pfree() chunks of the context: the blocks are intact), then the
 * blocks, with a second talloc_free_children() on the store.  talloc_free()
 * of the context frees children newest first, hence the store last, for the
 * same reason.  The keeper is the context's first block (initBlockSize
 * bytes, possibly none), allocated inside the store; it survives resets, so
 * that a context reset in a loop does not call malloc() each time.
 *
 * Blocks are talloc objects, so talloc_set_memlimit() on a context (or an
 * ancestor) limits what palloc() can get there.  A block other than the
 * keeper is freed as soon as its last chunk is freed (in a context without
 * a keeper, the block being carved stays); so memory comes back to the
 * system when it is no longer used, and a talloc block count (what the
 * test suites compare) returns to its old value once a caller has freed
 * what it allocated in TopMemoryContext.  Once its keeper is empty again
 * and no other block is being carved, a context starts carving its keeper
 * from the beginning.  The cost is a doubly linked free list, since
 * emptying a block unlinks its free chunks, and, in the worst case (a
 * keeper full of live chunks and no free chunk of the class), a block
 * malloc'd and freed by a palloc/pfree pair.
 *
 * Counters: every context counts its live chunks and the bytes they were
 * requested with; MemoryContextStats() and MemoryContextMemAllocated()
 * report those, so the figures do not depend on block sizes.
 *
 * Sanitizers: in an AddressSanitizer build, the part of every chunk beyond
 * the size requested, every free chunk and every uncarved part of a block
 * are poisoned, so overruns, use after pfree() and use after reset are
 * reported.  A context must then not live inside a talloc pool (talloc
 * would reuse poisoned memory); dsmkit never creates one.
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

#if defined(__SANITIZE_ADDRESS__)
#define MCXT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MCXT_ASAN 1
#endif
#endif

#ifdef MCXT_ASAN
#include <sanitizer/asan_interface.h>
#define MCXT_POISON(addr, size) ASAN_POISON_MEMORY_REGION((addr), (size))
#define MCXT_UNPOISON(addr, size) ASAN_UNPOISON_MEMORY_REGION((addr), (size))
#else
#define MCXT_POISON(addr, size) ((void) (addr), (void) (size))
#define MCXT_UNPOISON(addr, size) ((void) (addr), (void) (size))
#endif

/* "MCXT" in ASCII; cleared when a context is destroyed. */
#define MCXT_MAGIC 0x4d435854u

/* Memory ErrorContext reserves up front (elog.c itself reports from static buffers). */
#define ERROR_CONTEXT_RESERVE (8 * 1024)

/* Size classes: 16 << 0 .. 16 << (MCXT_NUM_CLASSES - 1) bytes. */
#define MCXT_MIN_CLASS_SHIFT 4
#define MCXT_NUM_CLASSES 10
#define MCXT_SMALL_LIMIT ((Size) 1 << (MCXT_MIN_CLASS_SHIFT + MCXT_NUM_CLASSES - 1))

/* Block sizes when the context's sizes do not say: the smallest block, and the cap. */
#define MCXT_MIN_BLOCK ((Size) 1024)
#define MCXT_MAX_BLOCK ((Size) 8 * 1024 * 1024)

/* Check-word states (only the low 24 bits matter); see mcxt_check_word. */
#define MCXT_STATE_LIVE 0x6c697665u
#define MCXT_STATE_FREE 0x66726565u
#define MCXT_CHECK_MASK 0x00ffffffu

/* The label at the start of every context's store: the context's talloc name. */
#define MCXT_LABEL "dsmkit MemoryContext"
#define MCXT_LABEL_SPACE 32

/* Talloc names of the store, of blocks and of large chunks (constants). */
static const char mcxt_store_name[] = "dsmkit palloc store";
static const char mcxt_block_name[] = "dsmkit palloc block";
static const char mcxt_large_name[] = "dsmkit palloc large chunk";

typedef struct McxtBlock McxtBlock;

/*
 * The header in front of every chunk (process-local, 16 bytes, so chunks
 * keep malloc's 16-byte alignment).  A free small chunk keeps its header
 * (check word in the FREE state) and holds its free-list links in its
 * first 16 bytes.
 */
typedef struct McxtChunk
{
	McxtBlock *block; /* the block holding the chunk (a large chunk's own) */
	uint32_t size;    /* bytes requested (free chunk: any size of its class) */
	uint32_t check;   /* generation << 24 | 24-bit hash of the above and the state */
} McxtChunk;

/* The free-list links stored in the body of a free small chunk (process-local). */
typedef struct McxtLinks
{
	McxtChunk *next; /* next free chunk of the class, or NULL */
	McxtChunk *prev; /* previous one, or NULL for the list head */
} McxtLinks;

/*
 * The header of a block (process-local).  The keeper's sits inside the
 * store; any other block's at the start of its own talloc object, with the
 * chunks right after it.  A large chunk has a block of its own.
 */
struct McxtBlock
{
	MemoryContext context; /* owning context */
	char *end;             /* end of the chunk space */
	uint32_t nlive;        /* live chunks in the block */
	uint32_t generation;   /* copied into its chunks' check words; new after a reset */
	uint64_t pad;          /* keeps the size a multiple of 16 */
};

#define MCXT_CHUNK_HDR ((Size) sizeof(McxtChunk))
/*
 * Every chunk starts at a multiple of this (chunks are in fact 16-byte
 * aligned; the check only needs what reading a header requires).
 */
#define MCXT_CHUNK_ALIGN ((uintptr_t) _Alignof(McxtChunk))
#define MCXT_BLOCK_HDR ((Size) sizeof(McxtBlock))
/* Bytes a large chunk's talloc object adds to the request. */
#define MCXT_LARGE_HDR (MCXT_BLOCK_HDR + MCXT_CHUNK_HDR)

_Static_assert(sizeof(McxtChunk) == 16, "chunk header must keep 16-byte alignment");
_Static_assert(sizeof(McxtBlock) % 16 == 0, "block header must keep 16-byte alignment");
_Static_assert(MaxTallocChunkSize + MCXT_LARGE_HDR == 0x0fffffff,
			   "MaxTallocChunkSize must leave room for a large chunk's headers");

/*
 * A memory context.  Process-local (it lives in talloc memory of this
 * process and is never placed in shared memory).  The fields palloc() and
 * pfree() use come first.
 */
struct MemoryContextData
{
	uint32_t magic;                         /* MCXT_MAGIC while the context is alive */
	bool resetting;                         /* MemoryContextReset() of it is running */
	bool deleting;                          /* its destructor is running */
	uint16_t unused;                        /* (padding) */
	char *freeptr;                          /* next uncarved byte of curblock */
	char *endptr;                           /* end of curblock (freeptr == endptr: none) */
	McxtBlock *curblock;                    /* the block being carved, or NULL */
	McxtChunk *freelist[MCXT_NUM_CLASSES];  /* free small chunks by class, doubly linked */
	Size nchunks;                           /* live chunks */
	Size bytes;                             /* bytes requested by the live chunks */
	McxtBlock *keeper;                      /* the block kept across resets, or NULL */
	char *store;                            /* talloc child holding label, keeper, blocks */
	Size init_block_size;                   /* first block after the keeper */
	Size next_block_size;                   /* size of the next block */
	Size max_block_size;                    /* blocks grow by doubling up to this */
	const char *name;                       /* caller's name (a string that outlives the context) */
	MemoryContext parent;                   /* context this one lives under; NULL for TopMemoryContext */
	MemoryContext firstchild;               /* newest child context, or NULL */
	MemoryContext prevchild;                /* siblings under the same parent */
	MemoryContext nextchild;
	MemoryContextCallback *reset_cbs;       /* reset callbacks, newest first */
};

MemoryContext CurrentMemoryContext = NULL;
MemoryContext TopMemoryContext = NULL;
MemoryContext ErrorContext = NULL;

/* Generation numbers for new blocks and reset keepers (only the low 8 bits are used). */
static uint32_t mcxt_generation = 0;

/*
 * Pointer probing.  talloc validates the header in front of a pointer and,
 * when it is not a live talloc chunk, calls its abort function.  While
 * mcxt_probe_caller is set, our abort function turns that into an ERROR
 * naming the caller instead of aborting the process.  Only the error paths
 * probe: a valid chunk is recognised by its own header.
 */
static const char *mcxt_probe_caller = NULL;
static const void *mcxt_probe_pointer = NULL;

/* True while MemoryContextInit() runs, so that a report it makes cannot recurse into it. */
static bool mcxt_initializing = false;

static int mcxt_destructor(MemoryContext context);
static void mcxt_delete_children(MemoryContext context);
static void mcxt_call_callbacks(MemoryContext context);

/* ---- chunk headers -------------------------------------------------------- */

static inline McxtChunk *
mcxt_header(const void *pointer)
{
	return (McxtChunk *) ((char *) pointer - MCXT_CHUNK_HDR);
}

static inline void *
mcxt_body(McxtChunk *chunk)
{
	return (char *) chunk + MCXT_CHUNK_HDR;
}

/*
 * The size class of a small request (0 for 0..16 bytes, 1 for 17..32, ...).
 * size must not exceed MCXT_SMALL_LIMIT.  Branch-free: a request of 0 is
 * counted as 1 byte.
 */
static inline int
mcxt_class(Size size)
{
	unsigned long long v = (unsigned long long) (size - 1 + (size == 0)) | 15u;

	return (int) (sizeof(unsigned long long) * 8) - 1 - __builtin_clzll(v) + 1 - MCXT_MIN_CLASS_SHIFT;
}

static inline Size
mcxt_class_size(int cls)
{
	return (Size) 1 << (cls + MCXT_MIN_CLASS_SHIFT);
}

/*
 * The check word of a chunk header: the generation of its block in the top
 * 8 bits, and below it 24 bits of a hash of the chunk's own address, its
 * block pointer, its size and its state (live or free).  A header copied to
 * another address, a stray pointer whose preceding 16 bytes are anything
 * else, and a chunk of a keeper that has been reset since (new generation)
 * all fail the check, except by a 1 in 2^24 (resp. 2^8) chance.
 */
static inline uint32_t
mcxt_hash(const McxtChunk *chunk, const McxtBlock *block, uint32_t size, uint32_t state)
{
	uint32_t h = (uint32_t) ((uintptr_t) chunk >> 4) ^ state ^ size;

	h ^= (uint32_t) ((uintptr_t) block >> 4) * 0x9e3779b1u;
	return h & MCXT_CHECK_MASK;
}

static inline uint32_t
mcxt_check_word(const McxtChunk *chunk, const McxtBlock *block, uint32_t size, uint32_t state)
{
	return (block->generation << 24) | mcxt_hash(chunk, block, size, state);
}

/* Free-list links of a free chunk; under ASan they are unpoisoned only while used. */
static inline McxtLinks
mcxt_get_links(McxtChunk *chunk)
{
	McxtLinks *l = mcxt_body(chunk);
	McxtLinks v;

	MCXT_UNPOISON(l, sizeof *l);
	v = *l;
	MCXT_POISON(l, sizeof *l);
	return v;
}

static inline void
mcxt_set_next(McxtChunk *chunk, McxtChunk *next)
{
	McxtLinks *l = mcxt_body(chunk);

	MCXT_UNPOISON(&l->next, sizeof l->next);
	l->next = next;
	MCXT_POISON(&l->next, sizeof l->next);
}

static inline void
mcxt_set_prev(McxtChunk *chunk, McxtChunk *prev)
{
	McxtLinks *l = mcxt_body(chunk);

	MCXT_UNPOISON(&l->prev, sizeof l->prev);
	l->prev = prev;
	MCXT_POISON(&l->prev, sizeof l->prev);
}

/* Push a free chunk (header already marked free, body poisoned) on its class's list. */
static inline void
mcxt_push_free(MemoryContext context, McxtChunk *chunk, int cls)
{
	McxtChunk *head = context->freelist[cls];
	McxtLinks *l = mcxt_body(chunk);

	MCXT_UNPOISON(l, sizeof *l);
	l->next = head;
	l->prev = NULL;
	MCXT_POISON(l, sizeof *l);
	if (head != NULL)
		mcxt_set_prev(head, chunk);
	context->freelist[cls] = chunk;
}

/* Remove a free chunk from its class's list, wherever it is. */
static void
mcxt_unlink_free(MemoryContext context, McxtChunk *chunk, int cls)
{
	McxtLinks l = mcxt_get_links(chunk);

	if (l.prev != NULL)
		mcxt_set_next(l.prev, l.next);
	else
		context->freelist[cls] = l.next;
	if (l.next != NULL)
		mcxt_set_prev(l.next, l.prev);
}

/* ---- errors ------------------------------------------------------------- */

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

/* True if p, a live talloc object named name, is a live memory context. */
static bool
mcxt_talloc_is_context(const void *p, const char *name)
{
	const struct MemoryContextData *context = p;

	return strcmp(name, MCXT_LABEL) == 0 && talloc_get_size(p) == sizeof(struct MemoryContextData) &&
		context->magic == MCXT_MAGIC && context->store == name;
}

/* Raise the ERROR for a pointer that failed talloc's checks or is not a chunk. */
static DSMKIT_NORETURN void
mcxt_not_a_chunk(const char *caller, const void *pointer)
{
	const char *name;

#ifdef MCXT_ASAN
	/* talloc reads up to 96 bytes in front of the pointer; don't let it touch poisoned memory. */
	if (__asan_region_is_poisoned((void *) ((const char *) pointer - 96), 96) != NULL)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with invalid pointer %p", caller, pointer),
				errdetail("The pointer was not returned by palloc."));
#endif
	mcxt_probe_pointer = pointer;
	mcxt_probe_caller = caller;
	name = talloc_get_name(pointer); /* raises ERROR unless it is a talloc object */
	mcxt_probe_caller = NULL;
	if (mcxt_talloc_is_context(pointer, name))
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with memory context \"%s\" instead of a chunk", caller,
					   ((const struct MemoryContextData *) pointer)->name),
				errhint("Use MemoryContextDelete() to free a memory context."));
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
			errmsg("%s called with invalid pointer %p", caller, pointer),
			errdetail("The pointer is a talloc object named \"%s\", not a chunk returned by palloc.",
					  name));
}

/*
 * The slow path of mcxt_chunk(): pointer is NULL or its header did not
 * check out.  Says why, as precisely as it can; always raises ERROR.
 */
static DSMKIT_NORETURN void
mcxt_bad_chunk(const void *pointer, const char *caller)
{
	McxtChunk *chunk;

	if (pointer == NULL)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with NULL pointer", caller));
	if (((uintptr_t) pointer & (MCXT_CHUNK_ALIGN - 1)) != 0)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with invalid pointer %p", caller, pointer),
				errdetail("The pointer is not aligned as the chunks palloc returns are."));
	if (TopMemoryContext == NULL)
		MemoryContextInit(); /* installs the abort function the probe needs */
	chunk = mcxt_header(pointer);
	if (((chunk->check ^ mcxt_hash(chunk, chunk->block, chunk->size, MCXT_STATE_FREE)) &
		 MCXT_CHECK_MASK) == 0)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with invalid pointer %p", caller, pointer),
				errdetail("The chunk was already freed."));
	if (((chunk->check ^ mcxt_hash(chunk, chunk->block, chunk->size, MCXT_STATE_LIVE)) &
		 MCXT_CHECK_MASK) == 0)
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("%s called with invalid pointer %p", caller, pointer),
				errdetail("The chunk was freed when its memory context was reset."));
	mcxt_not_a_chunk(caller, pointer);
}

/*
 * The header of the live chunk pointer, after checking it; ERROR naming
 * caller for NULL or anything else (see mcxt_bad_chunk).  Reads the 16
 * bytes in front of pointer: a pointer whose preceding bytes are unmapped
 * crashes the process instead.  A misaligned pointer is refused before
 * anything is read (a header cannot start there, and reading one would be
 * a misaligned access).
 */
static inline McxtChunk *
mcxt_chunk(const void *pointer, const char *caller)
{
	McxtChunk *chunk;
	uint32_t check;

	if (unlikely(pointer == NULL || ((uintptr_t) pointer & (MCXT_CHUNK_ALIGN - 1)) != 0))
		mcxt_bad_chunk(pointer, caller);
	chunk = mcxt_header(pointer);
	check = chunk->check;
	/* The hash first: only then is chunk->block known to be safe to follow. */
	if (unlikely(((check ^ mcxt_hash(chunk, chunk->block, chunk->size, MCXT_STATE_LIVE)) &
				  MCXT_CHECK_MASK) != 0))
		mcxt_bad_chunk(pointer, caller);
	if (unlikely((check >> 24) != (chunk->block->generation & 0xffu)))
		mcxt_bad_chunk(pointer, caller);
	return chunk;
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
 * largest chunk palloc can make.
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
			errdetail("A chunk holds at most %zu bytes (talloc's limit, less the chunk's headers).",
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

/* ---- blocks --------------------------------------------------------------- */

/* Set up a block header of a block of size bytes (header included); poisons its chunk space. */
static void
mcxt_init_block(MemoryContext context, McxtBlock *block, Size size)
{
	block->context = context;
	block->end = (char *) block + size;
	block->nlive = 0;
	block->generation = ++mcxt_generation;
	block->pad = 0;
	MCXT_POISON(block + 1, size - MCXT_BLOCK_HDR);
}

/*
 * Free block, which has no live chunk and is neither the keeper nor being
 * carved: unlink the free chunks it holds (those below limit, the end of
 * what was carved) from the free lists, then give it back to talloc.
 * Never fails.
 */
static void
mcxt_free_block(MemoryContext context, McxtBlock *block, char *limit)
{
	char *p = (char *) (block + 1);

	while (p + MCXT_CHUNK_HDR + mcxt_class_size(0) <= limit)
	{
		McxtChunk *chunk = (McxtChunk *) p;
		int cls = mcxt_class(chunk->size);

		mcxt_unlink_free(context, chunk, cls);
		p += MCXT_CHUNK_HDR + mcxt_class_size(cls);
	}
	MCXT_UNPOISON(block + 1, (Size) (block->end - (char *) (block + 1)));
	talloc_free(block);
}

/*
 * Stop carving the current block: cut what is left of it into free chunks
 * (largest classes first), or free it if none of its chunks is live and it
 * is not the keeper.  Never fails.
 */
static void
mcxt_retire_block(MemoryContext context)
{
	McxtBlock *block = context->curblock;
	char *p = context->freeptr;
	char *end = context->endptr;

	if (block == NULL)
		return;
	context->curblock = NULL;
	context->freeptr = context->endptr = NULL;
	if (block->nlive == 0 && block != context->keeper)
	{
		mcxt_free_block(context, block, p);
		return;
	}
	while ((Size) (end - p) >= MCXT_CHUNK_HDR + mcxt_class_size(0))
	{
		Size room = (Size) (end - p) - MCXT_CHUNK_HDR;
		int cls = room >= MCXT_SMALL_LIMIT ? MCXT_NUM_CLASSES - 1
										   : 63 - __builtin_clzll(room) - MCXT_MIN_CLASS_SHIFT;
		McxtChunk *chunk = (McxtChunk *) p;
		uint32_t size = (uint32_t) mcxt_class_size(cls);

		MCXT_UNPOISON(chunk, MCXT_CHUNK_HDR);
		chunk->block = block;
		chunk->size = size;
		chunk->check = mcxt_check_word(chunk, block, size, MCXT_STATE_FREE);
		mcxt_push_free(context, chunk, cls);
		p += MCXT_CHUNK_HDR + size;
	}
}

/*
 * Get a new block big enough for a chunk of class cls, make it the one
 * being carved, and carve that chunk from it (header not yet written).
 * Returns NULL out of memory, leaving everything as it was.  Block sizes
 * double from the context's initial size up to its maximum; when the
 * block fails, one just big enough is tried.
 */
static McxtChunk *
mcxt_new_block_chunk(MemoryContext context, int cls)
{
	Size foot = MCXT_CHUNK_HDR + mcxt_class_size(cls);
	Size need = MCXT_BLOCK_HDR + foot;
	Size size = context->next_block_size;
	McxtBlock *block;

	if (size < need)
		size = need;
	block = talloc_named_const(context->store, size, mcxt_block_name);
	if (block == NULL && size > need)
	{
		size = need;
		block = talloc_named_const(context->store, size, mcxt_block_name);
	}
	if (block == NULL)
		return NULL;
	if (context->next_block_size < context->max_block_size)
	{
		context->next_block_size *= 2;
		if (context->next_block_size > context->max_block_size)
			context->next_block_size = context->max_block_size;
	}
	mcxt_retire_block(context);
	mcxt_init_block(context, block, size);
	context->curblock = block;
	context->freeptr = (char *) (block + 1) + foot;
	context->endptr = block->end;
	return (McxtChunk *) (block + 1);
}

/*
 * Forget every chunk and block of context: free the blocks other than the
 * keeper and the large chunks, empty the free lists, and start carving the
 * keeper again with a new generation (so that pointers to its old chunks
 * no longer check out).  Never fails.
 */
static void
mcxt_drop_blocks(MemoryContext context)
{
	McxtBlock *keeper = context->keeper;

	talloc_free_children(context->store);
	memset(context->freelist, 0, sizeof context->freelist);
	context->nchunks = 0;
	context->bytes = 0;
	context->next_block_size = context->init_block_size;
	context->curblock = NULL;
	context->freeptr = context->endptr = NULL;
	if (keeper != NULL)
	{
		mcxt_init_block(context, keeper, (Size) (keeper->end - (char *) keeper));
		context->curblock = keeper;
		context->freeptr = (char *) (keeper + 1);
		context->endptr = keeper->end;
	}
}

/*
 * Start carving the keeper again from its beginning.  The keeper has no
 * live chunk and no block is being carved; its free chunks leave the free
 * lists.  Never fails.
 */
static void
mcxt_revive_keeper(MemoryContext context)
{
	McxtBlock *keeper = context->keeper;
	char *p = (char *) (keeper + 1);

	while (p + MCXT_CHUNK_HDR + mcxt_class_size(0) <= keeper->end)
	{
		McxtChunk *chunk = (McxtChunk *) p;
		int cls = mcxt_class(chunk->size);

		mcxt_unlink_free(context, chunk, cls);
		p += MCXT_CHUNK_HDR + mcxt_class_size(cls);
	}
	mcxt_init_block(context, keeper, (Size) (keeper->end - (char *) keeper));
	context->curblock = keeper;
	context->freeptr = (char *) (keeper + 1);
	context->endptr = keeper->end;
}

/*
 * The last live chunk of block was just freed, and block is not both the
 * block being carved and one that stays anyway (the keeper, or the only
 * block of a context without a keeper).  A block other than the keeper is
 * freed, even the one being carved; whenever no block is being carved and
 * the keeper is empty, carving starts over in the keeper.  So a context
 * without a keeper keeps one block, so that allocating and freeing one
 * chunk in a loop does not call malloc() each time, and one with a keeper
 * goes back to just its keeper once its chunks are all freed.  Never
 * fails.
 */
static void
mcxt_block_emptied(MemoryContext context, McxtBlock *block)
{
	McxtBlock *keeper = context->keeper;
	char *limit = block->end;

	if (block != keeper)
	{
		if (block == context->curblock)
		{
			limit = context->freeptr;
			context->curblock = NULL;
			context->freeptr = context->endptr = NULL;
		}
		mcxt_free_block(context, block, limit);
	}
	if (keeper != NULL && keeper->nlive == 0 && context->curblock == NULL)
		mcxt_revive_keeper(context);
}

/* ---- chunks --------------------------------------------------------------- */

/* A request over MCXT_SMALL_LIMIT: a talloc object of its own.  As mcxt_alloc. */
static void *
mcxt_alloc_large(MemoryContext context, Size size, int flags)
{
	McxtBlock *block;
	McxtChunk *chunk;

	/* MaxTallocChunkSize < MaxAllocSize: one test covers both limits. */
	if (unlikely(size > MaxTallocChunkSize))
		mcxt_size_error(size, flags);
	block = talloc_named_const(context->store, MCXT_LARGE_HDR + size, mcxt_large_name);
	if (unlikely(block == NULL))
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		mcxt_out_of_memory(context, size);
	}
	mcxt_init_block(context, block, MCXT_LARGE_HDR + size);
	block->nlive = 1;
	chunk = (McxtChunk *) (block + 1);
	MCXT_UNPOISON(chunk, MCXT_CHUNK_HDR + size);
	chunk->block = block;
	chunk->size = (uint32_t) size;
	chunk->check = mcxt_check_word(chunk, block, (uint32_t) size, MCXT_STATE_LIVE);
	context->nchunks++;
	context->bytes += size;
	if (flags & MCXT_ALLOC_ZERO)
		memset(mcxt_body(chunk), 0, size);
	return mcxt_body(chunk);
}

/*
 * The allocation every palloc variant ends in.  context must be live.
 * Returns a chunk of size bytes owned by context, or NULL only with
 * MCXT_ALLOC_NO_OOM; raises ERROR on a bad size or out of memory.
 */
static inline void *
mcxt_alloc(MemoryContext context, Size size, int flags)
{
	McxtChunk *chunk;
	McxtBlock *block;
	void *p;
	int cls;

	if (unlikely(size > MCXT_SMALL_LIMIT))
		return mcxt_alloc_large(context, size, flags);
	cls = mcxt_class(size);
	chunk = context->freelist[cls];
	if (likely(chunk != NULL))
	{
		McxtChunk *next = mcxt_get_links(chunk).next;

		context->freelist[cls] = next;
		if (next != NULL)
			mcxt_set_prev(next, NULL);
		block = chunk->block;
	}
	else
	{
		Size foot = MCXT_CHUNK_HDR + mcxt_class_size(cls);

		if (likely((Size) (context->endptr - context->freeptr) >= foot))
		{
			chunk = (McxtChunk *) context->freeptr;
			context->freeptr += foot;
		}
		else
		{
			chunk = mcxt_new_block_chunk(context, cls);
			if (unlikely(chunk == NULL))
			{
				if (flags & MCXT_ALLOC_NO_OOM)
					return NULL;
				mcxt_out_of_memory(context, size);
			}
		}
		block = context->curblock;
		MCXT_UNPOISON(chunk, MCXT_CHUNK_HDR);
		chunk->block = block;
	}
	block->nlive++;
	chunk->size = (uint32_t) size;
	chunk->check = mcxt_check_word(chunk, block, (uint32_t) size, MCXT_STATE_LIVE);
	context->nchunks++;
	context->bytes += size;
	p = mcxt_body(chunk);
	MCXT_UNPOISON(p, size);
	if (flags & MCXT_ALLOC_ZERO)
		memset(p, 0, size);
	return p;
}

/*
 * Free a chunk whose header mcxt_chunk() has checked: a small chunk goes
 * on its class's free list (and its block goes if that was its last live
 * chunk), a large one back to talloc.  Never fails.
 */
static inline void
mcxt_free(McxtChunk *chunk)
{
	McxtBlock *block = chunk->block;
	MemoryContext context = block->context;
	uint32_t size = chunk->size;
	int cls;

	context->nchunks--;
	context->bytes -= size;
	if (unlikely(size > MCXT_SMALL_LIMIT))
	{
		/*
		 * Mark the header freed first: while free() leaves it alone, a
		 * second pfree() then raises "already freed" instead of handing
		 * talloc a freed object (which aborts the process).
		 */
		chunk->check = mcxt_check_word(chunk, block, size, MCXT_STATE_FREE);
		talloc_free(block);
		return;
	}
	cls = mcxt_class(size);
	chunk->check = mcxt_check_word(chunk, block, size, MCXT_STATE_FREE);
	MCXT_POISON(mcxt_body(chunk), mcxt_class_size(cls));
	mcxt_push_free(context, chunk, cls);
	if (unlikely(--block->nlive == 0) &&
		(block != context->curblock || (block != context->keeper && context->keeper != NULL)))
		mcxt_block_emptied(context, block);
}

/* ---- contexts ------------------------------------------------------------- */

/* size rounded up to a multiple of 16. */
static inline Size
mcxt_align16(Size size)
{
	return (size + 15) & ~(Size) 15;
}

/*
 * Create a context object below parent (NULL: a root), or return NULL out
 * of memory.  initBlockSize bytes of chunk space are reserved with it (the
 * keeper); later blocks start at initBlockSize (at least MCXT_MIN_BLOCK)
 * and double up to maxBlockSize (0: MCXT_MAX_BLOCK).
 */
static MemoryContext
mcxt_try_new(const char *name, Size initBlockSize, Size maxBlockSize, MemoryContext parent)
{
	MemoryContext context;
	Size keeper_size = mcxt_align16(initBlockSize > MCXT_MAX_BLOCK ? MCXT_MAX_BLOCK : initBlockSize);
	Size store_size = MCXT_LABEL_SPACE + (keeper_size > 0 ? MCXT_BLOCK_HDR + keeper_size : 0);
	char *store;

	context = talloc_named_const(parent, sizeof(struct MemoryContextData), MCXT_LABEL);
	if (context == NULL)
		return NULL;
	store = talloc_named_const(context, store_size, mcxt_store_name);
	if (store == NULL)
	{
		talloc_free(context);
		return NULL;
	}
	memset(store, 0, MCXT_LABEL_SPACE);
	memcpy(store, MCXT_LABEL, sizeof MCXT_LABEL);
	talloc_set_name_const(context, store);

	memset(context, 0, sizeof *context);
	context->magic = MCXT_MAGIC;
	context->store = store;
	context->name = name;
	context->init_block_size = keeper_size < MCXT_MIN_BLOCK ? MCXT_MIN_BLOCK : keeper_size;
	context->max_block_size = maxBlockSize == 0 || maxBlockSize > MCXT_MAX_BLOCK
		? MCXT_MAX_BLOCK
		: mcxt_align16(maxBlockSize);
	if (context->max_block_size < context->init_block_size)
		context->max_block_size = context->init_block_size;
	context->next_block_size = context->init_block_size;
	if (keeper_size > 0)
	{
		McxtBlock *keeper = (McxtBlock *) (store + MCXT_LABEL_SPACE);

		mcxt_init_block(context, keeper, MCXT_BLOCK_HDR + keeper_size);
		context->keeper = keeper;
		context->curblock = keeper;
		context->freeptr = (char *) (keeper + 1);
		context->endptr = keeper->end;
	}
	talloc_set_destructor(context, mcxt_destructor);
	if (parent != NULL)
	{
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
mcxt_new(const char *name, Size initBlockSize, Size maxBlockSize, MemoryContext parent)
{
	MemoryContext context = mcxt_try_new(name, initBlockSize, maxBlockSize, parent);

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
	ErrorContext = mcxt_try_new("ErrorContext", ERROR_CONTEXT_RESERVE, ERROR_CONTEXT_RESERVE,
								TopMemoryContext);
	return ErrorContext != NULL;
}

/*
 * MemoryContextInit: create TopMemoryContext (made current) and
 * ErrorContext and install the talloc abort function used to diagnose bad
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
	TopMemoryContext = mcxt_try_new("TopMemoryContext", ALLOCSET_DEFAULT_INITSIZE,
									ALLOCSET_DEFAULT_MAXSIZE, NULL);
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
 * means TopMemoryContext, which is created on first use).  A nonzero
 * initBlockSize reserves that much chunk space with the context (the
 * keeper block, kept across resets); further blocks start at
 * initBlockSize (at least 1 kB) and double up to maxBlockSize (at most
 * 8 MB; 0 means 8 MB).  minContextSize is accepted for source
 * compatibility.  The new context belongs to its parent: deleting or
 * resetting the parent deletes it.  Raises ERROR out of memory; never
 * returns NULL.
 */
MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name, Size minContextSize,
							  Size initBlockSize, Size maxBlockSize)
{
	(void) minContextSize;
	if (TopMemoryContext == NULL)
		MemoryContextInit();
	if (parent == NULL)
		parent = TopMemoryContext;
	mcxt_check_context(parent, "AllocSetContextCreate");
	if (name == NULL)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("memory context name must not be NULL"));
	return mcxt_new(name, initBlockSize, maxBlockSize, parent);
}

/*
 * Run one reset callback; an ERROR it raises is printed, forgotten and
 * followed by a WARNING, because a reset or delete is a cleanup path and
 * must not throw.  An error the caller is handling (a reset in PG_CATCH)
 * stays.
 */
static void
mcxt_call_one(MemoryContext context, MemoryContextCallback *cb)
{
	ErrorStackMark mark = elog_stack_mark();

	PG_TRY();
	{
		cb->func(cb->arg);
	}
	PG_CATCH();
	{
		EmitErrorReport();
		elog_stack_restore(mark); /* not an error the caller is handling */
		ereport(WARNING,
				errmsg("reset callback of memory context \"%s\" raised an error", context->name));
	}
	PG_END_TRY();
	elog_stack_restore(mark); /* lift the floor */
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
			/*
			 * talloc refused: a talloc_reference to it exists, or it is
			 * being reset or deleted further up the stack.  Forget it here.
			 */
			mcxt_unlink(child);
			ereport(WARNING,
					errmsg("could not free memory context \"%s\"", child->name),
					errdetail("talloc_free() refused; the context is in use or has talloc references."));
		}
	}
}

/*
 * The talloc destructor of every context, so that talloc_free() of a
 * context (directly, or through its talloc parent) is a full delete:
 * child contexts go first, then the context's reset callbacks run, then
 * talloc frees the caller's objects and, last, the store with the blocks
 * (see the file header).  CurrentMemoryContext pointing at a dying
 * context falls back to its parent.  TopMemoryContext refuses to die.
 */
static int
mcxt_destructor(MemoryContext context)
{
	if (context == TopMemoryContext)
		return -1;
	if (context->resetting)
	{
		/*
		 * Freed (through a talloc ancestor, or by talloc_free() in one of
		 * its own callbacks) while a reset of it is running: the reset
		 * still uses it, so it stays; talloc hands it to the nearest
		 * surviving ancestor.
		 */
		ereport(WARNING, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot free memory context \"%s\" while it is being reset", context->name));
		return -1;
	}
	context->deleting = true;
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
 * MemoryContextReset: delete every child context, run context's reset
 * callbacks, free every talloc object the caller hung below the context
 * (their destructors may still use the context's chunks), then drop every
 * chunk at once: the blocks other than the keeper go back to talloc, so
 * the cost depends on the number of blocks, not of chunks.  The context
 * itself stays, empty, with its keeper.  Resetting TopMemoryContext
 * re-creates ErrorContext.  Never throws except for an invalid context.
 */
void
MemoryContextReset(MemoryContext context)
{
	bool was_resetting;

	mcxt_check_context(context, "MemoryContextReset");
	/* Callbacks and destructors run below may not delete the context (see mcxt_destructor). */
	was_resetting = context->resetting;
	context->resetting = true;
	mcxt_delete_children(context);
	mcxt_call_callbacks(context);
	/* The store is the context's talloc name, which talloc_free_children() keeps. */
	talloc_free_children(context);
	mcxt_drop_blocks(context);
	context->resetting = was_resetting;
	if (context == TopMemoryContext && ErrorContext == NULL && !mcxt_create_error_context())
		ereport(WARNING, errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("could not re-create memory context \"ErrorContext\""),
				errdetail("Out of memory after resetting TopMemoryContext."));
}

/*
 * MemoryContextDelete: reset context and free it.  If it (or a
 * descendant) is CurrentMemoryContext, its parent becomes current.
 * Deleting TopMemoryContext or ErrorContext, or a context whose reset or
 * delete is running (from one of its own or its children's reset
 * callbacks), raises ERROR and changes nothing.
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
	if (context->resetting)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot delete memory context \"%s\" while it is being reset", context->name),
				errhint("A reset callback must not delete the context being reset."));
	if (context->deleting)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("cannot delete memory context \"%s\" while it is being deleted", context->name),
				errhint("A reset callback must not delete the context being deleted."));
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

/*
 * MemoryContextIsEmpty: true when context holds no chunk, talloc object
 * or child context (its store, and blocks left with no live chunk, do not
 * count).
 */
bool
MemoryContextIsEmpty(MemoryContext context)
{
	size_t n = 0;

	mcxt_check_context(context, "MemoryContextIsEmpty");
	if (context->nchunks != 0)
		return false;
	talloc_report_depth_cb(context, 0, 1, mcxt_count_children_cb, &n);
	return n == 1; /* the store */
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
 * GetMemoryChunkContext: the context owning a palloc'd chunk, read from
 * the chunk's header in constant time.  Raises ERROR for NULL, for a
 * pointer palloc did not return, and for a chunk already freed (see
 * palloc(3) for the limits of that check).
 */
MemoryContext
GetMemoryChunkContext(void *pointer)
{
	return mcxt_chunk(pointer, "GetMemoryChunkContext")->block->context;
}

/*
 * GetMemoryChunkSpace: the usable size of a palloc'd chunk (the size it
 * was requested with); ERROR as GetMemoryChunkContext.
 */
Size
GetMemoryChunkSpace(void *pointer)
{
	return mcxt_chunk(pointer, "GetMemoryChunkSpace")->size;
}

/*
 * Allocation entry points.  Contract (all of them): the chunk belongs to
 * the given context (CurrentMemoryContext for the p* names) and lives
 * until pfree(), or until that context is reset or deleted.  Chunks are
 * aligned on 16 bytes.  They raise ERROR ERRCODE_PROGRAM_LIMIT_EXCEEDED
 * for a size over MaxTallocChunkSize (whatever the flags; the detail says
 * whether MCXT_ALLOC_HUGE would have passed PostgreSQL's check), and ERROR
 * ERRCODE_OUT_OF_MEMORY when memory runs out, unless MCXT_ALLOC_NO_OOM was
 * given (then they return NULL).
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
 * for NULL, for a chunk already freed, for a memory context, for a talloc
 * object, and for other pointers whose preceding 16 bytes are not a valid
 * chunk header (see palloc(3) for the limits of that check).
 */
void
pfree(void *pointer)
{
	mcxt_free(mcxt_chunk(pointer, "pfree"));
}

/*
 * repalloc: resize a chunk, in its own context; the data up to the
 * smaller of the two sizes is kept.  Returns the (possibly moved) chunk;
 * the old pointer is invalid afterwards unless it is the same.  A chunk
 * stays in place while the new size is in the same size class.  Raises
 * ERROR as pfree for a bad pointer, as palloc for a bad size or out of
 * memory (the old chunk is then left untouched).
 */
void *
repalloc(void *pointer, Size size)
{
	McxtChunk *chunk = mcxt_chunk(pointer, "repalloc");
	McxtBlock *block = chunk->block;
	MemoryContext context = block->context;
	Size old = chunk->size;
	void *p;

	if (unlikely(size > MaxTallocChunkSize))
		mcxt_size_error(size, 0);
	if (old <= MCXT_SMALL_LIMIT && size <= MCXT_SMALL_LIMIT && mcxt_class(old) == mcxt_class(size))
	{
		MCXT_POISON(pointer, mcxt_class_size(mcxt_class(old)));
		MCXT_UNPOISON(pointer, size);
		chunk->size = (uint32_t) size;
		chunk->check = mcxt_check_word(chunk, block, (uint32_t) size, MCXT_STATE_LIVE);
		context->bytes = context->bytes - old + size;
		return pointer;
	}
	if (old > MCXT_SMALL_LIMIT && size > MCXT_SMALL_LIMIT)
	{
		/*
		 * A large chunk: let talloc resize its object (it keeps its talloc
		 * parent).  The header is marked freed meanwhile, so that if the
		 * object moves, the stale pointer is refused like a freed chunk.
		 */
		McxtBlock *moved;
		uint32_t check = chunk->check;

		chunk->check = mcxt_check_word(chunk, block, (uint32_t) old, MCXT_STATE_FREE);
		moved = _talloc_realloc(NULL, block, MCXT_LARGE_HDR + size, mcxt_large_name);
		if (unlikely(moved == NULL))
		{
			chunk->check = check;
			mcxt_out_of_memory(context, size);
		}
		block = moved;
		block->end = (char *) block + MCXT_LARGE_HDR + size;
		chunk = (McxtChunk *) (block + 1);
		chunk->block = block;
		chunk->size = (uint32_t) size;
		chunk->check = mcxt_check_word(chunk, block, (uint32_t) size, MCXT_STATE_LIVE);
		context->bytes = context->bytes - old + size;
		return mcxt_body(chunk);
	}
	p = mcxt_alloc(context, size, MCXT_ALLOC_NO_OOM);
	if (unlikely(p == NULL))
		mcxt_out_of_memory(context, size);
	memcpy(p, pointer, old < size ? old : size);
	mcxt_free(chunk);
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
 * Statistics.  A context's own figures are its live chunks and the bytes
 * they were requested with (kept as counters), plus every talloc object a
 * caller hung below the context (its subtree minus the context object,
 * the store with its blocks, and the subtrees of child contexts), with
 * their requested sizes.  Block sizes, headers and free space are not
 * counted, so the figures go back to what they were once a caller has
 * freed what it allocated.
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
	own->chunks = context->nchunks + talloc_total_blocks(context) - 1 -
		talloc_total_blocks(context->store);
	own->bytes = context->bytes + talloc_total_size(context) - talloc_get_size(context) -
		talloc_total_size(context->store);
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
