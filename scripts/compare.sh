#!/usr/bin/env bash
# SIVSHM against IVSHMEM, measured in one run (figures, never pass/fail). Installs what is
# missing and reuses caches.
#
#   scripts/compare.sh --what throughput [--workers N] [--rounds R] [--segment-mib M] [--repeats K]
#       the distribution job on both topologies, interleaved; prints the SIVSHM/IVSHMEM ratio
#   scripts/compare.sh --what boot [--workers 1,2,4,8,16] [--repeats K]
#       a manager and N workers launched at once, with no device (the floor), on IVSHMEM's
#       central server and pre-wired by SIVSHM; launch to every guest's driver probed
set -euo pipefail
# Its guests run no iceoryx2 program (common.sh, build_guest).
GUEST_IOX2=0
. "$(dirname "$0")/common.sh"
run_lab compare "$@"
