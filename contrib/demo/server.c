/*
 * server.c: the dsmkit-demo server, a prefork TCP counter service.
 *
 * This is the file to read to learn dsmkit.  The processes:
 *
 *   supervisor  calls supervisor_startup() on the cluster directory, opens
 *               the listening socket, and then only starts, reaps and
 *               restarts backends.  It never touches a segment itself.
 *   bootstrap   a short-lived backend that creates the statistics segment,
 *               pins it so that it outlives its creator, hands its handle
 *               to the supervisor through a pipe and exits.
 *   workers     N backends that accept() connections on the shared
 *               listening socket, one connection at a time, and answer
 *               requests.
 *
 * Lifetimes, the point of the example:
 *
 *   request     each request line runs under its own ResourceOwner and in
 *               a memory context reset after the reply.  A table the request
 *               attaches by handle belongs to that owner; when an ERROR
 *               aborts the request (unknown handle, slot out of range,
 *               malformed line), releasing the owner detaches it, and
 *               resetting the context frees what the request allocated.
 *   connection  SESSION creates a segment for the connection and gives its
 *               mapping session lifetime with dsm_keep_mapping(); it is
 *               detached, and so destroyed, when the connection closes.
 *   table       NEW pins the segment it creates, so the table outlives the
 *               request (and every mapping of it) until DROP unpins it or
 *               the supervisor shuts down.
 *   cluster     when the supervisor leaves through proc_exit(), every
 *               segment left, the control segment and the state file go.
 *
 * Shutdown: the supervisor holds the write end of a pipe whose read end
 * every worker polls alongside its socket.  SIGTERM or SIGINT to the
 * supervisor, or a SHUTDOWN request (the worker signals the supervisor),
 * closes that write end; every worker sees the hang-up, finishes the
 * request in hand and exits through proc_exit(), and the supervisor reaps
 * them and exits.  No sleeps, no polling loops with timeouts.
 */
#define _GNU_SOURCE /* accept4, pipe2 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dsmkit.h>

#include "demo.h"

/*
 * SQLSTATE codes the demo uses that dsmkit/elog.h does not define.  A code
 * is only five characters packed into an int; any program may add its own.
 */
#define ERRCODE_SYNTAX_ERROR MAKE_SQLSTATE('4', '2', '6', '0', '1')
#define ERRCODE_UNDEFINED_OBJECT MAKE_SQLSTATE('4', '2', '7', '0', '4')
#define ERRCODE_WRONG_OBJECT_TYPE MAKE_SQLSTATE('4', '2', '8', '0', '9')

#define DEMO_LAYOUT_VERSION 1
#define DEMO_TABLE_MAGIC 0x44544231u   /* "DTB1": a counter table */
#define DEMO_STATS_MAGIC 0x44535431u   /* "DST1": the statistics segment */
#define DEMO_SESSION_MAGIC 0x44535331u /* "DSS1": a connection's segment */
#define DEMO_MAX_NAME 32
#define DEMO_MAX_SLOTS (1u << 20)

/*
 * A counter table (shared memory, one segment created by NEW).  The
 * creator fills the header before it tells anyone the handle, so a reader
 * that checks magic, version and size may trust the rest.  Counters are
 * updated only with __atomic builtins; no lock is needed.
 */
typedef struct DemoTable
{
	uint32_t magic;             /* DEMO_TABLE_MAGIC */
	uint32_t version;           /* DEMO_LAYOUT_VERSION */
	uint64_t size;              /* bytes of header plus slots[], <= segment size */
	uint32_t nslots;            /* number of counters in slots[], 1..DEMO_MAX_SLOTS */
	char name[DEMO_MAX_NAME];   /* name given to NEW, NUL-terminated */
	uint64_t slots[];           /* the counters (atomic) */
} DemoTable;

/*
 * Service-wide statistics (shared memory, one pinned segment created by
 * the bootstrap backend; every worker keeps it mapped for its lifetime).
 * All counters are atomic.
 */
typedef struct DemoStats
{
	uint32_t magic;           /* DEMO_STATS_MAGIC */
	uint32_t version;         /* DEMO_LAYOUT_VERSION */
	uint64_t size;            /* sizeof(DemoStats) */
	uint64_t requests;        /* request lines answered, all workers */
	uint64_t errors;          /* of which answered with ERR */
	uint64_t connections;     /* connections accepted */
	int64_t tables;           /* tables pinned by NEW and not yet dropped */
	uint64_t workers_started; /* worker processes started, restarts included */
	uint64_t leak_checks;     /* connections after which worker memory was compared */
	uint64_t leaked_bytes;    /* worker memory not given back after a connection (must stay 0) */
} DemoStats;

