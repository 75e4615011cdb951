/*
 * check_mcxt.c: tests of memory contexts (palloc, reset/delete, callbacks,
 * statistics, bad input).
 *
 * Every test calls mc_begin() first: it turns on talloc's null tracking and
 * creates TopMemoryContext and ErrorContext (they live as long as the
 * process) before taking the leak baseline, so that the end check covers
 * only what the test itself allocated.  The one exception is
 * test_lazy_init, which checks what the first palloc() creates.
 *
 * Chunks are not talloc objects, so the talloc block count of
 * TU_TEST_END() does not see a chunk leaked inside a block that stays.
 * mc_end() therefore first checks that the whole tree below
 * TopMemoryContext holds as many chunks and bytes as at mc_begin(), from
 * the figures MemoryContextStats() prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include <talloc.h>

#include <dsmkit/elog.h>
#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>

#include "testutil.h"

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void) (addr), (void) (len))
#endif

#if defined(__SANITIZE_ADDRESS__)
#define MCXT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MCXT_TEST_ASAN 1
#endif
#endif

/* Contexts, chunks and bytes of the whole tree, from the "Grand total" line of the statistics. */
typedef struct TreeTotals
{
	size_t contexts;
	size_t chunks;
	size_t bytes;
} TreeTotals;

static TreeTotals
tree_totals(MemoryContext top)
{
	TreeTotals t = {0, 0, 0};
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	const char *line;

	ck_assert_ptr_nonnull(f);
	MemoryContextStatsToFile(top, f);
	fclose(f);
	line = strstr(text, "Grand total: ");
	ck_assert_ptr_nonnull(line);
	ck_assert_int_eq(sscanf(line, "Grand total: %zu contexts, %zu chunks, %zu bytes", &t.contexts,
							&t.chunks, &t.bytes),
					 3);
	free(text);
	return t;
}

static TreeTotals mc_baseline;

static void
mc_begin(void)
{
	talloc_enable_null_tracking();
	MemoryContextInit();
	CurrentMemoryContext = TopMemoryContext;
	mc_baseline = tree_totals(TopMemoryContext);
	TU_TEST_BEGIN();
}

