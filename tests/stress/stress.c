/*
 * stress.c: dsmkit-stress, the kill-everything stress program.
 *
 *   dsmkit-stress --dir DIR --backends N --seconds T --kill-rate K
 *                 [--supervisor-kill-rate S] [--impl posix|sysv|mmap]
 *                 [--seed X] [--log FILE] [--check-interval SECONDS]
 *                 [--hang-timeout SECONDS] [--min-backend-kills M]
 *                 [--min-supervisor-kills M]
 *
 * Three kinds of process take part:
 *
 *  - the controller (main(), not a dsmkit process): for T seconds it keeps
 *    one supervisor running on DIR.  At rate S per second it kills the
 *    supervisor and every backend at once (SIGKILL to the process group)
 *    and starts a new supervisor on the same directory, whose
 *    supervisor_startup() must clean up what the dead cluster left (a
 *    start-up refused because processes of the old cluster still run,
 *    which waiting for the whole group should prevent, is retried and
 *    counted, not failed).  It
 *    watches heartbeats and counts a process that makes no progress for the
 *    hang timeout as a hang (and kills it, so the run ends).  It is a child
 *    subreaper, so the backends of a killed supervisor become its children
 *    and it can wait until every one of them is gone.
 *  - the supervisor: supervisor_startup(), then it spawns N backends, reaps
 *    and respawns those that died, and is the killer: at rate K per second
 *    it sends SIGKILL to a random backend.  Only the supervisor knows which
 *    of its children are not yet waited for, so only it can kill a backend
 *    without the risk of hitting a reused pid.  Every few seconds it stops
 *    killing, waits until every killed backend has been reaped, and runs
 *    dsm_control_check() on its cluster, as it does right after startup.
 *  - the backends: random requests of random operations (create, attach,
 *    detach, pin, unpin, keep, unkeep, resize, remap, read, write and a
 *    simulated ERROR) under request-scoped resource owners with
 *    PG_TRY/PG_CATCH, on segments whose handles they publish to each other.
 *
 * The processes share a small anonymous shared mapping (StressShared) made
 * by the controller before the first fork: counters, heartbeats and the
 * handle directory.  It survives any kill, so no count is lost with a
 * killed supervisor, which a report through a pipe could not promise.
 *
 * At the end the controller stops the supervisor cleanly (a byte on its
 * control pipe: it stops the backends, reaps them, checks the cluster and
 * leaves with proc_exit(0)), then verifies that the cluster left nothing:
 * no /dev/shm entry "dsmkit.<cluster>.*", no System V segment with the
 * cluster's tag, no file in DIR.  Anything found is reported, counted as a
 * leak and removed.  The exit status is 0 only if leaks, hangs,
 * consistency problems, unexpected errors, data errors and backend
 * failures are all 0, and a kill of each kind happened when its rate is
 * above 0.
 *
 * Every line of dsmkit's own logging (LOG lines for each reclaimed
 * backend, for instance) goes to a log file, so that a long run does not
 * flood the terminal; warnings are counted and the first few are shown.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dsmkit.h>

#define MAX_STRESS_BACKENDS 64
#define DIRECTORY_ENTRIES 64
#define DIR_PINNED (UINT64_C(1) << 32) /* directory entry flag: the entry owns the segment's pin */
#define SEGMENT_MAGIC UINT64_C(0x6473736b53545253)
#define MIN_SEGMENT 4096
#define MAX_SEGMENT (1024 * 1024)
#define MAX_REQUEST_HELD 8
#define MAX_SESSION_HELD 6
#define MAX_REPORTED 20
#define STARTUP_ATTEMPTS 10 /* supervisor_startup() refusals (ERRCODE_OBJECT_IN_USE) before it is a failure */

/* The SQLSTATE of the ERROR a backend raises on purpose. */
#define ERRCODE_STRESS_SIMULATED MAKE_SQLSTATE('S', 'T', 'R', 'E', 'S')

/*
 * Shared memory (an anonymous MAP_SHARED mapping of the controller,
 * inherited by every supervisor and backend): counters, heartbeats and the
 * handle directory.  Not a dsmkit segment; it outlives every cluster of
 * the run.
 */
typedef struct StressBackendSlot
{
	_Atomic int32_t pid;        /* backend in this slot, 0 if none (set and cleared by the supervisor) */
	_Atomic int64_t heartbeat;  /* monotonic ns of the backend's last progress */
	_Atomic int leaving;        /* 1: the backend returned from its main function (normal exit) */
} StressBackendSlot;

typedef struct StressShared
{
	_Atomic uint64_t ops;             /* successful operations of all backends */
	_Atomic uint64_t requests;        /* request scopes finished (commit or abort) */
	_Atomic uint64_t aborts;          /* request scopes that ended in PG_CATCH */
	_Atomic uint64_t creates;         /* dsm_create() that returned a segment */
	_Atomic uint64_t creates_full;    /* dsm_create() that returned NULL (no free slot) */
	_Atomic uint64_t attaches;        /* dsm_attach() that returned a segment */
	_Atomic uint64_t attaches_gone;   /* dsm_attach() that returned NULL (segment gone) */
	_Atomic uint64_t pins;            /* dsm_pin_segment() that succeeded */
	_Atomic uint64_t unpins;          /* dsm_unpin_segment() that succeeded */
	_Atomic uint64_t resizes;         /* dsm_resize() and dsm_remap() that succeeded */
	_Atomic uint64_t expected_errors; /* ERRORs a backend expects (simulated, races on pins) */
	_Atomic uint64_t unexpected_errors; /* any other ERROR caught in a backend */
	_Atomic uint64_t data_errors;     /* wrong segment contents or detach bookkeeping */
	_Atomic uint64_t warnings;        /* WARNING (or worse) reports printed by any process */
	_Atomic uint64_t backend_kills;   /* backends that died of the killer's SIGKILL */
	_Atomic uint64_t backend_exits;   /* backends that left normally with exit code 0 */
	_Atomic uint64_t backend_failures; /* backends that died any other way */
	_Atomic uint64_t spawn_failures;  /* supervisor_spawn_backend() ERRORs */
	_Atomic uint64_t reclaim_reports; /* LOG reports of a reaped dead backend seen by the supervisor */
	_Atomic uint64_t reclaimed_backends; /* dead backends whose references were dropped (> 0) */
	_Atomic uint64_t reclaimed_refs;  /* references dropped by supervisor_reap() in total */
	_Atomic uint64_t checks;          /* dsm_control_check() runs */
	_Atomic uint64_t check_problems;  /* problems reported by those runs */
	_Atomic uint64_t check_errors;    /* dsm_control_check() runs that raised ERROR */
	_Atomic uint64_t startup_failures; /* supervisor_startup() ERRORs */
	_Atomic uint64_t startup_retries; /* supervisor_startup() refused (processes of the old cluster ran) and retried */
	_Atomic uint64_t reported;        /* diagnostic lines printed so far (capped at MAX_REPORTED) */
	_Atomic int stop_backends;        /* 1: backends leave at their next request boundary */
	_Atomic int64_t sup_heartbeat;    /* monotonic ns of the supervisor's last loop */
	StressBackendSlot be[MAX_STRESS_BACKENDS]; /* one per backend position of the supervisor */
	_Atomic uint64_t directory[DIRECTORY_ENTRIES]; /* published handles: handle | DIR_PINNED, 0 empty */
} StressShared;