/*
 * Per-connection data (shared memory, one segment per connection that
 * issued SESSION).  It lives in shared memory so that any process can look
 * at it by handle; the worker serving the connection is its only writer.
 */
typedef struct DemoSessionData
{
	uint32_t magic;      /* DEMO_SESSION_MAGIC */
	uint32_t version;    /* DEMO_LAYOUT_VERSION */
	uint64_t size;       /* sizeof(DemoSessionData) */
	int32_t worker_pid;  /* pid of the worker serving the connection */
	uint32_t padding;    /* unused, zero */
	uint64_t started_at; /* time(NULL) when SESSION was first issued */
	uint64_t requests;   /* requests answered on the connection since SESSION */
	uint64_t errors;     /* of which were answered with ERR */
} DemoSessionData;

/*
 * The state of one connection (process-local, on the worker's stack).
 * session_seg is NULL until the first SESSION request; after it, the
 * mapping has session lifetime and is detached when the connection ends.
 */
typedef struct DemoConnection
{
	int fd;                      /* the accepted socket */
	dsm_segment *session_seg;    /* kept mapping of the connection's segment, or NULL */
	DemoSessionData *session;    /* its address, or NULL */
	bool close_after_reply;      /* QUIT or SHUTDOWN was answered */
} DemoConnection;

/*
 * Process-local state.  The supervisor sets these before it forks, so
 * every backend inherits them.
 */
static int listen_fd = -1;                 /* the shared listening socket */
static int shutdown_rd = -1;               /* read end of the shutdown pipe */
static volatile sig_atomic_t shutdown_wr = -1; /* write end; only the supervisor keeps it */
static volatile sig_atomic_t shutdown_requested = 0;
static pid_t supervisor_pid;               /* whom SHUTDOWN signals */
static dsm_handle stats_handle;            /* the statistics segment */

/* Worker-only state. */
static DemoStats *stats;                   /* mapped for the worker's lifetime */

static void worker_main(Datum arg);
static void bootstrap_main(Datum arg);

/* ------------------------------------------------------------------------
 * Small helpers for request handlers.  Each raises ERROR on bad input; the
 * caller's PG_TRY turns that into an "ERR" reply.
 * ------------------------------------------------------------------------
 */

/*
 * Parse an unsigned decimal number in [min, max] from the request token s;
 * what names the argument for the error message.  ERROR (syntax error) on
 * a missing token or garbage, ERROR (invalid parameter) out of range.
 */
static uint32_t
parse_uint32(const char *what, const char *s, uint32_t min, uint32_t max)
{
	char *end;
	unsigned long long value;

	if (s == NULL)
		ereport(ERROR, errcode(ERRCODE_SYNTAX_ERROR), errmsg("missing %s", what),
				errhint("Send HELP for the list of requests."));
	errno = 0;
	value = strtoull(s, &end, 10);
	if (*s == '\0' || *s == '-' || *end != '\0' || errno == ERANGE)
		ereport(ERROR, errcode(ERRCODE_SYNTAX_ERROR),
				errmsg("invalid %s \"%s\"", what, s),
				errdetail("A %s is an unsigned decimal number.", what));
	if (value < min || value > max)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s %llu is out of range", what, value),
				errdetail("The %s must be between %u and %u.", what, min, max));
	return (uint32_t) value;
}

/* ERROR (syntax error) if the request has a token left over. */
static void
expect_end(const char *command, const char *extra)
{
	if (extra != NULL)
		ereport(ERROR, errcode(ERRCODE_SYNTAX_ERROR),
				errmsg("too many arguments for %s", command),
				errdetail("Unexpected \"%s\".", extra));
}

/*
 * Map the counter table with handle h for the current request and return
 * its header; *segp gets the mapping.  If this process already maps h (it
 * is the statistics segment or the connection's own session segment),
 * that mapping is returned and *owned is false: the caller must not detach
 * it.  Otherwise the new mapping belongs to CurrentResourceOwner, the
 * request's owner, and *owned is true.
 *
 * ERROR (undefined object) if no segment h exists, ERROR (wrong object
 * type) if it is not a counter table.  In both cases a mapping made here
 * is left to the resource owner, which detaches it when the aborted
 * request is released: the handler needs no cleanup code of its own.
 */
