/*
 * prog.c: an out-of-tree program built against an installed dsmkit with
 *     cc prog.c $(pkg-config --cflags --libs dsmkit)
 * by tests/installcheck.sh.  It becomes the supervisor of a cluster in the
 * directory given as argv[1], forks a backend that creates a segment and
 * a second backend that attaches it by handle and checks the data, and
 * exits with 0 only if everything worked.  proc_exit() removes the cluster.
 */
#include <dsmkit.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int handle_pipe[2];
static int done_pipe[2];

static void
creator(Datum arg)
{
	dsm_segment *seg = dsm_create(65536, 0);
	dsm_handle h = dsm_segment_handle(seg);
	char byte;

	(void) arg;
	strcpy(dsm_segment_address(seg), "hello from the creator");
	if (write(handle_pipe[1], &h, sizeof h) != sizeof h)
		elog(FATAL, "could not send the handle: %m");
	/* Keep the segment mapped until the reader is done with it. */
	if (read(done_pipe[0], &byte, 1) != 1)
		elog(FATAL, "could not wait for the reader: %m");
	dsm_detach(seg);
}

static void
reader(Datum arg)
{
	dsm_handle h;
	dsm_segment *seg;
	char byte = 1;

	(void) arg;
	if (read(handle_pipe[0], &h, sizeof h) != sizeof h)
		elog(FATAL, "could not receive the handle: %m");
	seg = dsm_attach(h);
	if (seg == NULL)
		elog(FATAL, "segment %u is gone", h);
	if (strcmp(dsm_segment_address(seg), "hello from the creator") != 0)
		elog(FATAL, "segment %u holds the wrong data", h);
	dsm_detach(seg);
	if (write(done_pipe[1], &byte, 1) != 1)
		elog(FATAL, "could not signal the creator: %m");
}

int
main(int argc, char **argv)
{
	DsmkitConfig config = {0};

	if (argc != 2)
	{
		fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
		return 2;
	}
	if (pipe(handle_pipe) != 0 || pipe(done_pipe) != 0)
		return 1;
	printf("dsmkit %s\n", dsmkit_version_string());
	config.directory = argv[1];
	supervisor_startup(&config);
	supervisor_spawn_backend(creator, 0);
	supervisor_spawn_backend(reader, 0);
	while (supervisor_reap(true) > 0)
		;
	printf("created, attached and detached a segment: ok\n");
	proc_exit(0);
}
