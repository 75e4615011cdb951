/*
 * check_resowner.c: tests of resource owners.
 *
 * Most tests use "recording" resource kinds whose ReleaseResource appends
 * "<kind>:<value> " to a log string, so that a test can assert the exact
 * release order (phases, priorities, children before parents).  Counting
 * kinds keep a count and a sum instead, for the large tests.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <talloc.h>

#include <dsmkit/elog.h>
#include <dsmkit/ipc.h>
#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>
#include <dsmkit/resowner.h>

#include "testutil.h"

/* ---- recording kinds ---------------------------------------------------- */

static char rec[8192];

static void
rec_add(const char *fmt, ...)
{
	size_t used = strlen(rec);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rec + used, sizeof(rec) - used, fmt, ap);
	va_end(ap);
}

static void
rec_reset(void)
{
	rec[0] = '\0';
}

static void release_a(Datum d) { rec_add("a:%d ", DatumGetInt32(d)); }
static void release_b(Datum d) { rec_add("b:%d ", DatumGetInt32(d)); }
static void release_lo(Datum d) { rec_add("lo:%d ", DatumGetInt32(d)); }
static void release_l(Datum d) { rec_add("l:%d ", DatumGetInt32(d)); }
static void release_af(Datum d) { rec_add("af:%d ", DatumGetInt32(d)); }
static void release_d(Datum d) { rec_add("d:%d ", DatumGetInt32(d)); }

static char *
print_d(Datum d)
{
	return psprintf("test thing number %d", DatumGetInt32(d));
}

static const ResourceOwnerDesc kind_a = {"akind", RESOURCE_RELEASE_AFTER_LOCKS, 600, release_a, NULL};
static const ResourceOwnerDesc kind_b = {"bkind", RESOURCE_RELEASE_BEFORE_LOCKS, 400, release_b, NULL};
static const ResourceOwnerDesc kind_lo = {"lokind", RESOURCE_RELEASE_BEFORE_LOCKS, 100, release_lo, NULL};
static const ResourceOwnerDesc kind_l = {"lkind", RESOURCE_RELEASE_LOCKS, 1, release_l, NULL};
static const ResourceOwnerDesc kind_af = {"afkind", RESOURCE_RELEASE_AFTER_LOCKS, 1, release_af, NULL};
static const ResourceOwnerDesc kind_d = {"dkind", RESOURCE_RELEASE_BEFORE_LOCKS, 500, release_d, print_d};

/* Enlarge, then remember: the way callers are meant to do it. */
static void
hold(ResourceOwner owner, int value, const ResourceOwnerDesc *kind)
{
	ResourceOwnerEnlarge(owner);
	ResourceOwnerRemember(owner, Int32GetDatum(value), kind);
}

/* ---- counting kinds ----------------------------------------------------- */

static size_t count_x, count_y;
static uint64_t sum_x, sum_y;

static void release_x(Datum d) { count_x++; sum_x += d; }
static void release_y(Datum d) { count_y++; sum_y += d; }

static const ResourceOwnerDesc kind_x = {"xkind", RESOURCE_RELEASE_AFTER_LOCKS, 10, release_x, NULL};
static const ResourceOwnerDesc kind_y = {"ykind", RESOURCE_RELEASE_BEFORE_LOCKS, 10, release_y, NULL};

/* ---- error capture ------------------------------------------------------ */

/* What a caught error looked like. */
typedef struct Caught
{
	int code;
	char message[512];
	char detail[512];
} Caught;

/* Copy the error being handled into *c and flush it.  Call inside PG_CATCH. */
static void
catch_into(Caught *c)
{
	ErrorData *edata = CopyErrorData();

	c->code = geterrcode();
	snprintf(c->message, sizeof c->message, "%s", edata->message ? edata->message : "");
	snprintf(c->detail, sizeof c->detail, "%s", edata->detail ? edata->detail : "");
	FreeErrorData(edata);
	FlushErrorState();
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(test_release_order)
{
	ResourceOwner p, c, g, c2;

	TU_TEST_BEGIN();
	rec_reset();
	p = ResourceOwnerCreate(NULL, "P");
	c = ResourceOwnerCreate(p, "C");
	g = ResourceOwnerCreate(c, "G");
	c2 = ResourceOwnerCreate(p, "C2");
	ck_assert_ptr_eq(ResourceOwnerGetParent(c), p);
	ck_assert_ptr_eq(ResourceOwnerGetParent(g), c);
	ck_assert_ptr_null(ResourceOwnerGetParent(p));
	ck_assert_str_eq(ResourceOwnerGetName(c2), "C2");
	ck_assert_ptr_eq(talloc_parent(g), c);
	ck_assert_ptr_eq(talloc_parent(p), TopMemoryContext);

	hold(g, 1, &kind_a);
	hold(g, 2, &kind_b);
	hold(c, 3, &kind_l);
	hold(c, 4, &kind_lo);
	hold(c2, 5, &kind_a);
	hold(p, 6, &kind_a);
	hold(p, 7, &kind_b);
	hold(p, 8, &kind_lo);
	hold(p, 9, &kind_l);
	hold(p, 11, &kind_af);

	ResourceOwnerReleaseAll(p, false);
	/*
	 * Phase by phase; in each, children first (C2 is the newest child of P,
	 * G is below C), and in each owner by ascending priority.
	 */
	ck_assert_str_eq(rec, "b:2 lo:4 lo:8 b:7 "
						  "l:3 l:9 "
						  "a:5 a:1 af:11 a:6 ");

	/* A released owner can be used again, then released one phase at a time. */
	rec_reset();
	hold(g, 20, &kind_a);
	hold(p, 21, &kind_b);
	hold(p, 22, &kind_l);
	ResourceOwnerRelease(p, RESOURCE_RELEASE_LOCKS, false, true);
	ck_assert_str_eq(rec, "l:22 ");
	ResourceOwnerRelease(p, RESOURCE_RELEASE_BEFORE_LOCKS, false, true);
	ck_assert_str_eq(rec, "l:22 b:21 ");
	ResourceOwnerRelease(c, RESOURCE_RELEASE_AFTER_LOCKS, false, false);
	ck_assert_str_eq(rec, "l:22 b:21 a:20 ");

	ResourceOwnerDelete(p);
	TU_TEST_END();
}
END_TEST

START_TEST(test_duplicates_and_forget)
{
	ResourceOwner o;

	TU_TEST_BEGIN();
	rec_reset();
	o = ResourceOwnerCreate(NULL, "dups");
	/* The same value under two kinds, and the same pair twice. */
	hold(o, 5, &kind_a);
	hold(o, 5, &kind_b);
	hold(o, 5, &kind_a);
	hold(o, 6, &kind_a);
	ResourceOwnerForget(o, Int32GetDatum(5), &kind_a);
	ResourceOwnerForget(o, Int32GetDatum(6), &kind_a);
	ResourceOwnerReleaseAll(o, false);
	ck_assert_str_eq(rec, "b:5 a:5 ");
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

START_TEST(test_leak_warnings)
{
	ResourceOwner o;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();
	o = ResourceOwnerCreate(NULL, "request");
	hold(o, 42, &kind_a);
	hold(o, 7, &kind_d);
	tu_capture_stderr_begin();
	ResourceOwnerReleaseAll(o, true);
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out,
					 "WARNING:  resource was not closed: test thing number 7\n"
					 "DETAIL:  Resource owner \"request\" still held a resource of kind \"dkind\" at commit.\n"
					 "WARNING:  resource was not closed: akind 0x2a\n"
					 "DETAIL:  Resource owner \"request\" still held a resource of kind \"akind\" at commit.\n");
	free(out);
	ck_assert_str_eq(rec, "d:7 a:42 ");

	/* Abort: the same leftovers are released silently. */
	rec_reset();
	hold(o, 42, &kind_a);
	hold(o, 7, &kind_d);
	tu_capture_stderr_begin();
	ResourceOwnerReleaseAll(o, false);
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "");
	free(out);
	ck_assert_str_eq(rec, "d:7 a:42 ");

	/* Commit with everything forgotten by the code: silent as well. */
	rec_reset();
	hold(o, 1, &kind_a);
	ResourceOwnerForget(o, Int32GetDatum(1), &kind_a);
	tu_capture_stderr_begin();
	ResourceOwnerReleaseAll(o, true);
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, "");
	free(out);
	ck_assert_str_eq(rec, "");
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

