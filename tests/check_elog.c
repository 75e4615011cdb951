/*
 * check_elog.c: tests of error reporting (ereport/elog, PG_TRY, output).
 *
 * Tests that end a process (FATAL, PANIC, uncaught ERROR) run it in a child
 * forked by tu_run_child(), which captures the child's stderr and a stream of
 * 32-bit values the child reports through a pipe (from its exit hooks, for
 * instance).  Children never call ck_assert: they report, and the test
 * process asserts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <talloc.h>

#include <dsmkit/elog.h>
#include <dsmkit/version.h>
#include <dsmkit/ipc.h>
#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>

#include "testutil.h"

/* ---- child processes ---------------------------------------------------- */

/* An exit hook for children: reports 1000 + arg*10 + code. */
static void
reporting_hook(int code, Datum arg)
{
	tu_report(1000 + DatumGetUInt32(arg) * 10 + (uint32_t) code);
}

/* ---- throw and catch ---------------------------------------------------- */

START_TEST(test_throw_catch)
{
	volatile bool caught = false;
	volatile bool after_throw = false;

	TU_TEST_BEGIN();
	ck_assert_ptr_null(PG_exception_stack);
	PG_TRY();
	{
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("bad value %d", 42));
		after_throw = true;
	}
	PG_CATCH();
	{
		caught = true;
		ck_assert_int_eq(geterrcode(), ERRCODE_INVALID_PARAMETER_VALUE);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert(caught);
	ck_assert(!after_throw);
	ck_assert_int_eq(geterrcode(), 0);
	ck_assert_ptr_null(PG_exception_stack);

	/* The normal path skips PG_CATCH. */
	caught = false;
	PG_TRY();
	{
		after_throw = true;
	}
	PG_CATCH();
	{
		caught = true;
	}
	PG_END_TRY();
	ck_assert(after_throw);
	ck_assert(!caught);
	TU_TEST_END();
}
END_TEST