/* The end of every test that began with mc_begin(): no chunk, context or talloc block left. */
static void
mc_end(void)
{
	TreeTotals now = tree_totals(TopMemoryContext);

	ck_assert_uint_eq(now.contexts, mc_baseline.contexts);
	ck_assert_uint_eq(now.chunks, mc_baseline.chunks);
	ck_assert_uint_eq(now.bytes, mc_baseline.bytes);
	TU_TEST_END();
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

/* pvsprintf() through a variadic wrapper, as callers use it. */
static char *
call_pvsprintf(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
static char *
call_pvsprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = pvsprintf(fmt, ap);
	va_end(ap);
	return s;
}

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
		/*
		 * Exactly the two long-lived contexts remain, each a context object
		 * and its store (with the keeper); init is idempotent.
		 */
		ck_assert_uint_eq(talloc_total_blocks(NULL), before + 4);
		MemoryContextInit();
		ck_assert_uint_eq(talloc_total_blocks(NULL), before + 4);
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
	/* A context is a talloc child of its parent. */
	ck_assert_ptr_eq(talloc_parent(b), a);
	MemoryContextSwitchTo(old);
	pfree(pt);
	pfree(pb);
	ck_assert_int_eq(pa[31], 'a');
	MemoryContextDelete(a); /* takes b and pa along */
	ck_assert_ptr_eq(CurrentMemoryContext, TopMemoryContext);
	mc_end();
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
	mc_end();
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
	mc_end();
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
	s = call_pvsprintf("%s=%u", "slots", 264u);
	ck_assert_str_eq(s, "slots=264");
	ck_assert_ptr_eq(GetMemoryChunkContext(s), ctx);
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
	mc_end();
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
	/* The children and blocks are gone, the context (and its store) stays, empty. */
	ck_assert(MemoryContextIsEmpty(ctx));
	ck_assert_uint_eq(talloc_total_blocks(ctx), 2);
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
	mc_end();
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
	mc_end();
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
	mc_end();
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
	mc_end();
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
	mc_end();
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
	/* Large chunks (talloc objects of their own) know their context too. */
	nested = MemoryContextAlloc(b, 100000);
	ck_assert_ptr_eq(GetMemoryChunkContext(nested), b);
	/* A context moved elsewhere keeps its chunks. */
	MemoryContextSetParent(b, TopMemoryContext);
	ck_assert_ptr_eq(GetMemoryChunkContext(nested), b);
	ck_assert_ptr_eq(GetMemoryChunkContext(pb), b);
	pfree(nested);
	MemoryContextDelete(a);
	MemoryContextDelete(b);
	mc_end();
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
	mc_end();
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
	mc_end();
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
	ck_assert_str_eq(e.detail,
					 "A chunk holds at most 268435407 bytes (talloc's limit, less the chunk's headers).");
	size = MaxTallocChunkSize + 1;
	catch_error(alloc_size, &size, &e);
	ck_assert_raised(e, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "invalid memory alloc request size 268435408");
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
	mc_end();
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
	mc_end();
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
	mc_end();
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

	/*
	 * A talloc object under no context, and one a caller hung below a
	 * context.  pfree() reads the 16 bytes in front of a pointer as a chunk
	 * header; in front of a talloc object they end with talloc's header
	 * padding, which is never written, so for valgrind we say it is
	 * defined: the test passes these pointers on purpose.
	 */
	loose = talloc_named_const(NULL, 16, "loose object");
	VALGRIND_MAKE_MEM_DEFINED((char *) loose - 16, 16);
	snprintf(want, sizeof want, "pfree called with invalid pointer %p", loose);
	catch_error(do_pfree, loose, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	ck_assert_str_eq(e.detail,
					 "The pointer is a talloc object named \"loose object\", not a chunk returned by palloc.");
	hung = talloc_named_const(ctx, 16, "hung object");
	VALGRIND_MAKE_MEM_DEFINED((char *) hung - 16, 16);
	catch_error(do_repalloc, hung, &e);
	ck_assert(e.raised);
	ck_assert_msg(strstr(e.detail, "\"hung object\"") != NULL, "detail: %s", e.detail);
	ck_assert_str_eq(talloc_get_name(loose), "loose object"); /* untouched */
	talloc_free(loose);

	/* A memory context is not a chunk. */
	VALGRIND_MAKE_MEM_DEFINED((char *) ctx - 16, 16);
	catch_error(do_pfree, ctx, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR,
					 "pfree called with memory context \"bad pointers\" instead of a chunk");

	/* After all that, the context is intact and deletes normally. */
	s = MemoryContextStrdup(ctx, "ok");
	ck_assert_ptr_eq(GetMemoryChunkContext(s), ctx);
	cb_log[0] = '\0';
	MemoryContextDelete(ctx);
	ck_assert_str_eq(cb_log, "ctx ");
	mc_end();
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
	mc_end();
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

/* A caller's talloc object that holds chunks of its own context and frees them when it goes. */
typedef struct ChunkHolder
{
	char *small;
	char *large;
} ChunkHolder;

static int chunks_seen_intact;

static int
chunk_holder_destructor(ChunkHolder *h)
{
	destructor_runs++;
	if (strcmp(h->small, "small") == 0 && h->large[0] == 'L' && h->large[99999] == 'L')
		chunks_seen_intact++;
	pfree(h->small);
	pfree(h->large);
	return 0;
}

START_TEST(test_user_talloc_objects)
{
	MemoryContext ctx;
	int *obj;
	ChunkHolder *h;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "hosts talloc objects", ALLOCSET_DEFAULT_SIZES);
	for (int round = 0; round < 2; round++)
	{
		destructor_runs = 0;
		chunks_seen_intact = 0;
		obj = talloc(ctx, int);
		talloc_set_destructor(obj, counting_destructor);
		/*
		 * The holder is older than its chunks, yet its destructor still
		 * finds them intact: reset and delete free the caller's objects
		 * before any chunk.
		 */
		h = talloc(ctx, ChunkHolder);
		h->small = MemoryContextStrdup(ctx, "small");
		h->large = MemoryContextAlloc(ctx, 100000);
		h->large[0] = h->large[99999] = 'L';
		talloc_set_destructor(h, chunk_holder_destructor);
		(void) MemoryContextAlloc(ctx, 32); /* left for the reset */
		ck_assert(!MemoryContextIsEmpty(ctx));
		if (round == 0)
		{
			MemoryContextReset(ctx);
			ck_assert_int_eq(destructor_runs, 2);
			ck_assert_int_eq(chunks_seen_intact, 1);
			ck_assert(MemoryContextIsEmpty(ctx));
			ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), 0);
		}
		else
		{
			MemoryContextDelete(ctx);
			ck_assert_int_eq(destructor_runs, 2);
			ck_assert_int_eq(chunks_seen_intact, 1);
		}
	}
	mc_end();
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
	mc_end();
}
END_TEST

