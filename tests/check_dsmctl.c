/*
 * check_dsmctl.c: tests of the inspection API (inspect.h) and of the
 * dsmctl program built on it.
 *
 * A test forks a supervisor that starts a cluster and spawns two
 * backends: A creates three segments (s1 4096 bytes, mapped by A and B;
 * s2 8192 bytes, pinned and mapped by nobody; s3 16384 bytes, mapped by A
 * only) and B attaches s1.  The test then execs the built dsmctl against
 * the directory and checks its output and exit code, calls
 * dsm_cluster_inspect() itself, and finally shuts the cluster down or
 * kills it.  Processes synchronise through pipes; the death of the
 * backends is seen as EOF on a pipe whose write end only they hold.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dsmkit.h>
#include <dsmkit/inspect.h>

#include "testutil.h"

#define DONE 0x600du
#define ACK 0xac4u

static const int impls[] = {DSM_IMPL_POSIX, DSM_IMPL_SYSV, DSM_IMPL_MMAP};

static struct
{
	const char *dir;
	int impl;
	tu_pipe to_a;    /* -> backend A */
	tu_pipe to_b;    /* -> backend B */
	tu_pipe to_sup;  /* -> supervisor */
	tu_pipe to_test; /* -> the test process */
	int death[2];    /* the write end is held by the backends only: EOF when both died */
} ctx;

/* What the test knows of its running cluster. */
typedef struct cluster
{
	pid_t sup;
	pid_t a;
	pid_t b;
	dsm_handle s1; /* 4096 bytes, mapped by A and B */
	dsm_handle s2; /* 8192 bytes, pinned, mapped by nobody */
	dsm_handle s3; /* 16384 bytes, mapped by A */
} cluster;

/* The output of one dsmctl run. */
typedef struct run
{
	int code;  /* exit code, 128 + signal if killed */
	char *out; /* stdout (malloc'd) */
	char *err; /* stderr (malloc'd) */
} run;

/* ---- running dsmctl ----------------------------------------------------------- */

/* Read what is left on fd into *buf (growing it), and return false at EOF. */
static bool
drain(int fd, char **buf, size_t *len)
{
	char chunk[4096];
	ssize_t n;

	do
		n = read(fd, chunk, sizeof chunk);
	while (n < 0 && errno == EINTR);
	ck_assert_int_ge(n, 0);
	if (n == 0)
		return false;
	*buf = realloc(*buf, *len + (size_t) n + 1);
	ck_assert_ptr_nonnull(*buf);
	memcpy(*buf + *len, chunk, (size_t) n);
	*len += (size_t) n;
	(*buf)[*len] = '\0';
	return true;
}

/*
 * Run the built dsmctl with the given arguments (NULL-terminated), with
 * the uid of nobody if as_nobody; collect its output and exit code.
 */
