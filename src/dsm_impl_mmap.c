/*
 * dsm_impl_mmap.c: segments as files in the cluster directory, mapped with
 * mmap(2): "<directory>/dsmkit.<cluster>.<handle>".
 *
 * The work is the fd-based engine of dsm_impl_posix.c, with open(2) and
 * unlink(2) in place of shm_open() and shm_unlink().  Files are opened with
 * O_NOFOLLOW, so a symbolic link planted at a segment's name is never
 * followed: CREATE reports it (instead of the quiet "name taken" that makes
 * dsm.c choose another handle), ATTACH fails with ELOOP.
 *
 * The kernel writes dirty pages of a shared file mapping back to the file
 * system from time to time, so this implementation costs disk I/O that the
 * others do not; it exists for systems whose /dev/shm is small or absent.
 * A crashed cluster's files stay in the directory until the next
 * supervisor_startup() removes them.  impl_private is not used.
 */
#define _GNU_SOURCE
#include "dsm_impl_int.h"

#include <fcntl.h>
#include <unistd.h>

/* open(2) with the signature the engine expects (open itself is variadic). */
static int
file_open(const char *name, int flags, mode_t mode)
{
	return open(name, flags, mode);
}

static const dsm_impl_fd_ops mmap_ops = {
	.open_fn = file_open,
	.unlink_fn = unlink,
	.extra_flags = O_NOFOLLOW,
	.is_file = true,
};

bool
dsm_impl_mmap(dsm_op op, const char *name, size_t request_size, void **impl_private,
			  void **mapped_address, size_t *mapped_size, int elevel)
{
	return dsm_impl_fd_op(&mmap_ops, name, op, request_size, mapped_address, mapped_size, elevel);
}
