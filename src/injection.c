/*
 * injection.c: fault-injection points (public side in
 * include/dsmkit/injection.h, library side in src/injection.h).
 *
 * The list of points is fixed at compile time (point_names below, also
 * documented in InjectionPointAttach(3)).  Each process has its own table of
 * settings, one entry per point, which fork() copies into the child; that
 * is how a test arms a point in a child it is about to fork, or in itself.
 * A process started by exec reads DSMKIT_INJECTION_POINTS instead, once, the
 * first time any point or control function is used.
 *
 * Without --enable-injection-points the library passes no points (the
 * INJECTION_POINT macro is the constant 0), but the public functions still
 * exist, so that the library exports the same names in both builds.
 *
 * Not thread-safe: like the rest of dsmkit, one thread per process uses it.
 */
#define _GNU_SOURCE
#include "dsmkit_int.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dsmkit/elog.h>
#include <dsmkit/injection.h>

#include "injection.h"

#ifdef USE_INJECTION_POINTS

/*
 * Every point the library may pass.  The dsm_impl ones are passed in
 * dsm_impl_*.c; the others are reserved for dsm.c and supervisor.c, which
 * pass them where their names say.
 */
static const char *const point_names[] = {
	/* POSIX and mmap implementations (the fd-based engine) */
	"dsm-impl-create-open",       /* shm_open/open at CREATE */
	"dsm-impl-create-resize",     /* ftruncate at CREATE */
	"dsm-impl-create-fallocate",  /* posix_fallocate at CREATE */
	"dsm-impl-create-mmap",       /* mmap at CREATE */
	"dsm-impl-attach-open",       /* shm_open/open at ATTACH */
	"dsm-impl-attach-fstat",      /* fstat at ATTACH */
	"dsm-impl-attach-mmap",       /* mmap at ATTACH */
	"dsm-impl-resize-open",       /* shm_open/open at RESIZE */
	"dsm-impl-resize-fstat",      /* fstat at RESIZE */
	"dsm-impl-resize",            /* ftruncate at RESIZE */
	"dsm-impl-resize-fallocate",  /* posix_fallocate of the grown part at RESIZE */
	"dsm-impl-resize-mmap",       /* mremap/mmap at RESIZE */
	"dsm-impl-resize-restore",    /* ftruncate back to the old size after a failed RESIZE */
	"dsm-impl-detach",            /* munmap/shmdt at DETACH, DESTROY and remap */
	"dsm-impl-destroy",           /* shm_unlink/unlink/IPC_RMID at DESTROY */
	/* System V implementation */
	"sysv-shmget",                /* shmget at CREATE, ATTACH, DESTROY */
	"sysv-shmat",                 /* shmat at CREATE and ATTACH */
	"sysv-shmctl",                /* shmctl(IPC_STAT) at ATTACH */
	/* dsm.c */
	"dsm-create-before-slot",
	"dsm-create-after-slot",
	"dsm-create-slot-owned",      /* a create owns its slot (cached or reserved), not yet renamed */
	"dsm-create-new-handle",      /* a create's name was taken: before it draws another handle */
	"dsm-create-made",            /* a create made its segment, its id not yet recorded */
	"dsm-create-published",       /* a lock-free create set its bit, still owns the slot */
	"dsm-destroy-before-free",    /* a segment destroyed, its slot not yet freed or cached */
	"dsm-slot-cached",            /* a destroyed segment's slot kept in the backend's cache */
	"dsm-slot-taken",             /* a creator took another backend's cached slot, under the lock */
	"dsm-attach-after-refcount",
	"dsm-detach-before-refcount",
	"dsm-detach-before-destroy",
	"dsm-control-locked",
	"dsm-word-changed",           /* a lock holder changed a slot's word, before its commit */
	"dsm-control-create",
	"dsm-resize-before",
	"dsm-pin-segment",
	"dsm-unpin-segment",
	/* supervisor.c */
	"supervisor-startup-after-cleanup",
	"supervisor-startup-after-control",
	"supervisor-startup-before-statefile",
	"supervisor-statefile-write",
	"supervisor-statefile-fsync",
	"supervisor-statefile-rename",
	"supervisor-shutdown-mid",
	"supervisor-reap-before-reclaim",
	"supervisor-reap-mid-reclaim",
	"supervisor-spawn-after-fork",
	"backend-join-after-state",
	NULL
};

#define NPOINTS (lengthof(point_names) - 1)

