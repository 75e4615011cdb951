/*
 * check_ipc.c: tests of the exit-hook chains and proc_exit().
 *
 * Exit hooks act in the process that registered them, so every test
 * registers its hooks in a child it forked itself (tu_run_child()); the hooks
 * report what they see through a pipe as 32-bit values, and the test
 * process asserts on that stream, on the child's stderr and on its exit
 * status.  Children never call ck_assert.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dsmkit/elog.h>
#include <dsmkit/ipc.h>

#include "testutil.h"

static void
assert_values(const tu_child_result *r, const uint32_t *expect, int n)
{
	ck_assert_int_eq(r->nvalues, n);
	for (int i = 0; i < n; i++)
		ck_assert_msg(r->values[i] == expect[i], "value %d: got %u, expected %u", i,
					  (unsigned) r->values[i], (unsigned) expect[i]);
}

static void
assert_exit_code(const tu_child_result *r, int code)
{
	ck_assert_msg(WIFEXITED(r->status), "child did not exit normally (status 0x%x); stderr:\n%s",
				  r->status, r->err);
	ck_assert_int_eq(WEXITSTATUS(r->status), code);
}

/* Hook: reports arg * 10 + code, and 1 if proc_exit_inprogress (+ 2 if shmem_exit_inprogress) in the hundreds. */
static void
hook(int code, Datum arg)
{
	uint32_t flags = (proc_exit_inprogress ? 1 : 0) + (shmem_exit_inprogress ? 2 : 0);

	tu_report(flags * 1000 + DatumGetUInt32(arg) * 10 + (uint32_t) code);
}

/* Hook that raises ERROR (after reporting 9000 + arg). */
static void
erroring_hook(int code, Datum arg)
{
	tu_report(9000 + DatumGetUInt32(arg));
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR), errmsg("hook %u failed", DatumGetUInt32(arg)));
}

/* Hook that raises FATAL (after reporting 8000 + arg). */
static void
fatal_hook(int code, Datum arg)
{
	tu_report(8000 + DatumGetUInt32(arg));
	ereport(FATAL, errmsg("hook %u is fatal", DatumGetUInt32(arg)));
}

/* ---- ordering ----------------------------------------------------------- */

static void
child_ordering(void)
{
	tu_report(proc_exit_inprogress ? 1 : 0);
	/* Interleaved registrations: the chains still run in chain order. */
	on_proc_exit(hook, 1);
	on_shmem_exit(hook, 2);
	before_shmem_exit(hook, 3);
	on_proc_exit(hook, 4);
	on_shmem_exit(hook, 5);
	before_shmem_exit(hook, 6);
	proc_exit(3);
}

START_TEST(test_ordering)
{
	static tu_child_result r;
	/* flags: 3 = in proc_exit and shmem_exit, 1 = in proc_exit only. */
	static const uint32_t expect[] = {0, 3063, 3033, 3053, 3023, 1043, 1013};

	TU_TEST_BEGIN();
	tu_run_child(child_ordering, &r);
	assert_exit_code(&r, 3);
	assert_values(&r, expect, 7);
	ck_assert_str_eq(r.err, "");
	TU_TEST_END();
}
END_TEST

static void
child_shmem_exit(void)
{
	on_proc_exit(hook, 1);
	on_shmem_exit(hook, 2);
	before_shmem_exit(hook, 3);
	shmem_exit(5);
	tu_report(shmem_exit_inprogress ? 0xbad : 77);
	/* The process lives on; a new shmem hook joins the on_proc_exit one that is left. */
	on_shmem_exit(hook, 4);
	proc_exit(6);
}

START_TEST(test_shmem_exit)
{
	static tu_child_result r;
	static const uint32_t expect[] = {2035, 2025, 77, 3046, 1016};

	TU_TEST_BEGIN();
	tu_run_child(child_shmem_exit, &r);
	assert_exit_code(&r, 6);
	assert_values(&r, expect, 5);
	TU_TEST_END();
}
END_TEST

