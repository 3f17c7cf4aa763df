#!/usr/bin/env bash
# The long adversarial runs (the CI run has short budgets of the same scenarios): the in-guest
# fuzzer with 100,000 operations, 1000 unbind/bind cycles, a 60 s hostile storm. Installs what
# is missing and reuses caches. On the KASAN guest kernel (a second kernel build, about 10
# minutes the first time):
#
#   SIVSHM_KERNEL_VARIANT=kasan scripts/stress.sh
#
#   scripts/stress.sh [--filter stress-fuzz|stress-hostile-peer]
#                     [--fuzz-ops N] [--fuzz-seconds S] [--seed N] [--cycles N]
#                     [--storm-seconds S] [--accel auto|tcg|kvm]
# Ends with the line "# guest tests: N passed, N failed"; the fuzzer's seed and figures are in
# build/logs/ (grep '^# ' in the guest logs); the storm's cost to the victim's CPU is drawn
# in build/storm.svg (from the victim's SIVSHM-RESULT hostile-storm line).
set -euo pipefail
# Its guests run no iceoryx2 program (common.sh, build_guest).
GUEST_IOX2=0
. "$(dirname "$0")/common.sh"
filter=stress fuzz_ops=100000 fuzz_seconds=3600 cycles=1000 storm=60 extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--filter) filter=$2 ;;
	--fuzz-ops) fuzz_ops=$2 ;;
	--fuzz-seconds) fuzz_seconds=$2 ;;
	--cycles) cycles=$2 ;;
	--storm-seconds) storm=$2 ;;
	--seed|--accel) extra+=("$1" "$2") ;;
	*) die "unknown argument $1 (see the header of $0)" ;;
	esac
	shift 2
done
# KASAN's shadow memory: give the guests more room.
run_lab test --filter "$filter" --fuzz-ops "$fuzz_ops" --fuzz-seconds "$fuzz_seconds" \
	--cycles "$cycles" --storm-seconds "$storm" --storm-plot "$SIVSHM_ROOT/build/storm.svg" --timeout $((fuzz_seconds + 3600)) \
	--memory-mib 512 --verbose "${extra[@]}"