static run
run_dsmctl_as(bool as_nobody, const char *first, ...)
{
	const char *argv[16];
	char path[4096];
	int out[2];
	int err[2];
	int argc = 0;
	va_list ap;
	pid_t pid;
	size_t outlen = 0;
	size_t errlen = 0;
	bool out_open = true;
	bool err_open = true;
	run r = {0, calloc(1, 1), calloc(1, 1)};
	int status;

	snprintf(path, sizeof path, "%s", tu_builddir_path("dsmctl"));
	argv[argc++] = path;
	va_start(ap, first);
	for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
	{
		ck_assert_int_lt(argc, 15);
		argv[argc++] = a;
	}
	va_end(ap);
	argv[argc] = NULL;

	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
	{
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		if (as_nobody && (setgid(65534) != 0 || setuid(65534) != 0))
			_exit(126);
		execv(path, (char *const *) argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	while (out_open || err_open)
	{
		struct pollfd pfd[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};

		ck_assert_int_gt(poll(pfd, 2, 20000), 0);
		if (out_open && (pfd[0].revents & (POLLIN | POLLHUP)))
			out_open = drain(out[0], &r.out, &outlen);
		if (err_open && (pfd[1].revents & (POLLIN | POLLHUP)))
			err_open = drain(err[0], &r.err, &errlen);
		if (!out_open)
			pfd[0].fd = -1;
	}
	close(out[0]);
	close(err[0]);
	status = tu_wait_child(pid);
	r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return r;
}

#define run_dsmctl(...) run_dsmctl_as(false, __VA_ARGS__, (const char *) NULL)

static void
run_free(run *r)
{
	free(r->out);
	free(r->err);
}

/* Assert the exit code and that stdout (where != NULL) and stderr contain what is expected. */
static void
expect_run(const run *r, int exitcode, const char *in_out, const char *in_err, int line)
{
	ck_assert_msg(r->code == exitcode, "line %d: exit %d, expected %d; stdout:\n%s\nstderr:\n%s", line,
				  r->code, exitcode, r->out, r->err);
	if (in_out != NULL)
		ck_assert_msg(strstr(r->out, in_out) != NULL, "line %d: no \"%s\" in stdout:\n%s\nstderr:\n%s",
					  line, in_out, r->out, r->err);
	if (in_err != NULL)
		ck_assert_msg(strstr(r->err, in_err) != NULL, "line %d: no \"%s\" in stderr:\n%s", line,
					  in_err, r->err);
}

#define EXPECT_RUN(r, exitcode, in_out, in_err) expect_run(&(r), (exitcode), (in_out), (in_err), __LINE__)

/*
 * Assert that s is one line holding one JSON value whose braces and
 * brackets balance outside strings, and whose strings hold no raw control
 * characters and end.
 */
static void
assert_json_shape(const char *s)
{
	int depth = 0;
	bool in_str = false;
	size_t len = strlen(s);

	ck_assert_msg(len >= 3 && s[0] == '{' && s[len - 1] == '\n' && s[len - 2] == '}', "not one object: %s",
				  s);
	for (size_t i = 0; i + 1 < len; i++)
	{
		char c = s[i];

		ck_assert_msg((unsigned char) c >= 0x20, "raw control character at %zu: %s", i, s);
		if (in_str)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"')
			in_str = true;
		else if (c == '{' || c == '[')
			depth++;
		else if (c == '}' || c == ']')
		{
			depth--;
			ck_assert_msg(depth >= 0 || i + 2 == len, "unbalanced at %zu: %s", i, s);
		}
		if (depth == 0)
			ck_assert_msg(i + 2 == len, "text after the object at %zu: %s", i, s);
	}
	ck_assert_msg(!in_str && depth == 0, "unbalanced: %s", s);
}

/* The JSON object of segment h in "ls --json" output (malloc'd), asserting it is there. */
static char *
json_segment(const char *out, dsm_handle h)
{
	char key[64];
	const char *start;
	const char *end;

	snprintf(key, sizeof key, "{\"handle\":%u,", h);
	start = strstr(out, key);
	ck_assert_msg(start != NULL, "no segment %u in %s", h, out);
	end = strchr(start, '}');
	ck_assert_ptr_nonnull(end);
	return strndup(start, (size_t) (end - start + 1));
}

/* The text row of segment h in "ls" output (malloc'd), asserting it is there. */
static char *
text_row(const char *out, dsm_handle h)
{
	char key[32];
	const char *p = out;
	size_t klen;

	klen = (size_t) snprintf(key, sizeof key, "%u ", h);
	while (p != NULL && *p != '\0')
	{
		const char *nl = strchr(p, '\n');

		if (strncmp(p, key, klen) == 0)
			return strndup(p, nl != NULL ? (size_t) (nl - p) : strlen(p));
		p = nl != NULL ? nl + 1 : NULL;
	}
	ck_abort_msg("no row for segment %u in:\n%s", h, out);
	return NULL;
}

/* ---- the cluster ---------------------------------------------------------------- */

static void
backend_a(Datum arg)
{
	dsm_segment *s1 = dsm_create(4096, 0);
	dsm_segment *s2 = dsm_create(8192, 0);
	dsm_segment *s3 = dsm_create(16384, 0);

	(void) arg;
	dsm_pin_segment(s2);
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s2));
	dsm_detach(s2);
	tu_pipe_send(&ctx.to_b, dsm_segment_handle(s1));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), ACK); /* B maps s1 now */
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s1));
	tu_pipe_send(&ctx.to_sup, dsm_segment_handle(s3));
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_a), DONE);
	dsm_detach(s3);
	dsm_detach(s1);
}

