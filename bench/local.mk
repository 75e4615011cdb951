# bench/local.mk: benchmarks, built and run by "make bench", never by "make check".
EXTRA_PROGRAMS = 
.PHONY: bench
bench:
	@echo "no benchmarks yet"
