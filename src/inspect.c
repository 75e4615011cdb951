/*
 * inspect.c: reading a cluster from the outside (dsm_cluster_inspect())
 * and removing what a dead one left (dsm_cluster_cleanup()).
 *
 * Both work from a process that need not belong to the cluster.  They
 * reuse the library's own readers: dsm_read_state_file() for the state
 * file, dsm_control_segment_sane() and the layout accessors of dsm_int.h
 * for the control segment, dsm_process_alive() for liveness,
 * dsm_impl_op() to map and destroy segments, and, for the cleanup, the
 * supervisor's lock protocol (dsm_lock_file_acquire(), described in
 * supervisor.c) and name sweep (dsm_sweep_cluster_names()).  For the
 * duration of a call the process's dsm_impl configuration is switched to
 * the inspected cluster and then put back exactly as it was (dsm_impl_cfg
 * is a plain struct, so a copy restores it).
 *
 * Inspection never writes to the cluster: the control segment is copied
 * without its lock (taking the lock could repair a dead holder's update,
 * which is a change).  To get a committed state without the lock, the
 * segment is copied twice until the copies agree, and an update in
 * progress is then rolled back in the private copy from its undo log (see
 * dsm_int.h: a commit point is the only state a locker may observe).
 */
#define _GNU_SOURCE
#include "dsm_int.h"
#include "dsm_impl_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dsmkit/elog.h>
#include <dsmkit/inspect.h>
#include <dsmkit/memutils.h>

#define LOCK_FILE_NAME "dsmkit.pid"
#define STATE_FILE_NAME "dsmkit.state"
#define SNAPSHOT_ATTEMPTS 50
/* How long dsm_cluster_inspect() gives a live supervisor to make its control segment. */
#define STARTING_WAITS 20
#define STARTING_WAIT_MS 50

/*
 * Process-local: what one call found out about a directory before it maps
 * anything.  Paths live in the caller's memory context.
 */
typedef struct cluster_files
{
	const char *directory;   /* as given */
	char *state_path;        /* "<dir>/dsmkit.state" */
	char *lock_path;         /* "<dir>/dsmkit.pid" */
	bool have_state;         /* the state file exists */
	bool have_lock;          /* the lock file exists */
	bool state_valid;        /* the state file parsed (then info is filled) */
	dsm_state_info info;     /* the parsed state file */
	pid_t lock_pid;          /* pid in the lock file, 0 if none or garbage */
	uint64_t lock_start;     /* start time in the lock file */
} cluster_files;

/* Sleep ms milliseconds (less if a signal arrives).  Never fails. */
static void
nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};

	(void) nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------------
 * Files of the directory
 * ---------------------------------------------------------------------
 */

/*
 * Raise ERROR unless directory names an existing directory.  The errcode
 * follows errno (ERRCODE_UNDEFINED_FILE for a missing one).
 */
static void
require_directory(const char *directory)
{
	struct stat st;

	if (directory == NULL || directory[0] == '\0')
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a cluster directory must be given"));
	if (stat(directory, &st) != 0)
		ereport(ERROR, errcode_for_file_access(),
				errmsg("could not access cluster directory \"%s\": %m", directory));
	if (!S_ISDIR(st.st_mode))
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("cluster directory \"%s\" is not a directory", directory));
}

/*
 * Does path exist?  ENOENT is "no"; any other failure (permission)
 * raises ERROR naming the file, because then nothing can be said about
 * the cluster.
 */
static bool
file_exists(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0)
		return true;
	if (errno == ENOENT)
		return false;
	ereport(ERROR, errcode_for_file_access(), errmsg("could not access file \"%s\": %m", path));
}

/*
 * Read the lock file "<pid>\n<start time>\n" into *pid and *start; both
 * are 0 if it is missing or garbage.  Never raises.
 */
