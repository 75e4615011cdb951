/*
 * dsmkit.h: everything dsmkit offers, in one include.
 */
#ifndef DSMKIT_H
#define DSMKIT_H

#include <dsmkit/common.h>
#include <dsmkit/version.h>
#include <dsmkit/elog.h>
#include <dsmkit/palloc.h>
#include <dsmkit/memutils.h>
#include <dsmkit/ipc.h>
#include <dsmkit/resowner.h>
#include <dsmkit/dsm_impl.h>
#include <dsmkit/dsm.h>
#include <dsmkit/supervisor.h>
#include <dsmkit/injection.h>
#include <dsmkit/inspect.h>

#endif /* DSMKIT_H */
