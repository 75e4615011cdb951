/*
 * check_mcxt.c: tests of memory contexts (palloc, reset/delete, callbacks,
 * statistics, bad input).
 *
 * Every test calls mc_begin() first: it turns on talloc's null tracking and
 * creates TopMemoryContext and ErrorContext (they live as long as the
 * process) before taking the leak baseline, so that TU_TEST_END() checks
 * only what the test itself allocated.  The one exception is
 * test_lazy_init, which checks what the first palloc() creates.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <talloc.h>

#include <dsmkit/elog.h>
#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>

#include "testutil.h"

static void
mc_begin(void)
{
	talloc_enable_null_tracking();
	MemoryContextInit();
	CurrentMemoryContext = TopMemoryContext;
	TU_TEST_BEGIN();
}

/* talloc's memory limit is deprecated but is the simplest way to make malloc fail in one subtree. */
static void
set_memlimit(const void *ctx, size_t max)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	ck_assert_int_eq(talloc_set_memlimit(ctx, max), 0);
#pragma GCC diagnostic pop
}

/* ---- catching errors ---------------------------------------------------- */

/* What a caught error looked like (copied, so nothing stays allocated). */
typedef struct Caught
{
	bool raised;
	int code;
	char message[512];
	char detail[512];
} Caught;

typedef void (*ThrowingFn)(void *arg);

/* Run fn(arg); if it raises ERROR, record the report in *out and recover. */
static void
catch_error(ThrowingFn fn, void *arg, Caught *out)
{
	memset(out, 0, sizeof *out);
	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		ErrorData *ed = CopyErrorData();

		out->raised = true;
		out->code = ed->sqlerrcode;
		snprintf(out->message, sizeof out->message, "%s", ed->message ? ed->message : "");
		snprintf(out->detail, sizeof out->detail, "%s", ed->detail ? ed->detail : "");
		FreeErrorData(ed);
		FlushErrorState();
		MemoryContextSwitchTo(old);
	}
	PG_END_TRY();
}

#define ck_assert_raised(c, errcode_, msg_) \
	do { \
		ck_assert_msg((c).raised, "no error raised"); \
		ck_assert_str_eq((c).message, (msg_)); \
		ck_assert_str_eq(unpack_sql_state((c).code), unpack_sql_state(errcode_)); \
	} while (0)

/* ---- callbacks recording their order ------------------------------------ */

static char cb_log[256];

static void
record_cb(void *arg)
{
	strcat(cb_log, (const char *) arg);
	strcat(cb_log, " ");
}