static void
read_lock_file(const char *path, pid_t *pid, uint64_t *start)
{
	char buf[128];
	ssize_t n;
	int fd;
	int p = 0;
	unsigned long long s = 0;

	*pid = 0;
	*start = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	do
		n = read(fd, buf, sizeof buf - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	if (sscanf(buf, "%d\n%llu", &p, &s) == 2 && p > 0)
	{
		*pid = p;
		*start = s;
	}
}

/*
 * Look at the directory's state file and lock file.  ERROR for a missing
 * directory, one that is not a directory, or an unreadable state file.
 * A missing or garbage state file is recorded (have_state, state_valid),
 * not raised: the callers decide.  dsm_read_state_file() logs garbage at
 * LOG; the callers report it as an ERROR of their own, so that LOG line
 * is held back here.
 */
static void
read_cluster_files(cluster_files *cf, const char *directory)
{
	int saved_level = log_min_messages;
	int fd;

	memset(cf, 0, sizeof *cf);
	require_directory(directory);
	cf->directory = directory;
	cf->state_path = psprintf("%s/%s", directory, STATE_FILE_NAME);
	cf->lock_path = psprintf("%s/%s", directory, LOCK_FILE_NAME);
	cf->have_lock = file_exists(cf->lock_path);
	cf->have_state = file_exists(cf->state_path);
	if (cf->have_lock)
		read_lock_file(cf->lock_path, &cf->lock_pid, &cf->lock_start);
	if (!cf->have_state)
		return;
	/* Find out about permission problems with a real open, before the quiet parser does. */
	fd = open(cf->state_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
	{
		if (errno == ENOENT)
		{
			cf->have_state = false;
			return;
		}
		ereport(ERROR, errcode_for_file_access(),
				errmsg("could not read state file \"%s\": %m", cf->state_path));
	}
	close(fd);
	if (log_min_messages < WARNING)
		log_min_messages = WARNING;
	cf->state_valid = dsm_read_state_file(directory, &cf->info);
	log_min_messages = saved_level;
}

/* ERROR for a directory that holds no state file (the message says whether a lock file is there). */
static DSMKIT_NORETURN void
report_no_cluster(const cluster_files *cf)
{
	if (cf->have_lock)
		ereport(ERROR, errcode(ERRCODE_UNDEFINED_FILE),
				errmsg("directory \"%s\" is not a dsmkit cluster", cf->directory),
				errdetail("It has a lock file \"%s\" but no state file \"%s\": a supervisor is starting or died while starting.",
						  cf->lock_path, cf->state_path),
				errhint("If no supervisor runs there, \"dsmctl cleanup\" removes what is left."));
	ereport(ERROR, errcode(ERRCODE_UNDEFINED_FILE),
			errmsg("directory \"%s\" is not a dsmkit cluster", cf->directory),
			errdetail("It has no state file \"%s\".", cf->state_path));
}

/* ERROR for a state file that dsm_read_state_file() rejected. */
static DSMKIT_NORETURN void
report_garbage_state(const cluster_files *cf)
{
	ereport(ERROR, errcode(ERRCODE_DATA_CORRUPTED),
			errmsg("state file \"%s\" is not a valid dsmkit state file", cf->state_path),
			errdetail("It is empty, truncated, of another version, or holds values out of range."),
			errhint("If no supervisor runs in \"%s\", \"dsmctl cleanup\" removes what is left.",
					cf->directory));
}

/* ---------------------------------------------------------------------
 * Mapping the control segment
 * ---------------------------------------------------------------------
 */

/*
 * Switch this process's dsm_impl layer to the cluster described by info:
 * its implementation and directory, and the cluster id its state file
 * records (which names its segments even if the directory was moved
 * since).  The caller saved dsm_impl_cfg and restores it.  ERROR as
 * dsm_impl_configure().
 */
static void
configure_for(const char *directory, const dsm_state_info *info)
{
	dsm_impl_configure(info->impl, directory);
	dsm_impl_cfg.cluster_id = info->cluster_id;
}

/*
 * Map the control segment named by handle.  Returns false, with *problem
 * set to a sentence allocated in the current context, if it does not
 * exist; raises ERROR for any other failure (permission).  On success the
 * caller owns the mapping (*addr, *size, *priv) and must detach it.
 */
static bool
map_control(dsm_handle handle, void **addr, size_t *size, void **priv, char **problem)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorStackMark mark = elog_stack_mark();
	volatile bool missing = false;

	*addr = NULL;
	*size = 0;
	*priv = NULL;
	PG_TRY();
	{
		dsm_impl_op(DSM_OP_ATTACH, handle, 0, priv, addr, size, ERROR);
	}
	PG_CATCH();
	{
		if (geterrcode() != ERRCODE_UNDEFINED_FILE)
		{
			ErrorStackMark lift = mark;

			lift.depth = INT32_MAX; /* keep the error: only lift the floor */
			elog_stack_restore(lift);
			PG_RE_THROW();
		}
		MemoryContextSwitchTo(oldcxt);
		elog_stack_restore(mark); /* not an error the caller is handling */
		missing = true;
	}
	PG_END_TRY();
	elog_stack_restore(mark); /* lift the floor */
	if (missing)
	{
		char name[DSM_IMPL_NAME_MAX];

		dsm_impl_segment_name(handle, name, sizeof name);
		*problem = psprintf("the control segment \"%s\" does not exist", name);
		*addr = NULL;
		return false;
	}
	return true;
}

/*
 * Undo, in a private copy of a control segment, the update its undo log
 * records (entries newest first), which yields the state at the last
 * commit: what the next locker would restore in the shared segment, done
 * here without touching it.  Entries that fall outside the segment or
 * into the intent record itself are ignored.  Returns false if any entry
 * was ignored.  Never raises.
 */
static bool
rollback_copy(dsm_control_header *copy)
{
	size_t intent_start = offsetof(dsm_control_header, intent);
	size_t intent_end = intent_start + sizeof(dsm_control_intent);
	bool ok = true;

	for (uint32_t k = copy->intent.nundo; k > 0; k--)
	{
		dsm_control_undo *u = &copy->intent.undo[k - 1];
		size_t off = u->offset;

		if ((u->width != 4 && u->width != 8) || off + u->width > copy->total_size ||
			(off + u->width > intent_start && off < intent_end))
		{
			ok = false;
			continue;
		}
		if (u->width == 4)
		{
			uint32_t v = (uint32_t) u->old;

			memcpy((char *) copy + off, &v, sizeof v);
		}
		else
			memcpy((char *) copy + off, &u->old, sizeof u->old);
	}
	if (copy->intent.slot < copy->maxitems)
		dsm_control_reconcile_slot(copy, copy->intent.slot, copy->intent.backend);
	copy->intent.nundo = 0;
	copy->intent.op = DSM_INTENT_NONE;
	copy->intent.slot = DSM_NO_SLOT;
	return ok;
}

/*
 * Do two copies of a control segment agree, but for the fast holder bits
 * of the slots' words, which backends change without the lock all the
 * time?  (Each word is read as a whole either way; only a word's
 * active/inactive state and handle matter for consistency with the rest.)
 */
static bool
snapshot_equal(const char *a, const char *b, size_t size)
{
	const dsm_control_header *h = (const dsm_control_header *) a;
	size_t items_end = h->item_offset + (size_t) h->maxitems * sizeof(dsm_control_item);
	const uint64_t mask = ~((uint64_t) 0x7fffffffu << 32);

	if (memcmp(a, b, h->item_offset) != 0 || memcmp(a + items_end, b + items_end, size - items_end) != 0)
		return false;
	for (uint32_t i = 0; i < h->maxitems; i++)
	{
		const dsm_control_item *x = (const dsm_control_item *) (a + h->item_offset) + i;
		const dsm_control_item *y = (const dsm_control_item *) (b + h->item_offset) + i;
		uint64_t xw = x->word;
		uint64_t yw = y->word;

		if (DSM_WORD_ACTIVE(xw) != DSM_WORD_ACTIVE(yw) || (xw & mask) != (yw & mask) ||
			memcmp((const char *) x + sizeof x->word, (const char *) y + sizeof y->word,
				   sizeof *x - sizeof x->word) != 0)
			return false;
	}
	return true;
}

/*
 * Copy the mapped control segment (size bytes at addr) into a palloc'd
 * buffer in the current context and return it, or NULL if no copy looked
 * sane.  The segment is copied twice and the copies compared, until two
 * agree (a stable state, not torn by a concurrent update); an update
 * half done at that moment (by a live holder, or a dead one that left the
 * lock) is then rolled back in the copy from its undo log, giving the last
 * committed state.  *committed says whether that succeeded.  Never raises
 * except out of memory.
 */
static dsm_control_header *
snapshot_control(const void *addr, size_t size, bool *committed)
{
	char *a = palloc(size);
	char *b = palloc(size);
	bool sane = false;
	bool stable = false;
	bool exact = false;

	*committed = false;
	/*
	 * Exact agreement first; on a busy cluster, whose lock-free attaches
	 * keep changing fast holder bits, settle for agreement but for those
	 * bits, which gives a best effort (not marked committed: a word's bits
	 * may then be older than the backend table beside them).
	 */
	for (int attempt = 0; attempt < 2 * SNAPSHOT_ATTEMPTS && !stable; attempt++)
	{
		if (attempt > 0)
			sched_yield();
		memcpy(a, addr, size);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		memcpy(b, addr, size);
		sane = dsm_control_segment_sane((dsm_control_header *) a, size);
		exact = sane && memcmp(a, b, size) == 0;
		stable = exact || (sane && attempt >= SNAPSHOT_ATTEMPTS && snapshot_equal(a, b, size));
	}
	pfree(b);
	if (!sane)
	{
		pfree(a);
		return NULL;
	}
	*committed = rollback_copy((dsm_control_header *) a) && exact;
	return (dsm_control_header *) a;
}

/* The name of a DSM_BACKEND_* state (a static string).  Never fails. */
static const char *
backend_state_name(uint32_t state)
{
	switch (state)
	{
		case DSM_BACKEND_STARTING:
			return "starting";
		case DSM_BACKEND_RUNNING:
			return "running";
		case DSM_BACKEND_EXITED:
			return "exited";
		default:
			return "unknown";
	}
}

/* Is backend slot be's process alive?  A slot still starting without a pid counts as alive. */
static bool
snapshot_backend_alive(const dsm_control_backend *be)
{
	if (be->state == DSM_BACKEND_RUNNING)
		return dsm_process_alive(be->pid, be->start_time);
	if (be->state == DSM_BACKEND_STARTING)
		return be->pid == 0 || dsm_process_alive(be->pid, 0);
	return false;
}

/*
 * Fill info's backends and segments from a sane snapshot.  Allocates in
 * the current context.  ERROR only on out of memory.
 */
static void
fill_from_snapshot(DsmClusterInfo *info, dsm_control_header *control)
{
	dsm_control_item *items = dsm_control_items(control);
	dsm_control_backend *backends = dsm_control_backends(control);
	int n;

	info->control_size = control->total_size;
	info->repairs = control->repairs;
	info->slots_total = control->maxitems;
	info->max_backends = control->max_backends;

	n = 0;
	for (uint32_t b = 0; b < control->max_backends; b++)
		if (backends[b].state != DSM_BACKEND_FREE)
			n++;
	info->backends = palloc0(sizeof(DsmBackendInfo) * (size_t) (n > 0 ? n : 1));
	for (uint32_t b = 0; b < control->max_backends; b++)
	{
		dsm_control_backend *be = &backends[b];
		DsmBackendInfo *bi;

		if (be->state == DSM_BACKEND_FREE)
			continue;
		bi = &info->backends[info->nbackends++];
		bi->index = (int) b;
		bi->pid = be->pid;
		bi->alive = snapshot_backend_alive(be);
		bi->joined = be->joined != 0;
		bi->state = backend_state_name(be->state);
		bi->nsegments = dsm_control_backend_nrefs(control, b);
	}

	n = 0;
	for (uint32_t i = 0; i < control->maxitems; i++)
		if (dsm_item_holds_segment(&items[i]))
			n++;
	info->segments = palloc0(sizeof(DsmSegmentInfo) * (size_t) (n > 0 ? n : 1));
	for (uint32_t i = 0; i < control->maxitems; i++)
	{
		dsm_control_item *item = &items[i];
		DsmSegmentInfo *si;
		char name[DSM_IMPL_NAME_MAX];
		int npids = 0;

		if (!dsm_item_holds_segment(item))
			continue; /* free, cached, or reserved and not yet named: no segment */
		si = &info->segments[info->nsegments++];
		si->handle = dsm_item_handle(item);
		si->slot = i;
		si->size = item->size;
		si->refcnt = dsm_item_refcount(item);
		si->pinned = item->pinned != 0;
		si->moribund = dsm_item_moribund(item);
		si->ctime = (time_t) item->ctime;
		si->age = (item->ctime != 0 && (int64_t) item->ctime < (int64_t) info->inspected_at)
			? (int64_t) info->inspected_at - (int64_t) item->ctime : 0;
		dsm_impl_segment_name(dsm_item_handle(item), name, sizeof name);
		si->os_name = pstrdup(name);
		for (uint32_t b = 0; b < control->max_backends; b++)
			if (dsm_control_ref_is_set(control, b, i))
				npids++;
		si->pids = palloc(sizeof(pid_t) * (size_t) (npids > 0 ? npids : 1));
		for (uint32_t b = 0; b < control->max_backends; b++)
			if (dsm_control_ref_is_set(control, b, i))
				si->pids[si->npids++] = backends[b].pid;
		info->slots_used++;
		info->bytes += item->size;
	}
}

/*
 * The body of dsm_cluster_inspect() once the state file is known to be
 * valid; allocates in the current context.  The caller has saved
 * dsm_impl_cfg and restores it.
 */
static void
inspect_cluster(DsmClusterInfo *info, const cluster_files *cf)
{
	void *volatile addr = NULL;
	void *priv = NULL;
	size_t size = 0;
	char name[DSM_IMPL_NAME_MAX];

	configure_for(cf->directory, &cf->info);
	dsm_impl_segment_name(cf->info.control_handle, name, sizeof name);
	info->control_os_name = pstrdup(name);
	{
		void *a = NULL;

		if (!map_control(cf->info.control_handle, &a, &size, &priv, &info->control_problem))
			return;
		addr = a;
	}
	PG_TRY();
	{
		dsm_control_header *copy = snapshot_control(addr, size, &info->consistent);

		if (copy == NULL)
			info->control_problem =
				psprintf("the control segment \"%s\" is corrupt (magic, version or sizes)", name);
		else if (copy->cluster_id != cf->info.cluster_id ||
				 copy->supervisor_pid != (int32_t) cf->info.supervisor_pid)
			info->control_problem =
				psprintf("the control segment \"%s\" belongs to cluster %08x and supervisor %d, not to the state file's",
						 name, copy->cluster_id, (int) copy->supervisor_pid);
		else
		{
			info->control_present = true;
			fill_from_snapshot(info, copy);
		}
		if (copy != NULL)
			pfree(copy);
	}
	PG_FINALLY();
	{
		void *a = addr;

		dsm_impl_op(DSM_OP_DETACH, cf->info.control_handle, 0, &priv, &a, &size, WARNING);
	}
	PG_END_TRY();
}

/*
 * See inspect.h.  Everything is allocated in a new child context of mcxt,
 * which is deleted if an ERROR escapes, so a failure leaves nothing.
 */
DsmClusterInfo *
dsm_cluster_inspect(MemoryContext mcxt, const char *directory)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	dsm_impl_config *saved;
	DsmClusterInfo *volatile info = NULL;

	MemoryContextInit();
	if (mcxt == NULL)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("dsm_cluster_inspect needs a memory context"));
	cxt = AllocSetContextCreate(mcxt, "dsm cluster info", ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	saved = palloc(sizeof(dsm_impl_config));
	*saved = dsm_impl_cfg;
	PG_TRY();
	{
		cluster_files cf;

		read_cluster_files(&cf, directory);
		if (!cf.have_state)
			report_no_cluster(&cf);
		if (!cf.state_valid)
			report_garbage_state(&cf);
		info = palloc0(sizeof(DsmClusterInfo));
		info->directory = pstrdup(directory);
		info->inspected_at = time(NULL);
		info->impl = cf.info.impl;
		info->impl_name = dsm_impl_name(cf.info.impl);
		info->cluster_id = cf.info.cluster_id;
		info->supervisor_pid = cf.info.supervisor_pid;
		info->supervisor_alive = dsm_process_alive(cf.info.supervisor_pid, cf.info.supervisor_start);
		info->stale = !info->supervisor_alive;
		info->control_handle = cf.info.control_handle;
		info->slots_total = cf.info.maxitems;
		info->max_backends = cf.info.max_backends;
		inspect_cluster(info, &cf);
		pfree(cf.state_path);
		pfree(cf.lock_path);
		/*
		 * A supervisor that is starting has written its state file before
		 * it makes and fills its control segment: give it a moment (the
		 * state file is read again, since a start-up may rewrite it).
		 */
		for (int wait = 0; wait < STARTING_WAITS && info->supervisor_alive && !info->control_present;
			 wait++)
		{
			cluster_files again;

			nap_ms(STARTING_WAIT_MS);
			read_cluster_files(&again, directory);
			if (again.state_valid && again.info.cluster_id == cf.info.cluster_id &&
				again.info.supervisor_pid == cf.info.supervisor_pid)
			{
				if (info->control_problem != NULL)
					pfree(info->control_problem);
				if (info->control_os_name != NULL)
					pfree(info->control_os_name);
				info->control_problem = NULL;
				info->control_os_name = NULL;
				info->control_handle = again.info.control_handle;
				inspect_cluster(info, &again);
			}
			pfree(again.state_path);
			pfree(again.lock_path);
		}
		if (info->supervisor_alive && !info->control_present && info->control_problem != NULL)
		{
			char *problem = psprintf("%s (its supervisor, pid %d, runs: the cluster may be starting "
									 "or shutting down)",
									 info->control_problem, (int) info->supervisor_pid);

			pfree(info->control_problem);
			info->control_problem = problem;
		}
	}
	PG_CATCH();
	{
		dsm_impl_cfg = *saved;
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	dsm_impl_cfg = *saved;
	pfree(saved);
	MemoryContextSwitchTo(oldcxt);
	return info;
}

/* See inspect.h.  Never fails. */
void
dsm_cluster_info_free(DsmClusterInfo *info)
{
	if (info != NULL)
		MemoryContextDelete(GetMemoryChunkContext(info));
}

/* ---------------------------------------------------------------------
 * Cleanup
 * ---------------------------------------------------------------------
 */

/* Process-local: where dsm_cluster_cleanup() sends its reports, and the count. */
typedef struct cleanup_state
{
	void (*report)(const char *what, void *arg); /* caller's callback, or NULL for LOG */
	void *arg;                                   /* its argument */
	int removed;                                 /* objects removed so far */
} cleanup_state;

static void cleanup_removed(cleanup_state *cs, const char *fmt, ...) DSMKIT_PRINTF(2, 3);

/* Count and report one removed object.  Never raises (a long message is cut). */
static void
cleanup_removed(cleanup_state *cs, const char *fmt, ...)
{
	char buf[4400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	cs->removed++;
	if (cs->report != NULL)
		cs->report(buf, cs->arg);
	else
		ereport(LOG, errmsg("%s", buf));
}

/* Remove a file, reporting it; a failure other than ENOENT is a WARNING.  Never raises. */
static void
cleanup_unlink(cleanup_state *cs, const char *path, const char *what)
{
	if (unlink(path) == 0)
		cleanup_removed(cs, "removed %s \"%s\"", what, path);
	else if (errno != ENOENT)
		ereport(WARNING, errcode_for_file_access(), errmsg("could not remove %s \"%s\": %m", what, path));
}

/*
 * Take the directory's lock file for this process, exactly as a
 * supervisor does (dsm_lock_file_acquire(): the flock protocol described
 * in supervisor.c), so that none starts while we clean up.  The
 * descriptor that holds the lock is stored in *lock_fd before anything
 * is reported, so that the caller releases it even if the report
 * callback raises.  A stale lock file is removed and reported; a live
 * owner raises ERROR (ERRCODE_OBJECT_IN_USE) with nothing changed.
 */
static void
cleanup_take_lock(cleanup_state *cs, const cluster_files *cf, volatile int *lock_fd)
{
	dsm_lock_holder holder;
	int fd = dsm_lock_file_acquire(cf->directory, &holder);

	if (fd >= 0)
	{
		*lock_fd = fd;
		if (holder.stale_removed > 0)
			cleanup_removed(cs, "removed stale lock file \"%s\" (process %d is gone)", cf->lock_path,
							(int) holder.stale_pid);
		return;
	}
	if (holder.alive)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("supervisor %d is running in \"%s\"", (int) holder.pid, cf->directory),
				errdetail("The lock file \"%s\" names it.", cf->lock_path),
				errhint("Stop the supervisor: it removes everything when it exits."));
	ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
			errmsg("lock file \"%s\" is held by another process", cf->lock_path),
			errdetail("It names process %d, which is gone: a supervisor or another cleanup is taking "
					  "the directory over, or a process forked by the dead supervisor still runs.",
					  (int) holder.pid),
			errhint("Try again; if it persists, stop the processes of the old cluster."));
}

