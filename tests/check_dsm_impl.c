/*
 * check_dsm_impl.c: tests of the low-level shared memory implementations
 * (dsm_impl_op and friends) and of the injection-point facility.
 *
 * Most tests are loop tests over the three implementations (_i: 0 POSIX,
 * 1 System V, 2 mmap).  Children forked by a test never call ck_assert:
 * they report through their exit code, and the test process asserts.
 * Reports are observed through emit_log_hook, which records the last one.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dsmkit/dsm_impl.h>
#include <dsmkit/elog.h>
#include <dsmkit/injection.h>

#include "testutil.h"

static const int impls[] = {DSM_IMPL_POSIX, DSM_IMPL_SYSV, DSM_IMPL_MMAP};

/* Path of this program, for the tests that exec it again. */
static char self_path[PATH_MAX];

/* ---- observing reports -------------------------------------------------- */

static char last_msg[4096];
static char last_detail[2048];
static int last_code;
static int last_level;
static int n_reports;

static void
record_report(ErrorData *edata)
{
	snprintf(last_msg, sizeof last_msg, "%s", edata->message ? edata->message : "");
	snprintf(last_detail, sizeof last_detail, "%s", edata->detail ? edata->detail : "");
	last_code = edata->sqlerrcode;
	last_level = edata->elevel;
	n_reports++;
}

static void
reset_reports(void)
{
	last_msg[0] = '\0';
	last_detail[0] = '\0';
	last_code = 0;
	last_level = 0;
	n_reports = 0;
}

/* A segment as one process sees it. */
typedef struct seg
{
	void *priv;
	void *addr;
	size_t size;
} seg;

typedef struct opres
{
	bool ok;      /* dsm_impl_op() returned true */
	bool raised;  /* it raised ERROR */
} opres;

/* Outcome of the last run_op(); static, so it survives the longjmp. */
static opres run_result;

/*
 * Run one operation at elevel, catching an ERROR (which is then emitted, so
 * that record_report() sees it, and flushed).
 */
static opres
run_op(dsm_op op, dsm_handle h, size_t size, seg *s, int elevel)
{
	emit_log_hook = record_report;
	reset_reports();
	run_result.ok = false;
	run_result.raised = false;
	PG_TRY();
	{
		run_result.ok = dsm_impl_op(op, h, size, &s->priv, &s->addr, &s->size, elevel);
	}
	PG_CATCH();
	{
		run_result.raised = true;
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	return run_result;
}

/* Run an operation that must succeed, at ERROR. */
static void
must(dsm_op op, dsm_handle h, size_t size, seg *s)
{
	opres r = run_op(op, h, size, s, ERROR);

	ck_assert_msg(r.ok && !r.raised, "op %d on handle 0x%x failed: %s", (int) op, h, last_msg);
}

/* How many OS segments dir's cluster has in implementation impl. */
static int
count_segments(int impl, const char *dir)
{
	switch (impl)
	{
		case DSM_IMPL_SYSV:
			return tu_count_sysv_segments(dir);
		case DSM_IMPL_MMAP:
			return tu_count_dir_entries(dir);
		default:
			return tu_count_posix_segments(dir);
	}
}

/* The current size of a segment, found by its name (-1 if it is gone). */
static long long
segment_size(dsm_handle h)
{
	char name[PATH_MAX + 64];
	char path[PATH_MAX + 80];
	struct stat st;

	dsm_impl_segment_name(h, name, sizeof name);
	if (dsm_impl_current() == DSM_IMPL_SYSV)
	{
		unsigned key;
		int id;
		struct shmid_ds ds;

		ck_assert(sscanf(name, "key 0x%x", &key) == 1);
		id = shmget((key_t) key, 0, 0);
		if (id < 0 || shmctl(id, IPC_STAT, &ds) != 0)
			return -1;
		return (long long) ds.shm_segsz;
	}
	if (dsm_impl_current() == DSM_IMPL_POSIX)
		snprintf(path, sizeof path, "/dev/shm%s", name);
	else
		snprintf(path, sizeof path, "%s", name);
	if (stat(path, &st) != 0)
		return -1;
	return (long long) st.st_size;
}

/* A handle distinct per test and loop iteration (never 0). */
static dsm_handle
test_handle(int n)
{
	return (dsm_handle) (0x5a000000u | ((unsigned) getpid() & 0xfff) << 8 | (unsigned) n);
}

/* ---- configuration and naming ------------------------------------------ */

static uint32_t
fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		h ^= *p;
		h *= 16777619u;
	}
	return h == 0 ? 1 : h;
}

