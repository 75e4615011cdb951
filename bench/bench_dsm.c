/*
 * bench_dsm.c: dynamic shared memory workloads against the system-call floor.
 *
 * Usage: bench_dsm [RESULTS.tsv]
 *
 * Workloads (see bench/README.md for what each measures and its floor):
 *   W1  dsm_create + dsm_detach (last mapping: destroys), 64 KiB and 1 MiB,
 *       for each implementation;
 *   W2  dsm_attach + dsm_detach of a pinned segment with 0, 100, 1000 and
 *       the maximum number of other live segments, for each implementation;
 *   W3  dsm_create + touch every page + dsm_detach, 16 MiB and 256 MiB (POSIX);
 *   W4  a request scope (ResourceOwnerCreate, CurrentResourceOwner,
 *       dsm_attach, ResourceOwnerReleaseAll, ResourceOwnerDelete) against
 *       W2's raw attach + detach, and the empty scope (floor 0) (POSIX);
 *   W7  2, 4 and 8 backends attaching and detaching one segment at once for
 *       a fixed time, total operations per second, against the same number
 *       of backends doing only the raw calls (POSIX).
 *
 * Process structure.  The program's first process never calls dsmkit: for
 * each implementation it forks a child that becomes the supervisor of a
 * fresh cluster directory (supervisor_startup() may be called once per
 * process), spawns one backend that runs W1-W4 and reports success through
 * a pipe, reaps it, runs W7 (POSIX only) with more backends, and leaves
 * through proc_exit(0), which removes every segment of the cluster.  The
 * first process then sweeps anything a failed child left in the floor
 * namespace and removes the temporary directory.
 *
 * Floors run in the same backend, interleaved repetition by repetition
 * with the dsmkit side so that drift hits both equally, on objects named
 * "/dsmkit-bench-floor.<pid>.<n>" (<pid> is the first process's), which
 * never collide with a cluster's "/dsmkit.<cluster>.<handle>" names.
 *
 * Environment: BENCH_QUICK=1 for a short smoke run (fewer, shorter
 * repetitions); BENCH_ONLY="W1,W7" to run some workloads only;
 * BENCH_IMPL="posix" (or sysv, mmap, comma-separated) to run some
 * implementations only.  Both filters are meant for profiling.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dsmkit/dsm.h>
#include <dsmkit/dsm_impl.h>
#include <dsmkit/elog.h>
#include <dsmkit/ipc.h>
#include <dsmkit/resowner.h>
#include <dsmkit/supervisor.h>

#include "benchutil.h"

/* Sizes used by the workloads. */
#define KiB ((size_t) 1024)
#define MiB (KiB * 1024)
#define W2_SEGMENT_SIZE (64 * KiB)   /* the segment W2, W4 and W7 attach */
#define LIVE_SEGMENT_SIZE (4 * KiB)  /* each "other live segment" of W2 */
#define MAX_SEGMENTS 5200            /* slots per cluster: W2's maximum */
#define W7_MAX_BACKENDS 8

/*
 * Process-local settings, fixed by main() before the first fork and
 * inherited by every process of the run.
 */
typedef struct BenchSettings
{
	const char *results;     /* TSV path, or NULL */
	bool quick;              /* BENCH_QUICK: short smoke run */
	int reps;                /* repetitions per workload (median taken) */
	uint64_t rep_target_ns;  /* aimed length of one timed repetition */
	int w7_reps;             /* W7 repetitions (each runs w7_duration_ns twice) */
	uint64_t w7_duration_ns; /* length of one W7 run */
	const char *only;        /* BENCH_ONLY filter, or NULL */
	pid_t main_pid;          /* the first process: names the floor namespace */
	char basedir[PATH_MAX];  /* temporary directory holding one cluster directory per implementation */
} BenchSettings;

static BenchSettings settings;

/*
 * Process-local state of the current cluster: the implementation, its
 * directory, and the pipe through which the workload backend reports.
 */
static int cur_impl;
static int cur_max_segments;
static char cur_dir[PATH_MAX];
static long page_size;

/* What the workload backend sends to its supervisor when it is done. */
typedef struct BackendReport
{
	int ok;              /* 1 when every workload ran */
	dsm_handle w7_handle; /* pinned segment for W7, or DSM_HANDLE_INVALID */
} BackendReport;

static int report_fd = -1;

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

/* Is workload name (e.g. "W2") selected by BENCH_ONLY? */
static bool
workload_selected(const char *w)
{
	const char *p;
	size_t len = strlen(w);

	if (settings.only == NULL || settings.only[0] == '\0')
		return true;
	for (p = settings.only; (p = strstr(p, w)) != NULL; p += len)
	{
		/* Match whole items only: "W1" must not select "W10". */
		bool start_ok = (p == settings.only || p[-1] == ',' || p[-1] == ' ');
		bool end_ok = (p[len] == '\0' || p[len] == ',' || p[len] == ' ');

		if (start_ok && end_ok)
			return true;
	}
	return false;
}

/* Is implementation impl selected by BENCH_IMPL? */
static bool
impl_selected(int impl)
{
	const char *want = getenv("BENCH_IMPL");
	const char *name = dsm_impl_name(impl);

	if (want == NULL || want[0] == '\0')
		return true;
	return name != NULL && strstr(want, name) != NULL;
}

