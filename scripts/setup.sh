#!/usr/bin/env bash
# Installs what sivshm needs to build and test, idempotently and only what is
# missing, then builds (or reuses) the cached guest kernel. Prints the kernel
# build directory on stdout as its last line.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ "$(id -u)" = 0 ] || die "setup needs root (apt-get); run it as root"
mkdir -p "$SIVSHM_CACHE"

# --- apt sources -----------------------------------------------------------
# The backports suites come from the same mirror the machine already uses.
# Debian pins backports at priority 100, so adding them upgrades nothing.
BACKPORTS_LIST=/etc/apt/sources.list.d/sivshm-backports.sources
apt_mirror_uri() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/security/ {
			for (i = 1; i <= NF; i++) if ($i == "URIs:") { print $(i+1); exit } }' "$f"
	done | head -n1
	{ grep -hE '^deb +[^ ]+ +bookworm +' /etc/apt/sources.list 2>/dev/null || true; } | awk '{print $2}' | head -n1
}

apt_updated=0
apt_update() { [ $apt_updated = 1 ] || { say "apt-get update"; apt-get update -qq >&2 || die "apt-get update failed"; apt_updated=1; }; }
# apt-get install, quiet unless it fails.
apt_install() {
	local log; log=$(mktemp)
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1; then
		tail -n 30 "$log" >&2; rm -f "$log"
		return 1
	fi
	rm -f "$log"
}

if [ ! -f "$BACKPORTS_LIST" ]; then
	uri=$(apt_mirror_uri | head -n1)
	[ -n "$uri" ] || die "cannot find the Debian mirror URI in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
	say "adding bookworm-backports and trixie-backports from $uri"
	cat > "$BACKPORTS_LIST" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	apt_update
fi

# libvirt-clients and libxml2-utils: virt-xml-validate, which checks `sivshm-host libvirt-xml`.
# dkms and udev: the DKMS build and the udev rule's checks (scripts/check-dkms.sh, check-udev.sh).
missing=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' || missing+=("$1"); }
for p in rustc-web rust-web-src libclang-$LLVM_VERSION-dev bc bison flex libelf-dev libssl-dev \
	cpio dwarves busybox-static gzip make gcc libc6-dev xz-utils rust-web-clippy rustfmt-web \
	python3-docutils libvirt-clients libxml2-utils dkms udev; do
	need_pkg "$p"
done
# The KASAN variant is built by clang (see kernel/sivshm-guest-kasan.config).
if [ -n "$SIVSHM_KERNEL_VARIANT" ]; then
	for p in clang-$LLVM_VERSION lld-$LLVM_VERSION llvm-$LLVM_VERSION; do
		need_pkg "$p"
	done