/* A reset callback allocated in ctx, recording tag when it runs. */
static void
add_cb(MemoryContext ctx, const char *tag)
{
	MemoryContextCallback *cb = MemoryContextAlloc(ctx, sizeof *cb);

	cb->func = record_cb;
	cb->arg = (void *) tag;
	MemoryContextRegisterResetCallback(ctx, cb);
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(test_lazy_init)
{
	void *p;

	talloc_enable_null_tracking();
	if (TopMemoryContext == NULL) /* a fresh process (check's fork mode) */
	{
		size_t before = talloc_total_blocks(NULL);

		ck_assert_ptr_null(CurrentMemoryContext);
		ck_assert_ptr_null(ErrorContext);
		p = palloc(10);
		ck_assert_ptr_nonnull(TopMemoryContext);
		ck_assert_ptr_eq(CurrentMemoryContext, TopMemoryContext);
		ck_assert_ptr_nonnull(ErrorContext);
		ck_assert_ptr_eq(MemoryContextGetParent(ErrorContext), TopMemoryContext);
		ck_assert_ptr_null(MemoryContextGetParent(TopMemoryContext));
		ck_assert_str_eq(MemoryContextGetName(TopMemoryContext), "TopMemoryContext");
		ck_assert_str_eq(MemoryContextGetName(ErrorContext), "ErrorContext");
		ck_assert_ptr_eq(GetMemoryChunkContext(p), TopMemoryContext);
		pfree(p);
		/* Exactly the two long-lived contexts remain; init is idempotent. */
		ck_assert_uint_eq(talloc_total_blocks(NULL), before + 2);
		MemoryContextInit();
		ck_assert_uint_eq(talloc_total_blocks(NULL), before + 2);
	}
	TU_TEST_BEGIN();
	p = palloc(10);
	ck_assert_ptr_eq(GetMemoryChunkContext(p), CurrentMemoryContext);
	pfree(p);
	TU_TEST_END();
}
END_TEST

START_TEST(test_nested_switch_alloc)
{
	MemoryContext a, b, old;
	char *pa, *pb, *pt;

	mc_begin();
	a = AllocSetContextCreate(TopMemoryContext, "A", ALLOCSET_DEFAULT_SIZES);
	b = AllocSetContextCreate(a, "B", ALLOCSET_SMALL_SIZES);
	ck_assert_ptr_eq(MemoryContextGetParent(a), TopMemoryContext);
	ck_assert_ptr_eq(MemoryContextGetParent(b), a);
	ck_assert_str_eq(MemoryContextGetName(b), "B");

	old = MemoryContextSwitchTo(b);
	ck_assert_ptr_eq(old, TopMemoryContext);
	ck_assert_ptr_eq(CurrentMemoryContext, b);
	pb = palloc(32);
	pa = MemoryContextAlloc(a, 32);
	ck_assert_ptr_eq(MemoryContextSwitchTo(a), b);
	pt = MemoryContextAlloc(TopMemoryContext, 8);
	memset(pa, 'a', 32);
	memset(pb, 'b', 32);
	ck_assert_ptr_eq(GetMemoryChunkContext(pb), b);
	ck_assert_ptr_eq(GetMemoryChunkContext(pa), a);
	ck_assert_ptr_eq(GetMemoryChunkContext(pt), TopMemoryContext);
	ck_assert_uint_eq(GetMemoryChunkSpace(pb), 32);
	/* A chunk is a talloc child of its context. */
	ck_assert_ptr_eq(talloc_parent(pb), b);
	ck_assert_ptr_eq(talloc_parent(b), a);
	MemoryContextSwitchTo(old);
	pfree(pt);
	pfree(pb);
	ck_assert_int_eq(pa[31], 'a');
	MemoryContextDelete(a); /* takes b and pa along */
	ck_assert_ptr_eq(CurrentMemoryContext, TopMemoryContext);
	TU_TEST_END();
}
END_TEST

START_TEST(test_palloc0_zeroes)
{
	MemoryContext ctx;
	unsigned char *p;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "zero", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(ctx);
	for (int round = 0; round < 4; round++)
	{
		/* Dirty the pool's space first, so zeroes cannot come for free. */
		p = palloc(200);
		memset(p, 0xAA, 200);
		pfree(p);
		switch (round)
		{
			case 0: p = palloc0(200); break;
			case 1: p = MemoryContextAllocZero(ctx, 200); break;
			case 2: p = palloc_extended(200, MCXT_ALLOC_ZERO); break;
			default: p = MemoryContextAllocExtended(ctx, 200, MCXT_ALLOC_ZERO); break;
		}
		for (int i = 0; i < 200; i++)
			ck_assert_int_eq(p[i], 0);
		pfree(p);
	}
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextDelete(ctx);
	TU_TEST_END();
}
END_TEST

START_TEST(test_repalloc)
{
	MemoryContext ctx;
	unsigned char *p, *other;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "re", ALLOCSET_SMALL_SIZES);
	p = MemoryContextAlloc(ctx, 16);
	other = MemoryContextAlloc(ctx, 16); /* so p cannot simply grow in place */
	for (int i = 0; i < 16; i++)
		p[i] = (unsigned char) i;
	/* Grow past the pool: the data and the context stay. */
	p = repalloc(p, 100000);
	ck_assert_uint_eq(GetMemoryChunkSpace(p), 100000);
	ck_assert_ptr_eq(GetMemoryChunkContext(p), ctx);
	for (int i = 0; i < 16; i++)
		ck_assert_int_eq(p[i], i);
	memset(p + 16, 0x5A, 100000 - 16);
	/* Shrink. */
	p = repalloc(p, 8);
	ck_assert_uint_eq(GetMemoryChunkSpace(p), 8);
	ck_assert_ptr_eq(GetMemoryChunkContext(p), ctx);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(p[i], i);
	/* Zero bytes still gives a chunk of the same context. */
	p = repalloc(p, 0);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(GetMemoryChunkSpace(p), 0);
	ck_assert_ptr_eq(GetMemoryChunkContext(p), ctx);
	p = repalloc(p, 4);
	ck_assert_ptr_eq(GetMemoryChunkContext(p), ctx);
	pfree(p);
	pfree(other);
	ck_assert(MemoryContextIsEmpty(ctx));
	MemoryContextDelete(ctx);
	TU_TEST_END();
}
END_TEST

