/*
 * demo.c: main() of dsmkit-demo, the all-in-one "demo" subcommand, and the
 * socket and line helpers shared by the server and the client.
 *
 *   dsmkit-demo server --dir DIR [--workers N] [--port P] [--impl posix|sysv|mmap]
 *   dsmkit-demo client --port P [--connections C] [--requests R] [--verbose]
 *   dsmkit-demo demo [--dir DIR] [--workers N] [--connections C] [--requests R] [--impl I]
 *
 * "demo" starts a server in a child process, runs the client against it,
 * shows what "dsmctl ls" sees (when a dsmctl program is found) and what
 * the cluster has in the system, shuts the server down with a SHUTDOWN
 * request, and then checks that the cluster left nothing behind: no
 * /dev/shm entry, System V segment or mmap file of the cluster, and an
 * empty cluster directory.  It exits non-zero if anything is left or any
 * answer was wrong.  See dsmkit-demo(1).
 */
#define _GNU_SOURCE /* accept4, pipe2 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <dsmkit.h>

#include "demo.h"

#define DEFAULT_WORKERS 4
#define DEFAULT_CONNECTIONS 8
#define DEFAULT_REQUESTS 50

static const char *progname = "dsmkit-demo";

/* ------------------------------------------------------------------------
 * Socket and line helpers (see demo.h for the contracts).
 * ------------------------------------------------------------------------
 */

void
demo_line_reader_init(DemoLineReader *reader, int fd)
{
	memset(reader, 0, sizeof(*reader));
	reader->fd = fd;
}

DemoLineResult
demo_read_line(DemoLineReader *reader, int stop_fd)
{
	for (;;)
	{
		char *nl = memchr(reader->buf + reader->start, '\n', reader->end - reader->start);
		struct pollfd pfd[2];
		ssize_t n;

		if (nl != NULL)
		{
			size_t len = (size_t) (nl - (reader->buf + reader->start));
			bool too_long = reader->discarding || len > DEMO_MAX_LINE;

			reader->discarding = false;
			if (!too_long)
			{
				memcpy(reader->line, reader->buf + reader->start, len);
				reader->line[len] = '\0';
			}
			reader->start += len + 1;
			return too_long ? DEMO_LINE_TOO_LONG : DEMO_LINE_OK;
		}

		/* No newline buffered: make room, or give up on an over-long line. */
		if (reader->start > 0)
		{
			memmove(reader->buf, reader->buf + reader->start, reader->end - reader->start);
			reader->end -= reader->start;
			reader->start = 0;
		}
		if (reader->end > DEMO_MAX_LINE)
		{
			reader->discarding = true;
			reader->end = 0;
		}

		pfd[0] = (struct pollfd){.fd = reader->fd, .events = POLLIN};
		pfd[1] = (struct pollfd){.fd = stop_fd, .events = POLLIN};
		if (poll(pfd, 2, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			return DEMO_LINE_ERROR;
		}
		if (pfd[1].revents != 0)
			return DEMO_LINE_STOPPED;
		if (pfd[0].revents == 0)
			continue;

		n = read(reader->fd, reader->buf + reader->end, sizeof(reader->buf) - reader->end);
		if (n < 0)
		{
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return DEMO_LINE_ERROR;
		}
		if (n == 0)
			return DEMO_LINE_EOF;
		reader->end += (size_t) n;
	}
}

bool
demo_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0)
	{
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, buf, len); /* a pipe */
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			return false;
		}
		buf += n;
		len -= (size_t) n;
	}
	return true;
}

int
demo_listen(int port, int *bound_port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t addrlen = sizeof(addr);
	int one = 1;
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((uint16_t) port);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		bind(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0 || listen(fd, 128) != 0 ||
		getsockname(fd, (struct sockaddr *) &addr, &addrlen) != 0)
	{
		int save_errno = errno;

		close(fd);
		errno = save_errno;
		return -1;
	}
	*bound_port = ntohs(addr.sin_port);
	return fd;
}

