/*
 * dsmctl: the ipcs(1) of a dsmkit cluster.
 *
 *   dsmctl [--json] status  DIR   the supervisor, the implementation, slots, bytes, backends
 *   dsmctl [--json] ls      DIR   one row a segment: handle, size, refcount, pin, pids, age
 *   dsmctl [--json] check   DIR   consistency of the control segment and the system's segments
 *   dsmctl [--json] cleanup DIR   remove what a dead cluster left (refused while it lives)
 *
 * Everything is read through the public API: dsm_cluster_inspect() for a
 * read-only snapshot, dsm_control_check() for a live cluster's
 * consistency, dsm_cluster_cleanup() for the removal.  Errors are ERRORs
 * caught at the top level (main's PG_TRY), printed by EmitErrorReport()
 * and mapped to an exit code; see usage() and dsmctl(1) for the codes.
 * JSON is written by hand (one object on one line, strings escaped).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dsmkit.h>
#include <dsmkit/inspect.h>

/* Exit codes (documented in usage() and dsmctl(1)). */
#define DSMCTL_EXIT_OK 0         /* done; for check: consistent */
#define DSMCTL_EXIT_PROBLEM 1    /* check found problems, status found a stale cluster, cleanup refused */
#define DSMCTL_EXIT_USAGE 2      /* bad command line */
#define DSMCTL_EXIT_UNREADABLE 3 /* no such directory, no cluster there, garbage state file, no permission */
#define DSMCTL_EXIT_FAILURE 4    /* anything else (out of memory, a system failure) */

/* Process-local: the parsed command line. */
typedef struct DsmctlOptions
{
	bool json;             /* --json */
	bool force;            /* --force (cleanup only) */
	const char *command;   /* status, ls, check or cleanup */
	const char *directory; /* the cluster directory */
} DsmctlOptions;

/* Process-local: a growing array of strings (problems, removed objects) in one memory context. */
typedef struct StringList
{
	MemoryContext cxt; /* where the array and the strings live */
	char **items;      /* the strings */
	int n;             /* used entries */
	int cap;           /* allocated entries */
} StringList;

static const char *progname = "dsmctl";

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

/* Print the help text (--help) to out. */
static void
usage(FILE *out)
{
	fprintf(out,
			"%s shows and repairs the shared memory of a dsmkit cluster.\n"
			"\n"
			"Usage:\n"
			"  %s [OPTION]... COMMAND DIR\n"
			"\n"
			"Commands:\n"
			"  status    supervisor pid and whether it runs, implementation, slots, bytes, backends\n"
			"  ls        one row per segment: handle, size, reference count, pinned, pids, age\n"
			"  check     check the control segment against the live processes and the system\n"
			"  cleanup   remove everything a dead cluster left (refused while its supervisor runs)\n"
			"\n"
			"Options:\n"
			"  -j, --json      print one JSON object instead of text\n"
			"  -f, --force     cleanup even if backends of the dead cluster still run\n"
			"  -h, --help      show this help and exit\n"
			"  -V, --version   show the version and exit\n"
			"\n"
			"Exit status:\n"
			"  0  success (check: the cluster is consistent)\n"
			"  1  a problem: check found one, status found a stale cluster, cleanup was refused\n"
			"  2  bad usage\n"
			"  3  the cluster cannot be read: no such directory, no cluster there, garbage state\n"
			"     file, or no permission\n"
			"  4  any other failure\n",
			progname, progname);
}

static DSMKIT_NORETURN void
usage_error(const char *fmt, ...) DSMKIT_PRINTF(1, 2);

/* Print a usage error and exit with DSMCTL_EXIT_USAGE. */
static void
usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"%s --help\" for more information.\n", progname);
	exit(DSMCTL_EXIT_USAGE);
}

/*
 * Parse argv into *opts.  Options may come before or after the command;
 * "--" ends them.  Exits (0 for --help and --version, 2 for a bad command
 * line) instead of returning when there is nothing to run.
 */