/* errdetail_internal() fills the detail as errdetail() does; the version functions match the headers. */
START_TEST(test_detail_internal_and_version)
{
	ErrorData *volatile edata = NULL;

	TU_TEST_BEGIN();
	PG_TRY();
	{
		ereport(ERROR, errcode(ERRCODE_DATA_CORRUPTED), errmsg_internal("raw %s", "message"),
				errdetail_internal("slot %u has refcount %d", 7u, -1));
	}
	PG_CATCH();
	{
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_ptr_nonnull(edata);
	ck_assert_int_eq(edata->sqlerrcode, ERRCODE_DATA_CORRUPTED);
	ck_assert_str_eq(edata->message, "raw message");
	ck_assert_str_eq(edata->detail, "slot 7 has refcount -1");
	FreeErrorData(edata);

	ck_assert_uint_eq(dsmkit_version(), DSMKIT_VERSION_HEX);
	ck_assert_str_eq(dsmkit_version_string(), DSMKIT_VERSION_STRING);
	TU_TEST_END();
}
END_TEST

START_TEST(test_default_codes)
{
	TU_TEST_BEGIN();
	PG_TRY();
	{
		elog(ERROR, "plain elog");
	}
	PG_CATCH();
	{
		ck_assert_int_eq(geterrcode(), ERRCODE_INTERNAL_ERROR);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_str_eq(unpack_sql_state(ERRCODE_OUT_OF_MEMORY), "53200");
	ck_assert_str_eq(unpack_sql_state(ERRCODE_UNDEFINED_FILE), "58P01");
	ck_assert_str_eq(unpack_sql_state(ERRCODE_INTERNAL_ERROR), "XX000");
	TU_TEST_END();
}
END_TEST

START_TEST(test_rethrow)
{
	volatile int inner = 0;
	volatile int outer = 0;
	ErrorData *edata = NULL;

	TU_TEST_BEGIN();
	PG_TRY();
	{
		PG_TRY();
		{
			ereport(ERROR, errcode(ERRCODE_DISK_FULL), errmsg("inner failure"));
		}
		PG_CATCH();
		{
			inner++;
			ck_assert_int_eq(geterrcode(), ERRCODE_DISK_FULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
		ck_abort_msg("not reached after PG_RE_THROW");
	}
	PG_CATCH();
	{
		outer++;
		ck_assert_int_eq(geterrcode(), ERRCODE_DISK_FULL);
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(inner, 1);
	ck_assert_int_eq(outer, 1);
	ck_assert_str_eq(edata->message, "inner failure");
	FreeErrorData(edata);
	TU_TEST_END();
}
END_TEST

START_TEST(test_nested_try)
{
	volatile int inner_caught = 0;
	volatile int outer_caught = 0;
	volatile int reached = 0;

	TU_TEST_BEGIN();
	PG_TRY();
	{
		sigjmp_buf *outer_buf = PG_exception_stack;

		PG_TRY();
		{
			ck_assert_ptr_ne(PG_exception_stack, outer_buf);
			elog(ERROR, "first");
		}
		PG_CATCH();
		{
			/* In PG_CATCH the outer handler is current again. */
			ck_assert_ptr_eq(PG_exception_stack, outer_buf);
			inner_caught++;
			FlushErrorState();
		}
		PG_END_TRY();
		ck_assert_ptr_eq(PG_exception_stack, outer_buf);
		reached++;
		/* Outside the inner block an error goes to the outer handler. */
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE), errmsg("second"));
	}
	PG_CATCH();
	{
		outer_caught++;
		ck_assert_int_eq(geterrcode(), ERRCODE_OBJECT_IN_USE);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(inner_caught, 1);
	ck_assert_int_eq(outer_caught, 1);
	ck_assert_int_eq(reached, 1);
	ck_assert_ptr_null(PG_exception_stack);
	TU_TEST_END();
}
END_TEST

START_TEST(test_try_suffix)
{
	volatile int caught = 0;

	TU_TEST_BEGIN();
	/* PostgreSQL 13's form: a suffix gives nested blocks distinct variables. */
	PG_TRY();
	{
		PG_TRY(2);
		{
			elog(ERROR, "inner");
		}
		PG_CATCH(2);
		{
			caught += 1;
			PG_RE_THROW();
		}
		PG_END_TRY(2);
	}
	PG_CATCH();
	{
		caught += 10;
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(caught, 11);
	ck_assert_ptr_null(PG_exception_stack);
	TU_TEST_END();
}
END_TEST

START_TEST(test_finally)
{
	volatile int finally_runs = 0;
	volatile int caught = 0;

	TU_TEST_BEGIN();
	/* Normal path: the finally block runs and nothing is raised. */
	PG_TRY();
	{
		PG_TRY();
		{
		}
		PG_FINALLY();
		{
			finally_runs++;
		}
		PG_END_TRY();
	}
	PG_CATCH();
	{
		caught++;
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(finally_runs, 1);
	ck_assert_int_eq(caught, 0);

	/* Error path: the finally block runs, then the error goes outward. */
	PG_TRY();
	{
		PG_TRY();
		{
			ereport(ERROR, errcode(ERRCODE_LOCK_NOT_AVAILABLE), errmsg("busy"));
		}
		PG_FINALLY();
		{
			finally_runs++;
			/* The error is still being handled while the block runs. */
			ck_assert_int_eq(geterrcode(), ERRCODE_LOCK_NOT_AVAILABLE);
		}
		PG_END_TRY();
		ck_abort_msg("not reached: PG_FINALLY re-raises");
	}
	PG_CATCH();
	{
		caught++;
		ck_assert_int_eq(geterrcode(), ERRCODE_LOCK_NOT_AVAILABLE);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(finally_runs, 2);
	ck_assert_int_eq(caught, 1);
	TU_TEST_END();
}
END_TEST

/* ---- CopyErrorData, ReThrowError, context callbacks --------------------- */

static void
context_cb(void *arg)
{
	errcontext("while %s", (const char *) arg);
}

/* The line of the ereport in raise_duplicate_file(). */
static int raise_line;

static void
raise_duplicate_file(void)
{
	errno = EEXIST;
	raise_line = __LINE__ + 1;
	ereport(ERROR, errcode(ERRCODE_DUPLICATE_FILE), errmsg("could not create \"%s\": %m", "f"),
			errdetail("Detail %d.", 7), errhint("Remove \"%s\" first.", "f"));
}

START_TEST(test_copy_error_data)
{
	ErrorData *volatile edata = NULL;
	ErrorContextCallback cb;

	TU_TEST_BEGIN();
	cb.callback = context_cb;
	cb.arg = (void *) "copying";
	cb.previous = error_context_stack;
	error_context_stack = &cb;
	PG_TRY();
	{
		raise_duplicate_file();
	}
	PG_CATCH();
	{
		ck_assert_ptr_eq(error_context_stack, &cb);
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	error_context_stack = cb.previous;

	ck_assert_ptr_nonnull(edata);
	ck_assert_int_eq(edata->elevel, ERROR);
	ck_assert_int_eq(edata->sqlerrcode, ERRCODE_DUPLICATE_FILE);
	ck_assert_int_eq(edata->saved_errno, EEXIST);
	ck_assert_str_eq(edata->message, "could not create \"f\": File exists");
	ck_assert_str_eq(edata->detail, "Detail 7.");
	ck_assert_str_eq(edata->hint, "Remove \"f\" first.");
	ck_assert_str_eq(edata->context, "while copying");
	ck_assert_str_eq(edata->filename, __FILE__);
	ck_assert_int_eq(edata->lineno, raise_line);
	ck_assert_str_eq(edata->funcname, "raise_duplicate_file");
	/* The copy is in CurrentMemoryContext, a talloc child of it. */
	ck_assert_ptr_eq(GetMemoryChunkContext(edata), CurrentMemoryContext);
	ck_assert_ptr_eq(GetMemoryChunkContext(edata->message), CurrentMemoryContext);
	FreeErrorData(edata);

	/* Parts not given are NULL in the copy. */
	PG_TRY();
	{
		elog(ERROR, "bare");
	}
	PG_CATCH();
	{
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_str_eq(edata->message, "bare");
	ck_assert_ptr_null(edata->detail);
	ck_assert_ptr_null(edata->hint);
	ck_assert_ptr_null(edata->context);
	FreeErrorData(edata);
	TU_TEST_END();
}
END_TEST

START_TEST(test_rethrow_error)
{
	ErrorData *volatile edata = NULL;
	ErrorData *volatile again = NULL;

	TU_TEST_BEGIN();
	PG_TRY();
	{
		ereport(ERROR, errcode(ERRCODE_IO_ERROR), errmsg("original"), errdetail("d"));
	}
	PG_CATCH();
	{
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(geterrcode(), 0);

	PG_TRY();
	{
		ReThrowError(edata);
	}
	PG_CATCH();
	{
		ck_assert_int_eq(geterrcode(), ERRCODE_IO_ERROR);
		again = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_str_eq(again->message, "original");
	ck_assert_str_eq(again->detail, "d");
	ck_assert_int_eq(again->lineno, edata->lineno);
	FreeErrorData(edata);
	FreeErrorData(again);
	TU_TEST_END();
}
END_TEST

START_TEST(test_context_lines)
{
	ErrorContextCallback outer;
	ErrorContextCallback inner;
	char *out;

	TU_TEST_BEGIN();
	outer.callback = context_cb;
	outer.arg = (void *) "doing the outer thing";
	outer.previous = error_context_stack;
	error_context_stack = &outer;
	inner.callback = context_cb;
	inner.arg = (void *) "doing the inner thing";
	inner.previous = error_context_stack;
	error_context_stack = &inner;

	tu_capture_stderr_begin();
	ereport(WARNING, errmsg("careful"), errdetail("Some detail."));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "WARNING:  careful\n"
						  "DETAIL:  Some detail.\n"
						  "CONTEXT:  while doing the inner thing\n"
						  "CONTEXT:  while doing the outer thing\n");
	free(out);

	/* A caught error carries them; PG_CATCH restores the stack. */
	PG_TRY();
	{
		error_context_stack = &outer;	/* changed inside the block */
		elog(ERROR, "with context");
	}
	PG_CATCH();
	{
		ErrorData *edata = CopyErrorData();

		ck_assert_str_eq(edata->context, "while doing the outer thing");
		FreeErrorData(edata);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_ptr_eq(error_context_stack, &inner);

	error_context_stack = outer.previous;
	tu_capture_stderr_begin();
	ereport(WARNING, errmsg("no context now"));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "WARNING:  no context now\n");
	free(out);
	TU_TEST_END();
}
END_TEST

/* A context callback that itself raises ERROR. */
static void
failing_context_cb(void *arg)
{
	ereport(ERROR, errcode(ERRCODE_DATA_CORRUPTED), errmsg("context callback failed"));
}

/* A context callback that makes a report of its own, then adds its line. */
static void
chatty_context_cb(void *arg)
{
	ereport(NOTICE, errmsg("from the callback"));
	errcontext("chatty");
}

START_TEST(test_nested_reports)
{
	ErrorContextCallback cb;
	char *out;

	TU_TEST_BEGIN();
	/* A report inside a context callback does not re-enter the callbacks. */
	cb.callback = chatty_context_cb;
	cb.arg = NULL;
	cb.previous = NULL;
	error_context_stack = &cb;
	tu_capture_stderr_begin();
	ereport(WARNING, errmsg("outer report"));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "NOTICE:  from the callback\n"
						  "WARNING:  outer report\n"
						  "CONTEXT:  chatty\n");
	free(out);

	/* An ERROR inside a context callback replaces the report being built. */
	cb.callback = failing_context_cb;
	PG_TRY();
	{
		ereport(WARNING, errmsg("never printed"));
		ck_abort_msg("not reached");
	}
	PG_CATCH();
	{
		ck_assert_int_eq(geterrcode(), ERRCODE_DATA_CORRUPTED);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_ptr_eq(error_context_stack, &cb);
	error_context_stack = NULL;

	/* The error state is clean afterwards. */
	ck_assert_int_eq(geterrcode(), 0);
	tu_capture_stderr_begin();
	ereport(WARNING, errmsg("fine"));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "WARNING:  fine\n");
	free(out);
	TU_TEST_END();
}
END_TEST

/*
 * A hook and a context callback that protect themselves the recommended
 * way: PG_TRY around code that may fail, FlushErrorState() in PG_CATCH.
 * Flushing there must forget only the error they caught, not the report
 * being emitted around them.
 */
static int self_catching_calls;

static void
self_catching_hook(ErrorData *edata)
{
	(void) edata;
	self_catching_calls++;
	PG_TRY();
	{
		elog(ERROR, "failure inside the hook");
	}
	PG_CATCH();
	{
		FlushErrorState();
	}
	PG_END_TRY();
}

static void
self_catching_context_cb(void *arg)
{
	self_catching_calls++;
	PG_TRY();
	{
		elog(ERROR, "failure inside the context callback");
	}
	PG_CATCH();
	{
		FlushErrorState();
	}
	PG_END_TRY();
	errcontext("%s", (const char *) arg);
}

/* Raise ERROR with code and message, catch it, check both; the stack must be sane. */
static void
check_error_stack_sane(void)
{
	volatile int code = 0;
	char message[64] = "";

	PG_TRY();
	{
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE), errmsg("afterwards"));
	}
	PG_CATCH();
	{
		ErrorData *edata = CopyErrorData();

		code = geterrcode();
		snprintf(message, sizeof(message), "%s", edata->message);
		FreeErrorData(edata);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_str_eq(unpack_sql_state(code), unpack_sql_state(ERRCODE_OBJECT_IN_USE));
	ck_assert_str_eq(message, "afterwards");
	ck_assert_int_eq(geterrcode(), 0);
}

START_TEST(test_flush_inside_hook)
{
	ErrorContextCallback cb;
	char *out;

	TU_TEST_BEGIN();
	self_catching_calls = 0;
	emit_log_hook = self_catching_hook;
	tu_capture_stderr_begin();
	ereport(WARNING, errmsg("outer warning"));
	ereport(NOTICE, errmsg("second report"));
	out = tu_capture_stderr_end();
	emit_log_hook = NULL;
	ck_assert_int_eq(self_catching_calls, 2);
	ck_assert_str_eq(out, "WARNING:  outer warning\nNOTICE:  second report\n");
	free(out);
	check_error_stack_sane();

	/* The same inside an error context callback, for a report and a caught ERROR. */
	cb.callback = self_catching_context_cb;
	cb.arg = (void *) "in the callback";
	cb.previous = NULL;
	error_context_stack = &cb;
	tu_capture_stderr_begin();
	ereport(WARNING, errmsg("with a careful callback"));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "WARNING:  with a careful callback\nCONTEXT:  in the callback\n");
	free(out);
	PG_TRY();
	{
		ereport(ERROR, errcode(ERRCODE_DISK_FULL), errmsg("outer error"));
	}
	PG_CATCH();
	{
		ErrorData *edata = CopyErrorData();

		ck_assert_str_eq(edata->message, "outer error");
		ck_assert_str_eq(edata->context, "in the callback");
		ck_assert_int_eq(edata->sqlerrcode, ERRCODE_DISK_FULL);
		FreeErrorData(edata);
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_ptr_eq(error_context_stack, &cb);
	error_context_stack = NULL;
	ck_assert_int_eq(self_catching_calls, 4);
	check_error_stack_sane();
	TU_TEST_END();
}
END_TEST

/* ---- output: format, levels, prefix, hook ------------------------------- */

START_TEST(test_format)
{
	char *out;
	char expect[512];
	long pid = (long) getpid();

	TU_TEST_BEGIN();
	tu_capture_stderr_begin();
	ereport(WARNING, errcode(ERRCODE_WARNING), errmsg("message %s", "one"),
			errdetail("The detail."), errhint("Do something."));
	ereport(LOG, errmsg("line one\nline two"));
	elog(NOTICE, "notice %d", 3);
	ereport(INFO, errmsg("info"));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "WARNING:  message one\n"
						  "DETAIL:  The detail.\n"
						  "HINT:  Do something.\n"
						  "LOG:  line one\n"
						  "LOG:  line two\n"
						  "NOTICE:  notice 3\n"
						  "INFO:  info\n");
	free(out);

	set_log_line_prefix("worker 3: ");
	tu_capture_stderr_begin();
	ereport(WARNING, errmsg("prefixed"), errhint("Hint."));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "worker 3: WARNING:  prefixed\nworker 3: HINT:  Hint.\n");
	free(out);

	log_line_pid = true;
	tu_capture_stderr_begin();
	ereport(LOG, errmsg("with pid"));
	out = tu_capture_stderr_end();
	snprintf(expect, sizeof(expect), "[%ld] worker 3: LOG:  with pid\n", pid);
	ck_assert_str_eq(out, expect);
	free(out);

	set_log_line_prefix(NULL);
	tu_capture_stderr_begin();
	ereport(LOG, errmsg("pid only"));
	out = tu_capture_stderr_end();
	snprintf(expect, sizeof(expect), "[%ld] LOG:  pid only\n", pid);
	ck_assert_str_eq(out, expect);
	free(out);
	log_line_pid = false;

	/* EmitErrorReport prints a caught error as it would have been printed. */
	tu_capture_stderr_begin();
	PG_TRY();
	{
		ereport(ERROR, errmsg("caught, then printed"), errdetail("D."));
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "ERROR:  caught, then printed\nDETAIL:  D.\n");
	free(out);
	TU_TEST_END();
}
END_TEST

static int side_effects;

static int
count_call(void)
{
	return ++side_effects;
}

START_TEST(test_log_min_messages)
{
	char *out;

	TU_TEST_BEGIN();
	ck_assert_int_eq(log_min_messages, LOG);
	side_effects = 0;
	tu_capture_stderr_begin();
	/* Below the threshold: not printed, arguments not evaluated. */
	elog(DEBUG1, "debug %d", count_call());
	ereport(DEBUG5, errmsg("debug5 %d", count_call()));
	ereport(LOG, errmsg("log %d", count_call()));
	log_min_messages = WARNING;
	ereport(LOG, errmsg("hidden log %d", count_call()));
	ereport(NOTICE, errmsg("hidden notice"));
	ereport(WARNING, errmsg("shown warning"));
	log_min_messages = DEBUG5;
	elog(DEBUG3, "now shown");
	log_min_messages = PANIC;
	ereport(WARNING, errmsg("hidden warning"));
	out = tu_capture_stderr_end();
	ck_assert_int_eq(side_effects, 1);
	ck_assert_str_eq(out, "LOG:  log 1\nWARNING:  shown warning\nDEBUG:  now shown\n");
	free(out);

	/* ERROR is raised whatever the setting. */
	PG_TRY();
	{
		elog(ERROR, "still raised");
	}
	PG_CATCH();
	{
		side_effects = -1;
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(side_effects, -1);
	log_min_messages = LOG;
	TU_TEST_END();
}
END_TEST

static int hook_calls;
static int hook_last_level;
static int hook_last_code;
static char hook_last_message[128];

static void
recording_hook(ErrorData *edata)
{
	hook_calls++;
	hook_last_level = edata->elevel;
	hook_last_code = edata->sqlerrcode;
	snprintf(hook_last_message, sizeof(hook_last_message), "%s", edata->message);
}

/* A hook that makes one report of its own (guarded against recursing). */
static void
reporting_log_hook(ErrorData *edata)
{
	static bool busy;

	if (busy)
		return;
	busy = true;
	ereport(LOG, errmsg("hook saw \"%s\"", edata->message));
	busy = false;
}

START_TEST(test_emit_log_hook)
{
	char *out;

	TU_TEST_BEGIN();
	hook_calls = 0;
	emit_log_hook = recording_hook;
	tu_capture_stderr_begin();
	ereport(WARNING, errcode(ERRCODE_OBJECT_IN_USE), errmsg("seen by hook"));
	ck_assert_int_eq(hook_calls, 1);
	ck_assert_int_eq(hook_last_level, WARNING);
	ck_assert_int_eq(hook_last_code, ERRCODE_OBJECT_IN_USE);
	ck_assert_str_eq(hook_last_message, "seen by hook");

	/* Not printed, so not seen. */
	elog(DEBUG1, "too low");
	ck_assert_int_eq(hook_calls, 1);
	/* A caught error is not printed and not seen. */
	PG_TRY();
	{
		elog(ERROR, "caught");
	}
	PG_CATCH();
	{
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert_int_eq(hook_calls, 1);
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "WARNING:  seen by hook\n");
	free(out);

	/* A hook may report; its report comes out before the one it sees. */
	emit_log_hook = reporting_log_hook;
	tu_capture_stderr_begin();
	ereport(NOTICE, errmsg("original"));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "LOG:  hook saw \"original\"\nNOTICE:  original\n");
	free(out);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- %m, the old form, file access codes -------------------------------- */

START_TEST(test_percent_m)
{
	ErrorData *edata = NULL;
	char *out;
	char expect[256];

	TU_TEST_BEGIN();
	tu_capture_stderr_begin();
	errno = ENOENT;
	/* errno changed while the arguments are evaluated: %m still uses the saved one. */
	ereport(WARNING, errmsg("open \"%s\": %m (%d%%m)", "x", (errno = EACCES, 100)));
	ck_assert_int_eq(errno, ENOENT);	/* the report restores the saved errno */
	errno = ENOSPC;
	ereport(WARNING, errmsg("write"), errdetail("Failed: %m."), errhint("%m, %m"));
	out = tu_capture_stderr_end();
	snprintf(expect, sizeof(expect),
			 "WARNING:  open \"x\": %s (100%%m)\n"
			 "WARNING:  write\nDETAIL:  Failed: %s.\nHINT:  %s, %s\n",
			 strerror(ENOENT), strerror(ENOSPC), strerror(ENOSPC), strerror(ENOSPC));
	ck_assert_str_eq(out, expect);
	free(out);

	PG_TRY();
	{
		errno = EMFILE;
		elog(ERROR, "elog %m");
	}
	PG_CATCH();
	{
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	snprintf(expect, sizeof(expect), "elog %s", strerror(EMFILE));
	ck_assert_str_eq(edata->message, expect);
	ck_assert_int_eq(edata->saved_errno, EMFILE);
	FreeErrorData(edata);
	TU_TEST_END();
}
END_TEST

START_TEST(test_old_form)
{
	char *out;

	TU_TEST_BEGIN();
	tu_capture_stderr_begin();
	ereport(WARNING, (errcode(ERRCODE_WARNING), errmsg("old style %d", 1), errhint("Fine.")));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "WARNING:  old style 1\nHINT:  Fine.\n");
	free(out);
	PG_TRY();
	{
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("old style error")));
	}
	PG_CATCH();
	{
		ck_assert_int_eq(geterrcode(), ERRCODE_FEATURE_NOT_SUPPORTED);
		FlushErrorState();
	}
	PG_END_TRY();
	TU_TEST_END();
}
END_TEST

static int
code_for_errno(int e)
{
	volatile int code = -1;

	PG_TRY();
	{
		errno = e;
		ereport(ERROR, errcode_for_file_access(), errmsg("could not open file \"%s\": %m", "f"));
	}
	PG_CATCH();
	{
		code = geterrcode();
		FlushErrorState();
	}
	PG_END_TRY();
	return code;
}

START_TEST(test_errcode_for_file_access)
{
	TU_TEST_BEGIN();
	ck_assert_int_eq(code_for_errno(ENOENT), ERRCODE_UNDEFINED_FILE);
	ck_assert_int_eq(code_for_errno(EEXIST), ERRCODE_DUPLICATE_FILE);
	ck_assert_int_eq(code_for_errno(EACCES), ERRCODE_INSUFFICIENT_PRIVILEGE);
	ck_assert_int_eq(code_for_errno(EPERM), ERRCODE_INSUFFICIENT_PRIVILEGE);
	ck_assert_int_eq(code_for_errno(ENOSPC), ERRCODE_DISK_FULL);
	ck_assert_int_eq(code_for_errno(ENOMEM), ERRCODE_OUT_OF_MEMORY);
	ck_assert_int_eq(code_for_errno(EMFILE), ERRCODE_INSUFFICIENT_RESOURCES);
	ck_assert_int_eq(code_for_errno(ENFILE), ERRCODE_INSUFFICIENT_RESOURCES);
	ck_assert_int_eq(code_for_errno(EIO), ERRCODE_IO_ERROR);
	ck_assert_int_eq(code_for_errno(EXDEV), ERRCODE_IO_ERROR);
	TU_TEST_END();
}
END_TEST

/* ---- leaving the process: uncaught ERROR, FATAL, PANIC ------------------ */

static void
child_uncaught_error(void)
{
	on_proc_exit(reporting_hook, UInt32GetDatum(1));
	before_shmem_exit(reporting_hook, UInt32GetDatum(2));
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR), errmsg("nobody catches this"),
			errdetail("Detail of %s.", "it"));
	tu_report(0xdead);				/* not reached */
}

START_TEST(test_uncaught_error_is_fatal)
{
	static tu_child_result r;

	TU_TEST_BEGIN();
	tu_run_child(child_uncaught_error, &r);
	ck_assert(WIFEXITED(r.status));
	ck_assert_int_eq(WEXITSTATUS(r.status), 1);
	ck_assert_str_eq(r.err, "FATAL:  nobody catches this\nDETAIL:  Detail of it.\n");
	/* The hooks ran, before_shmem_exit first, with code 1. */
	ck_assert_int_eq(r.nvalues, 2);
	ck_assert_uint_eq(r.values[0], 1021);
	ck_assert_uint_eq(r.values[1], 1011);
	TU_TEST_END();
}
END_TEST

static void
child_fatal_in_try(void)
{
	on_proc_exit(reporting_hook, UInt32GetDatum(3));
	PG_TRY();
	{
		ereport(FATAL, errmsg("fatal is not caught"));
	}
	PG_CATCH();
	{
		tu_report(0xbad);
	}
	PG_END_TRY();
	tu_report(0xdead);
}

static void
child_rethrow_uncaught(void)
{
	on_proc_exit(reporting_hook, UInt32GetDatum(4));
	PG_TRY();
	{
		elog(ERROR, "thrown again");
	}
	PG_CATCH();
	{
		tu_report(7);
		PG_RE_THROW();
	}
	PG_END_TRY();
	tu_report(0xdead);
}

/*
 * A FATAL whose context callback raises ERROR inside PG_TRY: the ERROR must
 * not downgrade the FATAL into something PG_CATCH can swallow.
 */
static void
child_fatal_failing_context(void)
{
	ErrorContextCallback cb;

	on_proc_exit(reporting_hook, UInt32GetDatum(8));
	cb.callback = failing_context_cb;
	cb.arg = NULL;
	cb.previous = NULL;
	PG_TRY();
	{
		error_context_stack = &cb;
		ereport(FATAL, errmsg("fatal with a failing context callback"));
	}
	PG_CATCH();
	{
		tu_report(0xbad);
		FlushErrorState();
	}
	PG_END_TRY();
	tu_report(0xdead);
	_exit(0);
}

/* The same with an emit_log_hook that raises ERROR (which it must not do). */
static void
failing_log_hook(ErrorData *edata)
{
	static int depth;

	(void) edata;
	if (depth++ == 0)
		ereport(ERROR, errcode(ERRCODE_DATA_CORRUPTED), errmsg("hook failed"));
	depth--;
}

static void
child_fatal_failing_hook(void)
{
	on_proc_exit(reporting_hook, UInt32GetDatum(9));
	PG_TRY();
	{
		emit_log_hook = failing_log_hook;
		ereport(FATAL, errmsg("fatal with a failing hook"));
	}
	PG_CATCH();
	{
		tu_report(0xbad);
		FlushErrorState();
	}
	PG_END_TRY();
	tu_report(0xdead);
	_exit(0);
}

START_TEST(test_fatal)
{
	static tu_child_result r;

	TU_TEST_BEGIN();
	tu_run_child(child_fatal_in_try, &r);
	ck_assert(WIFEXITED(r.status));
	ck_assert_int_eq(WEXITSTATUS(r.status), 1);
	ck_assert_str_eq(r.err, "FATAL:  fatal is not caught\n");
	ck_assert_int_eq(r.nvalues, 1);
	ck_assert_uint_eq(r.values[0], 1031);

	/* PG_RE_THROW with no outer handler: FATAL. */
	tu_run_child(child_rethrow_uncaught, &r);
	ck_assert(WIFEXITED(r.status));
	ck_assert_int_eq(WEXITSTATUS(r.status), 1);
	ck_assert_str_eq(r.err, "FATAL:  thrown again\n");
	ck_assert_int_eq(r.nvalues, 2);
	ck_assert_uint_eq(r.values[0], 7);
	ck_assert_uint_eq(r.values[1], 1041);

	/* An ERROR raised while a FATAL is built is FATAL too: PG_CATCH never sees it. */
	tu_run_child(child_fatal_failing_context, &r);
	ck_assert_msg(WIFEXITED(r.status), "status 0x%x", r.status);
	ck_assert_int_eq(WEXITSTATUS(r.status), 1);
	ck_assert_int_eq(r.nvalues, 1);
	ck_assert_uint_eq(r.values[0], 1081);
	ck_assert_str_eq(r.err, "FATAL:  context callback failed\n");

	tu_run_child(child_fatal_failing_hook, &r);
	ck_assert_msg(WIFEXITED(r.status), "status 0x%x", r.status);
	ck_assert_int_eq(WEXITSTATUS(r.status), 1);
	ck_assert_int_eq(r.nvalues, 1);
	ck_assert_uint_eq(r.values[0], 1091);
	ck_assert_str_eq(r.err, "FATAL:  hook failed\n");
	TU_TEST_END();
}
END_TEST

static void
child_panic(void)
{
	on_proc_exit(reporting_hook, UInt32GetDatum(5));
	PG_TRY();
	{
		ereport(PANIC, errcode(ERRCODE_DATA_CORRUPTED), errmsg("shared state is corrupt"));
	}
	PG_CATCH();
	{
		tu_report(0xbad);
	}
	PG_END_TRY();
	tu_report(0xdead);
}

/* An emit_log_hook that reports every time: reports without end. */
static void
recursing_hook(ErrorData *edata)
{
	ereport(LOG, errmsg("again"));
}

static void
child_error_stack_overflow(void)
{
	emit_log_hook = recursing_hook;
	ereport(LOG, errmsg("start"));
	tu_report(0xdead);
}

START_TEST(test_panic)
{
	static tu_child_result r;

	TU_TEST_BEGIN();
	tu_run_child(child_panic, &r);
	ck_assert(WIFSIGNALED(r.status));
	ck_assert_int_eq(WTERMSIG(r.status), SIGABRT);
	ck_assert_str_eq(r.err, "PANIC:  shared state is corrupt\n");
	/* PANIC runs no exit hook. */
	ck_assert_int_eq(r.nvalues, 0);

	/* Endless nested reports end in a PANIC, not a crash. */
	tu_run_child(child_error_stack_overflow, &r);
	ck_assert(WIFSIGNALED(r.status));
	ck_assert_int_eq(WTERMSIG(r.status), SIGABRT);
	ck_assert_ptr_nonnull(strstr(r.err, "PANIC:  error stack overflow"));
	ck_assert_int_eq(r.nvalues, 0);
	TU_TEST_END();
}
END_TEST

/* ---- out of memory ------------------------------------------------------ */

START_TEST(test_oom_memlimit)
{
	MemoryContext limited;
	volatile int code = 0;
	char *out;

	TU_TEST_BEGIN();
	limited = AllocSetContextCreate(TopMemoryContext, "limited", ALLOCSET_SMALL_SIZES);
	/* Deprecated in talloc, but the simplest way to make a context run out. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	ck_assert_int_eq(talloc_set_memlimit(limited, 64 * 1024), 0);
#pragma GCC diagnostic pop
	tu_capture_stderr_begin();
	PG_TRY();
	{
		for (int i = 0; i < 1000; i++)
			(void) MemoryContextAlloc(limited, 4096);
	}
	PG_CATCH();
	{
		code = geterrcode();
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	out = tu_capture_stderr_end();
	ck_assert_int_eq(code, ERRCODE_OUT_OF_MEMORY);
	ck_assert_ptr_nonnull(strstr(out, "ERROR:  out of memory"));
	free(out);
	MemoryContextDelete(limited);
	TU_TEST_END();
}
END_TEST

/* True when malloc cannot be starved with a resource limit (sanitizers, valgrind). */
static bool
malloc_is_replaced(void)
{
	const char *preload = getenv("LD_PRELOAD");

#if defined(__SANITIZE_ADDRESS__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return true;
#endif
#endif
	return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

/* Current data size of this process in bytes, from /proc/self/status (0 if unknown). */
static unsigned long
current_vm_data(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long kb = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmData: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/*
 * A child that exhausts malloc under RLIMIT_DATA, proves malloc fails, then
 * reports (caught, printed) and finally dies of an uncaught ERROR so that
 * the FATAL path and the exit hooks run with no memory either.
 */
static void
child_no_memory(void)
{
	struct rlimit rl;
	void *head = NULL;
	unsigned long data = current_vm_data();

	if (data == 0)
		_exit(97);
	on_proc_exit(reporting_hook, UInt32GetDatum(6));
	rl.rlim_cur = rl.rlim_max = data + 8 * 1024 * 1024;
	if (setrlimit(RLIMIT_DATA, &rl) != 0)
		_exit(96);
	for (size_t size = 1024 * 1024; size >= sizeof(void *); size /= 2)
	{
		void *p;

		while ((p = malloc(size)) != NULL)
		{
			*(void **) p = head;
			head = p;
		}
	}
	if (malloc(16) != NULL)
		_exit(95);
	tu_report(1);
	PG_TRY();
	{
		ereport(ERROR, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
				errdetail("Failed on request of size %zu in memory context \"%s\".", (size_t) 64,
						  "TopMemoryContext"));
	}
	PG_CATCH();
	{
		tu_report(geterrcode() == ERRCODE_OUT_OF_MEMORY ? 2 : 0xbad);
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	ereport(ERROR, errcode(ERRCODE_OUT_OF_MEMORY), errmsg("still out of memory"));
}

START_TEST(test_oom_no_malloc)
{
	static tu_child_result r;

	TU_TEST_BEGIN();
	if (malloc_is_replaced())
	{
		TU_TEST_END();
		return;
	}
	tu_run_child(child_no_memory, &r);
	ck_assert_msg(WIFEXITED(r.status), "status 0x%x", r.status);
	ck_assert_int_eq(WEXITSTATUS(r.status), 1);
	ck_assert_int_eq(r.nvalues, 3);
	ck_assert_uint_eq(r.values[0], 1);
	ck_assert_uint_eq(r.values[1], 2);
	ck_assert_uint_eq(r.values[2], 1061);
	ck_assert_str_eq(r.err, "ERROR:  out of memory\n"
							"DETAIL:  Failed on request of size 64 in memory context \"TopMemoryContext\".\n"
							"FATAL:  still out of memory\n");
	TU_TEST_END();
}
END_TEST

/*
 * Fixture: create TopMemoryContext and ErrorContext before the leak
 * baseline, since they live as long as the process.
 */
static void
init_contexts(void)
{
	MemoryContextInit();
}

static Suite *
elog_suite(void)
{
	Suite *s = suite_create("elog");
	TCase *tc = tu_tcase("core", 10);

	tcase_add_checked_fixture(tc, init_contexts, NULL);

	tcase_add_test(tc, test_throw_catch);
	tcase_add_test(tc, test_default_codes);
	tcase_add_test(tc, test_detail_internal_and_version);
	tcase_add_test(tc, test_rethrow);
	tcase_add_test(tc, test_nested_try);
	tcase_add_test(tc, test_try_suffix);
	tcase_add_test(tc, test_finally);
	tcase_add_test(tc, test_copy_error_data);
	tcase_add_test(tc, test_rethrow_error);
	tcase_add_test(tc, test_context_lines);
	tcase_add_test(tc, test_nested_reports);
	tcase_add_test(tc, test_flush_inside_hook);
	tcase_add_test(tc, test_format);
	tcase_add_test(tc, test_log_min_messages);
	tcase_add_test(tc, test_emit_log_hook);
	tcase_add_test(tc, test_percent_m);
	tcase_add_test(tc, test_old_form);
	tcase_add_test(tc, test_errcode_for_file_access);
	suite_add_tcase(s, tc);

	tc = tu_tcase("exit", 20);
	tcase_add_test(tc, test_uncaught_error_is_fatal);
	tcase_add_test(tc, test_fatal);
	tcase_add_test(tc, test_panic);
	suite_add_tcase(s, tc);

	tc = tu_tcase("oom", 30);
	tcase_add_checked_fixture(tc, init_contexts, NULL);
	tcase_add_test(tc, test_oom_memlimit);
	tcase_add_test(tc, test_oom_no_malloc);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(elog_suite());
}
