/*
 * bench_mcxt.c: the cost of palloc/pfree and MemoryContextReset (issue 7, W5).
 *
 * Workloads, each against a floor measured in the same run and the same
 * repetition (median of BENCH_REPS repetitions):
 *   - palloc/pfree of 64 bytes, one chunk live at a time, in a context made
 *     with ALLOCSET_DEFAULT_SIZES; floor: malloc/free of 64 bytes.
 *   - the same in a context made with initBlockSize 0 (no keeper block).
 *   - the same with 100 chunks live (allocate 100, free them in order).
 *   - talloc_size/talloc_free of 64 bytes under a plain talloc context;
 *     floor: malloc/free.
 *   - MemoryContextReset of a context holding 1M 16-byte chunks, per
 *     chunk; floor: pfree of 1M such chunks one by one, per chunk.
 *
 * Usage: bench_mcxt [results.tsv]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <talloc.h>

#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>

#include "benchutil.h"

#define PAIRS 2000000
#define BATCH 100
#define BATCHES 20000
#define RESET_CHUNKS 1000000

/* Keeps the compiler from eliding an allocation/free pair. */
static void *volatile sink;

static double
time_malloc_pairs(void)
{
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < PAIRS; i++)
	{
		char *p = malloc(64);

		p[0] = (char) i;
		sink = p;
		free(p);
	}
	return (double) (bench_now_ns() - t0) / PAIRS;
}

static double
time_palloc_pairs(MemoryContext ctx)
{
	MemoryContext old = MemoryContextSwitchTo(ctx);
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < PAIRS; i++)
	{
		char *p = palloc(64);

		p[0] = (char) i;
		sink = p;
		pfree(p);
	}
	t0 = bench_now_ns() - t0;
	MemoryContextSwitchTo(old);
	return (double) t0 / PAIRS;
}

static double
time_talloc_pairs(void *ctx)
{
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < PAIRS; i++)
	{
		char *p = talloc_size(ctx, 64);

		p[0] = (char) i;
		sink = p;
		talloc_free(p);
	}
	return (double) (bench_now_ns() - t0) / PAIRS;
}

static double
time_malloc_batches(void)
{
	void *live[BATCH];
	uint64_t t0 = bench_now_ns();

	for (int b = 0; b < BATCHES; b++)
	{
		for (int i = 0; i < BATCH; i++)
		{
			live[i] = malloc(64);
			((char *) live[i])[0] = (char) i;
		}
		sink = live[b % BATCH];
		for (int i = 0; i < BATCH; i++)
			free(live[i]);
	}
	return (double) (bench_now_ns() - t0) / ((double) BATCHES * BATCH);
}

static double
time_palloc_batches(MemoryContext ctx)
{
	MemoryContext old = MemoryContextSwitchTo(ctx);
	void *live[BATCH];
	uint64_t t0 = bench_now_ns();

	for (int b = 0; b < BATCHES; b++)
	{
		for (int i = 0; i < BATCH; i++)
		{
			live[i] = palloc(64);
			((char *) live[i])[0] = (char) i;
		}
		sink = live[b % BATCH];
		for (int i = 0; i < BATCH; i++)
			pfree(live[i]);
	}
	t0 = bench_now_ns() - t0;
	MemoryContextSwitchTo(old);
	return (double) t0 / ((double) BATCHES * BATCH);
}

/* Fill ctx with RESET_CHUNKS chunks; returns them in a malloc'd array when keep. */
static void **
fill(MemoryContext ctx, bool keep)
{
	void **chunks = keep ? malloc(sizeof(void *) * RESET_CHUNKS) : NULL;

	for (int i = 0; i < RESET_CHUNKS; i++)
	{
		void *p = MemoryContextAlloc(ctx, 16);

		if (keep)
			chunks[i] = p;
	}
	return chunks;
}

static double
time_reset(MemoryContext ctx)
{
	uint64_t t0;

	(void) fill(ctx, false);
	t0 = bench_now_ns();
	MemoryContextReset(ctx);
	return (double) (bench_now_ns() - t0) / RESET_CHUNKS;
}

static double
time_pfree_all(MemoryContext ctx)
{
	void **chunks = fill(ctx, true);
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < RESET_CHUNKS; i++)
		pfree(chunks[i]);
	t0 = bench_now_ns() - t0;
	free(chunks);
	return (double) t0 / RESET_CHUNKS;
}

int
main(int argc, char **argv)
{
	const char *results = argc > 1 ? argv[1] : NULL;
	double pal[BENCH_REPS], mal[BENCH_REPS], tal[BENCH_REPS], mal2[BENCH_REPS];
	double pb[BENCH_REPS], mb[BENCH_REPS], rs[BENCH_REPS], pf[BENCH_REPS];
	double np[BENCH_REPS], mal3[BENCH_REPS];
	MemoryContext ctx, nopool;
	void *tctx;

	MemoryContextInit();
	ctx = AllocSetContextCreate(TopMemoryContext, "bench", ALLOCSET_DEFAULT_SIZES);
	nopool = AllocSetContextCreate(TopMemoryContext, "bench no keeper", 0, 0, 0);
	tctx = talloc_new(NULL);

	/* Warm up the allocators once. */
	(void) time_malloc_pairs();
	(void) time_palloc_pairs(ctx);
	(void) time_talloc_pairs(tctx);

	for (int r = 0; r < BENCH_REPS; r++)
	{
		mal[r] = time_malloc_pairs();
		pal[r] = time_palloc_pairs(ctx);
		mal2[r] = time_malloc_pairs();
		tal[r] = time_talloc_pairs(tctx);
		mal3[r] = time_malloc_pairs();
		np[r] = time_palloc_pairs(nopool);
		mb[r] = time_malloc_batches();
		pb[r] = time_palloc_batches(ctx);
		rs[r] = time_reset(ctx);
		pf[r] = time_pfree_all(ctx);
	}

	bench_report(results, "W5 palloc/pfree 64B", bench_median(pal, BENCH_REPS),
				 bench_median(mal, BENCH_REPS));
	bench_report(results, "W5 palloc/pfree 64B (no keeper)", bench_median(np, BENCH_REPS),
				 bench_median(mal3, BENCH_REPS));
	bench_report(results, "W5 palloc/pfree 64B (100 live)", bench_median(pb, BENCH_REPS),
				 bench_median(mb, BENCH_REPS));
	bench_report(results, "W5 talloc/talloc_free 64B", bench_median(tal, BENCH_REPS),
				 bench_median(mal2, BENCH_REPS));
	bench_report(results, "W5 MemoryContextReset 1M chunks (per chunk)", bench_median(rs, BENCH_REPS),
				 bench_median(pf, BENCH_REPS));

	MemoryContextDelete(nopool);
	MemoryContextDelete(ctx);
	talloc_free(tctx);
	return 0;
}
