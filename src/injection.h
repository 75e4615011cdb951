/*
 * injection.h: PRIVATE to libdsmkit.  How library code passes an injection
 * point (the public control side is include/dsmkit/injection.h).
 *
 *     int e = INJECTION_POINT("posix-fallocate");
 *     if (e != 0) { rc = e; } else { rc = posix_fallocate(...); }
 *
 * INJECTION_POINT(name) returns 0 to go on normally, or the errno the call
 * at that point must fail with.  KILL and WAIT actions never return.  The
 * name must be listed in injection.c's table.  Without
 * --enable-injection-points it is the constant 0 and costs nothing.
 */
#ifndef DSMKIT_INJECTION_INT_H
#define DSMKIT_INJECTION_INT_H

#include "dsmkit_int.h"

#ifdef USE_INJECTION_POINTS
int injection_point_pass(const char *name);
#define INJECTION_POINT(name) injection_point_pass(name)
#else
#define INJECTION_POINT(name) 0
#endif

#endif /* DSMKIT_INJECTION_INT_H */