static DemoTable *
table_attach(dsm_handle h, dsm_segment **segp, bool *owned)
{
	dsm_segment *seg;
	DemoTable *table;
	size_t maplen;

	seg = dsm_find_mapping(h);
	*owned = (seg == NULL);
	if (seg == NULL)
		seg = dsm_attach(h);
	if (seg == NULL)
		ereport(ERROR, errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("shared table %u does not exist", h),
				errhint("Create a table with NEW; a dropped table is gone for good."));

	table = dsm_segment_address(seg);
	maplen = dsm_segment_map_length(seg);
	if (maplen < sizeof(DemoTable) || table->magic != DEMO_TABLE_MAGIC ||
		table->version != DEMO_LAYOUT_VERSION || table->size > maplen ||
		table->nslots == 0 ||
		table->size != sizeof(DemoTable) + (uint64_t) table->nslots * sizeof(uint64_t))
		ereport(ERROR, errcode(ERRCODE_WRONG_OBJECT_TYPE),
				errmsg("shared memory segment %u is not a counter table", h),
				errdetail("Its header has magic 0x%08x and size %zu bytes.",
						  maplen >= sizeof(uint32_t) ? table->magic : 0, maplen));
	*segp = seg;
	return table;
}

/* Detach a table mapped by table_attach(), unless it was not ours to detach. */
static void
table_detach(dsm_segment *seg, bool owned)
{
	if (owned)
		dsm_detach(seg);
}

/* ERROR (invalid parameter) unless slot is a valid index into table. */
static void
check_slot(const DemoTable *table, dsm_handle h, uint32_t slot)
{
	if (slot >= table->nslots)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("slot %u is out of range for shared table \"%s\"", slot, table->name),
				errdetail("Table \"%s\" (handle %u) has slots 0 to %u.", table->name, h,
						  table->nslots - 1));
}

/* ------------------------------------------------------------------------
 * Request handlers.  Each runs inside run_request()'s PG_TRY, with
 * CurrentResourceOwner set to the request's owner and CurrentMemoryContext
 * set to the request's context; args[0] is the command.  Each returns the
 * reply (palloc'd in the request context) or raises ERROR.
 * ------------------------------------------------------------------------
 */

/* NEW name nslots: create a table, pin it, return its handle. */
static char *
handle_new(DemoConnection *conn, char **args)
{
	const char *name = args[1];
	uint32_t nslots;
	size_t size;
	dsm_segment *seg;
	DemoTable *table;
	dsm_handle h;

	if (name == NULL)
		ereport(ERROR, errcode(ERRCODE_SYNTAX_ERROR), errmsg("missing table name"),
				errhint("Usage: NEW name nslots."));
	if (strlen(name) >= DEMO_MAX_NAME || strspn(name, "abcdefghijklmnopqrstuvwxyz"
										  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != strlen(name))
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid table name \"%s\"", name),
				errdetail("A name has 1 to %d letters, digits, '_', '-' or '.'.",
						  DEMO_MAX_NAME - 1));
	nslots = parse_uint32("slot count", args[2], 1, DEMO_MAX_SLOTS);
	expect_end("NEW", args[3]);

	/*
	 * The new mapping belongs to the request's resource owner: if anything
	 * below raised ERROR, the abort would detach it, and since it is not
	 * pinned yet, the segment would be destroyed with it.
	 */
	size = sizeof(DemoTable) + (size_t) nslots * sizeof(uint64_t);
	seg = dsm_create(size, 0);
	table = dsm_segment_address(seg);
	table->version = DEMO_LAYOUT_VERSION;
	table->size = size;
	table->nslots = nslots;
	strcpy(table->name, name);
	__atomic_store_n(&table->magic, DEMO_TABLE_MAGIC, __ATOMIC_RELEASE);

	/* From here on the table outlives this mapping and this process. */
	dsm_pin_segment(seg);
	h = dsm_segment_handle(seg);
	dsm_detach(seg);
	__atomic_add_fetch(&stats->tables, 1, __ATOMIC_RELAXED);
	return psprintf("OK %u", h);
}

/* INCR handle slot [delta]: add delta (default 1) to a counter, atomically. */
static char *
handle_incr(DemoConnection *conn, char **args)
{
	dsm_handle h = parse_uint32("handle", args[1], 1, UINT32_MAX);
	uint32_t slot = parse_uint32("slot", args[2], 0, UINT32_MAX);
	uint32_t delta = args[3] ? parse_uint32("delta", args[3], 0, UINT32_MAX) : 1;
	dsm_segment *seg;
	bool owned;
	DemoTable *table;
	uint64_t value;

	expect_end("INCR", args[3] ? args[4] : NULL);
	table = table_attach(h, &seg, &owned);
	check_slot(table, h, slot); /* an ERROR here leaves seg to the resource owner */
	value = __atomic_add_fetch(&table->slots[slot], delta, __ATOMIC_RELAXED);
	table_detach(seg, owned);
	return psprintf("OK %llu", (unsigned long long) value);
}