/* Process-local settings of one point (copied into fork()ed children). */
typedef struct InjectionPointState
{
	bool armed;                   /* attached and not detached since */
	InjectionPointAction action;  /* what to do when it fires */
	int arg;                      /* errno, or fd for WAIT */
	int skip;                     /* passes that go by before it fires */
	int count;                    /* passes it fires on after skip; < 0: all */
	int passes;                   /* passes since attached (or process start) */
} InjectionPointState;

static InjectionPointState points[NPOINTS];
static bool env_parsed;

static int
point_index(const char *name)
{
	if (name == NULL)
		return -1;
	for (size_t i = 0; i < NPOINTS; i++)
		if (strcmp(point_names[i], name) == 0)
			return (int) i;
	return -1;
}

static void
arm(int i, InjectionPointAction action, int arg, int skip, int count)
{
	points[i].armed = true;
	points[i].action = action;
	points[i].arg = arg;
	points[i].skip = skip < 0 ? 0 : skip;
	points[i].count = count;
	points[i].passes = 0;
}

/* Parse a non-negative decimal integer filling [s, end); false if malformed. */
static bool
parse_int(const char *s, const char *end, int *out)
{
	long v = 0;

	if (s == end)
		return false;
	for (const char *p = s; p < end; p++)
	{
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
		if (v > INT_MAX)
			return false;
	}
	*out = (int) v;
	return true;
}

/*
 * Parse one entry of DSMKIT_INJECTION_POINTS, [s, end):
 *   name=kill | name=errno:N | name=wait:FD
 * optionally followed by ",skip=N" and/or ",count=N" (count -1 is written
 * "count=all").  Arms the point and returns true, or returns false for a
 * malformed entry or an unknown name.
 */
static bool
parse_entry(const char *s, const char *end)
{
	const char *eq = memchr(s, '=', end - s);
	const char *spec_end;
	const char *colon;
	char name[128];
	InjectionPointAction action;
	int arg = 0;
	int skip = 0;
	int count = -1;
	int i;

	if (eq == NULL || eq == s || (size_t) (eq - s) >= sizeof name)
		return false;
	memcpy(name, s, eq - s);
	name[eq - s] = '\0';
	i = point_index(name);
	if (i < 0)
		return false;

	spec_end = memchr(eq + 1, ',', end - (eq + 1));
	if (spec_end == NULL)
		spec_end = end;
	colon = memchr(eq + 1, ':', spec_end - (eq + 1));
	if (colon == NULL)
		colon = spec_end;
	if (colon - (eq + 1) == 4 && strncmp(eq + 1, "kill", 4) == 0 && colon == spec_end)
		action = INJECTION_KILL;
	else if (colon - (eq + 1) == 5 && strncmp(eq + 1, "errno", 5) == 0 && colon < spec_end &&
			 parse_int(colon + 1, spec_end, &arg) && arg > 0)
		action = INJECTION_FAIL_ERRNO;
	else if (colon - (eq + 1) == 4 && strncmp(eq + 1, "wait", 4) == 0 && colon < spec_end &&
			 parse_int(colon + 1, spec_end, &arg))
		action = INJECTION_WAIT;
	else
		return false;

	/* Options: ",skip=N", ",count=N" or ",count=all". */
	while (spec_end < end)
	{
		const char *opt = spec_end + 1;
		const char *opt_end = memchr(opt, ',', end - opt);

		if (opt_end == NULL)
			opt_end = end;
		if (opt_end - opt > 5 && strncmp(opt, "skip=", 5) == 0)
		{
			if (!parse_int(opt + 5, opt_end, &skip))
				return false;
		}
		else if (opt_end - opt == 9 && strncmp(opt, "count=all", 9) == 0)
			count = -1;
		else if (opt_end - opt > 6 && strncmp(opt, "count=", 6) == 0)
		{
			if (!parse_int(opt + 6, opt_end, &count))
				return false;
		}
		else
			return false;
		spec_end = opt_end;
	}
	arm(i, action, arg, skip, count);
	return true;
}

/*
 * Read DSMKIT_INJECTION_POINTS once per process image.  A fork()ed child
 * inherits the parent's table and does not read it again.  A malformed
 * entry is skipped with a WARNING (this runs inside library code that must
 * not fail for it).
 */