/* Options (process-local; set by the controller before any fork). */
static struct
{
	const char *dir;
	int backends;
	double seconds;
	double kill_rate;
	double sup_kill_rate;
	int impl;
	uint64_t seed;
	const char *log_path;
	double check_interval;
	double hang_timeout;
	uint64_t min_kills;
	uint64_t min_sup_kills;
} opt = {NULL, 4, 10, 5, 0, DSM_IMPL_POSIX, 0, NULL, 2.0, 10.0, 1, 1};

static StressShared *shared;
static int console_fd = 2;      /* the controller's stderr, for our own diagnostics */
static int log_fd = -1;         /* dsmkit's stderr in the supervisor and the backends */
static int ev_pipe[2] = {-1, -1};  /* supervisor -> controller: 'R' ready */
static int ctl_pipe[2] = {-1, -1}; /* controller -> supervisor: 'S' stop (EOF too) */
static int chld_pipe[2] = {-1, -1}; /* the supervisor's SIGCHLD self-pipe */

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

/* Monotonic time in nanoseconds.  Never fails. */
static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
sec_to_ns(double s)
{
	return (int64_t) (s * 1e9);
}

/* Per-process random state (xorshift64*); seeded per process. */
static uint64_t rng_state = 88172645463325252ull;

static void
rng_seed(uint64_t s)
{
	rng_state = s ^ 0x9e3779b97f4a7c15ull;
	if (rng_state == 0)
		rng_state = 1;
}

static uint64_t
rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

/* Uniform integer in [0, n); n > 0. */
static uint32_t
rng_below(uint32_t n)
{
	return (uint32_t) (rng_next() % n);
}

/* Uniform double in (0, 1]. */
static double
rng_unit(void)
{
	return ((double) (rng_next() >> 11) + 1.0) / 9007199254740992.0;
}

/*
 * The delay to the next kill at rate per second, in ns: the mean interval
 * 1/rate times a uniform factor in [0.5, 1.5), so that kills come at
 * irregular moments but a run of T >= 1.5/rate seconds always has one.
 * rate <= 0: never (INT64_MAX / 2).
 */
static int64_t
next_interval(double rate)
{
	if (rate <= 0)
		return INT64_MAX / 2;
	return (int64_t) ((0.5 + rng_unit()) / rate * 1e9);
}

/*
 * Print a diagnostic line to the console (the controller's stderr), at
 * most MAX_REPORTED of them per run across all processes, so a systematic
 * problem does not flood the output.  Safe in any process; never fails.
 */
static void DSMKIT_PRINTF(1, 2)
report(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	if (atomic_fetch_add(&shared->reported, 1) >= MAX_REPORTED)
		return;
	n = snprintf(buf, sizeof(buf), "dsmkit-stress[%d]: ", (int) getpid());
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t) n - 1, fmt, ap);
	va_end(ap);
	if (n > (int) sizeof(buf) - 2)
		n = (int) sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(console_fd, buf, (size_t) n) < 0)
		return;
}

/* Print a line of the controller's summary to stdout. */
static void DSMKIT_PRINTF(1, 2)
say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* Close a descriptor if open and mark it closed. */
static void
close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/*
 * emit_log_hook of the supervisor and the backends: counts WARNING-level
 * reports (and shows the first few on the console), and in the supervisor
 * reads the reclaim count out of the LOG report that supervisor_reap()
 * makes for each dead backend ("%d references to dynamic shared memory
 * segments were reclaimed", or "exited holding %d references").  That log
 * line is the only place the API reports the count, which is why this
 * parses it; if its wording changes, the summary prints "n/a".
 */
static void
stress_log_hook(ErrorData *edata)
{
	if (edata->elevel >= WARNING)
	{
		atomic_fetch_add(&shared->warnings, 1);
		report("%s: %s%s%s", edata->elevel >= ERROR ? "error" : "warning",
			   edata->message ? edata->message : "?", edata->detail ? " -- " : "",
			   edata->detail ? edata->detail : "");
		return;
	}
	if (edata->elevel == LOG && edata->message != NULL && dsmkit_role() == DSMKIT_ROLE_SUPERVISOR)
	{
		int n = -1;
		const char *p;

		if (edata->detail != NULL &&
			strstr(edata->detail, "references to dynamic shared memory segments were reclaimed") != NULL)
			n = atoi(edata->detail);
		else if ((p = strstr(edata->message, "exited holding ")) != NULL)
			n = atoi(p + strlen("exited holding "));
		if (n >= 0)
		{
			atomic_fetch_add(&shared->reclaim_reports, 1);
			if (n > 0)
			{
				atomic_fetch_add(&shared->reclaimed_backends, 1);
				atomic_fetch_add(&shared->reclaimed_refs, (uint64_t) n);
			}
		}
	}
}

/* ---------------------------------------------------------------------
 * Backends
 * ---------------------------------------------------------------------
 */

/*
 * The header every segment of the run starts with (shared memory: the
 * first bytes of each dsm segment the backends create).  A backend that
 * attaches a handle checks that the segment names that handle.
 */
typedef struct SegmentHeader
{
	uint64_t magic;     /* SEGMENT_MAGIC */
	uint32_t handle;    /* the segment's own handle */
	int32_t creator;    /* pid of the backend that created it */
} SegmentHeader;

/* A mapping a backend holds (process-local). */
typedef struct Held
{
	dsm_segment *seg;
	bool published; /* other backends may know it: never shrink it */
} Held;

/* Operations, for classifying errors (process-local). */
typedef enum
{
	OP_CREATE,
	OP_ATTACH,
	OP_DETACH,
	OP_WRITE,
	OP_READ,
	OP_PIN,
	OP_UNPIN,
	OP_KEEP,
	OP_UNKEEP,
	OP_DETACH_SESSION,
	OP_RESIZE,
	OP_THROW,
	OP_COUNT_
} StressOp;

static const char *const op_names[] = {"create", "attach", "detach", "write", "read", "pin",
									   "unpin", "keep", "unkeep", "detach-session", "resize",
									   "throw"};
static const int op_weights[] = {18, 24, 10, 12, 10, 5, 5, 6, 3, 6, 6, 2};

/*
 * A backend's state (process-local, static so that it survives the
 * longjmp of an ERROR without volatile qualifiers).  held_request are the
 * mappings under the request's resource owner; held_session those with
 * session lifetime.  acquired counts mappings made, callbacks counts
 * on_dsm_detach callbacks run: their difference must always equal the
 * number of mappings held.
 */
static Held held_request[MAX_REQUEST_HELD];
static int n_request;
static Held held_session[MAX_SESSION_HELD];
static int n_session;
static uint64_t acquired;
static uint64_t callbacks;
static StressOp current_op;
static int my_slot;

static void
heartbeat(void)
{
	atomic_store(&shared->be[my_slot].heartbeat, now_ns());
}

/* on_dsm_detach callback: count it. */
static void
count_detach(dsm_segment *seg, Datum arg)
{
	(void) seg;
	(void) arg;
	callbacks++;
}

/* Register the callback of a mapping just made; ERROR (out of memory) is fine. */
static void
track_mapping(dsm_segment *seg)
{
	acquired++;
	on_dsm_detach(seg, count_detach, (Datum) 0);
}

static void
data_error(const char *fmt, ...) DSMKIT_PRINTF(1, 2);

static void
data_error(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	atomic_fetch_add(&shared->data_errors, 1);
	report("data error: %s", buf);
}