/* GET handle slot: read a counter. */
static char *
handle_get(DemoConnection *conn, char **args)
{
	dsm_handle h = parse_uint32("handle", args[1], 1, UINT32_MAX);
	uint32_t slot = parse_uint32("slot", args[2], 0, UINT32_MAX);
	dsm_segment *seg;
	bool owned;
	DemoTable *table;
	uint64_t value;

	expect_end("GET", args[3]);
	table = table_attach(h, &seg, &owned);
	check_slot(table, h, slot);
	value = __atomic_load_n(&table->slots[slot], __ATOMIC_RELAXED);
	table_detach(seg, owned);
	return psprintf("OK %llu", (unsigned long long) value);
}

/*
 * DROP handle: unpin a table.  The segment is destroyed as soon as no
 * process maps it, which is at once unless a request elsewhere is using it
 * right now.  ERROR if h is no table or is not pinned (dropped already).
 */
static char *
handle_drop(DemoConnection *conn, char **args)
{
	dsm_handle h = parse_uint32("handle", args[1], 1, UINT32_MAX);
	dsm_segment *seg;
	bool owned;

	expect_end("DROP", args[2]);
	(void) table_attach(h, &seg, &owned); /* refuse to unpin what is no table */
	dsm_unpin_segment(h);
	table_detach(seg, owned); /* the last mapping: the segment goes now */
	__atomic_sub_fetch(&stats->tables, 1, __ATOMIC_RELAXED);
	return pstrdup("OK dropped");
}

/*
 * SESSION: the connection's own segment, created on first use.  dsm_create()
 * gives the mapping to the request's owner; dsm_keep_mapping() takes it
 * away again, so that it survives the request and lives until the
 * connection closes (serve_connection() detaches it).
 */
static char *
handle_session(DemoConnection *conn, char **args)
{
	expect_end("SESSION", args[1]);
	if (conn->session_seg == NULL)
	{
		dsm_segment *seg = dsm_create(sizeof(DemoSessionData), 0);
		DemoSessionData *data = dsm_segment_address(seg);

		data->version = DEMO_LAYOUT_VERSION;
		data->size = sizeof(DemoSessionData);
		data->worker_pid = (int32_t) getpid();
		data->started_at = (uint64_t) time(NULL);
		data->magic = DEMO_SESSION_MAGIC;
		dsm_keep_mapping(seg);
		conn->session_seg = seg;
		conn->session = data;
		/* This request counts: finish_request() adds it after the reply. */
	}
	return psprintf("OK %u requests=%llu errors=%llu", dsm_segment_handle(conn->session_seg),
					(unsigned long long) conn->session->requests + 1,
					(unsigned long long) conn->session->errors);
}

/* STATS: the service-wide counters and a look at this worker's memory. */
static char *
handle_stats(DemoConnection *conn, char **args)
{
	expect_end("STATS", args[1]);
	return psprintf("OK requests=%llu errors=%llu connections=%llu tables=%lld "
					"workers_started=%llu leak_checks=%llu leaked_bytes=%llu worker=%d "
					"worker_memory=%zu",
					(unsigned long long) __atomic_load_n(&stats->requests, __ATOMIC_RELAXED),
					(unsigned long long) __atomic_load_n(&stats->errors, __ATOMIC_RELAXED),
					(unsigned long long) __atomic_load_n(&stats->connections, __ATOMIC_RELAXED),
					(long long) __atomic_load_n(&stats->tables, __ATOMIC_RELAXED),
					(unsigned long long) __atomic_load_n(&stats->workers_started, __ATOMIC_RELAXED),
					(unsigned long long) __atomic_load_n(&stats->leak_checks, __ATOMIC_RELAXED),
					(unsigned long long) __atomic_load_n(&stats->leaked_bytes, __ATOMIC_RELAXED),
					(int) getpid(), MemoryContextMemAllocated(TopMemoryContext, true));
}

/* SHUTDOWN: ask the supervisor to stop the service (it closes the shutdown pipe). */
static char *
handle_shutdown(DemoConnection *conn, char **args)
{
	expect_end("SHUTDOWN", args[1]);
	if (kill(supervisor_pid, SIGTERM) != 0)
		ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("could not signal supervisor process %d: %m", (int) supervisor_pid));
	conn->close_after_reply = true;
	return pstrdup("OK shutting down");
}

