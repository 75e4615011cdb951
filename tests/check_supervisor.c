/*
 * check_supervisor.c: tests of the supervisor, backends, crash cleanup and
 * crash recovery (supervisor.h, and dsm.h's consistency check).
 *
 * As in check_dsm.c, a test forks a supervisor process that starts a
 * cluster in a fresh directory and spawns backends that talk through
 * pipes; the test asserts the supervisor's exit status and that nothing of
 * the cluster is left.  Crash tests kill processes with SIGKILL (directly
 * or through injection points) and then show that supervisor_reap() or the
 * next supervisor_startup() removes every leftover, and that the control
 * segment passes dsm_control_check().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dsmkit.h>

#include "testutil.h"

#define DONE 0x600du

static const int impls[] = {DSM_IMPL_POSIX, DSM_IMPL_SYSV, DSM_IMPL_MMAP};

static struct
{
	const char *dir;
	int impl;
	tu_pipe to_a;    /* -> backend A */
	tu_pipe to_b;    /* -> backend B */
	tu_pipe to_sup;  /* -> supervisor */
	tu_pipe to_test; /* -> the test process */
	tu_pipe bytes;   /* single bytes from INJECTION_WAIT */
} ctx;

/* ---- helpers --------------------------------------------------------------- */

static void
open_pipes(void)
{
	tu_pipe_open(&ctx.to_a);
	tu_pipe_open(&ctx.to_b);
	tu_pipe_open(&ctx.to_sup);
	tu_pipe_open(&ctx.to_test);
	tu_pipe_open(&ctx.bytes);
}

static void
close_pipes(void)
{
	tu_pipe_close(&ctx.to_a);
	tu_pipe_close(&ctx.to_b);
	tu_pipe_close(&ctx.to_sup);
	tu_pipe_close(&ctx.to_test);
	tu_pipe_close(&ctx.bytes);
}

/* Operating-system objects of the cluster (segments, and files for mmap). */
static int
count_leftovers(void)
{
	return tu_count_posix_segments(ctx.dir) + tu_count_sysv_segments(ctx.dir) +
		tu_count_dir_entries(ctx.dir);
}

static void
start_supervisor(void)
{
	tu_start_supervisor(ctx.dir, ctx.impl, 0, 0);
}

static void
run_supervisor_fn(void *arg)
{
	void (*fn)(void) = (void (*)(void)) arg;

	start_supervisor();
	fn();
	tu_finish_supervisor();
}

/* A supervisor that starts (cleaning up whatever is there) and leaves at once. */
static void
clean_start_fn(void *arg)
{
	(void) arg;
	start_supervisor();
	ck_assert_int_eq(tu_check_cluster(), 0);
	proc_exit(0);
}

static void
begin_cluster(int impl)
{
	ctx.dir = tu_cluster_dir();
	ctx.impl = impl;
	open_pipes();
}

static void
end_cluster(void)
{
	close_pipes();
	tu_end_cluster_dir(ctx.dir);
}

static void
run_cluster(int impl, void (*supervisor_fn)(void))
{
	begin_cluster(impl);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(run_supervisor_fn, (void *) supervisor_fn)), 0);
	end_cluster();
}

/* ---- configuration and roles ------------------------------------------------ */

static void
validation_fn(void *arg)
{
	DsmkitConfig bad_impl = {ctx.dir, 99, 0, 0};
	DsmkitConfig no_dir = {NULL, 0, 0, 0};
	DsmkitConfig missing = {"/nonexistent/dsmkit-test-dir", 0, 0, 0};
	DsmkitConfig not_dir = {"/dev/null", 0, 0, 0};
	DsmkitConfig neg = {ctx.dir, 0, -1, 0};
	DsmkitConfig neg_segs = {ctx.dir, 0, 0, -5};

	(void) arg;
	MemoryContextInit();
	EXPECT_ERROR(supervisor_startup(&bad_impl), ERRCODE_INVALID_PARAMETER_VALUE,
				 "invalid dynamic shared memory implementation 99");
	EXPECT_ERROR(supervisor_startup(&no_dir), ERRCODE_INVALID_PARAMETER_VALUE, "directory");
	EXPECT_ERROR(supervisor_startup(NULL), ERRCODE_INVALID_PARAMETER_VALUE, "directory");
	EXPECT_ERROR(supervisor_startup(&missing), 0, "/nonexistent/dsmkit-test-dir");
	EXPECT_ERROR(supervisor_startup(&not_dir), ERRCODE_INVALID_PARAMETER_VALUE, "not a directory");
	EXPECT_ERROR(supervisor_startup(&neg), ERRCODE_INVALID_PARAMETER_VALUE, "max_backends");
	EXPECT_ERROR(supervisor_startup(&neg_segs), ERRCODE_INVALID_PARAMETER_VALUE, "max_segments");
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_NONE);
	ck_assert_int_eq(count_leftovers(), 0);
	/* Backend functions outside a cluster. */
	EXPECT_ERROR(supervisor_spawn_backend(NULL, 0), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				 "not the supervisor");
	EXPECT_ERROR(supervisor_reap(false), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				 "not the supervisor");
	EXPECT_ERROR(backend_join(ctx.dir), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				 "no supervisor is running");
	/* A good start after the failures; a second call is refused. */
	start_supervisor();
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_SUPERVISOR);
	EXPECT_ERROR(start_supervisor(), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "already a supervisor");
	EXPECT_ERROR(backend_join(ctx.dir), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				 "already a supervisor");
	ck_assert_int_eq(supervisor_reap(false), 0);
	proc_exit(0);
}

START_TEST(test_validation)
{
	TU_TEST_BEGIN();
	begin_cluster(DSM_IMPL_POSIX);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(validation_fn, NULL)), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* ---- lock file ---------------------------------------------------------------- */

static void
sup1_fn(void *arg)
{
	(void) arg;
	start_supervisor();
	tu_pipe_send(&ctx.to_test, (uint32_t) getpid());
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	proc_exit(0);
}

static void
sup2_fn(void *arg)
{
	char pidstr[32];
	volatile bool raised = false;

	snprintf(pidstr, sizeof pidstr, "%u", (unsigned) (uintptr_t) arg);
	PG_TRY();
	{
		start_supervisor();
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(TopMemoryContext);
		ed = CopyErrorData();
		FlushErrorState();
		ck_assert_msg(strstr(ed->message, "supervisor already running in") != NULL, "%s",
					  ed->message);
		ck_assert_msg(strstr(ed->message, ctx.dir) != NULL, "%s", ed->message);
		ck_assert_int_eq(ed->sqlerrcode, ERRCODE_OBJECT_IN_USE);
		ck_assert_ptr_nonnull(ed->detail);
		ck_assert_msg(strstr(ed->detail, pidstr) != NULL, "%s", ed->detail);
		FreeErrorData(ed);
		raised = true;
	}
	PG_END_TRY();
	ck_assert(raised);
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_NONE);
	/* The live supervisor's files are untouched (and its control segment file, for mmap). */
	ck_assert_int_eq(tu_count_dir_entries(ctx.dir), ctx.impl == DSM_IMPL_MMAP ? 3 : 2);
	proc_exit(0);
}

