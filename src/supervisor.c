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
 * The lock protocol (dsm_lock_file_acquire(), used by supervisor_startup()
 * and by dsm_cluster_cleanup() in inspect.c).  Who owns the directory is
 * decided by an exclusive flock(2) on the inode that bears the name
 * "dsmkit.pid", not by the file's contents alone:
 *
 *   1. The would-be owner writes "<pid>\n<start>\n" to its private
 *      "dsmkit.pid.tmp.<pid>", flocks that file (nobody else knows it, so
 *      this cannot block) and link(2)s it to "dsmkit.pid".  If the link
 *      succeeds, the lock file is locked from the instant it exists, and
 *      the owner keeps the descriptor, and with it the flock, open for its
 *      whole life.
 *   2. If the name exists (EEXIST), it opens that file and tries
 *      flock(LOCK_EX | LOCK_NB).  If that fails, someone owns the
 *      directory (or is taking it over): refused, nothing changed.
 *   3. If it gets the flock, it checks that the descriptor's inode is still
 *      the one named "dsmkit.pid" (it may have been replaced meanwhile;
 *      then it starts again), and reads the contents.  A lock file naming
 *      a live process is respected even without a flock (a supervisor of
 *      an older dsmkit).  Otherwise the file is stale: it is unlinked
 *      while the flock on it is held, and the owner goes back to step 1.
 *      Two processes can therefore never both remove a lock file, and a
 *      lock file that another process has just linked into place (and
 *      flocked, step 1) can never be taken for stale.
 *   4. The owner releases the directory by unlinking "dsmkit.pid" first
 *      and closing the descriptor second, so whoever flocks the old inode
 *      afterwards sees in step 3 that it is no longer the lock file.
 *
 * A flock belongs to the open file description, which fork() shares:
 * a spawned backend closes its copy of the descriptor first thing after
 * the fork (closing a copy does not release the lock, which goes only
 * with the last descriptor; flock(LOCK_UN) in the child would release the
 * parent's lock, so it is never used).  A process the supervisor forks by
 * other means keeps the lock alive until it exits or execs (the
 * descriptor is close-on-exec); while the lock file names a dead process
 * but stays locked, a new supervisor waits about a second and is then
 * refused with a detail saying so.
 *
 * Start-up order, chosen so that a kill at any point leaves only what the
 * next start-up removes: lock file; crash cleanup (through the old state
 * file and control segment, then a sweep of the cluster's POSIX and mmap
 * names); state file naming the new control handle; the control segment.
 * Crash cleanup first waits a little for the old supervisor's backends to
 * die (they are normally being killed with it) and refuses to start while
 * any of them still runs, since it would destroy segments they map.
 * Shutdown runs in the reverse order and releases the lock file last.
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
#include <sys/file.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
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
static int supervisor_lock_fd = -1;        /* holds the flock on the lock file; -1 if none */

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

/* flock(fd, LOCK_EX | LOCK_NB), retrying EINTR; 0 or the errno. */
static int
flock_exclusive_nowait(int fd)
{
	int r;

	do
		r = flock(fd, LOCK_EX | LOCK_NB);
	while (r != 0 && errno == EINTR);
	return r == 0 ? 0 : errno;
}

/* Parse lock file contents "<pid>\n<start>\n"; false (pid 0) for garbage. */
static bool
parse_lock_contents(const char *buf, pid_t *pid, uint64_t *start)
{
	int p = 0;
	unsigned long long s = 0;

	*pid = 0;
	*start = 0;
	if (sscanf(buf, "%d\n%llu", &p, &s) != 2 || p <= 0)
		return false;
	*pid = p;
	*start = s;
	return true;
}

/* Read the open lock file fd from its start into buf (NUL-terminated; empty on failure). */
static void
read_lock_fd(int fd, char *buf, size_t bufsize)
{
	ssize_t n;

	do
		n = pread(fd, buf, bufsize - 1, 0);
	while (n < 0 && errno == EINTR);
	buf[n > 0 ? n : 0] = '\0';
}

/* Sleep ms milliseconds (EINTR shortens it, which the callers tolerate). */
static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000 * 1000};

	(void) nanosleep(&ts, NULL);
}