START_TEST(test_strings)
{
	MemoryContext ctx;
	char *s, big[5001];

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "str", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(ctx);
	s = pstrdup("hello");
	ck_assert_str_eq(s, "hello");
	ck_assert_ptr_eq(GetMemoryChunkContext(s), ctx);
	ck_assert_str_eq(pnstrdup("abcdef", 3), "abc");
	ck_assert_str_eq(pnstrdup("ab", 10), "ab");
	s = pnstrdup("abcdef", 0);
	ck_assert_str_eq(s, "");
	ck_assert_str_eq(psprintf("%d-%s-%c", 42, "x", 'y'), "42-x-y");
	memset(big, 'q', 5000);
	big[5000] = '\0';
	s = psprintf("<%s>", big);
	ck_assert_uint_eq(strlen(s), 5002);
	ck_assert_int_eq(s[0], '<');
	ck_assert_int_eq(s[5001], '>');
	ck_assert_ptr_eq(GetMemoryChunkContext(s), ctx);
	s = MemoryContextStrdup(TopMemoryContext, "top");
	ck_assert_str_eq(s, "top");
	ck_assert_ptr_eq(GetMemoryChunkContext(s), TopMemoryContext);
	pfree(s);
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextDelete(ctx);
	TU_TEST_END();
}
END_TEST

START_TEST(test_reset_keeps_context)
{
	MemoryContext ctx, child, grandchild;
	char *p;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "resettable", ALLOCSET_DEFAULT_SIZES);
	child = AllocSetContextCreate(ctx, "child", ALLOCSET_SMALL_SIZES);
	grandchild = AllocSetContextCreate(child, "grandchild", 0, 0, 0);
	for (int i = 0; i < 100; i++)
		(void) MemoryContextAlloc(ctx, 100);
	(void) MemoryContextAlloc(child, 10);
	(void) MemoryContextAlloc(grandchild, 10);
	add_cb(grandchild, "g");
	ck_assert(!MemoryContextIsEmpty(ctx));
	MemoryContextSwitchTo(grandchild);

	cb_log[0] = '\0';
	MemoryContextReset(ctx);
	ck_assert_str_eq(cb_log, "g ");
	/* The children are gone, the context stays and is empty. */
	ck_assert(MemoryContextIsEmpty(ctx));
	ck_assert_uint_eq(talloc_total_blocks(ctx), 1);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, true), 0);
	ck_assert_str_eq(MemoryContextGetName(ctx), "resettable");
	/* The current context was below: it fell back to the reset one. */
	ck_assert_ptr_eq(CurrentMemoryContext, ctx);
	p = palloc(10);
	strcpy(p, "again");
	ck_assert_ptr_eq(GetMemoryChunkContext(p), ctx);
	/* A second reset runs no callback again. */
	cb_log[0] = '\0';
	MemoryContextReset(ctx);
	ck_assert_str_eq(cb_log, "");
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextDelete(ctx);
	TU_TEST_END();
}
END_TEST