START_TEST(test_second_supervisor_refused)
{
	pid_t sup1;
	uint32_t pid1;

	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	sup1 = tu_fork(sup1_fn, NULL);
	pid1 = tu_pipe_recv(&ctx.to_test);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(sup2_fn, (void *) (uintptr_t) pid1)), 0);
	tu_pipe_send(&ctx.to_sup, DONE);
	ck_assert_int_eq(tu_wait_exit_code(sup1), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

START_TEST(test_stale_lock_file)
{
	char buf[64];
	int n;

	TU_TEST_BEGIN();
	begin_cluster(DSM_IMPL_POSIX);
	/* A live pid (ours) with another start time: a reused pid, so stale. */
	n = snprintf(buf, sizeof buf, "%d\n1\n", (int) getpid());
	tu_write_file(ctx.dir, "dsmkit.pid", buf, (size_t) n);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	/* Garbage is stale too. */
	tu_write_file(ctx.dir, "dsmkit.pid", "garbage", 7);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* A start-up that must be refused: "supervisor already running in", with detail_substr in the detail. */
static void
refused_start_fn(void *arg)
{
	const char *detail_substr = arg;
	volatile bool raised = false;

	MemoryContextInit();
	PG_TRY();
	{
		start_supervisor();
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(TopMemoryContext);
		ed = CopyErrorData();
		FlushErrorState();
		ck_assert_msg(strstr(ed->message, "supervisor already running in") != NULL, "%s", ed->message);
		ck_assert_int_eq(ed->sqlerrcode, ERRCODE_OBJECT_IN_USE);
		ck_assert_ptr_nonnull(ed->detail);
		ck_assert_msg(strstr(ed->detail, detail_substr) != NULL, "%s", ed->detail);
		FreeErrorData(ed);
		raised = true;
	}
	PG_END_TRY();
	ck_assert(raised);
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_NONE);
	_exit(0);
}

static void
exit_at_once_fn(void *arg)
{
	(void) arg;
	_exit(0);
}

/* The pid of a process that has exited and been waited for. */
static pid_t
dead_pid(void)
{
	pid_t pid = tu_fork(exit_at_once_fn, NULL);

	ck_assert_int_eq(tu_wait_exit_code(pid), 0);
	return pid;
}

/*
 * A lock file naming a dead process is stale only if nobody holds its
 * flock: while some process does (here the test itself, standing for a
 * supervisor taking the directory over, or a child the dead supervisor
 * forked), a start-up is refused; once the flock goes, it succeeds.
 */
START_TEST(test_locked_stale_lock_file)
{
	char path[4200];
	char buf[64];
	int n;
	int fd;

	TU_TEST_BEGIN();
	begin_cluster(DSM_IMPL_POSIX);
	n = snprintf(buf, sizeof buf, "%d\n12345\n", (int) dead_pid());
	tu_write_file(ctx.dir, "dsmkit.pid", buf, (size_t) n);
	snprintf(path, sizeof path, "%s/dsmkit.pid", ctx.dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(refused_start_fn, (void *) "Another process holds the lock")),
					 0);
	ck_assert_int_eq(access(path, F_OK), 0); /* the refused start-up left the lock file alone */
	close(fd);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/*
 * Many supervisors race for a directory with a stale lock file: exactly
 * one wins, every other one is told that a supervisor is running, and the
 * winner's proc_exit() leaves nothing.  (With the lock file alone, two
 * racers could each remove the stale file, the second removing the
 * first's fresh one, and both believe they hold the lock.)
 */
#define RACERS 8

static tu_pipe race_go;

static void
racer_fn(void *arg)
{
	char c;
	volatile bool won = false;

	(void) arg;
	close(race_go.wr);
	ck_assert_int_eq(read(race_go.rd, &c, 1), 0); /* EOF: the test let every racer go at once */
	close(race_go.rd);
	MemoryContextInit();
	PG_TRY();
	{
		start_supervisor();
		won = true;
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(TopMemoryContext);
		ed = CopyErrorData();
		FlushErrorState();
		ck_assert_msg(strstr(ed->message, "supervisor already running in") != NULL, "%s", ed->message);
		ck_assert_int_eq(ed->sqlerrcode, ERRCODE_OBJECT_IN_USE);
		FreeErrorData(ed);
	}
	PG_END_TRY();
	tu_pipe_send(&ctx.to_test, won ? 1 : 0);
	if (won)
	{
		ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_SUPERVISOR);
		ck_assert_int_eq(tu_check_cluster(), 0);
		ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE); /* every loser has given up */
	}
	else
		ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_NONE);
	proc_exit(0);
}

START_TEST(test_stale_lock_race)
{
	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	for (int round = 0; round < 6; round++)
	{
		pid_t racers[RACERS];
		char buf[64];
		int n;
		uint32_t winners = 0;

		n = snprintf(buf, sizeof buf, "%d\n12345\n", (int) dead_pid());
		tu_write_file(ctx.dir, "dsmkit.pid", buf, (size_t) n);
		tu_pipe_open(&race_go);
		for (int i = 0; i < RACERS; i++)
			racers[i] = tu_fork(racer_fn, NULL);
		tu_pipe_close(&race_go); /* go */
		for (int i = 0; i < RACERS; i++)
			winners += tu_pipe_recv(&ctx.to_test);
		ck_assert_uint_eq(winners, 1);
		tu_pipe_send(&ctx.to_sup, DONE);
		for (int i = 0; i < RACERS; i++)
			ck_assert_int_eq(tu_wait_exit_code(racers[i]), 0);
		ck_assert_int_eq(count_leftovers(), 0);
	}
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* ---- kill everything, then restart ----------------------------------------- */

static void
victim_a(Datum arg)
{
	dsm_segment *s1 = dsm_create(4096, 0);
	dsm_segment *s2 = dsm_create(8192, 0);
	dsm_segment *s3 = dsm_create(4096, 0);

	(void) arg;
	*(uint32_t *) dsm_segment_address(s1) = 0xfeedface;
	dsm_pin_segment(s2);
	dsm_detach(s2);
	dsm_keep_mapping(s3);
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(s1));
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s1));
	(void) tu_pipe_recv(&ctx.to_a); /* until killed */
}

static void
victim_b(Datum arg)
{
	dsm_segment *s = dsm_attach(tu_pipe_recv(&ctx.to_b));

	(void) arg;
	ck_assert_ptr_nonnull(s);
	tu_pipe_send(&ctx.to_sup, 1);
	(void) tu_pipe_recv(&ctx.to_b); /* until killed */
}

static void
victims_fn(void *arg)
{
	pid_t a;
	pid_t b;

	(void) arg;
	start_supervisor();
	a = supervisor_spawn_backend(victim_a, 0);
	b = supervisor_spawn_backend(victim_b, 0);
	(void) tu_pipe_recv(&ctx.to_sup); /* A's handle and B's 1, in either order */
	(void) tu_pipe_recv(&ctx.to_sup);
	tu_pipe_send(&ctx.to_test, (uint32_t) a);
	tu_pipe_send(&ctx.to_test, (uint32_t) b);
	(void) tu_pipe_recv(&ctx.to_sup); /* until killed */
}

/* Start a cluster with live segments and kill its supervisor and backends with SIGKILL. */
static void
kill_everything(void)
{
	pid_t sup = tu_fork(victims_fn, NULL);
	pid_t a = (pid_t) tu_pipe_recv(&ctx.to_test);
	pid_t b = (pid_t) tu_pipe_recv(&ctx.to_test);
	int status;

	kill(a, SIGKILL);
	kill(b, SIGKILL);
	kill(sup, SIGKILL);
	status = tu_wait_child(sup);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* The crash left segments (3 and the control segment) and files behind. */
	ck_assert_int_ge(count_leftovers(), 4);
}

START_TEST(test_kill_everything_then_restart)
{
	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	kill_everything();
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/*
 * With a garbage state file the control segment cannot be found by name:
 * the name sweep still cleans POSIX and mmap segments, and a System V
 * cluster's control segment is found by its key tag and contents.
 * end_cluster() fails the test if anything of the cluster is left.
 */
START_TEST(test_kill_everything_garbage_state)
{
	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	kill_everything();
	tu_write_file(ctx.dir, "dsmkit.state", "dsmkit-state 1 impl=posix control=", 34);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	ck_assert_int_eq(count_leftovers(), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/*
 * A live System V cluster whose directory was renamed: a new supervisor
 * started at the old path has the same cluster id (a hash of the path),
 * and its start-up looks for crashed System V control segments by key
 * tag and cluster id.  It must leave the live cluster's alone (attached,
 * its supervisor alive), or it would destroy a running cluster's
 * segments.
 */
static void
renamed_creator(Datum arg)
{
	dsm_segment *s = dsm_create(4096, 0);

	(void) arg;
	dsm_pin_segment(s);
	dsm_detach(s);
	tu_pipe_send(&ctx.to_sup, 1);
}

static void
renamed_supervisor_fn(void *arg)
{
	(void) arg;
	start_supervisor();
	supervisor_spawn_backend(renamed_creator, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), 1);
	ck_assert_int_eq(supervisor_reap(true), 0);
	tu_pipe_send(&ctx.to_test, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1); /* the other supervisor has come and gone */
	ck_assert_int_eq(tu_check_cluster(), 0);      /* nothing of ours was destroyed */
	proc_exit(0);
}

/* Start (cleaning up what looks crashed) and leave; its check would call the other cluster's segments orphans. */
static void
start_and_leave_fn(void *arg)
{
	(void) arg;
	start_supervisor();
	proc_exit(0);
}

START_TEST(test_live_sysv_cluster_left_alone)
{
	char old[PATH_MAX];
	char path[PATH_MAX + 32];
	pid_t a;

	TU_TEST_BEGIN();
	begin_cluster(DSM_IMPL_SYSV);
	a = tu_fork(renamed_supervisor_fn, NULL);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 1);
	ck_assert_int_eq(tu_count_sysv_segments(ctx.dir), 2); /* the control segment and the pinned one */
	snprintf(old, sizeof old, "%s.old", ctx.dir);
	ck_assert_int_eq(rename(ctx.dir, old), 0);
	ck_assert_int_eq(mkdir(ctx.dir, 0700), 0);
	/* A second supervisor at the old path: same cluster id, same key tag. */
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(start_and_leave_fn, NULL)), 0);
	ck_assert_int_eq(tu_count_sysv_segments(ctx.dir), 2); /* still there */
	tu_pipe_send(&ctx.to_a, 1);
	ck_assert_int_eq(tu_wait_exit_code(a), 0);
	ck_assert_int_eq(tu_count_sysv_segments(ctx.dir), 0);
	/* The first supervisor removed its files under the path it was given, not in the renamed directory. */
	snprintf(path, sizeof path, "%s/dsmkit.pid", old);
	unlink(path);
	snprintf(path, sizeof path, "%s/dsmkit.state", old);
	unlink(path);
	tu_remove_cluster_dir(old);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* ---- backends that outlive their supervisor ------------------------------------ */