int
demo_connect(int port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((uint16_t) port);
	while (connect(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0)
	{
		int save_errno = errno;

		if (errno == EINTR)
			continue;
		close(fd);
		errno = save_errno;
		return -1;
	}
	return fd;
}

bool
demo_roundtrip(DemoLineReader *reader, const char *request, char *reply, size_t replylen)
{
	char buf[DEMO_MAX_LINE + 2];
	int len = snprintf(buf, sizeof(buf), "%s\n", request);

	if (len < 0 || (size_t) len >= sizeof(buf))
		len = (int) sizeof(buf) - 1; /* an over-long request on purpose: cut, no newline */
	if (!demo_write_all(reader->fd, buf, (size_t) len))
	{
		snprintf(reply, replylen, "(could not send request: %s)", strerror(errno));
		return false;
	}
	switch (demo_read_line(reader, -1))
	{
		case DEMO_LINE_OK:
			snprintf(reply, replylen, "%s", reader->line);
			return true;
		case DEMO_LINE_EOF:
			snprintf(reply, replylen, "(connection closed by server)");
			return false;
		case DEMO_LINE_TOO_LONG:
			snprintf(reply, replylen, "(reply too long)");
			return false;
		default:
			snprintf(reply, replylen, "(could not read reply: %s)", strerror(errno));
			return false;
	}
}

/* ------------------------------------------------------------------------
 * Option parsing.
 * ------------------------------------------------------------------------
 */

static void
usage(FILE *out)
{
	fprintf(out,
			"%s: a prefork TCP counter service on dsmkit shared memory.\n"
			"\n"
			"Usage:\n"
			"  %s demo [--dir DIR] [--workers N] [--connections C] [--requests R] [--impl IMPL]\n"
			"  %s server --dir DIR [--workers N] [--port P] [--impl IMPL]\n"
			"  %s client --port P [--connections C] [--requests R] [--verbose]\n"
			"\n"
			"  demo     start a server, run the client, list the cluster with dsmctl,\n"
			"           shut down and check that no shared memory is left\n"
			"  server   run the service on 127.0.0.1 until SIGTERM, SIGINT or SHUTDOWN\n"
			"  client   send C x R requests (some bad on purpose) and check every answer\n"
			"\n"
			"Options:\n"
			"  -d, --dir DIR          cluster directory (created if missing)\n"
			"  -w, --workers N        worker processes (default %d)\n"
			"  -p, --port P           TCP port (server: default 0, any free port)\n"
			"  -i, --impl IMPL        posix (default), sysv or mmap\n"
			"  -c, --connections C    concurrent client connections (default %d)\n"
			"  -r, --requests R       requests per connection (default %d)\n"
			"  -v, --verbose          client: print every request and reply\n"
			"  -h, --help             show this help\n",
			progname, progname, progname, progname, DEFAULT_WORKERS, DEFAULT_CONNECTIONS,
			DEFAULT_REQUESTS);
}

static int
parse_int_option(const char *name, const char *value, int min, int max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (*value == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
	{
		fprintf(stderr, "%s: invalid value \"%s\" for --%s (expected %d to %d)\n", progname,
				value, name, min, max);
		exit(2);
	}
	return (int) v;
}

static int
parse_impl_option(const char *value)
{
	if (strcmp(value, "posix") == 0)
		return DSM_IMPL_POSIX;
	if (strcmp(value, "sysv") == 0)
		return DSM_IMPL_SYSV;
	if (strcmp(value, "mmap") == 0)
		return DSM_IMPL_MMAP;
	fprintf(stderr, "%s: invalid value \"%s\" for --impl (expected posix, sysv or mmap)\n",
			progname, value);
	exit(2);
}

/* ------------------------------------------------------------------------
 * The "demo" subcommand.
 * ------------------------------------------------------------------------
 */

/*
 * Find a dsmctl program: next to this executable first (in a build tree,
 * libtool runs the real binary from .libs/, so its parent is tried too),
 * then on PATH.  Returns a malloc'd path, or NULL if there is none.
 */
static char *
find_dsmctl(void)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	const char *path = getenv("PATH");

	if (n > 0)
	{
		char *slash;
		char candidate[PATH_MAX + 16];

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash != NULL)
		{
			*slash = '\0';
			snprintf(candidate, sizeof(candidate), "%s/dsmctl", self);
			if (access(candidate, X_OK) == 0)
				return strdup(candidate);
			slash = strrchr(self, '/');
			if (slash != NULL && strcmp(slash, "/.libs") == 0)
			{
				*slash = '\0';
				snprintf(candidate, sizeof(candidate), "%s/dsmctl", self);
				if (access(candidate, X_OK) == 0)
					return strdup(candidate);
			}
		}
	}
	while (path != NULL && *path != '\0')
	{
		const char *colon = strchr(path, ':');
		size_t len = colon ? (size_t) (colon - path) : strlen(path);
		char candidate[PATH_MAX + 16];

		if (len > 0 && len < PATH_MAX)
		{
			snprintf(candidate, sizeof(candidate), "%.*s/dsmctl", (int) len, path);
			if (access(candidate, X_OK) == 0)
				return strdup(candidate);
		}
		path = colon ? colon + 1 : NULL;
	}
	return NULL;
}

