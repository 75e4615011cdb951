/*
 * supervisor.c: the process that owns a cluster directory, its backends,
 * and the files that let a crashed cluster be cleaned up.
 *
 * Files in the cluster directory:
 *   dsmkit.pid    the lock file: "<pid>\n<start time>\n", made atomically
 *                 (written under a temporary name, then link(2)ed into
 *                 place), so a reader never sees it half written;
 *   dsmkit.state  one versioned line naming the implementation, the
 *                 control segment's handle, the cluster id, the sizes and
 *                 the supervisor (pid and start time), written atomically
 *                 (temporary name, fsync, rename, fsync of the directory).
 *
 * Start-up order, chosen so that a kill at any point leaves only what the
 * next start-up removes: lock file; crash cleanup (through the old state
 * file and control segment, then a sweep of the cluster's POSIX and mmap
 * names); state file naming the new control handle; the control segment.
 * Shutdown runs in the reverse order and removes the lock file last.
 */
#define _GNU_SOURCE
#include "dsm_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dsmkit/elog.h>
#include <dsmkit/ipc.h>
#include <dsmkit/memutils.h>
#include <dsmkit/resowner.h>

#include "injection.h"

#define LOCK_FILE_NAME "dsmkit.pid"
#define STATE_FILE_NAME "dsmkit.state"
#define STATE_FILE_MAGIC "dsmkit-state"
#define STATE_FILE_VERSION 1
#define STATE_FILE_BUFSIZ 512
#define DEFAULT_MAX_BACKENDS 100

/*
 * Process-local: the supervisor's own bookkeeping (valid in the
 * supervisor only; a forked backend drops it).
 */
static pid_t supervisor_pid = 0;        /* the supervisor's pid, 0 if this process is none */
static char *supervisor_lock_path = NULL;  /* TopMemoryContext: "<dir>/dsmkit.pid" */
static char *supervisor_state_path = NULL; /* TopMemoryContext: "<dir>/dsmkit.state" */
static pid_t *supervisor_children = NULL;  /* TopMemoryContext: pid by backend index, 0 if none */
static uint32_t supervisor_nslots = 0;     /* entries in supervisor_children */
static int supervisor_nchildren = 0;       /* spawned backends not yet reaped */

DsmkitRole
dsmkit_role(void)
{
	return dsm_role;
}

/* ---------------------------------------------------------------------
 * Small file helpers
 * ---------------------------------------------------------------------
 */

/* Write all of buf to fd, retrying short writes and EINTR; false with errno on failure. */
static bool
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0)
	{
		ssize_t n = write(fd, buf, len);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			return false;
		}
		if (n == 0)
		{
			errno = ENOSPC;
			return false;
		}
		buf += n;
		len -= (size_t) n;
	}
	return true;
}

/* Read up to bufsize - 1 bytes of path into buf, NUL-terminated; -1 with errno on failure. */
static ssize_t
read_small_file(const char *path, char *buf, size_t bufsize)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t total = 0;

	if (fd < 0)
		return -1;
	while (total < bufsize - 1)
	{
		ssize_t n = read(fd, buf + total, bufsize - 1 - total);

		if (n < 0)
		{
			int save = errno;

			if (save == EINTR)
				continue;
			close(fd);
			errno = save;
			return -1;
		}
		if (n == 0)
			break;
		total += (size_t) n;
	}
	close(fd);
	buf[total] = '\0';
	return (ssize_t) total;
}

/* fsync a directory so a rename or unlink in it is durable; failures are logged. */
static void
fsync_directory(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) != 0)
		ereport(LOG, errcode_for_file_access(), errmsg("could not fsync directory \"%s\": %m", dir));
	if (fd >= 0)
		close(fd);
}

/* "<dir>/<name>" in TopMemoryContext.  ERROR on out of memory. */
static char *
psprintf_top(const char *dir, const char *name)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char *s = psprintf("%s/%s", dir, name);

	MemoryContextSwitchTo(old);
	return s;
}

/* ---------------------------------------------------------------------
 * State file
 * ---------------------------------------------------------------------
 */

/*
 * Parse the state file of directory into *info.  Returns false if it is
 * missing (quietly) or empty, truncated, of another version or otherwise
 * garbage (with a LOG line): such a file is never trusted.  Never raises.
 */
