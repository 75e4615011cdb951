/*
 * dsm_impl_posix.c: POSIX shared memory segments (shm_open(3) in /dev/shm),
 * and the fd-based engine that the mmap implementation shares.
 *
 * A segment is a file descriptor's object: created with O_CREAT|O_EXCL,
 * sized with ftruncate(2), its space reserved with posix_fallocate(3) so
 * that a full /dev/shm is reported now rather than as a SIGBUS on first
 * touch, mapped MAP_SHARED, and the descriptor closed at once (a mapping
 * does not need it, and an open descriptor per segment would exhaust the
 * process's descriptor limit long before memory runs out).  RESIZE opens
 * the name again.  Nothing is kept in impl_private.
 *
 * Every path that fails undoes what it made (descriptor, mapping, the
 * half-made object) before it reports, with errno saved across the cleanup
 * so that %m names the call that failed.  EINTR is retried at every call,
 * including those that cannot really return it (mmap, munmap), so that an
 * injected EINTR is always retried.
 */
#define _GNU_SOURCE
#include "dsm_impl_int.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* open_fn/unlink_fn retried on EINTR, through the injection point. */
static int
open_retry(const dsm_impl_fd_ops *ops, const char *name, int flags, const char *point)
{
	int fd;

	do
		fd = DSM_INJECT(point, -1,
						ops->open_fn(name, flags | O_CLOEXEC | ops->extra_flags, 0600));
	while (fd < 0 && errno == EINTR);
	return fd;
}

static int
truncate_retry(int fd, off_t size, const char *point)
{
	int rc;

	do
		rc = DSM_INJECT(point, -1, ftruncate(fd, size));
	while (rc < 0 && errno == EINTR);
	return rc;
}

/*
 * Reserve [from, from + len) of fd's object.  Returns 0 or an errno value
 * (posix_fallocate() returns its error instead of setting errno).  glibc's
 * posix_fallocate() can be interrupted by a signal part way; it is
 * idempotent, so it is simply called again.
 */
static int
reserve(int fd, off_t from, off_t len, const char *point)
{
#ifdef HAVE_POSIX_FALLOCATE
	int rc;

	do
	{
		int e = INJECTION_POINT(point);

		rc = e != 0 ? e : posix_fallocate(fd, from, len);
	} while (rc == EINTR);
	return rc;
#else
	return INJECTION_POINT(point);
#endif
}

static int
stat_retry(int fd, struct stat *st, const char *point)
{
	int rc;

	do
		rc = DSM_INJECT(point, -1, fstat(fd, st));
	while (rc < 0 && errno == EINTR);
	return rc;
}

