/*
 * demo.h: PRIVATE to the dsmkit-demo program (contrib/demo); not installed.
 *
 * dsmkit-demo is a prefork TCP counter service built on dsmkit, written as
 * the example a new user reads first.  The files:
 *
 *   demo.c    main(): option parsing, the "demo" subcommand (server, client,
 *             dsmctl listing, shutdown, leftover check) and the small
 *             socket and line helpers the server and the client share;
 *   server.c  the supervisor, its worker backends and the request handlers:
 *             the part that shows how to use dsmkit;
 *   client.c  a load generator that checks every answer.
 *
 * The protocol is line based (one request line, one reply line), so that
 * it can be typed by hand with "nc 127.0.0.1 PORT":
 *
 *   NEW name nslots          -> OK handle        create a pinned table
 *   INCR handle slot [delta] -> OK value         add to a counter atomically
 *   GET handle slot          -> OK value
 *   DROP handle              -> OK dropped       unpin: destroyed when unused
 *   SESSION                  -> OK handle requests=N errors=N
 *                                                per-connection segment
 *   STATS                    -> OK requests=N errors=N ...
 *   HELP                     -> OK commands: ...
 *   QUIT                     -> OK bye           and the server closes
 *   SHUTDOWN                 -> OK shutting down
 *
 * Every failure is one line "ERR <sqlstate> <message>", where sqlstate is
 * the five-character code of the ereport() that rejected the request.
 */
#ifndef DSMKIT_DEMO_H
#define DSMKIT_DEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest request or reply line, newline excluded. */
#define DEMO_MAX_LINE 512

/* Error codes the demo reports besides those dsmkit/elog.h defines. */
#define DEMO_SQLSTATE_SYNTAX_ERROR "42601"      /* malformed or unknown request */
#define DEMO_SQLSTATE_UNDEFINED_OBJECT "42704"  /* no segment with that handle */
#define DEMO_SQLSTATE_WRONG_OBJECT_TYPE "42809" /* segment is not a counter table */
#define DEMO_SQLSTATE_INVALID_PARAMETER "22023" /* slot out of range, bad size */

/* Settings of the "server" subcommand (process-local). */
typedef struct DemoServerOptions
{
	const char *directory; /* cluster directory; created if missing */
	int workers;           /* worker backends to keep running */
	int port;              /* TCP port on 127.0.0.1; 0 lets the kernel choose */
	int dsm_impl;          /* DSM_IMPL_POSIX, DSM_IMPL_SYSV or DSM_IMPL_MMAP */
	int ready_fd;          /* if >= 0, the port is written here (4 bytes) once listening */
} DemoServerOptions;

/* Settings of the "client" subcommand (process-local). */
typedef struct DemoClientOptions
{
	int port;        /* server port on 127.0.0.1 */
	int connections; /* concurrent connections, one client process each */
	int requests;    /* requests per connection */
	bool verbose;    /* print every request and reply */
} DemoClientOptions;

/* server.c: run the supervisor.  Never returns (leaves through proc_exit). */
void demo_run_server(const DemoServerOptions *options) __attribute__((noreturn));

/* client.c: drive the server; returns 0 when every answer was right, else 1. */
int demo_run_client(const DemoClientOptions *options);

/* client.c: send SHUTDOWN to the server; returns 0 on "OK", else 1. */
int demo_send_shutdown(int port);

/*
 * demo.c: line-oriented socket helpers, shared by server and client.
 *
 * A DemoLineReader buffers one connection.  demo_read_line() stores the next
 * line (without its newline, NUL-terminated) in the reader's line[] and
 * returns DEMO_LINE_OK, or one of the other results below.  While it waits it
 * also watches stop_fd (pass -1 for none): when that descriptor becomes
 * readable or hangs up, it returns DEMO_LINE_STOPPED.  Never blocks past
 * either event; never allocates.
 */
typedef struct DemoLineReader
{
	int fd;                       /* the connection */
	bool discarding;              /* skipping the rest of an over-long line */
	size_t start;                 /* first unread byte in buf */
	size_t end;                   /* one past the last byte read into buf */
	char buf[2 * DEMO_MAX_LINE];  /* bytes received, not yet returned */
	char line[DEMO_MAX_LINE + 1]; /* the line last returned */
} DemoLineReader;

typedef enum DemoLineResult
{
	DEMO_LINE_OK = 0,   /* line[] holds a complete line */
	DEMO_LINE_TOO_LONG, /* a line longer than DEMO_MAX_LINE was skipped */
	DEMO_LINE_EOF,      /* the peer closed the connection */
	DEMO_LINE_STOPPED,  /* stop_fd fired */
	DEMO_LINE_ERROR     /* read or poll failed; errno is set */
} DemoLineResult;

void demo_line_reader_init(DemoLineReader *reader, int fd);
DemoLineResult demo_read_line(DemoLineReader *reader, int stop_fd);

/* Write all of buf (retrying short writes, no SIGPIPE); false with errno on failure. */
bool demo_write_all(int fd, const char *buf, size_t len);

/*
 * A non-blocking, close-on-exec TCP socket listening on 127.0.0.1:port
 * (0: any free port); the bound port is stored in *bound_port.  Returns -1
 * with errno set on failure.
 */
int demo_listen(int port, int *bound_port);

/* A blocking, close-on-exec connection to 127.0.0.1:port, or -1 with errno. */
int demo_connect(int port);

/*
 * Send one request line (newline added) and read one reply line into
 * reply[replylen].  Returns false with a message in reply when the
 * connection fails.  For the client side only.
 */
bool demo_roundtrip(DemoLineReader *reader, const char *request, char *reply, size_t replylen);

#endif /* DSMKIT_DEMO_H */