/* Check the header of a mapped segment; count a data error if it is wrong. */
static bool
verify_header(dsm_segment *seg)
{
	SegmentHeader *hdr = dsm_segment_address(seg);
	dsm_handle h = dsm_segment_handle(seg);

	if (dsm_segment_map_length(seg) < sizeof(SegmentHeader))
	{
		data_error("segment %u is mapped with %zu bytes only", h, dsm_segment_map_length(seg));
		return false;
	}
	if (hdr->magic != SEGMENT_MAGIC || hdr->handle != h)
	{
		data_error("segment %u has header magic %" PRIx64 ", handle %u (creator %d)", h, hdr->magic,
				   hdr->handle, (int) hdr->creator);
		return false;
	}
	return true;
}

/* A random segment size, log-uniform-ish between MIN_SEGMENT and MAX_SEGMENT. */
static size_t
random_size(void)
{
	size_t base = (size_t) MIN_SEGMENT << rng_below(9);
	size_t size = base + rng_below((uint32_t) base);

	return size > MAX_SEGMENT ? MAX_SEGMENT : size;
}

/* Remove held[i] from an array by moving the last element into its place. */
static void
remove_held(Held *arr, int *n, int i)
{
	arr[i] = arr[*n - 1];
	(*n)--;
}

/* Pick a random held mapping: request ones first, session ones otherwise.  NULL if none. */
static Held *
pick_held(void)
{
	int total = n_request + n_session;
	int i;

	if (total == 0)
		return NULL;
	i = (int) rng_below((uint32_t) total);
	return i < n_request ? &held_request[i] : &held_session[i - n_request];
}

/*
 * Publish handle h in the shared directory, optionally as the owner of the
 * segment's pin.  The entry it replaces may own a pin: the publisher
 * inherits that duty and unpins it (ERROR propagates: with this protocol
 * an unpin cannot fail).
 */
static void
publish(dsm_handle h, bool pinned)
{
	uint32_t idx = rng_below(DIRECTORY_ENTRIES);
	uint64_t old = atomic_exchange(&shared->directory[idx], (uint64_t) h | (pinned ? DIR_PINNED : 0));

	if (old & DIR_PINNED)
	{
		current_op = OP_UNPIN;
		dsm_unpin_segment((dsm_handle) old);
		atomic_fetch_add(&shared->unpins, 1);
	}
}

