/*
 * dsm_impl.c: the low-level shared memory layer's front door.
 *
 * This file holds what the three implementations share: the process's
 * configuration (which implementation, which cluster directory, the
 * cluster id), the naming of segments, error reporting, and dsm_impl_op(),
 * which checks its arguments and dispatches to dsm_impl_posix.c,
 * dsm_impl_sysv.c or dsm_impl_mmap.c.  The fd-based engine used by POSIX
 * and mmap lives in dsm_impl_posix.c.
 */
#define _GNU_SOURCE
#include "dsm_impl_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The configuration of this process (see dsm_impl_int.h). */
dsm_impl_config dsm_impl_cfg;

/*
 * The 32-bit FNV-1a hash of a string, with 0 mapped to 1 so that a cluster
 * id is never 0.  tests/testutil.c computes the same; keep them equal.
 */
static uint32_t
cluster_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *) s; *p != '\0'; p++)
	{
		h ^= *p;
		h *= 16777619u;
	}
	return h == 0 ? 1 : h;
}

/*
 * Resolve directory into real (PATH_MAX bytes) or raise ERROR.  Shared by
 * dsm_impl_configure() and dsm_impl_cluster_id_of().
 */
static void
resolve_directory(const char *directory, char *real)
{
	if (directory == NULL || directory[0] == '\0')
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("cluster directory must be given"));
	if (realpath(directory, real) == NULL)
		ereport(ERROR, errcode_for_file_access(),
				errmsg("could not resolve cluster directory \"%s\": %m", directory));
}

/*
 * Choose the implementation and the cluster directory of this process.
 * May be called again (a later call replaces the configuration, which only
 * makes sense before any segment exists).  ERROR, leaving the previous
 * configuration in place, on a bad implementation number, a directory that
 * cannot be resolved or is not a directory, or a path too long for segment
 * names.  fork() children inherit the configuration.
 */
void
dsm_impl_configure(int impl, const char *directory)
{
	char real[PATH_MAX];
	struct stat st;

	if (impl == 0)
		impl = DEFAULT_DYNAMIC_SHARED_MEMORY_TYPE;
	if (impl != DSM_IMPL_POSIX && impl != DSM_IMPL_SYSV && impl != DSM_IMPL_MMAP)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid dynamic shared memory implementation %d", impl),
				errhint("Use DSM_IMPL_POSIX, DSM_IMPL_SYSV or DSM_IMPL_MMAP."));
	resolve_directory(directory, real);
	if (stat(real, &st) != 0)
		ereport(ERROR, errcode_for_file_access(),
				errmsg("could not stat cluster directory \"%s\": %m", real));
	if (!S_ISDIR(st.st_mode))
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("cluster directory \"%s\" is not a directory", real));
	if (strlen(real) >= sizeof dsm_impl_cfg.realdir)
		ereport(ERROR, errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("cluster directory path \"%s\" is too long", real));

	dsm_impl_cfg.impl = impl;
	dsm_impl_cfg.cluster_id = cluster_hash(real);
	strcpy(dsm_impl_cfg.realdir, real);
}

int
dsm_impl_current(void)
{
	return dsm_impl_cfg.impl;
}

uint32_t
dsm_impl_cluster_id(void)
{
	return dsm_impl_cfg.cluster_id;
}

/*
 * The cluster id of any directory (not only the configured one), for tools
 * such as dsmctl.  ERROR if the path cannot be resolved.
 */
uint32_t
dsm_impl_cluster_id_of(const char *directory)
{
	char real[PATH_MAX];

	resolve_directory(directory, real);
	return cluster_hash(real);
}

const char *
dsm_impl_name(int impl)
{
	switch (impl)
	{
		case 0:
		case DSM_IMPL_POSIX:
			return "posix";
		case DSM_IMPL_SYSV:
			return "sysv";
		case DSM_IMPL_MMAP:
			return "mmap";
		default:
			return NULL;
	}
}

