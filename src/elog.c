/*
 * elog.c: error reporting (ereport/elog), PG_TRY recovery and log output.
 *
 * A report is built in a frame of a small, fixed stack of error frames
 * (errordata[]).  errstart() pushes a frame and saves errno; the auxiliary
 * functions (errcode, errmsg, ...) fill it; errfinish() adds the CONTEXT
 * lines of error_context_stack and then either prints the report and pops
 * the frame (below ERROR), or leaves it on the stack and unwinds with
 * siglongjmp() to the innermost PG_TRY (ERROR).  A caught error stays "being
 * handled" until FlushErrorState() pops it, so PG_CATCH code can look at it
 * with geterrcode(), CopyErrorData() and EmitErrorReport().
 *
 * All the memory a report needs is in this file's static data: each frame
 * has fixed-size text buffers, and output is assembled in a static line
 * buffer and written with write(2).  So reporting never allocates, which is
 * what makes "out of memory" reportable with no memory left.  Text longer
 * than a buffer is truncated.  The only function that allocates is
 * CopyErrorData(), which copies a report into CurrentMemoryContext for the
 * caller.
 *
 * Everything here is process-local state (not shared memory) and is not
 * thread-safe: one thread of a process uses dsmkit at a time.
 */
#include "dsmkit_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dsmkit/elog.h>
#include <dsmkit/ipc.h>
#include <dsmkit/memutils.h>
#include <dsmkit/palloc.h>

/* How many reports may be in progress at once (nested reports). */
#define ERRORDATA_STACK_SIZE 5

/* Sizes of a frame's text buffers; longer text is truncated. */
#define ERR_MESSAGE_SIZE 2048
#define ERR_DETAIL_SIZE 2048
#define ERR_HINT_SIZE 1024
#define ERR_CONTEXT_SIZE 4096
/* Scratch space for a format string after %m expansion. */
#define ERR_FORMAT_SIZE 2048
/* The assembled output of one report. */
#define ERR_OUTPUT_SIZE 16384
#define LOG_PREFIX_SIZE 256

/*
 * One report in progress (process-local).  edata is what callers see
 * (CopyErrorData, emit_log_hook); its string pointers point into the
 * buffers below, or are NULL when the part was not given.
 */
typedef struct ErrorFrame
{
	ErrorData edata;
	/*
	 * building: errstart() has run and errfinish() has neither thrown nor
	 * finished the report, i.e. the report is still being made (its
	 * context callbacks or emit_log_hook may be running).  handler: the
	 * PG_exception_stack of that moment.  FlushErrorState() keeps such a
	 * frame when it runs under that same handler, which is how a PG_CATCH
	 * inside a context callback or a hook forgets only its own error.
	 */
	bool building;
	sigjmp_buf *handler;
	char message[ERR_MESSAGE_SIZE];
	char detail[ERR_DETAIL_SIZE];
	char hint[ERR_HINT_SIZE];
	char context[ERR_CONTEXT_SIZE];
} ErrorFrame;

static ErrorFrame errordata[ERRORDATA_STACK_SIZE];
/* Index of the top frame; -1 when no report is in progress or being handled. */
static int errordata_stack_depth = -1;
/* How many errstart() calls are inside one another (reports being built). */
static int recursion_depth = 0;

/*
 * FlushErrorState() pops no frame at or below flush_floor (and then leaves
 * recursion_depth at flush_floor_recursion): an error a caller was
 * handling when it called code under elog_stack_mark() stays.  -1: none.
 */
static int flush_floor = -1;
static int flush_floor_recursion = 0;

static char format_scratch[ERR_FORMAT_SIZE];
static char output_buffer[ERR_OUTPUT_SIZE];
static char log_prefix[LOG_PREFIX_SIZE];

ErrorContextCallback *error_context_stack = NULL;
emit_log_hook_type emit_log_hook = NULL;
int log_min_messages = LOG;
bool log_line_pid = false;
sigjmp_buf *PG_exception_stack = NULL;

