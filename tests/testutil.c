/*
 * testutil.c: helpers shared by the dsmkit check suites (see testutil.h).
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <talloc.h>
#include <unistd.h>

#include <dsmkit/dsm.h>
#include <dsmkit/dsm_impl.h>
#include <dsmkit/ipc.h>
#include <dsmkit/memutils.h>
#include <dsmkit/supervisor.h>

/*
 * LeakSanitizer: talloc_enable_null_tracking() (called by the leak checks)
 * allocates talloc's NULL context once and never frees it.  Debian's
 * libtalloc has no frame pointers, so LeakSanitizer's stacks stop at the
 * library and the suppression must name the module, not the function.
 * Talloc allocations are not left unchecked: every test compares the
 * talloc block count and the bytes palloc'd below TopMemoryContext with
 * their baselines (tu_assert_no_leaks).
 */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
	return "leak:libtalloc.so\n";
}

const char *__lsan_default_options(void);
const char *
__lsan_default_options(void)
{
	return "print_suppressions=0";
}

/* The pid of the runner process; cluster directories carry it in their name. */
static pid_t runner_pid;

/*
 * True once tu_run_suite() gave the run a System V IPC namespace of its own
 * (see tu_private_ipc_namespace()): every System V segment then belongs to
 * this run.
 */
static bool private_ipc;

static size_t baseline_blocks;
static Size baseline_bytes;
static int baseline_fds;

/* Cluster directories made by this process, for the leak check. */
#define TU_MAX_DIRS 64
static char tu_dirs[TU_MAX_DIRS][PATH_MAX];
static int tu_ndirs;

void
tu_leak_baseline(void)
{
	talloc_enable_null_tracking();
	/* TopMemoryContext and ErrorContext live as long as the process: make them first. */
	MemoryContextInit();
	baseline_blocks = talloc_total_blocks(NULL);
	/* palloc chunks live inside context blocks: count their bytes too. */
	baseline_bytes = MemoryContextMemAllocated(TopMemoryContext, true);
	baseline_fds = tu_count_fds();
}

int
tu_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	ck_assert_msg(d != NULL, "opendir /proc/self/fd: %s", strerror(errno));
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* not the one opendir used */
}

void
tu_assert_no_leaks(void)
{
	size_t blocks = talloc_total_blocks(NULL);

	if (blocks != baseline_blocks)
		talloc_report_full(NULL, stderr);
	ck_assert_msg(blocks == baseline_blocks, "talloc blocks: %zu at start, %zu now", baseline_blocks,
				  blocks);
	if (MemoryContextMemAllocated(TopMemoryContext, true) != baseline_bytes)
		MemoryContextStats(TopMemoryContext);
	ck_assert_msg(MemoryContextMemAllocated(TopMemoryContext, true) == baseline_bytes,
				  "palloc'd bytes below TopMemoryContext: %zu at start, %zu now", (size_t) baseline_bytes,
				  (size_t) MemoryContextMemAllocated(TopMemoryContext, true));
	ck_assert_int_eq(tu_count_fds(), baseline_fds);
	for (int i = 0; i < tu_ndirs; i++)
	{
		struct stat st;

		if (stat(tu_dirs[i], &st) != 0)
			continue;
		ck_assert_msg(tu_count_posix_segments(tu_dirs[i]) == 0, "POSIX segments left for %s",
					  tu_dirs[i]);
		ck_assert_msg(tu_count_sysv_segments(tu_dirs[i]) == 0, "System V segments left for %s",
					  tu_dirs[i]);
	}
}

const char *
tu_cluster_dir(void)
{
	char *dir;

	ck_assert_int_lt(tu_ndirs, TU_MAX_DIRS);
	if (runner_pid == 0)
		runner_pid = getpid();
	dir = tu_dirs[tu_ndirs];
	snprintf(dir, PATH_MAX, "/tmp/dsmkit-test.%d.XXXXXX", (int) runner_pid);
	ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
	tu_ndirs++;
	return dir;
}

