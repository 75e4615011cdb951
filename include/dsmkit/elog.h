/*
 * dsmkit/elog.h: error reporting (ereport/elog) and PG_TRY error recovery.
 *
 * The model is PostgreSQL's.  A report is built between errstart() and
 * errfinish(); reports below ERROR are printed (or handed to emit_log_hook)
 * and execution continues; an ERROR unwinds with siglongjmp() to the
 * innermost PG_TRY block, or, with none, is promoted to FATAL; FATAL leaves
 * the process through proc_exit(1) so that exit hooks run; PANIC aborts.
 *
 * State is per process and not thread-safe: one thread of a process uses
 * dsmkit at a time, as in PostgreSQL's backends.
 */
#ifndef DSMKIT_ELOG_H
#define DSMKIT_ELOG_H

#include <setjmp.h>
#include <dsmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Report levels, in increasing order of severity. */
#define DEBUG5 10
#define DEBUG4 11
#define DEBUG3 12
#define DEBUG2 13
#define DEBUG1 14
#define LOG 15
#define INFO 17
#define NOTICE 18
#define WARNING 19
#define ERROR 21
#define FATAL 22
#define PANIC 23

/*
 * Error codes are five-character SQLSTATE-style strings packed six bits a
 * character into an int.  unpack_sql_state() turns one back into text.
 */
#define PGSIXBIT(ch) (((ch) - '0') & 0x3F)
#define PGUNSIXBIT(val) (((val) & 0x3F) + '0')
#define MAKE_SQLSTATE(c1, c2, c3, c4, c5) \
	(PGSIXBIT(c1) + (PGSIXBIT(c2) << 6) + (PGSIXBIT(c3) << 12) + \
	 (PGSIXBIT(c4) << 18) + (PGSIXBIT(c5) << 24))

#define ERRCODE_SUCCESSFUL_COMPLETION MAKE_SQLSTATE('0', '0', '0', '0', '0')
#define ERRCODE_WARNING MAKE_SQLSTATE('0', '1', '0', '0', '0')
#define ERRCODE_FEATURE_NOT_SUPPORTED MAKE_SQLSTATE('0', 'A', '0', '0', '0')
#define ERRCODE_INVALID_PARAMETER_VALUE MAKE_SQLSTATE('2', '2', '0', '2', '3')
#define ERRCODE_DATA_CORRUPTED MAKE_SQLSTATE('X', 'X', '0', '0', '1')
#define ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE MAKE_SQLSTATE('5', '5', '0', '0', '0')
#define ERRCODE_OBJECT_IN_USE MAKE_SQLSTATE('5', '5', '0', '0', '6')
#define ERRCODE_INSUFFICIENT_RESOURCES MAKE_SQLSTATE('5', '3', '0', '0', '0')
#define ERRCODE_DISK_FULL MAKE_SQLSTATE('5', '3', '1', '0', '0')
#define ERRCODE_OUT_OF_MEMORY MAKE_SQLSTATE('5', '3', '2', '0', '0')
#define ERRCODE_CONFIGURATION_LIMIT_EXCEEDED MAKE_SQLSTATE('5', '3', '4', '0', '0')
#define ERRCODE_PROGRAM_LIMIT_EXCEEDED MAKE_SQLSTATE('5', '4', '0', '0', '0')
#define ERRCODE_LOCK_NOT_AVAILABLE MAKE_SQLSTATE('5', '5', 'P', '0', '3')
#define ERRCODE_SYSTEM_ERROR MAKE_SQLSTATE('5', '8', '0', '0', '0')
#define ERRCODE_IO_ERROR MAKE_SQLSTATE('5', '8', '0', '3', '0')
#define ERRCODE_UNDEFINED_FILE MAKE_SQLSTATE('5', '8', 'P', '0', '1')
#define ERRCODE_DUPLICATE_FILE MAKE_SQLSTATE('5', '8', 'P', '0', '2')
#define ERRCODE_INSUFFICIENT_PRIVILEGE MAKE_SQLSTATE('4', '2', '5', '0', '1')
#define ERRCODE_INTERNAL_ERROR MAKE_SQLSTATE('X', 'X', '0', '0', '0')

/*
 * ereport(level, errcode(...), errmsg(...), errdetail(...), errhint(...));
 * PostgreSQL's older form with one more pair of parentheses around the
 * auxiliary calls is accepted too.  With level >= ERROR the macro does not
 * return.  The auxiliary functions may only be called inside ereport().
 */