static void
parse_options(int argc, char **argv, DsmctlOptions *opts)
{
	bool options_done = false;
	int npos = 0;

	memset(opts, 0, sizeof *opts);
	for (int i = 1; i < argc; i++)
	{
		const char *a = argv[i];

		if (!options_done && a[0] == '-' && a[1] != '\0')
		{
			if (strcmp(a, "--") == 0)
				options_done = true;
			else if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0)
				opts->json = true;
			else if (strcmp(a, "--force") == 0 || strcmp(a, "-f") == 0)
				opts->force = true;
			else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
			{
				usage(stdout);
				exit(DSMCTL_EXIT_OK);
			}
			else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0)
			{
				printf("%s (dsmkit) %s\n", progname, dsmkit_version_string());
				exit(DSMCTL_EXIT_OK);
			}
			else
				usage_error("unrecognized option \"%s\"", a);
			continue;
		}
		if (npos == 0)
			opts->command = a;
		else if (npos == 1)
			opts->directory = a;
		else
			usage_error("too many arguments (first extra: \"%s\")", a);
		npos++;
	}
	if (opts->command == NULL)
		usage_error("no command given");
	if (strcmp(opts->command, "status") != 0 && strcmp(opts->command, "ls") != 0 &&
		strcmp(opts->command, "check") != 0 && strcmp(opts->command, "cleanup") != 0)
		usage_error("unknown command \"%s\"", opts->command);
	if (opts->directory == NULL)
		usage_error("command \"%s\" needs a cluster directory", opts->command);
	if (opts->directory[0] == '\0')
		usage_error("the cluster directory must not be empty");
	if (opts->force && strcmp(opts->command, "cleanup") != 0)
		usage_error("--force applies to cleanup only");
}

/* Append a copy of s to list.  ERROR on out of memory. */
static void
list_add(StringList *list, const char *s)
{
	if (list->n == list->cap)
	{
		int cap = list->cap == 0 ? 8 : list->cap * 2;

		if (list->items == NULL)
			list->items = MemoryContextAlloc(list->cxt, sizeof(char *) * (size_t) cap);
		else
			list->items = repalloc(list->items, sizeof(char *) * (size_t) cap);
		list->cap = cap;
	}
	list->items[list->n++] = MemoryContextStrdup(list->cxt, s);
}

static void list_addf(StringList *list, const char *fmt, ...) DSMKIT_PRINTF(2, 3);

/* Append a formatted sentence to list.  ERROR on out of memory. */
static void
list_addf(StringList *list, const char *fmt, ...)
{
	char buf[4400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	list_add(list, buf);
}

/* The callback for dsm_control_check() and dsm_cluster_cleanup(): collect the sentence. */
static void
collect(const char *sentence, void *arg)
{
	list_add((StringList *) arg, sentence);
}

/* An age in seconds, short and readable: "42s", "3m07s", "5h02m", "12d03h". */
static const char *
format_age(int64_t age, char *buf, size_t len)
{
	if (age < 120)
		snprintf(buf, len, "%" PRId64 "s", age);
	else if (age < 2 * 3600)
		snprintf(buf, len, "%" PRId64 "m%02" PRId64 "s", age / 60, age % 60);
	else if (age < 2 * 86400)
		snprintf(buf, len, "%" PRId64 "h%02" PRId64 "m", age / 3600, (age % 3600) / 60);
	else
		snprintf(buf, len, "%" PRId64 "d%02" PRId64 "h", age / 86400, (age % 86400) / 3600);
	return buf;
}

/* ---------------------------------------------------------------------
 * JSON output
 * ---------------------------------------------------------------------
 */

/*
 * Write s as a JSON string: quotes, backslashes and control characters
 * are escaped, bytes >= 0x80 pass through (names are UTF-8 or opaque
 * bytes).  NULL is written as null.
 */
static void
json_str(FILE *out, const char *s)
{
	if (s == NULL)
	{
		fputs("null", out);
		return;
	}
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *) s; *p != '\0'; p++)
	{
		switch (*p)
		{
			case '"':
				fputs("\\\"", out);
				break;
			case '\\':
				fputs("\\\\", out);
				break;
			case '\n':
				fputs("\\n", out);
				break;
			case '\r':
				fputs("\\r", out);
				break;
			case '\t':
				fputs("\\t", out);
				break;
			case '\b':
				fputs("\\b", out);
				break;
			case '\f':
				fputs("\\f", out);
				break;
			default:
				if (*p < 0x20 || *p == 0x7f)
					fprintf(out, "\\u%04x", *p);
				else
					fputc(*p, out);
		}
	}
	fputc('"', out);
}