/*
 * A backend whose supervisor is killed alone goes on: a new supervisor
 * must not destroy the segments it maps.  The backend checks its data
 * after the refused start-up and creates one more segment, which the
 * final start-up must clean up too.
 */
static void
orphan_backend(Datum arg)
{
	dsm_segment *s = dsm_create(8192, 0);
	dsm_segment *t;

	(void) arg;
	*(uint32_t *) dsm_segment_address(s) = 0xfeedface;
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1); /* a start-up was refused meanwhile */
	ck_assert_uint_eq(*(uint32_t *) dsm_segment_address(s), 0xfeedface);
	ck_assert(tu_seg_exists(dsm_segment_handle(s)));
	t = dsm_create(4096, 0);
	tu_pipe_send(&ctx.to_test, dsm_segment_handle(t));
	(void) tu_pipe_recv(&ctx.to_a); /* until killed */
}

static void
orphan_supervisor_fn(void *arg)
{
	pid_t a;
	dsm_handle h;

	(void) arg;
	start_supervisor();
	a = supervisor_spawn_backend(orphan_backend, 0);
	h = tu_pipe_recv(&ctx.to_sup);
	tu_pipe_send(&ctx.to_test, (uint32_t) a);
	tu_pipe_send(&ctx.to_test, h);
	(void) tu_pipe_recv(&ctx.to_sup); /* until killed */
}

/* The start-up refused because backend pid (arg) of the dead supervisor still runs. */
static void
orphan_refused_fn(void *arg)
{
	char pidstr[32];
	volatile bool raised = false;

	snprintf(pidstr, sizeof pidstr, "%u", (unsigned) (uintptr_t) arg);
	MemoryContextInit();
	PG_TRY();
	{
		start_supervisor();
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(TopMemoryContext);
		ed = CopyErrorData();
		FlushErrorState();
		ck_assert_msg(strstr(ed->message, "backends of a previous supervisor are still running in") !=
						  NULL, "%s", ed->message);
		ck_assert_msg(strstr(ed->message, ctx.dir) != NULL, "%s", ed->message);
		ck_assert_int_eq(ed->sqlerrcode, ERRCODE_OBJECT_IN_USE);
		ck_assert_ptr_nonnull(ed->detail);
		ck_assert_msg(strstr(ed->detail, pidstr) != NULL, "%s", ed->detail);
		ck_assert_ptr_nonnull(ed->hint);
		ck_assert_msg(strstr(ed->hint, "Stop them") != NULL, "%s", ed->hint);
		FreeErrorData(ed);
		raised = true;
	}
	PG_END_TRY();
	ck_assert(raised);
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_NONE);
	_exit(0);
}

START_TEST(test_orphaned_backend_blocks_startup)
{
	char lock_path[4200];
	char state_path[4200];
	pid_t sup;
	pid_t a;
	int status;
	int posix;
	int sysv;
	int entries;

	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	snprintf(lock_path, sizeof lock_path, "%s/dsmkit.pid", ctx.dir);
	snprintf(state_path, sizeof state_path, "%s/dsmkit.state", ctx.dir);
	sup = tu_fork(orphan_supervisor_fn, NULL);
	a = (pid_t) tu_pipe_recv(&ctx.to_test);
	(void) tu_pipe_recv(&ctx.to_test);
	kill(sup, SIGKILL); /* the supervisor alone */
	status = tu_wait_child(sup);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	posix = tu_count_posix_segments(ctx.dir);
	sysv = tu_count_sysv_segments(ctx.dir);
	entries = tu_count_dir_entries(ctx.dir);
	ck_assert_int_ge(posix + sysv + entries, 4); /* lock, state, control segment, A's segment */

	/* Refused after the bounded wait; only its own lock file came and went. */
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(orphan_refused_fn, (void *) (uintptr_t) a)), 0);
	ck_assert_int_ne(access(lock_path, F_OK), 0);
	ck_assert_int_eq(access(state_path, F_OK), 0);
	ck_assert_int_eq(tu_count_posix_segments(ctx.dir), posix);
	ck_assert_int_eq(tu_count_sysv_segments(ctx.dir), sysv);
	ck_assert_int_eq(tu_count_dir_entries(ctx.dir), entries - 1);

	/* A's segment is intact and A goes on (it makes one more segment). */
	tu_pipe_send(&ctx.to_a, 1);
	(void) tu_pipe_recv(&ctx.to_test);

	/* Killed just before the start-up, A is still dying when it begins: the wait covers that. */
	kill(a, SIGKILL);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* ---- bad state files and control segments ----------------------------------- */

static const char *const bad_states[] = {
	"",                                   /* empty */
	"dsmkit-state 1 impl=posix control=12345 cluster=0000", /* truncated */
	"\x01\x02garbage\xff\n",              /* garbage */
	"0\n",                                /* the reference's format, handle 0 */
	"dsmkit-state 9 impl=posix control=1 cluster=00000001 maxitems=1 max_backends=1 pid=1 start=1\n",
};

START_TEST(test_bad_state_file)
{
	TU_TEST_BEGIN();
	for (size_t i = 0; i < sizeof bad_states / sizeof bad_states[0]; i++)
	{
		begin_cluster(impls[_i]);
		tu_write_file(ctx.dir, "dsmkit.state", bad_states[i], strlen(bad_states[i]));
		ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
		end_cluster();
	}
	TU_TEST_END();
}
END_TEST

/* Make a "control segment" full of garbage and a valid state file naming it. */
static void
fake_control_fn(void *arg)
{
	void *priv = NULL;
	void *addr = NULL;
	size_t size = 0;
	dsm_handle h = 0x1234ffffu;
	char buf[256];
	int n;

	(void) arg;
	dsm_impl_configure(ctx.impl, ctx.dir);
	ck_assert(dsm_impl_op(DSM_OP_CREATE, h, 65536, &priv, &addr, &size, ERROR));
	memset(addr, 0x5a, 65536);
	dsm_impl_op(DSM_OP_DETACH, h, 0, &priv, &addr, &size, ERROR);
	n = snprintf(buf, sizeof buf,
				 "dsmkit-state 1 impl=%s control=%u cluster=%08x maxitems=264 max_backends=100 "
				 "pid=999999 start=1\n",
				 dsm_impl_name(ctx.impl), h, dsm_impl_cluster_id());
	tu_write_file(ctx.dir, "dsmkit.state", buf, (size_t) n);
	_exit(0);
}

START_TEST(test_bad_magic_control_segment)
{
	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(fake_control_fn, NULL)), 0);
	ck_assert_int_ge(count_leftovers(), 2);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* ---- a backend killed while holding mappings ---------------------------------- */