static void
backend_b(Datum arg)
{
	dsm_segment *s = dsm_attach(tu_pipe_recv(&ctx.to_b));

	(void) arg;
	ck_assert_ptr_nonnull(s);
	tu_pipe_send(&ctx.to_a, ACK);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_b), DONE);
}

static void
supervisor_fn(void *arg)
{
	pid_t a;
	pid_t b;
	uint32_t s1, s2, s3;

	(void) arg;
	tu_start_supervisor(ctx.dir, ctx.impl, 8, 0);
	a = supervisor_spawn_backend(backend_a, 0);
	b = supervisor_spawn_backend(backend_b, 0);
	close(ctx.death[1]);
	s2 = tu_pipe_recv(&ctx.to_sup);
	s1 = tu_pipe_recv(&ctx.to_sup);
	s3 = tu_pipe_recv(&ctx.to_sup);
	tu_pipe_send(&ctx.to_test, (uint32_t) getpid());
	tu_pipe_send(&ctx.to_test, (uint32_t) a);
	tu_pipe_send(&ctx.to_test, (uint32_t) b);
	tu_pipe_send(&ctx.to_test, s1);
	tu_pipe_send(&ctx.to_test, s2);
	tu_pipe_send(&ctx.to_test, s3);
	ck_assert_uint_eq(tu_pipe_recv(&ctx.to_sup), DONE);
	tu_pipe_send(&ctx.to_b, DONE);
	tu_pipe_send(&ctx.to_a, DONE);
	tu_finish_supervisor();
}

/* Start the cluster in a fresh directory and learn its pids and handles. */
static cluster
start_cluster(int impl)
{
	cluster c;

	ctx.dir = tu_cluster_dir();
	ctx.impl = impl;
	tu_pipe_open(&ctx.to_a);
	tu_pipe_open(&ctx.to_b);
	tu_pipe_open(&ctx.to_sup);
	tu_pipe_open(&ctx.to_test);
	ck_assert_int_eq(pipe2(ctx.death, O_CLOEXEC), 0);
	c.sup = tu_fork(supervisor_fn, NULL);
	close(ctx.death[1]);
	ck_assert_int_eq((pid_t) tu_pipe_recv(&ctx.to_test), c.sup);
	c.a = (pid_t) tu_pipe_recv(&ctx.to_test);
	c.b = (pid_t) tu_pipe_recv(&ctx.to_test);
	c.s1 = tu_pipe_recv(&ctx.to_test);
	c.s2 = tu_pipe_recv(&ctx.to_test);
	c.s3 = tu_pipe_recv(&ctx.to_test);
	return c;
}

/* Wait until both backends are dead (zombies count: they closed their pipe ends). */
static void
wait_backends_dead(void)
{
	char c;
	ssize_t n;
	struct pollfd pfd = {ctx.death[0], POLLIN, 0};

	ck_assert_int_gt(poll(&pfd, 1, 20000), 0);
	do
		n = read(ctx.death[0], &c, 1);
	while (n < 0 && errno == EINTR);
	ck_assert_int_eq(n, 0);
}

/* Close the pipes and assert that nothing of the cluster is left; remove its directory. */
static void
end_cluster(void)
{
	tu_pipe_close(&ctx.to_a);
	tu_pipe_close(&ctx.to_b);
	tu_pipe_close(&ctx.to_sup);
	tu_pipe_close(&ctx.to_test);
	close(ctx.death[0]);
	tu_end_cluster_dir(ctx.dir);
}

/* Shut the cluster down cleanly. */
static void
stop_cluster(const cluster *c)
{
	tu_pipe_send(&ctx.to_sup, DONE);
	ck_assert_int_eq(tu_wait_exit_code(c->sup), 0);
	wait_backends_dead();
	end_cluster();
}

