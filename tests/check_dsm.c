/*
 * check_dsm.c: tests of dynamic shared memory segments (dsm.h), with real
 * processes.
 *
 * Each test forks a supervisor (tu_fork) that starts a cluster in a fresh
 * directory, spawns backends that talk to each other and to the supervisor
 * through pipes, reaps them, checks the control segment's consistency and
 * leaves with proc_exit(0), which removes everything.  The test process
 * then asserts the supervisor exited 0 and that nothing of the cluster is
 * left.  A backend that fails an assertion dies with _exit(1) without
 * sending its "done" token, so the supervisor's tu_pipe_recv() fails, and
 * with it the test.  Lifecycle tests run for all three implementations.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dsmkit.h>

#include "testutil.h"

#define DONE 0x600du

static const int impls[] = {DSM_IMPL_POSIX, DSM_IMPL_SYSV, DSM_IMPL_MMAP};
static const int fd_impls[] = {DSM_IMPL_POSIX, DSM_IMPL_MMAP};

/* The test's setup, inherited by the supervisor and its backends through fork. */
static struct
{
	const char *dir;
	int impl;
	int max_segments;
	tu_pipe to_a;    /* supervisor/B -> backend A */
	tu_pipe to_b;    /* A -> backend B */
	tu_pipe to_sup;  /* backends -> supervisor */
} ctx;

/* ---- helpers --------------------------------------------------------------- */

static void
open_pipes(void)
{
	tu_pipe_open(&ctx.to_a);
	tu_pipe_open(&ctx.to_b);
	tu_pipe_open(&ctx.to_sup);
}

static void
close_pipes(void)
{
	tu_pipe_close(&ctx.to_a);
	tu_pipe_close(&ctx.to_b);
	tu_pipe_close(&ctx.to_sup);
}

static void
run_supervisor_fn(void *arg)
{
	void (*fn)(void) = (void (*)(void)) arg;

	tu_start_supervisor(ctx.dir, ctx.impl, 0, ctx.max_segments);
	fn();
	tu_finish_supervisor();
}

/* Run a whole cluster scenario (supervisor_fn runs in the supervisor) and assert nothing is left. */
static void
run_cluster(int impl, void (*supervisor_fn)(void))
{
	pid_t pid;

	ctx.dir = tu_cluster_dir();
	ctx.impl = impl;
	open_pipes();
	pid = tu_fork(run_supervisor_fn, (void *) supervisor_fn);
	ck_assert_int_eq(tu_wait_exit_code(pid), 0);
	close_pipes();
	tu_end_cluster_dir(ctx.dir);
}

/* run_cluster() with a control segment of max_segments slots. */
static void
run_cluster_with_slots(int impl, int max_segments, void (*supervisor_fn)(void))
{
	ctx.max_segments = max_segments;
	run_cluster(impl, supervisor_fn);
	ctx.max_segments = 0;
}

/* ---- create, attach, data, destroy ---------------------------------------- */