static void
holder_a(Datum arg)
{
	dsm_segment *shared = dsm_create(4096, 0);
	dsm_segment *mine = dsm_create(4096, 0);
	ResourceOwner owner = ResourceOwnerCreate(NULL, "request");
	dsm_segment *scoped;

	(void) arg;
	CurrentResourceOwner = owner;
	scoped = dsm_create(4096, 0);
	CurrentResourceOwner = NULL;
	*(uint32_t *) dsm_segment_address(shared) = 0xfeedface;
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(shared));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1); /* B attached */
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(mine));
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(scoped));
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(shared));
	(void) tu_pipe_recv(&ctx.to_a); /* until killed */
}

static void
holder_b(Datum arg)
{
	dsm_handle h = tu_pipe_recv(&ctx.to_b);
	dsm_segment *s = dsm_attach(h);
	dsm_segment *t;

	(void) arg;
	ck_assert_ptr_nonnull(s);
	tu_pipe_send(&ctx.to_a, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), 2); /* A was killed and reaped */
	/* Business as usual: the data is there, new segments reuse the freed slots. */
	ck_assert_uint_eq(*(uint32_t *) dsm_segment_address(s), 0xfeedface);
	for (int i = 0; i < 10; i++)
	{
		t = dsm_create(4096, 0);
		dsm_detach(t);
	}
	dsm_detach(s);
	ck_assert(!tu_seg_exists(h));
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
holder_supervisor(void)
{
	pid_t a;
	dsm_handle mine;
	dsm_handle scoped;
	dsm_handle shared;

	a = supervisor_spawn_backend(holder_a, 0);
	supervisor_spawn_backend(holder_b, 0);
	mine = tu_pipe_recv(&ctx.to_sup);
	scoped = tu_pipe_recv(&ctx.to_sup);
	shared = tu_pipe_recv(&ctx.to_sup);
	ck_assert_int_eq(tu_check_cluster(), 0);
	kill(a, SIGKILL);
	ck_assert_int_eq(supervisor_reap(true), 1); /* B still runs */
	ck_assert_int_eq(tu_check_cluster(), 0);
	ck_assert(!tu_seg_exists(mine));
	ck_assert(!tu_seg_exists(scoped));
	ck_assert(tu_seg_exists(shared));
	tu_pipe_send(&ctx.to_b, 2);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_killed_backend_reclaimed, holder_supervisor)

/* ---- a backend killed while holding the control lock --------------------------- */

/*
 * A waits for the supervisor's go before it takes the lock: the supervisor
 * itself takes the control lock in supervisor_spawn_backend() after the
 * fork (to record the child's pid), and a child that ran ahead and already
 * sat in the WAIT point with the lock held would block its own killer
 * forever.  A lock held until killed is this test's premise, so the
 * supervisor must be done with the lock before A takes it.
 */
static void
locker_a(Datum arg)
{
	(void) arg;
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1); /* the supervisor no longer needs the lock */
	InjectionPointAttach("dsm-control-locked", INJECTION_WAIT, ctx.bytes.wr, 0, 1);
	(void) dsm_create(4096, 0); /* blocks with the lock held, until killed */
	ck_abort_msg("the wait injection point returned");
}

static void
locker_b(Datum arg)
{
	dsm_segment *s;

	(void) arg;
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), 1); /* the lock holder is dead */
	s = dsm_create(4096, 0);                       /* does not hang */
	dsm_detach(s);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
locker_supervisor(void)
{
	pid_t a;

	supervisor_spawn_backend(locker_b, 0);
	a = supervisor_spawn_backend(locker_a, 0);
	tu_pipe_send(&ctx.to_a, 1);
	tu_read_byte(ctx.bytes.rd); /* A holds the lock and waits */
	kill(a, SIGKILL);
	tu_pipe_send(&ctx.to_b, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST_WITH_POINTS(test_killed_lock_holder, locker_supervisor)

/*
 * Killed right after an attach took its reference (for these lock-free
 * backends, the compare-and-swap that set its bit in the slot's word): the
 * reap drops exactly that reference, so the counts stay exact.
 * test_slow_backends covers the same kill inside the lock.
 */
static void
rollback_a(Datum arg)
{
	dsm_segment *s = dsm_create(4096, 0);

	(void) arg;
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(s));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1);
	dsm_detach(s);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
rollback_b(Datum arg)
{
	dsm_handle h = tu_pipe_recv(&ctx.to_b);

	(void) arg;
	InjectionPointAttach("dsm-attach-after-refcount", INJECTION_KILL, 0, 0, 1);
	(void) dsm_attach(h);
	ck_abort_msg("the kill injection point returned");
}

static void
rollback_supervisor(void)
{
	supervisor_spawn_backend(rollback_a, 0);
	supervisor_spawn_backend(rollback_b, 0);
	ck_assert_int_eq(supervisor_reap(true), 1); /* B died */
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_send(&ctx.to_a, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST_WITH_POINTS(test_rollback_after_kill_in_lock, rollback_supervisor)

/*
 * The supervisor killed with the lock held in the middle of a reclaim,
 * after it cleared a reference bit (logged) and lowered the backend's
 * nrefs (not logged): the next locker, a surviving backend, restores the
 * bit and recounts nrefs, so the counts agree again.
 */
static int count_problems;

static void
count_problem(const char *problem, void *arg)
{
	(void) arg;
	fprintf(stderr, "expected consistency problem: %s\n", problem);
	if (strstr(problem, " counts ") != NULL)
		count_problems++;
}

static void
midreclaim_victim(Datum arg)
{
	(void) arg;
	for (int i = 0; i < 3; i++)
		(void) dsm_create(4096, 0); /* session lifetime: CurrentResourceOwner is NULL */
	tu_pipe_send(&ctx.to_sup, 1);
	(void) tu_pipe_recv(&ctx.to_a); /* until killed */
}

static void
midreclaim_observer(Datum arg)
{
	int problems;

	(void) arg;
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), 1); /* the supervisor died in the lock */
	problems = dsm_control_check(NULL, count_problem, NULL); /* takes the lock: repairs */
	tu_pipe_send(&ctx.to_test, (uint32_t) count_problems);
	tu_pipe_send(&ctx.to_test, (uint32_t) problems);
	_exit(0); /* no exit hooks: the cluster is left for the next start-up to clean */
}

static void
midreclaim_supervisor_fn(void *arg)
{
	pid_t victim;

	(void) arg;
	start_supervisor();
	supervisor_spawn_backend(midreclaim_observer, 0);
	victim = supervisor_spawn_backend(midreclaim_victim, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), 1);
	kill(victim, SIGKILL);
	InjectionPointAttach("supervisor-reap-mid-reclaim", INJECTION_KILL, 0, 0, 1);
	(void) supervisor_reap(true);
	ck_abort_msg("the supervisor survived supervisor-reap-mid-reclaim");
}

START_TEST(test_kill_mid_reclaim)
{
	int status;

	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		begin_cluster(impls[_i]);
		status = tu_wait_child(tu_fork(midreclaim_supervisor_fn, NULL));
		ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		tu_pipe_send(&ctx.to_b, 1);
		ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 0); /* nrefs agrees with every bitmap */
		/* What remains is the dead victim's references (the reclaim was rolled back). */
		ck_assert_uint_ge(tu_pipe_recv(&ctx.to_test), 1);
		ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
		end_cluster();
	}
	TU_TEST_END();
}
END_TEST

/* ---- kills at the dsm injection points ---------------------------------------- */

/*
 * Each point with the passes to let go by first.  B's first detach drops
 * the last reference of its own segment under the lock ("dsm-control-
 * locked", "dsm-word-changed"), destroys it ("dsm-destroy-before-free":
 * moribund, its segment gone) and keeps the slot in its cache
 * ("dsm-slot-cached").  B's create then takes that slot back without the
 * lock ("dsm-create-slot-owned": old handle, nothing made), names it and
 * makes the segment ("dsm-create-after-slot": new handle, nothing made
 * yet; "dsm-create-made": the segment exists, its id not yet recorded),
 * and publishes it ("dsm-create-published": active with B's bit, B still
 * named busy).  The reap must settle each state: free what holds nothing,
 * destroy what B made, and leave no slot or segment behind.
 */