bool
dsm_read_state_file(const char *directory, dsm_state_info *info)
{
	char path[4096];
	char buf[STATE_FILE_BUFSIZ];
	char impl[16];
	unsigned int version;
	unsigned int handle;
	unsigned int cluster;
	unsigned int maxitems;
	unsigned int max_backends;
	int pid;
	unsigned long long start;
	int consumed = -1;
	ssize_t n;

	snprintf(path, sizeof path, "%s/%s", directory, STATE_FILE_NAME);
	n = read_small_file(path, buf, sizeof buf);
	if (n < 0)
	{
		if (errno != ENOENT)
			ereport(LOG, errcode_for_file_access(), errmsg("could not read file \"%s\": %m", path));
		return false;
	}
	if (sscanf(buf,
			   STATE_FILE_MAGIC " %u impl=%15[a-z] control=%u cluster=%8x maxitems=%u "
			   "max_backends=%u pid=%d start=%llu%n",
			   &version, impl, &handle, &cluster, &maxitems, &max_backends, &pid, &start,
			   &consumed) != 8 ||
		consumed < 0 || buf[consumed] != '\n' || buf[consumed + 1] != '\0' ||
		version != STATE_FILE_VERSION)
	{
		ereport(LOG, errmsg("ignoring state file \"%s\": it is empty, truncated or not a dsmkit state file",
							path));
		return false;
	}
	info->impl = 0;
	for (int i = DSM_IMPL_POSIX; i <= DSM_IMPL_MMAP; i++)
		if (dsm_impl_name(i) != NULL && strcmp(dsm_impl_name(i), impl) == 0)
			info->impl = i;
	if (info->impl == 0 || handle == DSM_HANDLE_INVALID || maxitems == 0 ||
		maxitems > DSM_MAX_SEGMENTS_LIMIT || max_backends == 0 ||
		max_backends > DSM_MAX_BACKENDS_LIMIT || pid <= 0)
	{
		ereport(LOG, errmsg("ignoring state file \"%s\": its values are out of range", path));
		return false;
	}
	info->control_handle = handle;
	info->cluster_id = cluster;
	info->maxitems = maxitems;
	info->max_backends = max_backends;
	info->supervisor_pid = pid;
	info->supervisor_start = start;
	return true;
}

/*
 * Write the state file for this supervisor atomically: a temporary file
 * is written and fsynced, renamed over the old one, and the directory is
 * fsynced.  ERROR on failure (the temporary file is removed).
 */