/* Run "dsmctl ls DIR" if a dsmctl exists; report but do not fail on its errors. */
static void
show_dsmctl_ls(const char *dir)
{
	char *dsmctl = find_dsmctl();
	pid_t pid;
	int status;

	if (dsmctl == NULL)
		return; /* not built or installed: nothing to show */
	printf("\n$ dsmctl ls %s\n", dir);
	fflush(stdout);
	pid = fork();
	if (pid == 0)
	{
		execl(dsmctl, "dsmctl", "ls", dir, (char *) NULL);
		fprintf(stderr, "%s: could not run \"%s\": %s\n", progname, dsmctl, strerror(errno));
		_exit(127);
	}
	if (pid > 0 && waitpid(pid, &status, 0) == pid &&
		!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		printf("(dsmctl ls exited with status %d)\n",
			   WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	else if (pid < 0)
		printf("(could not fork to run dsmctl: %s)\n", strerror(errno));
	printf("\n");
	free(dsmctl);
}

/*
 * List what the cluster with id cluster_id and directory dir has in the
 * system: /dev/shm entries named dsmkit.<id>.*, System V segments whose
 * key carries the cluster's tag (see dsmkit/dsm_impl.h), and entries of
 * the directory.  Prints one line an object, then a count headed by when.
 * Returns the number of objects.
 */
static int
list_cluster_objects(uint32_t cluster_id, const char *dir, const char *when)
{
	char prefix[32];
	uint32_t tag = ((cluster_id >> 16) ^ (cluster_id & 0xffff)) & 0xffff;
	int posix = 0, sysv = 0, files = 0;
	DIR *d;
	FILE *f;

	snprintf(prefix, sizeof(prefix), "dsmkit.%08x.", cluster_id);
	printf("demo: %s:\n", when);
	if ((d = opendir("/dev/shm")) != NULL)
	{
		struct dirent *de;

		while ((de = readdir(d)) != NULL)
			if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			{
				printf("  /dev/shm/%s\n", de->d_name);
				posix++;
			}
		closedir(d);
	}
	if ((f = fopen("/proc/sysvipc/shm", "r")) != NULL)
	{
		char line[512];

		while (fgets(line, sizeof(line), f) != NULL)
		{
			long long key;
			int shmid;

			if (sscanf(line, "%lld %d", &key, &shmid) == 2 && key != 0 &&
				(((uint32_t) key >> 16) & 0xffff) == tag)
			{
				printf("  System V segment key 0x%08x (id %d)\n", (unsigned) key, shmid);
				sysv++;
			}
		}
		fclose(f);
	}
	if ((d = opendir(dir)) != NULL)
	{
		struct dirent *de;

		while ((de = readdir(d)) != NULL)
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			{
				printf("  %s/%s\n", dir, de->d_name);
				files++;
			}
		closedir(d);
	}
	printf("  (%d in /dev/shm, %d System V, %d files in the cluster directory)\n", posix, sysv,
		   files);
	return posix + sysv + files;
}

/*
 * The "demo" subcommand.  Returns the exit status: 0 when the client saw
 * only right answers, the server stopped cleanly and nothing was left.
 */
static int
run_demo(const char *dir_option, int workers, const DemoClientOptions *client_template, int impl)
{
	char tmpdir[] = "/tmp/dsmkit-demo.XXXXXX";
	char dir[PATH_MAX];
	DemoServerOptions server = {0};
	DemoClientOptions client = *client_template;
	uint32_t cluster_id;
	int ready[2];
	uint32_t port;
	ssize_t n;
	pid_t server_pid;
	int status;
	int rc = 0;
	bool made_dir = false;

	if (dir_option == NULL)
	{
		if (mkdtemp(tmpdir) == NULL)
		{
			fprintf(stderr, "%s: could not create a temporary directory: %s\n", progname,
					strerror(errno));
			return 1;
		}
		dir_option = tmpdir;
		made_dir = true;
	}
	else if (mkdir(dir_option, 0700) != 0 && errno != EEXIST)
	{
		fprintf(stderr, "%s: could not create cluster directory \"%s\": %s\n", progname,
				dir_option, strerror(errno));
		return 1;
	}
	if (realpath(dir_option, dir) == NULL)
	{
		fprintf(stderr, "%s: could not resolve \"%s\": %s\n", progname, dir_option,
				strerror(errno));
		return 1;
	}
	cluster_id = dsm_impl_cluster_id_of(dir);

	/* Start the server in a child; it reports its port through a pipe. */
	if (pipe2(ready, O_CLOEXEC) != 0)
	{
		fprintf(stderr, "%s: could not create pipe: %s\n", progname, strerror(errno));
		return 1;
	}
	server.directory = dir;
	server.workers = workers;
	server.port = 0;
	server.dsm_impl = impl;
	server.ready_fd = ready[1];
	printf("demo: starting the server (supervisor + %d workers) on cluster directory %s\n",
		   workers, dir);
	fflush(stdout);
	server_pid = fork();
	if (server_pid < 0)
	{
		fprintf(stderr, "%s: could not fork: %s\n", progname, strerror(errno));
		return 1;
	}
	if (server_pid == 0)
	{
		close(ready[0]);
		demo_run_server(&server);
	}
	close(ready[1]);
	do
		n = read(ready[0], &port, sizeof(port));
	while (n < 0 && errno == EINTR);
	close(ready[0]);
	if (n != (ssize_t) sizeof(port))
	{
		fprintf(stderr, "%s: the server did not start\n", progname);
		waitpid(server_pid, &status, 0);
		return 1;
	}

	/* Drive it. */
	client.port = (int) port;
	if (demo_run_client(&client) != 0)
		rc = 1;

	show_dsmctl_ls(dir);
	(void) list_cluster_objects(cluster_id, dir, "the cluster in the system before shutdown");

	/* Stop it, and wait for the supervisor to finish its cleanup. */
	printf("demo: sending SHUTDOWN\n");
	fflush(stdout);
	if (demo_send_shutdown((int) port) != 0)
	{
		rc = 1;
		kill(server_pid, SIGTERM);
	}
	if (waitpid(server_pid, &status, 0) != server_pid)
	{
		fprintf(stderr, "%s: could not wait for the server: %s\n", progname, strerror(errno));
		rc = 1;
	}
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
	{
		printf("demo: the server failed (%s %d)\n", WIFEXITED(status) ? "exit status" : "signal",
			   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		rc = 1;
	}
	else
		printf("demo: the server exited cleanly\n");

	/* The promise: nothing of the cluster is left anywhere. */
	if (list_cluster_objects(cluster_id, dir, "the cluster in the system after shutdown") != 0)
	{
		printf("demo: FAILED: the cluster left shared memory or files behind\n");
		rc = 1;
	}
	else
		printf("demo: nothing left behind\n");

	if (made_dir && rmdir(dir) != 0)
		fprintf(stderr, "%s: could not remove \"%s\": %s\n", progname, dir, strerror(errno));
	printf("demo: %s\n", rc == 0 ? "OK" : "FAILED");
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct option long_options[] = {
		{"dir", required_argument, NULL, 'd'},
		{"workers", required_argument, NULL, 'w'},
		{"port", required_argument, NULL, 'p'},
		{"impl", required_argument, NULL, 'i'},
		{"connections", required_argument, NULL, 'c'},
		{"requests", required_argument, NULL, 'r'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *command;
	const char *dir = NULL;
	int workers = DEFAULT_WORKERS;
	int port = -1;
	int impl = DSM_IMPL_POSIX;
	DemoClientOptions client = {.connections = DEFAULT_CONNECTIONS, .requests = DEFAULT_REQUESTS};
	int c;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
	{
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	command = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "d:w:p:i:c:r:vh", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				dir = optarg;
				break;
			case 'w':
				workers = parse_int_option("workers", optarg, 1, 64);
				break;
			case 'p':
				port = parse_int_option("port", optarg, 0, 65535);
				break;
			case 'i':
				impl = parse_impl_option(optarg);
				break;
			case 'c':
				client.connections = parse_int_option("connections", optarg, 1, 64);
				break;
			case 'r':
				client.requests = parse_int_option("requests", optarg, 10, 1000000);
				break;
			case 'v':
				client.verbose = true;
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				fprintf(stderr, "Try \"%s --help\".\n", progname);
				return 2;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "%s: unexpected argument \"%s\"\n", progname, argv[optind]);
		return 2;
	}

	if (strcmp(command, "server") == 0)
	{
		DemoServerOptions server = {.directory = dir, .workers = workers,
									.port = port < 0 ? 0 : port, .dsm_impl = impl,
									.ready_fd = -1};

		if (dir == NULL)
		{
			fprintf(stderr, "%s: server needs --dir DIR\n", progname);
			return 2;
		}
		demo_run_server(&server);
	}
	if (strcmp(command, "client") == 0)
	{
		if (port <= 0)
		{
			fprintf(stderr, "%s: client needs --port P (the port the server printed)\n",
					progname);
			return 2;
		}
		client.port = port;
		return demo_run_client(&client);
	}
	if (strcmp(command, "demo") == 0)
		return run_demo(dir, workers, &client, impl);

	fprintf(stderr, "%s: unknown command \"%s\"\nTry \"%s --help\".\n", progname, command,
			progname);
	return 2;
}