/* Deleting a context inside PG_CATCH, with a callback that raises: the caller's error stays. */
START_TEST(test_callback_error_keeps_callers_error)
{
	MemoryContext ctx;
	MemoryContextCallback *cb;
	char *err;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "throwing", ALLOCSET_DEFAULT_SIZES);
	cb = MemoryContextAlloc(ctx, sizeof *cb);
	cb->func = throwing_cb;
	cb->arg = NULL;
	MemoryContextRegisterResetCallback(ctx, cb);
	cb_log[0] = '\0';
	tu_capture_stderr_begin();
	EXPECT_CALLERS_ERROR_KEPT(MemoryContextDelete(ctx));
	err = tu_capture_stderr_end();
	ck_assert_str_eq(cb_log, "throw ");
	ck_assert_msg(strstr(err, "callback failure") != NULL, "stderr: %s", err);
	free(err);
	mc_end();
}
END_TEST

/* A reset callback that deletes (or talloc_free()s) the context it names. */
static void
deleting_cb(void *arg)
{
	strcat(cb_log, "delete ");
	MemoryContextDelete((MemoryContext) arg);
}

static void
talloc_freeing_cb(void *arg)
{
	strcat(cb_log, "tfree ");
	if (talloc_free(arg) != 0)
		strcat(cb_log, "refused ");
}

static void
add_fn_cb(MemoryContext ctx, MemoryContextCallbackFunction fn, void *arg)
{
	MemoryContextCallback *cb = MemoryContextAlloc(ctx, sizeof *cb);

	cb->func = fn;
	cb->arg = arg;
	MemoryContextRegisterResetCallback(ctx, cb);
}

/*
 * Callbacks that delete the context being reset (its own, or a child's
 * callback deleting the parent): refused with an ERROR naming the context,
 * which the reset reports; the reset completes and the context lives on.
 */
START_TEST(test_callback_deletes_context_being_reset)
{
	MemoryContext ctx, child;
	char *err;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "self", ALLOCSET_DEFAULT_SIZES);
	(void) MemoryContextAlloc(ctx, 100);
	add_cb(ctx, "first");
	add_fn_cb(ctx, deleting_cb, ctx);
	add_fn_cb(ctx, talloc_freeing_cb, ctx);
	cb_log[0] = '\0';
	tu_capture_stderr_begin();
	MemoryContextReset(ctx);
	err = tu_capture_stderr_end();
	ck_assert_str_eq(cb_log, "tfree refused delete first ");
	ck_assert_msg(strstr(err, "ERROR:  cannot delete memory context \"self\" while it is being reset\n") != NULL,
				  "stderr: %s", err);
	free(err);
	ck_assert(MemoryContextIsEmpty(ctx));
	(void) MemoryContextStrdup(ctx, "still usable");

	/* A child's callback deleting the parent while the parent is reset. */
	child = AllocSetContextCreate(ctx, "child", ALLOCSET_SMALL_SIZES);
	add_fn_cb(child, deleting_cb, ctx);
	cb_log[0] = '\0';
	tu_capture_stderr_begin();
	MemoryContextReset(ctx);
	err = tu_capture_stderr_end();
	ck_assert_str_eq(cb_log, "delete ");
	ck_assert_msg(strstr(err, "ERROR:  cannot delete memory context \"self\" while it is being reset\n") != NULL,
				  "stderr: %s", err);
	free(err);
	ck_assert(MemoryContextIsEmpty(ctx));

	/* The same child callback while the parent is deleted: refused too, the delete completes. */
	child = AllocSetContextCreate(ctx, "child", ALLOCSET_SMALL_SIZES);
	add_fn_cb(child, deleting_cb, ctx);
	cb_log[0] = '\0';
	tu_capture_stderr_begin();
	MemoryContextDelete(ctx);
	err = tu_capture_stderr_end();
	ck_assert_str_eq(cb_log, "delete ");
	ck_assert_msg(strstr(err, "ERROR:  cannot delete memory context \"self\" while it is being deleted\n") != NULL,
				  "stderr: %s", err);
	free(err);
	mc_end();
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
	/* Each context is its object and its store. */
	ck_assert_uint_eq(talloc_total_blocks(TopMemoryContext), 4);
	TU_TEST_END(); /* a new ErrorContext replaced the old one: same count */
}
END_TEST

/* A small deterministic generator for the tests below. */
static uint32_t
next_rand(uint32_t *state)
{
	*state = *state * 1103515245u + 12345u;
	return *state >> 8;
}