static const struct
{
	const char *name;
	int skip;
} kill_points[] = {
	{"dsm-create-before-slot", 0},
	{"dsm-create-slot-owned", 0},
	{"dsm-create-after-slot", 0},
	{"dsm-create-made", 0},
	{"dsm-create-published", 0},
	{"dsm-attach-after-refcount", 0},
	{"dsm-detach-before-refcount", 0},
	{"dsm-detach-before-destroy", 0},
	{"dsm-destroy-before-free", 0},
	{"dsm-slot-cached", 0},
	{"dsm-control-locked", 0},
	{"dsm-word-changed", 0}, /* B's last detach: word inactive, busy not yet set */
};

#define NOT_FIRED 0xbadu

static const char *kill_point;
static int kill_skip;

static void
point_a(Datum arg)
{
	dsm_segment *s = dsm_create(4096, 0);

	(void) arg;
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(s));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1);
	dsm_detach(s);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
point_b(Datum arg)
{
	dsm_handle h = tu_pipe_recv(&ctx.to_b);
	dsm_segment *mine;
	dsm_segment *other;

	(void) arg;
	mine = dsm_create(4096, 0);
	other = dsm_attach(h);
	ck_assert_ptr_nonnull(other);
	InjectionPointAttach(kill_point, INJECTION_KILL, 0, kill_skip, 1);
	dsm_detach(mine);           /* detach points fire here */
	dsm_detach(other);
	mine = dsm_create(4096, 0); /* create points fire here */
	other = dsm_attach(h);      /* attach points fire here */
	tu_pipe_send(&ctx.to_sup, NOT_FIRED); /* fails the supervisor's check below */
	ck_abort_msg("injection point %s did not fire", kill_point);
}

static void
point_supervisor(void)
{
	int status_running;

	supervisor_spawn_backend(point_a, 0);
	supervisor_spawn_backend(point_b, 0);
	status_running = supervisor_reap(true);
	ck_assert_int_eq(status_running, 1); /* B died */
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_send(&ctx.to_a, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE); /* not NOT_FIRED: B died at the point */
}

START_TEST(test_kill_at_dsm_points)
{
	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		for (size_t i = 0; i < sizeof kill_points / sizeof kill_points[0]; i++)
		{
			kill_point = kill_points[i].name;
			kill_skip = kill_points[i].skip;
			run_cluster(impls[_i], point_supervisor);
		}
	}
	TU_TEST_END();
}
END_TEST

/* ---- System V: a reap never removes another process's segment ------------------ */

/*
 * Under System V two handles can fold to one key, and a creator names its
 * slot and makes its segment without the lock.  So when a dead backend's
 * slot is settled, a segment under that slot's key may be someone else's.
 * B dies at a point where no segment of its own exists under its slot's
 * handle: before making it ("dsm-create-after-slot": the reap knows only
 * the key) or after destroying it ("dsm-destroy-before-free": the reap
 * knows its old id).  Before the reap, the supervisor makes a segment
 * under that key, as a colliding creator would.  The reap must free B's
 * slot and leave that segment alone.
 */
static const char *const collide_points[] = {"dsm-create-after-slot", "dsm-destroy-before-free"};
static const char *collide_point;

static void
collide_b(Datum arg)
{
	dsm_segment *s;

	(void) arg;
	InjectionPointAttach(collide_point, INJECTION_KILL, 0, 0, 1);
	s = dsm_create(4096, 0);
	dsm_detach(s); /* "dsm-destroy-before-free" fires here */
	ck_abort_msg("injection point %s did not fire", collide_point);
}

static void
collide_supervisor(void)
{
	pid_t b = supervisor_spawn_backend(collide_b, 0);
	siginfo_t si;
	DsmClusterInfo *info;
	dsm_handle h = DSM_HANDLE_INVALID;
	char name[64];
	unsigned key;
	int shmid;

	memset(&si, 0, sizeof si);
	ck_assert_int_eq(waitid(P_PID, (id_t) b, &si, WEXITED | WNOWAIT), 0); /* dead, not yet reaped */
	ck_assert_int_eq(si.si_code, CLD_KILLED);
	info = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
	for (int i = 0; i < info->nsegments; i++)
		if (info->segments[i].moribund)
			h = info->segments[i].handle;
	dsm_cluster_info_free(info);
	ck_assert_msg(h != DSM_HANDLE_INVALID, "B's slot is not listed as moribund");
	dsm_impl_segment_name(h, name, sizeof name);
	ck_assert(sscanf(name, "key 0x%x", &key) == 1);
	shmid = shmget((key_t) key, 4096, IPC_CREAT | IPC_EXCL | 0600);
	ck_assert_msg(shmid >= 0, "shmget(0x%08x): %s", key, strerror(errno));
	ck_assert_int_eq(supervisor_reap(true), 0);
	ck_assert_msg(shmget((key_t) key, 0, 0) == shmid, "the reap removed another process's segment");
	ck_assert_int_eq(shmctl(shmid, IPC_RMID, NULL), 0);
	ck_assert_int_eq(tu_check_cluster(), 0);
	info = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
	ck_assert_int_eq(info->nsegments, 0); /* B's slot is free again */
	dsm_cluster_info_free(info);
}

START_TEST(test_sysv_reap_spares_colliding_key)
{
	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		collide_point = collide_points[_i];
		run_cluster(DSM_IMPL_SYSV, collide_supervisor);
	}
	TU_TEST_END();
}
END_TEST

/* ---- backends that attach and detach under the lock ----------------------------- */

/*
 * Backend slots from DSM_FAST_BACKENDS (31) on take the control lock to
 * attach and detach, and their references count in the slot's refcnt
 * rather than as bits of its word.  31 fillers take the lock-free slots
 * (filler 0 creates the shared segment S); then slow backends, one at a
 * time, run one scenario each and are reaped, and after each step the
 * consistency check must pass and S's reference count must be exact.
 */
#define SLOW_FILLERS 31

enum slow_mode
{
	SLOW_PLAIN,       /* attach S, pin it, detach: S stays, pinned */
	SLOW_KILL_ATTACH, /* killed inside the lock after its attach changed the word */
	SLOW_KILL_DETACH, /* killed inside the lock in a detach that is not the last */
	SLOW_KILL_LAST,   /* creates T, killed inside the lock in its last detach */
	SLOW_KILL_PUBLISH, /* killed inside the lock while it publishes a segment it made */
};

static void
slow_filler(Datum arg)
{
	if (DatumGetInt32(arg) == 0)
	{
		dsm_segment *s = dsm_create(8192, 0);

		tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s));
		ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1);
		dsm_detach(s); /* lock-free: the pin keeps S */
		tu_pipe_send(&ctx.to_sup, DONE);
	}
	(void) tu_pipe_recv(&ctx.to_b); /* until told to leave */
}

static void
slow_backend(Datum arg)
{
	enum slow_mode mode = (enum slow_mode) DatumGetInt32(arg);
	dsm_handle h = tu_pipe_recv(&ctx.to_test);
	dsm_segment *s;

	switch (mode)
	{
		case SLOW_PLAIN:
			s = dsm_attach(h);
			ck_assert_ptr_nonnull(s);
			tu_pipe_send(&ctx.to_sup, 1);
			ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 1);
			dsm_pin_segment(s);
			dsm_detach(s);
			tu_pipe_send(&ctx.to_sup, DONE);
			return;
		case SLOW_KILL_ATTACH:
			InjectionPointAttach("dsm-attach-after-refcount", INJECTION_KILL, 0, 0, 1);
			(void) dsm_attach(h);
			break;
		case SLOW_KILL_DETACH:
			s = dsm_attach(h);
			ck_assert_ptr_nonnull(s);
			InjectionPointAttach("dsm-word-changed", INJECTION_KILL, 0, 0, 1);
			dsm_detach(s);
			break;
		case SLOW_KILL_LAST:
			s = dsm_create(4096, 0);
			tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s));
			ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 1);
			InjectionPointAttach("dsm-word-changed", INJECTION_KILL, 0, 0, 1);
			dsm_detach(s);
			break;
		case SLOW_KILL_PUBLISH:
			InjectionPointAttach("dsm-word-changed", INJECTION_KILL, 0, 0, 1);
			(void) dsm_create(4096, 0);
			break;
	}
	ck_abort_msg("slow backend mode %d survived its kill point", (int) mode);
}