/*
 * Destroy every segment a dead cluster's control segment lists (a sane
 * snapshot of it), reporting each.  The caller has configured dsm_impl for
 * the cluster.  Never raises: failures are WARNINGs (DEBUG1 for moribund
 * segments, which may be gone already).
 */
static void
cleanup_listed_segments(cleanup_state *cs, dsm_control_header *copy)
{
	dsm_control_item *items = dsm_control_items(copy);

	for (uint32_t i = 0; i < copy->maxitems; i++)
	{
		char name[DSM_IMPL_NAME_MAX];

		if (!dsm_item_holds_segment(&items[i]))
			continue; /* free, cached, or reserved and not yet named: no segment */
		dsm_impl_segment_name(dsm_item_handle(&items[i]), name, sizeof name);
		if (dsm_control_destroy_segment(copy, i, dsm_item_moribund(&items[i]) ? DEBUG1 : WARNING) > 0)
			cleanup_removed(cs, "removed segment %u \"%s\" (%llu bytes)", dsm_item_handle(&items[i]), name,
							(unsigned long long) items[i].size);
	}
}

/* dsm_sweep_cluster_names()'s report of an object it removed: counted and reported. */
static void
cleanup_swept(const char *what, const char *name, void *arg)
{
	cleanup_removed((cleanup_state *) arg, "removed %s \"%s\"", what, name);
}