static char *
handle_quit(DemoConnection *conn, char **args)
{
	expect_end("QUIT", args[1]);
	conn->close_after_reply = true;
	return pstrdup("OK bye");
}

static char *
handle_help(DemoConnection *conn, char **args)
{
	return pstrdup("OK commands: NEW name nslots | INCR handle slot [delta] | GET handle slot | "
				   "DROP handle | SESSION | STATS | HELP | QUIT | SHUTDOWN");
}

typedef struct DemoCommand
{
	const char *name;
	char *(*handler)(DemoConnection *conn, char **args);
} DemoCommand;

static const DemoCommand commands[] = {
	{"NEW", handle_new},         {"INCR", handle_incr},   {"GET", handle_get},
	{"DROP", handle_drop},       {"SESSION", handle_session}, {"STATS", handle_stats},
	{"SHUTDOWN", handle_shutdown}, {"QUIT", handle_quit}, {"HELP", handle_help},
};

#define DEMO_MAX_ARGS 6

/*
 * Split a request line into words (palloc'd in the request context) and
 * run its handler.  line NULL means the line was too long.  ERROR on an
 * empty, over-long or unknown request.
 */
static char *
dispatch(DemoConnection *conn, const char *line)
{
	char *args[DEMO_MAX_ARGS + 1] = {0};
	char *copy;
	char *save = NULL;
	int nargs = 0;

	if (line == NULL)
		ereport(ERROR, errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("request line is too long"),
				errdetail("The limit is %d bytes.", DEMO_MAX_LINE));

	copy = pstrdup(line);
	for (char *word = strtok_r(copy, " \t\r", &save); word != NULL;
		 word = strtok_r(NULL, " \t\r", &save))
	{
		if (nargs == DEMO_MAX_ARGS)
			ereport(ERROR, errcode(ERRCODE_SYNTAX_ERROR), errmsg("too many words in request"));
		args[nargs++] = word;
	}
	args[nargs] = NULL;
	if (nargs == 0)
		ereport(ERROR, errcode(ERRCODE_SYNTAX_ERROR), errmsg("empty request"),
				errhint("Send HELP for the list of requests."));

	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
	{
		if (strcasecmp(args[0], commands[i].name) == 0)
			return commands[i].handler(conn, args);
	}
	ereport(ERROR, errcode(ERRCODE_SYNTAX_ERROR), errmsg("unknown request \"%s\"", args[0]),
			errhint("Send HELP for the list of requests."));
	return NULL; /* keep the compiler quiet */
}

/* ------------------------------------------------------------------------
 * The request scope.
 * ------------------------------------------------------------------------
 */

/*
 * Run one request under its own resource owner and return the reply line,
 * newline included, palloc'd in request_cxt (which the caller resets after
 * sending it).
 * *failed is set when the reply is an error.
 *
 * On success the owner is released "on commit": handlers detach what they
 * attach, so a leftover mapping would draw a WARNING naming it, which is
 * how a forgotten dsm_detach() shows up in development.  On ERROR the owner
 * is released "on abort", silently detaching whatever the handler had
 * mapped, and the error becomes the reply "ERR <sqlstate> <message>".
 * Either way the owner is deleted before returning, which would itself
 * raise ERROR if anything were still remembered.  Never raises ERROR for a
 * bad request.
 */
static char *
run_request(DemoConnection *conn, const char *line, MemoryContext request_cxt, bool *failed)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(request_cxt);
	ResourceOwner owner = ResourceOwnerCreate(NULL, "request");
	char *volatile reply = NULL;

	CurrentResourceOwner = owner;
	PG_TRY();
	{
		reply = dispatch(conn, line);
		CurrentResourceOwner = NULL;
		ResourceOwnerReleaseAll(owner, true);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		/*
		 * Take the error first: releasing the owner may itself catch and
		 * flush an error from a failing release function, which would
		 * drop the one we are handling.  The handler may have switched
		 * contexts; the copy goes in ours.
		 */
		MemoryContextSwitchTo(request_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		CurrentResourceOwner = NULL;
		ResourceOwnerReleaseAll(owner, false);
		reply = psprintf("ERR %s %s", unpack_sql_state(edata->sqlerrcode), edata->message);
	}
	PG_END_TRY();

	ResourceOwnerDelete(owner);
	*failed = (strncmp(reply, "ERR ", 4) == 0);

	/* The reply goes out in one write, so put the newline in the buffer. */
	reply = psprintf("%s\n", reply);
	MemoryContextSwitchTo(oldcxt);
	return reply;
}