/*
 * Take the lock file of directory for this process, following the
 * protocol described at the top of this file (see dsm_int.h for the
 * contract).  The temporary file is removed on every path.
 */
int
dsm_lock_file_acquire(const char *directory, dsm_lock_holder *holder)
{
	char path[4096];
	char tmp[4096];
	char buf[128];
	int len;
	int fd;
	int e;
	int locked_waits = 0;

	holder->pid = 0;
	holder->alive = false;
	holder->stale_removed = 0;
	holder->stale_pid = 0;
	snprintf(path, sizeof path, "%s/%s", directory, LOCK_FILE_NAME);
	snprintf(tmp, sizeof tmp, "%s/%s.tmp.%d", directory, LOCK_FILE_NAME, (int) getpid());
	len = snprintf(buf, sizeof buf, "%d\n%llu\n", (int) getpid(),
				   (unsigned long long) dsm_process_start_time(getpid()));
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		ereport(ERROR, errcode_for_file_access(), errmsg("could not create file \"%s\": %m", tmp));
	if ((e = flock_exclusive_nowait(fd)) != 0)
	{
		close(fd);
		unlink(tmp);
		errno = e;
		ereport(ERROR, errcode_for_file_access(), errmsg("could not lock file \"%s\": %m", tmp));
	}
	if (!write_all(fd, buf, (size_t) len) || fsync(fd) != 0)
	{
		int save = errno;

		close(fd);
		unlink(tmp);
		errno = save;
		ereport(ERROR, errcode_for_file_access(), errmsg("could not write file \"%s\": %m", tmp));
	}

	for (int attempt = 0;; attempt++)
	{
		char old[128];
		pid_t oldpid;
		uint64_t oldstart;
		struct stat fst;
		struct stat pst;
		int ofd = -1;
		bool alive;

		if (link(tmp, path) == 0)
			break;
		e = errno;
		if (e == EEXIST && attempt < 100)
		{
			ofd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			if (ofd < 0 && errno == ENOENT)
				continue; /* released or removed meanwhile: link again */
			e = ofd < 0 ? errno : 0;
		}
		if (e != 0)
		{
			close(fd);
			unlink(tmp);
			errno = e;
			ereport(ERROR, errcode_for_file_access(),
					errmsg("could not create lock file \"%s\": %m", path));
		}
		e = flock_exclusive_nowait(ofd);
		read_lock_fd(ofd, old, sizeof old);
		(void) parse_lock_contents(old, &oldpid, &oldstart);
		alive = dsm_process_alive(oldpid, oldstart);
		if (e == EWOULDBLOCK)
		{
			close(ofd);
			/*
			 * Locked.  If it names a live process, that is its owner.  If
			 * it names a dead one, someone is taking a stale lock file over
			 * right now (its own file replaces this one in a moment), or a
			 * process forked by the dead owner still holds the lock: wait
			 * up to about a second to learn which.
			 */
			if (!alive && locked_waits++ < 200)
			{
				sleep_ms(5);
				attempt--;
				continue;
			}
			holder->pid = oldpid;
			holder->alive = alive;
			close(fd);
			unlink(tmp);
			return -1;
		}
		if (e != 0)
		{
			close(ofd);
			close(fd);
			unlink(tmp);
			errno = e;
			ereport(ERROR, errcode_for_file_access(), errmsg("could not lock file \"%s\": %m", path));
		}
		/* We hold the flock of that inode; is it still the lock file? */
		if (fstat(ofd, &fst) != 0 || stat(path, &pst) != 0 || fst.st_ino != pst.st_ino ||
			fst.st_dev != pst.st_dev)
		{
			close(ofd);
			continue;
		}
		if (alive && oldpid != getpid())
		{
			/* A live owner that holds no flock: a supervisor of an older dsmkit.  Respect it. */
			close(ofd);
			holder->pid = oldpid;
			holder->alive = true;
			close(fd);
			unlink(tmp);
			return -1;
		}
		/* Stale: remove it while its flock is ours, so nobody else can remove it too. */
		if (unlink(path) != 0 && errno != ENOENT)
		{
			int save = errno;

			close(ofd);
			close(fd);
			unlink(tmp);
			errno = save;
			ereport(ERROR, errcode_for_file_access(),
					errmsg("could not remove stale lock file \"%s\": %m", path));
		}
		close(ofd);
		holder->stale_removed++;
		holder->stale_pid = oldpid;
	}
	unlink(tmp);
	fsync_directory(directory);
	return fd;
}