/* The JSON spelling of b. */
static const char *
json_bool(bool b)
{
	return b ? "true" : "false";
}

/* Write a list of strings as a JSON array. */
static void
json_str_array(FILE *out, const StringList *list)
{
	fputc('[', out);
	for (int i = 0; i < list->n; i++)
	{
		if (i > 0)
			fputc(',', out);
		json_str(out, list->items[i]);
	}
	fputc(']', out);
}

/* ---------------------------------------------------------------------
 * status
 * ---------------------------------------------------------------------
 */

/* Print the snapshot for "status --json": one object on one line. */
static void
status_json(const DsmClusterInfo *ci)
{
	printf("{\"directory\":");
	json_str(stdout, ci->directory);
	printf(",\"cluster_id\":\"%08x\",\"implementation\":", ci->cluster_id);
	json_str(stdout, ci->impl_name);
	printf(",\"supervisor\":{\"pid\":%d,\"alive\":%s},\"stale\":%s", (int) ci->supervisor_pid,
		   json_bool(ci->supervisor_alive), json_bool(ci->stale));
	printf(",\"control_segment\":{\"handle\":%u,\"name\":", ci->control_handle);
	json_str(stdout, ci->control_os_name);
	printf(",\"present\":%s,\"size\":%" PRIu64 ",\"problem\":", json_bool(ci->control_present),
		   ci->control_size);
	json_str(stdout, ci->control_problem);
	printf("},\"consistent\":%s,\"repairs\":%" PRIu64, json_bool(ci->consistent), ci->repairs);
	printf(",\"slots\":{\"used\":%u,\"total\":%u},\"bytes\":%" PRIu64, ci->slots_used,
		   ci->slots_total, ci->bytes);
	printf(",\"backends\":{\"used\":%d,\"total\":%u,\"list\":[", ci->nbackends, ci->max_backends);
	for (int i = 0; i < ci->nbackends; i++)
	{
		const DsmBackendInfo *b = &ci->backends[i];

		printf("%s{\"slot\":%d,\"pid\":%d,\"state\":\"%s\",\"alive\":%s,\"joined\":%s,\"segments\":%u}",
			   i > 0 ? "," : "", b->index, (int) b->pid, b->state, json_bool(b->alive),
			   json_bool(b->joined), b->nsegments);
	}
	printf("]}}\n");
}