/* True if dsm_impl_configure(impl, dir) raised ERROR (recorded by record_report). */
static bool
configure_raises(int impl, const char *dir)
{
	static volatile bool raised;

	emit_log_hook = record_report;
	reset_reports();
	raised = false;
	PG_TRY();
	{
		dsm_impl_configure(impl, dir);
	}
	PG_CATCH();
	{
		raised = true;
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	return raised;
}

START_TEST(test_configure_and_names)
{
	const char *dir;
	char real[PATH_MAX];
	char name[PATH_MAX + 64];
	char expect[PATH_MAX + 64];
	char link[PATH_MAX];
	uint32_t id;
	seg s = {0};
	opres r;

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();
	ck_assert(realpath(dir, real) != NULL);

	/* Before configuration (fresh test process) operations are refused. */
	if (dsm_impl_current() == 0)
	{
		r = run_op(DSM_OP_CREATE, 1, 100, &s, LOG);
		ck_assert(!r.ok && !r.raised);
		ck_assert_int_eq(last_code, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
		r = run_op(DSM_OP_ATTACH, 1, 0, &s, ERROR);
		ck_assert(r.raised);
	}

	ck_assert_str_eq(dsm_impl_name(DSM_IMPL_POSIX), "posix");
	ck_assert_str_eq(dsm_impl_name(DSM_IMPL_SYSV), "sysv");
	ck_assert_str_eq(dsm_impl_name(DSM_IMPL_MMAP), "mmap");
	ck_assert_str_eq(dsm_impl_name(0), "posix");
	ck_assert_ptr_null(dsm_impl_name(4));
	ck_assert_ptr_null(dsm_impl_name(-1));

	/* 0 means POSIX; the id is FNV-1a of the realpath, equal through a symlink. */
	dsm_impl_configure(0, dir);
	ck_assert_int_eq(dsm_impl_current(), DSM_IMPL_POSIX);
	id = dsm_impl_cluster_id();
	ck_assert_uint_eq(id, fnv1a(real));
	ck_assert_uint_eq(dsm_impl_cluster_id_of(dir), id);
	snprintf(link, sizeof link, "%s.link", dir);
	ck_assert_int_eq(symlink(dir, link), 0);
	ck_assert_uint_eq(dsm_impl_cluster_id_of(link), id);
	ck_assert_uint_ne(dsm_impl_cluster_id_of("/"), id);

	/* Names, and their lengths returned as snprintf() does. */
	ck_assert_int_eq(dsm_impl_segment_name(0x1234abcd, name, sizeof name), 25);
	snprintf(expect, sizeof expect, "/dsmkit.%08x.1234abcd", id);
	ck_assert_str_eq(name, expect);
	ck_assert_int_eq(dsm_impl_segment_name(0x1234abcd, name, 5), 25);
	ck_assert_str_eq(name, "/dsm");
	dsm_impl_configure(DSM_IMPL_MMAP, link);
	ck_assert_int_eq(dsm_impl_current(), DSM_IMPL_MMAP);
	dsm_impl_segment_name(0xabc, name, sizeof name);
	snprintf(expect, sizeof expect, "%s/dsmkit.%08x.00000abc", real, id);
	ck_assert_str_eq(name, expect);
	dsm_impl_configure(DSM_IMPL_SYSV, dir);
	dsm_impl_segment_name(0x00030005, name, sizeof name);
	snprintf(expect, sizeof expect, "key 0x%04x0006", ((id >> 16) ^ (id & 0xffff)) & 0xffff);
	ck_assert_str_eq(name, expect);
	ck_assert_int_eq(unlink(link), 0);

	/* Bad arguments: ERROR, configuration unchanged. */
	{
		static const char *bad_dirs[] = {NULL, "", "/nonexistent/dsmkit/dir", "/etc/passwd"};
		static const int bad_impls[] = {4, -1, 99};

		for (size_t i = 0; i < sizeof bad_dirs / sizeof bad_dirs[0]; i++)
		{
			ck_assert_msg(configure_raises(DSM_IMPL_POSIX, bad_dirs[i]), "configure accepted \"%s\"",
						  bad_dirs[i] ? bad_dirs[i] : "NULL");
			ck_assert_int_eq(dsm_impl_current(), DSM_IMPL_SYSV);
		}
		for (size_t i = 0; i < sizeof bad_impls / sizeof bad_impls[0]; i++)
		{
			ck_assert(configure_raises(bad_impls[i], dir));
			ck_assert_int_eq(last_code, ERRCODE_INVALID_PARAMETER_VALUE);
			ck_assert_int_eq(dsm_impl_current(), DSM_IMPL_SYSV);
		}
	}

	/* Handle 0 and size 0 are refused before any system call. */
	dsm_impl_configure(DSM_IMPL_POSIX, dir);
	r = run_op(DSM_OP_CREATE, 0, 100, &s, LOG);
	ck_assert(!r.ok && !r.raised && n_reports == 1);
	r = run_op(DSM_OP_CREATE, 7, 0, &s, ERROR);
	ck_assert(r.raised);
	ck_assert_int_eq(last_code, ERRCODE_INVALID_PARAMETER_VALUE);
	ck_assert_int_eq(count_segments(DSM_IMPL_POSIX, dir), 0);

	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- life cycle across processes ---------------------------------------- */

typedef struct child_args
{
	dsm_handle h;
	tu_pipe to_child;
	tu_pipe to_parent;
} child_args;

/*
 * Child of test_lifecycle: attach, check the parent's data, write its own,
 * detach.  Exit codes name the failed step.
 */
static void
lifecycle_child(void *arg)
{
	child_args *a = arg;
	seg s = {0};

	if (!dsm_impl_op(DSM_OP_ATTACH, a->h, 0, &s.priv, &s.addr, &s.size, LOG))
		_exit(2);
	if (s.size != 65536 || strcmp(s.addr, "from parent") != 0)
		_exit(3);
	strcpy((char *) s.addr + 1000, "from child");
	if (!dsm_impl_op(DSM_OP_DETACH, a->h, 0, &s.priv, &s.addr, &s.size, LOG) || s.addr != NULL)
		_exit(4);
	_exit(0);
}

START_TEST(test_lifecycle)
{
	int impl = impls[_i];
	const char *dir;
	child_args a;
	seg s = {0};
	pid_t pid;

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();
	dsm_impl_configure(impl, dir);
	a.h = test_handle(1);

	must(DSM_OP_CREATE, a.h, 65536, &s);
	ck_assert_ptr_nonnull(s.addr);
	ck_assert_uint_eq(s.size, 65536);
	ck_assert_int_eq(count_segments(impl, dir), 1);
	ck_assert_int_eq(segment_size(a.h), 65536);
	/* Space is zero-filled and writable to the last byte. */
	ck_assert_int_eq(((char *) s.addr)[65535], 0);
	((char *) s.addr)[65535] = 1;
	strcpy(s.addr, "from parent");

	pid = tu_fork(lifecycle_child, &a);
	ck_assert_int_eq(tu_wait_exit_code(pid), 0);
	ck_assert_str_eq((char *) s.addr + 1000, "from child");

	must(DSM_OP_DETACH, a.h, 0, &s);
	ck_assert_ptr_null(s.addr);
	ck_assert_uint_eq(s.size, 0);
	/* Detaching twice is harmless; the segment outlives its mappings. */
	must(DSM_OP_DETACH, a.h, 0, &s);
	ck_assert_int_eq(count_segments(impl, dir), 1);

	/* Attach again: the data is still there. */
	must(DSM_OP_ATTACH, a.h, 0, &s);
	ck_assert_uint_eq(s.size, 65536); /* size 0: asked the system */
	ck_assert_str_eq((char *) s.addr + 1000, "from child");
	must(DSM_OP_DETACH, a.h, 0, &s);

	/* A known size is mapped as given, without asking the system (a failing stat is never reached). */
	if (InjectionPointsEnabled())
	{
		InjectionPointAttach(impl == DSM_IMPL_SYSV ? "sysv-shmctl" : "dsm-impl-attach-fstat",
							 INJECTION_FAIL_ERRNO, EIO, 0, -1);
		must(DSM_OP_ATTACH, a.h, 4096, &s);
		ck_assert_int_eq(InjectionPointPasses(impl == DSM_IMPL_SYSV ? "sysv-shmctl"
																	: "dsm-impl-attach-fstat"),
						 0);
		InjectionPointDetachAll();
	}
	else
		must(DSM_OP_ATTACH, a.h, 4096, &s);
	ck_assert_uint_eq(s.size, 4096);
	ck_assert_str_eq((char *) s.addr + 1000, "from child");
	must(DSM_OP_DESTROY, a.h, 0, &s);
	ck_assert_ptr_null(s.addr);
	ck_assert_ptr_null(s.priv);
	ck_assert_int_eq(count_segments(impl, dir), 0);
	ck_assert_int_eq(segment_size(a.h), -1);

	tu_remove_cluster_dir(dir);
	TU_TEST_END();
}
END_TEST

START_TEST(test_create_existing_and_missing)
{
	int impl = impls[_i];
	const char *dir;
	dsm_handle h;
	seg s = {0};
	seg t = {0};
	opres r;

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();
	dsm_impl_configure(impl, dir);
	h = test_handle(2);

	/* CREATE of a taken handle: false, quietly, nothing mapped or changed. */
	must(DSM_OP_CREATE, h, 8192, &s);
	strcpy(s.addr, "first");
	r = run_op(DSM_OP_CREATE, h, 4096, &t, ERROR);
	ck_assert(!r.ok && !r.raised);
	ck_assert_int_eq(n_reports, 0);
	ck_assert_ptr_null(t.addr);
	ck_assert_uint_eq(t.size, 0);
	ck_assert_int_eq(segment_size(h), 8192);
	ck_assert_str_eq(s.addr, "first");
	must(DSM_OP_DESTROY, h, 0, &s);

	/* ATTACH of a missing handle: ERROR at ERROR, false and a report at LOG. */
	r = run_op(DSM_OP_ATTACH, h, 0, &t, ERROR);
	ck_assert(r.raised && !r.ok);
	ck_assert_int_eq(last_code, ERRCODE_UNDEFINED_FILE);
	ck_assert_msg(strstr(last_msg, "could not open shared memory segment") != NULL, "%s", last_msg);
	ck_assert_msg(strstr(last_msg, strerror(ENOENT)) != NULL, "%s", last_msg);
	ck_assert_ptr_null(t.addr);
	r = run_op(DSM_OP_ATTACH, h, 0, &t, LOG);
	ck_assert(!r.raised && !r.ok);
	ck_assert_int_eq(n_reports, 1);
	ck_assert_int_eq(last_level, LOG);
	ck_assert_ptr_null(t.addr);

	/* DESTROY of a missing handle is reported at the level asked for. */
	r = run_op(DSM_OP_DESTROY, h, 0, &t, LOG);
	ck_assert(!r.raised && !r.ok);
	ck_assert_int_eq(n_reports, 1);
	ck_assert_msg(strstr(last_msg, "could not remove shared memory segment") != NULL, "%s",
				  last_msg);
	r = run_op(DSM_OP_DESTROY, h, 0, &t, WARNING);
	ck_assert(!r.raised && !r.ok);
	ck_assert_int_eq(last_level, WARNING);
	r = run_op(DSM_OP_DESTROY, h, 0, &t, ERROR);
	ck_assert(r.raised);

	ck_assert_int_eq(count_segments(impl, dir), 0);
	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- resize and remap ----------------------------------------------------- */

/*
 * Child of test_resize: attach, then on each command from the parent remap
 * (ATTACH on the mapped segment) and send back the size it sees and the
 * last byte; command 0 ends it.
 */
static void
resize_child(void *arg)
{
	child_args *a = arg;
	seg s = {0};

	if (!dsm_impl_op(DSM_OP_ATTACH, a->h, 0, &s.priv, &s.addr, &s.size, LOG))
		_exit(2);
	tu_pipe_send(&a->to_parent, (uint32_t) s.size);
	for (;;)
	{
		uint32_t cmd = tu_pipe_recv(&a->to_child);

		if (cmd == 0)
			break;
		if (!dsm_impl_op(DSM_OP_ATTACH, a->h, 0, &s.priv, &s.addr, &s.size, LOG))
			_exit(3);
		tu_pipe_send(&a->to_parent, (uint32_t) s.size);
		tu_pipe_send(&a->to_parent, (uint32_t) ((unsigned char *) s.addr)[s.size - 1]);
		tu_pipe_send(&a->to_parent, (uint32_t) ((unsigned char *) s.addr)[0]);
	}
	if (!dsm_impl_op(DSM_OP_DETACH, a->h, 0, &s.priv, &s.addr, &s.size, LOG))
		_exit(4);
	_exit(0);
}

START_TEST(test_resize)
{
	int impl = impls[_i];
	const char *dir;
	child_args a;
	seg s = {0};
	pid_t pid;
	static const size_t sizes[] = {3 * 65536 + 17, 1000, 1 << 20};

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();
	dsm_impl_configure(impl, dir);
	a.h = test_handle(3);
	tu_pipe_open(&a.to_child);
	tu_pipe_open(&a.to_parent);

	must(DSM_OP_CREATE, a.h, 4096, &s);
	((unsigned char *) s.addr)[0] = 42;
	pid = tu_fork(resize_child, &a);
	ck_assert_uint_eq(tu_pipe_recv(&a.to_parent), 4096);

	if (impl == DSM_IMPL_SYSV)
	{
		seg before = s;
		opres r = run_op(DSM_OP_RESIZE, a.h, 8192, &s, ERROR);

		ck_assert(r.raised);
		ck_assert_int_eq(last_code, ERRCODE_FEATURE_NOT_SUPPORTED);
		r = run_op(DSM_OP_RESIZE, a.h, 8192, &s, LOG);
		ck_assert(!r.raised && !r.ok);
		ck_assert_ptr_eq(s.addr, before.addr);
		ck_assert_uint_eq(s.size, 4096);
		/* Remapping a System V segment works (same size, same data). */
		((unsigned char *) s.addr)[4095] = 7;
		tu_pipe_send(&a.to_child, 1);
		ck_assert_uint_eq(tu_pipe_recv(&a.to_parent), 4096);
		ck_assert_uint_eq(tu_pipe_recv(&a.to_parent), 7);
		ck_assert_uint_eq(tu_pipe_recv(&a.to_parent), 42);
		must(DSM_OP_ATTACH, a.h, 0, &s);
		ck_assert_uint_eq(s.size, 4096);
		ck_assert_int_eq(((unsigned char *) s.addr)[0], 42);
	}
	else
	{
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		{
			must(DSM_OP_RESIZE, a.h, sizes[i], &s);
			ck_assert_uint_eq(s.size, sizes[i]);
			ck_assert_int_eq(segment_size(a.h), (long long) sizes[i]);
			ck_assert_int_eq(((unsigned char *) s.addr)[0], 42);
			((unsigned char *) s.addr)[sizes[i] - 1] = (unsigned char) (i + 1);
			tu_pipe_send(&a.to_child, 1);
			ck_assert_uint_eq(tu_pipe_recv(&a.to_parent), sizes[i]);
			ck_assert_uint_eq(tu_pipe_recv(&a.to_parent), i + 1);
			ck_assert_uint_eq(tu_pipe_recv(&a.to_parent), 42);
		}
		/* RESIZE of an unmapped segment maps it. */
		must(DSM_OP_DETACH, a.h, 0, &s);
		must(DSM_OP_RESIZE, a.h, 5000, &s);
		ck_assert_ptr_nonnull(s.addr);
		ck_assert_uint_eq(s.size, 5000);
		ck_assert_int_eq(((unsigned char *) s.addr)[0], 42);
	}
	tu_pipe_send(&a.to_child, 0);
	ck_assert_int_eq(tu_wait_exit_code(pid), 0);
	must(DSM_OP_DESTROY, a.h, 0, &s);
	ck_assert_int_eq(count_segments(impl, dir), 0);

	tu_pipe_close(&a.to_child);
	tu_pipe_close(&a.to_parent);
	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- mode, close-on-exec, O_NOFOLLOW ------------------------------------- */

/* Read one byte from fd within 10 s; false on timeout or EOF. */
static bool
read_byte(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char c;
	int r;

	do
		r = poll(&pfd, 1, 10000);
	while (r < 0 && errno == EINTR);
	return r == 1 && read(fd, &c, 1) == 1;
}

typedef struct wait_args
{
	dsm_handle h;
	const char *point;
	int fd;
} wait_args;

/* Child: arm point to WAIT (byte to fd), then create; never gets past it. */
static void
wait_child(void *arg)
{
	wait_args *a = arg;
	seg s = {0};

	InjectionPointAttach(a->point, INJECTION_WAIT, a->fd, 0, 1);
	dsm_impl_op(DSM_OP_CREATE, a->h, 1 << 16, &s.priv, &s.addr, &s.size, LOG);
	_exit(3);
}

/*
 * The flags of pid's descriptor that has target open (octal "flags:" of
 * /proc/pid/fdinfo), or -1 if none has it.
 */
static long
fd_flags_of(pid_t pid, const char *target)
{
	char path[128];
	DIR *d;
	struct dirent *de;
	long flags = -1;

	snprintf(path, sizeof path, "/proc/%d/fd", (int) pid);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
	{
		char link[PATH_MAX];
		char lpath[300];
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(lpath, sizeof lpath, "/proc/%d/fd/%s", (int) pid, de->d_name);
		n = readlink(lpath, link, sizeof link - 1);
		if (n < 0)
			continue;
		link[n] = '\0';
		if (strcmp(link, target) == 0)
		{
			char info[300];
			char line[256];
			FILE *f;

			snprintf(info, sizeof info, "/proc/%d/fdinfo/%s", (int) pid, de->d_name);
			f = fopen(info, "r");
			ck_assert_ptr_nonnull(f);
			while (fgets(line, sizeof line, f) != NULL)
				if (strncmp(line, "flags:", 6) == 0)
					flags = strtol(line + 6, NULL, 8);
			fclose(f);
		}
	}
	closedir(d);
	return flags;
}

START_TEST(test_mode_and_cloexec)
{
	int impl = impls[_i];
	const char *dir;
	dsm_handle h;
	seg s = {0};
	char name[PATH_MAX + 64];
	char target[PATH_MAX + 80];
	int fds_before;

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();
	dsm_impl_configure(impl, dir);
	h = test_handle(4);
	dsm_impl_segment_name(h, name, sizeof name);
	if (impl == DSM_IMPL_POSIX)
		snprintf(target, sizeof target, "/dev/shm%s", name);
	else
		snprintf(target, sizeof target, "%s", name);

	/* Mode 0600 and no descriptor kept open after CREATE or ATTACH. */
	fds_before = tu_count_fds();
	must(DSM_OP_CREATE, h, 4096, &s);
	ck_assert_int_eq(tu_count_fds(), fds_before);
	if (impl == DSM_IMPL_SYSV)
	{
		unsigned key;
		struct shmid_ds ds;

		ck_assert(sscanf(name, "key 0x%x", &key) == 1);
		ck_assert_int_eq(shmctl(shmget((key_t) key, 0, 0), IPC_STAT, &ds), 0);
		ck_assert_int_eq(ds.shm_perm.mode & 0777, 0600);
	}
	else
	{
		struct stat st;

		ck_assert_int_eq(lstat(target, &st), 0);
		ck_assert(S_ISREG(st.st_mode));
		ck_assert_int_eq(st.st_mode & 07777, 0600);
	}
	must(DSM_OP_DETACH, h, 0, &s);
	must(DSM_OP_ATTACH, h, 0, &s);
	ck_assert_int_eq(tu_count_fds(), fds_before);
	must(DSM_OP_DESTROY, h, 0, &s);

	/*
	 * Close-on-exec: stop a child at the point where its descriptor is open
	 * and look at the descriptor's flags from outside.
	 */
	if (InjectionPointsEnabled())
	{
		tu_pipe p;
		wait_args a = {.h = h};
		pid_t pid;
		int status;

		tu_pipe_open(&p);
		a.fd = p.wr;
		a.point = impl == DSM_IMPL_SYSV ? "sysv-shmat" : "dsm-impl-create-fallocate";
		pid = tu_fork(wait_child, &a);
		ck_assert_msg(read_byte(p.rd), "the child did not reach the WAIT point");
		if (impl != DSM_IMPL_SYSV)
		{
			long flags = fd_flags_of(pid, target);

			ck_assert_msg(flags >= 0, "the child has no descriptor on %s", target);
			ck_assert_msg(flags & O_CLOEXEC, "flags 0%lo lack O_CLOEXEC", flags);
			ck_assert_int_eq(flags & O_ACCMODE, O_RDWR);
			if (impl == DSM_IMPL_MMAP)
				ck_assert_msg(flags & O_NOFOLLOW, "flags 0%lo lack O_NOFOLLOW", flags);
		}
		ck_assert_int_eq(kill(pid, SIGKILL), 0);
		status = tu_wait_child(pid);
		ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		tu_pipe_close(&p);

		/* The dead child's half-made segment: DESTROY removes it. */
		ck_assert_int_eq(count_segments(impl, dir), 1);
		s = (seg){0};
		must(DSM_OP_DESTROY, h, 0, &s);
		ck_assert_int_eq(count_segments(impl, dir), 0);
	}

	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

START_TEST(test_nofollow)
{
	const char *dir;
	const char *other;
	dsm_handle h;
	seg s = {0};
	char name[PATH_MAX + 64];
	char victim[PATH_MAX + 16];
	struct stat st;
	opres r;
	int fd;

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();
	other = tu_cluster_dir();
	dsm_impl_configure(DSM_IMPL_MMAP, dir);
	h = test_handle(5);
	dsm_impl_segment_name(h, name, sizeof name);

	/* A file someone wants us to clobber, and a link to it at the name. */
	snprintf(victim, sizeof victim, "%s/victim", other);
	fd = open(victim, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "keep", 4), 4);
	close(fd);
	ck_assert_int_eq(symlink(victim, name), 0);

	r = run_op(DSM_OP_CREATE, h, 1 << 20, &s, ERROR);
	ck_assert(r.raised);
	ck_assert_msg(strstr(last_msg, "could not create shared memory segment") != NULL, "%s",
				  last_msg);
	ck_assert_msg(strstr(last_msg, strerror(ELOOP)) != NULL, "%s", last_msg);
	ck_assert_ptr_null(s.addr);
	r = run_op(DSM_OP_ATTACH, h, 0, &s, LOG);
	ck_assert(!r.ok && !r.raised && n_reports == 1);
	ck_assert_msg(strstr(last_msg, strerror(ELOOP)) != NULL, "%s", last_msg);
	ck_assert_ptr_null(s.addr);

	/* The target is untouched; the link is still a link. */
	ck_assert_int_eq(stat(victim, &st), 0);
	ck_assert_int_eq(st.st_size, 4);
	ck_assert_int_eq(st.st_mode & 07777, 0644);
	ck_assert_int_eq(lstat(name, &st), 0);
	ck_assert(S_ISLNK(st.st_mode));

	ck_assert_int_eq(unlink(name), 0);
	ck_assert_int_eq(unlink(victim), 0);
	tu_remove_cluster_dir(other);
	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- System V key 0 ------------------------------------------------------- */

START_TEST(test_sysv_key_zero)
{
	const char *dir;
	char real[PATH_MAX];
	char sub[PATH_MAX + 32];
	char name[64];
	seg s = {0};
	opres r;
	unsigned n;

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();
	ck_assert(realpath(dir, real) != NULL);
	/* Find a subdirectory name whose cluster tag is 0 (one in 65536). */
	for (n = 0; n < 10000000; n++)
	{
		uint32_t id;

		snprintf(sub, sizeof sub, "%s/k%u", real, n);
		id = fnv1a(sub);
		if ((((id >> 16) ^ (id & 0xffff)) & 0xffff) == 0)
			break;
	}
	ck_assert_uint_lt(n, 10000000);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	dsm_impl_configure(DSM_IMPL_SYSV, sub);

	/* 0x00070007 folds to 0: key 0 is IPC_PRIVATE and must never be used. */
	dsm_impl_segment_name(0x00070007, name, sizeof name);
	ck_assert_str_eq(name, "key 0x00000000");
	r = run_op(DSM_OP_CREATE, 0x00070007, 4096, &s, ERROR);
	ck_assert(!r.ok && !r.raised && n_reports == 0);
	ck_assert_ptr_null(s.addr);
	r = run_op(DSM_OP_ATTACH, 0x00070007, 0, &s, ERROR);
	ck_assert(r.raised);
	ck_assert_int_eq(last_code, ERRCODE_UNDEFINED_FILE);

	ck_assert_int_eq(rmdir(sub), 0);
	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- injected failures ---------------------------------------------------- */

static const int inj_errnos[] = {ENOSPC, EMFILE, ENOMEM, EEXIST, EACCES, EINTR};

/* One operation and one point it passes, in one implementation. */
typedef struct inj_case
{
	int impl;
	dsm_op op;
	const char *point;
	bool mapped;   /* the segment exists and is mapped here before the op */
	bool exists;   /* the segment exists (unmapped unless mapped) before the op */
} inj_case;

#define FD_CASES(impl) \
	{impl, DSM_OP_CREATE, "dsm-impl-create-open", false, false}, \
	{impl, DSM_OP_CREATE, "dsm-impl-create-resize", false, false}, \
	{impl, DSM_OP_CREATE, "dsm-impl-create-fallocate", false, false}, \
	{impl, DSM_OP_CREATE, "dsm-impl-create-mmap", false, false}, \
	{impl, DSM_OP_ATTACH, "dsm-impl-attach-open", false, true}, \
	{impl, DSM_OP_ATTACH, "dsm-impl-attach-fstat", false, true}, \
	{impl, DSM_OP_ATTACH, "dsm-impl-attach-mmap", false, true}, \
	{impl, DSM_OP_ATTACH, "dsm-impl-attach-mmap", true, true}, \
	{impl, DSM_OP_ATTACH, "dsm-impl-detach", true, true}, \
	{impl, DSM_OP_RESIZE, "dsm-impl-resize-open", true, true}, \
	{impl, DSM_OP_RESIZE, "dsm-impl-resize-fstat", true, true}, \
	{impl, DSM_OP_RESIZE, "dsm-impl-resize", true, true}, \
	{impl, DSM_OP_RESIZE, "dsm-impl-resize-fallocate", true, true}, \
	{impl, DSM_OP_RESIZE, "dsm-impl-resize-mmap", true, true}, \
	{impl, DSM_OP_RESIZE, "dsm-impl-resize-mmap", false, true}, \
	{impl, DSM_OP_DETACH, "dsm-impl-detach", true, true}, \
	{impl, DSM_OP_DESTROY, "dsm-impl-detach", true, true}, \
	{impl, DSM_OP_DESTROY, "dsm-impl-destroy", true, true}, \
	{impl, DSM_OP_DESTROY, "dsm-impl-destroy", false, true}

static const inj_case inj_cases[] = {
	FD_CASES(DSM_IMPL_POSIX),
	FD_CASES(DSM_IMPL_MMAP),
	{DSM_IMPL_SYSV, DSM_OP_CREATE, "sysv-shmget", false, false},
	{DSM_IMPL_SYSV, DSM_OP_CREATE, "sysv-shmat", false, false},
	{DSM_IMPL_SYSV, DSM_OP_ATTACH, "sysv-shmget", false, true},
	{DSM_IMPL_SYSV, DSM_OP_ATTACH, "sysv-shmctl", false, true},
	{DSM_IMPL_SYSV, DSM_OP_ATTACH, "sysv-shmat", false, true},
	{DSM_IMPL_SYSV, DSM_OP_ATTACH, "sysv-shmat", true, true},
	{DSM_IMPL_SYSV, DSM_OP_ATTACH, "dsm-impl-detach", true, true},
	{DSM_IMPL_SYSV, DSM_OP_DETACH, "dsm-impl-detach", true, true},
	{DSM_IMPL_SYSV, DSM_OP_DESTROY, "dsm-impl-detach", true, true},
	{DSM_IMPL_SYSV, DSM_OP_DESTROY, "sysv-shmget", false, true},
	{DSM_IMPL_SYSV, DSM_OP_DESTROY, "dsm-impl-destroy", true, true},
	{DSM_IMPL_SYSV, DSM_OP_DESTROY, "dsm-impl-destroy", false, true},
};

#define INJ_SIZE 8192
#define INJ_RESIZE (5 * 8192)

/*
 * For one point and every errno: the operation gives a clean ERROR (EINTR:
 * success after a retry; EEXIST at a create's name: a quiet false), the
 * state after it is exactly the state before (or after, on success), and
 * nothing is left once the segment is destroyed.
 */
START_TEST(test_injected_errnos)
{
	const inj_case *c = &inj_cases[_i];
	const char *dir;
	dsm_handle h;

	TU_TEST_BEGIN();
	if (!InjectionPointsEnabled())
	{
		TU_TEST_END(); /* nothing to test in a build without points */
		return;
	}
	dir = tu_cluster_dir();
	dsm_impl_configure(c->impl, dir);
	h = test_handle(6);

	for (size_t e = 0; e < sizeof inj_errnos / sizeof inj_errnos[0]; e++)
	{
		int err = inj_errnos[e];
		seg s = {0};
		seg before;
		opres r;
		int fds = tu_count_fds();
		bool quiet_exists = err == EEXIST && c->op == DSM_OP_CREATE &&
			(strcmp(c->point, "dsm-impl-create-open") == 0 || strcmp(c->point, "sysv-shmget") == 0);

		if (c->exists)
		{
			must(DSM_OP_CREATE, h, INJ_SIZE, &s);
			memset(s.addr, 0x5c, INJ_SIZE);
			if (!c->mapped)
				must(DSM_OP_DETACH, h, 0, &s);
		}
		before = s;

		InjectionPointAttach(c->point, INJECTION_FAIL_ERRNO, err, 0, 1);
		/* ATTACH with size 0 asks the system for the size (the stat points). */
		r = run_op(c->op, h,
				   c->op == DSM_OP_RESIZE ? INJ_RESIZE : c->op == DSM_OP_ATTACH ? 0 : INJ_SIZE, &s,
				   ERROR);
		ck_assert_msg(InjectionPointPasses(c->point) >= 1, "%s was not passed", c->point);
		InjectionPointDetachAll();

		if (err == EINTR)
		{
			ck_assert_msg(r.ok && !r.raised, "%s with EINTR: %s", c->point, last_msg);
			ck_assert_int_eq(InjectionPointPasses(c->point), 2);
		}
		else if (quiet_exists)
		{
			ck_assert(!r.ok && !r.raised);
			ck_assert_int_eq(n_reports, 0);
		}
		else
		{
			ck_assert_msg(r.raised, "%s with %s did not raise", c->point, strerror(err));
			ck_assert_int_eq(last_level, ERROR);
			ck_assert_msg(strstr(last_msg, strerror(err)) != NULL, "%s: \"%s\" lacks \"%s\"",
						  c->point, last_msg, strerror(err));
			ck_assert_msg(strstr(last_msg, "shared memory segment") != NULL, "%s", last_msg);
			{
				/* The report names the segment (System V builds that name only on failure). */
				char name[PATH_MAX + 64];

				dsm_impl_segment_name(h, name, sizeof name);
				ck_assert_msg(strstr(last_msg, name) != NULL, "%s: \"%s\" lacks \"%s\"", c->point,
							  last_msg, name);
			}
			if (err == ENOMEM)
				ck_assert_int_eq(last_code, ERRCODE_OUT_OF_MEMORY);
			else if (err == ENOSPC)
				ck_assert_int_eq(last_code, ERRCODE_DISK_FULL);
		}
		ck_assert_int_eq(tu_count_fds(), fds);

		if (!r.ok)
		{
			/* Nothing changed: same mapping, same size, same data. */
			bool destroy_unmapped = c->op == DSM_OP_DESTROY && strcmp(c->point, "dsm-impl-destroy") == 0;

			if (destroy_unmapped)
			{
				ck_assert_ptr_null(s.addr);
				s = (seg){0};
			}
			else
			{
				ck_assert_ptr_eq(s.addr, before.addr);
				ck_assert_uint_eq(s.size, before.size);
			}
			if (s.addr != NULL)
				ck_assert_int_eq(((unsigned char *) s.addr)[s.size - 1], 0x5c);
			ck_assert_int_eq(count_segments(c->impl, dir), (c->exists ? 1 : 0));
			if (c->exists)
				ck_assert_int_eq(segment_size(h), INJ_SIZE);
		}
		else
		{
			switch (c->op)
			{
				case DSM_OP_CREATE:
				case DSM_OP_ATTACH:
					ck_assert_ptr_nonnull(s.addr);
					ck_assert_uint_eq(s.size, INJ_SIZE);
					break;
				case DSM_OP_RESIZE:
					ck_assert_uint_eq(s.size, INJ_RESIZE);
					ck_assert_int_eq(segment_size(h), INJ_RESIZE);
					ck_assert_int_eq(((unsigned char *) s.addr)[INJ_SIZE - 1], 0x5c);
					break;
				case DSM_OP_DETACH:
				case DSM_OP_DESTROY:
					ck_assert_ptr_null(s.addr);
					break;
			}
			if (c->op == DSM_OP_DESTROY)
				ck_assert_int_eq(count_segments(c->impl, dir), 0);
		}

		/* Clean up and check that nothing is left. */
		if (count_segments(c->impl, dir) > 0)
			must(DSM_OP_DESTROY, h, 0, &s);
		else if (s.addr != NULL)
			must(DSM_OP_DETACH, h, 0, &s);
		ck_assert_int_eq(count_segments(c->impl, dir), 0);
		ck_assert_int_eq(tu_count_fds(), fds);
	}

	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* A full /dev/shm (injected ENOSPC at posix_fallocate): the exact message, nothing left. */
START_TEST(test_full_devshm)
{
	int impl = _i == 0 ? DSM_IMPL_POSIX : DSM_IMPL_MMAP;
	const char *dir;
	dsm_handle h;
	seg s = {0};
	char name[PATH_MAX + 64];
	char expect[PATH_MAX + 200];
	opres r;

	TU_TEST_BEGIN();
	if (!InjectionPointsEnabled())
	{
		TU_TEST_END(); /* nothing to test in a build without points */
		return;
	}
	dir = tu_cluster_dir();
	dsm_impl_configure(impl, dir);
	h = test_handle(7);
	dsm_impl_segment_name(h, name, sizeof name);

	InjectionPointAttach("dsm-impl-create-fallocate", INJECTION_FAIL_ERRNO, ENOSPC, 0, -1);
	r = run_op(DSM_OP_CREATE, h, 1 << 20, &s, ERROR);
	ck_assert(r.raised);
	snprintf(expect, sizeof expect,
			 "could not resize shared memory segment \"%s\" to 1048576 bytes: No space left on device",
			 name);
	ck_assert_str_eq(last_msg, expect);
	ck_assert_int_eq(last_code, ERRCODE_DISK_FULL);
	ck_assert_ptr_null(s.addr);
	ck_assert_int_eq(count_segments(impl, dir), 0);

	/* Growing a segment on a full /dev/shm fails the same way and keeps it as it was. */
	InjectionPointDetachAll();
	must(DSM_OP_CREATE, h, 4096, &s);
	InjectionPointAttach("dsm-impl-resize-fallocate", INJECTION_FAIL_ERRNO, ENOSPC, 0, -1);
	r = run_op(DSM_OP_RESIZE, h, 1 << 20, &s, LOG);
	ck_assert(!r.ok && !r.raised);
	snprintf(expect, sizeof expect,
			 "could not resize shared memory segment \"%s\" to 1048576 bytes: No space left on device",
			 name);
	ck_assert_str_eq(last_msg, expect);
	ck_assert_uint_eq(s.size, 4096);
	ck_assert_int_eq(segment_size(h), 4096);
	InjectionPointDetachAll();
	must(DSM_OP_DESTROY, h, 0, &s);
	ck_assert_int_eq(count_segments(impl, dir), 0);

	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- KILL and WAIT actions ------------------------------------------------ */

typedef struct kill_args
{
	dsm_handle h;
	const char *point;
} kill_args;

static void
kill_child(void *arg)
{
	kill_args *a = arg;
	seg s = {0};

	InjectionPointAttach(a->point, INJECTION_KILL, 0, 0, 1);
	dsm_impl_op(DSM_OP_CREATE, a->h, 4096, &s.priv, &s.addr, &s.size, LOG);
	_exit(3);
}

START_TEST(test_kill_and_wait)
{
	int impl = impls[_i];
	const char *dir;
	kill_args k;
	wait_args w;
	tu_pipe p;
	seg s = {0};
	pid_t pid;
	int status;

	TU_TEST_BEGIN();
	if (!InjectionPointsEnabled())
	{
		TU_TEST_END(); /* nothing to test in a build without points */
		return;
	}
	dir = tu_cluster_dir();
	dsm_impl_configure(impl, dir);

	/* KILL after the segment exists: the child dies, the segment stays. */
	k.h = test_handle(8);
	k.point = impl == DSM_IMPL_SYSV ? "sysv-shmat" : "dsm-impl-create-mmap";
	pid = tu_fork(kill_child, &k);
	status = tu_wait_child(pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status 0x%x", status);
	ck_assert_int_eq(count_segments(impl, dir), 1);
	must(DSM_OP_DESTROY, k.h, 0, &s);
	ck_assert_int_eq(count_segments(impl, dir), 0);

	/* KILL before anything exists: nothing is left. */
	k.point = impl == DSM_IMPL_SYSV ? "sysv-shmget" : "dsm-impl-create-open";
	pid = tu_fork(kill_child, &k);
	status = tu_wait_child(pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	ck_assert_int_eq(count_segments(impl, dir), 0);

	/* WAIT: the child writes its byte and blocks; kill it, then clean up. */
	tu_pipe_open(&p);
	w.h = test_handle(9);
	w.fd = p.wr;
	w.point = impl == DSM_IMPL_SYSV ? "sysv-shmat" : "dsm-impl-create-mmap";
	pid = tu_fork(wait_child, &w);
	ck_assert(read_byte(p.rd));
	ck_assert_int_eq(waitpid(pid, &status, WNOHANG), 0); /* still blocked */
	ck_assert_int_eq(count_segments(impl, dir), 1);
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	status = tu_wait_child(pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	tu_pipe_close(&p);
	must(DSM_OP_DESTROY, w.h, 0, &s);
	ck_assert_int_eq(count_segments(impl, dir), 0);

	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/* ---- the control API and the environment -------------------------------- */

START_TEST(test_injection_api)
{
	const char *dir;
	const char *const *names;
	dsm_handle h;
	seg s = {0};
	opres r;
	static volatile int raised;
	static const char *const required[] = {
		"dsm-impl-create-open", "dsm-impl-create-resize", "dsm-impl-create-fallocate",
		"dsm-impl-create-mmap", "dsm-impl-attach-open", "dsm-impl-attach-mmap",
		"dsm-impl-resize", "dsm-impl-destroy", "sysv-shmget", "sysv-shmat",
		"dsm-create-before-slot", "dsm-create-after-slot", "dsm-attach-after-refcount",
		"dsm-detach-before-refcount", "dsm-detach-before-destroy", "dsm-control-locked",
		"supervisor-startup-after-cleanup", "supervisor-startup-after-control",
		"supervisor-startup-before-statefile", "supervisor-shutdown-mid",
		"backend-join-after-state"};

	TU_TEST_BEGIN();
	emit_log_hook = record_report;
	names = InjectionPointNames();
	ck_assert_ptr_nonnull(names);

	/* An unknown name: ERROR (invalid parameter, or not supported without points). */
	raised = 0;
	reset_reports();
	PG_TRY();
	{
		InjectionPointAttach("no-such-point", INJECTION_KILL, 0, 0, 1);
	}
	PG_CATCH();
	{
		raised = 1;
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert(raised);
	ck_assert_int_eq(last_code, InjectionPointsEnabled() ? ERRCODE_INVALID_PARAMETER_VALUE
														 : ERRCODE_FEATURE_NOT_SUPPORTED);
	InjectionPointDetach("no-such-point"); /* quietly ignored */

	if (!InjectionPointsEnabled())
	{
		ck_assert_ptr_null(names[0]);
		ck_assert_int_eq(InjectionPointPasses("dsm-impl-destroy"), 0);
		emit_log_hook = NULL;
		TU_TEST_END();
		return;
	}

	/* Every name the other modules rely on is in the list, each once. */
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
	{
		int found = 0;

		for (const char *const *n = names; *n != NULL; n++)
			if (strcmp(*n, required[i]) == 0)
				found++;
		ck_assert_msg(found == 1, "point %s listed %d times", required[i], found);
	}

	/* A bad action or errno is refused. */
	raised = 0;
	PG_TRY();
	{
		InjectionPointAttach("dsm-impl-destroy", INJECTION_FAIL_ERRNO, 0, 0, 1);
	}
	PG_CATCH();
	{
		raised = 1;
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert(raised);

	/* skip and count: pass 1 goes by, pass 2 fails, pass 3 goes by. */
	dir = tu_cluster_dir();
	dsm_impl_configure(DSM_IMPL_POSIX, dir);
	h = test_handle(10);
	must(DSM_OP_CREATE, h, 4096, &s);
	must(DSM_OP_DETACH, h, 0, &s);
	InjectionPointAttach("dsm-impl-attach-open", INJECTION_FAIL_ERRNO, EACCES, 1, 1);
	ck_assert_int_eq(InjectionPointPasses("dsm-impl-attach-open"), 0);
	must(DSM_OP_ATTACH, h, 0, &s);
	must(DSM_OP_DETACH, h, 0, &s);
	r = run_op(DSM_OP_ATTACH, h, 0, &s, LOG);
	ck_assert(!r.ok && !r.raised);
	ck_assert_int_eq(last_code, ERRCODE_INSUFFICIENT_PRIVILEGE);
	must(DSM_OP_ATTACH, h, 0, &s);
	must(DSM_OP_DETACH, h, 0, &s);
	ck_assert_int_eq(InjectionPointPasses("dsm-impl-attach-open"), 3);

	/* count -1: every pass fails, until detached. */
	InjectionPointAttach("dsm-impl-attach-open", INJECTION_FAIL_ERRNO, EMFILE, 0, -1);
	for (int i = 0; i < 3; i++)
	{
		r = run_op(DSM_OP_ATTACH, h, 0, &s, LOG);
		ck_assert(!r.ok);
		ck_assert_int_eq(last_code, ERRCODE_INSUFFICIENT_RESOURCES);
	}
	InjectionPointDetach("dsm-impl-attach-open");
	must(DSM_OP_ATTACH, h, 0, &s);
	ck_assert_int_eq(InjectionPointPasses("dsm-impl-attach-open"), 4);

	/* Re-arming replaces the settings and resets the count. */
	InjectionPointAttach("dsm-impl-destroy", INJECTION_FAIL_ERRNO, ENOSPC, 0, 1);
	InjectionPointAttach("dsm-impl-destroy", INJECTION_FAIL_ERRNO, EACCES, 5, 1);
	must(DSM_OP_DESTROY, h, 0, &s);
	ck_assert_int_eq(InjectionPointPasses("dsm-impl-destroy"), 1);
	InjectionPointDetachAll();

	raised = 0;
	PG_TRY();
	{
		(void) InjectionPointPasses("no-such-point");
	}
	PG_CATCH();
	{
		raised = 1;
		FlushErrorState();
	}
	PG_END_TRY();
	ck_assert(raised);

	ck_assert_int_eq(count_segments(DSM_IMPL_POSIX, dir), 0);
	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

/*
 * The exec'd side of test_environment (argv: --env-child DIR HANDLE): the
 * points come from DSMKIT_INJECTION_POINTS only.  Exit codes name the step
 * that went wrong.
 */
static int
env_child(const char *dir, dsm_handle h)
{
	seg s = {0};

	dsm_impl_configure(DSM_IMPL_POSIX, dir);
	/* dsm-impl-attach-open=errno:13,skip=1,count=1 */
	if (!dsm_impl_op(DSM_OP_ATTACH, h, 0, &s.priv, &s.addr, &s.size, LOG))
		return 10;
	if (!dsm_impl_op(DSM_OP_DETACH, h, 0, &s.priv, &s.addr, &s.size, LOG))
		return 11;
	errno = 0;
	if (dsm_impl_op(DSM_OP_ATTACH, h, 0, &s.priv, &s.addr, &s.size, LOG))
		return 12;
	if (!dsm_impl_op(DSM_OP_ATTACH, h, 0, &s.priv, &s.addr, &s.size, LOG))
		return 13;
	if (InjectionPointPasses("dsm-impl-attach-open") != 3)
		return 14;
	/* dsm-impl-detach=errno:12,skip=1,count=all (the first detach went by) */
	if (dsm_impl_op(DSM_OP_DETACH, h, 0, &s.priv, &s.addr, &s.size, LOG))
		return 15;
	if (dsm_impl_op(DSM_OP_DETACH, h, 0, &s.priv, &s.addr, &s.size, LOG))
		return 16;
	InjectionPointDetach("dsm-impl-detach");
	if (!dsm_impl_op(DSM_OP_DETACH, h, 0, &s.priv, &s.addr, &s.size, LOG))
		return 17;
	/* dsm-impl-resize=kill: the last step. */
	dsm_impl_op(DSM_OP_RESIZE, h, 8192, &s.priv, &s.addr, &s.size, LOG);
	return 18;
}

/* Run this program as an env child with the variable set; returns status, fills out. */
static int
run_env_child(const char *dir, dsm_handle h, const char *env, char *out, size_t outlen)
{
	int errp[2];
	pid_t pid;
	size_t used = 0;
	ssize_t n;

	ck_assert_int_eq(pipe2(errp, O_CLOEXEC), 0);
	fflush(stderr);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
	{
		char hbuf[16];

		dup2(errp[1], 2);
		snprintf(hbuf, sizeof hbuf, "%u", (unsigned) h);
		setenv("DSMKIT_INJECTION_POINTS", env, 1);
		execl(self_path, self_path, "--env-child", dir, hbuf, (char *) NULL);
		_exit(127);
	}
	close(errp[1]);
	while (used + 1 < outlen && (n = read(errp[0], out + used, outlen - 1 - used)) > 0)
		used += (size_t) n;
	out[used] = '\0';
	close(errp[0]);
	return tu_wait_child(pid);
}

START_TEST(test_environment)
{
	const char *dir;
	dsm_handle h;
	seg s = {0};
	char out[8192];
	int status;

	TU_TEST_BEGIN();
	if (!InjectionPointsEnabled())
	{
		TU_TEST_END(); /* nothing to test in a build without points */
		return;
	}
	dir = tu_cluster_dir();
	dsm_impl_configure(DSM_IMPL_POSIX, dir);
	h = test_handle(11);
	must(DSM_OP_CREATE, h, 4096, &s);
	must(DSM_OP_DETACH, h, 0, &s);

	status = run_env_child(dir, h,
						   "dsm-impl-attach-open=errno:13,skip=1,count=1;bogus=kill;"
						   "dsm-impl-detach=errno:12,skip=1,count=all;dsm-impl-create-mmap=errno;"
						   "dsm-impl-resize=kill",
						   out, sizeof out);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
				  "env child status 0x%x (exit %d), stderr:\n%s", status,
				  WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
	ck_assert_msg(strstr(out, "ignoring invalid entry \"bogus=kill\"") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "ignoring invalid entry \"dsm-impl-create-mmap=errno\"") != NULL,
				  "%s", out);
	ck_assert_msg(strstr(out, "Permission denied") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "Cannot allocate memory") != NULL, "%s", out);
	/* The killed RESIZE ran before anything changed. */
	ck_assert_int_eq(segment_size(h), 4096);

	/* wait:FD from the environment (the descriptor is inherited through exec). */
	{
		int p[2];
		pid_t pid;
		char spec[64];

		ck_assert_int_eq(pipe(p), 0);
		snprintf(spec, sizeof spec, "dsm-impl-attach-mmap=wait:%d", p[1]);
		fflush(stderr);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
		{
			char hbuf[16];

			close(p[0]);
			snprintf(hbuf, sizeof hbuf, "%u", (unsigned) h);
			setenv("DSMKIT_INJECTION_POINTS", spec, 1);
			execl(self_path, self_path, "--env-child", dir, hbuf, (char *) NULL);
			_exit(127);
		}
		close(p[1]);
		ck_assert(read_byte(p[0]));
		ck_assert_int_eq(kill(pid, SIGKILL), 0);
		status = tu_wait_child(pid);
		ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		close(p[0]);
	}

	must(DSM_OP_DESTROY, h, 0, &s);
	ck_assert_int_eq(count_segments(DSM_IMPL_POSIX, dir), 0);
	tu_remove_cluster_dir(dir);
	emit_log_hook = NULL;
	TU_TEST_END();
}
END_TEST

static Suite *
dsm_impl_suite(void)
{
	Suite *s = suite_create("dsm_impl");
	TCase *tc;
	int nimpl = (int) (sizeof impls / sizeof impls[0]);

	tc = tu_tcase("configure", 20);
	tcase_add_test(tc, test_configure_and_names);
	suite_add_tcase(s, tc);

	tc = tu_tcase("lifecycle", 20);
	tcase_add_loop_test(tc, test_lifecycle, 0, nimpl);
	tcase_add_loop_test(tc, test_create_existing_and_missing, 0, nimpl);
	tcase_add_loop_test(tc, test_resize, 0, nimpl);
	tcase_add_loop_test(tc, test_mode_and_cloexec, 0, nimpl);
	tcase_add_test(tc, test_nofollow);
	tcase_add_test(tc, test_sysv_key_zero);
	suite_add_tcase(s, tc);

	tc = tu_tcase("injection", 30);
	tcase_add_loop_test(tc, test_injected_errnos, 0,
						(int) (sizeof inj_cases / sizeof inj_cases[0]));
	tcase_add_loop_test(tc, test_full_devshm, 0, 2);
	tcase_add_loop_test(tc, test_kill_and_wait, 0, nimpl);
	tcase_add_test(tc, test_injection_api);
	tcase_add_test(tc, test_environment);
	suite_add_tcase(s, tc);
	return s;
}

int
main(int argc, char **argv)
{
	ssize_t n;

	if (argc == 4 && strcmp(argv[1], "--env-child") == 0)
		return env_child(argv[2], (dsm_handle) strtoul(argv[3], NULL, 10));

	n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
	if (n < 0)
	{
		perror("readlink /proc/self/exe");
		return 99;
	}
	self_path[n] = '\0';
	return tu_run_suite(dsm_impl_suite());
}
