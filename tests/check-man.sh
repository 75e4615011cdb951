#!/bin/sh
# check-man.sh: the man pages are clean roff (groff -man -ww -z prints
# nothing), every alias page points at a page that exists, and every
# exported function and variable of the library has a page.
set -eu
: "${top_srcdir:=.}" "${top_builddir:=.}" "${NM:=nm}" "${GROFF:=groff}"
command -v "$GROFF" >/dev/null 2>&1 || { echo "groff not found" >&2; exit 77; }
status=0
mandir="$top_srcdir/doc/man"
for page in "$mandir"/*.[0-9]; do
	first=$(head -n 1 "$page")
	case "$first" in
		.so\ *)
			target="$mandir/$(basename "${first#.so }")"
			if [ ! -f "$target" ]; then
				echo "FAIL: $(basename "$page") points at missing $(basename "$target")" >&2
				status=1
			fi
			continue ;;
	esac
	out=$("$GROFF" -man -ww -z "$page" 2>&1) || true
	if [ -n "$out" ]; then
		echo "FAIL: $(basename "$page"):" >&2
		echo "$out" >&2
		status=1
	fi
done
# Every exported symbol needs a page (section 3), or it is not documented.
lib="$top_builddir/.libs/libdsmkit.so"
if [ -f "$lib" ]; then
	syms=$($NM -D --defined-only "$lib") || { echo "could not run $NM on $lib" >&2; exit 1; }
	syms=$(echo "$syms" | awk '{print $3}' | grep -v '^_')
	[ -n "$syms" ] || { echo "no exported symbols found in $lib" >&2; exit 1; }
	for sym in $syms; do
		if [ ! -f "$mandir/$sym.3" ]; then
			echo "FAIL: exported $sym has no man page doc/man/$sym.3" >&2
			status=1
		fi
	done
fi
# Every page in the directory is installed (listed in doc/local.mk).
for page in "$mandir"/*.[0-9]; do
	if ! grep -q "doc/man/$(basename "$page")" "$top_srcdir/doc/local.mk"; then
		echo "FAIL: doc/man/$(basename "$page") is not listed in doc/local.mk" >&2
		status=1
	fi
done
[ $status = 0 ] && echo "man pages: clean, complete and installed"
exit $status
