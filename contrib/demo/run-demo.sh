#!/bin/sh
# run-demo.sh: run "dsmkit-demo demo" in a fresh temporary directory, then
# remove the directory.  The demo starts a prefork counter server on
# 127.0.0.1, drives it with a few hundred requests from several connections
# (some bad on purpose), lists the cluster with dsmctl if it can find one,
# shuts the server down and checks that no shared memory is left.
#
# Usage: sh contrib/demo/run-demo.sh [dsmkit-demo demo options...]
#   e.g. sh contrib/demo/run-demo.sh --workers 8 --connections 16 --impl sysv
#
# Which dsmkit-demo runs: $DSMKIT_DEMO if set; otherwise the one on PATH
# (an installed dsmkit); otherwise one built in the current directory or in
# a build directory of this source tree.  The exit status is the demo's:
# 0 when every answer was right and nothing was left behind.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

find_demo() {
	if [ -n "${DSMKIT_DEMO:-}" ]; then
		echo "$DSMKIT_DEMO"
		return 0
	fi
	if command -v dsmkit-demo >/dev/null 2>&1; then
		command -v dsmkit-demo
		return 0
	fi
	for candidate in ./dsmkit-demo "$top/dsmkit-demo" "$top"/build*/dsmkit-demo; do
		if [ -x "$candidate" ]; then
			echo "$candidate"
			return 0
		fi
	done
	return 1
}

if ! demo=$(find_demo); then
	echo "run-demo.sh: no dsmkit-demo found: install dsmkit, build it, or set DSMKIT_DEMO" >&2
	exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsmkit-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "run-demo.sh: running $demo demo --dir $tmp/cluster $*"
status=0
"$demo" demo --dir "$tmp/cluster" "$@" || status=$?
exit $status
