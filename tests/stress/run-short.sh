#!/bin/sh
# run-short.sh: the short run of the kill-everything stress program, part of
# "make check" (about 20 s): each implementation in turn with 4 backends, 5
# backend kills and 0.3 supervisor kills a second, in a fresh temporary
# directory that is removed at the end.  The test harness exports
# top_builddir; run by hand, it defaults to the current directory.
# "make stress-long" (tests/stress/local.mk) is the long run.
set -u
top_builddir=${top_builddir:-.}
prog="$top_builddir/tests/stress/dsmkit-stress"
if test ! -x "$prog"; then
	echo "run-short.sh: $prog is not built" >&2
	exit 99
fi
tmp=`mktemp -d "${TMPDIR:-/tmp}/dsmkit-stress.XXXXXX"` || exit 99
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

status=0
for spec in "posix 8" "mmap 6" "sysv 6"; do
	set -- $spec
	mkdir "$tmp/$1" || exit 99
	if ! "$prog" --dir "$tmp/$1" --impl "$1" --seconds "$2" --backends 4 \
		--kill-rate 5 --supervisor-kill-rate 0.3 --log "$tmp/$1.log"; then
		status=1
		echo "--- the last lines of dsmkit's log for $1:"
		tail -n 40 "$tmp/$1.log"
	fi
done
exit $status
