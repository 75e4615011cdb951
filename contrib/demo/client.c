/*
 * client.c: the dsmkit-demo load generator, which checks every answer.
 *
 * Plain POSIX sockets; it uses nothing of dsmkit, because it stands for
 * any client of the service.  The plan:
 *
 *   1. On a control connection, create two tables: "hits" with one slot
 *      per connection plus one shared slot, and "visits" with one slot.
 *   2. Fork one process per connection.  Connection i opens a SESSION,
 *      bumps "visits", then sends its requests: mostly INCR of its own slot
 *      of "hits" (whose value it can predict exactly) and of the shared
 *      slot, GETs, SESSION again (same handle, growing request count), and
 *      every tenth request a bad one of five kinds, which must be answered
 *      with the right SQLSTATE and must not disturb anything.  It reports
 *      its counts to the parent through a pipe.
 *   3. Check that the counters add up: slot i equals connection i's
 *      increments, the shared slot their sum, "visits" the number of
 *      connections.  Drop "hits" and check that it is gone.  "visits" is
 *      left pinned on purpose: the server's shutdown must remove it.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"

/* The kinds of bad requests the client sends on purpose. */
enum
{
	BAD_SLOT,           /* GET hits <nslots>: slot out of range */
	BAD_HANDLE,         /* INCR <no such handle> 0 */
	BAD_SYNTAX,         /* INCR hits (slot missing) */
	BAD_COMMAND,        /* FROBNICATE */
	BAD_WRONG_TYPE,     /* INCR <own session handle> 0: not a table */
	NUM_BAD_KINDS
};

static const char *const bad_kind_names[NUM_BAD_KINDS] = {
	"slot out of range", "unknown handle", "malformed request", "unknown command",
	"segment of the wrong kind",
};

/* The SQLSTATE each kind of bad request must draw. */
static const char *const bad_kind_sqlstates[NUM_BAD_KINDS] = {
	DEMO_SQLSTATE_INVALID_PARAMETER, DEMO_SQLSTATE_UNDEFINED_OBJECT, DEMO_SQLSTATE_SYNTAX_ERROR,
	DEMO_SQLSTATE_SYNTAX_ERROR, DEMO_SQLSTATE_WRONG_OBJECT_TYPE,
};

/* What one connection process reports to the parent (process-local, sent through a pipe). */
typedef struct ConnectionResult
{
	uint64_t requests;             /* requests sent and answered */
	uint64_t ok;                   /* answered OK, as expected */
	uint64_t expected_errors[NUM_BAD_KINDS]; /* answered ERR with the right code */
	uint64_t unexpected;           /* wrong or missing answers */
	uint64_t own_increments;       /* sum of deltas added to its own slot */
	uint64_t shared_increments;    /* sum of deltas added to the shared slot */
	char first_problem[DEMO_MAX_LINE + 96]; /* the first unexpected exchange, for the report */
} ConnectionResult;

/* A connection to the server (process-local). */
typedef struct Conn
{
	DemoLineReader reader; /* buffered socket */
	bool verbose;          /* print each exchange */
	int index;             /* connection number, for verbose output */
} Conn;