/*
 * The part of dsm_cluster_cleanup() that may refuse: with a valid state
 * file, map the control segment and copy it; refuse (ERROR, nothing
 * changed) if a listed backend still runs and force is false.  Returns the
 * snapshot (palloc'd, NULL if the control segment is missing or corrupt).
 * The caller has configured dsm_impl.
 */
static dsm_control_header *
cleanup_snapshot(const cluster_files *cf, bool force)
{
	void *addr = NULL;
	void *priv = NULL;
	size_t size = 0;
	char *problem = NULL;
	bool stable;
	dsm_control_header *volatile copy = NULL;

	if (!map_control(cf->info.control_handle, &addr, &size, &priv, &problem))
	{
		pfree(problem);
		return NULL;
	}
	PG_TRY();
	{
		copy = snapshot_control(addr, size, &stable);
	}
	PG_FINALLY();
	{
		dsm_impl_op(DSM_OP_DETACH, cf->info.control_handle, 0, &priv, &addr, &size, WARNING);
	}
	PG_END_TRY();
	if (copy == NULL || force)
		return copy;
	for (uint32_t b = 0; b < copy->max_backends; b++)
	{
		dsm_control_backend *be = &dsm_control_backends(copy)[b];

		if (be->state != DSM_BACKEND_FREE && be->pid != 0 && snapshot_backend_alive(be))
		{
			int pid = be->pid;

			pfree(copy);
			ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
					errmsg("backend %d of the dead cluster in \"%s\" is still running", pid,
						   cf->directory),
					errdetail("Its segments would be removed while it uses them."),
					errhint("Stop the backend, or force the cleanup."));
		}
	}
	return copy;
}