/* Kill both backends, wait for their death, then kill the supervisor. */
static void
kill_cluster(const cluster *c, bool backends_too)
{
	int status;

	if (backends_too)
	{
		kill(c->a, SIGKILL);
		kill(c->b, SIGKILL);
		wait_backends_dead();
	}
	kill(c->sup, SIGKILL);
	status = tu_wait_child(c->sup);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void
write_file(const char *dir, const char *name, const char *content)
{
	tu_write_file(dir, name, content, strlen(content));
}

static void
remove_file(const char *dir, const char *name)
{
	char path[4200];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	ck_assert_int_eq(unlink(path), 0);
}

/* ---- status and ls on a live cluster ------------------------------------------ */

static void
check_status(const cluster *c)
{
	char buf[256];
	run r = run_dsmctl("status", ctx.dir);

	EXPECT_RUN(r, 0, "running", NULL);
	snprintf(buf, sizeof buf, "supervisor:       pid %d, running", (int) c->sup);
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	snprintf(buf, sizeof buf, "(%s)", dsm_impl_name(ctx.impl));
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "segments:         3 of ") != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, ", 28672 bytes") != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "backends:         2 of 8 slots used") != NULL, "%s", r.out);
	snprintf(buf, sizeof buf, "%-8d running   yes    no      2", (int) c->a);
	ck_assert_msg(strstr(r.out, buf) != NULL, "no \"%s\" in %s", buf, r.out);
	snprintf(buf, sizeof buf, "%-8d running   yes    no      1", (int) c->b);
	ck_assert_msg(strstr(r.out, buf) != NULL, "no \"%s\" in %s", buf, r.out);
	run_free(&r);

	r = run_dsmctl("--json", "status", ctx.dir);
	EXPECT_RUN(r, 0, "\"stale\":false", NULL);
	assert_json_shape(r.out);
	snprintf(buf, sizeof buf, "\"supervisor\":{\"pid\":%d,\"alive\":true}", (int) c->sup);
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	snprintf(buf, sizeof buf, "\"implementation\":\"%s\"", dsm_impl_name(ctx.impl));
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	snprintf(buf, sizeof buf, "\"cluster_id\":\"%08x\"", dsm_impl_cluster_id_of(ctx.dir));
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "\"slots\":{\"used\":3,") != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "\"bytes\":28672") != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "\"backends\":{\"used\":2,\"total\":8,") != NULL, "%s", r.out);
	snprintf(buf, sizeof buf, "\"pid\":%d,\"state\":\"running\",\"alive\":true,\"joined\":false,\"segments\":2",
			 (int) c->a);
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	run_free(&r);
}

static void
check_ls(const cluster *c)
{
	char buf[256];
	char *row;
	char *obj;
	unsigned handle, slot, refcnt;
	unsigned long long size;
	char pinned[8], age[16], pids[64];
	run r = run_dsmctl("ls", ctx.dir);

	EXPECT_RUN(r, 0, "(3 segments, 28672 bytes)", NULL);
	row = text_row(r.out, c->s1);
	ck_assert_int_eq(sscanf(row, "%u %u %llu %u %7s %15s %63s", &handle, &slot, &size, &refcnt, pinned,
							age, pids), 7);
	ck_assert_uint_eq(size, 4096);
	ck_assert_uint_eq(refcnt, 3);
	ck_assert_str_eq(pinned, "no");
	snprintf(buf, sizeof buf, "%d,%d", (int) c->a, (int) c->b);
	ck_assert_msg(strcmp(pids, buf) == 0, "pids %s, expected %s", pids, buf);
	free(row);
	row = text_row(r.out, c->s2);
	ck_assert_int_eq(sscanf(row, "%u %u %llu %u %7s %15s %63s", &handle, &slot, &size, &refcnt, pinned,
							age, pids), 7);
	ck_assert_uint_eq(size, 8192);
	ck_assert_uint_eq(refcnt, 2);
	ck_assert_str_eq(pinned, "yes");
	ck_assert_str_eq(pids, "-");
	free(row);
	row = text_row(r.out, c->s3);
	ck_assert_int_eq(sscanf(row, "%u %u %llu %u %7s %15s %63s", &handle, &slot, &size, &refcnt, pinned,
							age, pids), 7);
	ck_assert_uint_eq(size, 16384);
	ck_assert_uint_eq(refcnt, 2);
	ck_assert_str_eq(pinned, "no");
	snprintf(buf, sizeof buf, "%d", (int) c->a);
	ck_assert_str_eq(pids, buf);
	free(row);
	run_free(&r);

	r = run_dsmctl("ls", "--json", ctx.dir);
	EXPECT_RUN(r, 0, "\"segments\":[{", NULL);
	assert_json_shape(r.out);
	obj = json_segment(r.out, c->s1);
	snprintf(buf, sizeof buf, "\"size\":4096,\"refcnt\":3,\"pinned\":false,\"moribund\":false,\"pids\":[%d,%d]",
			 (int) c->a, (int) c->b);
	ck_assert_msg(strstr(obj, buf) != NULL, "no %s in %s", buf, obj);
	free(obj);
	obj = json_segment(r.out, c->s2);
	ck_assert_msg(strstr(obj, "\"size\":8192,\"refcnt\":2,\"pinned\":true,\"moribund\":false,\"pids\":[]") != NULL,
				  "%s", obj);
	free(obj);
	obj = json_segment(r.out, c->s3);
	snprintf(buf, sizeof buf, "\"refcnt\":2,\"pinned\":false,\"moribund\":false,\"pids\":[%d]", (int) c->a);
	ck_assert_msg(strstr(obj, buf) != NULL, "no %s in %s", buf, obj);
	free(obj);
	run_free(&r);
}