void
tu_remove_cluster_dir(const char *dir)
{
	ck_assert_int_eq(tu_count_posix_segments(dir), 0);
	ck_assert_int_eq(tu_count_sysv_segments(dir), 0);
	ck_assert_msg(tu_count_dir_entries(dir) == 0, "cluster directory %s is not empty", dir);
	ck_assert_msg(rmdir(dir) == 0, "rmdir %s: %s", dir, strerror(errno));
}

/* The cluster id of dir, computed as dsm_impl_cluster_id_of() documents. */
static uint32_t
tu_cluster_id(const char *dir)
{
	char real[PATH_MAX];
	uint32_t h = 2166136261u;

	if (realpath(dir, real) == NULL)
		return 0;
	for (const unsigned char *p = (const unsigned char *) real; *p; p++)
	{
		h ^= *p;
		h *= 16777619u;
	}
	return h == 0 ? 1 : h;
}

/* Visit (and optionally remove) the /dev/shm entries of dir's cluster. */
static int
tu_posix_segments(const char *dir, bool remove)
{
	char prefix[64];
	DIR *d;
	struct dirent *de;
	int n = 0;
	uint32_t id = tu_cluster_id(dir);

	if (id == 0)
		return 0;
	snprintf(prefix, sizeof prefix, "dsmkit.%08x.", id);
	d = opendir("/dev/shm");
	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
	{
		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			continue;
		n++;
		if (remove)
		{
			char name[300];

			snprintf(name, sizeof name, "/%s", de->d_name);
			fprintf(stderr, "sweep: removing POSIX segment %s\n", name);
			shm_unlink(name);
		}
	}
	closedir(d);
	return n;
}

/*
 * True if process pid runs and descends from the runner (or is the
 * runner).  Used only without a private IPC namespace, to tell this run's
 * System V segments from another run's whose cluster tag collides.
 */
static bool
tu_live_descendant(pid_t pid)
{
	for (int depth = 0; depth < 64 && pid > 1; depth++)
	{
		char path[64];
		char buf[512];
		char *p;
		int ppid;
		FILE *f;

		if (pid == runner_pid)
			return true;
		snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
		f = fopen(path, "r");
		if (f == NULL)
			return false;
		p = fgets(buf, sizeof buf, f);
		fclose(f);
		/* Fields after the command name (which may hold ") "): state, then ppid. */
		if (p == NULL || (p = strrchr(buf, ')')) == NULL || sscanf(p + 1, " %*c %d", &ppid) != 1)
			return false;
		pid = ppid;
	}
	return false;
}

/*
 * Visit (and optionally remove) the System V segments carrying dir's
 * cluster tag.  The tag has only 16 bits, so another cluster running at the
 * same time (another suite, the stress program, a developer's run) can
 * carry it too.  In a private IPC namespace no other cluster is visible.
 * Without one, a segment whose creator still runs outside this run's
 * process tree is another run's and is neither counted nor removed; a
 * segment whose creator is gone stays counted (it may be our leak).
 */
static int
tu_sysv_segments(const char *dir, bool remove)
{
	FILE *f;
	char line[512];
	int n = 0;
	uint32_t id = tu_cluster_id(dir);
	uint32_t tag;

	if (id == 0)
		return 0;
	tag = ((id >> 16) ^ (id & 0xffff)) & 0xffff;
	f = fopen("/proc/sysvipc/shm", "r");
	if (f == NULL)
		return 0;
	if (fgets(line, sizeof line, f) == NULL) /* header */
	{
		fclose(f);
		return 0;
	}
	while (fgets(line, sizeof line, f) != NULL)
	{
		long long key;
		int shmid;
		int cpid;

		if (sscanf(line, "%lld %d %*s %*s %d", &key, &shmid, &cpid) != 3)
			continue;
		if (((uint32_t) key >> 16) != tag || (uint32_t) key == 0)
			continue;
		if (!private_ipc && runner_pid != 0 && kill(cpid, 0) == 0 && !tu_live_descendant(cpid))
			continue;
		n++;
		if (remove)
		{
			fprintf(stderr, "sweep: removing System V segment key 0x%08x\n", (unsigned) key);
			shmctl(shmid, IPC_RMID, NULL);
		}
	}
	fclose(f);
	return n;
}