#define ereport(elevel, ...) \
	do { \
		const int dsmkit_elevel_ = (elevel); \
		if (errstart(dsmkit_elevel_, __FILE__, __LINE__, __func__)) \
		{ \
			__VA_ARGS__, errfinish(__FILE__, __LINE__, __func__); \
		} \
		if (dsmkit_elevel_ >= ERROR) \
			__builtin_unreachable(); \
	} while (0)

/* elog(level, fmt, ...): a report with only a message (not translated, no code). */
#define elog(elevel, ...) \
	ereport(elevel, errmsg_internal(__VA_ARGS__))

/*
 * errstart() begins a report; it returns false when the report would be
 * neither printed nor raised, so that its arguments are not even evaluated.
 * It saves errno for %m.  errfinish() emits the report and, at ERROR and
 * above, does not return.
 */
DSMKIT_API bool errstart(int elevel, const char *filename, int lineno, const char *funcname);
DSMKIT_API void errfinish(const char *filename, int lineno, const char *funcname);

/* Auxiliary report functions; each returns 0 so they chain with commas. */
DSMKIT_API int errcode(int sqlerrcode);
DSMKIT_API int errcode_for_file_access(void);
DSMKIT_API int errmsg(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
DSMKIT_API int errmsg_internal(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
DSMKIT_API int errdetail(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
DSMKIT_API int errdetail_internal(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
DSMKIT_API int errhint(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
DSMKIT_API int errcontext_msg(const char *fmt, ...) DSMKIT_PRINTF(1, 2);
#define errcontext errcontext_msg

/* The code of the error being handled now (inside PG_CATCH), or 0. */
DSMKIT_API int geterrcode(void);
/* The five characters of a packed code, in a static buffer. */
DSMKIT_API const char *unpack_sql_state(int sql_state);

/*
 * A copy of an error, for a PG_CATCH block that wants to keep it past
 * FlushErrorState().  CopyErrorData() allocates it in CurrentMemoryContext
 * (which must not be ErrorContext); FreeErrorData() frees it.
 */
typedef struct ErrorData
{
	int elevel;              /* ERROR, WARNING, ... */
	int sqlerrcode;          /* packed SQLSTATE */
	int saved_errno;         /* errno when the report began */
	const char *filename;    /* source file of the ereport (static string) */
	int lineno;              /* source line */
	const char *funcname;    /* function (static string) */
	char *message;           /* primary message */
	char *detail;            /* errdetail, or NULL */
	char *hint;              /* errhint, or NULL */
	char *context;           /* context lines, or NULL */
} ErrorData;

DSMKIT_API ErrorData *CopyErrorData(void);
DSMKIT_API void FreeErrorData(ErrorData *edata);
/*
 * Forget the error being handled; call it once a PG_CATCH block recovered.
 * A report still being built under the current handler (the one a hook or
 * context callback was called for) is kept.
 */
DSMKIT_API void FlushErrorState(void);
/* Print the error being handled (inside PG_CATCH) as if it had not been caught. */
DSMKIT_API void EmitErrorReport(void);
/* Raise again the error being handled (inside PG_CATCH). */
DSMKIT_API DSMKIT_NORETURN void pg_re_throw(void);
/* Raise a copied error again (e.g. after cleanup in another context). */
DSMKIT_API DSMKIT_NORETURN void ReThrowError(ErrorData *edata);

/*
 * Error context callbacks: a stack of frames that add a CONTEXT line to
 * every report made while they are pushed.  Push one by linking a local
 * ErrorContextCallback in front of error_context_stack; pop it by restoring
 * the previous value.  PG_TRY/PG_CATCH restore the stack on an error.
 */
typedef struct ErrorContextCallback
{
	struct ErrorContextCallback *previous;
	void (*callback)(void *arg);
	void *arg;
} ErrorContextCallback;

DSMKIT_API extern ErrorContextCallback *error_context_stack;

/*
 * emit_log_hook: when set, called for every report that is about to be
 * printed, with the completed report, just before it goes to stderr.  A
 * report caught by PG_CATCH is not printed and does not reach the hook.
 * The hook must not raise ERROR; one that calls code which may fail can
 * catch that with its own PG_TRY/PG_CATCH and FlushErrorState(), which
 * then forgets only the hook's error, not the report (the same holds for
 * error context callbacks).  An error raised while a FATAL report is
 * built is itself FATAL.
 */
typedef void (*emit_log_hook_type)(ErrorData *edata);
DSMKIT_API extern emit_log_hook_type emit_log_hook;

/*
 * The lowest level that is printed to stderr; the default is LOG, so DEBUG
 * reports are silent.  ERROR and above are raised whatever it says (and
 * printed if they reach the outermost level).
 */
DSMKIT_API extern int log_min_messages;

/*
 * An optional prefix printed before each line, such as a process role;
 * the pid is printed as well when log_line_pid is true.  The string is
 * copied.
 */
DSMKIT_API void set_log_line_prefix(const char *prefix);
DSMKIT_API extern bool log_line_pid;

/*
 * PG_TRY(); { ... } PG_CATCH(); { ... } PG_END_TRY();
 * PG_TRY(); { ... } PG_FINALLY(); { ... } PG_END_TRY();
 *
 * An ERROR raised in the first block jumps to the second.  In PG_CATCH the
 * error is still "being handled": inspect it with geterrcode() or
 * CopyErrorData(), then either FlushErrorState() to recover or
 * PG_RE_THROW() to pass it outward.  PG_FINALLY's block runs on both
 * paths and an error is re-raised after it.  Local variables changed inside
 * the PG_TRY block and read afterwards must be volatile (setjmp rules).
 * Never return, goto or break out of a PG_TRY block.
 */
#if defined(__USE_POSIX) || defined(_POSIX_SOURCE) || defined(_POSIX_C_SOURCE) || \
	defined(_XOPEN_SOURCE) || defined(_GNU_SOURCE) || defined(_DEFAULT_SOURCE) || defined(_BSD_SOURCE)
DSMKIT_API extern sigjmp_buf *PG_exception_stack;
#else
/*
 * Strict ISO C (no POSIX names): sigjmp_buf is not declared, so PG_TRY
 * cannot be used, but the header must still compile.  The C libraries of
 * Linux define sigjmp_buf and jmp_buf as the same type.
 */
DSMKIT_API extern jmp_buf *PG_exception_stack;
#endif

/*
 * PG_TRY blocks may nest, in one function too; the bookkeeping variables of
 * an inner block then shadow those of the outer one on purpose, so the
 * macros turn -Wshadow off for their own declarations.  As in PostgreSQL 13
 * and later, an optional suffix (PG_TRY(2) ... PG_END_TRY(2)) gives a block
 * variables of its own names instead; all four macros of a block must then
 * carry the same suffix.  The flag PG_FINALLY sets after the jump is
 * volatile, so that callers built with -Wextra (-Wclobbered) get no
 * warning from the macros.
 */
#if defined(__clang__)
#define DSMKIT_SHADOW_OFF_ \
	_Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wshadow\"")
#define DSMKIT_SHADOW_ON_ _Pragma("clang diagnostic pop")
#elif defined(__GNUC__) && __GNUC__ >= 7
#define DSMKIT_SHADOW_OFF_ \
	_Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wshadow\"") \
	_Pragma("GCC diagnostic ignored \"-Wshadow=local\"") \
	_Pragma("GCC diagnostic ignored \"-Wshadow=compatible-local\"")
#define DSMKIT_SHADOW_ON_ _Pragma("GCC diagnostic pop")
#else
#define DSMKIT_SHADOW_OFF_
#define DSMKIT_SHADOW_ON_
#endif

#define PG_TRY(...) \
	do { \
		DSMKIT_SHADOW_OFF_ \
		sigjmp_buf *dsmkit_outer_jmp_##__VA_ARGS__ = PG_exception_stack; \
		ErrorContextCallback *dsmkit_outer_ctx_##__VA_ARGS__ = error_context_stack; \
		sigjmp_buf dsmkit_here_jmp_##__VA_ARGS__; \
		volatile bool dsmkit_rethrow_##__VA_ARGS__ = false; \
		DSMKIT_SHADOW_ON_ \
		if (sigsetjmp(dsmkit_here_jmp_##__VA_ARGS__, 0) == 0) \
		{ \
			PG_exception_stack = &dsmkit_here_jmp_##__VA_ARGS__;

#define PG_CATCH(...) \
		} \
		else \
		{ \
			PG_exception_stack = dsmkit_outer_jmp_##__VA_ARGS__; \
			error_context_stack = dsmkit_outer_ctx_##__VA_ARGS__;

#define PG_FINALLY(...) \
		} \
		else \
			dsmkit_rethrow_##__VA_ARGS__ = true; \
		{ \
			PG_exception_stack = dsmkit_outer_jmp_##__VA_ARGS__; \
			error_context_stack = dsmkit_outer_ctx_##__VA_ARGS__;

#define PG_END_TRY(...) \
		} \
		if (dsmkit_rethrow_##__VA_ARGS__) \
			PG_RE_THROW(); \
		PG_exception_stack = dsmkit_outer_jmp_##__VA_ARGS__; \
		error_context_stack = dsmkit_outer_ctx_##__VA_ARGS__; \
	} while (0)

#define PG_RE_THROW() pg_re_throw()

#ifdef __cplusplus
}
#endif

#endif /* DSMKIT_ELOG_H */