/* The library call itself, from this process (which belongs to no cluster). */
static void
check_inspect_api(const cluster *c)
{
	DsmClusterInfo *ci = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
	int seen = 0;

	ck_assert_int_eq(dsm_impl_current(), 0); /* the configuration was put back */
	ck_assert(ci->supervisor_alive && !ci->stale && ci->control_present && ci->consistent);
	ck_assert_int_eq(ci->supervisor_pid, c->sup);
	ck_assert_int_eq(ci->impl, ctx.impl);
	ck_assert_uint_eq(ci->slots_used, 3);
	ck_assert_int_eq(ci->nsegments, 3);
	ck_assert_uint_eq(ci->bytes, 28672);
	ck_assert_int_eq(ci->nbackends, 2);
	ck_assert_uint_eq(ci->max_backends, 8);
	ck_assert_ptr_null(ci->control_problem);
	for (int i = 0; i < ci->nsegments; i++)
	{
		DsmSegmentInfo *s = &ci->segments[i];

		ck_assert(s->age >= 0 && s->ctime > 0 && s->os_name != NULL);
		if (s->handle == c->s1)
		{
			ck_assert_int_eq(s->npids, 2);
			ck_assert(!s->pinned);
			seen++;
		}
		else if (s->handle == c->s2)
		{
			ck_assert_int_eq(s->npids, 0);
			ck_assert(s->pinned);
			seen++;
		}
		else if (s->handle == c->s3)
		{
			ck_assert_int_eq(s->npids, 1);
			ck_assert_int_eq(s->pids[0], c->a);
			seen++;
		}
	}
	ck_assert_int_eq(seen, 3);
	dsm_cluster_info_free(ci);
}

START_TEST(test_live_cluster)
{
	cluster c;
	run r;

	TU_TEST_BEGIN();
	c = start_cluster(impls[_i]);
	check_status(&c);
	check_ls(&c);
	check_inspect_api(&c);

	r = run_dsmctl("check", ctx.dir);
	EXPECT_RUN(r, 0, "ok: the cluster in", NULL);
	run_free(&r);
	r = run_dsmctl("check", "--json", ctx.dir);
	EXPECT_RUN(r, 0, "\"ok\":true,\"stale\":false,\"problems\":[]", NULL);
	assert_json_shape(r.out);
	run_free(&r);

	/* cleanup is refused while the supervisor runs, and changes nothing. */
	r = run_dsmctl("cleanup", ctx.dir);
	EXPECT_RUN(r, 1, NULL, "is running in");
	ck_assert_msg(strstr(r.err, "supervisor") != NULL, "%s", r.err);
	run_free(&r);
	r = run_dsmctl("cleanup", "--json", "--force", ctx.dir);
	EXPECT_RUN(r, 1, "\"sqlstate\":\"55006\"", "is running in");
	assert_json_shape(r.out);
	run_free(&r);
	r = run_dsmctl("check", ctx.dir);
	EXPECT_RUN(r, 0, "(3 segments, 2 backends)", NULL);
	run_free(&r);

	stop_cluster(&c);
	TU_TEST_END();
}
END_TEST

/* ---- check finds a stray operating-system segment --------------------------------- */