/*
 * A short human label of a size ("64KiB", "16MiB").  Returns a pointer to
 * a static buffer that the next call overwrites.
 */
static const char *
size_label(size_t size)
{
	static char buf[32];

	if (size >= MiB && size % MiB == 0)
		snprintf(buf, sizeof buf, "%zuMiB", size / MiB);
	else
		snprintf(buf, sizeof buf, "%zuKiB", size / KiB);
	return buf;
}

/*
 * write() or read() exactly len bytes on a pipe, retrying on EINTR and
 * short transfers.  Returns false at EOF or on error.
 */
static bool
write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0)
	{
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t) n;
	}
	return true;
}

static bool
read_all(int fd, void *buf, size_t len)
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

/* ------------------------------------------------------------------------
 * The floor namespace: raw objects that never belong to a cluster
 * ------------------------------------------------------------------------ */

/*
 * Objects in the floor namespace that live across operations (W2's floor
 * segment, W7's floor segment) are recorded here so that an exit hook can
 * remove them if the process leaves through an ERROR.  Process-local.
 */
#define MAX_FLOOR_KEEP 4
typedef struct FloorObject
{
	int impl;            /* DSM_IMPL_* the object was made with, 0 = unused */
	char name[PATH_MAX]; /* shm_open name or file path */
	int shmid;           /* System V id */
	key_t key;           /* System V key */
} FloorObject;

static FloorObject floor_keep[MAX_FLOOR_KEEP];
static bool floor_hook_registered;
static unsigned floor_counter;

/*
 * Build the name of floor object n for the current implementation: a
 * shm_open name for POSIX, a file path in the cluster directory for mmap.
 */
static void
floor_name(char *buf, size_t buflen, const char *tag, unsigned n)
{
	int len;

	if (cur_impl == DSM_IMPL_MMAP)
		len = snprintf(buf, buflen, "%s/dsmkit-bench-floor.%d.%s%u", cur_dir, (int) settings.main_pid, tag, n);
	else
		len = snprintf(buf, buflen, "/dsmkit-bench-floor.%d.%s%u", (int) settings.main_pid, tag, n);
	if (len < 0 || (size_t) len >= buflen)
		elog(ERROR, "floor object name too long");
}

/*
 * A System V key for floor object n: 0x5e<pid byte><n 16 bits>.  Keys the
 * system already uses make the caller move on to the next n (EEXIST).
 */
static key_t
floor_key(unsigned n)
{
	return (key_t) ((0x5eu << 24) | (((unsigned) settings.main_pid & 0xffu) << 16) | (n & 0xffffu));
}

/*
 * Remove one floor object quietly (cleanup path: never raises).
 */
static void
floor_remove(const FloorObject *obj)
{
	if (obj->impl == DSM_IMPL_POSIX)
		(void) shm_unlink(obj->name);
	else if (obj->impl == DSM_IMPL_MMAP)
		(void) unlink(obj->name);
	else if (obj->impl == DSM_IMPL_SYSV)
		(void) shmctl(obj->shmid, IPC_RMID, NULL);
}

/* Exit hook: remove the floor objects this process still keeps. */
static void
floor_cleanup_hook(int code, Datum arg)
{
	for (int i = 0; i < MAX_FLOOR_KEEP; i++)
	{
		if (floor_keep[i].impl != 0)
			floor_remove(&floor_keep[i]);
		floor_keep[i].impl = 0;
	}
}

/* Raise an ERROR for a failed raw call on floor object name. */
#define FLOOR_FAIL(what, name) \
	ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR), \
			errmsg("could not %s floor object \"%s\": %m", (what), (name)))

/* ------------------------------------------------------------------------
 * Floor operations (raw system calls)
 * ------------------------------------------------------------------------ */

/*
 * State shared by the floor operations of one workload.  Process-local.
 *  - size: segment size for create workloads;
 *  - touch: write one byte per page between mapping and unmapping (W3);
 *  - keep: the long-lived floor object attach workloads map.
 */
typedef struct FloorState
{
	size_t size;
	bool touch;
	FloorObject *keep;
} FloorState;

static void
touch_pages(char *p, size_t size)
{
	for (size_t off = 0; off < size; off += (size_t) page_size)
		((volatile char *) p)[off] = 1;
}

/*
 * Create, reserve, map, (touch,) unmap, close and remove one object, the
 * way the current implementation does it: the floor of W1 and W3.
 */
