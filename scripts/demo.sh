#!/usr/bin/env bash
# The main job: boots a data manager VM and N worker VMs in QEMU, each worker on a shared-
# memory segment of its own, and moves data from the manager to every worker, verifying it.
# Installs what is missing first (scripts/setup.sh) and reuses every cache.
#
#   scripts/demo.sh [--mode sivshm|ivshmem] [--workers N] [--segment-mib M] [--rounds R] [--bytes B] [--accel auto|tcg|kvm]
set -euo pipefail
# Its guests run no iceoryx2 program (common.sh, build_guest).
GUEST_IOX2=0
. "$(dirname "$0")/common.sh"
run_lab demo "$@"