/* The reference count dsm_cluster_inspect() shows for h (0: not listed); and the backend slot of pid in *index. */
static uint32_t
inspect_refcnt(dsm_handle h, pid_t pid, int *index)
{
	DsmClusterInfo *info = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
	uint32_t refcnt = 0;

	ck_assert(info->consistent);
	for (int i = 0; i < info->nsegments; i++)
		if (info->segments[i].handle == h)
			refcnt = info->segments[i].refcnt;
	for (int i = 0; index != NULL && i < info->nbackends; i++)
		if (info->backends[i].pid == pid)
			*index = info->backends[i].index;
	dsm_cluster_info_free(info);
	return refcnt;
}

static pid_t
spawn_slow(enum slow_mode mode, dsm_handle h)
{
	pid_t pid = supervisor_spawn_backend(slow_backend, Int32GetDatum((int32_t) mode));
	int index = -1;

	(void) inspect_refcnt(h, pid, &index);
	ck_assert_int_ge(index, SLOW_FILLERS);
	tu_pipe_send(&ctx.to_test, h);
	return pid;
}

static void
slow_supervisor(void)
{
	dsm_handle h;
	dsm_handle t;

	for (int i = 0; i < SLOW_FILLERS; i++)
		supervisor_spawn_backend(slow_filler, Int32GetDatum(i));
	h = tu_pipe_recv(&ctx.to_sup);
	ck_assert_uint_eq(inspect_refcnt(h, 0, NULL), 2); /* filler 0 + 1 */

	spawn_slow(SLOW_PLAIN, h);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), 1);
	ck_assert_uint_eq(inspect_refcnt(h, 0, NULL), 3); /* filler 0, the slow backend, + 1 */
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_send(&ctx.to_test, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	ck_assert_int_eq(supervisor_reap(true), SLOW_FILLERS);
	ck_assert_uint_eq(inspect_refcnt(h, 0, NULL), 3); /* filler 0, the pin, + 1 */
	tu_pipe_send(&ctx.to_a, 1); /* filler 0 detaches, lock-free */
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	ck_assert_uint_eq(inspect_refcnt(h, 0, NULL), 2); /* the pin + 1 */
	ck_assert_int_eq(tu_check_cluster(), 0);

	spawn_slow(SLOW_KILL_ATTACH, h);
	ck_assert_int_eq(supervisor_reap(true), SLOW_FILLERS);
	ck_assert_uint_eq(inspect_refcnt(h, 0, NULL), 2);
	ck_assert_int_eq(tu_check_cluster(), 0);

	spawn_slow(SLOW_KILL_DETACH, h);
	ck_assert_int_eq(supervisor_reap(true), SLOW_FILLERS);
	ck_assert_uint_eq(inspect_refcnt(h, 0, NULL), 2);
	ck_assert_int_eq(tu_check_cluster(), 0);
	ck_assert(tu_seg_exists(h));

	spawn_slow(SLOW_KILL_LAST, h);
	t = tu_pipe_recv(&ctx.to_sup);
	ck_assert_uint_eq(inspect_refcnt(t, 0, NULL), 2); /* the slow creator + 1 */
	tu_pipe_send(&ctx.to_test, 1);
	ck_assert_int_eq(supervisor_reap(true), SLOW_FILLERS);
	ck_assert(!tu_seg_exists(t)); /* the reap dropped the restored last reference */
	ck_assert_uint_eq(inspect_refcnt(t, 0, NULL), 0);
	ck_assert_int_eq(tu_check_cluster(), 0);

	spawn_slow(SLOW_KILL_PUBLISH, h);
	ck_assert_int_eq(supervisor_reap(true), SLOW_FILLERS);
	{
		/* The rollback left the segment unpublished, the reap destroyed it: only S is listed. */
		DsmClusterInfo *info = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);

		ck_assert_int_eq(info->nsegments, 1);
		ck_assert_uint_eq(info->segments[0].handle, h);
		dsm_cluster_info_free(info);
	}
	ck_assert_int_eq(tu_check_cluster(), 0);

	dsm_unpin_segment(h); /* the last reference: S goes */
	ck_assert(!tu_seg_exists(h));
	ck_assert_int_eq(tu_check_cluster(), 0);
	for (int i = 0; i < SLOW_FILLERS; i++)
		tu_pipe_send(&ctx.to_b, 1);
	while (supervisor_reap(true) > 0)
		;
}

CLUSTER_TEST_WITH_POINTS(test_slow_backends, slow_supervisor)

/*
 * System V keys fold a handle to 16 bits, so two handles can share a key.
 * With 3 slots (2 slot bits), the pinned segment L gets handle 4 in slot 0
 * and key low bits 4; slot 1's generation 0x4001 gives handle 0x10005,
 * which folds to 4 too (reached after about 16,000 creates; a collision
 * with the control segment's key may skip a generation on the way).  Its create finds L's key taken (EEXIST) and V is
 * killed at the lock it takes to draw a new handle: slot 1 is left
 * moribund under handle 0x10005 with no segment of its own.  The reclaim
 * must free that slot without removing the segment that has the key,
 * which is L's.
 */
static void
collide_victim(Datum arg)
{
	dsm_segment *l = dsm_create(4096, 0);
	dsm_handle hl = dsm_segment_handle(l);

	(void) arg;
	ck_assert_uint_eq(hl, 4);
	dsm_pin_segment(l);
	dsm_detach(l);
	/* Up to slot 1's handle 0x10001: its next generation gives 0x10005. */
	for (int i = 0;; i++)
	{
		dsm_segment *t = dsm_create(64, 0);
		dsm_handle h = dsm_segment_handle(t);

		dsm_detach(t);
		ck_assert_int_lt(i, 20000);
		if (h == 0x10001u)
			break;
	}
	tu_pipe_send(&ctx.to_sup, hl);
	InjectionPointAttach("dsm-control-locked", INJECTION_KILL, 0, 1, 1);
	(void) dsm_create(64, 0);
	ck_abort_msg("the create did not take a second lock");
}

static void
collide_supervisor_fn(void *arg)
{
	DsmkitConfig config = {ctx.dir, DSM_IMPL_SYSV, 4, 3};
	dsm_handle hl;

	(void) arg;
	supervisor_startup(&config);
	supervisor_spawn_backend(collide_victim, 0);
	hl = tu_pipe_recv(&ctx.to_sup);
	ck_assert_int_eq(supervisor_reap(true), 0);
	ck_assert(tu_seg_exists(hl)); /* the pinned segment survived the reclaim */
	ck_assert_int_eq(tu_check_cluster(), 0);
	dsm_unpin_segment(hl);
	ck_assert(!tu_seg_exists(hl));
	ck_assert_int_eq(tu_check_cluster(), 0);
	proc_exit(0);
}

START_TEST(test_sysv_key_collision_reclaim)
{
	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		begin_cluster(DSM_IMPL_SYSV);
		ck_assert_int_eq(tu_wait_exit_code(tu_fork(collide_supervisor_fn, NULL)), 0);
		end_cluster();
	}
	TU_TEST_END();
}
END_TEST

/* Supervisor killed in the middle of its shutdown: the next start-up finishes the job. */
static void
shutdown_victim_a(Datum arg)
{
	(void) arg;
	for (int i = 0; i < 4; i++)
	{
		dsm_segment *s = dsm_create(4096, 0);

		dsm_pin_segment(s);
		dsm_detach(s);
	}
}

static void
shutdown_victim_fn(void *arg)
{
	(void) arg;
	start_supervisor();
	supervisor_spawn_backend(shutdown_victim_a, 0);
	ck_assert_int_eq(supervisor_reap(true), 0);
	InjectionPointAttach("supervisor-shutdown-mid", INJECTION_KILL, 0, 0, 1);
	proc_exit(0);
}

START_TEST(test_kill_during_shutdown)
{
	int status;

	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		begin_cluster(impls[_i]);
		status = tu_wait_child(tu_fork(shutdown_victim_fn, NULL));
		ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		ck_assert_int_ge(count_leftovers(), 4);
		ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
		end_cluster();
	}
	TU_TEST_END();
}
END_TEST

/*
 * A backend that still runs while the supervisor shuts down: once the
 * shutdown has destroyed a segment (the supervisor waits right there, its
 * slot not yet freed, holding the control lock), attaching that handle
 * returns NULL without the lock: the slot was made moribund before the
 * destroy, so the lock-free attach cannot take a reference to a segment
 * that is gone.
 */