/* Give the lock file back (see dsm_int.h): unlink first, close second.  Never raises. */
void
dsm_lock_file_release(const char *lock_path, int fd, int elevel)
{
	if (unlink(lock_path) != 0 && errno != ENOENT)
		ereport(elevel, errcode_for_file_access(),
				errmsg("could not remove lock file \"%s\": %m", lock_path));
	if (fd >= 0)
		close(fd);
}

/*
 * Take the cluster directory's lock file for the supervisor starting in
 * this process (dsm_lock_file_acquire()) and keep its descriptor in
 * supervisor_lock_fd.  ERROR (ERRCODE_OBJECT_IN_USE) if another process
 * owns the directory; ERROR for a failed system call.  Nothing is left
 * behind on ERROR.
 */
static void
take_lock_file(const char *directory)
{
	dsm_lock_holder holder;
	int fd = dsm_lock_file_acquire(directory, &holder);

	if (fd >= 0)
	{
		supervisor_lock_fd = fd;
		if (holder.stale_removed > 0)
			ereport(LOG, errmsg("removed stale lock file \"%s\"", supervisor_lock_path),
					errdetail("The process it names (%d) is gone.", (int) holder.stale_pid));
		return;
	}
	if (holder.alive)
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("supervisor already running in \"%s\"", directory),
				errdetail("The lock file \"%s\" names process %d, which is running.",
						  supervisor_lock_path, (int) holder.pid),
				errhint("Stop that supervisor first, or use another directory."));
	ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
			errmsg("supervisor already running in \"%s\"", directory),
			errdetail("Another process holds the lock on \"%s\", which names process %d, now gone: "
					  "a supervisor or a cleanup is taking the directory over, or a process forked "
					  "by the dead supervisor still runs.",
					  supervisor_lock_path, (int) holder.pid),
			errhint("Try again; if it persists, stop the processes of the old cluster."));
}

/* ---------------------------------------------------------------------
 * Crash cleanup
 * ---------------------------------------------------------------------
 */

/* Report one object removed by the sweep: to the callback, or at LOG. */
static void
sweep_removed(dsm_sweep_callback removed, void *arg, const char *what, const char *name)
{
	if (removed != NULL)
		removed(what, name, arg);
	else
		ereport(LOG, errmsg("removed %s \"%s\"", what, name));
}

/*
 * The name sweep of a dead cluster (see dsm_int.h for the contract): the
 * POSIX objects "dsmkit.<cluster>.*", the mmap files "dsmkit.<x>.<y>" in
 * the directory (any cluster id: a file of that shape there can only be
 * this cluster's, even if the directory was moved since), and the
 * temporary state and lock files of writers that are gone.
 */