static void
floor_create_destroy(void *arg)
{
	FloorState *st = arg;
	char name[PATH_MAX];
	void *p;

	if (cur_impl == DSM_IMPL_SYSV)
	{
		int id;

		for (;;)
		{
			id = shmget(floor_key(floor_counter++), st->size, IPC_CREAT | IPC_EXCL | 0600);
			if (id >= 0 || errno != EEXIST)
				break;
		}
		if (id < 0)
			FLOOR_FAIL("create", "System V segment");
		p = shmat(id, NULL, 0);
		if (p == (void *) -1)
			FLOOR_FAIL("attach", "System V segment");
		if (st->touch)
			touch_pages(p, st->size);
		if (shmdt(p) != 0 || shmctl(id, IPC_RMID, NULL) != 0)
			FLOOR_FAIL("remove", "System V segment");
		return;
	}

	floor_name(name, sizeof name, "c", floor_counter++);
	{
		int fd;

		if (cur_impl == DSM_IMPL_POSIX)
			fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
		else
			fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			FLOOR_FAIL("create", name);
		if (ftruncate(fd, (off_t) st->size) != 0)
			FLOOR_FAIL("truncate", name);
		errno = posix_fallocate(fd, 0, (off_t) st->size);
		if (errno != 0)
			FLOOR_FAIL("allocate", name);
		p = mmap(NULL, st->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			FLOOR_FAIL("map", name);
		if (st->touch)
			touch_pages(p, st->size);
		if (munmap(p, st->size) != 0 || close(fd) != 0)
			FLOOR_FAIL("unmap", name);
		if ((cur_impl == DSM_IMPL_POSIX ? shm_unlink(name) : unlink(name)) != 0)
			FLOOR_FAIL("remove", name);
	}
}

/*
 * Create the long-lived floor object of size bytes that the attach floors
 * map, record it for the exit hook and return it.
 */
static FloorObject *
floor_keep_create(size_t size, const char *tag)
{
	FloorObject *obj = NULL;

	for (int i = 0; i < MAX_FLOOR_KEEP; i++)
		if (floor_keep[i].impl == 0)
		{
			obj = &floor_keep[i];
			break;
		}
	if (obj == NULL)
		elog(ERROR, "too many long-lived floor objects");
	if (!floor_hook_registered)
	{
		on_proc_exit(floor_cleanup_hook, (Datum) 0);
		floor_hook_registered = true;
	}

	if (cur_impl == DSM_IMPL_SYSV)
	{
		int id;

		for (;;)
		{
			id = shmget(floor_key(floor_counter++), size, IPC_CREAT | IPC_EXCL | 0600);
			if (id >= 0 || errno != EEXIST)
				break;
		}
		if (id < 0)
			FLOOR_FAIL("create", "System V segment");
		obj->shmid = id;
		obj->key = floor_key(floor_counter - 1);
		snprintf(obj->name, sizeof obj->name, "key 0x%08x", (unsigned) obj->key);
		obj->impl = DSM_IMPL_SYSV;
		return obj;
	}

	floor_name(obj->name, sizeof obj->name, tag, 0);
	{
		int fd;

		if (cur_impl == DSM_IMPL_POSIX)
			fd = shm_open(obj->name, O_RDWR | O_CREAT | O_EXCL, 0600);
		else
			fd = open(obj->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			FLOOR_FAIL("create", obj->name);
		obj->impl = cur_impl;
		if (ftruncate(fd, (off_t) size) != 0)
			FLOOR_FAIL("truncate", obj->name);
		errno = posix_fallocate(fd, 0, (off_t) size);
		if (errno != 0)
			FLOOR_FAIL("allocate", obj->name);
		close(fd);
	}
	return obj;
}

/* Remove a long-lived floor object and forget it. */
static void
floor_keep_drop(FloorObject *obj)
{
	floor_remove(obj);
	obj->impl = 0;
}

/*
 * Map and unmap the long-lived floor object: open + fstat + mmap + munmap
 * + close (System V: shmget + IPC_STAT + shmat + shmdt), or with stat
 * false the same without the stat call, mapping the known
 * W2_SEGMENT_SIZE.  Inlined into the two floors below, so each is
 * straight-line code.
 */
static inline __attribute__((always_inline)) void
floor_map_unmap(const FloorObject *obj, bool stat)
{
	struct stat sb;
	size_t size = W2_SEGMENT_SIZE;
	void *p;
	int fd;

	if (obj->impl == DSM_IMPL_SYSV)
	{
		struct shmid_ds ds;
		/* Look the segment up by key, as dsm_attach() must (a handle is all it has). */
		int id = shmget(obj->key, 0, 0);

		if (id < 0)
			FLOOR_FAIL("look up", obj->name);
		if (stat && shmctl(id, IPC_STAT, &ds) != 0)
			FLOOR_FAIL("stat", obj->name);
		p = shmat(id, NULL, 0);
		if (p == (void *) -1)
			FLOOR_FAIL("attach", obj->name);
		if (shmdt(p) != 0)
			FLOOR_FAIL("detach", obj->name);
		return;
	}

	if (obj->impl == DSM_IMPL_POSIX)
		fd = shm_open(obj->name, O_RDWR, 0600);
	else
		fd = open(obj->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		FLOOR_FAIL("open", obj->name);
	if (stat)
	{
		if (fstat(fd, &sb) != 0)
			FLOOR_FAIL("stat", obj->name);
		size = (size_t) sb.st_size;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		FLOOR_FAIL("map", obj->name);
	if (munmap(p, size) != 0 || close(fd) != 0)
		FLOOR_FAIL("unmap", obj->name);
}

/* The floor of W2, W4 and W7: attach+detach with the stat call, as the issue defines it. */
static void
floor_attach_detach(void *arg)
{
	floor_map_unmap(((FloorState *) arg)->keep, true);
}

/*
 * The same without the stat call: the calls dsm_attach() + dsm_detach()
 * make since the control segment records the size.  Reported beside W2
 * so that the ratio to the calls dsmkit cannot avoid is visible too.
 */
static void
floor_attach_detach_nostat(void *arg)
{
	floor_map_unmap(((FloorState *) arg)->keep, false);
}

/* ------------------------------------------------------------------------
 * dsmkit operations
 * ------------------------------------------------------------------------ */

/* State of the dsmkit side of one workload.  Process-local. */
typedef struct DsmState
{
	size_t size;            /* create workloads: segment size */
	bool touch;             /* W3: touch every page */
	dsm_handle handle;      /* attach workloads: the pinned segment */
	dsm_handle last_created; /* create workloads: handle of the last segment made */
} DsmState;

/* W1/W3: create (and touch) then detach the only mapping, destroying it. */
static void
dsm_create_destroy(void *arg)
{
	DsmState *st = arg;
	dsm_segment *seg = dsm_create(st->size, 0);

	if (st->touch)
		touch_pages(dsm_segment_address(seg), st->size);
	st->last_created = dsm_segment_handle(seg);
	dsm_detach(seg);
}

/* W2: attach and detach the pinned segment. */
static void
dsm_attach_detach(void *arg)
{
	DsmState *st = arg;
	dsm_segment *seg = dsm_attach(st->handle);

	if (seg == NULL)
		elog(ERROR, "segment %08x vanished", st->handle);
	dsm_detach(seg);
}

/* W4: a request scope that attaches the pinned segment and lets its owner release it. */
static void
dsm_request_scope(void *arg)
{
	DsmState *st = arg;
	ResourceOwner owner = ResourceOwnerCreate(NULL, "request");
	ResourceOwner saved = CurrentResourceOwner;

	CurrentResourceOwner = owner;
	if (dsm_attach(st->handle) == NULL)
		elog(ERROR, "segment %08x vanished", st->handle);
	CurrentResourceOwner = saved;
	ResourceOwnerReleaseAll(owner, false);
	ResourceOwnerDelete(owner);
}

/*
 * Does the operating-system object of handle still exist?  Used to check
 * that a W1 dsm_detach() really destroyed the segment (a benchmark that
 * skips the work would look fast).
 */
static bool
segment_exists(dsm_handle h)
{
	char name[PATH_MAX];
	char path[PATH_MAX + 16];

	dsm_impl_segment_name(h, name, sizeof name);
	if (cur_impl == DSM_IMPL_POSIX)
	{
		snprintf(path, sizeof path, "/dev/shm%s", name);
		return access(path, F_OK) == 0;
	}
	if (cur_impl == DSM_IMPL_MMAP)
		return access(name, F_OK) == 0;
	/* System V: "key 0x...". */
	{
		const char *k = strstr(name, "0x");

		return k != NULL && shmget((key_t) strtoul(k, NULL, 16), 0, 0) >= 0;
	}
}

/* ------------------------------------------------------------------------
 * Timing
 * ------------------------------------------------------------------------ */

typedef void (*bench_op)(void *arg);

/*
 * The CPU time this process has used, in nanoseconds (BENCH_CLOCK=cpu):
 * unlike the wall clock it does not count the time other processes of a
 * busy machine run on our CPU, and it still counts the kernel's work in
 * our system calls.
 */
static uint64_t
bench_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* The clock W1-W4 are timed with: bench_now_ns (wall, the default) or bench_cpu_ns. */
static uint64_t (*clock_ns)(void) = bench_now_ns;

/* Run op n times; return the elapsed nanoseconds. */
static uint64_t
time_batch(bench_op op, void *arg, long n)
{
	uint64_t t0 = clock_ns();

	for (long i = 0; i < n; i++)
		op(arg);
	return clock_ns() - t0;
}

/*
 * How many operations make one repetition last about rep_target_ns.  Runs
 * the operation a few times (this also warms caches and the kernel's
 * lookup structures), at least once.
 */
static long
calibrate(bench_op op, void *arg)
{
	long n = 1;

	for (;;)
	{
		uint64_t t = time_batch(op, arg, n);

		if (t >= settings.rep_target_ns / 8 || n >= (1L << 28))
		{
			double per_op = (double) t / (double) n;
			double want = (double) settings.rep_target_ns / (per_op > 1 ? per_op : 1);

			return want < 1 ? 1 : (want > (double) (1L << 30) ? (1L << 30) : (long) want);
		}
		n *= 4;
	}
}

/*
 * Time the dsmkit operation against its floor: reps (<= 64) repetitions
 * of each, interleaved (the order alternates), medians reported under
 * workload.
 */
static void
compare_reps(const char *workload, int reps, bench_op op, void *arg, bench_op floor_op, void *floor_arg)
{
	double ns[64], fl[64];
	long n = calibrate(op, arg);
	long nf = calibrate(floor_op, floor_arg);

	for (int r = 0; r < reps; r++)
	{
		if (r % 2 == 0)
		{
			ns[r] = (double) time_batch(op, arg, n) / (double) n;
			fl[r] = (double) time_batch(floor_op, floor_arg, nf) / (double) nf;
		}
		else
		{
			fl[r] = (double) time_batch(floor_op, floor_arg, nf) / (double) nf;
			ns[r] = (double) time_batch(op, arg, n) / (double) n;
		}
	}
	bench_report(settings.results, workload, bench_median(ns, reps), bench_median(fl, reps));
}

/* compare_reps() with the usual number of repetitions. */
static void
compare(const char *workload, bench_op op, void *arg, bench_op floor_op, void *floor_arg)
{
	compare_reps(workload, settings.reps, op, arg, floor_op, floor_arg);
}

/* ------------------------------------------------------------------------
 * Workloads run by the workload backend
 * ------------------------------------------------------------------------ */

static void
run_w1(void)
{
	static const size_t sizes[] = {64 * KiB, 1 * MiB};
	char workload[96];

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
	{
		DsmState ds = {.size = sizes[i]};
		FloorState fs = {.size = sizes[i]};

		/* One operation first, to check that detach really destroys. */
		dsm_create_destroy(&ds);
		if (segment_exists(ds.last_created))
			elog(ERROR, "W1: segment %08x still exists after its last dsm_detach", ds.last_created);

		snprintf(workload, sizeof workload, "W1 create+destroy %s %s", dsm_impl_name(cur_impl),
				 size_label(sizes[i]));
		compare(workload, dsm_create_destroy, &ds, floor_create_destroy, &fs);
	}
}

static void
run_w3(void)
{
	static const size_t sizes[] = {16 * MiB, 256 * MiB};
	char workload[96];

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
	{
		DsmState ds = {.size = sizes[i], .touch = true};
		FloorState fs = {.size = sizes[i], .touch = true};

		snprintf(workload, sizeof workload, "W3 create+touch+destroy %s %s", dsm_impl_name(cur_impl),
				 size_label(sizes[i]));
		/* An operation takes 10-200 ms: the minimum number of repetitions. */
		compare_reps(workload, settings.quick ? 5 : BENCH_REPS, dsm_create_destroy, &ds, floor_create_destroy,
					 &fs);
	}
}

/*
 * The other live segments of W2: pinned, unmapped segments that occupy
 * control-segment slots.  Process-local list of their handles.
 */
static dsm_handle *live_handles;
static int live_count;
static int live_capacity;

/*
 * Add live segments until there are target of them, or until the cluster
 * refuses (no free slot: DSM_CREATE_NULL_IF_MAXSEGMENTS, or an ERROR from
 * the system, e.g. System V's SHMMNI).  Returns the count reached.
 */
static int
live_fill(int target)
{
	volatile bool stop = false;
	bool to_max = (target == INT_MAX);

	/* Never more than the configured slots, whatever the library accepts. */
	if (target > cur_max_segments)
		target = cur_max_segments;
	while (live_count < target && !stop)
	{
		PG_TRY();
		{
			dsm_segment *seg = dsm_create(LIVE_SEGMENT_SIZE, DSM_CREATE_NULL_IF_MAXSEGMENTS);

			if (seg == NULL)
				stop = true;
			else
			{
				if (live_count == live_capacity)
				{
					int newcap = live_capacity ? live_capacity * 2 : 1024;
					dsm_handle *p = realloc(live_handles, sizeof(dsm_handle) * (size_t) newcap);

					if (p == NULL)
						elog(ERROR, "out of memory");
					live_handles = p;
					live_capacity = newcap;
				}
				dsm_pin_segment(seg);
				live_handles[live_count++] = dsm_segment_handle(seg);
				dsm_detach(seg);
			}
		}
		PG_CATCH();
		{
			if (!to_max)
				PG_RE_THROW();
			/* Filling to the maximum: the system's own limit stops us. */
			EmitErrorReport();
			FlushErrorState();
			stop = true;
		}
		PG_END_TRY();
	}
	return live_count;
}

/* Destroy every live segment (unpinning the last reference destroys it). */
static void
live_drain(void)
{
	while (live_count > 0)
		dsm_unpin_segment(live_handles[--live_count]);
	free(live_handles);
	live_handles = NULL;
	live_capacity = 0;
}

/* Create a pinned segment of size bytes with no mapping left; return its handle. */
static dsm_handle
make_pinned_segment(size_t size)
{
	dsm_segment *seg = dsm_create(size, 0);
	dsm_handle h = dsm_segment_handle(seg);

	dsm_pin_segment(seg);
	dsm_detach(seg);
	return h;
}

static void
run_w4(dsm_handle target, FloorObject *floor_obj)
{
	DsmState ds = {.handle = target};
	FloorState fs = {.keep = floor_obj};
	char workload[96];

	/* The request scope must leave nothing mapped. */
	dsm_request_scope(&ds);
	if (dsm_find_mapping(target) != NULL)
		elog(ERROR, "W4: the request scope left segment %08x mapped", target);

	snprintf(workload, sizeof workload, "W4 request scope+attach %s", dsm_impl_name(cur_impl));
	compare(workload, dsm_request_scope, &ds, floor_attach_detach, &fs);

	/* The empty scope, inline (no indirect call per operation); floor 0. */
	{
		double ns[64];
		long n = settings.quick ? 100000 : 300000;

		for (int r = 0; r < settings.reps; r++)
		{
			uint64_t t0 = clock_ns();

			for (long i = 0; i < n; i++)
			{
				ResourceOwner owner = ResourceOwnerCreate(NULL, "request");
				ResourceOwner saved = CurrentResourceOwner;

				CurrentResourceOwner = owner;
				CurrentResourceOwner = saved;
				ResourceOwnerReleaseAll(owner, true);
				ResourceOwnerDelete(owner);
			}
			ns[r] = (double) (clock_ns() - t0) / (double) n;
		}
		bench_report(settings.results, "W4 empty scope (in a backend)", bench_median(ns, settings.reps), 0);
	}
}

static void
run_w2(dsm_handle target, FloorObject *floor_obj)
{
	static const int counts[] = {0, 100, 1000, INT_MAX};
	DsmState ds = {.handle = target};
	FloorState fs = {.keep = floor_obj};
	char workload[96];

	for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
	{
		int live = live_fill(counts[i]);

		if (counts[i] != INT_MAX && live < counts[i])
		{
			printf("W2 %s: only %d live segments possible, skipping live=%d\n", dsm_impl_name(cur_impl),
				   live, counts[i]);
			continue;
		}
		if (counts[i] == INT_MAX)
			snprintf(workload, sizeof workload, "W2 attach+detach %s live=%d (max)", dsm_impl_name(cur_impl),
					 live);
		else
			snprintf(workload, sizeof workload, "W2 attach+detach %s live=%d", dsm_impl_name(cur_impl), live);
		compare(workload, dsm_attach_detach, &ds, floor_attach_detach, &fs);
		if (counts[i] == 0)
		{
			snprintf(workload, sizeof workload, "W2 attach+detach %s live=0, floor without stat",
					 dsm_impl_name(cur_impl));
			compare(workload, dsm_attach_detach, &ds, floor_attach_detach_nostat, &fs);
		}
	}
	live_drain();
}

/*
 * The workload backend: runs W1-W4 for the current implementation, then
 * (POSIX, when W7 is selected) makes W7's pinned segment, and reports to
 * the supervisor.  An ERROR here is promoted to FATAL and the backend
 * leaves through proc_exit(1) without reporting, which the supervisor
 * notices.
 */
static void
workload_backend_main(Datum arg)
{
	BackendReport rep = {.ok = 1, .w7_handle = DSM_HANDLE_INVALID};

	if (workload_selected("W1"))
		run_w1();
	if (cur_impl == DSM_IMPL_POSIX && workload_selected("W3"))
		run_w3();
	if (workload_selected("W2") || (cur_impl == DSM_IMPL_POSIX && workload_selected("W4")))
	{
		dsm_handle target = make_pinned_segment(W2_SEGMENT_SIZE);
		FloorObject *floor_obj = floor_keep_create(W2_SEGMENT_SIZE, "a");

		if (cur_impl == DSM_IMPL_POSIX && workload_selected("W4"))
			run_w4(target, floor_obj);
		if (workload_selected("W2"))
			run_w2(target, floor_obj);
		floor_keep_drop(floor_obj);
		dsm_unpin_segment(target);
	}
	if (cur_impl == DSM_IMPL_POSIX && workload_selected("W7"))
		rep.w7_handle = make_pinned_segment(W2_SEGMENT_SIZE);

	fflush(stdout);
	if (!write_all(report_fd, &rep, sizeof rep))
		elog(ERROR, "could not report to the supervisor: %m");
}

/* ------------------------------------------------------------------------
 * W7: backends attaching and detaching one segment at once
 * ------------------------------------------------------------------------ */

/* What one W7 backend sends back. */
typedef struct W7Result
{
	uint64_t ops;        /* operations completed */
	uint64_t elapsed_ns; /* time they took */
} W7Result;

/*
 * Arguments of the W7 backends, in the supervisor's memory (each backend
 * has its own copy after fork).  Process-local.
 */
typedef struct W7Args
{
	bool raw;                /* raw calls on floor instead of dsmkit */
	dsm_handle handle;       /* the pinned segment */
	FloorObject *floor;      /* the floor segment */
	int ready_w;             /* write one byte when ready */
	int go_r, go_w;          /* barrier: EOF on go_r means start */
	int result_w;            /* W7Result goes here */
} W7Args;

static W7Args w7_args;

static void
w7_backend_main(Datum arg)
{
	W7Args *a = DatumGetPointer(arg);
	DsmState ds = {.handle = a->handle};
	FloorState fs = {.keep = a->floor};
	W7Result res = {0, 0};
	char c;
	uint64_t t0;

	/* The supervisor's end of the barrier must not stay open here. */
	close(a->go_w);
	if (!write_all(a->ready_w, "r", 1))
		elog(ERROR, "could not signal readiness: %m");
	if (read(a->go_r, &c, 1) != 0)
		elog(ERROR, "W7 barrier broken");

	t0 = bench_now_ns();
	do
	{
		for (int i = 0; i < 32; i++)
		{
			if (a->raw)
				floor_attach_detach(&fs);
			else
				dsm_attach_detach(&ds);
		}
		res.ops += 32;
		res.elapsed_ns = bench_now_ns() - t0;
	} while (res.elapsed_ns < settings.w7_duration_ns);

	if (!write_all(a->result_w, &res, sizeof res))
		elog(ERROR, "could not send W7 result: %m");
}

/*
 * One W7 run: spawn nbackends backends, release them together, and
 * return their total operations per second.  Supervisor only.
 */
static double
w7_run(int nbackends, bool raw, dsm_handle h, FloorObject *floor_obj)
{
	int ready[2], go[2], result[2];
	double total = 0;
	char buf[W7_MAX_BACKENDS];

	if (pipe(ready) != 0 || pipe(go) != 0 || pipe(result) != 0)
		elog(ERROR, "could not create pipe: %m");
	w7_args = (W7Args){.raw = raw, .handle = h, .floor = floor_obj, .ready_w = ready[1],
					   .go_r = go[0], .go_w = go[1], .result_w = result[1]};
	fflush(stdout);
	for (int i = 0; i < nbackends; i++)
		supervisor_spawn_backend(w7_backend_main, PointerGetDatum(&w7_args));
	close(ready[1]);
	close(go[0]);
	close(result[1]);

	/* Everyone is forked and waiting: open the barrier. */
	if (!read_all(ready[0], buf, (size_t) nbackends))
		elog(ERROR, "a W7 backend failed before the start");
	close(go[1]);

	for (int i = 0; i < nbackends; i++)
	{
		W7Result res;

		if (!read_all(result[0], &res, sizeof res))
			elog(ERROR, "a W7 backend failed");
		total += (double) res.ops * 1e9 / (double) res.elapsed_ns;
	}
	close(ready[0]);
	close(result[0]);
	while (supervisor_reap(true) > 0)
		;
	return total;
}

/*
 * W7 for 2, 4 and 8 backends; reported ns/op is 1e9 / (total ops/s), so
 * the printed ratio is raw ops/s over dsmkit ops/s.  Supervisor only.
 */
static void
run_w7(dsm_handle h)
{
	static const int counts[] = {2, 4, 8};
	FloorObject *floor_obj = floor_keep_create(W2_SEGMENT_SIZE, "w");
	char workload[96];

	for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
	{
		double dsm_ops[64], raw_ops[64], ns[64], fl[64];
		double dsm_med, raw_med;

		for (int r = 0; r < settings.w7_reps; r++)
		{
			if (r % 2 == 0)
			{
				dsm_ops[r] = w7_run(counts[i], false, h, floor_obj);
				raw_ops[r] = w7_run(counts[i], true, h, floor_obj);
			}
			else
			{
				raw_ops[r] = w7_run(counts[i], true, h, floor_obj);
				dsm_ops[r] = w7_run(counts[i], false, h, floor_obj);
			}
			ns[r] = 1e9 / dsm_ops[r];
			fl[r] = 1e9 / raw_ops[r];
		}
		snprintf(workload, sizeof workload, "W7 %d backends attach+detach %s", counts[i],
				 dsm_impl_name(cur_impl));
		dsm_med = bench_median(dsm_ops, settings.w7_reps);
		raw_med = bench_median(raw_ops, settings.w7_reps);
		bench_report(settings.results, workload, bench_median(ns, settings.w7_reps), bench_median(fl, settings.w7_reps));
		printf("    %d backends: dsmkit %.0f ops/s, raw %.0f ops/s (medians)\n", counts[i], dsm_med, raw_med);
	}
	floor_keep_drop(floor_obj);
}

/* ------------------------------------------------------------------------
 * Supervisors, one per implementation
 * ------------------------------------------------------------------------ */

/*
 * How many segment slots to configure: MAX_SEGMENTS, but for System V no
 * more than the system still has room for (SHMMNI minus what exists,
 * minus some headroom for the control segment and other users).
 */
static int
max_segments_for(int impl)
{
	FILE *f;
	long shmmni = 4096;
	int in_use = 0;
	char line[512];

	if (impl != DSM_IMPL_SYSV)
		return MAX_SEGMENTS;
	f = fopen("/proc/sys/kernel/shmmni", "r");
	if (f != NULL)
	{
		if (fscanf(f, "%ld", &shmmni) != 1)
			shmmni = 4096;
		fclose(f);
	}
	f = fopen("/proc/sysvipc/shm", "r");
	if (f != NULL)
	{
		while (fgets(line, sizeof line, f) != NULL)
			in_use++;
		in_use--; /* header line */
		fclose(f);
	}
	shmmni -= in_use + 64;
	return shmmni < MAX_SEGMENTS ? (int) (shmmni > 16 ? shmmni : 16) : MAX_SEGMENTS;
}

/*
 * The supervisor process of one implementation (a child of the first
 * process).  Never returns: leaves through proc_exit(), 0 on success.
 */
static DSMKIT_NORETURN void
supervisor_main(int impl)
{
	DsmkitConfig config = {0};
	BackendReport rep = {0};
	int status[2];

	cur_impl = impl;
	config.directory = cur_dir;
	config.dsm_impl = impl;
	config.max_backends = 16;
	config.max_segments = cur_max_segments = max_segments_for(impl);
	supervisor_startup(&config);

	if (pipe(status) != 0)
		elog(FATAL, "could not create pipe: %m");
	report_fd = status[1];
	fflush(stdout);
	supervisor_spawn_backend(workload_backend_main, (Datum) 0);
	close(status[1]);
	report_fd = -1;
	if (!read_all(status[0], &rep, sizeof rep))
		rep.ok = 0;
	close(status[0]);
	while (supervisor_reap(true) > 0)
		;
	if (!rep.ok)
	{
		fprintf(stderr, "bench_dsm: the %s workload backend failed\n", dsm_impl_name(impl));
		proc_exit(1);
	}
	if (rep.w7_handle != DSM_HANDLE_INVALID)
		run_w7(rep.w7_handle);
	fflush(stdout);
	proc_exit(0);
}

/* Fork the supervisor of impl and wait for it; returns its exit status. */
static int
run_impl(int impl)
{
	pid_t pid;
	int status;
	int len = snprintf(cur_dir, sizeof cur_dir, "%s/%s", settings.basedir, dsm_impl_name(impl));

	if (len < 0 || (size_t) len >= sizeof cur_dir || mkdir(cur_dir, 0700) != 0)
	{
		perror(cur_dir);
		return 1;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		perror("fork");
		return 1;
	}
	if (pid == 0)
		supervisor_main(impl);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
		{
			perror("waitpid");
			return 1;
		}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	fprintf(stderr, "bench_dsm: %s supervisor failed (status 0x%x)\n", dsm_impl_name(impl), status);
	return 1;
}

/* nftw callback: remove everything below the temporary directory. */
static int
remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void) sb;
	(void) ftw;
	if (type == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* Remove /dev/shm entries of this run's floor namespace (a failed child's leftovers). */
static void
sweep_floor_namespace(void)
{
	char prefix[64];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int swept = 0;

	if (d == NULL)
		return;
	snprintf(prefix, sizeof prefix, "dsmkit-bench-floor.%d.", (int) settings.main_pid);
	while ((e = readdir(d)) != NULL)
	{
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
		{
			char name[300];

			snprintf(name, sizeof name, "/%s", e->d_name);
			if (shm_unlink(name) == 0)
				swept++;
		}
	}
	closedir(d);
	if (swept > 0)
		fprintf(stderr, "bench_dsm: removed %d leftover floor objects\n", swept);
}

/* Print the machine the run is taken on: CPU count and model. */
static void
print_machine(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512], model[256] = "unknown";

	if (f != NULL)
	{
		while (fgets(line, sizeof line, f) != NULL)
			if (strncmp(line, "model name", 10) == 0)
			{
				char *colon = strchr(line, ':');

				if (colon != NULL)
				{
					snprintf(model, sizeof model, "%s", colon + 2);
					model[strcspn(model, "\n")] = '\0';
				}
				break;
			}
		fclose(f);
	}
	printf("bench_dsm: %ld CPUs, %s; %d repetitions (W7: %d of %.1f s), %s clock%s\n",
		   sysconf(_SC_NPROCESSORS_ONLN), model, settings.reps, settings.w7_reps,
		   (double) settings.w7_duration_ns / 1e9, clock_ns == bench_cpu_ns ? "CPU-time" : "wall",
		   settings.quick ? " (BENCH_QUICK)" : "");
}

int
main(int argc, char **argv)
{
	static const int impls[] = {DSM_IMPL_POSIX, DSM_IMPL_SYSV, DSM_IMPL_MMAP};
	const char *quick = getenv("BENCH_QUICK");
	const char *tmp = getenv("TMPDIR");
	int rc = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	page_size = sysconf(_SC_PAGESIZE);
	settings.results = argc > 1 ? argv[1] : NULL;
	settings.quick = quick != NULL && quick[0] != '\0' && strcmp(quick, "0") != 0;
	/*
	 * The machine may be shared: more, shorter repetitions (interleaved
	 * with the floor's) resist noise better than a few long ones.
	 */
	settings.reps = settings.quick ? 5 : 4 * BENCH_REPS + 1;
	settings.rep_target_ns = settings.quick ? 4000000 : 8000000;
	settings.w7_reps = settings.quick ? 5 : BENCH_REPS;
	settings.w7_duration_ns = settings.quick ? 100000000 : 300000000;
	settings.only = getenv("BENCH_ONLY");
	settings.main_pid = getpid();
	{
		const char *clk = getenv("BENCH_CLOCK");

		if (clk != NULL && strcmp(clk, "cpu") == 0)
			clock_ns = bench_cpu_ns;
	}

	snprintf(settings.basedir, sizeof settings.basedir, "%s/dsmkit-bench.XXXXXX",
			 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(settings.basedir) == NULL)
	{
		perror("mkdtemp");
		return 1;
	}
	print_machine();

	for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
		if (impl_selected(impls[i]))
			rc |= run_impl(impls[i]);

	sweep_floor_namespace();
	nftw(settings.basedir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