START_TEST(test_check_stray_segment)
{
	cluster c;
	run r;
	char name[64];
	int fd;

	TU_TEST_BEGIN();
	c = start_cluster(DSM_IMPL_POSIX);
	/* A handle no slot uses: slot bits all ones belong to the control segment's pattern only with its generation. */
	snprintf(name, sizeof name, "/dsmkit.%08x.%08x", dsm_impl_cluster_id_of(ctx.dir), 0x7ffffff0u);
	fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	r = run_dsmctl("check", ctx.dir);
	EXPECT_RUN(r, 1, name + 1, NULL);
	ck_assert_msg(strstr(r.out, "has no slot") != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "1 problem found") != NULL, "%s", r.out);
	run_free(&r);
	r = run_dsmctl("--json", "check", ctx.dir);
	EXPECT_RUN(r, 1, "\"ok\":false", NULL);
	ck_assert_msg(strstr(r.out, name + 1) != NULL, "%s", r.out);
	assert_json_shape(r.out);
	run_free(&r);
	ck_assert_int_eq(shm_unlink(name), 0);
	r = run_dsmctl("check", ctx.dir);
	EXPECT_RUN(r, 0, "ok:", NULL);
	run_free(&r);
	stop_cluster(&c);
	TU_TEST_END();
}
END_TEST

/* ---- a killed cluster: stale status, check, cleanup ------------------------------- */

START_TEST(test_cleanup_after_kill)
{
	cluster c;
	run r;
	char buf[128];
	DsmClusterInfo *ci;

	TU_TEST_BEGIN();
	c = start_cluster(impls[_i]);
	kill_cluster(&c, true);

	r = run_dsmctl("status", ctx.dir);
	EXPECT_RUN(r, 1, "not running (stale cluster", NULL);
	snprintf(buf, sizeof buf, "pid %d, not running", (int) c.sup);
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "segments:         3 of ") != NULL, "%s", r.out);
	run_free(&r);
	r = run_dsmctl("status", "--json", ctx.dir);
	EXPECT_RUN(r, 1, "\"stale\":true", NULL);
	snprintf(buf, sizeof buf, "\"supervisor\":{\"pid\":%d,\"alive\":false}", (int) c.sup);
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "\"alive\":true") == NULL, "a dead backend shown alive: %s", r.out);
	assert_json_shape(r.out);
	run_free(&r);

	/* What is left is still listed, and the library says the same. */
	r = run_dsmctl("ls", ctx.dir);
	EXPECT_RUN(r, 0, "the supervisor is not running", NULL);
	free(text_row(r.out, c.s1));
	free(text_row(r.out, c.s2));
	free(text_row(r.out, c.s3));
	run_free(&r);
	ci = dsm_cluster_inspect(CurrentMemoryContext, ctx.dir);
	ck_assert(ci->stale && !ci->supervisor_alive && ci->control_present);
	ck_assert_int_eq(ci->nsegments, 3);
	for (int i = 0; i < ci->nbackends; i++)
		ck_assert(!ci->backends[i].alive);
	dsm_cluster_info_free(ci);

	r = run_dsmctl("check", ctx.dir);
	EXPECT_RUN(r, 1, "the cluster is stale", NULL);
	ck_assert_msg(strstr(r.out, "is left") != NULL, "%s", r.out);
	run_free(&r);

	r = run_dsmctl("cleanup", ctx.dir);
	EXPECT_RUN(r, 0, "removed control segment", NULL);
	ck_assert_msg(strstr(r.out, "removed state file") != NULL, "%s", r.out);
	ck_assert_msg(strstr(r.out, "removed stale lock file") != NULL, "%s", r.out);
	snprintf(buf, sizeof buf, "removed segment %u ", c.s2);
	ck_assert_msg(strstr(r.out, buf) != NULL, "%s", r.out);
	run_free(&r);
	ck_assert_int_eq(tu_count_dir_entries(ctx.dir), 0);

	/* Now it is no cluster at all. */
	r = run_dsmctl("status", ctx.dir);
	EXPECT_RUN(r, 3, NULL, "is not a dsmkit cluster");
	run_free(&r);
	r = run_dsmctl("cleanup", ctx.dir);
	EXPECT_RUN(r, 3, NULL, "is not a dsmkit cluster");
	run_free(&r);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* Backends that outlive their supervisor stop a cleanup unless it is forced. */