int
dsm_sweep_cluster_names(const char *directory, uint32_t cluster, dsm_sweep_callback removed,
						void *arg, int fail_elevel)
{
	char prefix[32];
	DIR *volatile d = NULL;
	volatile int count = 0;

	snprintf(prefix, sizeof prefix, "dsmkit.%08x.", cluster);
	/* Only the callback can raise; the directory stream is closed on the way out all the same. */
	PG_TRY();
	{
		struct dirent *de;

		if ((d = opendir("/dev/shm")) != NULL)
		{
			while ((de = readdir(d)) != NULL)
			{
				char name[300];

				if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
					continue;
				snprintf(name, sizeof name, "/%s", de->d_name);
				if (shm_unlink(name) == 0)
				{
					count++;
					sweep_removed(removed, arg, "leftover shared memory segment", name);
				}
				else if (errno != ENOENT)
					ereport(fail_elevel, errcode_for_file_access(),
							errmsg("could not remove leftover shared memory segment \"%s\": %m", name));
			}
			closedir(d);
			d = NULL;
		}
		if ((d = opendir(directory)) != NULL)
		{
			while ((de = readdir(d)) != NULL)
			{
				char path[4400];
				const char *what;
				unsigned int a;
				unsigned int b;
				int pid = 0;
				int consumed = -1;

				if ((sscanf(de->d_name, STATE_FILE_NAME ".tmp.%d%n", &pid, &consumed) == 1 ||
					 sscanf(de->d_name, LOCK_FILE_NAME ".tmp.%d%n", &pid, &consumed) == 1) &&
					consumed > 0 && de->d_name[consumed] == '\0')
				{
					/* A temporary state or lock file: only its writer's death makes it garbage. */
					if (pid == (int) getpid() || dsm_process_alive(pid, 0))
						continue;
					what = "leftover temporary file";
				}
				else
				{
					consumed = -1;
					if (sscanf(de->d_name, "dsmkit.%8x.%8x%n", &a, &b, &consumed) != 2 ||
						consumed < 0 || de->d_name[consumed] != '\0')
						continue;
					what = "leftover segment file";
				}
				snprintf(path, sizeof path, "%s/%s", directory, de->d_name);
				if (unlink(path) == 0)
				{
					count++;
					sweep_removed(removed, arg, what, path);
				}
				else if (errno != ENOENT)
					ereport(fail_elevel, errcode_for_file_access(),
							errmsg("could not remove %s \"%s\": %m", what, path));
			}
			closedir(d);
			d = NULL;
		}
	}
	PG_FINALLY();
	{
		if (d != NULL)
			closedir(d);
	}
	PG_END_TRY();
	return count;
}

/* Milliseconds of CLOCK_MONOTONIC. */
static int64_t
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define OLD_BACKENDS_WAIT_MS 5000 /* how long start-up waits for a dead supervisor's backends */
#define OLD_BACKENDS_POLL_MAX 64  /* pidfds polled at once; the rest are re-checked each round */
#define OLD_BACKENDS_SHOWN 5      /* pids named in the ERROR's detail */

/*
 * Wait for the backends of a dead supervisor to die, for at most
 * OLD_BACKENDS_WAIT_MS.  control is the old control segment, already
 * found sane; it is read without its lock (taking the lock could repair a
 * dead holder's update, and the caller must change nothing until it
 * knows it may go on), which is good enough: a backend slot of a live
 * backend is stable, and one that changes is that of a backend leaving.
 * A backend counts while its slot is STARTING or RUNNING with a pid whose
 * process runs with the recorded start time (a zombie is dead).  Each
 * round re-reads the slots, then sleeps until one of them exits (a pidfd
 * each, polled; at most 250 ms, so that a reused pid cannot keep it
 * waiting) or, without pidfds, 10 ms.  Returns how many still run at the
 * end, with the first pids in shown[0 .. nshown-1].  Never raises.
 */
