/*
 * dsm_impl_sysv.c: System V shared memory segments (shmget(2), shmat(2)).
 *
 * A segment's key carries the cluster tag in its high 16 bits and the
 * folded handle in its low 16 bits (see dsm_impl.h).  Two handles can fold
 * to one key; the second CREATE then fails with EEXIST and dsm.c picks
 * another handle.  A key of 0 is IPC_PRIVATE, which would make a fresh
 * anonymous segment every time: CREATE treats it as "exists" for the same
 * reason, and ATTACH and DESTROY as "no such segment".
 *
 * impl_private holds the shmid, encoded in the pointer as shmid + 1 (so
 * that NULL still means "none"): nothing is allocated, so nothing can leak
 * whatever path an operation takes.  ATTACH always looks the key up again.
 *
 * Space: System V segments cannot be reserved up front as posix_fallocate()
 * does for the others.  What is checked at creation is the kernel's limits
 * (shmget() fails with EINVAL above SHMMAX, ENOSPC beyond SHMMNI segments or
 * SHMALL pages) and, under strict overcommit (vm.overcommit_memory=2), the
 * commit charge (ENOMEM).  Pages are allocated on first touch, from the
 * kernel's internal shmem mount (not /dev/shm); if memory runs out then,
 * the toucher faults or the OOM killer acts.  Pre-faulting every page would
 * close that gap at the price of touching all the memory at create; this
 * implementation does not do it.
 *
 * RESIZE is not supported (a System V segment has a fixed size).
 */
#define _GNU_SOURCE
#include "dsm_impl_int.h"

#include <stdio.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#define SHMID_TO_PRIVATE(id) ((void *) (uintptr_t) ((unsigned) (id) + 1u))
#define PRIVATE_TO_SHMID(p) ((int) ((uintptr_t) (p) - 1u))

#define REPORT_ERRNO(elevel, err, ...) \
	do { \
		errno = (err); \
		ereport((elevel), dsm_impl_errcode(err), errmsg(__VA_ARGS__)); \
	} while (0)

/*
 * The name reports give a segment, "key 0x<key>", made only when a report
 * needs it: the success paths format nothing.  The buffer is a compound
 * literal, alive until the end of the enclosing block.
 */
#define SYSV_NAME(key) sysv_name((char[24]){0}, (key))

static const char *
sysv_name(char *buf, uint32_t key)
{
	snprintf(buf, 24, "key 0x%08x", (unsigned) key);
	return buf;
}

static int
shmget_retry(key_t key, size_t size, int flags)
{
	int id;

	do
		id = DSM_INJECT("sysv-shmget", -1, shmget(key, size, flags));
	while (id < 0 && errno == EINTR);
	return id;
}

static void *
shmat_retry(int shmid)
{
	void *addr;

	do
		addr = DSM_INJECT("sysv-shmat", (void *) -1, shmat(shmid, NULL, 0));
	while (addr == (void *) -1 && errno == EINTR);
	return addr;
}

static int
shmdt_retry(const void *addr)
{
	int rc;

	do
		rc = DSM_INJECT("dsm-impl-detach", -1, shmdt(addr));
	while (rc < 0 && errno == EINTR);
	return rc;
}

/* Remove shmid during cleanup: never raises, preserves errno. */
static void
remove_quietly(int shmid, uint32_t key)
{
	int save_errno = errno;

	if (shmctl(shmid, IPC_RMID, NULL) != 0)
		ereport(WARNING, errcode_for_file_access(),
				errmsg("could not remove shared memory segment \"%s\": %m", SYSV_NAME(key)));
	errno = save_errno;
}

/*
 * The shmid of the segment with key, or -1 with errno set (ENOENT when the
 * key is unusable or no segment has it).
 */
static int
lookup(uint32_t key)
{
	if (key == 0)
	{
		errno = ENOENT;
		return -1;
	}
	return shmget_retry((key_t) key, 0, 0);
}

/*
 * CREATE: shmget with IPC_CREAT|IPC_EXCL, then shmat.  A taken (or unusable)
 * key returns false with no report; a failed attach removes the new segment
 * before reporting.  The shmid goes to *impl_private.
 */