static void write_report(const ErrorData *edata);

/*
 * Print a last-resort message with write(2) and abort.  Used when the error
 * machinery itself is misused so badly that it cannot report normally
 * (such as an auxiliary function called outside ereport()).  Never returns.
 */
static DSMKIT_NORETURN void
elog_internal_panic(const char *what)
{
	static const char head[] = "PANIC:  ";
	ssize_t rc;

	rc = write(STDERR_FILENO, head, sizeof(head) - 1);
	rc = write(STDERR_FILENO, what, strlen(what));
	rc = write(STDERR_FILENO, "\n", 1);
	(void) rc;
	abort();
}

/*
 * The frame the auxiliary functions fill: the top of the stack.  Calling
 * errmsg() and friends outside ereport() is a programming error and aborts.
 */
static ErrorFrame *
current_frame(void)
{
	if (NEVER(errordata_stack_depth < 0))
		elog_internal_panic("error reporting function called outside ereport()");
	return &errordata[errordata_stack_depth];
}

/*
 * Copy fmt into format_scratch with every %m replaced by the text of
 * saved_errno (with any '%' in that text doubled so vsnprintf leaves it
 * alone).  "%%" is copied unchanged, so "%%m" stays a literal "%m".
 * Returns format_scratch.  Text that does not fit is truncated at a
 * character boundary that cannot split a conversion introduced by %m.
 */
static const char *
expand_fmt(const char *fmt, int saved_errno)
{
	size_t out = 0;
	const size_t cap = sizeof(format_scratch) - 1;

	for (const char *p = fmt; *p != '\0' && out < cap; p++)
	{
		if (p[0] == '%' && p[1] == 'm')
		{
			const char *text = strerror(saved_errno);

			for (; *text != '\0' && out < cap; text++)
			{
				if (*text == '%')
				{
					if (out + 2 > cap)
						break;
					format_scratch[out++] = '%';
				}
				format_scratch[out++] = *text;
			}
			p++;
		}
		else if (p[0] == '%' && p[1] == '%')
		{
			if (out + 2 > cap)
				break;
			format_scratch[out++] = '%';
			format_scratch[out++] = '%';
			p++;
		}
		else if (p[0] == '%' && p[1] == '\0')
			break;				/* a lone trailing '%' is dropped */
		else
			format_scratch[out++] = *p;
	}
	format_scratch[out] = '\0';
	return format_scratch;
}

/* Format fmt/args (with %m) into buf of size len; truncates, never fails. */
static void
format_into(char *buf, size_t len, int saved_errno, const char *fmt, va_list args)
{
	const char *expanded = expand_fmt(fmt, saved_errno);

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	if (vsnprintf(buf, len, expanded, args) < 0)
		buf[0] = '\0';
#pragma GCC diagnostic pop
}

/*
 * errstart: begin a report at elevel.  Called by ereport()/elog() only.
 * Returns false, without touching any state, when the report is below
 * ERROR and below log_min_messages, so the caller skips the arguments.
 * Otherwise it pushes a frame (PANIC when ERRORDATA_STACK_SIZE reports are
 * already nested, which means reports keep causing reports), saves errno
 * for %m and returns true.  An ERROR with no PG_TRY to catch it is promoted
 * to FATAL here.
 */
