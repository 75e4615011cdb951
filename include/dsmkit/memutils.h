/*
 * dsmkit/memutils.h: creating, resetting and inspecting memory contexts.
 *
 * Contexts form a tree (a talloc hierarchy).  TopMemoryContext is the root
 * and lives as long as the process; ErrorContext keeps 8 kB reserved up
 * front, as in PostgreSQL (error reporting itself builds its reports in
 * static buffers and needs no context memory).  Both exist once MemoryContextInit() has
 * run, which happens on first use of palloc(), AllocSetContextCreate(),
 * ereport() or the supervisor/backend start functions.
 *
 * Deleting a context frees all its chunks and all its child contexts,
 * after running the reset callbacks (LIFO, children before parents).
 * Resetting a context does the same but keeps the context itself.  A
 * reset callback must not delete the context being reset or deleted:
 * MemoryContextDelete() raises ERROR then.
 */
#ifndef DSMKIT_MEMUTILS_H
#define DSMKIT_MEMUTILS_H

#include <stdio.h>
#include <dsmkit/palloc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest ordinary request: 1 GB - 1.  Larger needs MCXT_ALLOC_HUGE. */
#define MaxAllocSize ((Size) 0x3fffffff)
#define AllocSizeIsValid(size) ((Size) (size) <= MaxAllocSize)
#define MaxAllocHugeSize (SIZE_MAX / 2)
/*
 * talloc makes no object of 256 MB or more, and a chunk that large is a
 * talloc object with 48 bytes of dsmkit headers in front, so this is the
 * real ceiling, with or without MCXT_ALLOC_HUGE; larger requests raise the
 * same ERROR as an invalid size.
 */
#define MaxTallocChunkSize ((Size) 0x0fffffff - 48)

DSMKIT_API extern MemoryContext TopMemoryContext;
DSMKIT_API extern MemoryContext ErrorContext;

/*
 * Block sizes, as in PostgreSQL's
 * AllocSetContextCreate(parent, name, ALLOCSET_DEFAULT_SIZES): minimum,
 * initial and maximum block size.  dsmkit reserves the initial size with
 * the context (the keeper block, kept across resets; none for 0), starts
 * further blocks at that size and doubles them up to the maximum.  The
 * minimum is accepted for source compatibility.
 */
#define ALLOCSET_DEFAULT_MINSIZE 0
#define ALLOCSET_DEFAULT_INITSIZE (8 * 1024)
#define ALLOCSET_DEFAULT_MAXSIZE (8 * 1024 * 1024)
#define ALLOCSET_DEFAULT_SIZES \
	ALLOCSET_DEFAULT_MINSIZE, ALLOCSET_DEFAULT_INITSIZE, ALLOCSET_DEFAULT_MAXSIZE
#define ALLOCSET_SMALL_MINSIZE 0
#define ALLOCSET_SMALL_INITSIZE (1 * 1024)
#define ALLOCSET_SMALL_MAXSIZE (8 * 1024)
#define ALLOCSET_SMALL_SIZES \
	ALLOCSET_SMALL_MINSIZE, ALLOCSET_SMALL_INITSIZE, ALLOCSET_SMALL_MAXSIZE

/* Set up TopMemoryContext and ErrorContext; idempotent; never fails except out of memory (FATAL). */
DSMKIT_API void MemoryContextInit(void);

/*
 * Create a context below parent (NULL means TopMemoryContext, which is
 * what AllocSetContextCreate(TopMemoryContext, ...) passes before the
 * first use has created it).  name must be a string that lives as long as
 * the context (a literal).  A nonzero initBlockSize reserves that many
 * bytes of chunk space up front (the keeper block); further blocks start
 * at initBlockSize (at least 1 kB) and double up to maxBlockSize (at most
 * 8 MB; 0 means 8 MB); minContextSize is ignored.  Raises ERROR out of
 * memory; never returns NULL.
 */
DSMKIT_API MemoryContext AllocSetContextCreateInternal(MemoryContext parent, const char *name,
													   Size minContextSize, Size initBlockSize,
													   Size maxBlockSize);
#define AllocSetContextCreate AllocSetContextCreateInternal

DSMKIT_API void MemoryContextReset(MemoryContext context);
DSMKIT_API void MemoryContextDelete(MemoryContext context);
DSMKIT_API void MemoryContextSetParent(MemoryContext context, MemoryContext new_parent);
DSMKIT_API const char *MemoryContextGetName(MemoryContext context);
DSMKIT_API MemoryContext MemoryContextGetParent(MemoryContext context);
DSMKIT_API bool MemoryContextIsEmpty(MemoryContext context);

/*
 * The context a palloc'd chunk belongs to (read from the chunk's header);
 * ERROR for NULL, a freed chunk or a pointer palloc did not return.
 */
DSMKIT_API MemoryContext GetMemoryChunkContext(void *pointer);
/* The usable size of a palloc'd chunk: the size it was requested with. */
DSMKIT_API Size GetMemoryChunkSpace(void *pointer);

/*
 * Bytes requested by the chunks of context (and of its descendants when
 * recurse), plus the sizes of talloc objects callers hung there; without
 * headers, block sizes or free space.
 */
DSMKIT_API Size MemoryContextMemAllocated(MemoryContext context, bool recurse);

/*
 * Print the tree below context to stderr: one line a context, indented by
 * depth, with its name, chunk count and bytes, then a grand total.
 * MemoryContextStatsToFile() writes the same to a stdio stream.
 */
DSMKIT_API void MemoryContextStats(MemoryContext context);
DSMKIT_API void MemoryContextStatsToFile(MemoryContext context, FILE *out);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_MEMUTILS_H */
