# tests/local.mk: the check suites, one binary a module, in automake's parallel harness.
if ENABLE_TESTS
check_LTLIBRARIES = tests/libtestutil.la
tests_libtestutil_la_SOURCES = tests/testutil.c tests/testutil.h
tests_libtestutil_la_CFLAGS = $(AM_CFLAGS) $(TALLOC_CFLAGS) $(CHECK_CFLAGS)
tests_libtestutil_la_LIBADD = libdsmkit.la $(TALLOC_LIBS) $(CHECK_LIBS)

TEST_CFLAGS = $(AM_CFLAGS) $(TALLOC_CFLAGS) $(CHECK_CFLAGS)
TEST_LDADD = tests/libtestutil.la libdsmkit.la $(TALLOC_LIBS) $(CHECK_LIBS)

SUITES = \
	tests/check_elog \
	tests/check_mcxt \
	tests/check_ipc \
	tests/check_resowner \
	tests/check_dsm_impl \
	tests/check_dsm \
	tests/check_supervisor \
	tests/check_dsmctl
check_PROGRAMS += $(SUITES)
TESTS += $(SUITES)

tests_check_elog_SOURCES = tests/check_elog.c
tests_check_elog_CFLAGS = $(TEST_CFLAGS)
tests_check_elog_LDADD = $(TEST_LDADD)
tests_check_mcxt_SOURCES = tests/check_mcxt.c
tests_check_mcxt_CFLAGS = $(TEST_CFLAGS)
tests_check_mcxt_LDADD = $(TEST_LDADD)
tests_check_ipc_SOURCES = tests/check_ipc.c
tests_check_ipc_CFLAGS = $(TEST_CFLAGS)
tests_check_ipc_LDADD = $(TEST_LDADD)
tests_check_resowner_SOURCES = tests/check_resowner.c
tests_check_resowner_CFLAGS = $(TEST_CFLAGS)
tests_check_resowner_LDADD = $(TEST_LDADD)
tests_check_dsm_impl_SOURCES = tests/check_dsm_impl.c
tests_check_dsm_impl_CFLAGS = $(TEST_CFLAGS)
tests_check_dsm_impl_LDADD = $(TEST_LDADD)
tests_check_dsm_SOURCES = tests/check_dsm.c
tests_check_dsm_CFLAGS = $(TEST_CFLAGS)
tests_check_dsm_LDADD = $(TEST_LDADD)
tests_check_supervisor_SOURCES = tests/check_supervisor.c
tests_check_supervisor_CFLAGS = $(TEST_CFLAGS)
tests_check_supervisor_LDADD = $(TEST_LDADD)
tests_check_dsmctl_SOURCES = tests/check_dsmctl.c
tests_check_dsmctl_CFLAGS = $(TEST_CFLAGS)
tests_check_dsmctl_LDADD = $(TEST_LDADD)

# A program exec'd by check_supervisor to test backend_join().
check_PROGRAMS += tests/join_helper
tests_join_helper_SOURCES = tests/join_helper.c
tests_join_helper_CFLAGS = $(TEST_CFLAGS)
tests_join_helper_LDADD = libdsmkit.la $(TALLOC_LIBS)

# Script tests: exported symbols, self-contained headers, man page lint.
TESTS += tests/check-exports.sh tests/check-headers.sh tests/check-man.sh tests/check-demo.sh
EXTRA_DIST += tests/check-exports.sh tests/check-headers.sh tests/check-man.sh tests/check-demo.sh tests/exports.txt
AM_TESTS_ENVIRONMENT = \
	top_srcdir='$(top_srcdir)'; export top_srcdir; \
	top_builddir='$(top_builddir)'; export top_builddir; \
	CC='$(CC)'; export CC; \
	NM='$(NM)'; export NM; \
	GROFF='$(GROFF)'; export GROFF; \
	TALLOC_CFLAGS='$(TALLOC_CFLAGS)'; export TALLOC_CFLAGS; \
	DSMKIT_TEST_PREFIX='dsmkit-test'; export DSMKIT_TEST_PREFIX;
endif

EXTRA_DIST += tests/installcheck.sh tests/installcheck/prog.c tests/valgrind.supp

# The suites under valgrind (the README's test command runs it).  Forked test
# children are followed; any memory error or definite leak fails the test.
.PHONY: check-valgrind
check-valgrind: $(check_PROGRAMS)
	@for t in $(SUITES); do \
		echo "valgrind: $$t"; \
		CK_TIMEOUT_MULTIPLIER=20 DSMKIT_UNDER_VALGRIND=1 $(LIBTOOL) --mode=execute \
			valgrind --quiet --error-exitcode=99 --suppressions=$(top_srcdir)/tests/valgrind.supp --leak-check=full --errors-for-leak-kinds=definite \
			--show-leak-kinds=definite ./$$t > $$t.valgrind.log 2>&1 \
			|| { tail -n 80 $$t.valgrind.log; exit 1; }; \
		grep -E "^[0-9]+%: Checks" $$t.valgrind.log || true; \
	done