int
tu_count_posix_segments(const char *dir)
{
	return tu_posix_segments(dir, false);
}

int
tu_count_sysv_segments(const char *dir)
{
	return tu_sysv_segments(dir, false);
}

int
tu_count_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

int
tu_sweep_cluster(const char *dir)
{
	int n = tu_posix_segments(dir, true) + tu_sysv_segments(dir, true);
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d != NULL)
	{
		while ((de = readdir(d)) != NULL)
		{
			char path[PATH_MAX + 256];

			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
			fprintf(stderr, "sweep: removing file %s\n", path);
			unlink(path);
			n++;
		}
		closedir(d);
	}
	rmdir(dir);
	return n;
}

static int capture_saved_fd = -1;
static FILE *capture_file;

void
tu_capture_stderr_begin(void)
{
	ck_assert(capture_saved_fd < 0);
	fflush(stderr);
	capture_file = tmpfile();
	ck_assert(capture_file != NULL);
	capture_saved_fd = dup(2);
	ck_assert(capture_saved_fd >= 0);
	ck_assert(dup2(fileno(capture_file), 2) == 2);
}

char *
tu_capture_stderr_end(void)
{
	long len;
	char *buf;

	ck_assert(capture_saved_fd >= 0);
	fflush(stderr);
	ck_assert(dup2(capture_saved_fd, 2) == 2);
	close(capture_saved_fd);
	capture_saved_fd = -1;
	len = ftell(capture_file);
	ck_assert(len >= 0);
	buf = malloc(len + 1);
	ck_assert(buf != NULL);
	rewind(capture_file);
	ck_assert(fread(buf, 1, len, capture_file) == (size_t) len);
	buf[len] = '\0';
	fclose(capture_file);
	capture_file = NULL;
	return buf;
}

void
tu_pipe_open(tu_pipe *p)
{
	int fds[2];

	ck_assert(pipe2(fds, O_CLOEXEC) == 0);
	p->rd = fds[0];
	p->wr = fds[1];
}

void
tu_pipe_close(tu_pipe *p)
{
	if (p->rd >= 0)
		close(p->rd);
	if (p->wr >= 0)
		close(p->wr);
	p->rd = p->wr = -1;
}

void
tu_pipe_send(tu_pipe *p, uint32_t value)
{
	ssize_t n;

	do
		n = write(p->wr, &value, sizeof value);
	while (n < 0 && errno == EINTR);
	ck_assert_int_eq(n, sizeof value);
}

uint32_t
tu_pipe_recv(tu_pipe *p)
{
	struct pollfd pfd = {.fd = p->rd, .events = POLLIN};
	uint32_t value = 0;
	ssize_t n;
	int r;

	do
		r = poll(&pfd, 1, 60000);
	while (r < 0 && errno == EINTR);
	ck_assert_msg(r == 1, "timed out waiting on a pipe");
	do
		n = read(p->rd, &value, sizeof value);
	while (n < 0 && errno == EINTR);
	ck_assert_msg(n == sizeof value, "short read on a pipe (%zd): the peer died?", n);
	return value;
}

pid_t
tu_fork(void (*fn)(void *arg), void *arg)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ck_assert(pid >= 0);
	if (pid == 0)
	{
		fn(arg);
		_exit(0);
	}
	return pid;
}

int
tu_wait_child(pid_t pid)
{
	int status;
	pid_t r;

	do
		r = waitpid(pid, &status, 0);
	while (r < 0 && errno == EINTR);
	ck_assert_int_eq(r, pid);
	return status;
}

int
tu_wait_exit_code(pid_t pid)
{
	int status = tu_wait_child(pid);

	ck_assert_msg(WIFEXITED(status), "child %d did not exit normally (status 0x%x)", (int) pid,
				  status);
	return WEXITSTATUS(status);
}

const char *
tu_builddir_path(const char *relative)
{
	static char path[PATH_MAX];
	const char *top = getenv("top_builddir");

	snprintf(path, sizeof path, "%s/%s", top ? top : ".", relative);
	return path;
}

/* ---- child processes (tu_run_child) --------------------------------------- */