static void
op_create(void)
{
	dsm_segment *seg;
	SegmentHeader *hdr;
	Held *h;

	if (n_request >= MAX_REQUEST_HELD)
		return;
	seg = dsm_create(random_size(), DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (seg == NULL)
	{
		atomic_fetch_add(&shared->creates_full, 1);
		return;
	}
	h = &held_request[n_request++];
	h->seg = seg;
	h->published = false;
	track_mapping(seg);
	hdr = dsm_segment_address(seg);
	hdr->magic = SEGMENT_MAGIC;
	hdr->handle = dsm_segment_handle(seg);
	hdr->creator = (int32_t) getpid();
	atomic_fetch_add(&shared->creates, 1);
	if (rng_below(10) < 7)
	{
		h->published = true;
		publish(dsm_segment_handle(seg), false);
	}
}

static void
op_attach(void)
{
	uint64_t e = atomic_load(&shared->directory[rng_below(DIRECTORY_ENTRIES)]);
	dsm_handle handle = (dsm_handle) e;
	dsm_segment *seg;
	Held *h;

	if (handle == DSM_HANDLE_INVALID || n_request >= MAX_REQUEST_HELD)
		return;
	if (dsm_find_mapping(handle) != NULL)
		return;
	seg = dsm_attach(handle);
	if (seg == NULL)
	{
		atomic_fetch_add(&shared->attaches_gone, 1);
		return;
	}
	h = &held_request[n_request++];
	h->seg = seg;
	h->published = true;
	track_mapping(seg);
	atomic_fetch_add(&shared->attaches, 1);
	verify_header(seg);
}

static void
op_detach(void)
{
	int i;

	if (n_request == 0)
		return;
	i = (int) rng_below((uint32_t) n_request);
	dsm_segment *seg = held_request[i].seg;

	remove_held(held_request, &n_request, i);
	dsm_detach(seg);
}

static void
op_detach_session(void)
{
	int i;

	if (n_session == 0)
		return;
	i = (int) rng_below((uint32_t) n_session);
	dsm_segment *seg = held_session[i].seg;

	remove_held(held_session, &n_session, i);
	dsm_detach(seg);
}

static void
op_write(void)
{
	Held *h = pick_held();
	size_t len, room, off;
	char *base;

	if (h == NULL)
		return;
	room = dsm_segment_map_length(h->seg) - sizeof(SegmentHeader);
	len = 1 + rng_below(65536);
	if (len > room)
		len = room;
	off = sizeof(SegmentHeader) + (room > len ? rng_below((uint32_t) (room - len)) : 0);
	base = dsm_segment_address(h->seg);
	memset(base + off, (int) (rng_next() & 0xff), len);
}

static void
op_read(void)
{
	Held *h = pick_held();
	volatile unsigned sum = 0;
	const unsigned char *p;
	size_t len;

	if (h == NULL)
		return;
	if (!verify_header(h->seg))
		return;
	p = dsm_segment_address(h->seg);
	len = dsm_segment_map_length(h->seg);
	for (size_t i = 0; i < len; i += 512)
		sum += p[i];
	(void) sum;
}

static void
op_pin(void)
{
	Held *h = pick_held();

	if (h == NULL)
		return;
	dsm_pin_segment(h->seg);
	atomic_fetch_add(&shared->pins, 1);
	h->published = true;
	publish(dsm_segment_handle(h->seg), true);
}

static void
op_unpin(void)
{
	uint32_t idx = rng_below(DIRECTORY_ENTRIES);
	uint64_t e = atomic_load(&shared->directory[idx]);

	if (!(e & DIR_PINNED))
		return;
	if (!atomic_compare_exchange_strong(&shared->directory[idx], &e, e & ~DIR_PINNED))
		return;
	dsm_unpin_segment((dsm_handle) e);
	atomic_fetch_add(&shared->unpins, 1);
}

static void
op_keep(void)
{
	int i;

	if (n_request == 0 || n_session >= MAX_SESSION_HELD)
		return;
	i = (int) rng_below((uint32_t) n_request);
	held_session[n_session++] = held_request[i];
	dsm_keep_mapping(held_request[i].seg);
	remove_held(held_request, &n_request, i);
}

/* Put a session mapping back under the request's owner (dsm_unpin_mapping). */
static void
op_unkeep(void)
{
	int i;

	if (n_session == 0 || n_request >= MAX_REQUEST_HELD)
		return;
	i = (int) rng_below((uint32_t) n_session);
	dsm_unpin_mapping(held_session[i].seg);
	held_request[n_request++] = held_session[i];
	remove_held(held_session, &n_session, i);
}

/*
 * Resize a held segment that this backend made and never published: it
 * may take any size.  A published segment is only remapped: a resize sets
 * the size, so two processes "growing" one segment at once can shrink it
 * under a third one's mapping, which then faults (SIGBUS) - the same rule
 * as in PostgreSQL, where the caller must coordinate resizes.  Remapping
 * picks up the size the creator gave it before publishing.
 */
static void
op_resize(void)
{
	Held *h = pick_held();
	size_t size;

	if (h == NULL || opt.impl == DSM_IMPL_SYSV)
		return;
	if (h->published)
	{
		dsm_remap(h->seg);
		verify_header(h->seg);
		atomic_fetch_add(&shared->resizes, 1);
		return;
	}
	size = random_size();
	dsm_resize(h->seg, size);
	if (dsm_segment_map_length(h->seg) < size)
		data_error("segment %u is mapped with %zu bytes after a resize to %zu",
				   dsm_segment_handle(h->seg), dsm_segment_map_length(h->seg), size);
	verify_header(h->seg);
	atomic_fetch_add(&shared->resizes, 1);
}

static void
op_throw(void)
{
	ereport(ERROR, errcode(ERRCODE_STRESS_SIMULATED), errmsg("simulated failure"));
}

/* Run one operation chosen by weight. */
static void
run_one_op(void)
{
	int total = 0, r;
	StressOp op = OP_CREATE;

	for (int i = 0; i < OP_COUNT_; i++)
		total += op_weights[i];
	r = (int) rng_below((uint32_t) total);
	for (int i = 0; i < OP_COUNT_; i++)
	{
		if (r < op_weights[i])
		{
			op = (StressOp) i;
			break;
		}
		r -= op_weights[i];
	}
	current_op = op;
	switch (op)
	{
		case OP_CREATE: op_create(); break;
		case OP_ATTACH: op_attach(); break;
		case OP_DETACH: op_detach(); break;
		case OP_WRITE: op_write(); break;
		case OP_READ: op_read(); break;
		case OP_PIN: op_pin(); break;
		case OP_UNPIN: op_unpin(); break;
		case OP_KEEP: op_keep(); break;
		case OP_UNKEEP: op_unkeep(); break;
		case OP_DETACH_SESSION: op_detach_session(); break;
		case OP_RESIZE: op_resize(); break;
		case OP_THROW: op_throw(); break;
		case OP_COUNT_: break;
	}
	atomic_fetch_add(&shared->ops, 1);
	heartbeat();
}

/*
 * Check the backend's own bookkeeping between requests: every held mapping
 * is this process's mapping of its handle, and each mapping made and no
 * longer held has had its detach callback run exactly once.
 */
static void
check_bookkeeping(void)
{
	for (int i = 0; i < n_request + n_session; i++)
	{
		Held *h = i < n_request ? &held_request[i] : &held_session[i - n_request];

		if (dsm_find_mapping(dsm_segment_handle(h->seg)) != h->seg)
			data_error("held segment %u is not found by dsm_find_mapping", dsm_segment_handle(h->seg));
	}
	if (acquired - callbacks != (uint64_t) (n_request + n_session))
		data_error("%" PRIu64 " mappings made, %" PRIu64 " detach callbacks run, but %d held",
				   acquired, callbacks, n_request + n_session);
}

/* Classify the ERROR being handled (inside PG_CATCH) and count it. */
static void
count_caught_error(void)
{
	int code = geterrcode();

	if (code == ERRCODE_STRESS_SIMULATED ||
		(current_op == OP_PIN && code == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE))
		atomic_fetch_add(&shared->expected_errors, 1);
	else
	{
		ErrorData *edata = CopyErrorData();

		atomic_fetch_add(&shared->unexpected_errors, 1);
		report("unexpected error in %s (SQLSTATE %s): %s%s%s", op_names[current_op],
			   unpack_sql_state(code), edata->message ? edata->message : "?",
			   edata->detail ? " -- " : "", edata->detail ? edata->detail : "");
		FreeErrorData(edata);
	}
}

/*
 * One request: a fresh resource owner, 1 to 8 operations, then either the
 * commit path (detach what the request still holds, release with isCommit
 * true: no leftovers, so no WARNING) or, after an ERROR, the abort path
 * (the owner's release detaches the request's mappings).
 */
static void
run_request(void)
{
	ResourceOwner request = ResourceOwnerCreate(NULL, "stress request");
	ResourceOwner saved = CurrentResourceOwner;
	int nops = 1 + (int) rng_below(8);

	CurrentResourceOwner = request;
	PG_TRY();
	{
		for (int i = 0; i < nops; i++)
			run_one_op();
		while (n_request > 0)
		{
			dsm_segment *seg = held_request[n_request - 1].seg;

			n_request--;
			dsm_detach(seg);
		}
		CurrentResourceOwner = saved;
		ResourceOwnerReleaseAll(request, true);
	}
	PG_CATCH();
	{
		CurrentResourceOwner = saved;
		count_caught_error();
		FlushErrorState();
		ResourceOwnerReleaseAll(request, false);
		/* The owner detached the request's mappings. */
		n_request = 0;
		atomic_fetch_add(&shared->aborts, 1);
	}
	PG_END_TRY();
	ResourceOwnerDelete(request);
	atomic_fetch_add(&shared->requests, 1);
	check_bookkeeping();
	heartbeat();
}

/*
 * The body of every backend (arg: its position in shared->be).  It drops
 * the supervisor's descriptors and signal handlers, then runs requests
 * until told to stop, or, now and then, leaves early by returning (a normal
 * exit the supervisor must tell apart from a kill).  Session mappings are
 * left to the exit hook.
 */
static void
backend_main(Datum arg)
{
	my_slot = DatumGetInt32(arg);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	close_fd(&chld_pipe[0]);
	close_fd(&chld_pipe[1]);
	close_fd(&ev_pipe[1]);
	close_fd(&ctl_pipe[0]);
	rng_seed(opt.seed ^ ((uint64_t) getpid() << 20) ^ (uint64_t) now_ns());
	n_request = n_session = 0;
	acquired = callbacks = 0;
	heartbeat();
	while (!atomic_load(&shared->stop_backends))
	{
		run_request();
		if (rng_below(1000) < 3)
			break;
	}
	atomic_store(&shared->be[my_slot].leaving, 1);
}

/* ---------------------------------------------------------------------
 * Supervisor
 * ---------------------------------------------------------------------
 */

/* Process-local: the supervisor's view of its backends. */
static struct
{
	pid_t pid;   /* 0: position free */
	bool killed; /* the killer sent SIGKILL */
} children[MAX_STRESS_BACKENDS];

static volatile sig_atomic_t sup_stop_requested;

static void
sigchld_handler(int sig)
{
	int save = errno;
	char c = 'c';

	(void) sig;
	if (write(chld_pipe[1], &c, 1) < 0)
		errno = save;
	errno = save;
}

static void
sigterm_handler(int sig)
{
	(void) sig;
	sup_stop_requested = 1;
}

static void
check_report(const char *problem, void *arg)
{
	(void) arg;
	atomic_fetch_add(&shared->check_problems, 1);
	report("consistency problem: %s", problem);
}

/* Run the consistency check on the supervisor's own cluster.  Never raises. */
static void
run_check(const char *when)
{
	PG_TRY();
	{
		int n = dsm_control_check(NULL, check_report, NULL);

		if (n > 0)
			report("consistency check %s found %d problems", when, n);
	}
	PG_CATCH();
	{
		ErrorData *edata = CopyErrorData();

		FlushErrorState();
		atomic_fetch_add(&shared->check_errors, 1);
		report("consistency check %s raised: %s", when, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	atomic_fetch_add(&shared->checks, 1);
}

/* Fork a backend into position i.  A spawn ERROR is counted; it is retried later. */
static void
spawn_one(int i)
{
	PG_TRY();
	{
		pid_t pid;

		atomic_store(&shared->be[i].heartbeat, now_ns());
		atomic_store(&shared->be[i].leaving, 0);
		pid = supervisor_spawn_backend(backend_main, Int32GetDatum(i));
		children[i].pid = pid;
		children[i].killed = false;
		atomic_store(&shared->be[i].pid, (int32_t) pid);
	}
	PG_CATCH();
	{
		ErrorData *edata = CopyErrorData();

		FlushErrorState();
		atomic_fetch_add(&shared->spawn_failures, 1);
		report("could not spawn a backend: %s", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * Count how backend position i ended and free the position.  info is its
 * status if the supervisor saw it before supervisor_reap() consumed it,
 * NULL if not (the child exited between the look and the reap): then the
 * killer's flag and the backend's own "leaving normally" mark tell.
 */
static void
account_exit(int i, const siginfo_t *info)
{
	bool normal = atomic_load(&shared->be[i].leaving) != 0;

	if (info != NULL ? (info->si_code == CLD_KILLED && info->si_status == SIGKILL && children[i].killed)
					 : children[i].killed)
		atomic_fetch_add(&shared->backend_kills, 1);
	else if (info != NULL ? (info->si_code == CLD_EXITED && info->si_status == 0) : normal)
		atomic_fetch_add(&shared->backend_exits, 1);
	else
	{
		atomic_fetch_add(&shared->backend_failures, 1);
		if (info == NULL)
			report("backend %d ended without a kill or a normal exit (status not seen)",
				   (int) children[i].pid);
		else
			report("backend %d %s %d", (int) children[i].pid,
				   info->si_code == CLD_EXITED ? "exited with code" : "died of signal", info->si_status);
	}
	children[i].pid = 0;
	children[i].killed = false;
	atomic_store(&shared->be[i].pid, 0);
}

/*
 * Collect exited backends.  waitid(WNOWAIT) looks at how each child ended
 * without consuming its status, so that supervisor_reap() still does the
 * waiting (and the reclaiming) as in any application; a child that is no
 * longer in the process table afterwards (waitid fails with ECHILD) has
 * been reaped, and is counted and its position freed.  A child that exits
 * between the look and supervisor_reap() is reaped unseen: the next pass
 * finds it gone and counts it without its status.  Returns how many
 * positions were freed.
 */
static int
reap_pass(void)
{
	siginfo_t info[MAX_STRESS_BACKENDS];
	bool exited[MAX_STRESS_BACKENDS] = {false};
	int freed = 0;
	char buf[64];

	while (read(chld_pipe[0], buf, sizeof(buf)) > 0)
		;
	for (int i = 0; i < opt.backends; i++)
	{
		if (children[i].pid == 0)
			continue;
		memset(&info[i], 0, sizeof(info[i]));
		if (waitid(P_PID, (id_t) children[i].pid, &info[i], WEXITED | WNOHANG | WNOWAIT) == 0)
		{
			if (info[i].si_pid == children[i].pid)
				exited[i] = true;
		}
		else if (errno == ECHILD)
		{
			/* Reaped by the previous supervisor_reap() without being seen. */
			account_exit(i, NULL);
			freed++;
		}
	}
	supervisor_reap(false);
	for (int i = 0; i < opt.backends; i++)
	{
		siginfo_t again;

		if (!exited[i])
			continue;
		memset(&again, 0, sizeof(again));
		if (waitid(P_PID, (id_t) children[i].pid, &again, WEXITED | WNOHANG | WNOWAIT) == 0)
			continue; /* not reaped yet (should not happen): next pass */
		account_exit(i, &info[i]);
		freed++;
	}
	return freed;
}

/* Wait up to timeout_ms for a SIGCHLD or a control byte. */
static void
sup_wait(int timeout_ms)
{
	struct pollfd pfd[2] = {{chld_pipe[0], POLLIN, 0}, {ctl_pipe[0], POLLIN, 0}};

	if (poll(pfd, 2, timeout_ms) > 0 && (pfd[1].revents & (POLLIN | POLLHUP)))
	{
		char c;
		ssize_t r = read(ctl_pipe[0], &c, 1);

		if (r <= 0 || c == 'S')
			sup_stop_requested = 1;
	}
}

/* True if some killed backend is not reaped yet. */
static bool
killed_pending(void)
{
	for (int i = 0; i < opt.backends; i++)
		if (children[i].pid != 0 && children[i].killed)
			return true;
	return false;
}

/*
 * The supervisor process: start the cluster, check it, spawn, then loop:
 * reap and respawn, kill at the kill rate, check periodically after
 * waiting for every killed backend to be reaped (a dead unreaped backend
 * is a problem by the check's definition).  On a stop request it stops the
 * backends, reaps them all, checks once more and leaves with proc_exit(0),
 * whose exit hook destroys the cluster.
 */
static DSMKIT_NORETURN void
supervisor_main(void)
{
	DsmkitConfig cfg = {0};
	int64_t next_kill, next_check;
	char c = 'R';

	setpgid(0, 0);
	close_fd(&ev_pipe[0]);
	close_fd(&ctl_pipe[1]);
	console_fd = dup(2);
	dup2(log_fd, 2);
	close_fd(&log_fd);
	if (pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		_exit(4);
	signal(SIGCHLD, sigchld_handler);
	signal(SIGTERM, sigterm_handler);
	signal(SIGINT, SIG_IGN);
	rng_seed(opt.seed ^ (uint64_t) getpid() ^ (uint64_t) now_ns());
	log_line_pid = true;
	emit_log_hook = stress_log_hook;
	atomic_store(&shared->sup_heartbeat, now_ns());

	cfg.directory = opt.dir;
	cfg.dsm_impl = opt.impl;
	cfg.max_backends = opt.backends;
	cfg.max_segments = 8 + 3 * opt.backends;
	/*
	 * ERRCODE_OBJECT_IN_USE means that processes of the previous cluster
	 * still run (backends that outlived their supervisor, or a holder of
	 * the lock file's flock).  The controller waits until the whole process
	 * group is gone before it starts a supervisor, and supervisor_startup()
	 * itself waits a few seconds for dying backends, so this should not
	 * happen; if it does anyway, it is not a failure of the library: wait,
	 * retry, and count it.
	 */
	for (int attempt = 1;; attempt++)
	{
		volatile bool started = false;

		atomic_store(&shared->sup_heartbeat, now_ns());
		PG_TRY();
		{
			supervisor_startup(&cfg);
			started = true;
		}
		PG_CATCH();
		{
			ErrorData *edata;

			MemoryContextSwitchTo(TopMemoryContext);
			edata = CopyErrorData();
			FlushErrorState();
			if (edata->sqlerrcode != ERRCODE_OBJECT_IN_USE || attempt >= STARTUP_ATTEMPTS)
			{
				atomic_fetch_add(&shared->startup_failures, 1);
				report("supervisor_startup failed: %s%s%s", edata->message,
					   edata->detail ? " -- " : "", edata->detail ? edata->detail : "");
				_exit(3);
			}
			atomic_fetch_add(&shared->startup_retries, 1);
			report("supervisor_startup refused, retrying: %s%s%s", edata->message,
				   edata->detail ? " -- " : "", edata->detail ? edata->detail : "");
			FreeErrorData(edata);
		}
		PG_END_TRY();
		if (started)
			break;
		sup_wait(100);
		if (sup_stop_requested)
			_exit(0);
	}
	set_log_line_prefix("supervisor");
	run_check("after startup");
	if (write(ev_pipe[1], &c, 1) != 1)
		sup_stop_requested = 1;

	for (int i = 0; i < opt.backends; i++)
		spawn_one(i);
	next_kill = now_ns() + next_interval(opt.kill_rate);
	next_check = now_ns() + sec_to_ns(opt.check_interval);
	while (!sup_stop_requested)
	{
		int64_t now = now_ns();
		int64_t wait_ns;

		atomic_store(&shared->sup_heartbeat, now);
		reap_pass();
		for (int i = 0; i < opt.backends; i++)
			if (children[i].pid == 0)
				spawn_one(i);
		now = now_ns();
		if (now >= next_check)
		{
			/* Settle: no kills until every killed backend is reaped, then check. */
			while (killed_pending() && !sup_stop_requested)
			{
				sup_wait(20);
				reap_pass();
				atomic_store(&shared->sup_heartbeat, now_ns());
			}
			run_check("while running");
			next_check = now_ns() + sec_to_ns(opt.check_interval);
			next_kill = now_ns() + next_interval(opt.kill_rate);
			continue;
		}
		if (now >= next_kill)
		{
			int live[MAX_STRESS_BACKENDS], n = 0;

			for (int i = 0; i < opt.backends; i++)
				if (children[i].pid != 0 && !children[i].killed)
					live[n++] = i;
			if (n > 0)
			{
				int i = live[rng_below((uint32_t) n)];

				if (kill(children[i].pid, SIGKILL) == 0)
					children[i].killed = true;
			}
			next_kill = now + next_interval(opt.kill_rate);
		}
		wait_ns = next_kill - now_ns();
		if (wait_ns > 50000000)
			wait_ns = 50000000;
		if (wait_ns < 0)
			wait_ns = 0;
		sup_wait((int) (wait_ns / 1000000));
	}

	/* Clean stop: the backends leave at their next request boundary. */
	atomic_store(&shared->stop_backends, 1);
	for (;;)
	{
		bool any = false;

		reap_pass();
		for (int i = 0; i < opt.backends; i++)
			if (children[i].pid != 0)
				any = true;
		if (!any)
			break;
		atomic_store(&shared->sup_heartbeat, now_ns());
		sup_wait(50);
	}
	run_check("at shutdown");
	proc_exit(0);
}

/* ---------------------------------------------------------------------
 * Controller
 * ---------------------------------------------------------------------
 */

static volatile sig_atomic_t controller_interrupted;

static void
controller_sigint(int sig)
{
	(void) sig;
	controller_interrupted = 1;
}

/* The controller's tallies (process-local). */
static struct
{
	uint64_t sup_starts;
	uint64_t sup_kills;
	uint64_t sup_deaths; /* supervisors that died without being killed by us */
	uint64_t hangs;
	uint64_t leaks;
} ctl;

static pid_t sup_pid;      /* the running supervisor (also its process group), 0 if none */
static bool sup_reaped;    /* the controller waited for sup_pid */
static int sup_status;     /* its wait status, once reaped */
static bool sup_ready;     /* it wrote 'R' */
static int64_t sup_started_at;

/* Collect every exited child (the supervisor, orphaned backends).  Never blocks. */
static void
reap_children(void)
{
	pid_t r;
	int status;

	while ((r = waitpid(-1, &status, WNOHANG)) > 0)
		if (r == sup_pid)
		{
			sup_reaped = true;
			sup_status = status;
		}
}

/*
 * Fork a new supervisor in its own process group.  The backend positions
 * and the handle directory are cleared first: the previous cluster's
 * processes are all gone by now.
 */
static void
start_supervisor(void)
{
	pid_t pid;

	for (int i = 0; i < MAX_STRESS_BACKENDS; i++)
		atomic_store(&shared->be[i].pid, 0);
	for (int i = 0; i < DIRECTORY_ENTRIES; i++)
		atomic_store(&shared->directory[i], 0);
	atomic_store(&shared->stop_backends, 0);
	if (pipe2(ev_pipe, O_CLOEXEC) != 0 || pipe2(ctl_pipe, O_CLOEXEC) != 0)
	{
		perror("dsmkit-stress: pipe");
		exit(2);
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0)
	{
		perror("dsmkit-stress: fork");
		exit(2);
	}
	if (pid == 0)
		supervisor_main();
	setpgid(pid, pid);
	close_fd(&ev_pipe[1]);
	close_fd(&ctl_pipe[0]);
	fcntl(ev_pipe[0], F_SETFL, O_NONBLOCK);
	sup_pid = pid;
	sup_reaped = false;
	sup_ready = false;
	sup_started_at = now_ns();
	ctl.sup_starts++;
}

/*
 * Wait until the supervisor and every process of its group are gone,
 * SIGKILLing the group again every round (an exit in progress is not
 * disturbed by that).  Gives up after the hang timeout and counts a hang.
 */
static void
wait_group_gone(bool resend_kill)
{
	int64_t deadline = now_ns() + sec_to_ns(opt.hang_timeout);

	for (;;)
	{
		reap_children();
		if (sup_reaped && kill(-sup_pid, 0) < 0 && errno == ESRCH)
			break;
		if (now_ns() > deadline)
		{
			ctl.hangs++;
			report("process group %d did not go away in %.0f s", (int) sup_pid, opt.hang_timeout);
			kill(-sup_pid, SIGKILL);
			deadline = now_ns() + sec_to_ns(opt.hang_timeout);
			resend_kill = true;
		}
		if (resend_kill)
			kill(-sup_pid, SIGKILL);
		poll(NULL, 0, 2);
	}
	close_fd(&ev_pipe[0]);
	close_fd(&ctl_pipe[1]);
	sup_pid = 0;
}

/* Print what a hung process is doing, from /proc (best effort). */
static void
describe_process(pid_t pid, const char *role)
{
	char path[64], wchan[128] = "?", syscall_line[256] = "?";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/wchan", (int) pid);
	if ((f = fopen(path, "r")) != NULL)
	{
		if (fgets(wchan, sizeof(wchan), f) == NULL)
			strcpy(wchan, "?");
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/syscall", (int) pid);
	if ((f = fopen(path, "r")) != NULL)
	{
		if (fgets(syscall_line, sizeof(syscall_line), f) == NULL)
			strcpy(syscall_line, "?");
		syscall_line[strcspn(syscall_line, "\n")] = '\0';
		fclose(f);
	}
	report("hang: %s %d made no progress for %.0f s (wchan %s, syscall %s)", role, (int) pid,
		   opt.hang_timeout, wchan, syscall_line);
}

/*
 * Look for hangs: a supervisor that is not ready within the hang timeout
 * or whose heartbeat is older than that, or a backend whose heartbeat is.
 * On a hang the whole group is killed and true is returned.
 */
static bool
detect_hang(void)
{
	int64_t now = now_ns();
	int64_t limit = sec_to_ns(opt.hang_timeout);
	pid_t who = 0;
	const char *role = NULL;

	if (!sup_ready)
	{
		/* A start-up that is refused and retried stores a heartbeat before each attempt. */
		int64_t since = atomic_load(&shared->sup_heartbeat);

		if (since < sup_started_at)
			since = sup_started_at;
		if (now - since > limit)
			who = sup_pid, role = "starting supervisor";
	}
	else if (now - atomic_load(&shared->sup_heartbeat) > limit)
		who = sup_pid, role = "supervisor";
	else
	{
		for (int i = 0; i < opt.backends; i++)
		{
			pid_t pid = atomic_load(&shared->be[i].pid);

			if (pid != 0 && now - atomic_load(&shared->be[i].heartbeat) > limit)
			{
				who = pid, role = "backend";
				break;
			}
		}
	}
	if (who == 0)
		return false;
	ctl.hangs++;
	describe_process(who, role);
	kill(-sup_pid, SIGKILL);
	wait_group_gone(true);
	return true;
}

/* Read the supervisor's event pipe: 'R' means ready; EOF means it is gone. */
static bool
read_events(void)
{
	char buf[16];
	ssize_t r;

	while ((r = read(ev_pipe[0], buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] == 'R')
				sup_ready = true;
	return r == 0;
}

/* Count and remove what the cluster of opt.dir left in the system. */
static void
verify_nothing_left(uint32_t cluster)
{
	char prefix[64];
	DIR *d;
	struct dirent *de;
	FILE *f;
	uint32_t tag = ((cluster >> 16) ^ (cluster & 0xffff)) & 0xffff;

	snprintf(prefix, sizeof(prefix), "dsmkit.%08x.", cluster);
	if ((d = opendir("/dev/shm")) != NULL)
	{
		while ((de = readdir(d)) != NULL)
			if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			{
				char name[300];

				ctl.leaks++;
				report("leak: POSIX segment /dev/shm/%s", de->d_name);
				snprintf(name, sizeof(name), "/%s", de->d_name);
				shm_unlink(name);
			}
		closedir(d);
	}
	if ((f = fopen("/proc/sysvipc/shm", "r")) != NULL)
	{
		char line[512];

		while (fgets(line, sizeof(line), f) != NULL)
		{
			long long key;
			int shmid;

			if (sscanf(line, "%lld %d", &key, &shmid) != 2)
				continue;
			if ((uint32_t) key == 0 || (((uint32_t) key >> 16) & 0xffff) != tag)
				continue;
			ctl.leaks++;
			report("leak: System V segment key 0x%08x (id %d)", (unsigned) key, shmid);
			shmctl(shmid, IPC_RMID, NULL);
		}
		fclose(f);
	}
	if ((d = opendir(opt.dir)) != NULL)
	{
		while ((de = readdir(d)) != NULL)
		{
			char path[PATH_MAX];

			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			ctl.leaks++;
			report("leak: file %s/%s", opt.dir, de->d_name);
			snprintf(path, sizeof(path), "%s/%s", opt.dir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
}

/*
 * Ask the supervisor to stop (a byte on its control pipe) and wait for it
 * and its process group to go away.  Returns false if it made no progress
 * within twice the hang timeout: then a hang is counted and the group is
 * killed.  An exit status other than 0 counts as a supervisor death.
 */
static bool
stop_supervisor(void)
{
	char c = 'S';
	int64_t deadline = now_ns() + sec_to_ns(opt.hang_timeout * 2);
	bool stopped;

	if (write(ctl_pipe[1], &c, 1) != 1)
		report("could not ask supervisor %d to stop", (int) sup_pid);
	while (!sup_reaped && now_ns() < deadline)
	{
		reap_children();
		if (!sup_reaped)
			poll(NULL, 0, 5);
	}
	stopped = sup_reaped;
	if (!stopped)
	{
		ctl.hangs++;
		describe_process(sup_pid, "stopping supervisor");
	}
	else if (!WIFEXITED(sup_status) || WEXITSTATUS(sup_status) != 0)
	{
		ctl.sup_deaths++;
		report("supervisor %d ended with status 0x%x at the clean stop", (int) sup_pid, sup_status);
	}
	wait_group_gone(!stopped);
	return stopped;
}

static void
usage(FILE *out)
{
	fprintf(out,
			"usage: dsmkit-stress --dir DIR [--backends N] [--seconds T] [--kill-rate K]\n"
			"                     [--supervisor-kill-rate S] [--impl posix|sysv|mmap] [--seed X]\n"
			"                     [--log FILE] [--check-interval SECONDS] [--hang-timeout SECONDS]\n"
			"                     [--min-backend-kills M] [--min-supervisor-kills M]\n");
}

static double
parse_double(const char *s, const char *what)
{
	char *end;
	double v = strtod(s, &end);

	if (*s == '\0' || *end != '\0' || !(v >= 0))
	{
		fprintf(stderr, "dsmkit-stress: invalid %s \"%s\"\n", what, s);
		exit(2);
	}
	return v;
}

static void
parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dir", required_argument, NULL, 'd'},
		{"backends", required_argument, NULL, 'n'},
		{"seconds", required_argument, NULL, 't'},
		{"kill-rate", required_argument, NULL, 'k'},
		{"supervisor-kill-rate", required_argument, NULL, 's'},
		{"impl", required_argument, NULL, 'i'},
		{"seed", required_argument, NULL, 'x'},
		{"log", required_argument, NULL, 'l'},
		{"check-interval", required_argument, NULL, 'c'},
		{"hang-timeout", required_argument, NULL, 'h'},
		{"min-backend-kills", required_argument, NULL, 'K'},
		{"min-supervisor-kills", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, '?'},
		{NULL, 0, NULL, 0}};
	int c;
	bool have_seed = false;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd': opt.dir = optarg; break;
			case 'n': opt.backends = (int) parse_double(optarg, "backend count"); break;
			case 't': opt.seconds = parse_double(optarg, "duration"); break;
			case 'k': opt.kill_rate = parse_double(optarg, "kill rate"); break;
			case 's': opt.sup_kill_rate = parse_double(optarg, "supervisor kill rate"); break;
			case 'i':
				if (strcmp(optarg, "posix") == 0)
					opt.impl = DSM_IMPL_POSIX;
				else if (strcmp(optarg, "sysv") == 0)
					opt.impl = DSM_IMPL_SYSV;
				else if (strcmp(optarg, "mmap") == 0)
					opt.impl = DSM_IMPL_MMAP;
				else
				{
					fprintf(stderr, "dsmkit-stress: unknown implementation \"%s\"\n", optarg);
					exit(2);
				}
				break;
			case 'x':
				opt.seed = strtoull(optarg, NULL, 0);
				have_seed = true;
				break;
			case 'l': opt.log_path = optarg; break;
			case 'c': opt.check_interval = parse_double(optarg, "check interval"); break;
			case 'h': opt.hang_timeout = parse_double(optarg, "hang timeout"); break;
			case 'K': opt.min_kills = (uint64_t) parse_double(optarg, "minimum"); break;
			case 'S': opt.min_sup_kills = (uint64_t) parse_double(optarg, "minimum"); break;
			default:
				usage(c == '?' && optopt == 0 ? stdout : stderr);
				exit(c == '?' && optopt == 0 ? 0 : 2);
		}
	}
	if (optind != argc || opt.dir == NULL)
	{
		usage(stderr);
		exit(2);
	}
	if (opt.backends < 1 || opt.backends > MAX_STRESS_BACKENDS)
	{
		fprintf(stderr, "dsmkit-stress: --backends must be between 1 and %d\n", MAX_STRESS_BACKENDS);
		exit(2);
	}
	if (opt.hang_timeout < 1)
		opt.hang_timeout = 1;
	if (!have_seed)
		opt.seed = (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 16);
}

int
main(int argc, char **argv)
{
	char default_log[PATH_MAX];
	uint32_t cluster;
	int64_t start, end, next_sup_kill;
	uint64_t failures = 0;
	bool ok;
	struct stat st;

	parse_options(argc, argv);
	if (stat(opt.dir, &st) != 0 || !S_ISDIR(st.st_mode))
	{
		fprintf(stderr, "dsmkit-stress: \"%s\" is not a directory\n", opt.dir);
		return 2;
	}
	cluster = dsm_impl_cluster_id_of(opt.dir);
	if (opt.log_path == NULL)
	{
		snprintf(default_log, sizeof(default_log), "/tmp/dsmkit-stress.%d.log", (int) getpid());
		opt.log_path = default_log;
	}
	log_fd = open(opt.log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0)
	{
		fprintf(stderr, "dsmkit-stress: could not open log file \"%s\": %s\n", opt.log_path,
				strerror(errno));
		return 2;
	}
	shared = mmap(NULL, sizeof(StressShared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
	{
		perror("dsmkit-stress: mmap");
		return 2;
	}
	memset(shared, 0, sizeof(*shared));
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
		perror("dsmkit-stress: PR_SET_CHILD_SUBREAPER (orphaned backends go to init)");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, controller_sigint);
	signal(SIGTERM, controller_sigint);
	rng_seed(opt.seed);

	say("dsmkit-stress: impl %s, %d backends, %.0f s, kill rate %.2f/s, supervisor kill rate %.2f/s, "
		"seed %" PRIu64 ", cluster %08x, log %s\n",
		dsm_impl_name(opt.impl), opt.backends, opt.seconds, opt.kill_rate, opt.sup_kill_rate, opt.seed,
		cluster, opt.log_path);

	start = now_ns();
	end = start + sec_to_ns(opt.seconds);
	start_supervisor();
	next_sup_kill = now_ns() + next_interval(opt.sup_kill_rate);
	while (now_ns() < end && !controller_interrupted)
	{
		struct pollfd pfd = {ev_pipe[0], POLLIN, 0};
		bool eof;

		poll(&pfd, 1, 20);
		eof = read_events();
		reap_children();
		if (eof || sup_reaped)
		{
			/* The supervisor died without being killed: a failure. */
			ctl.sup_deaths++;
			if (sup_reaped)
				report("supervisor %d died unexpectedly (status 0x%x)", (int) sup_pid, sup_status);
			else
				report("supervisor %d closed its pipe unexpectedly", (int) sup_pid);
			kill(-sup_pid, SIGKILL);
			wait_group_gone(true);
			start_supervisor();
			continue;
		}
		if (detect_hang())
		{
			start_supervisor();
			continue;
		}
		if (now_ns() >= next_sup_kill)
		{
			kill(-sup_pid, SIGKILL);
			wait_group_gone(true);
			ctl.sup_kills++;
			start_supervisor();
			next_sup_kill = now_ns() + next_interval(opt.sup_kill_rate);
		}
	}

	/*
	 * Clean stop.  If it hangs, the hang is counted, the group killed, and
	 * one more supervisor is started and stopped, so that its startup
	 * cleans up what the killed one left and the leak check below still
	 * means something.
	 */
	if (!stop_supervisor())
	{
		start_supervisor();
		if (!stop_supervisor())
			report("the clean-up supervisor did not stop either");
	}
	verify_nothing_left(cluster);

	{
		double elapsed = (double) (now_ns() - start) / 1e9;
		uint64_t kills = atomic_load(&shared->backend_kills);
		uint64_t reports = atomic_load(&shared->reclaim_reports);
		uint64_t problems = atomic_load(&shared->check_problems) + atomic_load(&shared->check_errors);
		char reclaims[128];

		if (reports == 0 && kills > 0)
			snprintf(reclaims, sizeof(reclaims), "n/a");
		else
			snprintf(reclaims, sizeof(reclaims),
					 "%" PRIu64 " backends, %" PRIu64 " references (of %" PRIu64 " dead backends reaped)",
					 atomic_load(&shared->reclaimed_backends), atomic_load(&shared->reclaimed_refs),
					 reports);
		failures = atomic_load(&shared->unexpected_errors) + atomic_load(&shared->data_errors) +
				   atomic_load(&shared->backend_failures) + atomic_load(&shared->startup_failures) +
				   atomic_load(&shared->spawn_failures) + ctl.sup_deaths;
		ok = ctl.leaks == 0 && ctl.hangs == 0 && problems == 0 && failures == 0 &&
			 (opt.kill_rate <= 0 || kills >= opt.min_kills) &&
			 (opt.sup_kill_rate <= 0 || ctl.sup_kills >= opt.min_sup_kills) &&
			 !controller_interrupted;

		say("dsmkit-stress summary (%s, %d backends, %.1f s):\n", dsm_impl_name(opt.impl), opt.backends,
			elapsed);
		say("  operations: %" PRIu64 " (%" PRIu64 " requests, %" PRIu64 " aborted; creates %" PRIu64
			" + %" PRIu64 " full, attaches %" PRIu64 " + %" PRIu64 " gone, pins %" PRIu64 ", unpins %" PRIu64
			", resizes %" PRIu64 ")\n",
			atomic_load(&shared->ops), atomic_load(&shared->requests), atomic_load(&shared->aborts),
			atomic_load(&shared->creates), atomic_load(&shared->creates_full),
			atomic_load(&shared->attaches), atomic_load(&shared->attaches_gone),
			atomic_load(&shared->pins), atomic_load(&shared->unpins), atomic_load(&shared->resizes));
		say("  backend kills: %" PRIu64 " (normal exits %" PRIu64 ")\n", kills,
			atomic_load(&shared->backend_exits));
		say("  reclaims: %s\n", reclaims);
		say("  supervisor kills: %" PRIu64 " (supervisors started %" PRIu64
			", start-ups refused while the old cluster's processes ran and retried %" PRIu64 ")\n",
			ctl.sup_kills, ctl.sup_starts, atomic_load(&shared->startup_retries));
		say("  consistency checks: %" PRIu64 ", problems: %" PRIu64 "\n", atomic_load(&shared->checks),
			problems);
		say("  leaks found: %" PRIu64 "\n", ctl.leaks);
		say("  hangs: %" PRIu64 "\n", ctl.hangs);
		say("  failures: %" PRIu64 " (unexpected errors %" PRIu64 ", data errors %" PRIu64
			", backend failures %" PRIu64 ", startup failures %" PRIu64 ", spawn failures %" PRIu64
			", supervisor deaths %" PRIu64 "); expected errors %" PRIu64 ", warnings logged %" PRIu64 "\n",
			failures, atomic_load(&shared->unexpected_errors), atomic_load(&shared->data_errors),
			atomic_load(&shared->backend_failures), atomic_load(&shared->startup_failures),
			atomic_load(&shared->spawn_failures), ctl.sup_deaths, atomic_load(&shared->expected_errors),
			atomic_load(&shared->warnings));
		if (opt.kill_rate > 0 && kills < opt.min_kills)
			say("  too few backend kills: %" PRIu64 " < %" PRIu64 "\n", kills, opt.min_kills);
		if (opt.sup_kill_rate > 0 && ctl.sup_kills < opt.min_sup_kills)
			say("  too few supervisor kills: %" PRIu64 " < %" PRIu64 "\n", ctl.sup_kills,
				opt.min_sup_kills);
		say("  result: %s\n", ok ? "PASS" : "FAIL");
	}
	close_fd(&log_fd);
	if (ok && opt.log_path == default_log)
		unlink(default_log);
	else if (!ok)
		say("  the log of dsmkit's messages is %s\n", opt.log_path);
	return ok ? 0 : 1;
}
