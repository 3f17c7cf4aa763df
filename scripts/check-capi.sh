#!/usr/bin/env bash
# check-capi.sh: libsivshm for C, as a user gets it. `make -C capi install` (DESTDIR and a
# PREFIX) installs libsivshm.so.0 (its SONAME), the .a, <sivshm/channel.h> and sivshm.pc;
# the C samples build with plain `cc $(pkg-config --cflags --libs sivshm)` against the
# installed library and run (manager and worker over a memfd, scripts/capi-pair.py); they
# build statically (LDFLAGS=-static, as for the guests); and the sanitizer tests
# (capi/tests/c_programs.rs: ASan+UBSan, hostile peer, removal, C against Rust) pass, or say
# that the compiler cannot build with the sanitizers; the README's C example compiles.
set -euo pipefail
. "$(dirname "$0")/common.sh"
cd "$SIVSHM_ROOT"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT

make -s -C capi >/dev/null
make -s -C capi install DESTDIR="$t/dest" PREFIX=/usr
for f in usr/lib/libsivshm.so usr/lib/libsivshm.so.0 usr/lib/libsivshm.a \
	usr/include/sivshm/channel.h usr/lib/pkgconfig/sivshm.pc; do
	[ -e "$t/dest/$f" ] || die "make install DESTDIR=... did not install /$f"
done
grep -qx 'libdir=/usr/lib' "$t/dest/usr/lib/pkgconfig/sivshm.pc" || die "sivshm.pc: libdir is not /usr/lib"
readelf -d "$t/dest/usr/lib/libsivshm.so.0" | grep -q 'SONAME.*\[libsivshm\.so\.0\]' \
	|| die "libsivshm.so has no SONAME libsivshm.so.0"
say "installed under DESTDIR: $(cd "$t/dest" && find . -type f -o -type l | sort | tr '\n' ' ')"

make -s -C capi install PREFIX="$t/prefix"
export PKG_CONFIG_PATH=$t/prefix/lib/pkgconfig
for p in manager worker; do
	# shellcheck disable=SC2046 # pkg-config's words are meant to split
	cc -O2 -Wall -Werror -o "$t/$p" "samples/c/sivshm_distribute_$p.c" $(pkg-config --cflags --libs sivshm)
	readelf -d "$t/$p" | grep -q 'NEEDED.*\[libsivshm\.so\.0\]' || die "$p does not need libsivshm.so.0"
done
LD_LIBRARY_PATH=$t/prefix/lib scripts/capi-pair.py "$t/manager" --rounds 10 --bytes 65536 --timeout 30 \
	-- "$t/worker" --timeout 30 || die "the pkg-config-built C manager and worker did not agree"

# The README's C example compiles against the installed library as it stands there.
sed -n '/^#include <err.h>/,/^}/p' README.md > "$t/echo.c"
[ -s "$t/echo.c" ] || die "README.md has no C channel example starting with #include <err.h>"
# shellcheck disable=SC2046
cc -Wall -Werror -o "$t/echo" "$t/echo.c" $(pkg-config --cflags --libs sivshm) \
	|| die "the README's C example does not compile"

make -s -C samples/c capi OUTPUT="$t" LDFLAGS=-static 2>/dev/null
for p in sivshm_distribute_manager sivshm_distribute_worker; do
	file "$t/$p" | grep -q 'statically linked' || die "$p is not statically linked with LDFLAGS=-static"
done
scripts/capi-pair.py "$t/sivshm_distribute_manager" --rounds 10 --bytes 65536 --timeout 30 \
	-- "$t/sivshm_distribute_worker" --timeout 30 || die "the static C manager and worker did not agree"

cargo test --release -q -p sivshm-capi --test c_programs -- --nocapture --test-threads 1 >"$t/san.log" 2>&1 \
	|| { head -n 60 "$t/san.log"; die "the sanitizer tests failed"; }
grep -h 'SKIPPED' "$t/san.log" || say "sanitizer tests (ASan+UBSan): $(grep -h '^test result' "$t/san.log")"