/*
 * Count a finished request in the statistics segment and, if the
 * connection has one, in its session segment.  Never fails.
 */
static void
finish_request(DemoConnection *conn, bool failed)
{
	__atomic_add_fetch(&stats->requests, 1, __ATOMIC_RELAXED);
	if (failed)
		__atomic_add_fetch(&stats->errors, 1, __ATOMIC_RELAXED);
	if (conn->session != NULL)
	{
		conn->session->requests++;
		if (failed)
			conn->session->errors++;
	}
}

/*
 * Answer requests on an accepted connection until the client closes it,
 * asks to QUIT, or the service shuts down.  The connection's memory
 * (reader buffer aside) lives in a context below TopMemoryContext that is
 * deleted at the end; its session segment, if any, is detached at the end,
 * and since nothing else maps or pins it, destroyed.  Closes fd.  Raises
 * ERROR only for failures of the process itself (out of memory).
 */
static void
serve_connection(int fd)
{
	DemoConnection conn = {.fd = fd};
	DemoLineReader *reader;
	MemoryContext conn_cxt;
	MemoryContext request_cxt;
	Size memory_before = MemoryContextMemAllocated(TopMemoryContext, true);
	Size memory_after;

	conn_cxt = AllocSetContextCreate(TopMemoryContext, "connection", ALLOCSET_SMALL_SIZES);
	request_cxt = AllocSetContextCreate(conn_cxt, "request", ALLOCSET_DEFAULT_SIZES);
	reader = MemoryContextAlloc(conn_cxt, sizeof(DemoLineReader));
	demo_line_reader_init(reader, fd);
	__atomic_add_fetch(&stats->connections, 1, __ATOMIC_RELAXED);

	while (!conn.close_after_reply)
	{
		DemoLineResult r = demo_read_line(reader, shutdown_rd);
		char *reply;
		bool failed;

		if (r != DEMO_LINE_OK && r != DEMO_LINE_TOO_LONG)
		{
			if (r == DEMO_LINE_ERROR && errno != ECONNRESET)
				ereport(LOG, errcode(ERRCODE_IO_ERROR),
						errmsg("could not read request from client: %m"));
			break;
		}
		reply = run_request(&conn, r == DEMO_LINE_OK ? reader->line : NULL, request_cxt, &failed);
		finish_request(&conn, failed);
		if (!demo_write_all(fd, reply, strlen(reply)))
		{
			if (errno != EPIPE && errno != ECONNRESET)
				ereport(LOG, errcode(ERRCODE_IO_ERROR),
						errmsg("could not send reply to client: %m"));
			break;
		}
		MemoryContextReset(request_cxt);
	}

	if (conn.session_seg != NULL)
		dsm_detach(conn.session_seg);
	MemoryContextDelete(conn_cxt);

	/*
	 * Everything the connection used is gone now, whatever its requests
	 * did: the worker's memory must be back where it was.  STATS reports
	 * the sum, and the client checks that it is 0.  This happens before
	 * the socket is closed, so a client that waits for end-of-file after
	 * QUIT knows the check is done.
	 */
	memory_after = MemoryContextMemAllocated(TopMemoryContext, true);
	__atomic_add_fetch(&stats->leak_checks, 1, __ATOMIC_RELAXED);
	if (memory_after > memory_before)
	{
		__atomic_add_fetch(&stats->leaked_bytes, memory_after - memory_before, __ATOMIC_RELAXED);
		ereport(WARNING, errmsg("connection leaked %zu bytes of worker memory",
								memory_after - memory_before));
	}
	close(fd);
}

/* ------------------------------------------------------------------------
 * Backends.
 * ------------------------------------------------------------------------
 */

/*
 * Common start of every backend: forget the supervisor's end of the
 * shutdown pipe (so that the supervisor's close is the last one), and set
 * up signals: SIGINT is the supervisor's to handle (a terminal sends it to
 * the whole process group), SIGPIPE is answered by EPIPE, and SIGTERM
 * kills, which the supervisor treats as a crash and answers with a new
 * worker (dsmkit reclaims what the dead one mapped).
 */
static void
backend_common_start(const char *role)
{
	if (shutdown_wr >= 0)
		close(shutdown_wr);
	shutdown_wr = -1;
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	set_log_line_prefix(role);
	log_line_pid = true;
}