START_TEST(test_delete_current_falls_back)
{
	MemoryContext ctx, child;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "doomed", ALLOCSET_DEFAULT_SIZES);
	child = AllocSetContextCreate(ctx, "doomed child", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(child);
	(void) palloc(10);
	MemoryContextDelete(child);
	ck_assert_ptr_eq(CurrentMemoryContext, ctx);
	child = AllocSetContextCreate(ctx, "doomed child 2", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(child);
	(void) palloc(10);
	MemoryContextDelete(ctx); /* an ancestor of the current context */
	ck_assert_ptr_eq(CurrentMemoryContext, TopMemoryContext);
	TU_TEST_END();
}
END_TEST

START_TEST(test_callbacks_order)
{
	MemoryContext p, c1, c2, g;

	mc_begin();
	p = AllocSetContextCreate(TopMemoryContext, "P", ALLOCSET_DEFAULT_SIZES);
	c1 = AllocSetContextCreate(p, "C1", ALLOCSET_SMALL_SIZES);
	c2 = AllocSetContextCreate(p, "C2", ALLOCSET_SMALL_SIZES);
	g = AllocSetContextCreate(c1, "G", ALLOCSET_SMALL_SIZES);
	add_cb(p, "p1");
	add_cb(p, "p2");
	add_cb(c1, "c1a");
	add_cb(c1, "c1b");
	add_cb(c2, "c2");
	add_cb(g, "g");

	/* Reset: children (newest first, each after its own children), then P, each list LIFO. */
	cb_log[0] = '\0';
	MemoryContextReset(p);
	ck_assert_str_eq(cb_log, "c2 g c1b c1a p2 p1 ");

	/* Delete: the same order. */
	c1 = AllocSetContextCreate(p, "C1", ALLOCSET_SMALL_SIZES);
	g = AllocSetContextCreate(c1, "G", ALLOCSET_SMALL_SIZES);
	add_cb(p, "p1");
	add_cb(c1, "c1");
	add_cb(g, "g");
	cb_log[0] = '\0';
	MemoryContextDelete(p);
	ck_assert_str_eq(cb_log, "g c1 p1 ");
	TU_TEST_END();
}
END_TEST

START_TEST(test_talloc_free_is_delete)
{
	MemoryContext ctx, child;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "freed by talloc", ALLOCSET_DEFAULT_SIZES);
	child = AllocSetContextCreate(ctx, "its child", ALLOCSET_DEFAULT_SIZES);
	add_cb(ctx, "ctx");
	add_cb(child, "child");
	MemoryContextSwitchTo(child);
	cb_log[0] = '\0';
	ck_assert_int_eq(talloc_free(ctx), 0);
	ck_assert_str_eq(cb_log, "child ctx ");
	ck_assert_ptr_eq(CurrentMemoryContext, TopMemoryContext);
	TU_TEST_END();
}
END_TEST

static void
setparent_cycle(void *arg)
{
	MemoryContext *pair = arg;

	MemoryContextSetParent(pair[0], pair[1]);
}

START_TEST(test_set_parent)
{
	MemoryContext a, b, c, pair[2];
	char *p;
	Caught e;

	mc_begin();
	a = AllocSetContextCreate(TopMemoryContext, "A", ALLOCSET_DEFAULT_SIZES);
	b = AllocSetContextCreate(TopMemoryContext, "B", ALLOCSET_DEFAULT_SIZES);
	c = AllocSetContextCreate(a, "C", ALLOCSET_DEFAULT_SIZES);
	p = MemoryContextStrdup(c, "survivor");
	add_cb(c, "c");

	MemoryContextSetParent(c, b);
	ck_assert_ptr_eq(MemoryContextGetParent(c), b);
	ck_assert_ptr_eq(talloc_parent(c), b);
	cb_log[0] = '\0';
	MemoryContextDelete(a);
	ck_assert_str_eq(cb_log, "");
	ck_assert_str_eq(p, "survivor");
	ck_assert_ptr_eq(GetMemoryChunkContext(p), c);

	/* A cycle is refused: b cannot go below its own child c. */
	pair[0] = b;
	pair[1] = c;
	catch_error(setparent_cycle, pair, &e);
	ck_assert_raised(e, ERRCODE_INVALID_PARAMETER_VALUE, "cannot move memory context \"B\" below \"C\"");
	pair[0] = c;
	catch_error(setparent_cycle, pair, &e);
	ck_assert(e.raised);
	ck_assert_ptr_eq(MemoryContextGetParent(b), TopMemoryContext);

	MemoryContextDelete(b);
	ck_assert_str_eq(cb_log, "c ");
	TU_TEST_END();
}
END_TEST

