#!/bin/sh
# check-headers.sh: every public header compiles on its own, as C11 and as
# C++, with warnings as errors, and never needs config.h.
set -eu
: "${top_srcdir:=.}" "${top_builddir:=.}" "${CC:=cc}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for h in "$top_srcdir"/include/dsmkit.h "$top_srcdir"/include/dsmkit/*.h "$top_builddir"/include/dsmkit/version.h; do
	[ -f "$h" ] || continue
	case "$h" in
		*/dsmkit.h) name=dsmkit.h ;;
		*) name=dsmkit/$(basename "$h") ;;
	esac
	if grep -q '^#[[:space:]]*include.*config\.h' "$h"; then
		echo "FAIL: $name includes config.h" >&2
		status=1
	fi
	printf '#include <%s>\n#include <%s>\nint dsmkit_header_test_%s;\n' "$name" "$name" "$(echo "$name" | tr -c 'a-zA-Z0-9\n' _)" > "$tmp/t.c"
	if ! $CC -std=c11 -Wall -Wextra -Werror -pedantic-errors \
		-I"$top_srcdir/include" -I"$top_builddir/include" $TALLOC_CFLAGS -c "$tmp/t.c" -o "$tmp/t.o" 2> "$tmp/err"; then
		echo "FAIL: $name does not compile alone as C11:" >&2
		cat "$tmp/err" >&2
		status=1
	fi
	if command -v c++ >/dev/null 2>&1; then
		cp "$tmp/t.c" "$tmp/t.cc"
		if ! c++ -Wall -Wextra -Werror -I"$top_srcdir/include" -I"$top_builddir/include" -c "$tmp/t.cc" -o "$tmp/t2.o" 2> "$tmp/err"; then
			echo "FAIL: $name does not compile alone as C++:" >&2
			cat "$tmp/err" >&2
			status=1
		fi
	fi
done
[ $status = 0 ] && echo "headers: each compiles on its own (C11, C++)"
exit $status