static int
wait_for_old_backends(dsm_control_header *control, const char *directory, pid_t *shown, int nshown)
{
	dsm_control_backend *backends = dsm_control_backends(control);
	uint32_t max_backends = control->max_backends;
	int64_t deadline = monotonic_ms() + OLD_BACKENDS_WAIT_MS;
	bool logged = false;

	for (;;)
	{
		struct pollfd fds[OLD_BACKENDS_POLL_MAX];
		nfds_t nfds = 0;
		bool use_pidfd = true;
		int live = 0;
		int64_t left;

		for (uint32_t i = 0; i < max_backends; i++)
		{
			dsm_control_backend *b = &backends[i];
			uint32_t state = __atomic_load_n(&b->state, __ATOMIC_RELAXED);
			pid_t pid = (pid_t) __atomic_load_n(&b->pid, __ATOMIC_RELAXED);
			uint64_t start = __atomic_load_n(&b->start_time, __ATOMIC_RELAXED);
			int fd;

			if ((state != DSM_BACKEND_RUNNING && state != DSM_BACKEND_STARTING) || pid <= 0 ||
				pid == getpid() || !dsm_process_alive(pid, start))
				continue;
			if (live < nshown)
				shown[live] = pid;
			live++;
			if (!use_pidfd || nfds >= OLD_BACKENDS_POLL_MAX)
				continue;
#ifdef SYS_pidfd_open
			fd = (int) syscall(SYS_pidfd_open, (int) pid, 0);
#else
			fd = -1;
			errno = ENOSYS;
#endif
			if (fd >= 0)
			{
				fds[nfds].fd = fd;
				fds[nfds].events = POLLIN;
				fds[nfds].revents = 0;
				nfds++;
			}
			else if (errno != ESRCH) /* ESRCH: it just died; the next round sees that */
				use_pidfd = false;
		}
		left = deadline - monotonic_ms();
		if (live > 0 && left > 0)
		{
			if (!logged)
				ereport(LOG, errmsg("waiting for %d backends of the previous supervisor of \"%s\" to exit",
									live, directory));
			logged = true;
			if (use_pidfd && nfds > 0)
				(void) poll(fds, nfds, (int) (left < 250 ? left : 250));
			else
				sleep_ms(left < 10 ? (int) left : 10);
		}
		for (nfds_t k = 0; k < nfds; k++)
			close(fds[k].fd);
		if (live == 0 || left <= 0)
			return live;
	}
}

/*
 * Clean up through an old control segment mapped at addr (size bytes):
 * if it is sane, wait for the backends it lists (ERROR as described for
 * cleanup_previous_cluster() if any still runs; the mapping is dropped
 * first with detach_handle's DETACH), then destroy every segment it
 * lists.  Returns false if it is not sane (nothing done).  The caller has
 * configured the old cluster's implementation.  control_handle
 * DSM_HANDLE_INVALID: the caller unmaps it itself.
 */
static bool
cleanup_through_control(void *addr, size_t size, const char *directory, dsm_handle control_handle,
						void **priv)
{
	pid_t shown[OLD_BACKENDS_SHOWN];
	int live;

	if (!dsm_control_segment_sane(addr, size))
		return false;
	live = wait_for_old_backends(addr, directory, shown, OLD_BACKENDS_SHOWN);
	if (live > 0)
	{
		char list[OLD_BACKENDS_SHOWN * 16 + 16];
		size_t used = 0;
		pid_t old_supervisor = ((dsm_control_header *) addr)->supervisor_pid;

		list[0] = '\0';
		for (int k = 0; k < live && k < OLD_BACKENDS_SHOWN; k++)
			used += (size_t) snprintf(list + used, sizeof list - used, "%s%d", k > 0 ? ", " : "",
									  (int) shown[k]);
		if (live > OLD_BACKENDS_SHOWN)
			snprintf(list + used, sizeof list - used, ", ...");
		if (control_handle != DSM_HANDLE_INVALID)
			dsm_impl_op(DSM_OP_DETACH, control_handle, 0, priv, &addr, &size, LOG);
		ereport(ERROR, errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("backends of a previous supervisor are still running in \"%s\"", directory),
				live == 1
				? errdetail("Backend process %s of the dead supervisor %d still runs "
							"and may map its segments.",
							list, (int) old_supervisor)
				: errdetail("%d backend processes of the dead supervisor %d still run "
							"(pids %s) and may map its segments.",
							live, (int) old_supervisor, list),
				errhint("Stop them (or kill them) and start again."));
	}
	ereport(LOG, errmsg("cleaning up after a crashed supervisor of \"%s\"", directory));
	dsm_control_destroy_all(addr, LOG);
	return true;
}