/*
 * The bootstrap backend: create the statistics segment, pin it so it
 * survives this process, and write its handle to the pipe given as arg.
 * An ERROR here has no PG_TRY to catch it and becomes FATAL, so the
 * supervisor reads end-of-file and gives up.
 */
static void
bootstrap_main(Datum arg)
{
	int fd = DatumGetInt32(arg);
	dsm_segment *seg;
	DemoStats *s;
	dsm_handle h;

	backend_common_start("bootstrap: ");
	seg = dsm_create(sizeof(DemoStats), 0);
	s = dsm_segment_address(seg);
	s->magic = DEMO_STATS_MAGIC;
	s->version = DEMO_LAYOUT_VERSION;
	s->size = sizeof(DemoStats);
	dsm_pin_segment(seg);
	h = dsm_segment_handle(seg);
	dsm_detach(seg);
	if (!demo_write_all(fd, (const char *) &h, sizeof(h)))
		ereport(FATAL, errcode(ERRCODE_IO_ERROR),
				errmsg("could not send statistics segment handle to supervisor: %m"));
	close(fd);
}

/*
 * A worker backend: map the statistics segment for the whole life of the
 * process, then accept connections on the shared listening socket until
 * the shutdown pipe hangs up.  Several workers may wake for one
 * connection; the socket is non-blocking, so the losers get EAGAIN and go
 * back to poll().  Returning ends the process through proc_exit(0), whose
 * exit hooks detach the statistics segment.
 */
static void
worker_main(Datum arg)
{
	int worker_no = DatumGetInt32(arg);
	char prefix[32];
	dsm_segment *seg;

	snprintf(prefix, sizeof(prefix), "worker %d: ", worker_no);
	backend_common_start(prefix);

	/* No CurrentResourceOwner yet: this mapping has session lifetime. */
	seg = dsm_attach(stats_handle);
	if (seg == NULL)
		ereport(FATAL, errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("statistics segment %u does not exist", stats_handle));
	stats = dsm_segment_address(seg);
	if (dsm_segment_map_length(seg) < sizeof(DemoStats) || stats->magic != DEMO_STATS_MAGIC)
		ereport(FATAL, errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("statistics segment %u is corrupted", stats_handle));
	__atomic_add_fetch(&stats->workers_started, 1, __ATOMIC_RELAXED);

	for (;;)
	{
		struct pollfd pfd[2] = {
			{.fd = listen_fd, .events = POLLIN},
			{.fd = shutdown_rd, .events = POLLIN},
		};
		int conn_fd;

		if (poll(pfd, 2, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(FATAL, errcode(ERRCODE_SYSTEM_ERROR), errmsg("could not poll listening socket: %m"));
		}
		if (pfd[1].revents != 0)
			break; /* the supervisor closed the shutdown pipe */
		if ((pfd[0].revents & POLLIN) == 0)
			continue;

		conn_fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn_fd < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
				continue; /* another worker took it, or the client gave up */
			ereport(FATAL, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not accept connection on 127.0.0.1: %m"));
		}
		serve_connection(conn_fd);
	}
	ereport(DEBUG1, errmsg_internal("worker %d exiting", worker_no));
}

/* ------------------------------------------------------------------------
 * The supervisor.
 * ------------------------------------------------------------------------
 */

/*
 * SIGTERM/SIGINT handler of the supervisor: close the write end of the
 * shutdown pipe, which every worker polls, and remember why.  Only
 * async-signal-safe calls; runs at most once.
 */
static void
supervisor_handle_signal(int signo)
{
	int save_errno = errno;

	if (!shutdown_requested)
	{
		shutdown_requested = signo;
		if (shutdown_wr >= 0)
			close(shutdown_wr);
		shutdown_wr = -1;
	}
	errno = save_errno;
}

/*
 * Exit hook of the supervisor: however it leaves (proc_exit after
 * shutdown, or FATAL), make sure the workers are told to stop before the
 * cluster is torn down.  Registered with before_shmem_exit() so that it
 * runs before dsmkit's own shutdown hooks.  Never fails.
 */
static void
supervisor_close_shutdown_pipe(int code, Datum arg)
{
	supervisor_handle_signal(SIGTERM);
}

/*
 * Spawn the bootstrap backend and wait for the handle of the statistics
 * segment it creates.  FATAL if it dies before sending one.
 */
static dsm_handle
create_stats_segment(void)
{
	int fds[2];
	dsm_handle h;
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC) != 0)
		ereport(FATAL, errcode(ERRCODE_SYSTEM_ERROR), errmsg("could not create pipe: %m"));
	(void) supervisor_spawn_backend(bootstrap_main, Int32GetDatum(fds[1]));
	close(fds[1]); /* now the bootstrap's exit means end-of-file */
	do
		n = read(fds[0], &h, sizeof(h));
	while (n < 0 && errno == EINTR);
	close(fds[0]);
	if (n != (ssize_t) sizeof(h))
		ereport(FATAL, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("bootstrap backend exited before creating the statistics segment"));
	while (supervisor_reap(true) > 0)
		; /* the bootstrap is the only backend so far */
	return h;
}