/* In a child of tu_run_child(): the write end of the value pipe. */
static int report_fd = -1;

void
tu_report(uint32_t value)
{
	ssize_t n = write(report_fd, &value, sizeof(value));

	if (n != (ssize_t) sizeof(value))
		_exit(98);
}

/* Read fd to EOF into buf (NUL-terminated, truncated to len - 1); returns the bytes kept. */
static size_t
read_all(int fd, char *buf, size_t len)
{
	size_t used = 0;

	for (;;)
	{
		char scratch[4096];
		ssize_t n = read(fd, scratch, sizeof(scratch));

		if (n < 0 && errno == EINTR)
			continue;
		ck_assert(n >= 0);
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n && used + 1 < len; i++)
			buf[used++] = scratch[i];
	}
	buf[used] = '\0';
	return used;
}

void
tu_run_child(void (*fn)(void), tu_child_result *r)
{
	int errp[2];
	int valp[2];
	pid_t pid;
	char raw[sizeof(r->values)];
	size_t got;

	memset(r, 0, sizeof(*r));
	ck_assert(pipe(errp) == 0);
	ck_assert(pipe(valp) == 0);
	fflush(NULL);
	pid = fork();
	ck_assert(pid >= 0);
	if (pid == 0)
	{
		struct rlimit nocore = {0, 0};

		setrlimit(RLIMIT_CORE, &nocore);
		close(errp[0]);
		close(valp[0]);
		dup2(errp[1], STDERR_FILENO);
		close(errp[1]);
		report_fd = valp[1];
		fn();
		_exit(99);
	}
	close(errp[1]);
	close(valp[1]);
	read_all(errp[0], r->err, sizeof(r->err));
	got = read_all(valp[0], raw, sizeof(raw));
	close(errp[0]);
	close(valp[0]);
	r->nvalues = (int) (got / sizeof(uint32_t));
	memcpy(r->values, raw, (size_t) r->nvalues * sizeof(uint32_t));
	r->status = tu_wait_child(pid);
}

/* ---- clusters ---------------------------------------------------------------- */

void
tu_start_supervisor(const char *dir, int impl, int max_backends, int max_segments)
{
	DsmkitConfig config = {dir, impl, max_backends, max_segments};

	supervisor_startup(&config);
}

void
tu_print_problem(const char *problem, void *arg)
{
	(void) arg;
	fprintf(stderr, "consistency problem: %s\n", problem);
}

int
tu_check_cluster(void)
{
	return dsm_control_check(NULL, tu_print_problem, NULL);
}

void
tu_finish_supervisor(void)
{
	while (supervisor_reap(true) > 0)
		;
	ck_assert_int_eq(tu_check_cluster(), 0);
	proc_exit(0);
}

void
tu_end_cluster_dir(const char *dir)
{
	ck_assert_int_eq(tu_count_posix_segments(dir), 0);
	ck_assert_int_eq(tu_count_sysv_segments(dir), 0);
	ck_assert_int_eq(tu_count_dir_entries(dir), 0);
	tu_remove_cluster_dir(dir);
}

bool
tu_seg_exists(dsm_handle h)
{
	char name[4096];
	struct stat st;

	dsm_impl_segment_name(h, name, sizeof name);
	switch (dsm_impl_current())
	{
		case DSM_IMPL_POSIX:
		{
			char path[4200];

			snprintf(path, sizeof path, "/dev/shm%s", name);
			return stat(path, &st) == 0;
		}
		case DSM_IMPL_MMAP:
			return stat(name, &st) == 0;
		default:
		{
			unsigned int key;

			ck_assert(sscanf(name, "key 0x%x", &key) == 1);
			return shmget((key_t) key, 0, 0) >= 0;
		}
	}
}

void
tu_read_byte(int fd)
{
	char c;
	ssize_t n;

	do
		n = read(fd, &c, 1);
	while (n < 0 && errno == EINTR);
	ck_assert_int_eq(n, 1);
}

void
tu_write_file(const char *dir, const char *name, const char *content, size_t len)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, len), (ssize_t) len);
	close(fd);
}