START_TEST(test_forget_unknown)
{
	ResourceOwner p, c;
	Caught e;
	volatile int caught = 0;

	TU_TEST_BEGIN();
	p = ResourceOwnerCreate(NULL, "parent");
	c = ResourceOwnerCreate(p, "child");
	hold(p, 1, &kind_a);
	hold(c, 2, &kind_a);

	/* Never remembered. */
	PG_TRY();
	{
		ResourceOwnerForget(p, Int32GetDatum(99), &kind_a);
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught++;
	}
	PG_END_TRY();
	ck_assert_int_eq(caught, 1);
	ck_assert_int_eq(e.code, ERRCODE_INTERNAL_ERROR);
	ck_assert_str_eq(e.message, "resource 0x63 of kind \"akind\" is not remembered by resource owner \"parent\"");

	/* Right value, wrong kind. */
	PG_TRY();
	{
		ResourceOwnerForget(p, Int32GetDatum(1), &kind_b);
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught++;
	}
	PG_END_TRY();
	ck_assert_int_eq(caught, 2);
	ck_assert_str_eq(e.message, "resource 0x1 of kind \"bkind\" is not remembered by resource owner \"parent\"");

	/* A child's resource is not the parent's. */
	PG_TRY();
	{
		ResourceOwnerForget(p, Int32GetDatum(2), &kind_a);
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught++;
	}
	PG_END_TRY();
	ck_assert_int_eq(caught, 3);
	ck_assert_str_eq(e.message, "resource 0x2 of kind \"akind\" is not remembered by resource owner \"parent\"");

	/* Forgotten twice. */
	ResourceOwnerForget(c, Int32GetDatum(2), &kind_a);
	PG_TRY();
	{
		ResourceOwnerForget(c, Int32GetDatum(2), &kind_a);
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught++;
	}
	PG_END_TRY();
	ck_assert_int_eq(caught, 4);
	ck_assert_str_eq(e.message, "resource 0x2 of kind \"akind\" is not remembered by resource owner \"child\"");

	/* A NULL kind, or one that could not be released: ERROR, nothing changes. */
	{
		static const ResourceOwnerDesc no_release = {.name = "broken"};

		ResourceOwnerEnlarge(p);
		EXPECT_ERROR(ResourceOwnerRemember(p, Int32GetDatum(5), NULL), ERRCODE_INVALID_PARAMETER_VALUE,
					 "cannot remember a resource in resource owner \"parent\": its kind is NULL");
		static const ResourceOwnerDesc no_phase = {.name = "phaseless", .ReleaseResource = release_a};

		EXPECT_ERROR(ResourceOwnerRemember(p, Int32GetDatum(5), &no_release),
					 ERRCODE_INVALID_PARAMETER_VALUE, "no ReleaseResource function");
		EXPECT_ERROR(ResourceOwnerRemember(p, Int32GetDatum(5), &no_phase),
					 ERRCODE_INVALID_PARAMETER_VALUE, "no valid release phase");
		EXPECT_ERROR(ResourceOwnerForget(p, Int32GetDatum(1), NULL), ERRCODE_INVALID_PARAMETER_VALUE,
					 "cannot forget a resource in resource owner \"parent\": its kind is NULL");
	}

	/* Nothing was lost on the way. */
	rec_reset();
	ResourceOwnerReleaseAll(p, false);
	ck_assert_str_eq(rec, "a:1 ");
	ResourceOwnerDelete(p);
	TU_TEST_END();
}
END_TEST

