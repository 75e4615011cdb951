#!/bin/sh
# quickstart.sh: the two commands of the README, for a fresh Debian 12 (or
# Ubuntu) machine.  Run as root, or as a user with sudo.
#
#   sh build-aux/quickstart.sh demo   install the build dependencies, build,
#                                     install dsmkit under /usr/local and run
#                                     the demo server with its client
#   sh build-aux/quickstart.sh test   install the dependencies, then build and
#                                     run the whole test suite: a normal build
#                                     with -Werror (make check, valgrind,
#                                     distcheck, install check) and a second
#                                     build under AddressSanitizer + UBSan
set -eu
mode=${1:-}
case "$mode" in
	demo|test) ;;
	*) echo "usage: sh build-aux/quickstart.sh demo|test" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
top=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

step() { printf '\n==> %s\n' "$*"; }

step "installing build dependencies (apt-get)"
packages="build-essential autoconf automake libtool pkg-config libtalloc-dev check groff-base"
[ "$mode" = test ] && packages="$packages valgrind g++"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages

step "generating configure"
./autogen.sh

if [ "$mode" = demo ]; then
	step "building and installing under /usr/local"
	rm -rf build-demo && mkdir build-demo && cd build-demo
	../configure --prefix=/usr/local --disable-tests -q
	make -j"$jobs"
	as_root make install
	as_root ldconfig
	cd "$top"
	step "running the demo"
	PATH=/usr/local/bin:$PATH sh contrib/demo/run-demo.sh
	exit $?
fi

step "build 1: -Werror, injection points; make check"
rm -rf build-ci && mkdir build-ci && cd build-ci
../configure --enable-werror --enable-injection-points -q
make -j"$jobs"
make -j"$jobs" check || { cat tests/*.log tests/test-suite.log 2>/dev/null | tail -n 200; exit 1; }

step "build 1: the suites under valgrind"
make check-valgrind

step "build 1: install into a temporary prefix and build a program with pkg-config"
sh "$top/tests/installcheck.sh"

step "build 1: make distcheck"
make -j"$jobs" distcheck DISTCHECK_CONFIGURE_FLAGS="--enable-injection-points"
cd "$top"

step "build 2: AddressSanitizer + UndefinedBehaviorSanitizer, -Werror; make check"
rm -rf build-asan && mkdir build-asan && cd build-asan
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
../configure --enable-werror --enable-injection-points --disable-shared -q \
	CFLAGS="-g -O1 $san" LDFLAGS="$san"
make -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 CK_TIMEOUT_MULTIPLIER=4 \
	make -j"$jobs" check || { cat tests/*.log tests/test-suite.log 2>/dev/null | tail -n 200; exit 1; }
cd "$top"

step "all tests passed"