/*
 * System V segments have no names to sweep, so without a usable state
 * file a dead System V cluster's segments would stay: find its control
 * segment instead.  It is a System V segment whose key carries this
 * cluster's tag and whose contents are a sane control segment of this
 * cluster id for System V, which no process attaches and whose supervisor
 * is gone (the tag alone is only 16 bits, so other clusters' segments may
 * carry it too, and a live cluster elsewhere may even share the cluster
 * id; those are only looked at, read only, and left alone).  Each such segment is cleaned up through as at a
 * normal restart and then removed.  Never raises, except the ERROR of
 * cleanup_through_control() for backends that still run.
 */
static void
cleanup_sysv_control_by_tag(const char *directory, uint32_t cluster)
{
	FILE *f = fopen("/proc/sysvipc/shm", "re");
	uint32_t tag = ((cluster >> 16) ^ (cluster & 0xffff)) & 0xffff;
	char line[512];
	key_t *keys = NULL;
	int nkeys = 0;
	int maxkeys = 0;

	if (f == NULL)
		return;
	/* The keys first (removing segments while /proc lists them could skip some). */
	if (fgets(line, sizeof line, f) != NULL)
	{
		while (fgets(line, sizeof line, f) != NULL)
		{
			long long key;

			if (sscanf(line, "%lld", &key) != 1 || ((uint32_t) key >> 16) != tag ||
				(uint32_t) key == 0)
				continue;
			if (nkeys == maxkeys)
			{
				key_t *bigger = realloc(keys, sizeof(key_t) * (size_t) (maxkeys = maxkeys * 2 + 64));

				if (bigger == NULL)
					break; /* out of memory: look at those we have */
				keys = bigger;
			}
			keys[nkeys++] = (key_t) key;
		}
	}
	fclose(f);
	for (int k = 0; k < nkeys; k++)
	{
		struct shmid_ds ds;
		int id = shmget(keys[k], 0, 0);
		void *addr;
		const dsm_control_header *control;
		bool ours;

		if (id < 0 || shmctl(id, IPC_STAT, &ds) != 0 || ds.shm_segsz < sizeof(dsm_control_header))
			continue;
		addr = shmat(id, NULL, SHM_RDONLY);
		if (addr == (void *) -1)
			continue;
		control = addr;
		ours = dsm_control_segment_sane(control, ds.shm_segsz) && control->cluster_id == cluster &&
			control->impl == DSM_IMPL_SYSV;
		/*
		 * The lock file covers this directory only: a live cluster can have
		 * our cluster id (its directory renamed while it runs and a new one
		 * made at the old path, containers sharing System V IPC but not the
		 * file system, a hash collision).  A live cluster keeps its control
		 * segment attached (counted before we attached it), and its
		 * supervisor may be visible.
		 */
		if (ours && (ds.shm_nattch > 0 ||
					 dsm_process_alive(control->supervisor_pid, control->supervisor_start_time)))
		{
			ereport(LOG, errmsg("leaving the System V control segment with key 0x%08x alone: it is in use",
								(unsigned) keys[k]),
					errdetail("It names cluster %08x like this directory, but %lu processes attach it "
							  "(supervisor pid %d).",
							  cluster, (unsigned long) ds.shm_nattch, (int) control->supervisor_pid));
			ours = false;
		}
		if (ours)
		{
			dsm_handle h = DSM_HANDLE_INVALID; /* only reports need it */
			void *priv = NULL;

			ereport(LOG, errmsg("found the System V control segment (key 0x%08x) of a crashed supervisor of \"%s\"",
								(unsigned) keys[k], directory),
					errdetail("Its state file was missing or unusable."));
			dsm_impl_configure(DSM_IMPL_SYSV, directory);
			PG_TRY();
			{
				(void) cleanup_through_control(addr, ds.shm_segsz, directory, h, &priv);
			}
			PG_CATCH();
			{
				shmdt(addr);
				free(keys);
				PG_RE_THROW();
			}
			PG_END_TRY();
		}
		shmdt(addr);
		if (ours && shmctl(id, IPC_RMID, NULL) != 0)
			ereport(LOG, errcode_for_file_access(),
					errmsg("could not remove the System V control segment with key 0x%08x: %m",
						   (unsigned) keys[k]));
	}
	free(keys);
}

