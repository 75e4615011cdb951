/*
 * testutil.h: helpers shared by the dsmkit check suites.
 *
 * Leak checking (talloc's CHECK_BLOCKS, extended to the OS):
 *   tu_leak_baseline() at the start of a test records the talloc block
 *   count; tu_assert_no_leaks() at the end asserts that it is back, that no
 *   POSIX segment, System V segment or file of the test's cluster
 *   directories remains, and that the test created no extra file
 *   descriptors.  TU_TEST_BEGIN/TU_TEST_END wrap both.
 *
 * Clusters: tu_cluster_dir() makes a fresh directory
 *   /tmp/dsmkit-test.<runner pid>.XXXXXX; every such directory is checked and
 *   removed by tu_run_suite() when the suite ends (the sweep), which fails
 *   the run if it had to remove anything: a failed check test exits with
 *   _exit and cleans nothing, so the sweep keeps the machine clean and still
 *   reports the leak.
 */
#ifndef DSMKIT_TESTUTIL_H
#define DSMKIT_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <check.h>

#include <dsmkit/common.h>
#include <dsmkit/dsm_impl.h>

/* Record the talloc block count and the open descriptors now. */
void tu_leak_baseline(void);
/* Assert nothing leaked since tu_leak_baseline() (see above). */
void tu_assert_no_leaks(void);

#define TU_TEST_BEGIN() tu_leak_baseline()
#define TU_TEST_END() tu_assert_no_leaks()

/*
 * A new, empty cluster directory (an absolute path in a static pool; valid
 * for the rest of the process).  Remembered for the leak checks.
 */
const char *tu_cluster_dir(void);
/* Remove a cluster directory made by tu_cluster_dir(); asserts it is empty. */
void tu_remove_cluster_dir(const char *dir);

/*
 * Counts of what a cluster directory's cluster has in the system: entries
 * in /dev/shm named dsmkit.<id>.*, System V segments whose key carries the
 * cluster tag, and entries in the directory itself.
 */
int tu_count_posix_segments(const char *dir);
int tu_count_sysv_segments(const char *dir);
int tu_count_dir_entries(const char *dir);
/* Remove everything of that cluster (sweep); returns how many things it removed. */
int tu_sweep_cluster(const char *dir);

/* Number of open file descriptors of this process. */
int tu_count_fds(void);

/*
 * Stderr capture: everything written to fd 2 between begin and end is
 * returned by end as a malloc'd string (free() it).
 */
void tu_capture_stderr_begin(void);
char *tu_capture_stderr_end(void);

/* Pipes for synchronising processes (never sleep). */
typedef struct tu_pipe
{
	int rd;
	int wr;
} tu_pipe;
void tu_pipe_open(tu_pipe *p);
void tu_pipe_close(tu_pipe *p);
/* Write one 32-bit value; read one (asserts a full read, with a 60 s poll timeout: a hang is caught sooner by the test case timeout). */
void tu_pipe_send(tu_pipe *p, uint32_t value);
uint32_t tu_pipe_recv(tu_pipe *p);

/*
 * Fork a child that runs fn(arg) and then _exit(0) (or the exit path fn
 * chooses); returns the child's pid.  tu_wait_child() waits for it and
 * returns its raw wait status.
 */
pid_t tu_fork(void (*fn)(void *arg), void *arg);
int tu_wait_child(pid_t pid);
/* Exit code of a child that exited normally; asserts that it did. */
int tu_wait_exit_code(pid_t pid);

/* The path of a program built beside the tests (e.g. "tests/join_helper"). */
const char *tu_builddir_path(const char *relative);

/*
 * Child processes that end themselves (FATAL, PANIC, exit hooks):
 * tu_run_child() forks a child that runs fn() with its stderr on a pipe
 * and core dumps turned off (PANIC aborts on purpose); the child does
 * _exit(99) if fn returns.  The child reports 32-bit values to the test
 * process with tu_report() (async-signal-safe, no allocation; a failed
 * write ends the child with _exit(98)).  tu_run_child() reads both pipes
 * to EOF, so grandchildren that inherited them must have exited too, then
 * waits for the child and fills *r.  Children never call ck_assert: they
 * report, and the test process asserts on *r.
 */
#define TU_MAX_VALUES 512
typedef struct tu_child_result
{
	int status;                     /* raw wait status */
	char err[16384];                /* everything the child wrote to stderr (truncated) */
	uint32_t values[TU_MAX_VALUES]; /* what the child reported, in order */
	int nvalues;                    /* how many values it reported */
} tu_child_result;
void tu_run_child(void (*fn)(void), tu_child_result *r);
void tu_report(uint32_t value);