bool
errstart(int elevel, const char *filename, int lineno, const char *funcname)
{
	ErrorFrame *frame;
	int saved_errno = errno;

	if (elevel >= ERROR)
	{
		if (elevel == ERROR && PG_exception_stack == NULL)
			elevel = FATAL;

		/*
		 * An error raised while a FATAL (or PANIC) report is being built, by
		 * one of its context callbacks or by emit_log_hook, is at least as
		 * severe: otherwise a PG_CATCH could swallow it and the process
		 * would carry on as if the FATAL had never been raised.
		 */
		for (int i = 0; i <= errordata_stack_depth; i++)
			if (errordata[i].building && errordata[i].edata.elevel > elevel)
				elevel = errordata[i].edata.elevel;
	}
	else if (elevel < log_min_messages)
		return false;

	/*
	 * An ERROR raised while another report is being built (say, by an error
	 * context callback) must not run the context callbacks again: they may
	 * be what failed.
	 */
	if (recursion_depth++ > 0 && elevel >= ERROR)
		error_context_stack = NULL;

	if (errordata_stack_depth + 1 >= ERRORDATA_STACK_SIZE)
	{
		/*
		 * Reports keep triggering reports.  Drop them all and PANIC with a
		 * fresh stack; the context callbacks and the hook are turned off so
		 * that the PANIC itself cannot recurse.
		 */
		errordata_stack_depth = -1;
		recursion_depth = 1;
		flush_floor = -1;
		error_context_stack = NULL;
		emit_log_hook = NULL;
		ereport(PANIC, errcode(ERRCODE_INTERNAL_ERROR),
				errmsg_internal("error stack overflow: too many nested error reports"));
	}

	frame = &errordata[++errordata_stack_depth];
	memset(&frame->edata, 0, sizeof(frame->edata));
	frame->message[0] = '\0';
	frame->edata.elevel = elevel;
	frame->edata.filename = filename;
	frame->edata.lineno = lineno;
	frame->edata.funcname = funcname;
	frame->edata.saved_errno = saved_errno;
	frame->edata.message = frame->message;
	frame->building = true;
	frame->handler = PG_exception_stack;
	if (elevel >= ERROR)
		frame->edata.sqlerrcode = ERRCODE_INTERNAL_ERROR;
	else if (elevel >= WARNING)
		frame->edata.sqlerrcode = ERRCODE_WARNING;
	else
		frame->edata.sqlerrcode = ERRCODE_SUCCESSFUL_COMPLETION;

	errno = saved_errno;
	return true;
}

/*
 * Run the error context callbacks for the top frame (a report being
 * built).  While they run, error_context_stack is empty, so a report made
 * inside a callback gets no CONTEXT lines of its own and cannot re-enter
 * the callbacks.  A callback that caught an error of its own and did not
 * flush it leaves a frame above ours; such frames are dropped when the
 * callbacks return, so that the report goes on with its own frame on top.
 */
static void
run_context_callbacks(void)
{
	ErrorContextCallback *saved = error_context_stack;
	const int depth = errordata_stack_depth;
	const int saved_recursion = recursion_depth;

	error_context_stack = NULL;
	for (ErrorContextCallback *ec = saved; ec != NULL; ec = ec->previous)
		ec->callback(ec->arg);
	error_context_stack = saved;
	errordata_stack_depth = depth;
	recursion_depth = saved_recursion;
}

/*
 * errfinish: complete the report errstart() began.  Called by ereport()
 * only.  Below ERROR: print it (through emit_log_hook), pop the frame,
 * restore errno and return.  ERROR: siglongjmp() to the innermost PG_TRY,
 * leaving the frame on the stack as the error being handled.  FATAL: print
 * and proc_exit(1).  PANIC: print and abort().
 */
void
errfinish(const char *filename, int lineno, const char *funcname)
{
	ErrorFrame *frame = current_frame();
	int elevel;

	(void) filename;
	(void) lineno;
	(void) funcname;

	run_context_callbacks();
	elevel = frame->edata.elevel;

	if (elevel == ERROR)
	{
		if (PG_exception_stack != NULL)
		{
			/* From now on the error is "being handled", not built. */
			frame->building = false;
			recursion_depth--;
			siglongjmp(*PG_exception_stack, 1);
		}
		/* The handler went away while the report was built. */
		frame->edata.elevel = elevel = FATAL;
	}

	EmitErrorReport();

	if (elevel == FATAL)
	{
		/*
		 * Leave through the exit hooks.  The report is done with, so drop
		 * every frame: the hooks start with a clean error state.
		 */
		errordata_stack_depth = -1;
		recursion_depth = 0;
		flush_floor = -1; /* marked code never resumes */
		error_context_stack = NULL;
		PG_exception_stack = NULL;
		proc_exit(1);
	}
	if (elevel >= PANIC)
		abort();

	errno = frame->edata.saved_errno;
	frame->building = false;
	errordata_stack_depth = (int) (frame - errordata) - 1;
	recursion_depth--;
}