/*
 * The "server" subcommand: become the supervisor of options->directory and
 * run the service until SIGTERM, SIGINT or SHUTDOWN.  Errors at startup
 * (directory not usable, another server there, port in use) are FATAL.
 * Leaves through proc_exit(0), which removes every segment of the cluster,
 * the control segment and the state file.
 */
void
demo_run_server(const DemoServerOptions *options)
{
	DsmkitConfig config = {0};
	struct sigaction sa;
	int fds[2];
	int port;
	int running;
	int restarts = 0;
	time_t restart_window = 0;
	int restarts_in_window = 0;

	set_log_line_prefix("supervisor: ");
	log_line_pid = true;

	if (mkdir(options->directory, 0700) != 0 && errno != EEXIST)
		ereport(FATAL, errcode_for_file_access(),
				errmsg("could not create cluster directory \"%s\": %m", options->directory));
	config.directory = options->directory;
	config.dsm_impl = options->dsm_impl;
	config.max_backends = options->workers + 1; /* the bootstrap runs alone, first */
	supervisor_startup(&config);

	/* Open the socket before forking: every worker inherits it. */
	listen_fd = demo_listen(options->port, &port);
	if (listen_fd < 0)
		ereport(FATAL, errcode(ERRCODE_SYSTEM_ERROR),
				errmsg("could not listen on 127.0.0.1:%d: %m", options->port));

	if (pipe2(fds, O_CLOEXEC) != 0)
		ereport(FATAL, errcode(ERRCODE_SYSTEM_ERROR), errmsg("could not create pipe: %m"));
	shutdown_rd = fds[0];
	shutdown_wr = fds[1];
	supervisor_pid = getpid();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = supervisor_handle_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	before_shmem_exit(supervisor_close_shutdown_pipe, (Datum) 0);

	stats_handle = create_stats_segment();

	printf("dsmkit-demo: listening on 127.0.0.1:%d, %d workers, %s shared memory, cluster \"%s\"\n",
		   port, options->workers, dsm_impl_name(dsm_impl_current()), options->directory);
	fflush(stdout);
	if (options->ready_fd >= 0)
	{
		uint32_t p = (uint32_t) port;

		if (!demo_write_all(options->ready_fd, (const char *) &p, sizeof(p)))
			ereport(LOG, errmsg("could not report the port to the parent process: %m"));
		close(options->ready_fd);
	}

	for (int i = 0; i < options->workers && !shutdown_requested; i++)
		(void) supervisor_spawn_backend(worker_main, Int32GetDatum(i + 1));

	/*
	 * Wait for backends to exit.  Until shutdown, any exit is a crash (a
	 * worker only leaves when the pipe hangs up): start a replacement, but
	 * give up if workers keep dying, rather than fork in a tight loop.
	 */
	for (;;)
	{
		running = supervisor_reap(true);
		if (shutdown_requested)
			break;
		while (running < options->workers && !shutdown_requested)
		{
			time_t now = time(NULL);

			if (now != restart_window)
			{
				restart_window = now;
				restarts_in_window = 0;
			}
			if (++restarts_in_window > 10 * options->workers)
				ereport(FATAL, errcode(ERRCODE_SYSTEM_ERROR),
						errmsg("workers keep exiting; giving up"));
			ereport(LOG, errmsg("a worker exited unexpectedly; starting a new one"));
			(void) supervisor_spawn_backend(worker_main, Int32GetDatum(++restarts + options->workers));
			running++;
		}
	}

	ereport(LOG, errmsg("received %s, shutting down", shutdown_requested == SIGINT ? "SIGINT" : "SIGTERM"));
	while (supervisor_reap(true) > 0)
		;
	close(listen_fd);
	close(shutdown_rd);
	printf("dsmkit-demo: server stopped (%d worker restarts)\n", restarts);
	fflush(stdout);
	proc_exit(0); /* removes every segment, the control segment and the state file */
}
