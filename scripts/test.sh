#!/usr/bin/env bash
# The project's test command. Installs what is missing (scripts/setup.sh), builds the module,
# the kselftests, the product (sivshm-host) and the lab (sivshm-lab), runs the host-side
# tests and the in-guest kselftests in QEMU, and ends with the line "N passed, N failed".
#
#   scripts/test.sh [--filter SCENARIO] [--accel auto|tcg|kvm]
set -uo pipefail
. "$(dirname "$0")/common.sh"
cd "$SIVSHM_ROOT" || exit 1
# The suite's release builds are incremental: every run of a fresh clone compiles the
# workspace's own crates again (cargo judges them by file times), and rustc's incremental
# cache, kept with the other artifacts in the cargo cache (common.sh), lets it reuse what did
# not change. The code is a little slower that way; the suite times nothing, and the
# benchmarks (scripts/bench.sh) build without it.
export CARGO_PROFILE_RELEASE_INCREMENTAL=true

host_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--filter|--accel) host_args+=("$1" "$2"); shift 2 ;;
	*) die "unknown argument $1 (see the header of $0)" ;;
	esac
done

pass=0 fail=0
started=$(date +%s)
elapsed() { echo "$(( $(date +%s) - started )) s"; }
check() {
	local name=$1 t0; shift
	t0=$(date +%s)
	if "$@" >"$SIVSHM_ROOT/build/check.log" 2>&1; then
		pass=$((pass + 1)); echo "ok - $name"
	else
		fail=$((fail + 1)); echo "not ok - $name"; sed 's/^/#   /' "$SIVSHM_ROOT/build/check.log" | tail -n 40
	fi
	# Where a run's time goes (the warm run is to stay under 5 minutes).
	echo "#   ($(( $(date +%s) - t0 )) s)"
}
finish() {
	echo "# total time $(elapsed)"
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
}
mkdir -p build

if ! kb=$(setup_kernel); then
	echo "not ok - setup (toolchain, kernel source and guest kernel)"
	fail=$((fail + 1)); finish
fi
src=$(kernel_src_dir)
say "setup ready after $(elapsed): kernel build $kb"

check "sivshm.ko builds with no warnings" build_module "$kb"
check "sivshm.ko builds with no warnings under CLIPPY=1" build_module "$kb" CLIPPY=1
check "driver is rustfmt-clean (kernel .rustfmt.toml)" \
	"$KRUSTFMT" --edition 2021 --config-path "$src/.rustfmt.toml" --check sivshm.rs
check "user-space crates are rustfmt-clean" cargo fmt --all --check
check "user-space crates are clippy-clean" cargo clippy --release --workspace --all-targets -- -D warnings
check "Documentation/ is warning-free reStructuredText" /usr/bin/python3 scripts/check-docs.py
check "dkms add, build, install and remove sivshm from dkms.conf against the guest kernel build" \
	scripts/check-dkms.sh "$kb"
check "udev rule: nodes root:sivshm 0660 and /dev/sivshm/by-path/pci-ADDR (udevadm test)" \
	scripts/check-udev.sh
check "make install DESTDIR=...: module, UAPI header, udev rule, sysusers.d; clear refusals" \
	scripts/check-install.sh "$kb"
check "man pages: make -C host install and make install-sivshmctl-docs into a DESTDIR; every page renders with man -l, man finds them by name" \
	scripts/check-man.sh
check "C API: make -C capi install (SONAME libsivshm.so.0, .a, header, sivshm.pc), pkg-config and static builds of the C samples, ASan/UBSan tests with a hostile peer, a removal, C against Rust" \
	scripts/check-capi.sh

# Host-side unit tests: each cargo test counts.
# The iceoryx2 crate's tests are built for the guests' target, with whose build they share
# their (large) dependencies (common.sh, guest_cargo).
cargo test --release --workspace --exclude sivshm-iceoryx2 --no-fail-fast >build/cargo-test.log 2>&1
cargo_rc=$?
guest_cargo test --release -p sivshm-iceoryx2 --no-fail-fast >>build/cargo-test.log 2>&1
ipc_rc=$?
[ "$cargo_rc" = 0 ] && cargo_rc=$ipc_rc
# One line per test, "test NAME ... ok|FAILED|ignored" (libtest's format): each counts.
grep -E '^test .* (ok|FAILED|ignored)$' build/cargo-test.log | sed 's/^/# cargo: /'
cp=$(grep -cE '^test .* ok$' build/cargo-test.log)
cf=$(grep -cE '^test .* FAILED$' build/cargo-test.log)
if [ "$cargo_rc" != 0 ] && [ "$cf" = 0 ]; then
	# cargo failed without a failing test line: a build error or a crashed test binary.
	sed 's/^/#   /' build/cargo-test.log | tail -n 30
	cf=1
fi
pass=$((pass + cp)); fail=$((fail + cf))
echo "# host tests: $cp passed, $cf failed (at $(elapsed))"

# In-guest kselftests.
if ! initrd=$(build_guest "$kb" "$src"); then
	echo "not ok - guest build (module, selftests, initramfs)"
	fail=$((fail + 1)); finish
fi
if ! cargo build --release -q -p sivshm-host -p sivshm-lab; then
	echo "not ok - sivshm-host and sivshm-lab build"
	fail=$((fail + 1)); finish
fi
check "own VMs: QEMU command lines from qemu-args against serve; a worker's QEMU killed and started again mid-run, a third worker added by a reload of serve and hot-plugged into the running manager, the manager carries on" \
	scripts/check-own-vms.sh "$kb/arch/x86/boot/bzImage" "$initrd"
check "libvirt: three TCG domains from libvirt-xml started by virsh, the job verified; a worker's device detached and attached again live, the manager's QEMU killed and its domain started again, no worker restarted; everything undefined" \
	scripts/check-libvirt.sh "$kb/arch/x86/boot/bzImage" "$initrd"
echo "# guest tests start at $(elapsed)"
lab_args "$kb" "$initrd"
lab test "${host_args[@]}" | tee build/guest-tests.tap
host_rc=${PIPESTATUS[0]}
# The run's counts as data: its SIVSHM-RESULT lab-test line.
gp=$("$LAB" results build/guest-tests.tap --program lab-test --get passed 2>/dev/null)
gf=$("$LAB" results build/guest-tests.tap --program lab-test --get failed 2>/dev/null)
if [ -z "${gp:-}" ]; then
	echo "not ok - guest test run produced a summary"
	gp=0 gf=1
elif [ "$host_rc" != 0 ] && [ "$gf" = 0 ]; then
	echo "not ok - sivshm-lab test exited with $host_rc (no scenario ran?)"
	gf=1
fi
pass=$((pass + gp)); fail=$((fail + gf))
finish