START_TEST(test_chunk_context)
{
	MemoryContext a, b;
	char *pa, *pb, *nested;

	mc_begin();
	a = AllocSetContextCreate(TopMemoryContext, "A", ALLOCSET_DEFAULT_SIZES);
	b = AllocSetContextCreate(a, "B", 0, 0, 0);
	pa = MemoryContextAlloc(a, 10);
	for (int i = 0; i < 50; i++)
		(void) MemoryContextAlloc(a, 10);
	pb = MemoryContextAlloc(b, 10);
	ck_assert_ptr_eq(GetMemoryChunkContext(pa), a);
	ck_assert_ptr_eq(GetMemoryChunkContext(pb), b);
	/* A chunk moved below another chunk still belongs to the nearest context. */
	nested = MemoryContextAlloc(b, 10);
	(void) talloc_steal(pa, nested);
	ck_assert_ptr_eq(GetMemoryChunkContext(nested), a);
	pfree(nested);
	MemoryContextDelete(a);
	TU_TEST_END();
}
END_TEST

START_TEST(test_mem_allocated)
{
	MemoryContext ctx, child;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "counted", ALLOCSET_DEFAULT_SIZES);
	child = AllocSetContextCreate(ctx, "counted child", ALLOCSET_SMALL_SIZES);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, true), 0);
	(void) MemoryContextAlloc(ctx, 100);
	(void) MemoryContextAlloc(ctx, 28);
	(void) MemoryContextAlloc(child, 50);
	(void) MemoryContextAlloc(child, 20000); /* beyond the pool: counted the same */
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), 128);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, true), 128 + 50 + 20000);
	ck_assert_uint_eq(MemoryContextMemAllocated(child, true), 20050);
	MemoryContextReset(child);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, true), 128);
	MemoryContextDelete(ctx);
	TU_TEST_END();
}
END_TEST

START_TEST(test_stats_text)
{
	MemoryContext parent, child, grandchild;
	char *out;

	mc_begin();
	parent = AllocSetContextCreate(TopMemoryContext, "stats parent", ALLOCSET_DEFAULT_SIZES);
	child = AllocSetContextCreate(parent, "stats child", ALLOCSET_SMALL_SIZES);
	grandchild = AllocSetContextCreate(child, "stats grandchild", 0, 0, 0);
	(void) MemoryContextAlloc(parent, 10);
	(void) MemoryContextAlloc(parent, 20);
	(void) MemoryContextAlloc(child, 5);
	(void) talloc_size(grandchild, 7); /* a caller's own talloc object counts too */

	tu_capture_stderr_begin();
	MemoryContextStats(parent);
	out = tu_capture_stderr_end();
	ck_assert_str_eq(out,
					 "stats parent: 2 chunks, 30 bytes\n"
					 "  stats child: 1 chunks, 5 bytes\n"
					 "    stats grandchild: 1 chunks, 7 bytes\n"
					 "Grand total: 3 contexts, 4 chunks, 42 bytes\n");
	free(out);

	/* The whole tree starts at TopMemoryContext and shows ErrorContext one level down. */
	tu_capture_stderr_begin();
	MemoryContextStats(TopMemoryContext);
	out = tu_capture_stderr_end();
	ck_assert_msg(strncmp(out, "TopMemoryContext: ", 18) == 0, "got: %s", out);
	ck_assert_msg(strstr(out, "\n  ErrorContext: 0 chunks, 0 bytes\n") != NULL, "got: %s", out);
	ck_assert_msg(strstr(out, "\n    stats child: 1 chunks, 5 bytes\n") != NULL, "got: %s", out);
	ck_assert_msg(strstr(out, "\nGrand total: ") != NULL, "got: %s", out);
	free(out);
	MemoryContextDelete(parent);
	TU_TEST_END();
}
END_TEST

static void
alloc_size(void *arg)
{
	(void) palloc(*(Size *) arg);
}

static void
alloc_huge(void *arg)
{
	(void) palloc_extended(*(Size *) arg, MCXT_ALLOC_HUGE);
}

static void *re_ptr;

static void
realloc_size(void *arg)
{
	re_ptr = repalloc(re_ptr, *(Size *) arg);
}