static void
write_state_file(const char *directory, const dsm_state_info *info)
{
	char tmp[4096];
	char buf[STATE_FILE_BUFSIZ];
	int len;
	int fd;
	int e;

	snprintf(tmp, sizeof tmp, "%s/%s.tmp.%d", directory, STATE_FILE_NAME, (int) getpid());
	len = snprintf(buf, sizeof buf,
				   STATE_FILE_MAGIC " %d impl=%s control=%u cluster=%08x maxitems=%u "
				   "max_backends=%u pid=%d start=%llu\n",
				   STATE_FILE_VERSION, dsm_impl_name(info->impl), info->control_handle,
				   info->cluster_id, info->maxitems, info->max_backends, (int) info->supervisor_pid,
				   (unsigned long long) info->supervisor_start);
	if ((e = INJECTION_POINT("supervisor-startup-before-statefile")) != 0)
	{
		errno = e;
		ereport(ERROR, errcode_for_file_access(), errmsg("could not create file \"%s\": %m", tmp));
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		ereport(ERROR, errcode_for_file_access(), errmsg("could not create file \"%s\": %m", tmp));
	if ((e = INJECTION_POINT("supervisor-statefile-write")) != 0 ||
		!write_all(fd, buf, (size_t) len) ||
		(e = INJECTION_POINT("supervisor-statefile-fsync")) != 0 || fsync(fd) != 0)
	{
		int save = e != 0 ? e : errno;

		close(fd);
		unlink(tmp);
		errno = save;
		ereport(ERROR, errcode_for_file_access(), errmsg("could not write file \"%s\": %m", tmp));
	}
	close(fd);
	if ((e = INJECTION_POINT("supervisor-statefile-rename")) != 0)
	{
		unlink(tmp);
		errno = e;
		ereport(ERROR, errcode_for_file_access(),
				errmsg("could not rename file \"%s\" to \"%s\": %m", tmp, supervisor_state_path));
	}
	if (rename(tmp, supervisor_state_path) != 0)
	{
		int save = errno;

		unlink(tmp);
		errno = save;
		ereport(ERROR, errcode_for_file_access(),
				errmsg("could not rename file \"%s\" to \"%s\": %m", tmp, supervisor_state_path));
	}
	fsync_directory(directory);
}

/* ---------------------------------------------------------------------
 * Lock file
 * ---------------------------------------------------------------------
 */

/*
 * Take the cluster directory's lock file.  The content is written to a
 * private temporary file first and then link(2)ed to "dsmkit.pid", which
 * fails with EEXIST atomically, so the lock file is never seen half
 * written.  An existing lock file naming a live process (pid and start
 * time) means another supervisor: ERROR.  One naming a dead process, or a
 * reused pid, or garbage, is stale: it is removed and we try again.
 * ERROR on failure, with nothing left behind.
 */
static void
take_lock_file(const char *directory)
{
	char tmp[4096];
	char buf[128];
	int len;
	int fd;

	snprintf(tmp, sizeof tmp, "%s/%s.tmp.%d", directory, LOCK_FILE_NAME, (int) getpid());
	len = snprintf(buf, sizeof buf, "%d\n%llu\n", (int) getpid(),
				   (unsigned long long) dsm_process_start_time(getpid()));
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		ereport(ERROR, errcode_for_file_access(), errmsg("could not create file \"%s\": %m", tmp));
	if (!write_all(fd, buf, (size_t) len) || fsync(fd) != 0)
	{
		int save = errno;

		close(fd);
		unlink(tmp);
		errno = save;
		ereport(ERROR, errcode_for_file_access(), errmsg("could not write file \"%s\": %m", tmp));
	}
	close(fd);

	for (int attempt = 0;; attempt++)
	{
		char old[128];
		int oldpid = 0;
		unsigned long long oldstart = 0;
		ssize_t n;

		if (link(tmp, supervisor_lock_path) == 0)
			break;
		if (errno != EEXIST || attempt >= 100)
		{
			int save = errno;

			unlink(tmp);
			errno = save;
			ereport(ERROR, errcode_for_file_access(),
					errmsg("could not create lock file \"%s\": %m", supervisor_lock_path));
		}
		n = read_small_file(supervisor_lock_path, old, sizeof old);
		if (n < 0 && errno == ENOENT)
			continue;
		if (n > 0 && sscanf(old, "%d\n%llu", &oldpid, &oldstart) == 2 && oldpid > 0 &&
			oldpid != (int) getpid() && dsm_process_alive(oldpid, oldstart))
		{
			unlink(tmp);
			ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
					errmsg("supervisor already running in \"%s\"", directory),
					errdetail("The lock file \"%s\" names process %d, which is running.",
							  supervisor_lock_path, oldpid),
					errhint("Stop that supervisor first, or use another directory."));
		}
		ereport(LOG, errmsg("removing stale lock file \"%s\"", supervisor_lock_path),
				errdetail("The process it names (%d) is gone.", oldpid));
		if (unlink(supervisor_lock_path) != 0 && errno != ENOENT)
		{
			int save = errno;

			unlink(tmp);
			errno = save;
			ereport(ERROR, errcode_for_file_access(),
					errmsg("could not remove stale lock file \"%s\": %m", supervisor_lock_path));
		}
	}
	unlink(tmp);
	fsync_directory(directory);
}

/* ---------------------------------------------------------------------
 * Crash cleanup
 * ---------------------------------------------------------------------
 */

/*
 * Remove every POSIX object and mmap file named for this cluster
 * ("dsmkit.<cluster>.*").  No live process uses them: we hold the lock
 * file, so the supervisor that made them is dead.  Failures are logged.
 */
static void
sweep_cluster_names(const char *directory, uint32_t cluster)
{
	char prefix[32];
	DIR *d;
	struct dirent *de;

	snprintf(prefix, sizeof prefix, "dsmkit.%08x.", cluster);
	if ((d = opendir("/dev/shm")) != NULL)
	{
		while ((de = readdir(d)) != NULL)
		{
			char name[300];

			if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
				continue;
			snprintf(name, sizeof name, "/%s", de->d_name);
			ereport(LOG, errmsg("removing leftover shared memory segment \"%s\"", name));
			if (shm_unlink(name) != 0 && errno != ENOENT)
				ereport(LOG, errcode_for_file_access(),
						errmsg("could not remove shared memory segment \"%s\": %m", name));
		}
		closedir(d);
	}
	if ((d = opendir(directory)) != NULL)
	{
		while ((de = readdir(d)) != NULL)
		{
			char path[4400];
			unsigned int a;
			unsigned int b;
			int consumed = -1;

			/* Any cluster id: an mmap file in our directory can only be ours. */
			if (sscanf(de->d_name, "dsmkit.%8x.%8x%n", &a, &b, &consumed) != 2 || consumed < 0 ||
				de->d_name[consumed] != '\0')
				continue;
			snprintf(path, sizeof path, "%s/%s", directory, de->d_name);
			ereport(LOG, errmsg("removing leftover shared memory file \"%s\"", path));
			if (unlink(path) != 0 && errno != ENOENT)
				ereport(LOG, errcode_for_file_access(), errmsg("could not remove file \"%s\": %m", path));
		}
		closedir(d);
	}
}