TCase *
tu_tcase(const char *name, double timeout_seconds)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout_seconds);
	return tc;
}

/* Write s to the file path; false on failure. */
static bool
tu_write_proc_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, s, strlen(s)) == (ssize_t) strlen(s);
	close(fd);
	return ok;
}

/* unshare(flags) and, with CLONE_NEWUSER, map our own uid and gid; false on failure. */
static bool
tu_unshare_ipc(int flags)
{
	char map[64];
	uid_t uid = getuid();
	gid_t gid = getgid();

	if (unshare(flags) != 0)
		return false;
	if (!(flags & CLONE_NEWUSER))
		return true;
	snprintf(map, sizeof map, "%u %u 1\n", (unsigned) uid, (unsigned) uid);
	if (!tu_write_proc_file("/proc/self/uid_map", map))
		return false;
	(void) tu_write_proc_file("/proc/self/setgroups", "deny");
	snprintf(map, sizeof map, "%u %u 1\n", (unsigned) gid, (unsigned) gid);
	return tu_write_proc_file("/proc/self/gid_map", map);
}

/*
 * Give the run a System V IPC namespace of its own, so that the System V
 * leak checks, the sweep and dsm_control_check()'s orphan scan see this
 * run's segments only: cluster tags have 16 bits and collide now and then
 * with another cluster running on the machine.  The namespace is inherited
 * by every test process, supervisor, backend and exec'd helper.  POSIX
 * segments (/dev/shm) and files are not affected.  CLONE_NEWIPC needs
 * CAP_SYS_ADMIN; an unprivileged user gets it inside a user namespace that
 * maps only his own uid and gid (tried first in a throw-away child, since a
 * half-made user namespace cannot be left).  If neither works the run uses
 * the shared namespace, and tu_sysv_segments() filters by creator.  Set
 * DSMKIT_TEST_SHARED_IPC=1 to skip this (to watch a run with ipcs).
 */
static void
tu_private_ipc_namespace(void)
{
	const char *env = getenv("DSMKIT_TEST_SHARED_IPC");
	int flags = CLONE_NEWIPC;
	pid_t probe;
	int status;

	if (env != NULL && env[0] != '\0' && strcmp(env, "0") != 0)
		return;
	if (unshare(CLONE_NEWIPC) == 0)
	{
		private_ipc = true;
		return;
	}
	flags |= CLONE_NEWUSER;
	fflush(stderr);
	probe = fork();
	if (probe == 0)
		_exit(tu_unshare_ipc(flags) ? 0 : 1);
	if (probe > 0 && waitpid(probe, &status, 0) == probe && WIFEXITED(status) &&
		WEXITSTATUS(status) == 0 && tu_unshare_ipc(flags))
	{
		private_ipc = true;
		return;
	}
	fprintf(stderr, "note: no private System V IPC namespace (%s); System V leak checks may "
			"be fooled by another cluster with the same 16-bit tag\n", strerror(errno));
}

int
tu_run_suite(Suite *suite)
{
	SRunner *sr = srunner_create(suite);
	int failed;
	int swept = 0;
	char pattern[64];
	DIR *d;
	struct dirent *de;

	runner_pid = getpid();
	tu_private_ipc_namespace();
	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);

	/* The sweep: every cluster directory this run made must be gone. */
	snprintf(pattern, sizeof pattern, "dsmkit-test.%d.", (int) runner_pid);
	d = opendir("/tmp");
	if (d != NULL)
	{
		while ((de = readdir(d)) != NULL)
		{
			char path[PATH_MAX];

			if (strncmp(de->d_name, pattern, strlen(pattern)) != 0)
				continue;
			snprintf(path, sizeof path, "/tmp/%s", de->d_name);
			fprintf(stderr, "sweep: cluster directory %s was left behind\n", path);
			swept += 1 + tu_sweep_cluster(path);
		}
		closedir(d);
	}
	if (swept > 0)
		fprintf(stderr, "sweep: removed %d leftovers: a test leaked (or failed before cleaning up)\n",
				swept);
	return (failed == 0 && swept == 0) ? EXIT_SUCCESS : EXIT_FAILURE;
}