/* Print the snapshot for "status" as labelled lines and a table of backends. */
static void
status_text(const DsmClusterInfo *ci)
{
	printf("directory:        %s\n", ci->directory);
	printf("cluster:          %08x (%s)\n", ci->cluster_id, ci->impl_name);
	if (ci->supervisor_alive)
		printf("supervisor:       pid %d, running\n", (int) ci->supervisor_pid);
	else
		printf("supervisor:       pid %d, not running (stale cluster: \"%s cleanup\" removes it)\n",
			   (int) ci->supervisor_pid, progname);
	if (ci->control_present)
		printf("control segment:  \"%s\", %" PRIu64 " bytes\n", ci->control_os_name,
			   ci->control_size);
	else
		printf("control segment:  unusable: %s\n", ci->control_problem);
	printf("segments:         %u of %u slots used, %" PRIu64 " bytes\n", ci->slots_used,
		   ci->slots_total, ci->bytes);
	printf("backends:         %d of %u slots used\n", ci->nbackends, ci->max_backends);
	if (ci->nbackends > 0)
	{
		printf("  %-5s %-8s %-9s %-6s %-7s %s\n", "SLOT", "PID", "STATE", "ALIVE", "JOINED",
			   "SEGMENTS");
		for (int i = 0; i < ci->nbackends; i++)
		{
			const DsmBackendInfo *b = &ci->backends[i];

			printf("  %-5d %-8d %-9s %-6s %-7s %u\n", b->index, (int) b->pid, b->state,
				   b->alive ? "yes" : "no", b->joined ? "yes" : "no", b->nsegments);
		}
	}
	if (ci->repairs > 0)
		printf("repairs:          %" PRIu64 " updates of dead lock holders rolled back\n",
			   ci->repairs);
	if (ci->control_present && !ci->consistent)
		printf("note: the control segment changed while it was read; the figures are approximate\n");
}

/* "dsmctl status": exit 0 for a running cluster, 1 for a stale one. */
static int
cmd_status(MemoryContext cxt, const DsmctlOptions *opts)
{
	DsmClusterInfo *ci = dsm_cluster_inspect(cxt, opts->directory);
	int rc = ci->stale ? DSMCTL_EXIT_PROBLEM : DSMCTL_EXIT_OK;

	if (opts->json)
		status_json(ci);
	else
		status_text(ci);
	dsm_cluster_info_free(ci);
	return rc;
}

/* ---------------------------------------------------------------------
 * ls
 * ---------------------------------------------------------------------
 */

/* Print the segments for "ls --json": one object on one line. */
static void
ls_json(const DsmClusterInfo *ci)
{
	printf("{\"directory\":");
	json_str(stdout, ci->directory);
	printf(",\"stale\":%s,\"control_present\":%s,\"consistent\":%s,\"segments\":[",
		   json_bool(ci->stale), json_bool(ci->control_present), json_bool(ci->consistent));
	for (int i = 0; i < ci->nsegments; i++)
	{
		const DsmSegmentInfo *s = &ci->segments[i];

		printf("%s{\"handle\":%u,\"slot\":%u,\"size\":%" PRIu64
			   ",\"refcnt\":%u,\"pinned\":%s,\"moribund\":%s,\"pids\":[",
			   i > 0 ? "," : "", s->handle, s->slot, s->size, s->refcnt, json_bool(s->pinned),
			   json_bool(s->moribund));
		for (int p = 0; p < s->npids; p++)
			printf("%s%d", p > 0 ? "," : "", (int) s->pids[p]);
		printf("],\"ctime\":%lld,\"age\":%" PRId64 ",\"name\":", (long long) s->ctime, s->age);
		json_str(stdout, s->os_name);
		printf("}");
	}
	printf("]}\n");
}

/* Print the segments for "ls" as a table, one row a segment. */
static void
ls_text(const DsmClusterInfo *ci)
{
	if (!ci->control_present)
	{
		printf("no segments can be listed: %s\n", ci->control_problem);
		return;
	}
	printf("%-10s %-5s %-12s %-6s %-6s %-8s %s\n", "HANDLE", "SLOT", "SIZE", "REFCNT", "PINNED",
		   "AGE", "PIDS");
	for (int i = 0; i < ci->nsegments; i++)
	{
		const DsmSegmentInfo *s = &ci->segments[i];
		char age[32];
		char pids[256];
		size_t off = 0;

		pids[0] = '\0';
		for (int p = 0; p < s->npids && off < sizeof pids - 16; p++)
			off += (size_t) snprintf(pids + off, sizeof pids - off, "%s%d", p > 0 ? "," : "",
									 (int) s->pids[p]);
		if (s->npids == 0)
			snprintf(pids, sizeof pids, "%s", s->moribund ? "- (moribund)" : "-");
		printf("%-10u %-5u %-12" PRIu64 " %-6u %-6s %-8s %s\n", s->handle, s->slot, s->size,
			   s->refcnt, s->pinned ? "yes" : "no", format_age(s->age, age, sizeof age), pids);
	}
	printf("(%d segments, %" PRIu64 " bytes%s)\n", ci->nsegments, ci->bytes,
		   ci->stale ? "; the supervisor is not running" : "");
}

