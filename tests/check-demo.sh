#!/bin/sh
# check-demo.sh: the demo server works end to end with each implementation
# and leaves nothing behind (the demo itself fails if anything is left).
set -eu
: "${top_srcdir:=.}" "${top_builddir:=.}"
for impl in posix sysv mmap; do
	DSMKIT_DEMO="$top_builddir/dsmkit-demo" sh "$top_srcdir/contrib/demo/run-demo.sh" --impl "$impl" --workers 3
done