/*
 * Remove what a dead supervisor of this directory left: through its state
 * file, its control segment (mapped at LOG level, checked before its
 * contents are trusted; destroyed even when insane, since its name is in
 * our cluster's namespace) and every segment it lists; then sweep the
 * cluster's names.  Never trusts garbage; never raises except through
 * dsm_impl_configure() on an unusable directory.
 */
static void
cleanup_previous_cluster(const char *directory, uint32_t cluster)
{
	dsm_state_info info;

	if (dsm_read_state_file(directory, &info))
	{
		if (info.cluster_id != cluster)
			ereport(LOG, errmsg("ignoring state file of cluster %08x in \"%s\" (this is cluster %08x)",
								info.cluster_id, directory, cluster),
					errdetail("The directory was probably moved; its old segments cannot be named."));
		else
		{
			void *addr = NULL;
			void *priv = NULL;
			size_t size = 0;

			dsm_impl_configure(info.impl, directory);
			if (dsm_impl_op(DSM_OP_ATTACH, info.control_handle, 0, &priv, &addr, &size, DEBUG1))
			{
				if (dsm_control_segment_sane(addr, size))
				{
					ereport(LOG, errmsg("cleaning up after a crashed supervisor of \"%s\"", directory));
					dsm_control_destroy_all(addr, LOG);
				}
				else
					ereport(LOG, errmsg("ignoring corrupt dynamic shared memory control segment %u",
										info.control_handle));
				dsm_impl_op(DSM_OP_DESTROY, info.control_handle, 0, &priv, &addr, &size, LOG);
			}
		}
	}
	if (unlink(supervisor_state_path) != 0 && errno != ENOENT)
		ereport(LOG, errcode_for_file_access(),
				errmsg("could not remove file \"%s\": %m", supervisor_state_path));
	sweep_cluster_names(directory, cluster);
}

/* ---------------------------------------------------------------------
 * Startup and shutdown
 * ---------------------------------------------------------------------
 */

/* Free the supervisor's local bookkeeping.  Never fails. */
static void
supervisor_forget_local(void)
{
	if (supervisor_children != NULL)
		pfree(supervisor_children);
	if (supervisor_lock_path != NULL)
		pfree(supervisor_lock_path);
	if (supervisor_state_path != NULL)
		pfree(supervisor_state_path);
	supervisor_children = NULL;
	supervisor_lock_path = NULL;
	supervisor_state_path = NULL;
	supervisor_nslots = 0;
	supervisor_nchildren = 0;
	supervisor_pid = 0;
}

/* Drop the control segment mapping and the cluster directory; destroy the segment if asked. */
static void
forget_control(bool destroy)
{
	if (dsm_control != NULL)
	{
		void *addr = dsm_control;

		dsm_impl_op(destroy ? DSM_OP_DESTROY : DSM_OP_DETACH, dsm_control_handle, 0,
					&dsm_control_impl_private, &addr, &dsm_control_mapped_size, LOG);
	}
	dsm_control = NULL;
	dsm_control_handle = DSM_HANDLE_INVALID;
	dsm_control_mapped_size = 0;
	dsm_control_impl_private = NULL;
	if (dsm_cluster_directory != NULL)
		pfree((void *) dsm_cluster_directory);
	dsm_cluster_directory = NULL;
}

/*
 * The supervisor's on_shmem_exit hook: destroy every remaining segment,
 * the control segment, the state file and, last, the lock file.  Acts
 * only in the supervisor's own process (a forked child that somehow kept
 * the hook does nothing).  Never raises.
 */
