#!/usr/bin/env bash
# Benchmarks (figures, never pass/fail). Installs what is missing and reuses caches.
#
#   scripts/bench.sh [--what pingpong|channel|all] [--exchanges N] [--accel auto|tcg|kvm]
#                    [--round-trips N] [--seconds S] [--sizes 64,4096,...]
#                    [--spin-us N] [--spin-max-us N]
#     pingpong: doorbell ping-pong between two VMs next to an eventfd ping-pong in one VM
#     channel:  the sivshm channel against TCP over virtio-net between the same two VMs,
#               with the in-VM memcpy ceiling, the shm-copy reference (the sender's copy
#               alone) and the pipe floor, as one table; --spin-us, --spin-max-us set the
#               channel's spin on both VMs
#     all (the default): both
set -euo pipefail
. "$(dirname "$0")/common.sh"
run_host bench "$@"