/* errcode: set the report's SQLSTATE-style code.  Returns 0. */
int
errcode(int sqlerrcode)
{
	current_frame()->edata.sqlerrcode = sqlerrcode;
	return 0;
}

/*
 * errcode_for_file_access: choose the code from the errno saved at
 * errstart(), for reports about a failed file (or segment) operation.
 * Returns 0.
 */
int
errcode_for_file_access(void)
{
	ErrorFrame *frame = current_frame();
	int code;

	switch (frame->edata.saved_errno)
	{
		case ENOENT:
		case ENOTDIR:
			code = ERRCODE_UNDEFINED_FILE;
			break;
		case EEXIST:
			code = ERRCODE_DUPLICATE_FILE;
			break;
		case EACCES:
		case EPERM:
		case EROFS:
			code = ERRCODE_INSUFFICIENT_PRIVILEGE;
			break;
		case ENOSPC:
#ifdef EDQUOT
		case EDQUOT:
#endif
			code = ERRCODE_DISK_FULL;
			break;
		case ENOMEM:
			code = ERRCODE_OUT_OF_MEMORY;
			break;
		case EMFILE:
		case ENFILE:
			code = ERRCODE_INSUFFICIENT_RESOURCES;
			break;
		case EINVAL:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
		case EBUSY:
			code = ERRCODE_OBJECT_IN_USE;
			break;
		default:
			code = ERRCODE_IO_ERROR;
			break;
	}
	frame->edata.sqlerrcode = code;
	return 0;
}

/*
 * The body of errmsg(), errdetail(), errhint() and their _internal forms,
 * which differ only in the part they set: format the variadic arguments
 * after fmt into the current frame's buffer "part" (message, detail or
 * hint; %m is the errno saved by errstart()) and point the ErrorData
 * member of the same name at it.  Truncates, never fails.  A macro
 * because va_start() must run in the variadic function itself.
 */
#define SET_FRAME_TEXT(part, fmt) \
	do { \
		ErrorFrame *frame_ = current_frame(); \
		va_list args_; \
		va_start(args_, fmt); \
		format_into(frame_->part, sizeof(frame_->part), frame_->edata.saved_errno, fmt, args_); \
		va_end(args_); \
		frame_->edata.part = frame_->part; \
	} while (0)

/* errmsg: set the primary message (printf format, %m allowed).  Returns 0. */
int
errmsg(const char *fmt, ...)
{
	SET_FRAME_TEXT(message, fmt);
	return 0;
}

/* errmsg_internal: errmsg() for messages not meant for translation. */
int
errmsg_internal(const char *fmt, ...)
{
	SET_FRAME_TEXT(message, fmt);
	return 0;
}

/* errdetail: set the DETAIL line.  Returns 0. */
int
errdetail(const char *fmt, ...)
{
	SET_FRAME_TEXT(detail, fmt);
	return 0;
}

/* errdetail_internal: errdetail() for text not meant for translation. */
int
errdetail_internal(const char *fmt, ...)
{
	SET_FRAME_TEXT(detail, fmt);
	return 0;
}

/* errhint: set the HINT line.  Returns 0. */
int
errhint(const char *fmt, ...)
{
	SET_FRAME_TEXT(hint, fmt);
	return 0;
}

/*
 * errcontext_msg (errcontext): add one CONTEXT line to the report being
 * built.  Meant for error context callbacks; lines are kept in the order
 * added (innermost frame first), separated by newlines.  Returns 0.
 */