START_TEST(test_huge_sizes)
{
	Size size;
	Caught e;
	char *p;

	mc_begin();
	size = MaxAllocSize + 1;
	catch_error(alloc_size, &size, &e);
	ck_assert_raised(e, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "invalid memory alloc request size 1073741824");
	ck_assert_str_eq(e.detail, "Requests over 1073741823 bytes need MCXT_ALLOC_HUGE.");
	/* HUGE passes the first check but talloc's own ceiling stays. */
	catch_error(alloc_huge, &size, &e);
	ck_assert_raised(e, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "invalid memory alloc request size 1073741824");
	ck_assert_str_eq(e.detail, "talloc allocates at most 268435455 bytes in one chunk.");
	size = MaxTallocChunkSize + 1;
	catch_error(alloc_size, &size, &e);
	ck_assert_raised(e, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "invalid memory alloc request size 268435456");
	size = (Size) -1;
	catch_error(alloc_huge, &size, &e);
	ck_assert(e.raised);
	ck_assert_int_eq(e.code, ERRCODE_PROGRAM_LIMIT_EXCEEDED);

	/* repalloc checks too, and leaves the chunk alone. */
	p = palloc(8);
	strcpy(p, "intact");
	re_ptr = p;
	size = MaxAllocSize + 1;
	catch_error(realloc_size, &size, &e);
	ck_assert_raised(e, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "invalid memory alloc request size 1073741824");
	ck_assert_ptr_eq(re_ptr, p);
	ck_assert_str_eq(p, "intact");
	pfree(p);
	TU_TEST_END();
}
END_TEST

static MemoryContext oom_ctx;

static void
alloc_in_oom_ctx(void *arg)
{
	(void) MemoryContextAlloc(oom_ctx, *(Size *) arg);
}

START_TEST(test_out_of_memory)
{
	Size size = 100000;
	Caught e;
	char *p;

	mc_begin();
	oom_ctx = AllocSetContextCreate(TopMemoryContext, "oom", ALLOCSET_SMALL_SIZES);
	set_memlimit(oom_ctx, 50000);

	/* NO_OOM: NULL instead of an error, through both entry points. */
	ck_assert_ptr_null(MemoryContextAllocExtended(oom_ctx, size, MCXT_ALLOC_NO_OOM));
	MemoryContextSwitchTo(oom_ctx);
	ck_assert_ptr_null(palloc_extended(size, MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO));
	MemoryContextSwitchTo(TopMemoryContext);

	catch_error(alloc_in_oom_ctx, &size, &e);
	ck_assert_raised(e, ERRCODE_OUT_OF_MEMORY, "out of memory");
	ck_assert_str_eq(e.detail, "Failed on request of size 100000 in memory context \"oom\".");

	/* A growing repalloc that fails keeps the old chunk. */
	p = MemoryContextAlloc(oom_ctx, 2000);
	strcpy(p, "kept");
	re_ptr = p;
	catch_error(realloc_size, &size, &e);
	ck_assert_raised(e, ERRCODE_OUT_OF_MEMORY, "out of memory");
	ck_assert_str_eq(e.detail, "Failed on request of size 100000 in memory context \"oom\".");
	ck_assert_ptr_eq(re_ptr, p);
	ck_assert_str_eq(p, "kept");

	/* Smaller requests still work. */
	p = MemoryContextAlloc(oom_ctx, 1000);
	ck_assert_ptr_nonnull(p);
	MemoryContextDelete(oom_ctx);
	TU_TEST_END();
}
END_TEST

/*
 * With every malloc below TopMemoryContext refused, an out-of-memory error
 * can still be raised, caught and reported, and ErrorContext still gives
 * memory from its reserve.
 */
START_TEST(test_error_context_reserve)
{
	volatile bool caught = false;
	volatile int code = 0;
	MemoryContext ctx;
	void *p;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "starved", 0, 0, 0);
	set_memlimit(TopMemoryContext, 1);
	PG_TRY();
	{
		(void) MemoryContextAlloc(ctx, 64);
	}
	PG_CATCH();
	{
		caught = true;
		code = geterrcode();
		FlushErrorState();
	}
	PG_END_TRY();
	p = MemoryContextAllocExtended(ErrorContext, 4000, MCXT_ALLOC_NO_OOM);
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_null(MemoryContextAllocExtended(ctx, 64, MCXT_ALLOC_NO_OOM));
	set_memlimit(TopMemoryContext, 0);
	ck_assert(caught);
	ck_assert_str_eq(unpack_sql_state(code), unpack_sql_state(ERRCODE_OUT_OF_MEMORY));
	MemoryContextReset(ErrorContext);
	MemoryContextDelete(ctx);
	TU_TEST_END();
}
END_TEST

static void
do_pfree(void *arg)
{
	pfree(arg);
}

