/*
 * ipc.c: the exit-hook chains (before_shmem_exit, on_shmem_exit,
 * on_proc_exit), proc_exit() and the atexit backstop.
 *
 * Each chain is a fixed array of (function, arg) pairs in static memory, so
 * registering never allocates and running the hooks works with no memory
 * left.  Hooks run last-registered first; each is removed from its chain
 * before it is called and runs inside its own PG_TRY, so a hook that raises
 * ERROR is reported, is not called again, and does not stop the others.
 *
 * Hooks belong to the process that registered them.  The pid of that
 * process is recorded; whenever this file finds that it runs in a different
 * process (a child made by fork() that did not call on_exit_reset()), it
 * drops the inherited hooks without running them.
 *
 * All state here is process-local (not shared memory) and not thread-safe.
 */
#include "dsmkit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <dsmkit/elog.h>
#include <dsmkit/ipc.h>

/* One registered hook (process-local). */
typedef struct ExitHook
{
	pg_on_exit_callback function;
	Datum arg;
} ExitHook;

/* One chain of hooks (process-local); hooks[0 .. count-1], the last is run first. */
typedef struct ExitChain
{
	const char *name;
	int count;
	ExitHook hooks[MAX_ON_EXITS];
} ExitChain;

static ExitChain before_shmem_exit_chain = {.name = "before_shmem_exit"};
static ExitChain on_shmem_exit_chain = {.name = "on_shmem_exit"};
static ExitChain on_proc_exit_chain = {.name = "on_proc_exit"};

/* The process whose hooks the chains hold; 0 when the chains are empty and unowned. */
static pid_t hooks_owner_pid = 0;
/* Whether exit_backstop() is registered with atexit() (inherited across fork, as is the handler). */
static bool backstop_installed = false;
/* True while exit_backstop() runs the chains (exit() must not be called then). */
static bool backstop_running = false;

bool proc_exit_inprogress = false;
uint32_t ipc_exit_entries = 0;
bool shmem_exit_inprogress = false;

/* Empty all three chains without running anything. */
static void
clear_chains(void)
{
	before_shmem_exit_chain.count = 0;
	on_shmem_exit_chain.count = 0;
	on_proc_exit_chain.count = 0;
	hooks_owner_pid = 0;
}

/*
 * If the chains hold hooks of another process (we are a forked child that
 * inherited them), drop them silently: they are not ours to run.
 */
static void
drop_inherited_hooks(void)
{
	if (hooks_owner_pid != 0 && hooks_owner_pid != getpid())
		clear_chains();
}

static void run_all_chains(int code);

/* True if any chain still holds a hook. */
static bool
hooks_pending(void)
{
	return before_shmem_exit_chain.count > 0 || on_shmem_exit_chain.count > 0 ||
		on_proc_exit_chain.count > 0;
}

/*
 * The atexit backstop: a process that registered hooks and leaves with
 * exit() or by returning from main() without proc_exit() still runs them,
 * with code 0 (the real exit status is not known here).  The same holds
 * for a hook that calls exit() while proc_exit() runs the chains: the
 * hooks not yet run still run (each was popped before it was called, so
 * none runs twice).  After a complete proc_exit() the chains are empty and
 * this does nothing.  A forked child that inherited the handler runs
 * nothing of its parent's.
 */
static void
exit_backstop(void)
{
	drop_inherited_hooks();
	if (!hooks_pending())
		return;
	backstop_running = true;
	proc_exit_inprogress = true;
	ipc_exit_entries++;
	run_all_chains(0);
}

/*
 * Register (function, arg) on chain.  Raises ERROR (program limit
 * exceeded, naming the chain) when the chain is full; nothing is dropped.
 * The first registration of the process installs the atexit backstop,
 * which atexit() itself may refuse (ERROR, out of memory).
 */
static void
register_hook(ExitChain *chain, pg_on_exit_callback function, Datum arg)
{
	drop_inherited_hooks();

	if (chain->count >= MAX_ON_EXITS)
		ereport(ERROR, errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("out of %s slots", chain->name),
				errdetail("Each exit-hook chain holds at most %d callbacks.", MAX_ON_EXITS));

	if (!backstop_installed)
	{
		if (atexit(exit_backstop) != 0)
			ereport(ERROR, errcode(ERRCODE_OUT_OF_MEMORY),
					errmsg("could not register the exit hook backstop with atexit()"));
		backstop_installed = true;
	}

	chain->hooks[chain->count].function = function;
	chain->hooks[chain->count].arg = arg;
	chain->count++;
	hooks_owner_pid = getpid();
}

