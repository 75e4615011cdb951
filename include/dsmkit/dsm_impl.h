/*
 * dsmkit/dsm_impl.h: the low-level shared memory implementations.
 *
 * dsm_impl_op() creates, attaches, detaches, resizes and destroys one
 * operating-system segment named by a 32-bit handle.  It knows nothing of
 * reference counts or resource owners: dsm.h builds those on top.  Most
 * programs never call it; dsmctl and tests do.
 *
 * Three implementations:
 *  - DSM_IMPL_POSIX (default): shm_open(3) objects in /dev/shm named
 *    "/dsmkit.<cluster>.<handle>", both in eight lowercase hex digits;
 *  - DSM_IMPL_SYSV: shmget(2) segments with key
 *    ((cluster >> 16) ^ (cluster & 0xffff)) << 16 | ((handle >> 16) ^ (handle & 0xffff)),
 *    so a listing can tell the cluster (up to 16-bit collisions, which is
 *    why crash cleanup goes by the control segment, never by key); two live
 *    handles folding to one key make the second create fail with EEXIST,
 *    and dsm.c then picks another handle;
 *  - DSM_IMPL_MMAP: files "<directory>/dsmkit.<cluster>.<handle>" mapped
 *    with mmap(2).
 * The cluster id is a hash of the cluster directory's real path, so two
 * clusters on one machine never share names and a listing tells them apart.
 *
 * Segments are created O_CREAT|O_EXCL, mode 0600, close-on-exec (and
 * O_NOFOLLOW for files); their space is reserved at creation, so a full
 * /dev/shm is an ERROR at create time, never a SIGBUS later.
 */
#ifndef DSMKIT_DSM_IMPL_H
#define DSMKIT_DSM_IMPL_H

#include <dsmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint32_t dsm_handle;
#define DSM_HANDLE_INVALID ((dsm_handle) 0)

/* Implementations (DsmkitConfig.dsm_impl; 0 also means POSIX). */
#define DSM_IMPL_POSIX 1
#define DSM_IMPL_SYSV 2
#define DSM_IMPL_MMAP 3
#define DEFAULT_DYNAMIC_SHARED_MEMORY_TYPE DSM_IMPL_POSIX

typedef enum
{
	DSM_OP_CREATE = 0,
	DSM_OP_ATTACH,
	DSM_OP_DETACH,
	DSM_OP_RESIZE,
	DSM_OP_DESTROY
} dsm_op;

/*
 * Choose the implementation and the cluster directory for this process.
 * supervisor_startup() and backend_join() call it; a program that uses
 * dsm_impl_op() alone calls it first.  directory must exist.  ERROR on a
 * bad implementation number or a directory that cannot be resolved.
 */
DSMKIT_API void dsm_impl_configure(int impl, const char *directory);

/* The configured implementation (DSM_IMPL_*), or 0 if not configured. */
DSMKIT_API int dsm_impl_current(void);

/* The configured cluster id (hash of the directory's real path). */
DSMKIT_API uint32_t dsm_impl_cluster_id(void);

/*
 * The cluster id of directory: the 32-bit FNV-1a hash of its realpath(3),
 * never 0.  ERROR if the path cannot be resolved.
 */
DSMKIT_API uint32_t dsm_impl_cluster_id_of(const char *directory);

/* The implementation's name ("posix", "sysv", "mmap"), or NULL for a bad number. */
DSMKIT_API const char *dsm_impl_name(int impl);

/*
 * Write the operating-system name of a segment into buf (for POSIX the
 * shm_open name, for mmap the file path, for System V "key 0x...").
 * Returns the length snprintf() would, so a short buffer can be detected.
 */
DSMKIT_API int dsm_impl_segment_name(dsm_handle handle, char *buf, size_t buflen);

/*
 * Perform op on the segment named handle.
 *  - CREATE: make a new segment of request_size bytes (fails with EEXIST
 *    quietly, returning false without a report, so the caller can choose
 *    another handle), map it, and return it in *mapped_address and
 *    *mapped_size.
 *  - ATTACH: map an existing segment: request_size bytes, or with
 *    request_size 0 its whole current size, which the system is asked for
 *    (one more system call; dsm_attach() passes the size the control
 *    segment records).
 *  - DETACH: unmap it.
 *  - RESIZE: change its size to request_size and remap (may move).
 *  - DESTROY: unmap if mapped, then remove the segment.
 * *impl_private holds what an implementation needs between calls (the
 * System V id); start it at NULL.
 *
 * On failure a report at elevel is made (elevel ERROR raises; a lower
 * level logs) and false is returned; whatever the failed call made is
 * undone first, so nothing leaks.  Returns true on success.
 */
DSMKIT_API bool dsm_impl_op(dsm_op op, dsm_handle handle, size_t request_size, void **impl_private,
							void **mapped_address, size_t *mapped_size, int elevel);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_DSM_IMPL_H */