START_TEST(test_remember_without_enlarge)
{
	ResourceOwner o;
	Caught e;
	volatile int remembered = 0;
	volatile bool caught = false;

	TU_TEST_BEGIN();
	o = ResourceOwnerCreate(NULL, "greedy");
	count_x = 0;
	sum_x = 0;
	PG_TRY();
	{
		/* The inline array has room for a few; then Remember must refuse. */
		for (int i = 1; i <= 1000; i++)
		{
			ResourceOwnerRemember(o, (Datum) i, &kind_x);
			remembered = i;
		}
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught = true;
	}
	PG_END_TRY();
	ck_assert(caught);
	ck_assert_int_gt(remembered, 0);
	ck_assert_int_lt(remembered, 1000);
	ck_assert_int_eq(e.code, ERRCODE_INTERNAL_ERROR);
	ck_assert_str_eq(e.message, "resource owner \"greedy\" has no room for a resource of kind \"xkind\"");

	/* After Enlarge it works again, and nothing was lost. */
	ResourceOwnerEnlarge(o);
	ResourceOwnerRemember(o, (Datum) 5000, &kind_x);
	ResourceOwnerReleaseAll(o, false);
	ck_assert_uint_eq(count_x, (size_t) remembered + 1);
	ck_assert_uint_eq(sum_x, (uint64_t) remembered * (remembered + 1) / 2 + 5000);
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

/* Enlarge+Remember values 1, 2, ... until Enlarge fails; returns how many were remembered. */
static int
fill_until_error(ResourceOwner o, int limit, Caught *e)
{
	volatile int remembered = 0;

	PG_TRY();
	{
		for (int i = 1; i <= limit; i++)
		{
			ResourceOwnerEnlarge(o);
			ResourceOwnerRemember(o, (Datum) i, &kind_x);
			remembered = i;
		}
	}
	PG_CATCH();
	{
		catch_into(e);
	}
	PG_END_TRY();
	return remembered;
}

START_TEST(test_enlarge_out_of_memory)
{
	MemoryContext ctx;
	ResourceOwner o;
	Caught e;
	int n;

	TU_TEST_BEGIN();
	count_x = 0;
	sum_x = 0;
	/* A context without a pool, limited so that the hash table cannot grow far. */
	ctx = AllocSetContextCreate(TopMemoryContext, "limited", 0, 0, 0);
	o = ResourceOwnerCreateInContext(ctx, NULL, "starved");
	/* talloc's memory limit is deprecated, but it is the simplest way to make one subtree run out. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	ck_assert_int_eq(talloc_set_memlimit(ctx, 4096), 0);
#pragma GCC diagnostic pop
	memset(&e, 0, sizeof e);
	n = fill_until_error(o, 100000, &e);
	ck_assert_int_gt(n, 16);
	ck_assert_int_lt(n, 100000);
	ck_assert_int_eq(e.code, ERRCODE_OUT_OF_MEMORY);
	ck_assert_str_eq(e.message, "out of memory");
	ck_assert_msg(strstr(e.detail, "in resource owner \"starved\"") != NULL, "detail: %s", e.detail);

	/* The failed Enlarge changed nothing: all n are still there and forgettable. */
	ResourceOwnerForget(o, (Datum) 1, &kind_x);
	ResourceOwnerForget(o, (Datum) n, &kind_x);
	ResourceOwnerReleaseAll(o, false);
	ck_assert_uint_eq(count_x, (size_t) n - 2);
	ck_assert_uint_eq(sum_x, (uint64_t) n * (n + 1) / 2 - 1 - (uint64_t) n);
	ResourceOwnerDelete(o);
	MemoryContextDelete(ctx);
	TU_TEST_END();
}
END_TEST

START_TEST(test_delete_unreleased)
{
	ResourceOwner p, c;
	Caught e;
	volatile bool caught = false;

	TU_TEST_BEGIN();
	rec_reset();
	p = ResourceOwnerCreate(NULL, "outer");
	c = ResourceOwnerCreate(p, "inner");
	hold(c, 3, &kind_a);
	PG_TRY();
	{
		ResourceOwnerDelete(p);
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught = true;
	}
	PG_END_TRY();
	ck_assert(caught);
	ck_assert_int_eq(e.code, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
	ck_assert_str_eq(e.message, "cannot delete resource owner \"outer\" because it still holds resources");
	ck_assert_str_eq(e.detail, "Resource owner \"inner\" holds 1 resources.");
	/* Both owners are intact: nothing was released or deleted. */
	ck_assert_str_eq(rec, "");
	ck_assert_ptr_eq(ResourceOwnerGetParent(c), p);

	caught = false;
	PG_TRY();
	{
		ResourceOwnerDelete(c);
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught = true;
	}
	PG_END_TRY();
	ck_assert(caught);
	ck_assert_str_eq(e.message, "cannot delete resource owner \"inner\" because it still holds resources");

	ResourceOwnerReleaseAll(p, false);
	ck_assert_str_eq(rec, "a:3 ");
	ResourceOwnerDelete(p);
	TU_TEST_END();
}
END_TEST

/* State for the re-entrancy test: what a ReleaseResource tries to do. */
static ResourceOwner reent_target;
static Caught reent_release_err, reent_forget_err, reent_delete_err, reent_enlarge_err;
static int reent_calls;

static void
release_reent(Datum d)
{
	ResourceOwner self = CurrentResourceOwner;

	reent_calls++;
	rec_add("r:%d ", DatumGetInt32(d));
	PG_TRY();
	{
		ResourceOwnerRelease(reent_target, RESOURCE_RELEASE_AFTER_LOCKS, false, false);
	}
	PG_CATCH();
	{
		catch_into(&reent_release_err);
	}
	PG_END_TRY();
	PG_TRY();
	{
		ResourceOwnerForget(self, Int32GetDatum(1), &kind_a);
	}
	PG_CATCH();
	{
		catch_into(&reent_forget_err);
	}
	PG_END_TRY();
	PG_TRY();
	{
		ResourceOwnerDelete(reent_target);
	}
	PG_CATCH();
	{
		catch_into(&reent_delete_err);
	}
	PG_END_TRY();
	PG_TRY();
	{
		ResourceOwnerEnlarge(self);
	}
	PG_CATCH();
	{
		catch_into(&reent_enlarge_err);
	}
	PG_END_TRY();
}

static const ResourceOwnerDesc kind_reent = {"reentrant", RESOURCE_RELEASE_AFTER_LOCKS, 50,
											 release_reent, NULL};

START_TEST(test_release_during_release)
{
	ResourceOwner p, c;

	TU_TEST_BEGIN();
	rec_reset();
	p = ResourceOwnerCreate(NULL, "busy");
	c = ResourceOwnerCreate(p, "busychild");

	/* The resource releases its own owner again. */
	reent_target = p;
	reent_calls = 0;
	memset(&reent_release_err, 0, sizeof reent_release_err);
	hold(p, 1, &kind_a);
	hold(p, 2, &kind_reent);
	ResourceOwnerReleaseAll(p, false);
	ck_assert_int_eq(reent_calls, 1);
	ck_assert_int_eq(reent_release_err.code, ERRCODE_OBJECT_IN_USE);
	ck_assert_str_eq(reent_release_err.message, "resource owner \"busy\" is already being released");
	/* Storage is frozen during the release: forget and enlarge refuse. */
	ck_assert_int_eq(reent_forget_err.code, ERRCODE_INTERNAL_ERROR);
	ck_assert_str_eq(reent_forget_err.message,
					 "cannot forget a resource of kind \"akind\" in resource owner \"busy\" while it is being released");
	ck_assert_str_eq(reent_enlarge_err.message,
					 "cannot enlarge resource owner \"busy\" while it is being released");
	ck_assert_int_eq(reent_delete_err.code, ERRCODE_OBJECT_IN_USE);
	ck_assert_str_eq(reent_delete_err.message,
					 "cannot delete resource owner \"busy\" while it is being released");
	/* The rest was still released, in order. */
	ck_assert_str_eq(rec, "r:2 a:1 ");

	/* A child's resource releasing an ancestor: the child is busy. */
	rec_reset();
	reent_calls = 0;
	memset(&reent_release_err, 0, sizeof reent_release_err);
	hold(c, 3, &kind_reent);
	ResourceOwnerReleaseAll(p, false);
	ck_assert_int_eq(reent_calls, 1);
	ck_assert_int_eq(reent_release_err.code, ERRCODE_OBJECT_IN_USE);
	ck_assert_str_eq(reent_release_err.message, "resource owner \"busy\" is already being released");

	/* Releasing the child directly, its resource may release the (idle) parent. */
	rec_reset();
	reent_calls = 0;
	memset(&reent_release_err, 0, sizeof reent_release_err);
	hold(c, 4, &kind_reent);
	hold(p, 5, &kind_a);
	reent_target = p;
	ResourceOwnerReleaseAll(c, false);
	ck_assert_int_eq(reent_calls, 1);
	/* p's release reached c, which is being released: refused, nothing released. */
	ck_assert_int_eq(reent_release_err.code, ERRCODE_OBJECT_IN_USE);
	ck_assert_str_eq(reent_release_err.message, "resource owner \"busychild\" is already being released");
	ck_assert_str_eq(reent_release_err.detail, "It is a descendant of resource owner \"busy\".");
	ck_assert_str_eq(rec, "r:4 ");

	/* Once the release is over, the owner is usable again. */
	ResourceOwnerReleaseAll(p, false);
	ck_assert_str_eq(rec, "r:4 a:5 ");
	ResourceOwnerDelete(p);
	TU_TEST_END();
}
END_TEST

/* A ReleaseResource that breaks its contract and raises ERROR. */
static void
release_failing(Datum d)
{
	rec_add("f:%d ", DatumGetInt32(d));
	ereport(ERROR, errcode(ERRCODE_IO_ERROR), errmsg("could not close thing %d", DatumGetInt32(d)));
}

static const ResourceOwnerDesc kind_failing = {"failing", RESOURCE_RELEASE_BEFORE_LOCKS, 300,
											   release_failing, NULL};

START_TEST(test_release_error_continues)
{
	ResourceOwner o;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();
	o = ResourceOwnerCreate(NULL, "brittle");
	hold(o, 1, &kind_lo);
	hold(o, 2, &kind_failing);
	hold(o, 3, &kind_failing);
	hold(o, 4, &kind_b);
	hold(o, 5, &kind_a);
	tu_capture_stderr_begin();
	ResourceOwnerReleaseAll(o, false);
	out = tu_capture_stderr_end();
	ck_assert_str_eq(rec, "lo:1 f:3 f:2 b:4 a:5 ");
	ck_assert_str_eq(out, "WARNING:  could not release failing of resource owner \"brittle\"\n"
						  "DETAIL:  could not close thing 3\n"
						  "WARNING:  could not release failing of resource owner \"brittle\"\n"
						  "DETAIL:  could not close thing 2\n");
	free(out);
	/* No error is left being handled, and the owner is not stuck "releasing". */
	ck_assert_int_eq(geterrcode(), 0);
	ck_assert_ptr_null(PG_exception_stack);
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

/*
 * Releasing an owner inside PG_CATCH, while a ReleaseResource raises (and
 * the release reports and forgets that error): the error the PG_CATCH is
 * handling is still there afterwards, for CopyErrorData() or a re-throw.
 */
START_TEST(test_release_keeps_callers_error)
{
	ResourceOwner o;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();
	o = ResourceOwnerCreate(NULL, "request");
	hold(o, 6, &kind_failing);
	tu_capture_stderr_begin();
	EXPECT_CALLERS_ERROR_KEPT(ResourceOwnerReleaseAll(o, false));
	out = tu_capture_stderr_end();
	ck_assert_str_eq(rec, "f:6 ");
	ck_assert_msg(strstr(out, "DETAIL:  could not close thing 6") != NULL, "%s", out);
	free(out);
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

/*
 * A ReleaseResource that catches its own error and recovers the way
 * elog.h shows (EmitErrorReport + FlushErrorState), inside a caller's
 * PG_CATCH: the flush does not reach the caller's error.
 */
static void
release_recovering(Datum d)
{
	rec_add("r:%d ", DatumGetInt32(d));
	PG_TRY();
	{
		ereport(ERROR, errcode(ERRCODE_IO_ERROR), errmsg("inner failure %d", DatumGetInt32(d)));
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
}

static const ResourceOwnerDesc kind_recovering = {"recovering", RESOURCE_RELEASE_BEFORE_LOCKS, 200,
												  release_recovering, NULL};

START_TEST(test_release_flush_keeps_callers_error)
{
	ResourceOwner o;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();
	o = ResourceOwnerCreate(NULL, "request");
	hold(o, 8, &kind_recovering);
	hold(o, 9, &kind_failing);
	tu_capture_stderr_begin();
	EXPECT_CALLERS_ERROR_KEPT(ResourceOwnerReleaseAll(o, false)); /* its final flush empties the stack */
	out = tu_capture_stderr_end();
	ck_assert_str_eq(rec, "r:8 f:9 ");
	ck_assert_msg(strstr(out, "inner failure 8") != NULL, "%s", out);
	free(out);
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

/* A DebugPrint that breaks its contract and raises ERROR. */
static char *
print_failing(Datum d)
{
	ereport(ERROR, errcode(ERRCODE_DATA_CORRUPTED), errmsg("cannot describe thing %d", DatumGetInt32(d)));
	return NULL;
}

static void release_p(Datum d) { rec_add("p:%d ", DatumGetInt32(d)); }

static const ResourceOwnerDesc kind_badprint = {"badprint", RESOURCE_RELEASE_AFTER_LOCKS, 10,
												release_p, print_failing};

START_TEST(test_leak_warning_error_still_releases)
{
	ResourceOwner o;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();
	o = ResourceOwnerCreate(NULL, "chatty");
	hold(o, 1, &kind_badprint);
	hold(o, 2, &kind_a);
	tu_capture_stderr_begin();
	ResourceOwnerReleaseAll(o, true);
	out = tu_capture_stderr_end();
	/* The leak warning could not be drawn, but the resource was released all the same. */
	ck_assert_str_eq(rec, "p:1 a:2 ");
	ck_assert_msg(strstr(out, "WARNING:  could not release badprint of resource owner \"chatty\"\n"
							  "DETAIL:  cannot describe thing 1\n") != NULL,
				  "stderr: %s", out);
	ck_assert_msg(strstr(out, "WARNING:  resource was not closed: akind 0x2\n") != NULL, "stderr: %s",
				  out);
	free(out);
	ck_assert_int_eq(geterrcode(), 0);
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

/* Chunks taken from TopMemoryContext to starve it (malloc'd array of them). */
typedef struct Hog
{
	void **chunks;
	size_t n;
	size_t cap;
} Hog;

/*
 * Let no new talloc memory below TopMemoryContext, and take every free
 * chunk of every size class in it, so that the next palloc there fails.
 */
static void
starve_top(Hog *hog)
{
	memset(hog, 0, sizeof *hog);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	ck_assert_int_eq(talloc_set_memlimit(TopMemoryContext, talloc_total_size(TopMemoryContext)), 0);
#pragma GCC diagnostic pop
	for (Size size = 8192; size >= 16; size /= 2)
	{
		void *p;

		while ((p = MemoryContextAllocExtended(TopMemoryContext, size, MCXT_ALLOC_NO_OOM)) != NULL)
		{
			if (hog->n == hog->cap)
			{
				hog->cap = hog->cap ? hog->cap * 2 : 64;
				hog->chunks = realloc(hog->chunks, hog->cap * sizeof(void *));
				ck_assert_ptr_nonnull(hog->chunks);
			}
			hog->chunks[hog->n++] = p;
		}
	}
	ck_assert_ptr_null(MemoryContextAllocExtended(TopMemoryContext, 1, MCXT_ALLOC_NO_OOM));
}

/* Undo starve_top(). */
static void
feed_top(Hog *hog)
{
	for (size_t i = 0; i < hog->n; i++)
		pfree(hog->chunks[i]);
	free(hog->chunks);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	ck_assert_int_eq(talloc_set_memlimit(TopMemoryContext, 0), 0);
#pragma GCC diagnostic pop
}

/* ResourceOwnerReleaseAll(o, false); true if an error came out of it (printed). */
static bool
release_raises(ResourceOwner o)
{
	volatile bool escaped = false;

	PG_TRY();
	{
		ResourceOwnerReleaseAll(o, false);
	}
	PG_CATCH();
	{
		escaped = true;
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	return escaped;
}

/*
 * A release whose ReleaseResource fails while TopMemoryContext cannot
 * grow: reporting the failure must not need memory, and the release goes
 * on (the owner is not left "being released").
 */
START_TEST(test_release_failure_out_of_memory)
{
	ResourceOwner o;
	Hog hog;
	bool escaped;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();
	o = ResourceOwnerCreate(NULL, "starving");
	hold(o, 1, &kind_failing);
	hold(o, 2, &kind_b);
	hold(o, 3, &kind_a);

	starve_top(&hog);
	tu_capture_stderr_begin();
	escaped = release_raises(o);
	out = tu_capture_stderr_end();
	feed_top(&hog);

	ck_assert_msg(!escaped, "the release raised an error: %s", out);
	ck_assert_str_eq(rec, "f:1 b:2 a:3 ");
	ck_assert_msg(strstr(out, "WARNING:  could not release failing of resource owner \"starving\"\n") != NULL,
				  "stderr: %s", out);
	free(out);
	ck_assert_int_eq(geterrcode(), 0);
	ResourceOwnerDelete(o);
	TU_TEST_END();
}
END_TEST

static void
record_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	rec_add("%s%d%c%c@%s ", (const char *) arg, (int) phase, isCommit ? 'C' : 'A', isTopLevel ? 'T' : 'S',
			ResourceOwnerGetName(CurrentResourceOwner));
}

static void
self_unregistering_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	(void) isCommit;
	(void) isTopLevel;
	rec_add("once%d ", (int) phase);
	UnregisterResourceReleaseCallback(self_unregistering_callback, arg);
}

START_TEST(test_callbacks)
{
	ResourceOwner p, c;

	TU_TEST_BEGIN();
	rec_reset();
	p = ResourceOwnerCreate(NULL, "P");
	c = ResourceOwnerCreate(p, "C");
	hold(p, 1, &kind_b);
	RegisterResourceReleaseCallback(record_callback, (void *) "x");
	RegisterResourceReleaseCallback(record_callback, (void *) "y");

	ResourceOwnerReleaseAll(p, false);
	/* Per phase: child then parent; per owner: resources, then callbacks newest first. */
	ck_assert_str_eq(rec, "y1AT@C x1AT@C b:1 y1AT@P x1AT@P "
						  "y2AT@C x2AT@C y2AT@P x2AT@P "
						  "y3AT@C x3AT@C y3AT@P x3AT@P ");

	/* Unregister one; the other sees isCommit and isTopLevel as given. */
	rec_reset();
	UnregisterResourceReleaseCallback(record_callback, (void *) "y");
	UnregisterResourceReleaseCallback(record_callback, (void *) "nonexistent");
	ResourceOwnerRelease(c, RESOURCE_RELEASE_LOCKS, true, false);
	ck_assert_str_eq(rec, "x2CS@C ");
	ck_assert_ptr_null(CurrentResourceOwner);

	/* A callback may unregister itself while it runs. */
	rec_reset();
	RegisterResourceReleaseCallback(self_unregistering_callback, NULL);
	ResourceOwnerReleaseAll(c, true);
	ck_assert_str_eq(rec, "once1 x1CS@C x2CS@C x3CS@C ");

	rec_reset();
	UnregisterResourceReleaseCallback(record_callback, (void *) "x");
	ResourceOwnerReleaseAll(p, true);
	ck_assert_str_eq(rec, "");
	ResourceOwnerDelete(p);
	TU_TEST_END();
}
END_TEST

START_TEST(test_reparent)
{
	ResourceOwner a, b, c;
	Caught e;
	volatile bool caught = false;

	TU_TEST_BEGIN();
	rec_reset();
	a = ResourceOwnerCreate(NULL, "A");
	b = ResourceOwnerCreate(NULL, "B");
	c = ResourceOwnerCreate(a, "C");
	hold(c, 1, &kind_a);

	ResourceOwnerNewParent(c, b);
	ck_assert_ptr_eq(ResourceOwnerGetParent(c), b);
	ck_assert_ptr_eq(talloc_parent(c), b);
	ResourceOwnerReleaseAll(a, false);
	ck_assert_str_eq(rec, "");
	ResourceOwnerReleaseAll(b, false);
	ck_assert_str_eq(rec, "a:1 ");

	/* Top level again: it no longer goes with B. */
	hold(c, 2, &kind_a);
	ResourceOwnerNewParent(c, NULL);
	ck_assert_ptr_null(ResourceOwnerGetParent(c));
	ck_assert_ptr_eq(talloc_parent(c), TopMemoryContext);
	ResourceOwnerReleaseAll(b, false);
	ck_assert_str_eq(rec, "a:1 ");
	ResourceOwnerDelete(b);

	/* A cycle is refused and changes nothing. */
	ResourceOwnerNewParent(a, c);
	ck_assert_ptr_eq(ResourceOwnerGetParent(a), c);
	PG_TRY();
	{
		ResourceOwnerNewParent(c, a);
	}
	PG_CATCH();
	{
		catch_into(&e);
		caught = true;
	}
	PG_END_TRY();
	ck_assert(caught);
	ck_assert_int_eq(e.code, ERRCODE_INVALID_PARAMETER_VALUE);
	ck_assert_str_eq(e.message, "cannot move resource owner \"C\" below its own descendant \"A\"");
	ck_assert_ptr_null(ResourceOwnerGetParent(c));

	ResourceOwnerReleaseAll(c, false);
	ck_assert_str_eq(rec, "a:1 a:2 ");
	ResourceOwnerDelete(c); /* and a with it */
	TU_TEST_END();
}
END_TEST

/* A ReleaseResource that moves the owner being released to top level (and records the outcome). */
static ResourceOwner mover_target;
static Caught mover_err;

static void
release_mover(Datum d)
{
	rec_add("m:%d ", DatumGetInt32(d));
	PG_TRY();
	{
		ResourceOwnerNewParent(mover_target, NULL);
	}
	PG_CATCH();
	{
		catch_into(&mover_err);
	}
	PG_END_TRY();
}

static const ResourceOwnerDesc kind_mover = {"mover", RESOURCE_RELEASE_BEFORE_LOCKS, 1, release_mover, NULL};

/*
 * Moving an owner while it is being released would make the release of
 * its old parent lose its place among the siblings: refused with an ERROR,
 * and every sibling is still released.
 */
START_TEST(test_reparent_during_release)
{
	ResourceOwner p, older, newer;

	TU_TEST_BEGIN();
	rec_reset();
	memset(&mover_err, 0, sizeof mover_err);
	p = ResourceOwnerCreate(NULL, "P");
	older = ResourceOwnerCreate(p, "older");
	newer = ResourceOwnerCreate(p, "newer");
	hold(older, 1, &kind_b);
	hold(newer, 2, &kind_mover);
	mover_target = newer;
	ResourceOwnerReleaseAll(p, false);
	ck_assert_str_eq(rec, "m:2 b:1 ");
	ck_assert_int_eq(mover_err.code, ERRCODE_OBJECT_IN_USE);
	ck_assert_str_eq(mover_err.message, "cannot move resource owner \"newer\" while it is being released");
	ck_assert_ptr_eq(ResourceOwnerGetParent(newer), p);
	ResourceOwnerDelete(p);
	TU_TEST_END();
}
END_TEST

static void
failing_request(ResourceOwner owner)
{
	hold(owner, 1, &kind_b);
	hold(owner, 2, &kind_a);
	hold(owner, 3, &kind_l);
	ereport(ERROR, errcode(ERRCODE_DISK_FULL), errmsg("request failed halfway"));
}

START_TEST(test_error_in_try)
{
	ResourceOwner request;
	ResourceOwner outer;
	ResourceOwner volatile saved;
	Caught e;
	volatile bool caught = false;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();
	outer = ResourceOwnerCreate(NULL, "session");
	CurrentResourceOwner = outer;
	request = ResourceOwnerCreate(NULL, "request");
	saved = CurrentResourceOwner;
	CurrentResourceOwner = request;
	tu_capture_stderr_begin();
	PG_TRY();
	{
		failing_request(CurrentResourceOwner);
		CurrentResourceOwner = saved;
		ResourceOwnerReleaseAll(request, true);
	}
	PG_CATCH();
	{
		CurrentResourceOwner = saved;
		catch_into(&e);
		caught = true;
		ResourceOwnerReleaseAll(request, false);
	}
	PG_END_TRY();
	out = tu_capture_stderr_end();
	ck_assert(caught);
	ck_assert_int_eq(e.code, ERRCODE_DISK_FULL);
	ck_assert_str_eq(e.message, "request failed halfway");
	ck_assert_str_eq(rec, "b:1 l:3 a:2 ");
	ck_assert_str_eq(out, "");
	free(out);
	ck_assert_ptr_eq(CurrentResourceOwner, outer);
	ResourceOwnerDelete(request);
	ck_assert_ptr_eq(CurrentResourceOwner, outer);
	ResourceOwnerDelete(outer);
	ck_assert_ptr_null(CurrentResourceOwner);
	TU_TEST_END();
}
END_TEST

START_TEST(test_talloc_free_parent)
{
	MemoryContext ctx;
	ResourceOwner o, child, p, elsewhere;
	void *plain;
	char *out;

	TU_TEST_BEGIN();
	rec_reset();

	/* An owner in a memory context, with a child; the context is deleted. */
	ctx = AllocSetContextCreate(TopMemoryContext, "request context", ALLOCSET_DEFAULT_SIZES);
	o = ResourceOwnerCreateInContext(ctx, NULL, "in context");
	ck_assert_ptr_eq(talloc_parent(o), ctx);
	child = ResourceOwnerCreate(o, "child");
	hold(o, 1, &kind_a);
	hold(o, 2, &kind_b);
	hold(child, 3, &kind_a);
	CurrentResourceOwner = child;
	tu_capture_stderr_begin();
	MemoryContextDelete(ctx);
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out, ""); /* as on abort: silent */
	free(out);
	ck_assert_str_eq(rec, "b:2 a:3 a:1 ");
	ck_assert_ptr_null(CurrentResourceOwner);

	/* A plain talloc parent, freed with talloc_free. */
	rec_reset();
	plain = talloc_new(NULL);
	o = ResourceOwnerCreateInContext((MemoryContext) plain, NULL, "in talloc");
	hold(o, 4, &kind_l);
	ck_assert_int_eq(talloc_free(plain), 0);
	ck_assert_str_eq(rec, "l:4 ");

	/* talloc_free of a parent owner that still holds things. */
	rec_reset();
	p = ResourceOwnerCreate(NULL, "parent");
	child = ResourceOwnerCreate(p, "child");
	hold(child, 5, &kind_a);
	hold(p, 6, &kind_a);
	ck_assert_int_eq(talloc_free(p), 0);
	ck_assert_str_eq(rec, "a:5 a:6 ");

	/*
	 * A child owner whose talloc parent is another context: it goes with
	 * its owner parent, and freeing its context unlinks it from the parent.
	 */
	rec_reset();
	ctx = AllocSetContextCreate(TopMemoryContext, "other", ALLOCSET_SMALL_SIZES);
	p = ResourceOwnerCreate(NULL, "parent");
	elsewhere = ResourceOwnerCreateInContext(ctx, p, "elsewhere");
	ck_assert_ptr_eq(ResourceOwnerGetParent(elsewhere), p);
	hold(elsewhere, 7, &kind_a);
	ResourceOwnerReleaseAll(p, false);
	ck_assert_str_eq(rec, "a:7 ");
	ResourceOwnerDelete(p);
	ck_assert(MemoryContextIsEmpty(ctx));

	elsewhere = ResourceOwnerCreateInContext(ctx, NULL, "elsewhere");
	p = ResourceOwnerCreate(NULL, "parent");
	ResourceOwnerNewParent(elsewhere, p);
	ck_assert_ptr_eq(talloc_parent(elsewhere), ctx); /* stays in its context */
	hold(elsewhere, 8, &kind_a);
	MemoryContextDelete(ctx);
	ck_assert_str_eq(rec, "a:7 a:8 ");
	ResourceOwnerReleaseAll(p, true); /* nothing left below p */
	ResourceOwnerDelete(p);
	TU_TEST_END();
}
END_TEST

/* A small deterministic generator (xorshift64). */
static uint64_t
next_random(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* Try to forget (value, kind); true if that raised ERROR (then described in *e). */
static bool
forget_fails(ResourceOwner o, Datum value, const ResourceOwnerDesc *kind, Caught *e)
{
	volatile bool caught = false;

	PG_TRY();
	{
		ResourceOwnerForget(o, value, kind);
	}
	PG_CATCH();
	{
		catch_into(e);
		caught = true;
	}
	PG_END_TRY();
	return caught;
}

START_TEST(test_million)
{
	const size_t n = 1000000;
	ResourceOwner o;
	Datum *values;
	uint64_t state = 0x9e3779b97f4a7c15u;
	uint64_t expect_sum_x = 0, expect_sum_y = 0;
	size_t expect_x = 0, expect_y = 0;
	Caught e;

	TU_TEST_BEGIN();
	count_x = count_y = 0;
	sum_x = sum_y = 0;
	values = malloc(n * sizeof(Datum));
	ck_assert_ptr_nonnull(values);
	o = ResourceOwnerCreate(NULL, "million");
	/* Values are pointer-like (multiples of 8); every third is of the other kind. */
	for (size_t i = 0; i < n; i++)
	{
		values[i] = (Datum) (i + 1) * 8;
		ResourceOwnerEnlarge(o);
		ResourceOwnerRemember(o, values[i], (i % 3 == 0) ? &kind_y : &kind_x);
	}

	/* Shuffle, forget the first 600000 in that random order, interleaved with new ones. */
	for (size_t i = n - 1; i > 0; i--)
	{
		size_t j = next_random(&state) % (i + 1);
		Datum t = values[i];

		values[i] = values[j];
		values[j] = t;
	}
	for (size_t i = 0; i < 600000; i++)
	{
		Datum v = values[i];

		ResourceOwnerForget(o, v, ((v / 8 - 1) % 3 == 0) ? &kind_y : &kind_x);
		if (i % 4 == 0)
		{
			/* A fresh resource, forgotten a little later. */
			ResourceOwnerEnlarge(o);
			ResourceOwnerRemember(o, (Datum) 1, &kind_x);
		}
		if (i % 4 == 3)
			ResourceOwnerForget(o, (Datum) 1, &kind_x);
	}

	/* A forgotten one cannot be forgotten again. */
	ck_assert(forget_fails(o, values[12345], ((values[12345] / 8 - 1) % 3 == 0) ? &kind_y : &kind_x, &e));
	ck_assert_int_eq(e.code, ERRCODE_INTERNAL_ERROR);

	for (size_t i = 600000; i < n; i++)
	{
		if ((values[i] / 8 - 1) % 3 == 0)
		{
			expect_y++;
			expect_sum_y += values[i];
		}
		else
		{
			expect_x++;
			expect_sum_x += values[i];
		}
	}
	ResourceOwnerReleaseAll(o, false);
	ck_assert_uint_eq(count_x, expect_x);
	ck_assert_uint_eq(count_y, expect_y);
	ck_assert_uint_eq(sum_x, expect_sum_x);
	ck_assert_uint_eq(sum_y, expect_sum_y);
	ResourceOwnerDelete(o);
	free(values);
	TU_TEST_END();
}
END_TEST

START_TEST(test_current_owner_reset)
{
	ResourceOwner p, c, other;

	TU_TEST_BEGIN();
	p = ResourceOwnerCreate(NULL, "p");
	CurrentResourceOwner = p;
	ResourceOwnerDelete(p);
	ck_assert_ptr_null(CurrentResourceOwner);

	p = ResourceOwnerCreate(NULL, "p");
	c = ResourceOwnerCreate(p, "c");
	CurrentResourceOwner = c;
	ResourceOwnerDelete(p);
	ck_assert_ptr_null(CurrentResourceOwner);

	other = ResourceOwnerCreate(NULL, "other");
	p = ResourceOwnerCreate(NULL, "p");
	CurrentResourceOwner = other;
	ResourceOwnerDelete(p);
	ck_assert_ptr_eq(CurrentResourceOwner, other);
	ResourceOwnerDelete(other);
	ck_assert_ptr_null(CurrentResourceOwner);
	TU_TEST_END();
}
END_TEST

/*
 * A FATAL inside a ReleaseResource: the release never resumes, and the
 * exit hooks that run next may still forget what the owner holds (as
 * dsm_detach_all() does with its mappings), while outside an exit such a
 * forget stays an ERROR.
 */
static ResourceOwner fatal_owner;

static void
release_fatal(Datum d)
{
	(void) d;
	elog(FATAL, "release failed for good");
}

static const ResourceOwnerDesc kind_fatal = {"fatalkind", RESOURCE_RELEASE_BEFORE_LOCKS, 1, release_fatal,
											  NULL};

static void
forget_in_hook(int code, Datum arg)
{
	(void) arg;
	tu_report(100 + (uint32_t) code);
	ResourceOwnerForget(fatal_owner, Int32GetDatum(7), &kind_b); /* ERROR would skip the next line */
	tu_report(1);
}

static void
child_fatal_release(void)
{
	MemoryContextInit();
	fatal_owner = ResourceOwnerCreate(NULL, "doomed");
	hold(fatal_owner, 7, &kind_b);     /* priority 400: after the fatal one */
	hold(fatal_owner, 1, &kind_fatal); /* priority 1: released first */
	on_proc_exit(forget_in_hook, 0);
	ResourceOwnerReleaseAll(fatal_owner, false);
	tu_report(2); /* not reached */
}

/* The same, with the release itself run by an exit hook (proc_exit begins again inside it). */
static void
release_in_hook(int code, Datum arg)
{
	(void) code;
	(void) arg;
	ResourceOwnerReleaseAll(fatal_owner, false);
	tu_report(3); /* not reached */
}

static void
child_fatal_release_in_hook(void)
{
	MemoryContextInit();
	fatal_owner = ResourceOwnerCreate(NULL, "doomed");
	hold(fatal_owner, 7, &kind_b);
	hold(fatal_owner, 1, &kind_fatal);
	on_proc_exit(forget_in_hook, 0);
	before_shmem_exit(release_in_hook, 0);
	proc_exit(0);
}

START_TEST(test_fatal_in_release_in_exit_hook)
{
	tu_child_result r;

	TU_TEST_BEGIN();
	tu_run_child(child_fatal_release_in_hook, &r);
	ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1, "status 0x%x: %s", r.status, r.err);
	ck_assert_int_eq(r.nvalues, 2);
	ck_assert_uint_eq(r.values[0], 101);
	ck_assert_uint_eq(r.values[1], 1); /* the forget in the later hook did not raise */
	TU_TEST_END();
}
END_TEST

START_TEST(test_fatal_in_release)
{
	tu_child_result r;

	TU_TEST_BEGIN();
	tu_run_child(child_fatal_release, &r);
	ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1, "status 0x%x: %s", r.status, r.err);
	ck_assert_int_eq(r.nvalues, 2);
	ck_assert_uint_eq(r.values[0], 101); /* the hook ran, exit code 1 */
	ck_assert_uint_eq(r.values[1], 1);   /* and its forget did not raise */
	ck_assert_msg(strstr(r.err, "release failed for good") != NULL, "%s", r.err);
	TU_TEST_END();
}
END_TEST

START_TEST(test_null_owner)
{
	TU_TEST_BEGIN();
	rec_reset();
	/* Session lifetime: nothing is remembered, nothing fails. */
	ResourceOwnerEnlarge(NULL);
	ResourceOwnerRemember(NULL, Int32GetDatum(1), &kind_a);
	ResourceOwnerForget(NULL, Int32GetDatum(1), &kind_a);
	ResourceOwnerRelease(NULL, RESOURCE_RELEASE_LOCKS, true, true);
	ResourceOwnerReleaseAll(NULL, true);
	ResourceOwnerDelete(NULL);
	ck_assert_ptr_null(ResourceOwnerGetParent(NULL));
	ck_assert_ptr_null(ResourceOwnerGetName(NULL));
	ck_assert_str_eq(rec, "");
	TU_TEST_END();
}
END_TEST

static Suite *
resowner_suite(void)
{
	Suite *s = suite_create("resowner");
	TCase *tc = tu_tcase("core", 10);

	tcase_add_test(tc, test_release_order);
	tcase_add_test(tc, test_duplicates_and_forget);
	tcase_add_test(tc, test_leak_warnings);
	tcase_add_test(tc, test_forget_unknown);
	tcase_add_test(tc, test_remember_without_enlarge);
	tcase_add_test(tc, test_enlarge_out_of_memory);
	tcase_add_test(tc, test_delete_unreleased);
	tcase_add_test(tc, test_release_during_release);
	tcase_add_test(tc, test_release_error_continues);
	tcase_add_test(tc, test_leak_warning_error_still_releases);
	tcase_add_test(tc, test_release_failure_out_of_memory);
	tcase_add_test(tc, test_callbacks);
	tcase_add_test(tc, test_reparent);
	tcase_add_test(tc, test_reparent_during_release);
	tcase_add_test(tc, test_error_in_try);
	tcase_add_test(tc, test_talloc_free_parent);
	tcase_add_test(tc, test_current_owner_reset);
	tcase_add_test(tc, test_null_owner);
	tcase_add_test(tc, test_fatal_in_release);
	tcase_add_test(tc, test_release_keeps_callers_error);
	tcase_add_test(tc, test_release_flush_keeps_callers_error);
	tcase_add_test(tc, test_fatal_in_release_in_exit_hook);
	suite_add_tcase(s, tc);

	tc = tu_tcase("large", 120);
	tcase_add_test(tc, test_million);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	/*
	 * The process-wide contexts exist before any test takes its baseline.
	 * Null tracking first, so that TopMemoryContext hangs below talloc's
	 * null context: an empty null context would look leaked to LeakSanitizer.
	 */
	talloc_enable_null_tracking();
	MemoryContextInit();
	return tu_run_suite(resowner_suite());
}