int
errcontext_msg(const char *fmt, ...)
{
	ErrorFrame *frame = current_frame();
	size_t used = 0;
	va_list args;

	if (frame->edata.context != NULL)
	{
		used = strlen(frame->context);
		if (used + 2 >= sizeof(frame->context))
			return 0;			/* full: drop the line */
		frame->context[used++] = '\n';
	}
	va_start(args, fmt);
	format_into(frame->context + used, sizeof(frame->context) - used, frame->edata.saved_errno, fmt,
				args);
	va_end(args);
	frame->edata.context = frame->context;
	return 0;
}

/* geterrcode: the code of the error being handled, or 0 when there is none. */
int
geterrcode(void)
{
	if (errordata_stack_depth < 0)
		return 0;
	return errordata[errordata_stack_depth].edata.sqlerrcode;
}

/*
 * unpack_sql_state: the five characters of a packed code, in a static
 * buffer overwritten by the next call.  Never fails.
 */
const char *
unpack_sql_state(int sql_state)
{
	static char buf[6];

	for (int i = 0; i < 5; i++)
	{
		buf[i] = PGUNSIXBIT(sql_state);
		sql_state >>= 6;
	}
	buf[5] = '\0';
	return buf;
}

/* A copy of s in CurrentMemoryContext, or NULL for NULL. */
static char *
copy_or_null(const char *s)
{
	return s != NULL ? pstrdup(s) : NULL;
}

/*
 * CopyErrorData: a copy of the error being handled (inside PG_CATCH),
 * allocated with palloc in CurrentMemoryContext; the strings are separate
 * chunks of that context.  The caller owns it and frees it with
 * FreeErrorData() (or by resetting the context).  filename and funcname
 * point to static strings and are not copied.  Raises ERROR (out of memory)
 * like palloc; calling it with no error being handled is a programming
 * error and raises ERROR.
 */