/* "dsmctl ls": exit 0 whenever the cluster could be read. */
static int
cmd_ls(MemoryContext cxt, const DsmctlOptions *opts)
{
	DsmClusterInfo *ci = dsm_cluster_inspect(cxt, opts->directory);

	if (opts->json)
		ls_json(ci);
	else
		ls_text(ci);
	dsm_cluster_info_free(ci);
	return DSMCTL_EXIT_OK;
}

/* ---------------------------------------------------------------------
 * check
 * ---------------------------------------------------------------------
 */

/*
 * For a stale cluster: report every operating-system segment still named
 * for it (POSIX objects in /dev/shm, mmap files in the directory, System
 * V segments whose key carries the cluster's tag).  Reads only.
 */
static void
check_leftovers(const DsmClusterInfo *ci, StringList *problems)
{
	char prefix[32];

	snprintf(prefix, sizeof prefix, "dsmkit.%08x.", ci->cluster_id);
	if (ci->impl == DSM_IMPL_POSIX || ci->impl == DSM_IMPL_MMAP)
	{
		DIR *d = opendir(ci->impl == DSM_IMPL_POSIX ? "/dev/shm" : ci->directory);
		struct dirent *de;

		if (d == NULL)
			return;
		while ((de = readdir(d)) != NULL)
			if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
				list_addf(problems, "operating-system segment \"%s\" is left over", de->d_name);
		closedir(d);
	}
	else
	{
		FILE *f = fopen("/proc/sysvipc/shm", "re");
		uint32_t tag = ((ci->cluster_id >> 16) ^ (ci->cluster_id & 0xffff)) & 0xffff;
		char line[512];

		if (f == NULL)
			return;
		if (fgets(line, sizeof line, f) != NULL)
			while (fgets(line, sizeof line, f) != NULL)
			{
				long long key;

				if (sscanf(line, "%lld", &key) == 1 && key != 0 && ((uint32_t) key >> 16) == tag)
					list_addf(problems, "System V segment with key 0x%08x is left over",
							  (unsigned) key);
			}
		fclose(f);
	}
}

/*
 * "dsmctl check": a running cluster is checked by dsm_control_check(); a
 * stale one is not touched (checking would take its lock and could repair
 * it): its leftovers are listed as problems instead.  Exit 0 when
 * consistent, 1 otherwise.
 */
static int
cmd_check(MemoryContext cxt, const DsmctlOptions *opts)
{
	DsmClusterInfo *ci = dsm_cluster_inspect(cxt, opts->directory);
	StringList problems = {cxt, NULL, 0, 0};
	int rc;

	if (ci->stale)
	{
		list_addf(&problems, "the supervisor (pid %d) is not running: the cluster is stale",
				  (int) ci->supervisor_pid);
		for (int i = 0; i < ci->nbackends; i++)
			if (ci->backends[i].alive)
				list_addf(&problems, "backend %d (pid %d) still runs without its supervisor",
						  ci->backends[i].index, (int) ci->backends[i].pid);
		for (int i = 0; i < ci->nsegments; i++)
			list_addf(&problems, "segment %u (\"%s\", %" PRIu64 " bytes) is left in the control segment",
					  ci->segments[i].handle, ci->segments[i].os_name, ci->segments[i].size);
		if (!ci->control_present)
			list_add(&problems, ci->control_problem);
		check_leftovers(ci, &problems);
	}
	else if (!ci->control_present)
		list_add(&problems, ci->control_problem);
	else
		(void) dsm_control_check(opts->directory, collect, &problems);

	rc = problems.n == 0 ? DSMCTL_EXIT_OK : DSMCTL_EXIT_PROBLEM;
	if (opts->json)
	{
		printf("{\"directory\":");
		json_str(stdout, ci->directory);
		printf(",\"ok\":%s,\"stale\":%s,\"problems\":", json_bool(problems.n == 0),
			   json_bool(ci->stale));
		json_str_array(stdout, &problems);
		printf("}\n");
	}
	else if (problems.n == 0)
		printf("ok: the cluster in \"%s\" is consistent (%u segments, %d backends)\n", ci->directory,
			   ci->slots_used, ci->nbackends);
	else
	{
		for (int i = 0; i < problems.n; i++)
			printf("problem: %s\n", problems.items[i]);
		printf("%d problem%s found in \"%s\"\n", problems.n, problems.n == 1 ? "" : "s",
			   ci->directory);
	}
	dsm_cluster_info_free(ci);
	return rc;
}