/* ---- errors in hooks ---------------------------------------------------- */

static void
child_erroring_hooks(void)
{
	on_proc_exit(hook, 1);
	on_proc_exit(erroring_hook, 2);
	on_proc_exit(hook, 3);
	on_shmem_exit(erroring_hook, 4);
	before_shmem_exit(hook, 5);
	proc_exit(0);
}

START_TEST(test_hook_error_does_not_stop_the_rest)
{
	static tu_child_result r;
	/* Each erroring hook runs once; all the others still run. */
	static const uint32_t expect[] = {3050, 9004, 1030, 9002, 1010};

	TU_TEST_BEGIN();
	tu_run_child(child_erroring_hooks, &r);
	assert_exit_code(&r, 0);
	assert_values(&r, expect, 5);
	ck_assert_ptr_nonnull(strstr(r.err, "ERROR:  hook 4 failed\n"));
	ck_assert_ptr_nonnull(strstr(r.err, "ERROR:  hook 2 failed\n"));
	ck_assert(strstr(r.err, "hook 4 failed") < strstr(r.err, "hook 2 failed"));
	TU_TEST_END();
}
END_TEST

static void
child_fatal_hook(void)
{
	on_proc_exit(hook, 1);
	on_proc_exit(fatal_hook, 2);
	on_proc_exit(hook, 3);
	proc_exit(0);
}

START_TEST(test_hook_fatal)
{
	static tu_child_result r;
	/* FATAL in a hook: the remaining hooks run, the exit code becomes 1. */
	static const uint32_t expect[] = {1030, 8002, 1011};

	TU_TEST_BEGIN();
	tu_run_child(child_fatal_hook, &r);
	assert_exit_code(&r, 1);
	assert_values(&r, expect, 3);
	ck_assert_str_eq(r.err, "FATAL:  hook 2 is fatal\n");
	TU_TEST_END();
}
END_TEST

/* ---- cancel, limit ------------------------------------------------------ */

static void
child_cancel(void)
{
	before_shmem_exit(hook, 1);
	before_shmem_exit(hook, 2);
	before_shmem_exit(hook, 3);
	cancel_before_shmem_exit(hook, 3);
	/* Only the latest may be cancelled: (hook, 1) is not; (hook, 9) does not exist. */
	PG_TRY();
	{
		cancel_before_shmem_exit(hook, 1);
		tu_report(0xbad);
	}
	PG_CATCH();
	{
		tu_report(geterrcode() == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE ? 50 : 0xbad);
		FlushErrorState();
	}
	PG_END_TRY();
	PG_TRY();
	{
		cancel_before_shmem_exit(erroring_hook, 2);
		tu_report(0xbad);
	}
	PG_CATCH();
	{
		tu_report(51);
		FlushErrorState();
	}
	PG_END_TRY();
	cancel_before_shmem_exit(hook, 2);
	before_shmem_exit(hook, 4);
	exit(0);					/* the backstop runs what is left */
}

START_TEST(test_cancel_before_shmem_exit)
{
	static tu_child_result r;
	static const uint32_t expect[] = {50, 51, 3040, 3010};

	TU_TEST_BEGIN();
	tu_run_child(child_cancel, &r);
	assert_exit_code(&r, 0);
	assert_values(&r, expect, 4);
	TU_TEST_END();
}
END_TEST