/*
 * See inspect.h.  Order: refuse before anything is changed (live
 * supervisor, live backends); take the lock file; destroy the listed
 * segments and the control segment; sweep the cluster's names; remove the
 * state file; release (remove) the lock file.
 */
int
dsm_cluster_cleanup(const char *directory, int flags, void (*report)(const char *what, void *arg),
					void *arg)
{
	cleanup_state cs = {report, arg, 0};
	MemoryContext cxt;
	MemoryContext oldcxt;
	dsm_impl_config *saved;
	volatile int lock_fd = -1;
	cluster_files *volatile cfp = NULL;

	MemoryContextInit();
	cxt = AllocSetContextCreate(CurrentMemoryContext, "dsm cluster cleanup", ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	saved = palloc(sizeof(dsm_impl_config));
	*saved = dsm_impl_cfg;
	PG_TRY();
	{
		cluster_files *cf = palloc(sizeof(cluster_files));
		dsm_control_header *copy = NULL;
		uint32_t cluster;

		cfp = cf;
		read_cluster_files(cf, directory);
		if (!cf->have_state && !cf->have_lock)
			report_no_cluster(cf);
		if (cf->state_valid && dsm_process_alive(cf->info.supervisor_pid, cf->info.supervisor_start))
			ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
					errmsg("supervisor %d is running in \"%s\"", (int) cf->info.supervisor_pid, directory),
					errdetail("The state file \"%s\" names it.", cf->state_path),
					errhint("Stop the supervisor: it removes everything when it exits."));
		if (cf->lock_pid > 0 && dsm_process_alive(cf->lock_pid, cf->lock_start))
			ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
					errmsg("supervisor %d is running in \"%s\"", (int) cf->lock_pid, directory),
					errdetail("The lock file \"%s\" names it.", cf->lock_path),
					errhint("Stop the supervisor: it removes everything when it exits."));
		if (cf->state_valid)
		{
			configure_for(directory, &cf->info);
			copy = cleanup_snapshot(cf, (flags & DSM_CLEANUP_FORCE) != 0);
			cluster = cf->info.cluster_id;
		}
		else
			cluster = dsm_impl_cluster_id_of(directory);

		cleanup_take_lock(&cs, cf, &lock_fd);
		if (copy != NULL)
		{
			cleanup_listed_segments(&cs, copy);
			pfree(copy);
		}
		if (cf->state_valid)
		{
			void *priv = NULL;
			void *addr = NULL;
			size_t size = 0;
			char name[DSM_IMPL_NAME_MAX];

			dsm_impl_segment_name(cf->info.control_handle, name, sizeof name);
			if (dsm_impl_op(DSM_OP_DESTROY, cf->info.control_handle, 0, &priv, &addr, &size, DEBUG1))
				cleanup_removed(&cs, "removed control segment \"%s\"", name);
		}
		(void) dsm_sweep_cluster_names(directory, cluster, cleanup_swept, &cs, WARNING);
		cleanup_unlink(&cs, cf->state_path, cf->state_valid ? "state file" : "garbage state file");
	}
	PG_FINALLY();
	{
		dsm_impl_cfg = *saved;
		/* Our own lock file: removing it is no cleanup to report (a stale one was reported). */
		if (lock_fd >= 0)
			dsm_lock_file_release(cfp->lock_path, lock_fd, WARNING);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(cxt);
	}
	PG_END_TRY();
	return cs.removed;
}
