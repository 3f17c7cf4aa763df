# shellcheck shell=bash
# Shared settings for the sivshm scripts. Sourced, never run.

SIVSHM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything expensive (kernel source, kernel build, bindgen) lives here,
# outside the work tree, so that a fresh clone reuses it.
SIVSHM_CACHE=${SIVSHM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sivshm}
KERNEL_SERIES=7.3
BINDGEN_VERSION=0.72.1
# The vhost-user vsock backend the channel benchmark measures vsock between VMs with.
VHOST_DEVICE_VSOCK_VERSION=0.3.0
LLVM_VERSION=22
export LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib
# Debian's rustc-web: the kernel and every module must be built by this one. Not exported:
# the user-space crates build with the machine's own cargo toolchain.
KRUSTC=/usr/bin/rustc
KRUSTDOC=/usr/bin/rustdoc
KCLIPPY_DRIVER=/usr/bin/clippy-driver
KRUSTFMT=/usr/bin/rustfmt
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" ;; esac
BINDGEN=$SIVSHM_CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen

# Cargo's intermediate artifacts live in the cache, one directory per checkout, so that a
# fresh clone does not compile every dependency again. A checkout that has none yet starts
# from a copy of the one used last, minus the workspace's own crates (every fingerprint of
# a sivshm* package): cargo judges a path crate fresh by file times alone, so a copied
# artifact of another checkout's sources must never pass for this one's. Finished binaries
# still go to this checkout's target/.
cargo_build_dir() {
	local base=$SIVSHM_CACHE/cargo key dir seed tmp
	key=$(printf '%s' "$SIVSHM_ROOT" | sha256sum | cut -c1-12)
	dir=$base/$key
	if [ ! -d "$dir" ]; then
		mkdir -p "$base"
		tmp=$(mktemp -d "$base/.new.XXXXXX")
		seed=$(ls -td "$base"/*/ 2>/dev/null | head -n1)
		if [ -n "$seed" ] && cp -a "$seed/." "$tmp/"; then
			find "$tmp" -type d -path '*/.fingerprint/sivshm*' -prune -exec rm -rf {} +
		fi
		mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
		# Keep the six used last: every clone (work trees, CI runs) adds one.
		ls -td "$base"/*/ | tail -n +7 | xargs -r rm -rf
	fi
	touch "$dir"
	echo "$dir"
}
CARGO_BUILD_BUILD_DIR=$(cargo_build_dir)
export CARGO_BUILD_BUILD_DIR

say()  { printf '[sivshm] %s\n' "$*" >&2; }
die()  { printf '[sivshm] error: %s\n' "$*" >&2; exit 1; }

# Whether progress is redrawn in place: stderr is a terminal that can, outside CI (the rule of
# lab/src/progress.rs's `style`); otherwise a plain line now and then.
progress_redraws() {
	[ -t 2 ] || return 1
	case ${CI:-} in ''|0|false|FALSE|False) ;; *) return 1 ;; esac
	case ${TERM:-dumb} in ''|dumb) return 1 ;; esac
}

# progress_while PID WHAT TOTAL COUNT_CMD...: while process PID lives, shows how far WHAT is
# (COUNT_CMD prints a number; TOTAL is the count when done, 0 if unknown), the time so far and
# an estimate of the rest at the pace so far: redrawn every 2 s in a terminal, else a
# `[sivshm] progress:` line every 60 s.
progress_while() {
	local pid=$1 what=$2 total=$3 start now n line every=60 last=0; shift 3
	progress_redraws && every=2
	start=$(date +%s)
	while kill -0 "$pid" 2>/dev/null; do
		sleep 2
		now=$(date +%s)
		[ $((now - last)) -ge "$every" ] || continue
		last=$now
		n=$("$@" 2>/dev/null || echo 0)
		line="$what: $n"
		if [ "$total" -gt 0 ]; then
			line="$line of about $total, $((now - start)) s"
			if [ "$n" -gt 0 ] && [ "$n" -lt "$total" ]; then
				line="$line, about $(( (now - start) * (total - n) / n )) s left"
			fi
		else
			line="$line so far, $((now - start)) s (no estimate before a first build)"
		fi
		if [ "$every" = 2 ]; then
			printf '\r\033[K[sivshm] %s' "$line" >&2
		else
			printf '[sivshm] progress: %s\n' "$line" >&2
		fi
	done
	[ "$every" = 2 ] && printf '\r\033[K' >&2
	return 0
}

# The extracted kernel source directory (set by setup.sh).
kernel_src_dir() {
	local d
	d=$(ls -d "$SIVSHM_CACHE"/src/linux-source-"$KERNEL_SERIES" 2>/dev/null | head -n1)
	[ -n "$d" ] && [ -f "$d/Makefile" ] && echo "$d"
}

kernel_version() {
	make -s -C "$1" kernelversion 2>/dev/null
}

# SIVSHM_KERNEL_VARIANT=kasan selects a second guest kernel: kernel/sivshm-guest-kasan.config
# merged on top of the usual fragment, built by clang (Rust with KASAN needs it), cached in a
# directory of its own. Unset: the usual guest kernel.
SIVSHM_KERNEL_VARIANT=${SIVSHM_KERNEL_VARIANT:-}
case "$SIVSHM_KERNEL_VARIANT" in
''|kasan) ;;
*) die "unknown SIVSHM_KERNEL_VARIANT=$SIVSHM_KERNEL_VARIANT (known: kasan)" ;;
esac

# The config fragments of the guest kernel, the variant's last.
kernel_fragments() {
	echo "$SIVSHM_ROOT/kernel/sivshm-guest.config"
	if [ -n "$SIVSHM_KERNEL_VARIANT" ]; then
		echo "$SIVSHM_ROOT/kernel/sivshm-guest-$SIVSHM_KERNEL_VARIANT.config"
	fi
}

# The build cache key: kernel version, fragment contents and compiler versions.
kernel_build_dir() {
	local src=$1 ver key
	ver=$(kernel_version "$src")
	if [ -z "$SIVSHM_KERNEL_VARIANT" ]; then
		key=$( { echo "$ver"; cat "$SIVSHM_ROOT/kernel/sivshm-guest.config"; \
			"$KRUSTC" --version; gcc --version | head -n1; "$BINDGEN" --version; } \
			| sha256sum | cut -c1-12)
		echo "$SIVSHM_CACHE/kbuild/$ver-$key"
	else
		# shellcheck disable=SC2046
		key=$( { echo "$ver"; cat $(kernel_fragments); "$KRUSTC" --version; \
			"clang-$LLVM_VERSION" --version 2>/dev/null | head -n1; "$BINDGEN" --version; } \
			| sha256sum | cut -c1-12)
		echo "$SIVSHM_CACHE/kbuild/$ver-$SIVSHM_KERNEL_VARIANT-$key"
	fi
}

# Make arguments every module and kernel build needs (the KASAN variant is clang's).
kmake_args() {
	echo "RUSTC=$KRUSTC RUSTDOC=$KRUSTDOC BINDGEN=$BINDGEN CLIPPY_DRIVER=$KCLIPPY_DRIVER"
	if [ -n "$SIVSHM_KERNEL_VARIANT" ]; then
		echo "LLVM=-$LLVM_VERSION"
	fi
}

# Builds sivshm.ko against kernel build $1 with extra make arguments; fails on any warning.
build_module() {
	local kb=$1 out; shift
	make -s -C "$SIVSHM_ROOT" clean KDIR="$kb" >/dev/null 2>&1 || true
	# shellcheck disable=SC2046
	if ! out=$(make -C "$SIVSHM_ROOT" KDIR="$kb" $(kmake_args) "$@" 2>&1); then
		printf '%s\n' "$out" >&2
		return 1
	fi
	if grep -qiE '(^|[^a-z])(warning|error)[:[]' <<<"$out"; then
		printf '%s\n' "$out" >&2
		say "module build printed warnings ($*)"
		return 1
	fi
}

# Installs what is missing (scripts/setup.sh) and prints the guest kernel's build directory;
# fails if it has no kernel image.
setup_kernel() {
	local kb
	kb=$("$SIVSHM_ROOT/scripts/setup.sh" | tail -n1)
	[ -f "$kb/arch/x86/boot/bzImage" ] || return 1
	echo "$kb"
}

LAB=$SIVSHM_ROOT/target/release/sivshm-lab
# lab_args KB INITRD: sets LAB_ARGS, what every guest-booting sivshm-lab command takes (the
# kernel of build directory KB, the initramfs, the cache and the log directory).
lab_args() {
	LAB_ARGS=(--kernel "$1/arch/x86/boot/bzImage" --initrd "$2" --cache "$SIVSHM_CACHE"
		--logdir "$SIVSHM_ROOT/build/logs")
}

# For the checks that boot VMs by hand (check-own-vms, check-libvirt).
# check_fail NAME MESSAGE LOG...: fails check NAME with MESSAGE, showing the end of each LOG
# and keeping them in build/logs/NAME/; MESSAGE again last, where a caller that shows only
# the last lines sees it.
check_fail() {
	local name=$1 msg=$2 f
	shift 2
	echo "check-$name: $msg" >&2
	mkdir -p "$SIVSHM_ROOT/build/logs/$name"
	for f in "$@"; do
		[ -f "$f" ] || continue
		echo "--- $(basename "$f")" >&2
		tail -n 25 "$f" >&2
		cp "$f" "$SIVSHM_ROOT/build/logs/$name/"
	done
	echo "check-$name: $msg (logs in build/logs/$name/)" >&2
	exit 1
}
# until_deadline WHAT COMMAND...: runs COMMAND until it succeeds, failing the check (the
# script's `fail`) with "no WHAT" once the script's $deadline (seconds since the epoch) has
# passed; the time is counted from its $started.
until_deadline() {
	local what=$1
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "no $what after $(($(date +%s) - started)) s"
		sleep 0.2
	done
}

# What serve reports, read as data: `sivshm-host status FILE` (serve's RUNTIME_DIR/status).
# serve_status HOST FILE [--device NAME] [--get KEY]: fails while no serve is ready.
serve_status() {
	local host=$1 file=$2
	shift 2
	"$host" status "$file" "$@" 2>/dev/null
}

# start_serve HOST FILE: checks topology FILE, starts `HOST serve FILE` in the background
# (its log in serve.log beside FILE, its pid in $serve, which the caller's cleanup must stop)
# and waits (until_deadline) until it reports itself ready.
start_serve() {
	local host=$1 file=$2
	"$host" check-topology "$file" >/dev/null || fail "check-topology refused $file"
	"$host" serve "$file" 2>"$(dirname "$file")/serve.log" &
	serve=$!
	until_deadline "status from serve" serve_ready "$host" "$file"
}
# serve_ready HOST FILE: whether the serve of FILE reports itself ready.
serve_ready() { serve_status "$@" >/dev/null; }

# What the guest programs report, read as data: their SIVSHM-RESULT lines, parsed by the lab
# (the one parser of results; Documentation/host-and-tests.rst, "Reading results"). Each
# takes a log, a program, and KEY=VALUE words its lines must have.
# result LOG PROGRAM KEY [KEY=VALUE...]: KEY of the last such line, or "none".
result() {
	local log=$1 program=$2 key=$3 picks=()
	shift 3
	for p in "$@"; do picks+=(--pick "$p"); done
	"$LAB" results "$log" --program "$program" "${picks[@]}" --get "$key" 2>/dev/null || echo none
}
# results_count LOG PROGRAM [KEY=VALUE...]: how many such lines.
results_count() {
	local log=$1 program=$2 picks=()
	shift 2
	for p in "$@"; do picks+=(--pick "$p"); done
	"$LAB" results "$log" --program "$program" "${picks[@]}" 2>/dev/null | wc -l
}
# has_result LOG PROGRAM [KEY=VALUE...]: whether there is one.
has_result() { [ "$(results_count "$@")" -gt 0 ]; }
# The guest's init marks the end of the VM's command with a line SIVSHM-END rc=N.
ended() { grep -q 'SIVSHM-END rc=' "$1" 2>/dev/null; }
ended_ok() { grep -qE 'SIVSHM-END rc=0([^0-9]|$)' "$1" 2>/dev/null; }
# all_write_back LOG: every device LOG reports a memory type for (guest/init's memtype
# results) is write-back, as the driver and the PAT say; fails with what it found otherwise.
all_write_back() {
	local n
	n=$(results_count "$1" memtype)
	[ "$n" -ge 1 ] || { echo "no memory type reported"; return 1; }
	[ "$(results_count "$1" memtype driver=write-back pat=write-back)" = "$n" ] ||
		{ echo "not write-back: $("$LAB" results "$1" --program memtype)"; return 1; }
}

# The set-up sequence: installs what is missing, builds the guests and the lab
# (sivshm-lab), and sets LAB_ARGS (see lab_args).
prepare_lab() {
	local kb initrd
	kb=$(setup_kernel) || die "setup did not produce a guest kernel"
	initrd=$(build_guest "$kb" "$(kernel_src_dir)") || die "the guests do not build"
	cargo build --release -q -p sivshm-lab || die "sivshm-lab does not build"
	lab_args "$kb" "$initrd"
}

# lab SUBCOMMAND ARGS...: `sivshm-lab SUBCOMMAND` with LAB_ARGS (after prepare_lab).
lab() {
	local sub=$1
	shift
	"$LAB" "$sub" "${LAB_ARGS[@]}" "$@"
}

# run_lab SUBCOMMAND ARGS...: the set-up sequence, then the command in place of the script.
run_lab() {
	prepare_lab
	local sub=$1
	shift
	exec "$LAB" "$sub" "${LAB_ARGS[@]}" "$@"
}

# cargo for the guests' target: static programs (the initramfs has no libc). The iceoryx2
# crate's host tests run here too (scripts/test.sh), so that its dependencies (iceoryx2,
# zenoh: most of a cold build) are compiled once for both.
guest_cargo() {
	local sub=$1; shift
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
		cargo "$sub" --target x86_64-unknown-linux-gnu "$@"
}

# Everything a guest boot needs: module, selftests, initramfs. Prints the initramfs path.
# GUEST_IOX2=0 (set by the scripts whose guests run no iceoryx2 program: demo, compare,
# scale, stress) leaves the iceoryx2 gateway out, and with it the cold build of iceoryx2 and
# zenoh (about 6 minutes on 2 cores, Documentation/iceoryx2.rst) and 33 MB of initramfs.
build_guest() {
	local kb=$1 src=$2 out=$SIVSHM_ROOT/build
	mkdir -p "$out"
	build_module "$kb" || die "sivshm.ko does not build cleanly"
	make -s -C "$SIVSHM_ROOT/selftests" KSRC="$src" OUTPUT="$out" >&2 || die "selftests do not build"
	make -s -C "$SIVSHM_ROOT/samples/c" OUTPUT="$out" LDFLAGS=-static >&2 || die "the C sample does not build"
	# The C channel samples on libsivshm.a (the Makefile builds it with cargo). glibc's linker
	# warns that Rust std's (unused here) name-service calls need glibc at run time in a static
	# binary: kept in a log, shown only when the build fails.
	make -s -C "$SIVSHM_ROOT/samples/c" capi OUTPUT="$out" LDFLAGS=-static >"$out/capi-build.log" 2>&1 \
		|| { cat "$out/capi-build.log" >&2; die "the C channel samples do not build"; }
	# The guests' user-space programs are static: the initramfs has no libc.
	local iox2=()
	[ "${GUEST_IOX2:-1}" = 0 ] || iox2=(-p sivshm-iceoryx2)
	guest_cargo build --release -q -p sivshm-distribute -p sivshm-isolation -p sivshm-probe \
		-p sivshmctl "${iox2[@]}" >&2 \
		|| die "the guest samples do not build"
	rm -f "$out/initramfs.cpio.gz"
	"$SIVSHM_ROOT/scripts/build-initramfs.sh" "$out/initramfs.cpio.gz" "$SIVSHM_ROOT/sivshm.ko" \
		"$out/sivshm_test" "$out/sivshm_xvm" "$out/sivshm_doorbell" "$out/sivshm_hotplug" "$out/sivshm_hello" \
		"$out/sivshm_fuzz" "$out/sivshm_hostile" \
		"$out/sivshm_distribute_manager" "$out/sivshm_distribute_worker" \
		"$out/sivshm_capi_probe" "$out/sivshm_capi_removal" \
		"$SIVSHM_ROOT/target/x86_64-unknown-linux-gnu/release/sivshm-distribute" \
		"$SIVSHM_ROOT/target/x86_64-unknown-linux-gnu/release/sivshm-isolation" \
		"$SIVSHM_ROOT/target/x86_64-unknown-linux-gnu/release/sivshm-probe" \
		"$SIVSHM_ROOT/target/x86_64-unknown-linux-gnu/release/sivshmctl" \
		${iox2[@]+"$SIVSHM_ROOT/target/x86_64-unknown-linux-gnu/release/sivshm-iox2"} \
		"$SIVSHM_ROOT/selftests/sivshmctl_test.sh" \
		|| die "the initramfs could not be built"
	echo "$out/initramfs.cpio.gz"
}