static void
late_creator(Datum arg)
{
	(void) arg;
	for (int i = 0; i < 2; i++)
	{
		dsm_segment *s = dsm_create(4096, 0);

		if (i == 0)
			tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s));
		dsm_pin_segment(s);
		dsm_detach(s);
	}
}

static void
late_attacher(Datum arg)
{
	dsm_handle h;

	(void) arg;
	tu_pipe_send(&ctx.to_sup, 1); /* running: no longer needs the lock to start */
	h = tu_pipe_recv(&ctx.to_b);
	tu_pipe_send(&ctx.to_test, dsm_attach(h) == NULL ? 1 : 0);
	/* The exit hook waits for the control lock until the supervisor is killed. */
}

static void
late_supervisor_fn(void *arg)
{
	dsm_handle h;

	(void) arg;
	start_supervisor();
	supervisor_spawn_backend(late_creator, 0);
	h = tu_pipe_recv(&ctx.to_sup);
	ck_assert_int_eq(supervisor_reap(true), 0);
	supervisor_spawn_backend(late_attacher, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), 1);
	tu_pipe_send(&ctx.to_test, h);
	InjectionPointAttach("supervisor-shutdown-mid", INJECTION_WAIT, ctx.bytes.wr, 0, 1);
	proc_exit(0);
}

START_TEST(test_attach_during_shutdown)
{
	pid_t sup;
	dsm_handle h;

	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		begin_cluster(impls[_i]);
		sup = tu_fork(late_supervisor_fn, NULL);
		h = tu_pipe_recv(&ctx.to_test);
		tu_read_byte(ctx.bytes.rd); /* the first segment is destroyed, the slot not yet freed */
		tu_pipe_send(&ctx.to_b, h);
		ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 1); /* NULL, not an ERROR */
		kill(sup, SIGKILL);
		ck_assert(WIFSIGNALED(tu_wait_child(sup)));
		ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
		end_cluster();
	}
	TU_TEST_END();
}
END_TEST

/*
 * A backend that creates and destroys segments while the supervisor shuts
 * down (and after it has gone): the shutdown takes a slot the backend is
 * creating in away from it, and marks every free slot, so the backend's
 * create fails with a clear ERROR ("the cluster is shutting down") rather
 * than making a segment nobody would destroy, and destroys what it made
 * itself; every later create is refused the same way, using up no slot.
 * Nothing of the cluster is left once both have exited.
 */
static void
busy_creator_done(int code, Datum arg)
{
	(void) code;
	(void) arg;
	tu_pipe_send(&ctx.to_test, DONE); /* after the dsm exit hook */
}

static void
busy_creator(Datum arg)
{
	volatile int n = 0;
	volatile bool refused = false;

	(void) arg;
	on_proc_exit(busy_creator_done, 0);
	while (!refused && n < 10000000)
	{
		PG_TRY();
		{
			dsm_segment *s = dsm_create(4096, 0);

			if (n++ == 100)
				tu_pipe_send(&ctx.to_sup, 1); /* running */
			dsm_detach(s);
		}
		PG_CATCH();
		{
			ErrorData *e = CopyErrorData();

			FlushErrorState();
			ck_assert_msg(strstr(e->message, "the cluster is shutting down") != NULL, "%s",
						  e->message);
			ck_assert_int_eq(e->sqlerrcode, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
			FreeErrorData(e);
			refused = true;
		}
		PG_END_TRY();
	}
	/* Every later create is refused the same way: a refused create uses up no slot (16 slots). */
	for (volatile int k = 0; refused && k < 40; k++)
		EXPECT_ERROR((void) dsm_create(4096, 0), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
					 "the cluster is shutting down");
	tu_pipe_send(&ctx.to_test, refused ? 1 : 0);
	proc_exit(0);
}

static void
busy_supervisor_fn(void *arg)
{
	(void) arg;
	tu_start_supervisor(ctx.dir, ctx.impl, 0, 16);
	supervisor_spawn_backend(busy_creator, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), 1);
	proc_exit(0); /* shuts down while the backend creates */
}

START_TEST(test_create_during_shutdown)
{
	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(busy_supervisor_fn, NULL)), 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 1); /* refused with the shutdown ERROR */
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), DONE); /* its exit hooks ran */
	ck_assert_int_eq(tu_count_posix_segments(ctx.dir), 0);
	ck_assert_int_eq(tu_count_sysv_segments(ctx.dir), 0);
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/*
 * Inspecting a cluster whose supervisor is still starting (state file
 * written, control segment made but not yet filled): no "corrupt" verdict
 * without a word, but a wait of about a second for the supervisor, then a
 * problem that says it runs and may be starting.
 */
static void
starting_supervisor_fn(void *arg)
{
	(void) arg;
	InjectionPointAttach("supervisor-startup-after-control", INJECTION_WAIT, ctx.bytes.wr, 0, 1);
	start_supervisor();
	ck_abort_msg("the wait injection point returned");
}

START_TEST(test_inspect_while_starting)
{
	DsmClusterInfo *info;
	pid_t sup;

	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		begin_cluster(impls[_i]);
		sup = tu_fork(starting_supervisor_fn, NULL);
		tu_read_byte(ctx.bytes.rd);
		info = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
		ck_assert(info->supervisor_alive);
		ck_assert(!info->control_present);
		ck_assert_msg(strstr(info->control_problem, "runs: the cluster may be starting") != NULL, "%s",
					  info->control_problem);
		dsm_cluster_info_free(info);
		kill(sup, SIGKILL);
		(void) tu_wait_child(sup);
		ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
		end_cluster();
	}
	TU_TEST_END();
}
END_TEST

/* Kills at each start-up point: the next start-up cleans. */
static const char *const startup_points[] = {
	"supervisor-startup-after-cleanup",
	"supervisor-startup-before-statefile",
	"dsm-control-create",
	"supervisor-startup-after-control",
};

static void
startup_victim_fn(void *arg)
{
	InjectionPointAttach((const char *) arg, INJECTION_KILL, 0, 0, 1);
	start_supervisor();
	ck_abort_msg("injection point %s did not fire", (const char *) arg);
}

static void
startup_error_fn(void *arg)
{
	MemoryContextInit();
	InjectionPointAttach((const char *) arg, INJECTION_FAIL_ERRNO, EACCES, 0, 1);
	EXPECT_ERROR(start_supervisor(), 0, "Permission denied");
	ck_assert_int_eq(dsmkit_role(), DSMKIT_ROLE_NONE);
	ck_assert_int_eq(count_leftovers(), 0); /* nothing left behind by the failed start */
	InjectionPointDetachAll();
	start_supervisor();
	proc_exit(0);
}

START_TEST(test_startup_points)
{
	TU_TEST_BEGIN();
	if (InjectionPointsEnabled())
	{
		for (size_t i = 0; i < sizeof startup_points / sizeof startup_points[0]; i++)
		{
			int status;

			begin_cluster(impls[_i]);
			status = tu_wait_child(tu_fork(startup_victim_fn, (void *) startup_points[i]));
			ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
			ck_assert_int_eq(tu_wait_exit_code(tu_fork(clean_start_fn, NULL)), 0);
			ck_assert_int_eq(tu_wait_exit_code(tu_fork(startup_error_fn, (void *) startup_points[i])),
							 0);
			end_cluster();
		}
	}
	TU_TEST_END();
}
END_TEST

/* ---- backend_join from an exec'd program ------------------------------------- */

static void
join_a(Datum arg)
{
	dsm_segment *s = dsm_create(4096, 0);
	uint32_t *p = dsm_segment_address(s);

	(void) arg;
	p[0] = 0xfeedface;
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 1);
	ck_assert_uint_eq(p[1], 0x10e); /* written by the joined helper */
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), 2);
	dsm_detach(s);
	tu_pipe_send(&ctx.to_sup, DONE);
}

/* Fork and exec join_helper; its stdin and stdout are the given fds (or left alone if -1). */
static pid_t
start_helper(dsm_handle h, const char *mode, int in, int out)
{
	char hs[32];
	pid_t pid;

	snprintf(hs, sizeof hs, "%u", h);
	fflush(stderr);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
	{
		const char *path = tu_builddir_path("tests/join_helper");

		if (in >= 0)
			dup2(in, 0);
		if (out >= 0)
			dup2(out, 1);
		execl(path, path, ctx.dir, hs, mode, (char *) NULL);
		_exit(127);
	}
	return pid;
}