static bool
sysv_create(uint32_t key, size_t size, void **impl_private,
			void **mapped_address, size_t *mapped_size, int elevel)
{
	int shmid;
	int err;
	void *addr;

	if (key == 0)
		return false;           /* IPC_PRIVATE: as if taken, see above */
	shmid = shmget_retry((key_t) key, size, IPC_CREAT | IPC_EXCL | 0600);
	if (shmid < 0)
	{
		err = errno;
		if (err == EEXIST)
			return false;
		errno = err;
		ereport(elevel, dsm_impl_errcode(err),
				errmsg("could not create shared memory segment \"%s\": %m", SYSV_NAME(key)),
				errdetail("Failed system call was shmget(key=0x%08x, size=%zu, 0%o).",
						  (unsigned) key, size, IPC_CREAT | IPC_EXCL | 0600),
				(err == EINVAL || err == ENOSPC || err == ENOMEM)
					? errhint("The request may exceed the kernel's SHMMAX, SHMALL or SHMMNI limits, or the memory available.")
					: 0);
		return false;
	}
	addr = shmat_retry(shmid);
	if (addr == (void *) -1)
	{
		err = errno;
		remove_quietly(shmid, key);
		REPORT_ERRNO(elevel, err, "could not map shared memory segment \"%s\": %m", SYSV_NAME(key));
		return false;
	}
	*impl_private = SHMID_TO_PRIVATE(shmid);
	*mapped_address = addr;
	*mapped_size = size;
	return true;
}

/*
 * ATTACH: look the key up, learn the size with IPC_STAT unless the caller
 * knows it (known_size > 0), shmat.  A mapped segment (dsm_remap) is
 * attached anew before the old attachment is dropped.
 */
static bool
sysv_attach(uint32_t key, size_t known_size, void **impl_private,
			void **mapped_address, size_t *mapped_size, int elevel)
{
	int shmid;
	int err;
	int rc;
	struct shmid_ds ds;
	void *addr;

	shmid = lookup(key);
	if (shmid < 0)
	{
		REPORT_ERRNO(elevel, errno, "could not open shared memory segment \"%s\": %m", SYSV_NAME(key));
		return false;
	}
	ds.shm_segsz = known_size;
	if (known_size == 0)
	{
		do
			rc = DSM_INJECT("sysv-shmctl", -1, shmctl(shmid, IPC_STAT, &ds));
		while (rc < 0 && errno == EINTR);
		if (rc != 0)
		{
			REPORT_ERRNO(elevel, errno, "could not stat shared memory segment \"%s\": %m", SYSV_NAME(key));
			return false;
		}
	}
	addr = shmat_retry(shmid);
	if (addr == (void *) -1)
	{
		REPORT_ERRNO(elevel, errno, "could not map shared memory segment \"%s\": %m", SYSV_NAME(key));
		return false;
	}
	/* dsm_remap(): the new mapping exists, now drop the old one. */
	if (*mapped_address != NULL && shmdt_retry(*mapped_address) != 0)
	{
		err = errno;
		shmdt(addr);
		REPORT_ERRNO(elevel, err, "could not unmap shared memory segment \"%s\": %m", SYSV_NAME(key));
		return false;
	}
	*impl_private = SHMID_TO_PRIVATE(shmid);
	*mapped_address = addr;
	*mapped_size = ds.shm_segsz;
	return true;
}

/*
 * The id of the segment under handle's key, -1 if there is none (or it
 * cannot be looked up).  Never raises.
 */
int
dsm_impl_sysv_find(dsm_handle handle)
{
	return lookup(dsm_impl_sysv_key(handle));
}

/*
 * Remove the segment with id shmid if it still carries handle's key and,
 * when creator is nonzero, creator made it (shm_cpid).  Returns 1 if it
 * was removed, 0 if there is no such segment (gone, or another's), -1 if
 * it is there but could not be examined or removed (reported at elevel).
 * Never raises.
 */
