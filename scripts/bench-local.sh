#!/usr/bin/env bash
# The channel between two threads of this machine against its in-process references, no
# guest: `sivshm-lab local-bench` runs sivshm-probe's channel-local, rtrb, shm-copy and
# memcpy transports RUNS times and prints each median message rate, its spread and the
# channel's ratios (read from the probe's SIVSHM-RESULT lines).
#
#   scripts/bench-local.sh [RUNS] [SECONDS] [SIZES]      (defaults: 3 1 64,4096,65536,1048576)
set -euo pipefail
. "$(dirname "$0")/common.sh"
cd "$SIVSHM_ROOT"
runs=${1:-3}
seconds=${2:-1}
sizes=${3:-64,4096,65536,1048576}
cargo build --release -q -p sivshm-probe -p sivshm-lab
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), nproc $(nproc), $(free -g | sed -n 's/^Mem: *\([0-9]*\).*/\1/p') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$LAB" local-bench --probe target/release/sivshm-probe --runs "$runs" --seconds "$seconds" --sizes "$sizes"
