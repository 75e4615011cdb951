/*
 * dsm_impl_int.h: PRIVATE to libdsmkit.  Declarations shared by the files
 * of the low-level shared memory implementations (dsm_impl.c and
 * dsm_impl_{posix,sysv,mmap}.c); the public side is include/dsmkit/dsm_impl.h.
 */
#ifndef DSMKIT_DSM_IMPL_INT_H
#define DSMKIT_DSM_IMPL_INT_H

#include "dsmkit_int.h"

#include <errno.h>
#include <sys/types.h>

#include <dsmkit/dsm_impl.h>
#include <dsmkit/elog.h>

#include "injection.h"

/*
 * DSM_INJECT(point, failval, call): pass the injection point, then either
 * make the system call or, when the point is armed to fail, set errno and
 * yield failval as the call would.  For calls that report failure through
 * errno (open, ftruncate, mmap, shmget ...).  Without injection points it
 * is just the call.
 */
#ifdef USE_INJECTION_POINTS
#define DSM_INJECT(point, failval, call) \
	({ \
		int dsm_inject_e_ = INJECTION_POINT(point); \
		__typeof__(call) dsm_inject_r_; \
		if (dsm_inject_e_ != 0) \
		{ \
			errno = dsm_inject_e_; \
			dsm_inject_r_ = (failval); \
		} \
		else \
			dsm_inject_r_ = (call); \
		dsm_inject_r_; \
	})
#else
#define DSM_INJECT(point, failval, call) (call)
#endif

/*
 * The longest segment name any implementation makes, terminator included:
 * the mmap form is the cluster directory's real path plus
 * "/dsmkit.xxxxxxxx.xxxxxxxx".  dsm_impl_configure() refuses a directory
 * whose path would not fit.
 */
#define DSM_IMPL_NAME_MAX 4200

/*
 * The process-local configuration, set by dsm_impl_configure() and
 * inherited by fork()ed children.  impl is 0 until configured.
 */
typedef struct dsm_impl_config
{
	int impl;                       /* DSM_IMPL_*, or 0 when not configured */
	uint32_t cluster_id;            /* FNV-1a of realdir, never 0 */
	char realdir[DSM_IMPL_NAME_MAX - 32]; /* realpath(3) of the cluster directory */
} dsm_impl_config;

extern dsm_impl_config dsm_impl_cfg;

/* The System V key of handle in the configured cluster (0 = unusable key). */
uint32_t dsm_impl_sysv_key(dsm_handle handle);

/*
 * System V segments of slots whose owner died (dsm.c decides which id is
 * whose).  dsm_impl_sysv_find(): the id under handle's key, or -1.
 * dsm_impl_sysv_remove_orphan(): remove segment shmid if it still carries
 * handle's key and (creator nonzero) creator made it; 1 removed, 0 no
 * such segment, -1 failed (reported at elevel).  Never raise.
 */
int dsm_impl_sysv_find(dsm_handle handle);
int dsm_impl_sysv_remove_orphan(dsm_handle handle, int shmid, pid_t creator, int elevel);

/*
 * The error code for a failed system call on a segment (call it inside
 * ereport(), passing the errno saved right after the failing call).
 */
int dsm_impl_errcode(int err);

/*
 * The fd-based engine shared by the POSIX and mmap implementations: the two
 * differ only in how a name is opened and removed.  open_fn must behave as
 * open(2) (flags include O_CLOEXEC, and O_NOFOLLOW for files); unlink_fn as
 * unlink(2).  is_file makes a planted symbolic link at the name a reported
 * error instead of a quiet "exists".
 */
typedef struct dsm_impl_fd_ops
{
	int (*open_fn)(const char *name, int flags, mode_t mode);
	int (*unlink_fn)(const char *name);
	int extra_flags;                /* O_NOFOLLOW for files, 0 for shm_open */
	bool is_file;                   /* names live in a directory we can lstat */
} dsm_impl_fd_ops;

bool dsm_impl_fd_op(const dsm_impl_fd_ops *ops, const char *name, dsm_op op, size_t request_size,
					void **mapped_address, size_t *mapped_size, int elevel);

/* The three implementations; arguments as dsm_impl_op(), name already built (System V names its segments by key, itself, and only in reports). */
bool dsm_impl_posix(dsm_op op, const char *name, size_t request_size, void **impl_private,
					void **mapped_address, size_t *mapped_size, int elevel);
bool dsm_impl_sysv(dsm_op op, dsm_handle handle, size_t request_size,
				   void **impl_private, void **mapped_address, size_t *mapped_size, int elevel);
bool dsm_impl_mmap(dsm_op op, const char *name, size_t request_size, void **impl_private,
				   void **mapped_address, size_t *mapped_size, int elevel);

#endif /* DSMKIT_DSM_IMPL_INT_H */