/*
 * The System V key: the cluster id folded to 16 bits in the high half, the
 * handle folded to 16 bits in the low half.  0 (IPC_PRIVATE) is a possible
 * result; callers treat it as a key they cannot use.
 */
uint32_t
dsm_impl_sysv_key(dsm_handle handle)
{
	uint32_t c = dsm_impl_cfg.cluster_id;
	uint32_t tag = ((c >> 16) ^ (c & 0xffff)) & 0xffff;
	uint32_t low = ((handle >> 16) ^ (handle & 0xffff)) & 0xffff;

	return (tag << 16) | low;
}

/* "000102...ff": the two lowercase hexadecimal digits of every byte value. */
static const char hex_pairs[513] =
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	"404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
	"606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
	"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* Write v as 8 lowercase hexadecimal digits at p (no terminator); returns p + 8. */
static inline char *
put_hex8(char *p, uint32_t v)
{
	memcpy(p, &hex_pairs[2 * (v >> 24)], 2);
	memcpy(p + 2, &hex_pairs[2 * ((v >> 16) & 0xff)], 2);
	memcpy(p + 4, &hex_pairs[2 * ((v >> 8) & 0xff)], 2);
	memcpy(p + 6, &hex_pairs[2 * (v & 0xff)], 2);
	return p + 8;
}

/* Copy the literal lit (without its terminator) to p; returns the end. */
#define PUT_LITERAL(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

/*
 * Format the name of handle into out, which has room for DSM_IMPL_NAME_MAX
 * bytes (always enough: dsm_impl_configure() bounds realdir), and return
 * its length.  This is on the path of every attach and create, so it is
 * written out by hand: snprintf() costs more than a hundred nanoseconds
 * here, a few percent of a whole attach+detach.  The forms are those
 * documented at dsm_impl_segment_name().  Never fails.
 */
static size_t
format_segment_name(dsm_handle handle, char *out)
{
	char *p = out;

	switch (dsm_impl_cfg.impl)
	{
		case DSM_IMPL_SYSV:
			p = PUT_LITERAL(p, "key 0x");
			p = put_hex8(p, dsm_impl_sysv_key(handle));
			break;
		case DSM_IMPL_MMAP:
		{
			size_t len = strnlen(dsm_impl_cfg.realdir, sizeof dsm_impl_cfg.realdir - 1);

			memcpy(p, dsm_impl_cfg.realdir, len);
			p += len;
			p = PUT_LITERAL(p, "/dsmkit.");
			p = put_hex8(p, dsm_impl_cfg.cluster_id);
			*p++ = '.';
			p = put_hex8(p, handle);
			break;
		}
		default:
			p = PUT_LITERAL(p, "/dsmkit.");
			p = put_hex8(p, dsm_impl_cfg.cluster_id);
			*p++ = '.';
			p = put_hex8(p, handle);
			break;
	}
	*p = '\0';
	return (size_t) (p - out);
}

/*
 * The operating-system name of a segment in the configured implementation
 * (before dsm_impl_configure(): the POSIX form with cluster id 0):
 * "key 0x<key>" for System V, "<realdir>/dsmkit.<cluster>.<handle>" for
 * mmap, "/dsmkit.<cluster>.<handle>" for POSIX, numbers as 8 lowercase
 * hexadecimal digits.  Writes at most buflen bytes, always terminated when
 * buflen > 0, and returns the full name's length, as snprintf() would.
 * Never fails.
 */
int
dsm_impl_segment_name(dsm_handle handle, char *buf, size_t buflen)
{
	char name[DSM_IMPL_NAME_MAX];
	size_t len = format_segment_name(handle, name);

	if (buflen > 0)
	{
		size_t n = len < buflen ? len : buflen - 1;

		memcpy(buf, name, n);
		buf[n] = '\0';
	}
	return (int) len;
}

