/*
 * benchutil.h: timing helpers shared by the benchmarks (header-only).
 *
 * bench_report() prints one workload: median ns/op of the repetitions, the
 * floor's median ns/op measured in the same run, and their ratio; and
 * appends the same as a tab-separated row to the results file.
 */
#ifndef DSMKIT_BENCHUTIL_H
#define DSMKIT_BENCHUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_REPS 7

static inline uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int
bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *) a, y = *(const double *) b;

	return (x > y) - (x < y);
}

/* The median of n values (sorts them in place). */
static inline double
bench_median(double *v, int n)
{
	qsort(v, n, sizeof v[0], bench_cmp_double);
	return (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Print a row and append it to results (a path, or NULL for stdout only). */
static inline void
bench_report(const char *results, const char *workload, double ns, double floor_ns)
{
	double ratio = floor_ns > 0 ? ns / floor_ns : 0;

	printf("%-44s %12.1f ns/op  floor %12.1f ns/op  ratio %6.3f\n", workload, ns, floor_ns, ratio);
	if (results != NULL)
	{
		FILE *f = fopen(results, "a");

		if (f != NULL)
		{
			fprintf(f, "%s\t%.1f\t%.1f\t%.3f\n", workload, ns, floor_ns, ratio);
			fclose(f);
		}
	}
}

#endif /* DSMKIT_BENCHUTIL_H */