static void
supervisor_shutdown(int code, Datum arg)
{
	(void) code;
	(void) arg;
	if (supervisor_pid != getpid())
		return;
	if (supervisor_nchildren > 0)
		ereport(LOG, errmsg("supervisor exiting while %d backends still run", supervisor_nchildren));
	if (dsm_control != NULL)
	{
		if (dsm_control_segment_sane(dsm_control, dsm_control_mapped_size))
			dsm_control_destroy_all(dsm_control, LOG);
		else
			ereport(LOG, errmsg("dynamic shared memory control segment is corrupt"));
	}
	forget_control(true);
	if (supervisor_state_path != NULL && unlink(supervisor_state_path) != 0 && errno != ENOENT)
		ereport(LOG, errcode_for_file_access(),
				errmsg("could not remove file \"%s\": %m", supervisor_state_path));
	if (supervisor_lock_path != NULL && unlink(supervisor_lock_path) != 0 && errno != ENOENT)
		ereport(LOG, errcode_for_file_access(),
				errmsg("could not remove file \"%s\": %m", supervisor_lock_path));
	supervisor_forget_local();
	dsm_role = DSMKIT_ROLE_NONE;
}

/*
 * Become the supervisor of config->directory (see supervisor.h).  On
 * ERROR everything made so far (control segment, state file, lock file,
 * local state) is undone before the error propagates.
 */
void
supervisor_startup(const DsmkitConfig *config)
{
	struct stat st;
	const char *directory;
	int impl;
	uint32_t max_backends;
	uint32_t maxitems;
	uint32_t cluster;
	size_t size;
	volatile bool have_lock = false;
	volatile bool have_state = false;
	int e;

	MemoryContextInit();
	if (dsm_role != DSMKIT_ROLE_NONE)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("supervisor_startup called in a process that is already a %s",
					   dsm_role == DSMKIT_ROLE_SUPERVISOR ? "supervisor" : "backend"));
	if (config == NULL || config->directory == NULL || config->directory[0] == '\0')
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("supervisor_startup needs a cluster directory"));
	directory = config->directory;
	impl = config->dsm_impl == 0 ? DEFAULT_DYNAMIC_SHARED_MEMORY_TYPE : config->dsm_impl;
	if (dsm_impl_name(impl) == NULL)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid dynamic shared memory implementation %d", config->dsm_impl),
				errhint("Use DSM_IMPL_POSIX, DSM_IMPL_SYSV or DSM_IMPL_MMAP."));
	if (config->max_backends < 0 || (uint32_t) config->max_backends > DSM_MAX_BACKENDS_LIMIT)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid max_backends %d", config->max_backends),
				errdetail("It must be between 1 and %u, or 0 for the default.", DSM_MAX_BACKENDS_LIMIT));
	max_backends = config->max_backends == 0 ? DEFAULT_MAX_BACKENDS : (uint32_t) config->max_backends;
	if (config->max_segments < 0 || (uint32_t) config->max_segments > DSM_MAX_SEGMENTS_LIMIT)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid max_segments %d", config->max_segments),
				errdetail("It must be between 1 and %u, or 0 for the default.", DSM_MAX_SEGMENTS_LIMIT));
	maxitems = config->max_segments == 0 ? 64 + 2 * max_backends : (uint32_t) config->max_segments;
	if (maxitems > DSM_MAX_SEGMENTS_LIMIT)
		maxitems = DSM_MAX_SEGMENTS_LIMIT;
	if (stat(directory, &st) != 0)
		ereport(ERROR, errcode_for_file_access(),
				errmsg("could not access cluster directory \"%s\": %m", directory));
	if (!S_ISDIR(st.st_mode))
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("cluster directory \"%s\" is not a directory", directory));
	if (access(directory, W_OK | X_OK) != 0)
		ereport(ERROR, errcode_for_file_access(),
				errmsg("cluster directory \"%s\" is not writable: %m", directory));
	cluster = dsm_impl_cluster_id_of(directory);

	supervisor_pid = getpid();
	supervisor_lock_path = psprintf_top(directory, LOCK_FILE_NAME);
	supervisor_state_path = psprintf_top(directory, STATE_FILE_NAME);
	supervisor_children = MemoryContextAllocZero(TopMemoryContext, sizeof(pid_t) * max_backends);
	supervisor_nslots = max_backends;
	dsm_cluster_directory = MemoryContextStrdup(TopMemoryContext, directory);

	PG_TRY();
	{
		dsm_state_info info;
		uint32_t slot_bits = dsm_control_slot_bits(maxitems);
		uint32_t slot_mask = (1u << slot_bits) - 1;
		uint32_t gen_mask = (slot_bits >= 32) ? 0 : ((1u << (32 - slot_bits)) - 1);
		uint32_t seed = (uint32_t) getpid() ^ (uint32_t) time(NULL);
		void *addr = NULL;

		take_lock_file(directory);
		have_lock = true;
		cleanup_previous_cluster(directory, cluster);
		if ((e = INJECTION_POINT("supervisor-startup-after-cleanup")) != 0)
		{
			errno = e;
			ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not start supervisor in \"%s\": %m", directory));
		}
		dsm_impl_configure(impl, directory);

		size = dsm_control_bytes_needed(maxitems, max_backends);
		info.impl = impl;
		info.cluster_id = dsm_impl_cluster_id();
		info.maxitems = maxitems;
		info.max_backends = max_backends;
		info.supervisor_pid = getpid();
		info.supervisor_start = dsm_process_start_time(getpid());
		/*
		 * The control segment's handle has all slot bits set, which no
		 * item handle has.  The state file names it before the segment is
		 * made, so a kill in between leaves nothing the next start-up
		 * cannot find.
		 */
		for (uint32_t attempt = 0;; attempt++)
		{
			uint32_t high = (seed + attempt) & gen_mask;

			if (attempt > 1000)
				ereport(ERROR, errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						errmsg("could not find a free name for the dynamic shared memory control segment"));
			info.control_handle = (high << slot_bits) | slot_mask;
			write_state_file(directory, &info);
			have_state = true;
			if ((e = INJECTION_POINT("dsm-control-create")) != 0)
			{
				errno = e;
				ereport(ERROR, errcode(ERRCODE_INSUFFICIENT_RESOURCES),
						errmsg("could not create the dynamic shared memory control segment: %m"));
			}
			if (dsm_impl_op(DSM_OP_CREATE, info.control_handle, size, &dsm_control_impl_private,
							&addr, &dsm_control_mapped_size, ERROR))
				break;
		}
		dsm_control = addr;
		dsm_control_handle = info.control_handle;
		if ((e = INJECTION_POINT("supervisor-startup-after-control")) != 0)
		{
			errno = e;
			ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not start supervisor in \"%s\": %m", directory));
		}
		dsm_control_init(dsm_control, size, maxitems, max_backends, info.cluster_id, (uint32_t) impl);
		on_shmem_exit(supervisor_shutdown, 0);
	}
	PG_CATCH();
	{
		forget_control(true);
		if (have_state)
			unlink(supervisor_state_path);
		if (have_lock)
			unlink(supervisor_lock_path);
		supervisor_forget_local();
		PG_RE_THROW();
	}
	PG_END_TRY();
	dsm_role = DSMKIT_ROLE_SUPERVISOR;
	ereport(DEBUG1, errmsg("supervisor of \"%s\" started: %u segment slots, %u backends, %s",
						   directory, maxitems, max_backends, dsm_impl_name(impl)));
}