/* Dispatch one operation to the configured implementation; arguments as dsm_impl_op(). */
static bool
dispatch(dsm_op op, dsm_handle handle, const char *name, size_t request_size, void **impl_private,
		 void **mapped_address, size_t *mapped_size, int elevel)
{
	switch (dsm_impl_cfg.impl)
	{
		case DSM_IMPL_SYSV:
			return dsm_impl_sysv(op, handle, request_size, impl_private, mapped_address,
								 mapped_size, elevel);
		case DSM_IMPL_MMAP:
			return dsm_impl_mmap(op, name, request_size, impl_private, mapped_address,
								 mapped_size, elevel);
		default:
			return dsm_impl_posix(op, name, request_size, impl_private, mapped_address,
								  mapped_size, elevel);
	}
}

/*
 * The error code for a failed system call on a segment, to be used inside
 * ereport(): ENOMEM and EFBIG mean the machine is out of (shared) memory;
 * everything else is classified as a file access error (ENOSPC "disk
 * full", EACCES "insufficient privilege", ENOENT "undefined file" ...).
 * err is the failing call's errno, read by the caller before ereport().
 */
int
dsm_impl_errcode(int err)
{
	if (err == ENOMEM || err == EFBIG)
		return errcode(ERRCODE_OUT_OF_MEMORY);
	errno = err;
	return errcode_for_file_access();
}

/*
 * Dispatch one operation to the configured implementation (the contract is
 * in dsm_impl.h).  Checks what all implementations need: a configuration,
 * a valid handle, a non-zero size for CREATE and RESIZE, and output
 * pointers.  Reports at elevel and returns false when a check fails.
 */
bool
dsm_impl_op(dsm_op op, dsm_handle handle, size_t request_size, void **impl_private,
			void **mapped_address, size_t *mapped_size, int elevel)
{
	char name[DSM_IMPL_NAME_MAX];

	if (impl_private == NULL || mapped_address == NULL || mapped_size == NULL)
	{
		ereport(elevel, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("dsm_impl_op() needs impl_private, mapped_address and mapped_size"));
		return false;
	}
	if (dsm_impl_cfg.impl == 0)
	{
		ereport(elevel, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("dynamic shared memory is not configured"),
				errhint("Call dsm_impl_configure(), supervisor_startup() or backend_join() first."));
		return false;
	}
	if (handle == DSM_HANDLE_INVALID)
	{
		ereport(elevel, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid dynamic shared memory handle 0"));
		return false;
	}
	if (op == DSM_OP_DETACH)
	{
		/*
		 * Unmapping needs no name; it only goes into a report.  So try
		 * without one, silently (a failed DETACH changes nothing, see
		 * dsm_impl.h), and build the name only to report a failure.
		 */
		int err;

		if (dispatch(op, handle, "", 0, impl_private, mapped_address, mapped_size, DEBUG5))
			return true;
		err = errno;
		format_segment_name(handle, name);
		errno = err;
		ereport(elevel, dsm_impl_errcode(err),
				errmsg("could not unmap shared memory segment \"%s\": %m", name));
		return false;
	}
	if ((op == DSM_OP_CREATE || op == DSM_OP_RESIZE) && request_size == 0)
	{
		format_segment_name(handle, name);
		ereport(elevel, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("could not size shared memory segment \"%s\" to 0 bytes", name),
				errdetail("A segment must have at least one byte."));
		return false;
	}
	if (op == DSM_OP_CREATE && *mapped_address != NULL)
	{
		format_segment_name(handle, name);
		ereport(elevel, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("could not create shared memory segment \"%s\"", name),
				errdetail("The mapping address passed in is not NULL."));
		return false;
	}
	switch (op)
	{
		case DSM_OP_CREATE:
		case DSM_OP_ATTACH:
		case DSM_OP_DETACH:
		case DSM_OP_RESIZE:
		case DSM_OP_DESTROY:
			break;
		default:
			ereport(elevel, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid dynamic shared memory operation %d", (int) op));
			return false;
	}

	/* System V names a segment by its key, and only when it reports a failure. */
	if (dsm_impl_cfg.impl != DSM_IMPL_SYSV)
		format_segment_name(handle, name);
	else
		name[0] = '\0';
	return dispatch(op, handle, name, request_size, impl_private, mapped_address, mapped_size,
					elevel);
}