START_TEST(test_cleanup_live_backends)
{
	cluster c;
	run r;

	TU_TEST_BEGIN();
	c = start_cluster(DSM_IMPL_POSIX);
	kill_cluster(&c, false);
	r = run_dsmctl("cleanup", ctx.dir);
	EXPECT_RUN(r, 1, NULL, "is still running");
	run_free(&r);
	ck_assert_int_eq(tu_count_dir_entries(ctx.dir), 2); /* nothing was removed */
	r = run_dsmctl("check", ctx.dir);
	EXPECT_RUN(r, 1, "still runs without its supervisor", NULL);
	run_free(&r);
	kill(c.a, SIGKILL);
	kill(c.b, SIGKILL);
	wait_backends_dead();
	r = run_dsmctl("cleanup", "--json", ctx.dir);
	EXPECT_RUN(r, 0, "\"removed\":[\"removed stale lock file", NULL);
	assert_json_shape(r.out);
	run_free(&r);
	end_cluster();
	TU_TEST_END();
}
END_TEST

/* ---- errors ------------------------------------------------------------------------- */

START_TEST(test_errors)
{
	const char *dir;
	char sub[4200];
	run r;

	TU_TEST_BEGIN();
	dir = tu_cluster_dir();

	r = run_dsmctl("status", "/nonexistent/dsmkit-dsmctl-test");
	EXPECT_RUN(r, 3, NULL, "could not access cluster directory \"/nonexistent/dsmkit-dsmctl-test\"");
	run_free(&r);
	r = run_dsmctl("ls", "/dev/null");
	EXPECT_RUN(r, 3, NULL, "is not a directory");
	run_free(&r);

	/* An empty directory is no cluster. */
	r = run_dsmctl("status", dir);
	EXPECT_RUN(r, 3, NULL, "is not a dsmkit cluster");
	ck_assert_msg(strstr(r.err, "no state file") != NULL, "%s", r.err);
	run_free(&r);
	r = run_dsmctl("--json", "check", dir);
	EXPECT_RUN(r, 3, "\"sqlstate\":\"58P01\"", "is not a dsmkit cluster");
	ck_assert_msg(strstr(r.out, "\"exit_code\":3") != NULL, "%s", r.out);
	assert_json_shape(r.out);
	run_free(&r);

	/* A lock file without a state file: a supervisor died while starting. */
	write_file(dir, "dsmkit.pid", "999999999\n1\n");
	write_file(dir, "dsmkit.state.tmp.999999999", "dsmkit-state 1 impl=posix");
	r = run_dsmctl("status", dir);
	EXPECT_RUN(r, 3, NULL, "lock file");
	run_free(&r);
	r = run_dsmctl("cleanup", dir);
	EXPECT_RUN(r, 0, "removed stale lock file", NULL);
	ck_assert_msg(strstr(r.out, "removed leftover temporary file") != NULL, "%s", r.out);
	run_free(&r);
	ck_assert_int_eq(tu_count_dir_entries(dir), 0);

	/* A garbage state file. */
	write_file(dir, "dsmkit.state", "dsmkit-state 1 impl=posix control=\n");
	r = run_dsmctl("status", dir);
	EXPECT_RUN(r, 3, NULL, "is not a valid dsmkit state file");
	ck_assert_msg(strstr(r.err, "dsmkit.state") != NULL, "%s", r.err);
	ck_assert_msg(strstr(r.err, "LOG") == NULL, "the library's LOG line leaked: %s", r.err);
	run_free(&r);
	r = run_dsmctl("--json", "ls", dir);
	EXPECT_RUN(r, 3, "\"sqlstate\":\"XX001\"", NULL);
	assert_json_shape(r.out);
	run_free(&r);
	/* A state file naming a dead supervisor whose control segment is gone. */
	write_file(dir, "dsmkit.state",
			   "dsmkit-state 1 impl=posix control=4095 cluster=00000001 maxitems=4 max_backends=2 pid=999999999 start=1\n");
	r = run_dsmctl("status", dir);
	EXPECT_RUN(r, 1, "does not exist", NULL);
	run_free(&r);
	r = run_dsmctl("check", dir);
	EXPECT_RUN(r, 1, "the cluster is stale", NULL);
	run_free(&r);
	/* cleanup copes with garbage: it removes the file. */
	write_file(dir, "dsmkit.state", "\x01garbage\n");
	r = run_dsmctl("cleanup", dir);
	EXPECT_RUN(r, 0, "removed garbage state file", NULL);
	run_free(&r);
	ck_assert_int_eq(tu_count_dir_entries(dir), 0);

	/* No permission to look into the directory. */
	write_file(dir, "dsmkit.state", "dsmkit-state 1 impl=posix control=\n");
	if (geteuid() == 0)
		r = run_dsmctl_as(true, "status", dir, (const char *) NULL);
	else
	{
		ck_assert_int_eq(chmod(dir, 0), 0);
		r = run_dsmctl("status", dir);
		ck_assert_int_eq(chmod(dir, 0700), 0);
	}
	if (r.code == 126 || r.code == 127)
		fprintf(stderr, "note: dsmctl cannot run as nobody here (exit %d); permission not tested\n", r.code);
	else
	{
		EXPECT_RUN(r, 3, NULL, "Permission denied");
		ck_assert_msg(strstr(r.err, dir) != NULL, "%s", r.err);
	}
	run_free(&r);
	remove_file(dir, "dsmkit.state");

	/* Names are escaped in JSON. */
	snprintf(sub, sizeof sub, "%s/we\"ird\\dir", dir);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	r = run_dsmctl("--json", "status", sub);
	EXPECT_RUN(r, 3, "we\\\"ird\\\\dir", NULL);
	assert_json_shape(r.out);
	run_free(&r);
	ck_assert_int_eq(rmdir(sub), 0);

	/* The library reports the same, with nothing left behind. */
	{
		volatile bool raised = false;
		MemoryContext mc = CurrentMemoryContext;

		PG_TRY();
		{
			(void) dsm_cluster_inspect(mc, dir);
		}
		PG_CATCH();
		{
			ErrorData *ed;

			MemoryContextSwitchTo(mc);
			ed = CopyErrorData();
			FlushErrorState();
			ck_assert_int_eq(ed->sqlerrcode, ERRCODE_UNDEFINED_FILE);
			ck_assert_msg(strstr(ed->message, dir) != NULL, "%s", ed->message);
			FreeErrorData(ed);
			raised = true;
		}
		PG_END_TRY();
		ck_assert(raised);
	}

	tu_remove_cluster_dir(dir);
	TU_TEST_END();
}
END_TEST