/* ---------------------------------------------------------------------
 * Backends
 * ---------------------------------------------------------------------
 */

/* ERROR unless this process is the supervisor. */
static void
require_supervisor(const char *what)
{
	if (dsm_role != DSMKIT_ROLE_SUPERVISOR || supervisor_pid != getpid())
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("%s called in a process that is not the supervisor", what),
				errhint("Call supervisor_startup() first."));
}

/*
 * The child's side of supervisor_spawn_backend(): forget everything that
 * belongs to the supervisor (exit hooks, error state, resource owners, its
 * bookkeeping), become backend index, run the backend and leave through
 * proc_exit(0).  Never returns.
 */
static DSMKIT_NORETURN void
backend_child_main(int index, void (*backend_main)(Datum arg), Datum arg)
{
	on_exit_reset();
	ipc_after_fork();
	elog_after_fork();
	CurrentResourceOwner = NULL;
	supervisor_forget_local();
	dsm_local_reset();
	dsm_backend_set_running(index);
	dsm_backend_attach_local(index, false);
	backend_main(arg);
	proc_exit(0);
}

/*
 * Fork a backend (see supervisor.h).  Its backend slot is reserved in the
 * control segment before the fork, so that the supervisor knows the slot
 * of every child it may later have to reclaim, even one killed before it
 * ran a line.
 */
