#!/usr/bin/env bash
# The main job: boots a data manager VM and N worker VMs in QEMU, each worker on a shared-
# memory segment of its own, and moves data from the manager to every worker, verifying it.
# Installs what is missing first (scripts/setup.sh) and reuses every cache.
#
#   scripts/demo.sh [--workers N] [--segment-mib M] [--rounds R] [--bytes B] [--accel auto|tcg|kvm]
set -euo pipefail
. "$(dirname "$0")/common.sh"
cd "$SIVSHM_ROOT"
kb=$("$SIVSHM_ROOT/scripts/setup.sh" | tail -n1)
[ -f "$kb/arch/x86/boot/bzImage" ] || die "setup did not produce a guest kernel"
initrd=$(build_guest "$kb" "$(kernel_src_dir)")
cargo build --release -q -p sivshm-host
exec target/release/sivshm-host demo --kernel "$kb/arch/x86/boot/bzImage" --initrd "$initrd" \
	--cache "$SIVSHM_CACHE" --logdir build/logs "$@"