static void
child_limit(void)
{
	volatile int code = 0;

	for (uint32_t i = 0; i < MAX_ON_EXITS; i++)
		on_proc_exit(hook, 100 + i);
	PG_TRY();
	{
		on_proc_exit(hook, 999);
	}
	PG_CATCH();
	{
		code = geterrcode();
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	tu_report(code == ERRCODE_PROGRAM_LIMIT_EXCEEDED ? 1 : 0xbad);
	/* The other chains have their own room. */
	for (uint32_t i = 0; i < MAX_ON_EXITS; i++)
		before_shmem_exit(hook, 200 + i);
	proc_exit(0);
}

START_TEST(test_limit)
{
	static tu_child_result r;
	int n = 0;

	TU_TEST_BEGIN();
	tu_run_child(child_limit, &r);
	assert_exit_code(&r, 0);
	ck_assert_int_eq(r.nvalues, 1 + 2 * MAX_ON_EXITS);
	ck_assert_uint_eq(r.values[n++], 1);
	for (int i = MAX_ON_EXITS - 1; i >= 0; i--)
		ck_assert_uint_eq(r.values[n++], 3000 + (200 + i) * 10);
	/* Every accepted hook ran once; the refused one did not. */
	for (int i = MAX_ON_EXITS - 1; i >= 0; i--)
		ck_assert_uint_eq(r.values[n++], 1000 + (100 + i) * 10);
	ck_assert_ptr_nonnull(strstr(r.err, "ERROR:  "));
	ck_assert_ptr_nonnull(strstr(r.err, "on_proc_exit"));
	TU_TEST_END();
}
END_TEST

/* ---- the atexit backstop ------------------------------------------------ */

static void
child_exit_backstop(void)
{
	on_proc_exit(hook, 1);
	on_shmem_exit(hook, 2);
	before_shmem_exit(hook, 3);
	on_proc_exit(erroring_hook, 4);
	exit(5);
}

START_TEST(test_atexit_backstop)
{
	static tu_child_result r;
	/* Run with code 0 (exit()'s status is not known to the hooks); the exit status stays 5. */
	static const uint32_t expect[] = {3030, 3020, 9004, 1010};

	TU_TEST_BEGIN();
	tu_run_child(child_exit_backstop, &r);
	assert_exit_code(&r, 5);
	assert_values(&r, expect, 4);
	ck_assert_ptr_nonnull(strstr(r.err, "ERROR:  hook 4 failed\n"));
	TU_TEST_END();
}
END_TEST

static void
child_backstop_fatal(void)
{
	on_proc_exit(hook, 1);
	on_proc_exit(fatal_hook, 2);
	on_proc_exit(hook, 3);
	exit(0);
}

START_TEST(test_atexit_backstop_fatal)
{
	static tu_child_result r;
	static const uint32_t expect[] = {1030, 8002, 1011};

	TU_TEST_BEGIN();
	tu_run_child(child_backstop_fatal, &r);
	assert_exit_code(&r, 1);
	assert_values(&r, expect, 3);
	TU_TEST_END();
}
END_TEST

/* Hook that leaves with a plain exit(7) (after reporting 7000 + arg). */
static void
exiting_hook(int code, Datum arg)
{
	(void) code;
	tu_report(7000 + DatumGetUInt32(arg));
	exit(7);
}

static void
child_exit_inside_hook(void)
{
	on_proc_exit(hook, 1);
	on_shmem_exit(hook, 2);
	on_shmem_exit(exiting_hook, 3);
	before_shmem_exit(hook, 4);
	proc_exit(0);
}

START_TEST(test_exit_inside_hook)
{
	static tu_child_result r;
	/*
	 * A hook that calls exit() while proc_exit() runs the chains: the
	 * backstop still runs the hooks not yet run (with code 0), and the exit
	 * status is the hook's.
	 */
	static const uint32_t expect[] = {3040, 7003, 3020, 1010};

	TU_TEST_BEGIN();
	tu_run_child(child_exit_inside_hook, &r);
	assert_exit_code(&r, 7);
	assert_values(&r, expect, 4);
	TU_TEST_END();
}
END_TEST

/* on_proc_exit hook that registers a before_shmem_exit hook (whose chain has finished). */
static void
late_registering_hook(int code, Datum arg)
{
	tu_report(6000 + DatumGetUInt32(arg) * 10 + (uint32_t) code);
	before_shmem_exit(hook, 9);
}

static void
child_late_registration(void)
{
	on_proc_exit(late_registering_hook, 2);
	on_proc_exit(hook, 1);
	proc_exit(4);
}

START_TEST(test_late_registration)
{
	static tu_child_result r;
	/* A hook registered on a finished chain is not dropped: the backstop runs it, with code 0. */
	static const uint32_t expect[] = {1014, 6024, 3090};

	TU_TEST_BEGIN();
	tu_run_child(child_late_registration, &r);
	assert_exit_code(&r, 4);
	assert_values(&r, expect, 3);
	TU_TEST_END();
}
END_TEST

/* ---- fork --------------------------------------------------------------- */

enum grandchild_mode
{
	GC_EXIT,			/* exit(0) */
	GC_RESET_EXIT,		/* on_exit_reset(), then exit(0) */
	GC_PROC_EXIT,		/* proc_exit(0) */
	GC_OWN_HOOK,		/* register its own hook, then proc_exit(0) */
	GC_SHMEM_EXIT		/* shmem_exit(0), then _exit(0) */
};

/* Fork a grandchild that leaves in the given way; wait; report 500 + mode when it is gone. */
static void
grandchild(enum grandchild_mode mode)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		_exit(90);
	if (pid == 0)
	{
		switch (mode)
		{
			case GC_EXIT:
				exit(0);
			case GC_RESET_EXIT:
				on_exit_reset();
				exit(0);
			case GC_PROC_EXIT:
				proc_exit(0);
			case GC_OWN_HOOK:
				on_proc_exit(hook, 7);
				proc_exit(0);
			case GC_SHMEM_EXIT:
				shmem_exit(0);
				_exit(0);
		}
		_exit(91);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		_exit(92);
	tu_report(500 + (uint32_t) mode);
}

static void
child_fork(void)
{
	on_proc_exit(hook, 1);
	before_shmem_exit(hook, 2);
	grandchild(GC_EXIT);
	grandchild(GC_RESET_EXIT);
	grandchild(GC_PROC_EXIT);
	grandchild(GC_OWN_HOOK);
	grandchild(GC_SHMEM_EXIT);
	/* The parent's own hooks are intact and run once, here. */
	exit(0);
}

START_TEST(test_fork)
{
	static tu_child_result r;
	/* Grandchildren never run the inherited hooks; the one with its own hook runs only it. */
	static const uint32_t expect[] = {500, 501, 502, 1070, 503, 504, 3020, 1010};

	TU_TEST_BEGIN();
	tu_run_child(child_fork, &r);
	assert_exit_code(&r, 0);
	assert_values(&r, expect, 8);
	TU_TEST_END();
}
END_TEST

static void
child_no_hooks(void)
{
	tu_report(proc_exit_inprogress ? 0xbad : 1);
	on_exit_reset();
	proc_exit(4);
}

START_TEST(test_no_hooks)
{
	static tu_child_result r;
	static const uint32_t expect[] = {1};

	TU_TEST_BEGIN();
	tu_run_child(child_no_hooks, &r);
	assert_exit_code(&r, 4);
	assert_values(&r, expect, 1);
	ck_assert_str_eq(r.err, "");
	TU_TEST_END();
}
END_TEST

static Suite *
ipc_suite(void)
{
	Suite *s = suite_create("ipc");
	TCase *tc = tu_tcase("chains", 20);

	tcase_add_test(tc, test_ordering);
	tcase_add_test(tc, test_shmem_exit);
	tcase_add_test(tc, test_hook_error_does_not_stop_the_rest);
	tcase_add_test(tc, test_hook_fatal);
	tcase_add_test(tc, test_cancel_before_shmem_exit);
	tcase_add_test(tc, test_limit);
	tcase_add_test(tc, test_no_hooks);
	suite_add_tcase(s, tc);

	tc = tu_tcase("exit", 20);
	tcase_add_test(tc, test_atexit_backstop);
	tcase_add_test(tc, test_atexit_backstop_fatal);
	tcase_add_test(tc, test_exit_inside_hook);
	tcase_add_test(tc, test_late_registration);
	tcase_add_test(tc, test_fork);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(ipc_suite());
}