static void
join_supervisor(void)
{
	dsm_handle h;
	pid_t helper;
	tu_pipe in;
	tu_pipe out;
	char c;

	supervisor_spawn_backend(join_a, 0);
	h = tu_pipe_recv(&ctx.to_sup);

	/* A joined helper attaches, checks, writes and leaves cleanly. */
	helper = start_helper(h, "verify", -1, -1);
	ck_assert_int_eq(tu_wait_exit_code(helper), 0);
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_send(&ctx.to_a, 1);

	/* A joined helper killed while it maps the segment is reclaimed by supervisor_reap. */
	tu_pipe_open(&in);
	tu_pipe_open(&out);
	helper = start_helper(h, "hold", in.rd, out.wr);
	ck_assert_int_eq(read(out.rd, &c, 1), 1);
	ck_assert_int_eq(supervisor_reap(false), 2); /* A and the helper */
	ck_assert_int_eq(tu_check_cluster(), 0);
	kill(helper, SIGKILL);
	ck_assert(WIFSIGNALED(tu_wait_child(helper)));
	ck_assert_int_ge(tu_check_cluster(), 1); /* the dead helper still holds a reference */
	ck_assert_int_eq(supervisor_reap(false), 1);
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_close(&in);
	tu_pipe_close(&out);

	tu_pipe_send(&ctx.to_a, 2);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_backend_join, join_supervisor)

/* A separately started checker (dsmctl check's way) sees the same cluster. */
static void
outside_check_fn(void *arg)
{
	(void) arg;
	ck_assert_int_eq(dsm_control_check(ctx.dir, tu_print_problem, NULL), 0);
	_exit(0);
}

static void
outside_user(Datum arg)
{
	dsm_segment *s = dsm_create(4096, 0);

	(void) arg;
	dsm_pin_segment(s);
	dsm_keep_mapping(s);
	tu_pipe_send(&ctx.to_sup, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), DONE);
}

static void
outside_supervisor(void)
{
	supervisor_spawn_backend(outside_user, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), 1);
	tu_pipe_send(&ctx.to_test, 1);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	tu_pipe_send(&ctx.to_a, DONE);
}

START_TEST(test_check_from_outside)
{
	pid_t sup;

	TU_TEST_BEGIN();
	begin_cluster(impls[_i]);
	sup = tu_fork(run_supervisor_fn, (void *) outside_supervisor);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 1);
	/* A fresh process, forked from the test rather than from the cluster. */
	ck_assert_int_eq(tu_wait_exit_code(tu_fork(outside_check_fn, NULL)), 0);
	tu_pipe_send(&ctx.to_sup, DONE);
	ck_assert_int_eq(tu_wait_exit_code(sup), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/*
 * A check callback that raises ERROR (or calls back into dsm) must not
 * leave the control lock held: problems are reported after the unlock.
 * Before that, the dsm_create() below hung on the lock this process kept.
 */
static void
raising_report(const char *problem, void *arg)
{
	(void) arg;
	ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR), errmsg("report refused: %s", problem));
}

static void
check_raise_backend(Datum arg)
{
	void *priv = NULL;
	void *addr = NULL;
	size_t size = 0;
	dsm_handle stray = 0xabc00005u; /* slot 5, a generation no slot reaches */
	dsm_segment *s;

	(void) arg;
	/* A stray operating-system segment of the cluster: a problem to report. */
	ck_assert(dsm_impl_op(DSM_OP_CREATE, stray, 4096, &priv, &addr, &size, ERROR));
	EXPECT_ERROR(dsm_control_check(NULL, raising_report, NULL), ERRCODE_INTERNAL_ERROR,
				 "has no slot");
	s = dsm_create(4096, 0); /* the lock is free */
	dsm_detach(s);
	ck_assert(dsm_impl_op(DSM_OP_DESTROY, stray, 0, &priv, &addr, &size, ERROR));
	ck_assert_int_eq(tu_check_cluster(), 0);
	tu_pipe_send(&ctx.to_sup, DONE);
}

static void
check_raise_supervisor(void)
{
	supervisor_spawn_backend(check_raise_backend, 0);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
}

CLUSTER_TEST(test_check_callback_raises, check_raise_supervisor)

/*
 * supervisor_reap(true) waits for backends only: the exit status of
 * another child of the supervisor is left for its own waitpid().  (It
 * used to block in waitpid(-1), which reaped and logged that child.)
 */
static void
other_child_fn(void *arg)
{
	(void) arg;
	(void) tu_pipe_recv(&ctx.to_a);
	_exit(7);
}

static void
steal_backend(Datum arg)
{
	(void) arg;
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), DONE);
}

static void
steal_supervisor(void)
{
	siginfo_t si;
	pid_t other;
	int status = 0;

	other = tu_fork(other_child_fn, NULL);
	supervisor_spawn_backend(steal_backend, 0);
	tu_pipe_send(&ctx.to_a, 1);
	/* The other child has exited (not reaped: WNOWAIT) while the backend runs. */
	memset(&si, 0, sizeof si);
	ck_assert_int_eq(waitid(P_PID, (id_t) other, &si, WEXITED | WNOWAIT), 0);
	ck_assert_int_eq(si.si_pid, other);
	tu_pipe_send(&ctx.to_test, 1); /* the test lets the backend go */
	ck_assert_int_eq(supervisor_reap(true), 0);
	ck_assert_int_eq(waitpid(other, &status, 0), other);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 7);
}

START_TEST(test_reap_leaves_other_children)
{
	pid_t sup;

	TU_TEST_BEGIN();
	begin_cluster(DSM_IMPL_POSIX);
	sup = tu_fork(run_supervisor_fn, (void *) steal_supervisor);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_test), 1);
	tu_pipe_send(&ctx.to_b, DONE);
	ck_assert_int_eq(tu_wait_exit_code(sup), 0);
	end_cluster();
	TU_TEST_END();
}
END_TEST

static Suite *
supervisor_suite(void)
{
	Suite *s = suite_create("supervisor");
	TCase *tc = tu_tcase("supervisor", 60);

	tcase_add_test(tc, test_validation);
	tcase_add_loop_test(tc, test_second_supervisor_refused, 0, 3);
	tcase_add_test(tc, test_stale_lock_file);
	tcase_add_test(tc, test_locked_stale_lock_file);
	tcase_add_loop_test(tc, test_stale_lock_race, 0, 3);
	tcase_add_loop_test(tc, test_backend_join, 0, 3);
	tcase_add_loop_test(tc, test_check_from_outside, 0, 3);
	tcase_add_loop_test(tc, test_check_callback_raises, 0, 3);
	tcase_add_loop_test(tc, test_reap_leaves_other_children, 0, 5);
	suite_add_tcase(s, tc);

	tc = tu_tcase("crash", 120);
	tcase_add_loop_test(tc, test_kill_everything_then_restart, 0, 3);
	tcase_add_loop_test(tc, test_kill_everything_garbage_state, 0, 3);
	tcase_add_test(tc, test_live_sysv_cluster_left_alone);
	tcase_add_loop_test(tc, test_orphaned_backend_blocks_startup, 0, 3);
	tcase_add_loop_test(tc, test_bad_state_file, 0, 3);
	tcase_add_loop_test(tc, test_bad_magic_control_segment, 0, 3);
	tcase_add_loop_test(tc, test_killed_backend_reclaimed, 0, 3);
	tcase_add_loop_test(tc, test_killed_lock_holder, 0, 3);
	tcase_add_loop_test(tc, test_rollback_after_kill_in_lock, 0, 3);
	tcase_add_loop_test(tc, test_kill_mid_reclaim, 0, 3);
	tcase_add_loop_test(tc, test_kill_at_dsm_points, 0, 3);
	tcase_add_loop_test(tc, test_sysv_reap_spares_colliding_key, 0, 2);
	tcase_add_loop_test(tc, test_slow_backends, 0, 3);
	tcase_add_test(tc, test_sysv_key_collision_reclaim);
	tcase_add_loop_test(tc, test_kill_during_shutdown, 0, 3);
	tcase_add_loop_test(tc, test_attach_during_shutdown, 0, 3);
	tcase_add_loop_test(tc, test_create_during_shutdown, 0, 3);
	tcase_add_loop_test(tc, test_inspect_while_starting, 0, 3);
	tcase_add_loop_test(tc, test_startup_points, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(supervisor_suite());
}