int
dsm_impl_sysv_remove_orphan(dsm_handle handle, int shmid, pid_t creator, int elevel)
{
	uint32_t key = dsm_impl_sysv_key(handle);
	struct shmid_ds ds;
	int rc;

	do
		rc = shmctl(shmid, IPC_STAT, &ds);
	while (rc < 0 && errno == EINTR);
	if (rc != 0)
	{
		if (errno == EINVAL || errno == EIDRM)
			return 0; /* gone */
		REPORT_ERRNO(elevel, errno, "could not stat shared memory segment \"%s\": %m",
					 SYSV_NAME(key));
		return -1;
	}
	if ((uint32_t) ds.shm_perm.__key != key)
		return 0; /* the id now names another segment */
	if (creator != 0 && ds.shm_cpid != creator)
		return 0; /* another process's segment under a colliding key */
	do
		rc = shmctl(shmid, IPC_RMID, NULL);
	while (rc < 0 && errno == EINTR);
	if (rc != 0)
	{
		if (errno == EINVAL || errno == EIDRM)
			return 0;
		REPORT_ERRNO(elevel, errno, "could not remove shared memory segment \"%s\": %m",
					 SYSV_NAME(key));
		return -1;
	}
	return 1;
}

/* DETACH: shmdt; nothing to do when not mapped.  Forgets the shmid. */
static bool
sysv_detach(uint32_t key, void **impl_private, void **mapped_address, size_t *mapped_size,
			int elevel)
{
	if (*mapped_address == NULL)
		return true;
	if (shmdt_retry(*mapped_address) != 0)
	{
		REPORT_ERRNO(elevel, errno, "could not unmap shared memory segment \"%s\": %m", SYSV_NAME(key));
		return false;
	}
	*impl_private = NULL;
	*mapped_address = NULL;
	*mapped_size = 0;
	return true;
}

/*
 * DESTROY: detach if mapped, then IPC_RMID (by the remembered shmid, or by
 * looking the key up).  Processes still attached keep their mapping; the
 * key is released at once.
 */
static bool
sysv_destroy(uint32_t key, void **impl_private, void **mapped_address,
			 size_t *mapped_size, int elevel)
{
	int shmid;
	int rc;

	/* Take the id before detaching, which forgets it. */
	shmid = *impl_private != NULL ? PRIVATE_TO_SHMID(*impl_private) : -1;
	if (!sysv_detach(key, impl_private, mapped_address, mapped_size, elevel))
		return false;
	if (shmid < 0)
	{
		shmid = lookup(key);
		if (shmid < 0)
		{
			REPORT_ERRNO(elevel, errno, "could not remove shared memory segment \"%s\": %m", SYSV_NAME(key));
			return false;
		}
	}
	do
		rc = DSM_INJECT("dsm-impl-destroy", -1, shmctl(shmid, IPC_RMID, NULL));
	while (rc < 0 && errno == EINTR);
	if (rc != 0)
	{
		REPORT_ERRNO(elevel, errno, "could not remove shared memory segment \"%s\": %m", SYSV_NAME(key));
		return false;
	}
	*impl_private = NULL;
	return true;
}

/*
 * System V shared memory (contract in dsm_impl.h); handle gives the key,
 * name is what reports call it ("key 0x...").
 */
bool
dsm_impl_sysv(dsm_op op, dsm_handle handle, size_t request_size,
			  void **impl_private, void **mapped_address, size_t *mapped_size, int elevel)
{
	uint32_t key = dsm_impl_sysv_key(handle);

	switch (op)
	{
		case DSM_OP_CREATE:
			return sysv_create(key, request_size, impl_private, mapped_address, mapped_size,
							   elevel);
		case DSM_OP_ATTACH:
			return sysv_attach(key, request_size, impl_private, mapped_address, mapped_size,
							   elevel);
		case DSM_OP_DETACH:
			return sysv_detach(key, impl_private, mapped_address, mapped_size, elevel);
		case DSM_OP_RESIZE:
			ereport(elevel, errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					errmsg("could not resize shared memory segment \"%s\" to %zu bytes", SYSV_NAME(key),
						   request_size),
					errdetail("System V shared memory segments cannot be resized."),
					errhint("Use the POSIX or mmap implementation to resize segments."));
			return false;
		case DSM_OP_DESTROY:
			return sysv_destroy(key, impl_private, mapped_address, mapped_size, elevel);
	}
	pg_unreachable();
}