pid_t
supervisor_spawn_backend(void (*backend_main)(Datum arg), Datum arg)
{
	int index;
	pid_t pid;

	require_supervisor("supervisor_spawn_backend");
	index = dsm_backend_reserve(false);
	if (index < 0)
		ereport(ERROR, errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("too many backends"),
				errdetail("All %u backend slots are in use.", supervisor_nslots),
				errhint("Reap exited backends with supervisor_reap(), or raise max_backends."));
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		int save = errno;

		dsm_backend_reclaim(index, 0);
		errno = save;
		ereport(ERROR, errcode(ERRCODE_INSUFFICIENT_RESOURCES), errmsg("could not fork backend: %m"));
	}
	if (pid == 0)
		backend_child_main(index, backend_main, arg);
	(void) INJECTION_POINT("supervisor-spawn-after-fork");
	supervisor_children[index] = pid;
	supervisor_nchildren++;
	dsm_backend_set_pid(index, pid);
	return pid;
}

/* A spawned backend has been waited for: reclaim what it left and log how it ended. */
static void
backend_exited(int index, pid_t pid, int status, bool status_known)
{
	int dropped;

	supervisor_children[index] = 0;
	supervisor_nchildren--;
	(void) INJECTION_POINT("supervisor-reap-before-reclaim");
	dropped = dsm_backend_reclaim(index, pid);
	if (status_known && WIFSIGNALED(status))
		ereport(LOG, errmsg("backend %d (pid %d) was terminated by signal %d", index, (int) pid,
							WTERMSIG(status)),
				errdetail("%d references to dynamic shared memory segments were reclaimed.", dropped));
	else if (status_known && WIFEXITED(status) && WEXITSTATUS(status) != 0)
		ereport(LOG, errmsg("backend %d (pid %d) exited with exit code %d", index, (int) pid,
							WEXITSTATUS(status)),
				errdetail("%d references to dynamic shared memory segments were reclaimed.", dropped));
	else if (dropped > 0)
		ereport(LOG, errmsg("backend %d (pid %d) exited holding %d references; they were reclaimed",
							index, (int) pid, dropped));
}

/* Reclaim joined backends whose process is gone (pid plus start time).  Returns how many still run. */
static int
reap_joined_backends(void)
{
	dsm_control_backend *backends = dsm_control_backends(dsm_control);
	int running = 0;

	for (uint32_t i = 0; i < dsm_control->max_backends; i++)
	{
		dsm_control_backend *b = &backends[i];
		pid_t pid = b->pid;

		if (b->state != DSM_BACKEND_RUNNING || !b->joined)
			continue;
		if (dsm_process_alive(pid, b->start_time))
		{
			running++;
			continue;
		}
		{
			int dropped = dsm_backend_reclaim((int) i, pid);

			ereport(LOG, errmsg("joined backend %u (pid %d) is gone", i, (int) pid),
					errdetail("%d references to dynamic shared memory segments were reclaimed.",
							  dropped));
		}
	}
	return running;
}

/*
 * Block until one of the spawned backends has exited, without reaping it
 * (the caller's waitpid() scan does that), or until a signal interrupts
 * the wait.  Only backends are waited for, through a pidfd each, so the
 * exit status of any other child of this process stays for whoever waits
 * for it (a blocking waitpid(-1) would steal it).  Where pidfds are not
 * available (Linux before 5.3, or no descriptor left) it sleeps 10 ms
 * instead, and the caller scans again.  Never raises.
 */
static void
wait_for_backend_exit(void)
{
	struct pollfd *fds = malloc(sizeof(struct pollfd) * (supervisor_nslots > 0 ? supervisor_nslots : 1));
	nfds_t n = 0;
	bool usable = fds != NULL;
	bool gone = false;

	for (uint32_t i = 0; usable && i < supervisor_nslots; i++)
	{
		int fd;

		if (supervisor_children[i] <= 0)
			continue;
#ifdef SYS_pidfd_open
		fd = (int) syscall(SYS_pidfd_open, (int) supervisor_children[i], 0);
#else
		fd = -1;
		errno = ENOSYS;
#endif
		if (fd < 0)
		{
			/* ESRCH: someone else reaped it; the caller's scan sees ECHILD at once. */
			if (errno == ESRCH)
				gone = true;
			else
				usable = false;
			break;
		}
		fds[n].fd = fd;
		fds[n].events = POLLIN;
		fds[n].revents = 0;
		n++;
	}
	if (!gone && usable && n > 0)
		(void) poll(fds, n, -1); /* EINTR too: the caller scans again */
	else if (!gone)
	{
		struct timespec ts = {0, 10 * 1000 * 1000};

		(void) nanosleep(&ts, NULL);
	}
	for (nfds_t k = 0; k < n; k++)
		close(fds[k].fd);
	free(fds);
}