START_TEST(test_usage)
{
	run r;

	TU_TEST_BEGIN();
	r = run_dsmctl("--help");
	EXPECT_RUN(r, 0, "Usage:", NULL);
	ck_assert_msg(strstr(r.out, "Exit status:") != NULL, "%s", r.out);
	run_free(&r);
	r = run_dsmctl("--version");
	EXPECT_RUN(r, 0, "dsmctl (dsmkit) ", NULL);
	ck_assert_msg(strstr(r.out, dsmkit_version_string()) != NULL, "%s", r.out);
	run_free(&r);
	r = run_dsmctl_as(false, (const char *) NULL);
	EXPECT_RUN(r, 2, NULL, "no command given");
	run_free(&r);
	r = run_dsmctl("frobnicate", "/tmp");
	EXPECT_RUN(r, 2, NULL, "unknown command \"frobnicate\"");
	run_free(&r);
	r = run_dsmctl("status");
	EXPECT_RUN(r, 2, NULL, "needs a cluster directory");
	run_free(&r);
	r = run_dsmctl("--bogus", "status", "/tmp");
	EXPECT_RUN(r, 2, NULL, "unrecognized option \"--bogus\"");
	run_free(&r);
	r = run_dsmctl("ls", "--force", "/tmp");
	EXPECT_RUN(r, 2, NULL, "--force applies to cleanup only");
	run_free(&r);
	r = run_dsmctl("status", "/tmp", "extra");
	EXPECT_RUN(r, 2, NULL, "too many arguments");
	run_free(&r);
	TU_TEST_END();
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("dsmctl");
	TCase *tc = tu_tcase("dsmctl", 60);

	tcase_add_loop_test(tc, test_live_cluster, 0, 3);
	tcase_add_test(tc, test_check_stray_segment);
	tcase_add_loop_test(tc, test_cleanup_after_kill, 0, 3);
	tcase_add_test(tc, test_cleanup_live_backends);
	tcase_add_test(tc, test_errors);
	tcase_add_test(tc, test_usage);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