fi
if [ ${#missing[@]} -gt 0 ]; then
	apt_update
	say "installing: ${missing[*]}"
	apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed"
fi

qemu_ok() { command -v qemu-system-x86_64 >/dev/null && qemu-system-x86_64 --version | grep -qE 'version (9|[1-9][0-9])\.'; }
if ! qemu_ok; then
	apt_update
	say "installing qemu-system-x86 from bookworm-backports"
	apt_install -t bookworm-backports qemu-system-x86 \
		|| die "qemu-system-x86 from bookworm-backports could not be installed"
	qemu_ok || die "qemu-system-x86_64 is missing or older than 9.0 after install"
fi

# --- bindgen ---------------------------------------------------------------
if [ ! -x "$BINDGEN" ]; then
	say "building bindgen-cli $BINDGEN_VERSION with cargo install (about 90 s)"
	cargo install bindgen-cli --version "$BINDGEN_VERSION" --locked \
		--root "$SIVSHM_CACHE/bindgen-$BINDGEN_VERSION" >&2 || die "cargo install bindgen-cli failed"
fi

# --- kernel source ----------------------------------------------------------
if ! src=$(kernel_src_dir); then
	apt_update
	tmp=$(mktemp -d "$SIVSHM_CACHE/dl.XXXXXX")
	# apt drops privileges to _apt for downloads; let it write here.
	chown _apt "$tmp" 2>/dev/null || true
	say "downloading linux-source-$KERNEL_SERIES from trixie-backports"
	(cd "$tmp" && apt-get download -qq "linux-source-$KERNEL_SERIES" >&2) \
		|| die "apt-get download linux-source-$KERNEL_SERIES failed (is trixie-backports reachable?)"
	deb=$(ls "$tmp"/linux-source-"$KERNEL_SERIES"_*.deb)
	say "using $(basename "$deb")"
	dpkg-deb -x "$deb" "$tmp/x"
	mkdir -p "$SIVSHM_CACHE/src"
	tar -C "$SIVSHM_CACHE/src" -xJf "$tmp"/x/usr/src/linux-source-"$KERNEL_SERIES".tar.xz
	basename "$deb" > "$SIVSHM_CACHE/src/PACKAGE"
	rm -rf "$tmp"
	src=$(kernel_src_dir) || die "kernel source did not unpack as expected"
fi

# --- kernel build -----------------------------------------------------------
kb=$(kernel_build_dir "$src")
if [ ! -f "$kb/.sivshm-built" ]; then
	mkdir -p "$SIVSHM_CACHE/kbuild"
	exec 9>"$SIVSHM_CACHE/kbuild/.lock"
	# Objects of the last complete build: what a build's progress is measured against.
	objects_file=$SIVSHM_CACHE/kbuild/objects${SIVSHM_KERNEL_VARIANT:+-$SIVSHM_KERNEL_VARIANT}
	expected=$(cat "$objects_file" 2>/dev/null || echo 0)
	count_objects() { find "$kb" -name '*.o' 2>/dev/null | wc -l; }
	if ! flock -n 9; then
		# Another process builds this kernel: show its progress while waiting for it.
		say "waiting for the kernel build lock (another process builds $kb)"
		flock 9 & waiter=$!
		progress_while "$waiter" "kernel build (another process)" "$expected" count_objects
		wait "$waiter"
	fi
	if [ ! -f "$kb/.sivshm-built" ]; then
		say "building kernel $(kernel_version "$src")${SIVSHM_KERNEL_VARIANT:+ ($SIVSHM_KERNEL_VARIANT)} into $kb (about 7 minutes on 2 cores)"
		rm -rf "$kb"; mkdir -p "$kb"
		# shellcheck disable=SC2046
		make -s -C "$src" O="$kb" $(kmake_args) tinyconfig >&2
		# shellcheck disable=SC2046
		"$src"/scripts/kconfig/merge_config.sh -m -O "$kb" "$kb/.config" \
			$(kernel_fragments) >/dev/null
		# shellcheck disable=SC2046
		make -s -C "$src" O="$kb" $(kmake_args) olddefconfig >&2
		bad=0
		while IFS= read -r line; do
			case "$line" in CONFIG_*=n) o=${line%=n}; grep -q "^$o=" "$kb/.config" && { say "$o is set, wanted off"; bad=1; } ;;
			CONFIG_*) grep -qx "$line" "$kb/.config" || { say "$line did not stick"; bad=1; } ;; esac
		done < <(cat $(kernel_fragments))
		[ $bad = 0 ] || die "kernel config is missing options (for CONFIG_RUST: check 'make rustavailable')"
		start=$(date +%s)
		# shellcheck disable=SC2046
		make -C "$src" O="$kb" $(kmake_args) -j"$(( $(nproc) + 1 ))" bzImage modules >"$kb/build.log" 2>&1 &
		builder=$!
		progress_while "$builder" "kernel build: objects" "$expected" count_objects
		wait "$builder" || { tail -n 40 "$kb/build.log" >&2; die "kernel build failed (log: $kb/build.log)"; }
		say "kernel built in $(( $(date +%s) - start )) s"
		count_objects >"$objects_file"
		touch "$kb/.sivshm-built"
	fi
	exec 9>&-
else
	say "reusing cached kernel build $kb"
fi
echo "$kb"
