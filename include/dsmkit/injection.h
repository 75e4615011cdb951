/*
 * dsmkit/injection.h: fault-injection points, for tests of failure paths.
 *
 * The library's dsm, implementation and supervisor code passes named
 * points (such as "posix-fallocate" or "dsm-create-after-slot").  In a
 * build configured with --enable-injection-points, a test can arm a point
 * in its own process so that, when reached, the process
 *   - fails the system call at that point with a chosen errno
 *     (INJECTION_FAIL_ERRNO, arg = the errno), or
 *   - kills itself with SIGKILL (INJECTION_KILL), or
 *   - writes one byte to file descriptor arg and then blocks until a
 *     signal ends it (INJECTION_WAIT), so a test can kill it exactly there.
 * Points armed in a process are inherited by its fork()ed children; a
 * process started by exec reads them from the environment variable
 * DSMKIT_INJECTION_POINTS ("name=kill;name=errno:28;name=wait:5").
 *
 * In a build without injection points the points cost nothing, and
 * InjectionPointAttach() raises ERROR (feature not supported).
 */
#ifndef DSMKIT_INJECTION_H
#define DSMKIT_INJECTION_H

#include <dsmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum
{
	INJECTION_FAIL_ERRNO = 1, /* the call at the point fails with errno = arg */
	INJECTION_KILL,           /* raise(SIGKILL) at the point */
	INJECTION_WAIT            /* write a byte to fd arg, then block until killed */
} InjectionPointAction;

/* True if this build has injection points compiled in. */
DSMKIT_API bool InjectionPointsEnabled(void);

/*
 * Arm the point name in this process: the first skip passes go by, then the
 * action fires on each of the next count passes (count < 0: every pass).
 * Arming a point again replaces its settings.  ERROR if the name is not a
 * point of the library (the list is in injection(3)) or the build has none.
 */
DSMKIT_API void InjectionPointAttach(const char *name, InjectionPointAction action, int arg,
									 int skip, int count);
/* Disarm one point (no error if it was not armed) or all of them. */
DSMKIT_API void InjectionPointDetach(const char *name);
DSMKIT_API void InjectionPointDetachAll(void);
/* How many times this process passed the point since it was armed. */
DSMKIT_API int InjectionPointPasses(const char *name);

/*
 * The names of all points, NULL-terminated, so that a test can loop over
 * every point.  Empty in a build without injection points.
 */
DSMKIT_API const char *const *InjectionPointNames(void);

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_INJECTION_H */