static void *
map_retry(size_t size, int fd, const char *point)
{
	void *addr;

	do
		addr = DSM_INJECT(point, MAP_FAILED,
						  mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
	while (addr == MAP_FAILED && errno == EINTR);
	return addr;
}

static int
unmap_retry(void *addr, size_t size)
{
	int rc;

	do
		rc = DSM_INJECT("dsm-impl-detach", -1, munmap(addr, size));
	while (rc < 0 && errno == EINTR);
	return rc;
}

/*
 * Undo a half-made create: close fd and remove the name.  Never raises: a
 * failed removal is logged at WARNING.  errno is preserved.
 */
static void
undo_create(const dsm_impl_fd_ops *ops, const char *name, int fd)
{
	int save_errno = errno;

	close(fd);
	if (ops->unlink_fn(name) != 0 && errno != ENOENT)
		ereport(WARNING, errcode_for_file_access(),
				errmsg("could not remove shared memory segment \"%s\": %m", name));
	errno = save_errno;
}

/*
 * Put fd's object back to size after a failed resize (its contents beyond
 * the smaller of the two sizes are lost).  Never raises; errno preserved.
 */
static void
restore_size(int fd, const char *name, off_t size)
{
	int save_errno = errno;
	int rc;

	do
		rc = DSM_INJECT("dsm-impl-resize-restore", -1, ftruncate(fd, size));
	while (rc < 0 && errno == EINTR);
	if (rc != 0)
		ereport(WARNING, errcode_for_file_access(),
				errmsg("could not restore shared memory segment \"%s\" to %lld bytes: %m", name,
					   (long long) size));
	errno = save_errno;
}

/* Report the failure of the call that set err, at elevel. */
#define REPORT_ERRNO(elevel, err, ...) \
	do { \
		errno = (err); \
		ereport((elevel), dsm_impl_errcode(err), errmsg(__VA_ARGS__)); \
	} while (0)

/*
 * CREATE: a new object of size bytes, reserved and mapped.  A taken name
 * returns false with no report (a planted symbolic link is reported).  On
 * any other failure the descriptor is closed and the half-made object
 * removed before the report at elevel.  The descriptor is closed on success
 * too; the mapping is the caller's, released by DETACH or DESTROY.
 */
static bool
fd_create(const dsm_impl_fd_ops *ops, const char *name, size_t size, void **mapped_address,
		  size_t *mapped_size, int elevel)
{
	int fd;
	int rc;
	int err;
	void *addr;

	fd = open_retry(ops, name, O_CREAT | O_EXCL | O_RDWR, "dsm-impl-create-open");
	if (fd < 0)
	{
		struct stat st;

		err = errno;
		if (err != EEXIST)
		{
			REPORT_ERRNO(elevel, err, "could not create shared memory segment \"%s\": %m", name);
			return false;
		}
		/*
		 * The name is taken: quietly let the caller choose another handle,
		 * unless a symbolic link was planted there, which is worth an error.
		 */
		if (!ops->is_file || lstat(name, &st) != 0 || !S_ISLNK(st.st_mode))
			return false;
		errno = ELOOP;
		ereport(elevel, dsm_impl_errcode(ELOOP),
				errmsg("could not create shared memory segment \"%s\": %m", name),
				errdetail("A symbolic link is in the way; segment files are never reached through links."));
		return false;
	}

	rc = truncate_retry(fd, (off_t) size, "dsm-impl-create-resize");
	if (rc == 0)
	{
		rc = reserve(fd, 0, (off_t) size, "dsm-impl-create-fallocate");
		if (rc != 0)
		{
			errno = rc;
			rc = -1;
		}
	}
	if (rc != 0)
	{
		err = errno;
		undo_create(ops, name, fd);
		REPORT_ERRNO(elevel, err, "could not resize shared memory segment \"%s\" to %zu bytes: %m",
					 name, size);
		return false;
	}

	addr = map_retry(size, fd, "dsm-impl-create-mmap");
	if (addr == MAP_FAILED)
	{
		err = errno;
		undo_create(ops, name, fd);
		REPORT_ERRNO(elevel, err, "could not map shared memory segment \"%s\": %m", name);
		return false;
	}
	close(fd);
	*mapped_address = addr;
	*mapped_size = size;
	return true;
}

/*
 * ATTACH: map the existing object: known_size bytes, or with known_size 0
 * its whole current size, which fstat tells.  If the caller already maps
 * it (dsm_remap), the new mapping is made first and the old one dropped
 * after, so a failure leaves the old mapping as it was.
 */
static bool
fd_attach(const dsm_impl_fd_ops *ops, const char *name, size_t known_size, void **mapped_address,
		  size_t *mapped_size, int elevel)
{
	int fd;
	int err;
	struct stat st;
	size_t size;
	void *addr;

	fd = open_retry(ops, name, O_RDWR, "dsm-impl-attach-open");
	if (fd < 0)
	{
		REPORT_ERRNO(elevel, errno, "could not open shared memory segment \"%s\": %m", name);
		return false;
	}
	if (known_size > 0)
		size = known_size;
	else
	{
		if (stat_retry(fd, &st, "dsm-impl-attach-fstat") != 0)
		{
			err = errno;
			close(fd);
			REPORT_ERRNO(elevel, err, "could not stat shared memory segment \"%s\": %m", name);
			return false;
		}
		if (!S_ISREG(st.st_mode) || st.st_size <= 0)
		{
			close(fd);
			ereport(elevel, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("could not map shared memory segment \"%s\": it is empty or not a regular file",
						   name),
					errdetail("Its creator may have died before sizing it."));
			return false;
		}
		size = (size_t) st.st_size;
	}
	addr = map_retry(size, fd, "dsm-impl-attach-mmap");
	if (addr == MAP_FAILED)
	{
		err = errno;
		close(fd);
		REPORT_ERRNO(elevel, err, "could not map shared memory segment \"%s\": %m", name);
		return false;
	}
	close(fd);

	/* dsm_remap(): the new mapping exists, now drop the old one. */
	if (*mapped_address != NULL && unmap_retry(*mapped_address, *mapped_size) != 0)
	{
		err = errno;
		munmap(addr, size);
		REPORT_ERRNO(elevel, err, "could not unmap shared memory segment \"%s\": %m", name);
		return false;
	}
	*mapped_address = addr;
	*mapped_size = size;
	return true;
}

/*
 * DETACH: unmap; nothing to do when not mapped.  On failure the mapping is
 * still there and the outputs are unchanged.
 */
static bool
fd_detach(const char *name, void **mapped_address, size_t *mapped_size, int elevel)
{
	if (*mapped_address == NULL)
		return true;
	if (unmap_retry(*mapped_address, *mapped_size) != 0)
	{
		REPORT_ERRNO(elevel, errno, "could not unmap shared memory segment \"%s\": %m", name);
		return false;
	}
	*mapped_address = NULL;
	*mapped_size = 0;
	return true;
}

/*
 * Resize: the object first (growing reserves the new part, so a full
 * /dev/shm is an error here too), then the mapping, moved if need be.  A
 * failure puts the object back to its old size.
 */
static bool
fd_resize(const dsm_impl_fd_ops *ops, const char *name, size_t size, void **mapped_address,
		  size_t *mapped_size, int elevel)
{
	int fd;
	int rc;
	int err;
	struct stat st;
	off_t cur;
	void *addr;

	fd = open_retry(ops, name, O_RDWR, "dsm-impl-resize-open");
	if (fd < 0)
	{
		REPORT_ERRNO(elevel, errno, "could not open shared memory segment \"%s\": %m", name);
		return false;
	}
	if (stat_retry(fd, &st, "dsm-impl-resize-fstat") != 0)
	{
		err = errno;
		close(fd);
		REPORT_ERRNO(elevel, err, "could not stat shared memory segment \"%s\": %m", name);
		return false;
	}
	cur = st.st_size;

	rc = truncate_retry(fd, (off_t) size, "dsm-impl-resize");
	if (rc == 0 && (off_t) size > cur)
	{
		rc = reserve(fd, cur, (off_t) size - cur, "dsm-impl-resize-fallocate");
		if (rc != 0)
		{
			errno = rc;
			rc = -1;
		}
	}
	if (rc != 0)
	{
		err = errno;
		restore_size(fd, name, cur);
		close(fd);
		REPORT_ERRNO(elevel, err, "could not resize shared memory segment \"%s\" to %zu bytes: %m",
					 name, size);
		return false;
	}

	if (*mapped_address != NULL)
	{
		do
			addr = DSM_INJECT("dsm-impl-resize-mmap", MAP_FAILED,
							  mremap(*mapped_address, *mapped_size, size, MREMAP_MAYMOVE));
		while (addr == MAP_FAILED && errno == EINTR);
	}
	else
		addr = map_retry(size, fd, "dsm-impl-resize-mmap");
	if (addr == MAP_FAILED)
	{
		err = errno;
		restore_size(fd, name, cur);
		close(fd);
		REPORT_ERRNO(elevel, err, "could not map shared memory segment \"%s\": %m", name);
		return false;
	}
	close(fd);
	*mapped_address = addr;
	*mapped_size = size;
	return true;
}

/*
 * DESTROY: unmap if mapped, then remove the name.  A missing name is
 * reported at elevel like any failure.  If the removal fails after the
 * unmap, the outputs already say "not mapped".
 */
static bool
fd_destroy(const dsm_impl_fd_ops *ops, const char *name, void **mapped_address,
		   size_t *mapped_size, int elevel)
{
	int rc;

	if (!fd_detach(name, mapped_address, mapped_size, elevel))
		return false;
	do
		rc = DSM_INJECT("dsm-impl-destroy", -1, ops->unlink_fn(name));
	while (rc < 0 && errno == EINTR);
	if (rc != 0)
	{
		REPORT_ERRNO(elevel, errno, "could not remove shared memory segment \"%s\": %m", name);
		return false;
	}
	return true;
}

/*
 * The fd-based engine (contract in dsm_impl_int.h and dsm_impl.h): one
 * operation on the object name, for dsm_impl_posix() and dsm_impl_mmap().
 * dsm_impl_op() has already checked the arguments.
 */
bool
dsm_impl_fd_op(const dsm_impl_fd_ops *ops, const char *name, dsm_op op, size_t request_size,
			   void **mapped_address, size_t *mapped_size, int elevel)
{
	switch (op)
	{
		case DSM_OP_CREATE:
			return fd_create(ops, name, request_size, mapped_address, mapped_size, elevel);
		case DSM_OP_ATTACH:
			return fd_attach(ops, name, request_size, mapped_address, mapped_size, elevel);
		case DSM_OP_DETACH:
			return fd_detach(name, mapped_address, mapped_size, elevel);
		case DSM_OP_RESIZE:
			return fd_resize(ops, name, request_size, mapped_address, mapped_size, elevel);
		case DSM_OP_DESTROY:
			return fd_destroy(ops, name, mapped_address, mapped_size, elevel);
	}
	pg_unreachable();
}

static const dsm_impl_fd_ops posix_ops = {
	.open_fn = shm_open,
	.unlink_fn = shm_unlink,
	.extra_flags = 0, /* shm_open() adds O_NOFOLLOW and O_CLOEXEC itself */
	.is_file = false,
};

/*
 * POSIX shared memory: names "/dsmkit.<cluster>.<handle>" in /dev/shm.
 * impl_private is not used.
 */
bool
dsm_impl_posix(dsm_op op, const char *name, size_t request_size, void **impl_private,
			   void **mapped_address, size_t *mapped_size, int elevel)
{
	return dsm_impl_fd_op(&posix_ops, name, op, request_size, mapped_address, mapped_size,
						  elevel);
}