static void
do_repalloc(void *arg)
{
	(void) repalloc(arg, 10);
}

static void
do_chunk_context(void *arg)
{
	(void) GetMemoryChunkContext(arg);
}

START_TEST(test_bad_pointers)
{
	MemoryContext ctx;
	char *buf, *raw, *s;
	void *loose, *hung;
	char want[128];
	Caught e;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "bad pointers", ALLOCSET_DEFAULT_SIZES);
	add_cb(ctx, "ctx");

	catch_error(do_pfree, NULL, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, "pfree called with NULL pointer");
	catch_error(do_repalloc, NULL, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, "repalloc called with NULL pointer");

	/* The middle of a palloc'd buffer. */
	buf = MemoryContextAllocZero(ctx, 512);
	strcpy(buf, "still here");
	snprintf(want, sizeof want, "pfree called with invalid pointer %p", (void *) (buf + 128));
	catch_error(do_pfree, buf + 128, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	ck_assert_msg(strstr(e.detail, "not returned by palloc") != NULL, "detail: %s", e.detail);
	snprintf(want, sizeof want, "repalloc called with invalid pointer %p", (void *) (buf + 128));
	catch_error(do_repalloc, buf + 128, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	ck_assert_str_eq(buf, "still here");

	/* Plain malloc memory. */
	raw = calloc(1, 256);
	ck_assert_ptr_nonnull(raw);
	snprintf(want, sizeof want, "pfree called with invalid pointer %p", (void *) (raw + 128));
	catch_error(do_pfree, raw + 128, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	snprintf(want, sizeof want, "GetMemoryChunkContext called with invalid pointer %p",
			 (void *) (raw + 128));
	catch_error(do_chunk_context, raw + 128, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	free(raw);

	/* A talloc object under no context, and one a caller hung below a context. */
	loose = talloc_named_const(NULL, 16, "loose object");
	snprintf(want, sizeof want, "pfree called with invalid pointer %p", loose);
	catch_error(do_pfree, loose, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	ck_assert_str_eq(e.detail,
					 "The pointer is a talloc object named \"loose object\", not a chunk returned by palloc.");
	hung = talloc_named_const(ctx, 16, "hung object");
	catch_error(do_repalloc, hung, &e);
	ck_assert(e.raised);
	ck_assert_msg(strstr(e.detail, "\"hung object\"") != NULL, "detail: %s", e.detail);
	ck_assert_str_eq(talloc_get_name(loose), "loose object"); /* untouched */
	talloc_free(loose);

	/* A memory context is not a chunk. */
	catch_error(do_pfree, ctx, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR,
					 "pfree called with memory context \"bad pointers\" instead of a chunk");

	/* After all that, the context is intact and deletes normally. */
	s = MemoryContextStrdup(ctx, "ok");
	ck_assert_ptr_eq(GetMemoryChunkContext(s), ctx);
	cb_log[0] = '\0';
	MemoryContextDelete(ctx);
	ck_assert_str_eq(cb_log, "ctx ");
	TU_TEST_END();
}
END_TEST

static void
do_delete(void *arg)
{
	MemoryContextDelete(arg);
}

START_TEST(test_delete_top_refused)
{
	Caught e;
	char *p;

	mc_begin();
	catch_error(do_delete, TopMemoryContext, &e);
	ck_assert_raised(e, ERRCODE_OBJECT_IN_USE, "cannot delete memory context \"TopMemoryContext\"");
	catch_error(do_delete, ErrorContext, &e);
	ck_assert_raised(e, ERRCODE_OBJECT_IN_USE, "cannot delete memory context \"ErrorContext\"");
	/* talloc_free is refused by the destructor as well. */
	ck_assert_int_ne(talloc_free(TopMemoryContext), 0);
	p = MemoryContextStrdup(TopMemoryContext, "alive");
	ck_assert_str_eq(p, "alive");
	ck_assert_ptr_nonnull(ErrorContext);
	pfree(p);
	TU_TEST_END();
}
END_TEST

static int destructor_runs;

static int
counting_destructor(int *obj)
{
	(void) obj;
	destructor_runs++;
	return 0;
}

START_TEST(test_user_talloc_objects)
{
	MemoryContext ctx;
	int *obj, *under_chunk;
	char *chunk;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "hosts talloc objects", ALLOCSET_DEFAULT_SIZES);
	for (int round = 0; round < 2; round++)
	{
		destructor_runs = 0;
		obj = talloc(ctx, int);
		talloc_set_destructor(obj, counting_destructor);
		chunk = MemoryContextAlloc(ctx, 32);
		under_chunk = talloc(chunk, int);
		talloc_set_destructor(under_chunk, counting_destructor);
		if (round == 0)
		{
			MemoryContextReset(ctx);
			ck_assert_int_eq(destructor_runs, 2);
			ck_assert(MemoryContextIsEmpty(ctx));
		}
		else
		{
			MemoryContextDelete(ctx);
			ck_assert_int_eq(destructor_runs, 2);
		}
	}
	TU_TEST_END();
}
END_TEST

static void
throwing_cb(void *arg)
{
	(void) arg;
	strcat(cb_log, "throw ");
	elog(ERROR, "callback failure");
}

START_TEST(test_callback_error_does_not_stop_cleanup)
{
	MemoryContext ctx;
	MemoryContextCallback *cb;
	char *err;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "throwing", ALLOCSET_DEFAULT_SIZES);
	add_cb(ctx, "first");
	cb = MemoryContextAlloc(ctx, sizeof *cb);
	cb->func = throwing_cb;
	cb->arg = NULL;
	MemoryContextRegisterResetCallback(ctx, cb);
	add_cb(ctx, "last");
	cb_log[0] = '\0';
	tu_capture_stderr_begin();
	MemoryContextDelete(ctx);
	err = tu_capture_stderr_end();
	ck_assert_str_eq(cb_log, "last throw first ");
	ck_assert_msg(strstr(err, "callback failure") != NULL, "stderr: %s", err);
	ck_assert_msg(strstr(err, "WARNING:  reset callback of memory context \"throwing\" raised an error") != NULL,
				  "stderr: %s", err);
	free(err);
	TU_TEST_END();
}
END_TEST

START_TEST(test_reset_top_recreates_error_context)
{
	MemoryContext ctx;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "child of top", ALLOCSET_DEFAULT_SIZES);
	add_cb(ctx, "child");
	cb_log[0] = '\0';
	MemoryContextReset(TopMemoryContext);
	ck_assert_str_eq(cb_log, "child ");
	ck_assert_ptr_nonnull(ErrorContext);
	ck_assert_ptr_eq(MemoryContextGetParent(ErrorContext), TopMemoryContext);
	ck_assert_ptr_eq(CurrentMemoryContext, TopMemoryContext);
	ck_assert_uint_eq(talloc_total_blocks(TopMemoryContext), 2);
	TU_TEST_END(); /* a new ErrorContext replaced the old one: same count */
}
END_TEST

static Suite *
mcxt_suite(void)
{
	Suite *s = suite_create("mcxt");
	TCase *tc = tu_tcase("core", 20);

	tcase_add_test(tc, test_lazy_init);
	tcase_add_test(tc, test_nested_switch_alloc);
	tcase_add_test(tc, test_palloc0_zeroes);
	tcase_add_test(tc, test_repalloc);
	tcase_add_test(tc, test_strings);
	tcase_add_test(tc, test_reset_keeps_context);
	tcase_add_test(tc, test_delete_current_falls_back);
	tcase_add_test(tc, test_callbacks_order);
	tcase_add_test(tc, test_talloc_free_is_delete);
	tcase_add_test(tc, test_set_parent);
	tcase_add_test(tc, test_chunk_context);
	tcase_add_test(tc, test_mem_allocated);
	tcase_add_test(tc, test_stats_text);
	tcase_add_test(tc, test_user_talloc_objects);
	tcase_add_test(tc, test_callback_error_does_not_stop_cleanup);
	tcase_add_test(tc, test_reset_top_recreates_error_context);
	suite_add_tcase(s, tc);

	tc = tu_tcase("errors", 20);
	tcase_add_test(tc, test_huge_sizes);
	tcase_add_test(tc, test_out_of_memory);
	tcase_add_test(tc, test_error_context_reserve);
	tcase_add_test(tc, test_bad_pointers);
	tcase_add_test(tc, test_delete_top_refused);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(mcxt_suite());
}
