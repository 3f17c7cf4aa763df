#!/usr/bin/env bash
# Benchmarks (figures, never pass/fail). Installs what is missing and reuses caches.
#
#   scripts/bench.sh [--exchanges N] [--accel auto|tcg|kvm]
#     doorbell ping-pong between two VMs next to an eventfd ping-pong in one VM
set -euo pipefail
. "$(dirname "$0")/common.sh"
run_host bench "$@"