/* True if the len bytes at p all equal c. */
static bool
all_bytes(const char *p, Size len, unsigned char c)
{
	for (Size j = 0; j < len; j++)
		if ((unsigned char) p[j] != c)
			return false;
	return true;
}

/*
 * Many chunks of many sizes: each is 16-byte aligned, keeps its contents
 * while others come and go (no two overlap), and is counted; freeing them
 * all in a scrambled order gives every block but the keeper back.
 */
static void
churn(MemoryContext ctx, size_t blocks_when_empty)
{
	enum { N = 3000 };
	static char *ptr[N];
	static Size len[N];
	uint32_t seed = 12345;
	Size total = 0;

	for (int i = 0; i < N; i++)
	{
		uint32_t r = next_rand(&seed);

		len[i] = (i % 50 == 0) ? 8193 + r % 20000 : r % 600; /* a few large ones, some of 0 bytes */
		ptr[i] = MemoryContextAlloc(ctx, len[i]);
		ck_assert_uint_eq((uintptr_t) ptr[i] % 16, 0);
		memset(ptr[i], (unsigned char) i, len[i]);
		total += len[i];
	}
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), total);
	/* Free every third chunk, allocate again, then check everything. */
	for (int i = 0; i < N; i += 3)
	{
		pfree(ptr[i]);
		total -= len[i];
		len[i] = next_rand(&seed) % 300;
		ptr[i] = MemoryContextAlloc(ctx, len[i]);
		memset(ptr[i], (unsigned char) i, len[i]);
		total += len[i];
	}
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), total);
	for (int i = 0; i < N; i++)
	{
		ck_assert_uint_eq(GetMemoryChunkSpace(ptr[i]), len[i]);
		ck_assert_ptr_eq(GetMemoryChunkContext(ptr[i]), ctx);
		ck_assert_msg(all_bytes(ptr[i], len[i], (unsigned char) i), "chunk %d was overwritten", i);
	}
	/* Free in a scrambled order (a stride coprime with N). */
	for (int k = 0, i = 0; k < N; k++, i = (i + 1013) % N)
		pfree(ptr[i]);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), 0);
	ck_assert(MemoryContextIsEmpty(ctx));
	ck_assert_uint_eq(talloc_total_blocks(ctx), blocks_when_empty);
}

START_TEST(test_many_chunks)
{
	MemoryContext keeper_ctx, bare_ctx, small_ctx;

	mc_begin();
	keeper_ctx = AllocSetContextCreate(TopMemoryContext, "with keeper", ALLOCSET_DEFAULT_SIZES);
	bare_ctx = AllocSetContextCreate(TopMemoryContext, "no keeper", 0, 0, 0);
	small_ctx = AllocSetContextCreate(TopMemoryContext, "small", ALLOCSET_SMALL_SIZES);
	/* Context and store: the keeper is inside the store, every other block went. */
	churn(keeper_ctx, 2);
	churn(small_ctx, 2);
	/* Without a keeper, the block being carved stays. */
	churn(bare_ctx, 3);
	/* Twice, to run over recycled blocks and revived keepers. */
	churn(keeper_ctx, 2);
	churn(bare_ctx, 3);
	MemoryContextDelete(keeper_ctx);
	MemoryContextDelete(bare_ctx);
	MemoryContextDelete(small_ctx);
	mc_end();
}
END_TEST

/*
 * What the other suites' leak checks rely on: chunks allocated in
 * TopMemoryContext beyond its keeper, then freed, leave no talloc block
 * behind, even while older chunks stay.
 */
START_TEST(test_top_blocks_come_back)
{
	enum { N = 2000 };
	static void *p[N];
	char *old;
	size_t blocks;

	mc_begin();
	old = MemoryContextStrdup(TopMemoryContext, "older chunk");
	blocks = talloc_total_blocks(NULL);
	for (int round = 0; round < 2; round++)
	{
		for (int i = 0; i < N; i++)
			p[i] = MemoryContextAlloc(TopMemoryContext, 100);
		ck_assert_uint_gt(talloc_total_blocks(NULL), blocks); /* it did need blocks */
		for (int i = 0; i < N; i++)
			pfree(p[round == 0 ? i : N - 1 - i]);
		ck_assert_uint_eq(talloc_total_blocks(NULL), blocks);
	}
	ck_assert_str_eq(old, "older chunk");
	pfree(old);
	mc_end();
}
END_TEST

