/*
 * bench_resowner.c: speed of resource owners.
 *
 * W6  Remember+Forget with 1M held: one owner already holds a million
 *     resources (so its hash table is in use); each operation is
 *     Enlarge + Remember + Forget of a fresh resource, the pattern of
 *     code that acquires and releases something while a large scope is
 *     open.  The floor is a plain array store and load of the same
 *     (value, kind) pair: the least any bookkeeping can cost.
 * W6h Forget+Remember in the hash with 1M held: forget a resource that
 *     lives in the hash table (random order), then remember it again,
 *     which from time to time makes Enlarge move the array into the hash.
 *     Same floor.
 * W4  empty scope: ResourceOwnerCreate(NULL), ResourceOwnerReleaseAll
 *     (commit), ResourceOwnerDelete.  The floor is talloc_size +
 *     talloc_free of an object of the owner's size under TopMemoryContext.
 *
 * Each workload is timed BENCH_REPS times; the median is reported.
 * Usage: bench_resowner [results.tsv]
 */
#include <stdio.h>
#include <stdlib.h>

#include <talloc.h>

#include <dsmkit/elog.h>
#include <dsmkit/memutils.h>
#include <dsmkit/resowner.h>

#include "benchutil.h"

#define HELD 1000000
#define PAIRS 20000000
#define SCOPES 5000000

static size_t released;

static void
release_nothing(Datum d)
{
	(void) d;
	released++;
}

static const ResourceOwnerDesc bench_kind = {"bench", RESOURCE_RELEASE_AFTER_LOCKS, 500,
											 release_nothing, NULL};

/* Keeps the compiler from discarding the floor loops. */
static volatile uintptr_t sink;

static double
time_pairs(ResourceOwner owner)
{
	uint64_t t0 = bench_now_ns();

	for (uintptr_t i = 0; i < PAIRS; i++)
	{
		Datum v = (Datum) (0x100000000ull + i * 16);

		ResourceOwnerEnlarge(owner);
		ResourceOwnerRemember(owner, v, &bench_kind);
		ResourceOwnerForget(owner, v, &bench_kind);
	}
	return (double) (bench_now_ns() - t0) / PAIRS;
}

static double
time_hash_pairs(ResourceOwner owner, const Datum *held, size_t n)
{
	uint64_t t0 = bench_now_ns();

	for (size_t i = 0; i < n; i++)
	{
		ResourceOwnerForget(owner, held[i], &bench_kind);
		ResourceOwnerEnlarge(owner);
		ResourceOwnerRemember(owner, held[i], &bench_kind);
	}
	return (double) (bench_now_ns() - t0) / n;
}

/* The floor of W6: store a (value, kind) pair in an array slot and load it back. */
static double
time_pairs_floor(void)
{
	static struct
	{
		Datum v;
		const ResourceOwnerDesc *k;
	} slots[16];
	uint64_t t0 = bench_now_ns();
	uintptr_t acc = 0;

	for (uintptr_t i = 0; i < PAIRS; i++)
	{
		Datum v = (Datum) (0x100000000ull + i * 16);

		slots[i & 15].v = v;
		slots[i & 15].k = &bench_kind;
		__asm__ volatile("" ::: "memory");
		acc += slots[i & 15].v ^ (uintptr_t) slots[i & 15].k;
	}
	sink = acc;
	return (double) (bench_now_ns() - t0) / PAIRS;
}

static double
time_scopes(void)
{
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < SCOPES; i++)
	{
		ResourceOwner o = ResourceOwnerCreate(NULL, "request");

		ResourceOwnerReleaseAll(o, true);
		ResourceOwnerDelete(o);
	}
	return (double) (bench_now_ns() - t0) / SCOPES;
}

static double
time_scopes_floor(size_t size)
{
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < SCOPES; i++)
	{
		void *p = talloc_size(TopMemoryContext, size);

		__asm__ volatile("" : : "r"(p) : "memory");
		talloc_free(p);
	}
	return (double) (bench_now_ns() - t0) / SCOPES;
}

/* A deterministic shuffle (xorshift64). */
static void
shuffle(Datum *v, size_t n)
{
	uint64_t x = 88172645463325252ull;

	for (size_t i = n - 1; i > 0; i--)
	{
		size_t j;
		Datum t;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		j = x % (i + 1);
		t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

int
main(int argc, char **argv)
{
	const char *results = argc > 1 ? argv[1] : NULL;
	double ns[BENCH_REPS], floor_ns[BENCH_REPS];
	double med, fmed;
	ResourceOwner big, probe;
	Datum *held;
	size_t owner_size;

	MemoryContextInit();

	/* W6: one owner with a million resources. */
	held = malloc(HELD * sizeof(Datum));
	if (held == NULL)
		return 1;
	big = ResourceOwnerCreate(NULL, "big");
	for (size_t i = 0; i < HELD; i++)
	{
		held[i] = (Datum) (i + 1) * 8;
		ResourceOwnerEnlarge(big);
		ResourceOwnerRemember(big, held[i], &bench_kind);
	}
	for (int r = 0; r < BENCH_REPS; r++)
	{
		ns[r] = time_pairs(big);
		floor_ns[r] = time_pairs_floor();
	}
	med = bench_median(ns, BENCH_REPS);
	fmed = bench_median(floor_ns, BENCH_REPS);
	bench_report(results, "W6 Remember+Forget with 1M held", med, fmed);
	printf("    W6: %.1f M remember+forget pairs/s (target >= 20 M/s)\n", 1e3 / med);

	shuffle(held, HELD);
	for (int r = 0; r < BENCH_REPS; r++)
	{
		ns[r] = time_hash_pairs(big, held, HELD);
		floor_ns[r] = time_pairs_floor();
	}
	med = bench_median(ns, BENCH_REPS);
	fmed = bench_median(floor_ns, BENCH_REPS);
	bench_report(results, "W6h Forget+Remember in hash with 1M held", med, fmed);
	printf("    W6h: %.1f M forget+remember pairs/s, random order in the hash table\n", 1e3 / med);

	released = 0;
	ResourceOwnerReleaseAll(big, false);
	ResourceOwnerDelete(big);
	if (released != HELD)
	{
		fprintf(stderr, "bench_resowner: released %zu of %d resources\n", released, HELD);
		return 1;
	}
	free(held);

	/* W4: the empty request scope. */
	probe = ResourceOwnerCreate(NULL, "probe");
	owner_size = talloc_get_size(probe);
	ResourceOwnerDelete(probe);
	for (int r = 0; r < BENCH_REPS; r++)
	{
		ns[r] = time_scopes();
		floor_ns[r] = time_scopes_floor(owner_size);
	}
	med = bench_median(ns, BENCH_REPS);
	fmed = bench_median(floor_ns, BENCH_REPS);
	bench_report(results, "W4 empty scope (create, release all, delete)", med, fmed);
	printf("    W4: owner is %zu bytes; target <= 40 ns per scope\n", owner_size);
	return 0;
}