/*
 * on_proc_exit, before_shmem_exit, on_shmem_exit: register a hook on the
 * chain of that name, to be run by proc_exit() (or shmem_exit(), or the
 * atexit backstop) with the exit code and arg.  May be called at any time,
 * even while the chains run (a hook registered then runs in turn if its
 * chain has not finished).  ERROR when the chain already holds MAX_ON_EXITS
 * hooks.
 */
void
on_proc_exit(pg_on_exit_callback function, Datum arg)
{
	register_hook(&on_proc_exit_chain, function, arg);
}

void
before_shmem_exit(pg_on_exit_callback function, Datum arg)
{
	register_hook(&before_shmem_exit_chain, function, arg);
}

void
on_shmem_exit(pg_on_exit_callback function, Datum arg)
{
	register_hook(&on_shmem_exit_chain, function, arg);
}

/*
 * cancel_before_shmem_exit: remove the latest before_shmem_exit hook, which
 * must be (function, arg); ERROR otherwise (nothing is removed), because
 * cancelling anything but the latest would break the LIFO order the
 * registrations rely on.
 */
void
cancel_before_shmem_exit(pg_on_exit_callback function, Datum arg)
{
	ExitChain *chain = &before_shmem_exit_chain;

	drop_inherited_hooks();
	if (chain->count > 0 && chain->hooks[chain->count - 1].function == function &&
		chain->hooks[chain->count - 1].arg == arg)
	{
		chain->count--;
		return;
	}
	ereport(ERROR, errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg("before_shmem_exit callback %p with argument %#lx is not the latest registered",
				   (void *) (uintptr_t) function, (unsigned long) arg));
}

/*
 * on_exit_reset: forget every hook without running any.  A child made by
 * fork() calls it first thing (the supervisor's spawn does); the pid check
 * makes forgetting it harmless, but explicit is clearer.  Never fails.
 */
void
on_exit_reset(void)
{
	clear_chains();
}

/*
 * ipc_after_fork: library-internal; called in a child right after fork().
 * Drops the parent's hooks and any "exit in progress" state the child
 * inherited.
 */
void
ipc_after_fork(void)
{
	clear_chains();
	proc_exit_inprogress = false;
	shmem_exit_inprogress = false;
	backstop_running = false;
}

/*
 * Run one hook inside its own error handler: an ERROR it raises is printed
 * and forgotten, and the next hook runs.
 */
static void
run_hook(const ExitChain *chain, ExitHook hook, int code)
{
	PG_TRY();
	{
		hook.function(code, hook.arg);
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		ereport(LOG, errmsg("%s callback failed; running the remaining exit callbacks", chain->name));
	}
	PG_END_TRY();
}

/* Pop and run the hooks of chain, last registered first, until it is empty. */
static void
run_chain(ExitChain *chain, int code)
{
	while (chain->count > 0)
	{
		ExitHook hook;

		chain->count--;
		hook = chain->hooks[chain->count];
		run_hook(chain, hook, code);
	}
}

/* The shmem chains, in order. */
static void
run_shmem_chains(int code)
{
	shmem_exit_inprogress = true;
	run_chain(&before_shmem_exit_chain, code);
	run_chain(&on_shmem_exit_chain, code);
	shmem_exit_inprogress = false;
}

/*
 * All three chains, in order, then forget the owner, unless a hook
 * registered another one on a chain that had already finished: that one is
 * still this process's, and the atexit backstop runs it.
 */
static void
run_all_chains(int code)
{
	run_shmem_chains(code);
	run_chain(&on_proc_exit_chain, code);
	if (!hooks_pending())
		hooks_owner_pid = 0;
}

/*
 * shmem_exit: run the before_shmem_exit hooks, then the on_shmem_exit ones
 * (each chain last-registered first), leaving on_proc_exit alone.  For a
 * process that detaches from shared memory but goes on living.  Hooks
 * inherited from a parent process are dropped, not run.  Never fails: hook
 * errors are logged.
 */
void
shmem_exit(int code)
{
	drop_inherited_hooks();
	run_shmem_chains(code);
}

/*
 * proc_exit: run the three chains (before_shmem_exit, on_shmem_exit,
 * on_proc_exit, each LIFO), then exit(code).  Never returns.  Hooks
 * inherited from a parent process are dropped, not run.  Called again from
 * inside a hook (for instance by a FATAL report), it carries on with the
 * hooks not yet run and exits with the new code.  Called while the atexit
 * backstop runs (exit() may not be called again then), it finishes the
 * chains, flushes stdio and leaves with _exit(code).
 */
void
proc_exit(int code)
{
	drop_inherited_hooks();
	proc_exit_inprogress = true;
	ipc_exit_entries++;
	run_all_chains(code);
	if (backstop_running)
	{
		fflush(NULL);
		_exit(code);
	}
	exit(code);
}