/*
 * Clusters run by a supervisor process (check_dsm, check_supervisor,
 * check_dsmctl).
 *
 * tu_start_supervisor: become the supervisor of dir with implementation
 *   impl, max_backends and max_segments (0: the defaults); raises ERROR
 *   as supervisor_startup() does.
 * tu_print_problem: a dsm_check_callback that prints the problem to
 *   stderr.
 * tu_check_cluster: dsm_control_check() of this process's cluster with
 *   tu_print_problem; returns the number of problems.
 * tu_finish_supervisor: in the supervisor, reap every backend, assert that
 *   the control segment is consistent and leave through proc_exit(0),
 *   which removes the cluster.
 * tu_end_cluster_dir: in the test process, assert that nothing of dir's
 *   cluster is left (no POSIX or System V segment, an empty directory),
 *   then remove dir.
 * tu_seg_exists: does the operating-system segment of handle h exist?
 *   For a process with its dsm implementation configured (supervisor or
 *   backend).
 */
void tu_start_supervisor(const char *dir, int impl, int max_backends, int max_segments);
void tu_print_problem(const char *problem, void *arg);
int tu_check_cluster(void);
DSMKIT_NORETURN void tu_finish_supervisor(void);
void tu_end_cluster_dir(const char *dir);
bool tu_seg_exists(dsm_handle h);

/* Read one byte from fd (as INJECTION_WAIT writes one), retrying EINTR; asserts it got one. */
void tu_read_byte(int fd);
/* Create or truncate the file dir/name (mode 0600) holding len bytes of content; asserts success. */
void tu_write_file(const char *dir, const char *name, const char *content, size_t len);

/*
 * EXPECT_ERROR(stmt, code, substr): run stmt and assert that it raises
 * ERROR whose message contains substr and, unless code is 0, whose
 * SQLSTATE is code; the error is flushed and the current memory context
 * restored, so the test goes on.  The file that uses it includes
 * <string.h> and <dsmkit.h> (elog.h and memutils.h) itself.
 */
#define EXPECT_ERROR(stmt, code, substr) \
	do { \
		volatile bool raised_ = false; \
		MemoryContext mc_ = CurrentMemoryContext; \
		PG_TRY(); \
		{ \
			stmt; \
		} \
		PG_CATCH(); \
		{ \
			ErrorData *ed_; \
			MemoryContextSwitchTo(mc_); \
			ed_ = CopyErrorData(); \
			FlushErrorState(); \
			raised_ = true; \
			ck_assert_msg(strstr(ed_->message, (substr)) != NULL, "message: %s", ed_->message); \
			if ((code) != 0) \
				ck_assert_msg(ed_->sqlerrcode == (code), "code %s for: %s", \
							  unpack_sql_state(ed_->sqlerrcode), ed_->message); \
			FreeErrorData(ed_); \
		} \
		PG_END_TRY(); \
		ck_assert_msg(raised_, "no ERROR from %s", #stmt); \
	} while (0)

/*
 * EXPECT_CALLERS_ERROR_KEPT(stmt): raise an ERROR ("the request failed",
 * ERRCODE_DATA_CORRUPTED), run stmt in its PG_CATCH block (a cleanup that
 * must not disturb the error being handled), then assert that the error
 * is still the one being handled; flush it, so the test goes on.
 */
#define EXPECT_CALLERS_ERROR_KEPT(stmt) \
	do { \
		volatile int code_ = 0; \
		char msg_[128] = ""; \
		PG_TRY(); \
		{ \
			ereport(ERROR, errcode(ERRCODE_DATA_CORRUPTED), errmsg("the request failed")); \
		} \
		PG_CATCH(); \
		{ \
			ErrorData *ed_; \
			stmt; \
			code_ = geterrcode(); \
			ed_ = CopyErrorData(); \
			snprintf(msg_, sizeof msg_, "%s", ed_->message); \
			FreeErrorData(ed_); \
			FlushErrorState(); \
		} \
		PG_END_TRY(); \
		ck_assert_int_eq(code_, ERRCODE_DATA_CORRUPTED); \
		ck_assert_str_eq(msg_, "the request failed"); \
		ck_assert_int_eq(geterrcode(), 0); \
	} while (0)

/*
 * CLUSTER_TEST(name, fn): a loop test that runs fn() as the supervisor of
 * a fresh cluster with implementation impls[_i] (the file that uses it
 * defines impls[] and run_cluster(impl, fn), which checks that nothing of
 * the cluster is left).  CLUSTER_TEST_WITH_POINTS: the same, for a test
 * that arms injection points; in a build without them it has nothing to
 * run.
 */
#define CLUSTER_TEST(name, fn) \
	START_TEST(name) \
	{ \
		TU_TEST_BEGIN(); \
		run_cluster(impls[_i], fn); \
		TU_TEST_END(); \
	} \
	END_TEST
#define CLUSTER_TEST_WITH_POINTS(name, fn) \
	START_TEST(name) \
	{ \
		TU_TEST_BEGIN(); \
		if (InjectionPointsEnabled()) \
			run_cluster(impls[_i], fn); \
		TU_TEST_END(); \
	} \
	END_TEST

/* A test case with an explicit timeout (check's default is 4 s). */
TCase *tu_tcase(const char *name, double timeout_seconds);

/*
 * Run a suite in check's fork mode, then sweep this run's cluster
 * directories, print what the sweep removed, and return the process exit
 * status: 0 only if every test passed and the sweep found nothing.
 */
int tu_run_suite(Suite *suite);

#endif /* DSMKIT_TESTUTIL_H */