START_TEST(test_repalloc_classes)
{
	MemoryContext ctx;
	char *p, *q;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "resized", ALLOCSET_SMALL_SIZES);
	p = MemoryContextAlloc(ctx, 20);
	memcpy(p, "0123456789abcdefghi", 20);
	/* Within the size class (17..32 bytes) the chunk stays where it is. */
	q = repalloc(p, 32);
	ck_assert_ptr_eq(q, p);
	ck_assert_uint_eq(GetMemoryChunkSpace(q), 32);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), 32);
	q = repalloc(q, 17);
	ck_assert_ptr_eq(q, p);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), 17);
	/* Small to large, large to larger, large to small: the data follows. */
	q = repalloc(q, 50000);
	ck_assert_mem_eq(q, "0123456789abcdefg", 17);
	q[49999] = 'z';
	q = repalloc(q, 200000);
	ck_assert_mem_eq(q, "0123456789abcdefg", 17);
	ck_assert_int_eq(q[49999], 'z');
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), 200000);
	q = repalloc(q, 10);
	ck_assert_mem_eq(q, "0123456789", 10);
	ck_assert_uint_eq(GetMemoryChunkSpace(q), 10);
	ck_assert_uint_eq(MemoryContextMemAllocated(ctx, false), 10);
	ck_assert_ptr_eq(GetMemoryChunkContext(q), ctx);
	pfree(q);
	ck_assert(MemoryContextIsEmpty(ctx));
	MemoryContextDelete(ctx);
	mc_end();
}
END_TEST

/* A reset drops a million chunks at once and leaves only the context and its store. */
START_TEST(test_reset_many_chunks)
{
	MemoryContext ctx;
	TreeTotals t;
	char *p;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "a million", ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < 1000000; i++)
		*(char *) MemoryContextAlloc(ctx, 16) = 'x';
	t = tree_totals(ctx);
	ck_assert_uint_eq(t.chunks, 1000000);
	ck_assert_uint_eq(t.bytes, 16000000);
	MemoryContextReset(ctx);
	t = tree_totals(ctx);
	ck_assert_uint_eq(t.chunks, 0);
	ck_assert_uint_eq(t.bytes, 0);
	ck_assert_uint_eq(talloc_total_blocks(ctx), 2);
	/* The keeper is carved again from its start. */
	p = MemoryContextAlloc(ctx, 16);
	ck_assert_ptr_eq(GetMemoryChunkContext(p), ctx);
	MemoryContextDelete(ctx);
	mc_end();
}
END_TEST

