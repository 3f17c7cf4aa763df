# shellcheck shell=bash
# Shared settings for the sivshm scripts. Sourced, never run.

SIVSHM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything expensive (kernel source, kernel build, bindgen) lives here,
# outside the work tree, so that a fresh clone reuses it.
SIVSHM_CACHE=${SIVSHM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sivshm}
KERNEL_SERIES=7.3
BINDGEN_VERSION=0.72.1
LLVM_VERSION=22
export LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib
# Debian's rustc-web: the kernel and every module must be built by this one.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
BINDGEN=$SIVSHM_CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen

say()  { printf '[sivshm] %s\n' "$*" >&2; }
die()  { printf '[sivshm] error: %s\n' "$*" >&2; exit 1; }

# The extracted kernel source directory (set by setup.sh).
kernel_src_dir() {
	local d
	d=$(ls -d "$SIVSHM_CACHE"/src/linux-source-"$KERNEL_SERIES" 2>/dev/null | head -n1)
	[ -n "$d" ] && [ -f "$d/Makefile" ] && echo "$d"
}

kernel_version() {
	make -s -C "$1" kernelversion 2>/dev/null
}

# The build cache key: kernel version, fragment contents and compiler versions.
kernel_build_dir() {
	local src=$1 ver key
	ver=$(kernel_version "$src")
	key=$( { echo "$ver"; cat "$SIVSHM_ROOT/kernel/sivshm-guest.config"; \
		"$RUSTC" --version; gcc --version | head -n1; "$BINDGEN" --version; } \
		| sha256sum | cut -c1-12)
	echo "$SIVSHM_CACHE/kbuild/$ver-$key"
}

# Make arguments every module and kernel build needs.
kmake_args() {
	echo "RUSTC=$RUSTC RUSTDOC=$RUSTDOC BINDGEN=$BINDGEN"
}