/* ---------------------------------------------------------------------
 * cleanup
 * ---------------------------------------------------------------------
 */

/* "dsmctl cleanup": exit 0 after a cleanup, 1 when refused (the cluster or a backend runs). */
static int
cmd_cleanup(MemoryContext cxt, const DsmctlOptions *opts)
{
	StringList removed = {cxt, NULL, 0, 0};
	int n = dsm_cluster_cleanup(opts->directory, opts->force ? DSM_CLEANUP_FORCE : 0, collect,
								&removed);

	if (opts->json)
	{
		printf("{\"directory\":");
		json_str(stdout, opts->directory);
		printf(",\"count\":%d,\"removed\":", n);
		json_str_array(stdout, &removed);
		printf("}\n");
	}
	else
	{
		for (int i = 0; i < removed.n; i++)
			printf("%s\n", removed.items[i]);
		printf("%d object%s removed from \"%s\"\n", n, n == 1 ? "" : "s", opts->directory);
	}
	return DSMCTL_EXIT_OK;
}

/* ---------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------
 */

/* The exit code for an ERROR that reached the top level. */
static int
exit_code_for(int sqlerrcode)
{
	if (sqlerrcode == ERRCODE_OBJECT_IN_USE)
		return DSMCTL_EXIT_PROBLEM;
	if (sqlerrcode == ERRCODE_UNDEFINED_FILE || sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE ||
		sqlerrcode == ERRCODE_DATA_CORRUPTED || sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE ||
		sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		return DSMCTL_EXIT_UNREADABLE;
	return DSMCTL_EXIT_FAILURE;
}

int
main(int argc, char **argv)
{
	DsmctlOptions opts;
	MemoryContext cxt;
	volatile int rc = DSMCTL_EXIT_FAILURE;

	parse_options(argc, argv, &opts);
	MemoryContextInit();
	set_log_line_prefix("dsmctl: ");
	log_min_messages = WARNING;
	cxt = AllocSetContextCreate(TopMemoryContext, "dsmctl", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);

	PG_TRY();
	{
		if (strcmp(opts.command, "status") == 0)
			rc = cmd_status(cxt, &opts);
		else if (strcmp(opts.command, "ls") == 0)
			rc = cmd_ls(cxt, &opts);
		else if (strcmp(opts.command, "check") == 0)
			rc = cmd_check(cxt, &opts);
		else
			rc = cmd_cleanup(cxt, &opts);
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(TopMemoryContext);
		ed = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		rc = exit_code_for(ed->sqlerrcode);
		if (opts.json)
		{
			printf("{\"error\":{\"sqlstate\":\"%s\",\"message\":", unpack_sql_state(ed->sqlerrcode));
			json_str(stdout, ed->message);
			printf(",\"detail\":");
			json_str(stdout, ed->detail);
			printf(",\"hint\":");
			json_str(stdout, ed->hint);
			printf("},\"exit_code\":%d}\n", rc);
		}
		FreeErrorData(ed);
	}
	PG_END_TRY();
	fflush(stdout);
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextDelete(cxt);
	return rc;
}
