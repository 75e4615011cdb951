#!/bin/sh
# check-exports.sh: the shared library exports exactly the public API.
# Compares the dynamic symbols libdsmkit.so defines with tests/exports.txt
# (sorted); regenerate that list deliberately when the API changes:
#   nm -D --defined-only .libs/libdsmkit.so | awk '{print $3}' | grep -v '^_' | sort > tests/exports.txt
set -eu
: "${top_srcdir:=.}" "${top_builddir:=.}" "${NM:=nm}"
lib="$top_builddir/.libs/libdsmkit.so"
if [ ! -f "$lib" ]; then
	echo "no shared library at $lib (built with --disable-shared?)" >&2
	exit 77
fi
actual=$(mktemp)
trap 'rm -f "$actual"' EXIT
# $NM may carry options (libtool sets "nm -B"), so it is not quoted.
$NM -D --defined-only "$lib" > "$actual.raw" || { echo "could not run $NM on $lib" >&2; exit 1; }
awk '{print $3}' "$actual.raw" | grep -v '^_' | LC_ALL=C sort > "$actual"
rm -f "$actual.raw"
[ -s "$actual" ] || { echo "no exported symbols found in $lib" >&2; exit 1; }
if ! diff -u "$top_srcdir/tests/exports.txt" "$actual"; then
	echo "exported symbols differ from tests/exports.txt (- expected, + actual)" >&2
	exit 1
fi
echo "exports: $(wc -l < "$actual") symbols, as listed"
