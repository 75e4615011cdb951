#!/bin/sh
# installcheck.sh: install the build (run from a configured build directory)
# into a temporary root, build tests/installcheck/prog.c out of tree with
# pkg-config alone, run it, and check that the man pages are reachable and
# that the run left nothing behind.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
root=$(mktemp -d /tmp/dsmkit-install.XXXXXX)
cluster=$(mktemp -d /tmp/dsmkit-installcheck.XXXXXX)
trap 'rm -rf "$root" "$cluster"' EXIT
make install DESTDIR="$root" >/dev/null
prefix=$(sed -n 's/^prefix=//p' dsmkit.pc)
pcdir="$root$prefix/lib/pkgconfig"
export PKG_CONFIG_PATH="$pcdir"
cflags=$(pkg-config --define-prefix --cflags dsmkit)
libs=$(pkg-config --define-prefix --libs dsmkit)
echo "pkg-config: $cflags $libs"
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$root/prog" "$srcdir/tests/installcheck/prog.c" $cflags $libs
LD_LIBRARY_PATH="$root$prefix/lib" "$root/prog" "$cluster"
left=$(ls -A "$cluster" | wc -l)
[ "$left" = 0 ] || { echo "FAIL: the cluster directory is not empty:" >&2; ls -A "$cluster" >&2; exit 1; }
for page in dsm_create dsm_attach ResourceOwnerCreate palloc ereport on_shmem_exit supervisor_startup; do
	if ! MANPATH="$root$prefix/share/man" man -w "$page" >/dev/null 2>&1 &&
	   [ ! -f "$root$prefix/share/man/man3/$page.3" ]; then
		echo "FAIL: man page $page(3) not installed" >&2
		exit 1
	fi
done
echo "installcheck: ok"