static bool
conn_open(Conn *conn, int port, int index, bool verbose)
{
	int fd = demo_connect(port);

	if (fd < 0)
	{
		fprintf(stderr, "client: could not connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
		return false;
	}
	demo_line_reader_init(&conn->reader, fd);
	conn->verbose = verbose;
	conn->index = index;
	return true;
}

/*
 * Send a request (printf-style) and read the reply into reply[DEMO_MAX_LINE
 * + 1].  Returns false if the connection failed (reply says why).
 */
static bool __attribute__((format(printf, 3, 4)))
conn_request(Conn *conn, char *reply, const char *fmt, ...)
{
	char request[DEMO_MAX_LINE + 1];
	va_list ap;
	bool ok;

	va_start(ap, fmt);
	vsnprintf(request, sizeof(request), fmt, ap);
	va_end(ap);
	ok = demo_roundtrip(&conn->reader, request, reply, DEMO_MAX_LINE + 1);
	if (conn->verbose)
		printf("  [%d] %s -> %s\n", conn->index, request, reply);
	return ok;
}

/*
 * Say QUIT and wait until the server closes the connection: by then the
 * worker has detached the connection's session segment and checked its
 * memory.  Closes the socket.
 */
static void
conn_close(Conn *conn)
{
	char reply[DEMO_MAX_LINE + 1];

	if (conn_request(conn, reply, "QUIT"))
	{
		while (demo_read_line(&conn->reader, -1) == DEMO_LINE_OK)
			; /* nothing more is expected: wait for end-of-file */
	}
	close(conn->reader.fd);
}

/* Parse "OK <number>" into *value; false on anything else. */
static bool
reply_number(const char *reply, uint64_t *value)
{
	char *end;

	if (strncmp(reply, "OK ", 3) != 0)
		return false;
	errno = 0;
	*value = strtoull(reply + 3, &end, 10);
	return errno == 0 && end != reply + 3 && (*end == '\0' || *end == ' ');
}

/* True if reply is "ERR <sqlstate> ...". */
static bool
reply_is_error(const char *reply, const char *sqlstate)
{
	return strncmp(reply, "ERR ", 4) == 0 && strncmp(reply + 4, sqlstate, 5) == 0 &&
		   reply[9] == ' ';
}

/* Record an unexpected answer (keeping the first for the report). */
static void
note_problem(ConnectionResult *res, const char *what, const char *reply)
{
	if (res->unexpected++ == 0)
		snprintf(res->first_problem, sizeof(res->first_problem), "%s: got \"%s\"", what, reply);
}

/*
 * Send the bad request of the given kind on conn and check the answer.
 * hits is a real table with nslots slots; session is the connection's own
 * session handle (0 if none).
 */
static void
send_bad_request(Conn *conn, ConnectionResult *res, int kind, uint32_t hits, uint32_t nslots,
				 uint32_t session, char *reply)
{
	bool sent = false;

	switch (kind)
	{
		case BAD_SLOT:
			sent = conn_request(conn, reply, "GET %u %u", hits, nslots);
			break;
		case BAD_HANDLE:
			/* A handle that cannot be a live segment: the one we are about to get wrong. */
			sent = conn_request(conn, reply, "INCR %u 0", hits ^ 0x5a5a5a5au);
			break;
		case BAD_SYNTAX:
			sent = conn_request(conn, reply, "INCR %u", hits);
			break;
		case BAD_COMMAND:
			sent = conn_request(conn, reply, "FROBNICATE %u", hits);
			break;
		case BAD_WRONG_TYPE:
			sent = conn_request(conn, reply, "INCR %u 0", session);
			break;
	}
	res->requests++;
	if (sent && reply_is_error(reply, bad_kind_sqlstates[kind]))
		res->expected_errors[kind]++;
	else if (kind == BAD_HANDLE && sent && reply_is_error(reply, DEMO_SQLSTATE_WRONG_OBJECT_TYPE))
		res->expected_errors[kind]++; /* 1 in 2^32: the handle exists but is no table */
	else
		note_problem(res, bad_kind_names[kind], reply);
}

/*
 * The work of connection process i.  Fills *res; returns false if the
 * connection broke (the counts so far are still reported).
 */
static bool
run_connection(const DemoClientOptions *options, int i, uint32_t hits, uint32_t nslots,
			   uint32_t visits, ConnectionResult *res)
{
	Conn conn;
	char reply[DEMO_MAX_LINE + 1];
	uint32_t session = 0;
	uint64_t value;
	uint64_t expected_own = 0;
	uint32_t shared_slot = nslots - 1;
	int bad_kind = i % NUM_BAD_KINDS;

	if (!conn_open(&conn, options->port, i, options->verbose))
	{
		note_problem(res, "connect", strerror(errno));
		return false;
	}

	for (int k = 0; k < options->requests; k++)
	{
		bool sent;
		bool right;
		char what[64];

		if (k == 0)
		{
			/* The connection's own segment, kept for the session by the worker. */
			sent = conn_request(&conn, reply, "SESSION");
			right = sent && sscanf(reply, "OK %" SCNu32 " requests=1 ", &session) == 1;
			snprintf(what, sizeof(what), "SESSION");
		}
		else if (k == 1)
		{
			sent = conn_request(&conn, reply, "INCR %u 0", visits);
			right = sent && reply_number(reply, &value);
			snprintf(what, sizeof(what), "INCR visits");
		}
		else if (k % 10 == 9)
		{
			send_bad_request(&conn, res, bad_kind, hits, nslots, session, reply);
			bad_kind = (bad_kind + 1) % NUM_BAD_KINDS;
			continue;
		}
		else if (k % 10 == 8)
		{
			uint32_t h = 0;
			unsigned long long n = 0;

			/* Same segment as before; the worker counted every request so far. */
			sent = conn_request(&conn, reply, "SESSION");
			right = sent && sscanf(reply, "OK %" SCNu32 " requests=%llu", &h, &n) == 2 &&
					h == session && n == (unsigned long long) k + 1;
			snprintf(what, sizeof(what), "SESSION (request %d)", k + 1);
		}
		else if (k % 10 == 7)
		{
			sent = conn_request(&conn, reply, "GET %u %d", hits, i);
			right = sent && reply_number(reply, &value) && value == expected_own;
			snprintf(what, sizeof(what), "GET own slot (expected %" PRIu64 ")", expected_own);
		}
		else if (k % 10 == 6)
		{
			uint32_t delta = (uint32_t) (k % 7) + 1;

			sent = conn_request(&conn, reply, "INCR %u %u %u", hits, shared_slot, delta);
			right = sent && reply_number(reply, &value);
			if (right)
				res->shared_increments += delta;
			snprintf(what, sizeof(what), "INCR shared slot");
		}
		else
		{
			/* Only this connection touches slot i: the new value is predictable. */
			sent = conn_request(&conn, reply, "INCR %u %d", hits, i);
			right = sent && reply_number(reply, &value) && value == expected_own + 1;
			if (right)
				expected_own++;
			snprintf(what, sizeof(what), "INCR own slot (expected %" PRIu64 ")", expected_own + 1);
		}
		res->requests++;
		if (right)
			res->ok++;
		else
			note_problem(res, what, reply);
		if (!sent)
			break;
	}
	res->own_increments = expected_own;

	/* Say goodbye; the worker detaches (and so destroys) the session segment. */
	conn_close(&conn);
	return res->unexpected == 0;
}

static double
elapsed_seconds(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) (now.tv_sec - start->tv_sec) + (double) (now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Read exactly len bytes from a pipe; false on EOF or error. */
static bool
read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0)
	{
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t) n;
	}
	return true;
}