/*
 * Remove what a dead supervisor of this directory left: through its state
 * file, its control segment (mapped at DEBUG1 level, checked before its
 * contents are trusted; destroyed even when insane, since its name is in
 * our cluster's namespace) and every segment it lists; then sweep the
 * cluster's names.  Never trusts garbage.  System V control segments
 * that no state file names are looked for by their key tag
 * (cleanup_sysv_control_by_tag()).
 *
 * Before anything is removed, backends of the dead supervisor that still
 * run (listed in a sane control segment) are given OLD_BACKENDS_WAIT_MS
 * to die; if any still runs then, ERROR (ERRCODE_OBJECT_IN_USE) with the
 * state file, the control segment and every segment untouched, because
 * those backends may map them and may still create segments that nobody
 * would clean up.  Otherwise raises only through dsm_impl_configure() on
 * an unusable directory.
 */
static void
cleanup_previous_cluster(const char *directory, uint32_t cluster)
{
	dsm_state_info info;
	bool cleaned = false;

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
				cleaned = cleanup_through_control(addr, size, directory, info.control_handle, &priv);
				if (!cleaned)
					ereport(LOG, errmsg("ignoring corrupt dynamic shared memory control segment %u",
										info.control_handle));
				dsm_impl_op(DSM_OP_DESTROY, info.control_handle, 0, &priv, &addr, &size, LOG);
			}
		}
	}
	/* Also after a clean-up through the state file: an older crash may have lost its state file. */
	cleanup_sysv_control_by_tag(directory, cluster);
	if (unlink(supervisor_state_path) != 0 && errno != ENOENT)
		ereport(LOG, errcode_for_file_access(),
				errmsg("could not remove file \"%s\": %m", supervisor_state_path));
	(void) dsm_sweep_cluster_names(directory, cluster, NULL, NULL, LOG);
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
	if (supervisor_lock_path != NULL)
		dsm_lock_file_release(supervisor_lock_path, supervisor_lock_fd, LOG);
	supervisor_lock_fd = -1;
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
			dsm_lock_file_release(supervisor_lock_path, supervisor_lock_fd, LOG);
		supervisor_lock_fd = -1;
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
 * belongs to the supervisor (the lock file's descriptor, exit hooks, error
 * state, resource owners, its bookkeeping), become backend index, run the
 * backend and leave through proc_exit(0).  Never returns.
 */
static DSMKIT_NORETURN void
backend_child_main(int index, void (*backend_main)(Datum arg), Datum arg)
{
	/*
	 * First of all, close our copy of the lock file's descriptor: the
	 * flock stays with the supervisor's copy (it is released only when the
	 * last descriptor of the open file description goes), and a backend
	 * that outlives its supervisor must not keep the directory locked.
	 * Never flock(LOCK_UN) here: that would release the supervisor's lock.
	 */
	if (supervisor_lock_fd >= 0)
		close(supervisor_lock_fd);
	supervisor_lock_fd = -1;
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

		dsm_backend_reclaim(index, 0, 0);
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
	dropped = dsm_backend_reclaim(index, pid, 0);
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
		uint64_t start = b->start_time;

		if (b->state != DSM_BACKEND_RUNNING || !b->joined)
			continue;
		if (dsm_process_alive(pid, start))
		{
			running++;
			continue;
		}
		{
			/* The reclaim re-checks pid and start time under the lock: the slot may have changed hands. */
			int dropped = dsm_backend_reclaim((int) i, pid, start);

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
			dsm_backend_reclaim(index, getpid(), 0);
		forget_control(false);
		dsm_local_reset();
		PG_RE_THROW();
	}
	PG_END_TRY();
}