static void
parse_environment(void)
{
	const char *env;
	const char *s;

	if (likely(env_parsed))
		return;
	env_parsed = true;
	env = getenv("DSMKIT_INJECTION_POINTS");
	if (env == NULL)
		return;
	s = env;
	while (*s != '\0')
	{
		const char *end = strchr(s, ';');

		if (end == NULL)
			end = s + strlen(s);
		if (end > s && !parse_entry(s, end))
			ereport(WARNING, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("ignoring invalid entry \"%.*s\" in DSMKIT_INJECTION_POINTS",
						   (int) (end - s), s),
					errhint("Entries look like name=kill, name=errno:28 or name=wait:5, optionally followed by ,skip=N and ,count=N."));
		s = *end == ';' ? end + 1 : end;
	}
}

/*
 * Pass the point name (library side, see src/injection.h).  Counts the
 * pass; if the point is armed and this pass is one it fires on, acts:
 * returns the errno for FAIL_ERRNO, never returns for KILL and WAIT.
 * Returns 0 otherwise.  errno is preserved when returning 0.
 */
int
injection_point_pass(const char *name)
{
	int i;
	InjectionPointState *p;

	if (unlikely(!env_parsed))
	{
		int save_errno = errno;

		parse_environment();
		errno = save_errno;
	}
	i = point_index(name);
	if (unlikely(i < 0))
	{
		/* A point missing from point_names: a library bug, never fatal. */
		int save_errno = errno;

		ereport(WARNING, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("unknown injection point \"%s\" passed", name ? name : "(null)"),
				errhint("Add it to point_names in src/injection.c."));
		errno = save_errno;
		return 0;
	}
	p = &points[i];
	if (p->passes < INT_MAX)
		p->passes++;
	if (!p->armed || p->passes <= p->skip)
		return 0;
	if (p->count >= 0 && p->passes - p->skip > p->count)
		return 0;

	switch (p->action)
	{
		case INJECTION_FAIL_ERRNO:
			return p->arg;
		case INJECTION_KILL:
			raise(SIGKILL);
			break;
		case INJECTION_WAIT:
			{
				char byte = 'w';
				ssize_t n;

				do
					n = write(p->arg, &byte, 1);
				while (n < 0 && errno == EINTR);
			}
			break;
	}
	/* KILL cannot get here; WAIT (or a KILL that did not land) blocks. */
	for (;;)
		pause();
}

bool
InjectionPointsEnabled(void)
{
	return true;
}

/*
 * Arm a point in this process (contract in injection.h).  ERROR for an
 * unknown name or a bad action; fork()ed children inherit the setting.
 */
void
InjectionPointAttach(const char *name, InjectionPointAction action, int arg, int skip, int count)
{
	int i;

	parse_environment();
	i = point_index(name);
	if (i < 0)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("unknown injection point \"%s\"", name ? name : "(null)"),
				errhint("InjectionPointNames() lists the points of this library."));
	if (action != INJECTION_FAIL_ERRNO && action != INJECTION_KILL && action != INJECTION_WAIT)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid action %d for injection point \"%s\"", (int) action, name));
	if (action == INJECTION_FAIL_ERRNO && arg <= 0)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid errno %d for injection point \"%s\"", arg, name));
	arm(i, action, arg, skip, count);
}

/* Disarm one point; unknown names and unarmed points are ignored. */
void
InjectionPointDetach(const char *name)
{
	int i;

	parse_environment();
	i = point_index(name);
	if (i >= 0)
		points[i].armed = false;
}

void
InjectionPointDetachAll(void)
{
	parse_environment();
	for (size_t i = 0; i < NPOINTS; i++)
		points[i].armed = false;
}

/*
 * Passes of name since it was last armed (or since the process image
 * started, if never armed).  ERROR for an unknown name.
 */
int
InjectionPointPasses(const char *name)
{
	int i;

	parse_environment();
	i = point_index(name);
	if (i < 0)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("unknown injection point \"%s\"", name ? name : "(null)"));
	return points[i].passes;
}

const char *const *
InjectionPointNames(void)
{
	return point_names;
}

#else /* !USE_INJECTION_POINTS */

static const char *const no_names[] = {NULL};

bool
InjectionPointsEnabled(void)
{
	return false;
}

void
InjectionPointAttach(const char *name, InjectionPointAction action, int arg, int skip, int count)
{
	ereport(ERROR, errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			errmsg("could not attach injection point \"%s\": injection points are not supported by this build",
				   name ? name : "(null)"),
			errhint("Configure dsmkit with --enable-injection-points."));
}

void
InjectionPointDetach(const char *name)
{
}

void
InjectionPointDetachAll(void)
{
}

int
InjectionPointPasses(const char *name)
{
	return 0;
}

const char *const *
InjectionPointNames(void)
{
	return no_names;
}

#endif /* USE_INJECTION_POINTS */