/*
 * Collect exited backends (see supervisor.h).  Spawned backends are
 * waited for by pid; joined backends are checked for liveness (pid and
 * start time).  A dead backend's references are reclaimed and its slot
 * freed.  With wait true and spawned backends running, blocks until one
 * of them exits (wait_for_backend_exit()); other children of this process
 * are never waited for.  Returns the number of backends (spawned and
 * joined) still running.
 */
int
supervisor_reap(bool wait)
{
	bool reaped = false;

	require_supervisor("supervisor_reap");
	for (;;)
	{
		for (uint32_t i = 0; i < supervisor_nslots; i++)
		{
			pid_t pid = supervisor_children[i];
			int status = 0;
			pid_t r;

			if (pid <= 0)
				continue;
			do
				r = waitpid(pid, &status, WNOHANG);
			while (r < 0 && errno == EINTR);
			if (r == pid)
			{
				backend_exited((int) i, pid, status, true);
				reaped = true;
			}
			else if (r < 0 && errno == ECHILD)
			{
				/* Someone else waited for it: it is gone all the same. */
				backend_exited((int) i, pid, 0, false);
				reaped = true;
			}
		}
		if (!wait || reaped || supervisor_nchildren == 0)
			break;
		wait_for_backend_exit();
	}
	return supervisor_nchildren + reap_joined_backends();
}

/*
 * Join the cluster of directory from a process the supervisor did not
 * fork (see supervisor.h).  On ERROR nothing is left: the backend slot is
 * given back and the control segment unmapped.
 */
void
backend_join(const char *directory)
{
	dsm_state_info info;
	void *addr = NULL;
	volatile int index = -1;
	int e;

	MemoryContextInit();
	if (dsm_role != DSMKIT_ROLE_NONE)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("backend_join called in a process that is already a %s",
					   dsm_role == DSMKIT_ROLE_SUPERVISOR ? "supervisor" : "backend"));
	if (directory == NULL || directory[0] == '\0')
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("backend_join needs a cluster directory"));
	if (!dsm_read_state_file(directory, &info))
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("no supervisor is running in \"%s\"", directory),
				errdetail("The state file \"%s/%s\" is missing or unusable.", directory,
						  STATE_FILE_NAME));
	if (!dsm_process_alive(info.supervisor_pid, info.supervisor_start))
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("no supervisor is running in \"%s\"", directory),
				errdetail("The state file names process %d, which is gone.", (int) info.supervisor_pid));
	dsm_impl_configure(info.impl, directory);
	if (dsm_impl_cluster_id() != info.cluster_id)
		ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("the state file in \"%s\" belongs to cluster %08x, not %08x", directory,
					   info.cluster_id, dsm_impl_cluster_id()));
	dsm_impl_op(DSM_OP_ATTACH, info.control_handle, 0, &dsm_control_impl_private, &addr,
				&dsm_control_mapped_size, ERROR);
	dsm_control = addr;
	dsm_control_handle = info.control_handle;
	PG_TRY();
	{
		dsm_cluster_directory = MemoryContextStrdup(TopMemoryContext, directory);
		if (!dsm_control_segment_sane(dsm_control, dsm_control_mapped_size) ||
			dsm_control->supervisor_pid != (int32_t) info.supervisor_pid)
			ereport(ERROR, errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("dynamic shared memory control segment %u of \"%s\" is not valid",
						   info.control_handle, directory));
		index = dsm_backend_reserve(true);
		if (index < 0)
			ereport(ERROR, errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED), errmsg("too many backends"),
					errdetail("All %u backend slots of \"%s\" are in use.", dsm_control->max_backends,
							  directory));
		if ((e = INJECTION_POINT("backend-join-after-state")) != 0)
		{
			errno = e;
			ereport(ERROR, errcode(ERRCODE_SYSTEM_ERROR),
					errmsg("could not join the cluster in \"%s\": %m", directory));
		}
		dsm_backend_attach_local(index, true);
	}
	PG_CATCH();
	{
		if (index >= 0)
			dsm_backend_reclaim(index, getpid());
		forget_control(false);
		dsm_local_reset();
		PG_RE_THROW();
	}
	PG_END_TRY();
}
