/*
 * join_helper.c: a program that check_supervisor exec's to test
 * backend_join() from a process the supervisor did not fork.
 *
 * Usage: join_helper DIRECTORY HANDLE MODE
 *   verify: join, attach HANDLE, check that its first word is 0xfeedface,
 *           write 0x10e into its second word, detach, leave with status 0;
 *   hold:   join, attach HANDLE, write one byte to stdout, then block
 *           reading stdin until killed (or stdin closes).
 * Exit status: 0 on success, 2 on a failed check, 3 on bad usage; an
 * ERROR leaves through proc_exit(1) as FATAL.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dsmkit.h>

int
main(int argc, char **argv)
{
	dsm_segment *seg;
	uint32_t *p;
	char c = 'R';

	if (argc != 4)
	{
		fprintf(stderr, "usage: join_helper DIRECTORY HANDLE verify|hold\n");
		return 3;
	}
	backend_join(argv[1]);
	if (dsmkit_role() != DSMKIT_ROLE_BACKEND)
		proc_exit(2);
	seg = dsm_attach((dsm_handle) strtoul(argv[2], NULL, 10));
	if (seg == NULL)
		proc_exit(2);
	p = dsm_segment_address(seg);
	if (p[0] != 0xfeedfaceu)
		proc_exit(2);
	if (strcmp(argv[3], "hold") == 0)
	{
		if (write(1, &c, 1) != 1)
			proc_exit(2);
		while (read(0, &c, 1) > 0)
			;
		proc_exit(0);
	}
	p[1] = 0x10e;
	dsm_detach(seg);
	proc_exit(0);
}
