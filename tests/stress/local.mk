# tests/stress/local.mk: the kill-everything stress program (issue 5).
# Included from the top-level Makefile.am; paths are relative to the top.
#
#   make check                 runs tests/stress/run-short.sh (about 20 s, all
#                              three implementations)
#   make stress-long           the long run: STRESS_BACKENDS backends for
#                              STRESS_SECONDS seconds, STRESS_KILL_RATE backend
#                              kills and STRESS_SUPERVISOR_KILL_RATE supervisor
#                              kills per second, with implementation STRESS_IMPL;
#                              it fails below STRESS_MIN_KILLS backend kills or
#                              STRESS_MIN_SUPERVISOR_KILLS supervisor kills.
#   e.g. make stress-long STRESS_BACKENDS=8 STRESS_SECONDS=600 STRESS_KILL_RATE=5
EXTRA_DIST += tests/stress/run-short.sh

STRESS_BACKENDS = 8
STRESS_SECONDS = 600
STRESS_KILL_RATE = 5
STRESS_SUPERVISOR_KILL_RATE = 0.2
STRESS_IMPL = posix
STRESS_MIN_KILLS = 1000
STRESS_MIN_SUPERVISOR_KILLS = 50
STRESS_SEED =

.PHONY: stress-long

if ENABLE_TESTS
check_PROGRAMS += tests/stress/dsmkit-stress
tests_stress_dsmkit_stress_SOURCES = tests/stress/stress.c
tests_stress_dsmkit_stress_CFLAGS = $(AM_CFLAGS) $(TALLOC_CFLAGS)
tests_stress_dsmkit_stress_LDADD = libdsmkit.la $(TALLOC_LIBS)
TESTS += tests/stress/run-short.sh

stress-long: tests/stress/dsmkit-stress$(EXEEXT)
	@seed="$(STRESS_SEED)"; seedopt=; test -z "$$seed" || seedopt="--seed $$seed"; \
	tmp=`mktemp -d "$${TMPDIR:-/tmp}/dsmkit-stress.XXXXXX"` || exit 1; \
	mkdir "$$tmp/cluster" || exit 1; \
	./tests/stress/dsmkit-stress$(EXEEXT) --dir "$$tmp/cluster" --impl $(STRESS_IMPL) \
		--backends $(STRESS_BACKENDS) --seconds $(STRESS_SECONDS) \
		--kill-rate $(STRESS_KILL_RATE) --supervisor-kill-rate $(STRESS_SUPERVISOR_KILL_RATE) \
		--min-backend-kills $(STRESS_MIN_KILLS) \
		--min-supervisor-kills $(STRESS_MIN_SUPERVISOR_KILLS) \
		$$seedopt --log "$$tmp/stress.log"; \
	status=$$?; \
	if test $$status -ne 0; then \
		echo "stress-long failed; dsmkit's log: $$tmp/stress.log"; \
	else \
		rm -rf "$$tmp"; \
	fi; \
	exit $$status
else
stress-long:
	@echo "stress-long needs the tests: configure without --disable-tests" >&2; exit 1
endif
