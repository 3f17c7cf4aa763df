#!/bin/bash
# The per-message cost of the channel on this host, no VM: channel-local (the channel between
# two threads over a memfd), rtrb (an SPSC ring crate, same messages), shm-copy (the sender's
# copy alone) and memcpy, each run RUNS times; prints every line, then the median and spread
# (min..max) of msgs/s per transport and size and the ratios of channel-local's medians to
# shm-copy's and rtrb's.
#
#   scripts/bench-local.sh [RUNS] [SECONDS] [SIZES]      (defaults: 3 1 64,4096,65536,1048576)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-1}
sizes=${3:-64,4096,65536,1048576}
cargo build --release -q -p sivshm-probe
probe=${CARGO_TARGET_DIR:-target}/release/sivshm-probe
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), nproc $(nproc), $(free -g | awk '/^Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$runs"); do
    for t in channel-local rtrb shm-copy memcpy; do
        "$probe" throughput --transport "$t" --sizes "$sizes" --seconds "$seconds" | tee -a "$out"
    done
done
python3 - "$out" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"throughput (\S+): size=(\d+) .* msgs_s=(\d+)", line)
    if m:
        runs.setdefault((m[1], int(m[2])), []).append(int(m[3]))
med = {k: statistics.median(v) for k, v in runs.items()}
def fmt(n):
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"
print(f"{'transport':<14}{'size':>8}  {'median msgs/s':>14}  {'spread (min..max)':>22}  {'MiB/s':>8}")
for (t, size), v in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{t:<14}{size:>8}  {fmt(med[(t, size)]):>14}  {fmt(min(v)) + '..' + fmt(max(v)):>22}  {med[(t, size)] * size / 2**20:>8.0f}")
for size in sorted({s for _, s in runs}):
    c = med.get(("channel-local", size))
    parts = [f"{ref} {c / med[(ref, size)]:.2f}" for ref in ("shm-copy", "rtrb") if c and med.get((ref, size))]
    print(f"channel-local / size {size}: " + ", ".join(parts))
PY