static void
basic_a(Datum arg)
{
	dsm_segment *seg = dsm_create(8192, 0);
	dsm_handle h = dsm_segment_handle(seg);
	uint32_t *p = dsm_segment_address(seg);

	(void) arg;
	ck_assert(h != DSM_HANDLE_INVALID);
	ck_assert_uint_ge(dsm_segment_map_length(seg), 8192);
	ck_assert_uint_eq(p[100], 0); /* zero-filled */
	p[0] = 0xabcdef01;
	p[2047] = 42;
	ck_assert_ptr_eq(dsm_find_mapping(h), seg);
	tu_pipe_send(&ctx.to_b, h);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1); /* B attached, checked, wrote, detached */
	ck_assert_uint_eq(p[1], 0x5eed);
	ck_assert(tu_seg_exists(h));
	dsm_detach(seg);
	ck_assert_ptr_null(dsm_find_mapping(h));
	ck_assert(!tu_seg_exists(h)); /* the last detach destroyed it */
	ck_assert_ptr_null(dsm_attach(h));
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
basic_b(Datum arg)
{
	dsm_handle h = tu_pipe_recv(&ctx.to_b);
	dsm_segment *seg;
	uint32_t *p;

	(void) arg;
	seg = dsm_attach(h);
	ck_assert_ptr_nonnull(seg);
	ck_assert_ptr_eq(dsm_find_mapping(h), seg);
	ck_assert_uint_eq(dsm_segment_handle(seg), h);
	p = dsm_segment_address(seg);
	ck_assert_uint_eq(p[0], 0xabcdef01);
	ck_assert_uint_eq(p[2047], 42);
	p[1] = 0x5eed;
	/* Attaching twice is an ERROR; the first mapping is unharmed. */
	EXPECT_ERROR(dsm_attach(h), ERRCODE_OBJECT_IN_USE, "already attached");
	ck_assert_ptr_eq(dsm_find_mapping(h), seg);
	dsm_detach(seg);
	ck_assert(tu_seg_exists(h)); /* A still maps it */
	tu_pipe_send(&ctx.to_a, 1);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
basic_supervisor(void)
{
	supervisor_spawn_backend(basic_a, 0);
	supervisor_spawn_backend(basic_b, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_create_attach_destroy, basic_supervisor)

/* ---- unknown handles -------------------------------------------------------- */

static void
unknown_a(Datum arg)
{
	dsm_segment *seg = dsm_create(100, 0);
	dsm_handle h = dsm_segment_handle(seg);
	dsm_segment *seg2;

	(void) arg;
	ck_assert_ptr_null(dsm_attach(DSM_HANDLE_INVALID));
	ck_assert_ptr_null(dsm_attach(0xffffffffu)); /* slot bits all ones: never a segment */
	ck_assert_ptr_null(dsm_find_mapping(h ^ 0x80000000u));
	/* Creator attaching its own segment: already mapped. */
	EXPECT_ERROR(dsm_attach(h), ERRCODE_OBJECT_IN_USE, "already attached");
	dsm_detach(seg);
	ck_assert_ptr_null(dsm_attach(h));
	/* The slot is reused with another generation: the old handle stays dead. */
	seg2 = dsm_create(100, 0);
	ck_assert_uint_ne(dsm_segment_handle(seg2), h);
	ck_assert_ptr_null(dsm_attach(h));
	ck_assert_ptr_null(dsm_find_mapping(h));
	dsm_detach(seg2);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
unknown_supervisor(void)
{
	supervisor_spawn_backend(unknown_a, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_attach_destroyed_handle, unknown_supervisor)

/* ---- resource owners -------------------------------------------------------- */

static void
resowner_a(Datum arg)
{
	ResourceOwner owner = ResourceOwnerCreate(NULL, "request");
	dsm_segment *seg;
	dsm_segment *kept;
	dsm_handle h;
	dsm_handle hk;
	char *out;

	(void) arg;
	/* Abort-release detaches silently. */
	CurrentResourceOwner = owner;
	seg = dsm_create(4096, 0);
	h = dsm_segment_handle(seg);
	CurrentResourceOwner = NULL;
	ResourceOwnerReleaseAll(owner, false);
	ck_assert_ptr_null(dsm_find_mapping(h));
	ck_assert(!tu_seg_exists(h));
	ResourceOwnerDelete(owner);

	/* Commit-release of a forgotten mapping: a WARNING naming the segment. */
	owner = ResourceOwnerCreate(NULL, "request");
	CurrentResourceOwner = owner;
	seg = dsm_create(4096, 0);
	h = dsm_segment_handle(seg);
	kept = dsm_create(4096, 0);
	hk = dsm_segment_handle(kept);
	dsm_keep_mapping(kept);
	CurrentResourceOwner = NULL;
	tu_capture_stderr_begin();
	ResourceOwnerReleaseAll(owner, true);
	out = tu_capture_stderr_end();
	{
		char expect[64];

		snprintf(expect, sizeof expect, "dynamic shared memory segment %u", h);
		ck_assert_msg(strstr(out, expect) != NULL, "no leak warning naming %u in: %s", h, out);
		ck_assert_msg(strstr(out, "WARNING") != NULL, "not a WARNING: %s", out);
		snprintf(expect, sizeof expect, "segment %u", hk);
		ck_assert_msg(strstr(out, expect) == NULL, "kept mapping %u was released: %s", hk, out);
	}
	free(out);
	ResourceOwnerDelete(owner);
	ck_assert_ptr_null(dsm_find_mapping(h));
	ck_assert(!tu_seg_exists(h));
	/* The kept mapping survived the scope. */
	ck_assert_ptr_eq(dsm_find_mapping(hk), kept);
	((char *) dsm_segment_address(kept))[10] = 7;

	/* unpin_mapping puts a mapping back under the current owner. */
	owner = ResourceOwnerCreate(NULL, "request");
	CurrentResourceOwner = owner;
	seg = dsm_create(4096, 0);
	h = dsm_segment_handle(seg);
	dsm_pin_mapping(seg);
	dsm_unpin_mapping(seg);
	CurrentResourceOwner = NULL;
	ResourceOwnerReleaseAll(owner, false);
	ResourceOwnerDelete(owner);
	ck_assert_ptr_null(dsm_find_mapping(h));

	/* With no current owner a mapping has session lifetime from the start. */
	seg = dsm_create(4096, 0);
	dsm_unpin_mapping(seg); /* still session lifetime */
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(seg));
	tu_pipe_send(&ctx.to_sup, hk);
	/* Exit without detaching: the exit hook detaches both, destroying them. */
}

static void
resowner_b(Datum arg)
{
	dsm_handle h = (dsm_handle) arg;

	ck_assert_ptr_null(dsm_attach(h));
	ck_assert(!tu_seg_exists(h));
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
resowner_supervisor(void)
{
	dsm_handle h1;
	dsm_handle h2;

	supervisor_spawn_backend(resowner_a, 0);
	h1 = tu_pipe_recv(&ctx.to_sup);
	h2 = tu_pipe_recv(&ctx.to_sup);
	ck_assert_int_eq(supervisor_reap(true), 0);
	supervisor_spawn_backend(resowner_b, h1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	supervisor_spawn_backend(resowner_b, h2);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_resowner_scopes, resowner_supervisor)

/* ---- pin / unpin segment ---------------------------------------------------- */

static void
pin_a(Datum arg)
{
	dsm_segment *seg = dsm_create(4096, 0);
	dsm_handle h = dsm_segment_handle(seg);

	(void) arg;
	strcpy(dsm_segment_address(seg), "pinned data");
	dsm_pin_segment(seg);
	EXPECT_ERROR(dsm_pin_segment(seg), 0, "already pinned");
	dsm_detach(seg);
	ck_assert(tu_seg_exists(h)); /* the pin keeps it */
	tu_pipe_send(&ctx.to_sup, h);
}

static void
pin_b(Datum arg)
{
	dsm_handle h = (dsm_handle) arg;
	dsm_segment *seg = dsm_attach(h);

	ck_assert_ptr_nonnull(seg);
	ck_assert_str_eq(dsm_segment_address(seg), "pinned data");
	dsm_unpin_segment(h);
	EXPECT_ERROR(dsm_unpin_segment(h), 0, "not a pinned");
	ck_assert(tu_seg_exists(h)); /* still mapped here */
	dsm_detach(seg);
	ck_assert(!tu_seg_exists(h));
	ck_assert_ptr_null(dsm_attach(h));
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
pin_supervisor(void)
{
	dsm_handle h;

	supervisor_spawn_backend(pin_a, 0);
	h = tu_pipe_recv(&ctx.to_sup);
	ck_assert_int_eq(supervisor_reap(true), 0); /* A is gone, the segment lives */
	ck_assert_int_eq(tu_check_cluster(), 0);
	supervisor_spawn_backend(pin_b, h);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_pin_segment, pin_supervisor)

/* A pinned segment nobody maps is removed at supervisor shutdown. */
static void
pin_leave_a(Datum arg)
{
	dsm_segment *seg = dsm_create(4096, 0);

	(void) arg;
	dsm_pin_segment(seg);
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(seg));
}

static void
pin_leave_supervisor(void)
{
	dsm_handle h;

	supervisor_spawn_backend(pin_leave_a, 0);
	h = tu_pipe_recv(&ctx.to_sup);
	ck_assert_int_eq(supervisor_reap(true), 0);
	ck_assert(tu_seg_exists(h));
}

CLUSTER_TEST(test_pinned_removed_at_shutdown, pin_leave_supervisor)

/* ---- detach callbacks ------------------------------------------------------- */

static char cb_log[64];

static void
record_cb(dsm_segment *seg, Datum arg)
{
	size_t n = strlen(cb_log);

	/* The mapping is still there while callbacks run. */
	ck_assert_ptr_nonnull(dsm_segment_address(seg));
	ck_assert_int_eq(((char *) dsm_segment_address(seg))[0], 'x');
	cb_log[n] = (char) ('0' + DatumGetInt32(arg));
	cb_log[n + 1] = '\0';
}

static void
callbacks_a(Datum arg)
{
	dsm_segment *seg = dsm_create(4096, 0);

	(void) arg;
	((char *) dsm_segment_address(seg))[0] = 'x';
	cb_log[0] = '\0';
	on_dsm_detach(seg, record_cb, Int32GetDatum(1));
	on_dsm_detach(seg, record_cb, Int32GetDatum(2));
	on_dsm_detach(seg, record_cb, Int32GetDatum(3));
	on_dsm_detach(seg, record_cb, Int32GetDatum(4));
	cancel_on_dsm_detach(seg, record_cb, Int32GetDatum(2));
	cancel_on_dsm_detach(seg, record_cb, Int32GetDatum(9)); /* not registered: nothing */
	dsm_detach(seg);
	ck_assert_str_eq(cb_log, "431");

	/* Callbacks also run when the exit hook detaches. */
	seg = dsm_create(4096, 0);
	((char *) dsm_segment_address(seg))[0] = 'x';
	cb_log[0] = '\0';
	on_dsm_detach(seg, record_cb, Int32GetDatum(5));
	dsm_detach_all();
	ck_assert_str_eq(cb_log, "5");
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
callbacks_supervisor(void)
{
	supervisor_spawn_backend(callbacks_a, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_detach_callbacks, callbacks_supervisor)

/* ---- resize and remap ------------------------------------------------------- */

static void
resize_a(Datum arg)
{
	dsm_segment *seg = dsm_create(4096, 0);
	char *p;

	(void) arg;
	strcpy(dsm_segment_address(seg), "head");
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(seg));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1);
	if (ctx.impl == DSM_IMPL_SYSV)
	{
		EXPECT_ERROR(dsm_resize(seg, 1 << 20), 0, "could not resize shared memory segment");
		ck_assert_str_eq(dsm_segment_address(seg), "head"); /* unharmed */
	}
	else
	{
		p = dsm_resize(seg, 1 << 20);
		ck_assert_ptr_eq(p, dsm_segment_address(seg));
		ck_assert_uint_ge(dsm_segment_map_length(seg), 1 << 20);
		ck_assert_str_eq(p, "head");
		strcpy(p + (1 << 19), "tail");
	}
	tu_pipe_send(&ctx.to_b, 2);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 3);
	if (ctx.impl != DSM_IMPL_SYSV)
	{
		/* Shrink: a new attach maps the new, smaller size. */
		p = dsm_resize(seg, 8192);
		ck_assert_uint_eq(dsm_segment_map_length(seg), 8192);
		ck_assert_str_eq(p, "head");
	}
	tu_pipe_send(&ctx.to_b, 4);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 5);
	dsm_detach(seg);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
resize_b(Datum arg)
{
	dsm_handle h = tu_pipe_recv(&ctx.to_b);
	dsm_segment *seg = dsm_attach(h);
	char *p;

	(void) arg;
	ck_assert_ptr_nonnull(seg);
	ck_assert_uint_lt(dsm_segment_map_length(seg), 1 << 20);
	tu_pipe_send(&ctx.to_a, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), 2);
	p = dsm_remap(seg);
	ck_assert_ptr_eq(p, dsm_segment_address(seg));
	ck_assert_str_eq(p, "head");
	if (ctx.impl != DSM_IMPL_SYSV)
	{
		ck_assert_uint_ge(dsm_segment_map_length(seg), 1 << 20);
		ck_assert_str_eq(p + (1 << 19), "tail");
	}
	dsm_detach(seg);
	/* A new attach maps the size the slot recorded at the resize. */
	seg = dsm_attach(h);
	ck_assert_ptr_nonnull(seg);
	ck_assert_uint_eq(dsm_segment_map_length(seg), ctx.impl == DSM_IMPL_SYSV ? 4096 : 1 << 20);
	if (ctx.impl != DSM_IMPL_SYSV)
		ck_assert_str_eq((char *) dsm_segment_address(seg) + (1 << 19), "tail");
	dsm_detach(seg);
	tu_pipe_send(&ctx.to_a, 3);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), 4);
	seg = dsm_attach(h);
	ck_assert_ptr_nonnull(seg);
	ck_assert_uint_eq(dsm_segment_map_length(seg), ctx.impl == DSM_IMPL_SYSV ? 4096 : 8192);
	ck_assert_str_eq(dsm_segment_address(seg), "head");
	dsm_detach(seg);
	tu_pipe_send(&ctx.to_a, 5);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
resize_supervisor(void)
{
	supervisor_spawn_backend(resize_a, 0);
	supervisor_spawn_backend(resize_b, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_resize_remap, resize_supervisor)

/* ---- too many segments ------------------------------------------------------ */

static void
full_a(Datum arg)
{
	dsm_segment *segs[4];
	int before;

	(void) arg;
	for (int i = 0; i < 4; i++)
		segs[i] = dsm_create(4096, 0);
	before = ctx.impl == DSM_IMPL_POSIX ? tu_count_posix_segments(ctx.dir)
		: ctx.impl == DSM_IMPL_SYSV ? tu_count_sysv_segments(ctx.dir)
		: tu_count_dir_entries(ctx.dir);
	EXPECT_ERROR(dsm_create(4096, 0), ERRCODE_INSUFFICIENT_RESOURCES,
				 "too many dynamic shared memory segments");
	ck_assert_ptr_null(dsm_create(4096, DSM_CREATE_NULL_IF_MAXSEGMENTS));
	ck_assert_int_eq(ctx.impl == DSM_IMPL_POSIX ? tu_count_posix_segments(ctx.dir)
					 : ctx.impl == DSM_IMPL_SYSV ? tu_count_sysv_segments(ctx.dir)
					 : tu_count_dir_entries(ctx.dir),
					 before);
	dsm_detach(segs[2]);
	segs[2] = dsm_create(4096, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	ck_assert_ptr_nonnull(segs[2]);
	for (int i = 0; i < 4; i++)
		dsm_detach(segs[i]);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
full_supervisor(void)
{
	supervisor_spawn_backend(full_a, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

START_TEST(test_too_many_segments)
{
	TU_TEST_BEGIN();
	run_cluster_with_slots(impls[_i], 4, full_supervisor);
	TU_TEST_END();
}
END_TEST

/*
 * The slot cache loses no slot to the others.  With 6 slots, A makes 6
 * segments and destroys them: 4 slots stay in A's cache (not free, not
 * listed as segments by inspect, and fine for the check), and the cache
 * being full, 2 go back to the free list under the lock.  B then makes 6
 * segments: the 2 free slots and A's 4 cached ones, taken when the free
 * list runs dry; only the 7th create finds every slot in use.  A then
 * finds its cache emptied and reserves again.  Nothing is left reserved
 * once both have exited and been reaped.
 */
static int
inspect_segments(uint32_t *nfree)
{
	DsmClusterInfo *info = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
	int n = (int) info->nsegments;

	ck_assert_msg(info->consistent, "inspect: %s", info->control_problem ? info->control_problem : "");
	*nfree = info->slots_total - info->slots_used;
	dsm_cluster_info_free(info);
	return n;
}

static void
share_a(Datum arg)
{
	dsm_segment *segs[6];
	uint32_t unused;

	(void) arg;
	for (int i = 0; i < 6; i++)
		segs[i] = dsm_create(4096, 0);
	ck_assert_ptr_null(dsm_create(4096, DSM_CREATE_NULL_IF_MAXSEGMENTS));
	for (int i = 0; i < 6; i++)
		dsm_detach(segs[i]);
	ck_assert_int_eq(inspect_segments(&unused), 0); /* cached slots are no segments */
	ck_assert_int_eq(unused, 6);
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_send(&ctx.to_b, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 2);
	/* B took every cached slot and gave them back to the free list (it has no cache room for 6). */
	segs[0] = dsm_create(4096, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	ck_assert_ptr_nonnull(segs[0]);
	dsm_detach(segs[0]);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
share_b(Datum arg)
{
	dsm_segment *segs[6];
	uint32_t unused;

	(void) arg;
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), 1);
	for (int i = 0; i < 6; i++)
	{
		segs[i] = dsm_create(4096, DSM_CREATE_NULL_IF_MAXSEGMENTS);
		ck_assert_msg(segs[i] != NULL, "create %d found no slot", i);
		memset(dsm_segment_address(segs[i]), i, 4096);
	}
	ck_assert_ptr_null(dsm_create(4096, DSM_CREATE_NULL_IF_MAXSEGMENTS));
	ck_assert_int_eq(inspect_segments(&unused), 6);
	ck_assert_int_eq(unused, 0);
	ck_assert_int_eq(tu_check_cluster(), 0);
	for (int i = 0; i < 6; i++)
		dsm_detach(segs[i]);
	tu_pipe_send(&ctx.to_a, 2);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
share_supervisor(void)
{
	uint32_t unused;

	supervisor_spawn_backend(share_a, 0);
	supervisor_spawn_backend(share_b, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	while (supervisor_reap(true) > 0)
		;
	ck_assert_int_eq(tu_check_cluster(), 0);
	ck_assert_int_eq(inspect_segments(&unused), 0);
	ck_assert_int_eq(unused, 6); /* the exit hooks freed every cached slot */
}

START_TEST(test_cached_slots_are_shared)
{
	TU_TEST_BEGIN();
	run_cluster_with_slots(impls[_i], 6, share_supervisor);
	TU_TEST_END();
}
END_TEST

/*
 * A creator killed right after it took another backend's cached slot,
 * holding the lock: the next locker finds the mutex abandoned, the reap
 * frees the slot (it holds no segment), and the backend whose cache
 * listed it finds it gone and uses the rest.  Every slot is usable again
 * afterwards.
 */
static void
steal_kill_a(Datum arg)
{
	dsm_segment *segs[6];

	(void) arg;
	for (int i = 0; i < 6; i++)
		segs[i] = dsm_create(4096, 0);
	for (int i = 0; i < 6; i++)
		dsm_detach(segs[i]); /* 4 slots cached, 2 free */
	tu_pipe_send(&ctx.to_b, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 2); /* B is dead and reaped */
	for (int i = 0; i < 6; i++)
	{
		segs[i] = dsm_create(4096, DSM_CREATE_NULL_IF_MAXSEGMENTS);
		ck_assert_msg(segs[i] != NULL, "create %d found no slot", i);
	}
	ck_assert_int_eq(tu_check_cluster(), 0);
	for (int i = 0; i < 6; i++)
		dsm_detach(segs[i]);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
steal_kill_b(Datum arg)
{
	dsm_segment *segs[2];

	(void) arg;
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), 1);
	for (int i = 0; i < 2; i++)
		segs[i] = dsm_create(4096, 0); /* the free list is empty now */
	InjectionPointAttach("dsm-slot-taken", INJECTION_KILL, 0, 0, 1);
	(void) dsm_create(4096, 0);
	ck_abort_msg("dsm-slot-taken did not fire");
	dsm_detach(segs[0]);
}

static void
steal_kill_supervisor(void)
{
	pid_t b;
	siginfo_t si;

	supervisor_spawn_backend(steal_kill_a, 0);
	b = supervisor_spawn_backend(steal_kill_b, 0);
	memset(&si, 0, sizeof si);
	ck_assert_int_eq(waitid(P_PID, (id_t) b, &si, WEXITED | WNOWAIT), 0); /* dead, not yet reaped */
	ck_assert_int_eq(si.si_code, CLD_KILLED);
	ck_assert_int_eq(supervisor_reap(false), 1); /* B reaped, A runs */
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_send(&ctx.to_a, 2);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

START_TEST(test_killed_taking_a_cached_slot)
{
	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		run_cluster_with_slots(impls[_i], 6, steal_kill_supervisor);
	}
	TU_TEST_END();
}
END_TEST

/* ---- roles ------------------------------------------------------------------ */

static void
roles_supervisor(void)
{
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_SUPERVISOR);
	EXPECT_ERROR(dsm_create(4096, 0), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "supervisor");
	EXPECT_ERROR(dsm_attach(1), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "supervisor");
}

static void
stranger(void *arg)
{
	volatile bool hinted = false;

	(void) arg;
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_NONE);
	PG_TRY();
	{
		dsm_create(4096, 0);
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(TopMemoryContext);
		ed = CopyErrorData();
		FlushErrorState();
		ck_assert_msg(strstr(ed->message, "not a backend") != NULL, "%s", ed->message);
		ck_assert_ptr_nonnull(ed->hint);
		ck_assert_msg(strstr(ed->hint, "backend_join") != NULL, "%s", ed->hint);
		hinted = true;
		FreeErrorData(ed);
	}
	PG_END_TRY();
	ck_assert(hinted);
}

START_TEST(test_roles)
{
	TU_TEST_BEGIN();
	run_cluster(DSM_IMPL_POSIX, roles_supervisor);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(stranger, NULL)), 0);
	TU_TEST_END();
}
END_TEST

/* ---- bad arguments ------------------------------------------------------------ */

/* The size the control segment records for h, as dsm_cluster_inspect() shows it (0: not listed). */
static uint64_t
recorded_size(dsm_handle h)
{
	DsmClusterInfo *info = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
	uint64_t size = 0;

	for (int i = 0; i < info->nsegments; i++)
		if (info->segments[i].handle == h)
			size = info->segments[i].size;
	dsm_cluster_info_free(info);
	return size;
}

/*
 * Garbage handles find nothing; a NULL segment is an ERROR that names the
 * function (dsm_detach(NULL), which never raises, is a WARNING and does
 * nothing); nothing is held afterwards.
 */
static void
bad_args_a(Datum arg)
{
	dsm_segment *seg = dsm_create(4096, 0);
	dsm_handle h = dsm_segment_handle(seg);

	(void) arg;
	ck_assert_ptr_null(dsm_attach(DSM_HANDLE_INVALID));
	ck_assert_ptr_null(dsm_attach(0xffffffffu));   /* slot index past maxitems */
	ck_assert_ptr_null(dsm_attach(h + 0x100000u)); /* same slot, another generation */
	ck_assert_ptr_null(dsm_find_mapping(0xffffffffu));
	EXPECT_ERROR(dsm_unpin_segment(h), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "not a pinned");
	EXPECT_ERROR(dsm_unpin_segment(0), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "not a pinned");
	EXPECT_ERROR(dsm_resize(seg, 0), ERRCODE_INVALID_PARAMETER_VALUE, "size 0");
	EXPECT_ERROR(dsm_create(0, 0), ERRCODE_INVALID_PARAMETER_VALUE, "size 0");
	EXPECT_ERROR(dsm_create(SIZE_MAX, 0), 0, "could not");
	if (ctx.impl != DSM_IMPL_SYSV)
	{
		EXPECT_ERROR(dsm_resize(seg, SIZE_MAX), 0, "could not resize");
		ck_assert_uint_eq(dsm_segment_map_length(seg), 4096); /* unchanged */
		ck_assert_uint_eq(recorded_size(h), 4096);
		if (InjectionPointsEnabled())
		{
			/* A failed shrink puts the recorded size back (it was lowered before the truncate). */
			InjectionPointAttach("dsm-impl-resize", INJECTION_FAIL_ERRNO, EIO, 0, 1);
			EXPECT_ERROR(dsm_resize(seg, 1024), 0, "could not resize");
			InjectionPointDetachAll();
			ck_assert_uint_eq(dsm_segment_map_length(seg), 4096);
			ck_assert_uint_eq(recorded_size(h), 4096);
			/*
			 * The shrink's remap fails and so does putting the old size back: the
			 * object stays small, so the record must say so (a bigger record would
			 * make later attaches map past its end).
			 */
			InjectionPointAttach("dsm-impl-resize-mmap", INJECTION_FAIL_ERRNO, ENOMEM, 0, 1);
			InjectionPointAttach("dsm-impl-resize-restore", INJECTION_FAIL_ERRNO, EIO, 0, 1);
			EXPECT_ERROR(dsm_resize(seg, 1024), 0, "could not map shared memory segment");
			InjectionPointDetachAll();
			ck_assert_uint_eq(recorded_size(h), 1024);
			ck_assert_ptr_nonnull(dsm_resize(seg, 4096)); /* whole again; the record follows */
			ck_assert_uint_eq(recorded_size(h), 4096);
		}
	}
	EXPECT_ERROR(dsm_resize(NULL, 4096), ERRCODE_INVALID_PARAMETER_VALUE, "dsm_resize");
	EXPECT_ERROR(dsm_remap(NULL), ERRCODE_INVALID_PARAMETER_VALUE, "dsm_remap");
	EXPECT_ERROR(dsm_pin_segment(NULL), ERRCODE_INVALID_PARAMETER_VALUE, "dsm_pin_segment");
	EXPECT_ERROR(dsm_keep_mapping(NULL), ERRCODE_INVALID_PARAMETER_VALUE, "dsm_keep_mapping");
	EXPECT_ERROR(dsm_unpin_mapping(NULL), ERRCODE_INVALID_PARAMETER_VALUE, "dsm_unpin_mapping");
	EXPECT_ERROR(on_dsm_detach(NULL, NULL, 0), ERRCODE_INVALID_PARAMETER_VALUE, "on_dsm_detach");
	dsm_detach(NULL);
	ck_assert_int_eq(tu_check_cluster(), 0);
	dsm_detach(seg);
	ck_assert(!tu_seg_exists(h));
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
bad_args_supervisor(void)
{
	supervisor_spawn_backend(bad_args_a, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_bad_arguments, bad_args_supervisor)

/* ---- a full /dev/shm (injected ENOSPC) -------------------------------------- */

static void
enospc_a(Datum arg)
{
	dsm_segment *seg;

	(void) arg;
	InjectionPointAttach("dsm-impl-create-fallocate", INJECTION_FAIL_ERRNO, ENOSPC, 0, 1);
	EXPECT_ERROR(dsm_create(1 << 20, 0), 0, "No space left on device");
	ck_assert_int_eq(ctx.impl == DSM_IMPL_POSIX ? tu_count_posix_segments(ctx.dir)
					 : tu_count_dir_entries(ctx.dir) - 2, /* state and lock files */
					 1);                                  /* the control segment only */
	ck_assert_int_eq(tu_check_cluster(), 0);
	seg = dsm_create(1 << 20, 0); /* the point fired once: this one works */
	dsm_detach(seg);
	InjectionPointDetachAll();
	/* A failure after the slot was reserved gives it back. */
	InjectionPointAttach("dsm-create-after-slot", INJECTION_FAIL_ERRNO, ENOSPC, 0, 1);
	EXPECT_ERROR(dsm_create(4096, 0), 0, "No space left on device");
	ck_assert_int_eq(tu_check_cluster(), 0);
	InjectionPointDetachAll();
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
enospc_supervisor(void)
{
	supervisor_spawn_backend(enospc_a, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

START_TEST(test_enospc)
{
	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
		run_cluster(fd_impls[_i], enospc_supervisor);
	TU_TEST_END();
}
END_TEST

/* ---- 5,000 live segments ---------------------------------------------------- */

#define MANY 5000

static void
many_a(Datum arg)
{
	dsm_segment **segs = malloc(sizeof(dsm_segment *) * MANY);

	(void) arg;
	ck_assert_ptr_nonnull(segs);
	for (int i = 0; i < MANY; i++)
	{
		segs[i] = dsm_create(64, 0);
		*(int *) dsm_segment_address(segs[i]) = i;
	}
	for (int i = 0; i < MANY; i += 997)
		ck_assert_ptr_eq(dsm_find_mapping(dsm_segment_handle(segs[i])), segs[i]);
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(segs[MANY / 2]));
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(segs[MANY - 1]));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1);
	ck_assert_int_eq(tu_check_cluster(), 0);
	for (int i = 0; i < MANY; i++)
		dsm_detach(segs[i]);
	free(segs);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
many_b(Datum arg)
{
	dsm_handle h1 = tu_pipe_recv(&ctx.to_b);
	dsm_handle h2 = tu_pipe_recv(&ctx.to_b);

	(void) arg;
	for (int round = 0; round < 1000; round++)
	{
		dsm_segment *s1 = dsm_attach(h1);
		dsm_segment *s2 = dsm_attach(h2);

		ck_assert_ptr_nonnull(s1);
		ck_assert_ptr_nonnull(s2);
		ck_assert_int_eq(*(int *) dsm_segment_address(s1), MANY / 2);
		ck_assert_int_eq(*(int *) dsm_segment_address(s2), MANY - 1);
		dsm_detach(s2);
		dsm_detach(s1);
	}
	tu_pipe_send(&ctx.to_a, 1);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
many_supervisor(void)
{
	supervisor_spawn_backend(many_a, 0);
	supervisor_spawn_backend(many_b, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

START_TEST(test_many_segments)
{
	TU_TEST_BEGIN();
	run_cluster_with_slots(fd_impls[_i], MANY + 100, many_supervisor);
	TU_TEST_END();
}
END_TEST

static Suite *
dsm_suite(void)
{
	Suite *s = suite_create("dsm");
	TCase *tc = tu_tcase("lifecycle", 60);

	tcase_add_loop_test(tc, test_create_attach_destroy, 0, 3);
	tcase_add_loop_test(tc, test_attach_destroyed_handle, 0, 3);
	tcase_add_loop_test(tc, test_resowner_scopes, 0, 3);
	tcase_add_loop_test(tc, test_pin_segment, 0, 3);
	tcase_add_loop_test(tc, test_pinned_removed_at_shutdown, 0, 3);
	tcase_add_loop_test(tc, test_detach_callbacks, 0, 3);
	tcase_add_loop_test(tc, test_resize_remap, 0, 3);
	tcase_add_loop_test(tc, test_too_many_segments, 0, 3);
	tcase_add_loop_test(tc, test_cached_slots_are_shared, 0, 3);
	tcase_add_loop_test(tc, test_killed_taking_a_cached_slot, 0, 3);
	tcase_add_test(tc, test_roles);
	tcase_add_loop_test(tc, test_bad_arguments, 0, 3);
	tcase_add_loop_test(tc, test_enospc, 0, 2);
	suite_add_tcase(s, tc);

	tc = tu_tcase("scale", 120);
	tcase_add_loop_test(tc, test_many_segments, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(dsm_suite());
}