START_TEST(test_freed_chunks_refused)
{
	MemoryContext ctx;
	char *p, *big;
	char want[128];
	Caught e;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "double free", ALLOCSET_DEFAULT_SIZES);
	p = MemoryContextAlloc(ctx, 40);
	(void) MemoryContextAlloc(ctx, 40); /* keeps the keeper busy, so p stays on a free list */
	pfree(p);
	snprintf(want, sizeof want, "pfree called with invalid pointer %p", (void *) p);
	catch_error(do_pfree, p, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	ck_assert_str_eq(e.detail, "The chunk was already freed.");
	snprintf(want, sizeof want, "repalloc called with invalid pointer %p", (void *) p);
	catch_error(do_repalloc, p, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	catch_error(do_chunk_context, p, &e);
	ck_assert(e.raised);
	/* The free list is intact: the next chunk of that class is p again. */
	ck_assert_ptr_eq(MemoryContextAlloc(ctx, 33), p);
	big = MemoryContextAlloc(ctx, 50000);
	ck_assert_ptr_eq(GetMemoryChunkContext(big), ctx);
	pfree(big);
#ifndef MCXT_TEST_ASAN
	/*
	 * A chunk of the keeper from before a reset: its header is still there
	 * but its generation is old.  (Under ASan the read itself is reported,
	 * which is the better diagnosis.)
	 */
	p = MemoryContextStrdup(ctx, "before the reset");
	MemoryContextReset(ctx);
	snprintf(want, sizeof want, "pfree called with invalid pointer %p", (void *) p);
	catch_error(do_pfree, p, &e);
	ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
	ck_assert_str_eq(e.detail, "The chunk was freed when its memory context was reset.");
#endif
	MemoryContextDelete(ctx);
	mc_end();
}
END_TEST

static void
do_chunk_space(void *arg)
{
	(void) GetMemoryChunkSpace(arg);
}

/*
 * Misaligned pointers (no chunk starts at an odd address): an ERROR, not a
 * misaligned read of a header (which UndefinedBehaviorSanitizer stops).
 */
START_TEST(test_misaligned_pointers)
{
	MemoryContext ctx;
	char *p;
	char want[128];
	Caught e;

	mc_begin();
	ctx = AllocSetContextCreate(TopMemoryContext, "misaligned", ALLOCSET_DEFAULT_SIZES);
	p = MemoryContextAllocZero(ctx, 64);
	for (int off = 1; off < 16; off += 2)
	{
		snprintf(want, sizeof want, "pfree called with invalid pointer %p", (void *) (p + off));
		catch_error(do_pfree, p + off, &e);
		ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
		snprintf(want, sizeof want, "repalloc called with invalid pointer %p", (void *) (p + off));
		catch_error(do_repalloc, p + off, &e);
		ck_assert_raised(e, ERRCODE_INTERNAL_ERROR, want);
		catch_error(do_chunk_context, p + off, &e);
		ck_assert(e.raised);
		catch_error(do_chunk_space, p + off, &e);
		ck_assert(e.raised);
	}
	ck_assert_uint_eq(GetMemoryChunkSpace(p), 64);
	MemoryContextDelete(ctx);
	mc_end();
}
END_TEST

#if !defined(MCXT_TEST_ASAN)
/*
 * In a child: pfree a large chunk twice.  Its memory went back to malloc,
 * so the second call reads freed memory (which is why this runs neither
 * under ASan nor under valgrind); glibc leaves the chunk header alone for
 * a chunk this size, so the header says "freed" and the second pfree must
 * raise the ERROR, not let talloc abort the process.  Exits 0 when it did,
 * 2 when nothing was raised.
 */
static void
double_free_large_child(void *arg)
{
	char *big = palloc(20000);
	volatile int rc = 2;

	(void) arg;
	pfree(big);
	PG_TRY();
	{
		pfree(big);
	}
	PG_CATCH();
	{
		ErrorData *ed = CopyErrorData();

		rc = strcmp(ed->detail ? ed->detail : "", "The chunk was already freed.") == 0 ? 0 : 3;
		FreeErrorData(ed);
		FlushErrorState();
	}
	PG_END_TRY();
	_exit(rc);
}

START_TEST(test_double_free_large)
{
	mc_begin();
#ifdef RUNNING_ON_VALGRIND
	if (RUNNING_ON_VALGRIND)
	{
		mc_end();
		return;
	}
#endif
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(double_free_large_child, NULL)), 0);
	mc_end();
}
END_TEST
#endif

#ifdef MCXT_TEST_ASAN
/* In a child: write to a chunk after pfree; AddressSanitizer must stop the process. */
static void
use_after_pfree_child(void *arg)
{
	char *p = palloc(64);

	(void) arg;
	pfree(p);
	p[3] = 'x';
}

/* In a child: write past the size requested (inside the size class). */
static void
overrun_child(void *arg)
{
	volatile char *p = palloc(20);

	(void) arg;
	p[24] = 'x';
}

START_TEST(test_asan_poisoning)
{
	mc_begin();
	ck_assert_int_ne(tu_wait_exit_code(tu_fork(use_after_pfree_child, NULL)), 0);
	ck_assert_int_ne(tu_wait_exit_code(tu_fork(overrun_child, NULL)), 0);
	mc_end();
}
END_TEST
#endif

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
	tcase_add_test(tc, test_callback_error_keeps_callers_error);
	tcase_add_test(tc, test_callback_deletes_context_being_reset);
	tcase_add_test(tc, test_reset_top_recreates_error_context);
	tcase_add_test(tc, test_many_chunks);
	tcase_add_test(tc, test_top_blocks_come_back);
	tcase_add_test(tc, test_repalloc_classes);
	tcase_add_test(tc, test_reset_many_chunks);
	suite_add_tcase(s, tc);

	tc = tu_tcase("errors", 20);
	tcase_add_test(tc, test_huge_sizes);
	tcase_add_test(tc, test_out_of_memory);
	tcase_add_test(tc, test_error_context_reserve);
	tcase_add_test(tc, test_bad_pointers);
	tcase_add_test(tc, test_delete_top_refused);
	tcase_add_test(tc, test_freed_chunks_refused);
	tcase_add_test(tc, test_misaligned_pointers);
#if !defined(MCXT_TEST_ASAN)
	tcase_add_test(tc, test_double_free_large);
#endif
#ifdef MCXT_TEST_ASAN
	tcase_add_test(tc, test_asan_poisoning);
#endif
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(mcxt_suite());
}