ErrorData *
CopyErrorData(void)
{
	ErrorData *src;
	ErrorData *copy;

	if (errordata_stack_depth < 0)
		elog(ERROR, "CopyErrorData called with no error being handled");
	src = &errordata[errordata_stack_depth].edata;
	Assert(ErrorContext == NULL || CurrentMemoryContext != ErrorContext);

	copy = palloc(sizeof(ErrorData));
	*copy = *src;
	copy->message = NULL;
	copy->detail = NULL;
	copy->hint = NULL;
	copy->context = NULL;
	PG_TRY();
	{
		copy->message = copy_or_null(src->message);
		copy->detail = copy_or_null(src->detail);
		copy->hint = copy_or_null(src->hint);
		copy->context = copy_or_null(src->context);
	}
	PG_CATCH();
	{
		FreeErrorData(copy);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return copy;
}

/* FreeErrorData: free what CopyErrorData() returned.  NULL is ignored. */
void
FreeErrorData(ErrorData *edata)
{
	if (edata == NULL)
		return;
	if (edata->message != NULL)
		pfree(edata->message);
	if (edata->detail != NULL)
		pfree(edata->detail);
	if (edata->hint != NULL)
		pfree(edata->hint);
	if (edata->context != NULL)
		pfree(edata->context);
	pfree(edata);
}

ErrorStackMark
elog_stack_mark(void)
{
	ErrorStackMark mark = {errordata_stack_depth, recursion_depth, flush_floor, flush_floor_recursion};

	flush_floor = errordata_stack_depth;
	flush_floor_recursion = recursion_depth;
	return mark;
}

void
elog_stack_restore(ErrorStackMark mark)
{
	if (errordata_stack_depth > mark.depth)
	{
		errordata_stack_depth = mark.depth;
		recursion_depth = mark.recursion;
	}
	flush_floor = mark.floor;
	flush_floor_recursion = mark.floor_rec;
}

/*
 * FlushErrorState: forget every report being handled, so the error stack is
 * empty again.  Call it when a PG_CATCH block has recovered.  Never fails.
 *
 * The one thing it keeps is a report still being built under the current
 * handler: when a context callback or emit_log_hook protects itself with
 * PG_TRY/PG_CATCH and flushes the error it caught, the report it was
 * called for must survive (its frame stays, and below it whatever it
 * stands on).  A report whose building was abandoned because an error
 * unwound past it was built under an inner handler, so it goes.
 */
void
FlushErrorState(void)
{
	while (errordata_stack_depth >= 0)
	{
		const ErrorFrame *top = &errordata[errordata_stack_depth];

		if (top->building && top->handler == PG_exception_stack)
			break;
		if (errordata_stack_depth <= flush_floor)
		{
			recursion_depth = flush_floor_recursion;
			return;
		}
		errordata_stack_depth--;
	}
	recursion_depth = errordata_stack_depth + 1;
}

/*
 * pg_re_throw (PG_RE_THROW): raise the error being handled again, to the
 * next PG_TRY outward.  With none left, the error becomes FATAL: it is
 * printed and the process leaves through proc_exit(1).
 */
void
pg_re_throw(void)
{
	ErrorFrame *frame;

	if (PG_exception_stack != NULL)
		siglongjmp(*PG_exception_stack, 1);

	frame = current_frame();
	if (frame->edata.elevel < FATAL)
		frame->edata.elevel = FATAL;
	recursion_depth++;
	/* errfinish() would run the context callbacks again: the report already has them. */
	error_context_stack = NULL;
	errfinish(frame->edata.filename, frame->edata.lineno, frame->edata.funcname);
	pg_unreachable();
}

/* Copy at most len-1 bytes of src (may be NULL) into buf; returns buf or NULL. */
static char *
restore_text(char *buf, size_t len, const char *src)
{
	if (src == NULL)
		return NULL;
	snprintf(buf, len, "%s", src);
	return buf;
}

/*
 * ReThrowError: raise a copied error (from CopyErrorData) again.  The copy
 * stays the caller's; its text is copied into a new frame.  Never returns.
 */
void
ReThrowError(ErrorData *edata)
{
	ErrorFrame *frame;

	if (!errstart(edata->elevel < ERROR ? ERROR : edata->elevel, edata->filename, edata->lineno,
				  edata->funcname))
		pg_unreachable();		/* ERROR and above always start */
	frame = current_frame();
	frame->edata.sqlerrcode = edata->sqlerrcode;
	frame->edata.saved_errno = edata->saved_errno;
	frame->edata.message = restore_text(frame->message, sizeof(frame->message), edata->message);
	if (frame->edata.message == NULL)
	{
		frame->message[0] = '\0';
		frame->edata.message = frame->message;
	}
	frame->edata.detail = restore_text(frame->detail, sizeof(frame->detail), edata->detail);
	frame->edata.hint = restore_text(frame->hint, sizeof(frame->hint), edata->hint);
	frame->edata.context = restore_text(frame->context, sizeof(frame->context), edata->context);
	/* The copy already carries its CONTEXT lines. */
	error_context_stack = NULL;
	errfinish(edata->filename, edata->lineno, edata->funcname);
	pg_unreachable();
}

/* The name printed for a level. */
static const char *
level_name(int elevel)
{
	switch (elevel)
	{
		case DEBUG5:
		case DEBUG4:
		case DEBUG3:
		case DEBUG2:
		case DEBUG1:
			return "DEBUG";
		case LOG:
			return "LOG";
		case INFO:
			return "INFO";
		case NOTICE:
			return "NOTICE";
		case WARNING:
			return "WARNING";
		case ERROR:
			return "ERROR";
		case FATAL:
			return "FATAL";
		case PANIC:
			return "PANIC";
		default:
			return "???";
	}
}

/* Output assembly: appends to output_buffer, truncating silently. */
static size_t output_used;

static void
out_append(const char *s, size_t len)
{
	size_t room = sizeof(output_buffer) - 1 - output_used;

	if (len > room)
		len = room;
	memcpy(output_buffer + output_used, s, len);
	output_used += len;
}

static void
out_str(const char *s)
{
	out_append(s, strlen(s));
}

/* The line prefix: "[pid] " when log_line_pid, then the configured prefix. */
static void
out_prefix(void)
{
	if (log_line_pid)
	{
		char pidbuf[32];
		int n = snprintf(pidbuf, sizeof(pidbuf), "[%ld] ", (long) getpid());

		out_append(pidbuf, (size_t) n);
	}
	out_str(log_prefix);
}

/* One labelled section; every line of a multi-line text gets prefix and label. */
static void
out_section(const char *label, const char *text)
{
	const char *p = text;

	do
	{
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t) (nl - p) : strlen(p);

		out_prefix();
		out_str(label);
		out_append(p, len);
		out_append("\n", 1);
		p = nl != NULL ? nl + 1 : NULL;
	} while (p != NULL);
}