/* On the control connection: expect "OK <number>" and return the number, else report. */
static bool
control_number(Conn *control, const char *request, uint64_t *value, int *problems)
{
	char reply[DEMO_MAX_LINE + 1];

	if (conn_request(control, reply, "%s", request) && reply_number(reply, value))
		return true;
	printf("client: UNEXPECTED: %s -> %s\n", request, reply);
	(*problems)++;
	return false;
}

int
demo_run_client(const DemoClientOptions *options)
{
	int nconn = options->connections;
	uint32_t nslots = (uint32_t) nconn + 1;
	ConnectionResult total = {0};
	uint64_t *own = calloc((size_t) nconn, sizeof(uint64_t));
	pid_t *pids = calloc((size_t) nconn, sizeof(pid_t));
	int *pipes = calloc((size_t) nconn, sizeof(int));
	struct timespec start;
	Conn control;
	char request[DEMO_MAX_LINE + 1];
	char reply[DEMO_MAX_LINE + 1];
	uint64_t hits, visits, value;
	uint64_t control_requests = 0;
	int problems = 0;
	double seconds;

	if (own == NULL || pids == NULL || pipes == NULL)
	{
		fprintf(stderr, "client: out of memory\n");
		free(own), free(pids), free(pipes);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	clock_gettime(CLOCK_MONOTONIC, &start);
	if (!conn_open(&control, options->port, -1, options->verbose))
	{
		free(own), free(pids), free(pipes);
		return 1;
	}

	/* 1. The tables. */
	snprintf(request, sizeof(request), "NEW hits %u", nslots);
	if (!control_number(&control, request, &hits, &problems) ||
		!control_number(&control, "NEW visits 1", &visits, &problems))
	{
		close(control.reader.fd);
		free(own), free(pids), free(pipes);
		return 1;
	}
	control_requests += 2;
	printf("client: created table \"hits\" (handle %" PRIu64 ", %u slots) and \"visits\" "
		   "(handle %" PRIu64 ")\n",
		   hits, nslots, visits);

	/*
	 * 2. The connections, one process each.  Close the control connection
	 * meanwhile: an idle connection ties up a worker (one connection per
	 * worker in a prefork server), and with --workers 1 nothing would move.
	 */
	conn_close(&control);
	fflush(stdout);
	for (int i = 0; i < nconn; i++)
	{
		int fds[2];

		pids[i] = -1;
		pipes[i] = -1;
		if (pipe(fds) != 0 || (pids[i] = fork()) < 0)
		{
			fprintf(stderr, "client: could not start connection %d: %s\n", i, strerror(errno));
			problems++;
			break;
		}
		if (pids[i] == 0)
		{
			ConnectionResult res = {0};

			close(fds[0]);
			for (int j = 0; j < i; j++)
				close(pipes[j]);
			run_connection(options, i, (uint32_t) hits, nslots, (uint32_t) visits, &res);
			fflush(stdout); /* verbose output; _exit() would drop it */
			free(own), free(pids), free(pipes);
			_exit(demo_write_all(fds[1], (const char *) &res, sizeof(res)) ? 0 : 1);
		}
		close(fds[1]);
		pipes[i] = fds[0];
	}
	for (int i = 0; i < nconn; i++)
	{
		ConnectionResult res;
		int status;

		if (pids[i] <= 0)
			continue;
		if (!read_full(pipes[i], &res, sizeof(res)))
		{
			printf("client: connection %d died without reporting\n", i);
			problems++;
			memset(&res, 0, sizeof(res));
		}
		close(pipes[i]);
		waitpid(pids[i], &status, 0);
		total.requests += res.requests;
		total.ok += res.ok;
		total.unexpected += res.unexpected;
		total.shared_increments += res.shared_increments;
		for (int k = 0; k < NUM_BAD_KINDS; k++)
			total.expected_errors[k] += res.expected_errors[k];
		own[i] = res.own_increments;
		if (res.unexpected > 0)
			printf("client: connection %d: %" PRIu64 " unexpected answers; first: %s\n", i,
				   res.unexpected, res.first_problem);
	}

	/* 3. Do the counters add up? */
	if (!conn_open(&control, options->port, -1, options->verbose))
	{
		free(own), free(pids), free(pipes);
		return 1;
	}
	for (int i = 0; i < nconn; i++)
	{
		snprintf(request, sizeof(request), "GET %" PRIu64 " %d", hits, i);
		control_requests++;
		if (control_number(&control, request, &value, &problems) && value != own[i])
		{
			printf("client: UNEXPECTED: slot %d holds %" PRIu64 ", connection %d added %" PRIu64
				   "\n",
				   i, value, i, own[i]);
			problems++;
		}
	}
	snprintf(request, sizeof(request), "GET %" PRIu64 " %u", hits, nslots - 1);
	control_requests++;
	if (control_number(&control, request, &value, &problems) && value != total.shared_increments)
	{
		printf("client: UNEXPECTED: shared slot holds %" PRIu64 ", connections added %" PRIu64
			   "\n",
			   value, total.shared_increments);
		problems++;
	}
	snprintf(request, sizeof(request), "GET %" PRIu64 " 0", visits);
	control_requests++;
	if (control_number(&control, request, &value, &problems) && value != (uint64_t) nconn)
	{
		printf("client: UNEXPECTED: \"visits\" holds %" PRIu64 ", expected %d\n", value, nconn);
		problems++;
	}
	seconds = elapsed_seconds(&start);

	/* Drop "hits"; then it must be gone for good. */
	snprintf(request, sizeof(request), "DROP %" PRIu64, hits);
	control_requests += 2;
	if (!conn_request(&control, reply, "%s", request) || strcmp(reply, "OK dropped") != 0)
	{
		printf("client: UNEXPECTED: %s -> %s\n", request, reply);
		problems++;
	}
	snprintf(request, sizeof(request), "GET %" PRIu64 " 0", hits);
	if (!conn_request(&control, reply, "%s", request) ||
		!reply_is_error(reply, DEMO_SQLSTATE_UNDEFINED_OBJECT))
	{
		printf("client: UNEXPECTED: after DROP, %s -> %s\n", request, reply);
		problems++;
	}

	/* The summary of the load. */
	{
		uint64_t expected_errors = 0;

		for (int k = 0; k < NUM_BAD_KINDS; k++)
			expected_errors += total.expected_errors[k];
		printf("client: %d connections x %d requests = %" PRIu64 " requests (+%" PRIu64
			   " to set up and check) in %.3f s, %.0f requests/s\n",
			   nconn, options->requests, total.requests, control_requests, seconds,
			   (double) (total.requests + control_requests) / (seconds > 0 ? seconds : 1e-9));
		printf("client: %" PRIu64 " answered OK; %" PRIu64 " bad requests answered ERR as "
			   "expected (",
			   total.ok, expected_errors);
		for (int k = 0; k < NUM_BAD_KINDS; k++)
			printf("%s%s: %" PRIu64, k ? ", " : "", bad_kind_names[k], total.expected_errors[k]);
		printf("); %" PRIu64 " unexpected\n", total.unexpected);
		if (problems == 0 && total.unexpected == 0)
			printf("client: counters add up: each connection's own slot, the shared slot (%" PRIu64
				   ") and \"visits\" (%d); \"hits\" is gone after DROP\n",
				   total.shared_increments, nconn);
	}

	/* Show one of each error reply, for the reader of the demo's output. */
	printf("client: bad requests are answered like this (the request's resource owner "
		   "detached what it had mapped):\n");
	{
		char examples[4][64];

		snprintf(examples[0], sizeof(examples[0]), "GET %" PRIu64 " 999", visits);
		snprintf(examples[1], sizeof(examples[1]), "INCR %" PRIu64 " 0", hits);
		snprintf(examples[2], sizeof(examples[2]), "INCR %" PRIu64, visits);
		snprintf(examples[3], sizeof(examples[3]), "FROBNICATE");
		for (int k = 0; k < 4; k++)
			if (conn_request(&control, reply, "%s", examples[k]))
				printf("  %-22s -> %s\n", examples[k], reply);
	}

	/*
	 * Every worker compared its memory before and after each connection
	 * (all finished: each connection waited for the server to close it).
	 */
	if (conn_request(&control, reply, "STATS"))
	{
		const char *p = strstr(reply, "leak_checks=");
		unsigned long long checks = 0, leaked = 0;

		printf("client: STATS -> %s\n", reply);
		if (p == NULL || sscanf(p, "leak_checks=%llu leaked_bytes=%llu", &checks, &leaked) != 2 ||
			checks < (unsigned long long) nconn + 1 || leaked != 0)
		{
			printf("client: UNEXPECTED: workers report %llu bytes leaked after %llu connections\n",
				   leaked, checks);
			problems++;
		}
		else
			printf("client: worker memory was back to its starting size after each of %llu "
				   "connections\n",
				   checks);
	}
	else
	{
		printf("client: UNEXPECTED: STATS -> %s\n", reply);
		problems++;
	}
	conn_close(&control);

	free(own), free(pids), free(pipes);
	if (problems != 0 || total.unexpected != 0)
		printf("client: FAILED: %d problems, %" PRIu64 " unexpected answers\n", problems,
			   total.unexpected);
	fflush(stdout);
	return problems == 0 && total.unexpected == 0 ? 0 : 1;
}

int
demo_send_shutdown(int port)
{
	Conn conn;
	char reply[DEMO_MAX_LINE + 1];
	bool ok;

	if (!conn_open(&conn, port, -1, false))
		return 1;
	ok = conn_request(&conn, reply, "SHUTDOWN") && strcmp(reply, "OK shutting down") == 0;
	if (!ok)
		fprintf(stderr, "client: SHUTDOWN was answered \"%s\"\n", reply);
	close(conn.reader.fd);
	return ok ? 0 : 1;
}
