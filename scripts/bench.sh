#!/usr/bin/env bash
# Benchmarks (figures, never pass/fail). Installs what is missing and reuses caches.
#
#   scripts/bench.sh [--exchanges N] [--accel auto|tcg|kvm]
#     doorbell ping-pong between two VMs next to an eventfd ping-pong in one VM
set -euo pipefail
. "$(dirname "$0")/common.sh"
cd "$SIVSHM_ROOT"
kb=$("$SIVSHM_ROOT/scripts/setup.sh" | tail -n1)
[ -f "$kb/arch/x86/boot/bzImage" ] || die "setup did not produce a guest kernel"
initrd=$(build_guest "$kb" "$(kernel_src_dir)")
cargo build --release -q -p sivshm-host
exec target/release/sivshm-host bench --kernel "$kb/arch/x86/boot/bzImage" --initrd "$initrd" \
	--cache "$SIVSHM_CACHE" --logdir build/logs "$@"