/*
 * Format a report and write it to stderr in one write(2) call (so that
 * reports of different processes sharing stderr do not interleave
 * mid-line).  Uses only static memory.
 */
static void
write_report(const ErrorData *edata)
{
	char label[32];
	size_t off = 0;

	output_used = 0;
	snprintf(label, sizeof(label), "%s:  ", level_name(edata->elevel));
	out_section(label, edata->message != NULL ? edata->message : "");
	if (edata->detail != NULL)
		out_section("DETAIL:  ", edata->detail);
	if (edata->hint != NULL)
		out_section("HINT:  ", edata->hint);
	if (edata->context != NULL)
		out_section("CONTEXT:  ", edata->context);

	while (off < output_used)
	{
		ssize_t n = write(STDERR_FILENO, output_buffer + off, output_used - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;				/* nowhere to report a failure to report */
		off += (size_t) n;
	}
}

/*
 * EmitErrorReport: print the top report (the one being finished, or the
 * error being handled inside PG_CATCH), if its level is printed: ERROR and
 * above always, lower levels when >= log_min_messages.  emit_log_hook, if
 * set, sees it first.  Preserves errno.  Does nothing with no report.
 */
void
EmitErrorReport(void)
{
	ErrorFrame *frame;
	ErrorData *edata;
	int saved_errno = errno;
	const int depth = errordata_stack_depth;
	const int saved_recursion = recursion_depth;

	if (depth < 0)
		return;
	frame = &errordata[depth];
	edata = &frame->edata;
	if (edata->elevel < ERROR && edata->elevel < log_min_messages)
		return;

	if (emit_log_hook != NULL)
	{
		const bool was_building = frame->building;
		sigjmp_buf *const was_handler = frame->handler;

		/*
		 * While the hook runs, the report counts as being built, so a
		 * FlushErrorState() in a PG_CATCH of the hook keeps it; whatever
		 * the hook leaves above it is dropped afterwards.
		 */
		frame->building = true;
		frame->handler = PG_exception_stack;
		recursion_depth++;
		emit_log_hook(edata);
		frame->building = was_building;
		frame->handler = was_handler;
		errordata_stack_depth = depth;
		recursion_depth = saved_recursion;
	}
	write_report(edata);
	errno = saved_errno;
}

/*
 * set_log_line_prefix: print prefix (copied; truncated to 255 bytes) at the
 * start of every output line from now on; NULL or "" removes it.
 */
void
set_log_line_prefix(const char *prefix)
{
	if (prefix == NULL)
		prefix = "";
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

/*
 * elog_after_fork: called in a child right after fork() (the supervisor's
 * spawn).  The child must not unwind into a copy of its parent's PG_TRY
 * blocks nor inherit a half-built or caught report, so the handler stack,
 * the context stack and the error stack are cleared.  Settings
 * (log_min_messages, the prefix, the hook) are kept.
 */
void
elog_after_fork(void)
{
	PG_exception_stack = NULL;
	error_context_stack = NULL;
	errordata_stack_depth = -1;
	recursion_depth = 0;
	flush_floor = -1;
}
