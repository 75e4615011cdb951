# bench/local.mk: benchmarks, built and run by "make bench", never by "make check".
# Each program prints, per workload, the median ns/op of >= 5 repetitions, the
# floor measured in the same run (raw system calls or malloc), and the ratio,
# and appends rows to bench/results.tsv.
DSMKIT_BENCHES = bench/bench_mcxt bench/bench_resowner bench/bench_dsm
EXTRA_PROGRAMS = $(DSMKIT_BENCHES)
CLEANFILES += $(DSMKIT_BENCHES) bench/results.tsv

BENCH_CFLAGS = $(AM_CFLAGS) $(TALLOC_CFLAGS) -O2
BENCH_LDADD = libdsmkit.la $(TALLOC_LIBS)
bench_bench_mcxt_SOURCES = bench/bench_mcxt.c bench/benchutil.h
bench_bench_mcxt_CFLAGS = $(BENCH_CFLAGS)
bench_bench_mcxt_LDADD = $(BENCH_LDADD)
bench_bench_resowner_SOURCES = bench/bench_resowner.c bench/benchutil.h
bench_bench_resowner_CFLAGS = $(BENCH_CFLAGS)
bench_bench_resowner_LDADD = $(BENCH_LDADD)
bench_bench_dsm_SOURCES = bench/bench_dsm.c bench/benchutil.h
bench_bench_dsm_CFLAGS = $(BENCH_CFLAGS)
bench_bench_dsm_LDADD = $(BENCH_LDADD)

.PHONY: bench
bench: $(DSMKIT_BENCHES)
	@mkdir -p bench; rm -f bench/results.tsv
	@printf 'workload\tns_per_op\tfloor_ns_per_op\tratio\n' > bench/results.tsv
	@for b in $(DSMKIT_BENCHES); do ./$$b bench/results.tsv || exit 1; done
	@echo "results in bench/results.tsv"
