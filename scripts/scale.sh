#!/usr/bin/env bash
# The scale and life-cycle benchmark (long under TCG; figures, run by hand, not in CI).
# Installs what is missing and reuses caches.
#
#   scripts/scale.sh [--what alone|booted|churn|all] [--accel auto|tcg|kvm]
#     alone:  a manager with 128 worker channels (4 PCI bridges) booted alone: nodes,
#             MSI-X vectors, every address, probe and remove time per device
#     booted: a manager and 32, then 64 workers booted (8 at a time) and fed data (96 MiB a
#             worker)
#     churn:  the hotplug scenario with 100 add/remove cycles of one worker channel
#     all (the default): the three, one after the other
set -euo pipefail
# Its guests run no iceoryx2 program (common.sh, build_guest).
GUEST_IOX2=0
. "$(dirname "$0")/common.sh"
what=all accel=auto
while [ $# -gt 0 ]; do
	case "$1" in
	--what) what=$2; shift 2 ;;
	--accel) accel=$2; shift 2 ;;
	*) die "unknown argument $1 (see the header of $0)" ;;
	esac
done
case "$what" in alone|booted|churn|all) ;; *) die "--what is alone, booted, churn or all" ;; esac
prepare_lab
LAB_ARGS+=(--accel "$accel")
# results LOG ARGS...: the SIVSHM-RESULT lines of LOG (sivshm-lab results ARGS).
results() { "$LAB" results "$@"; }
if [ "$what" = alone ] || [ "$what" = all ]; then
	lab scale --workers 128 --timeout 1200
fi
if [ "$what" = booted ] || [ "$what" = all ]; then
	for n in 32 64; do
		t0=$SECONDS
		log=$SIVSHM_ROOT/build/scale-demo-$n.log
		lab demo --workers "$n" --segment-mib 1 --rounds 4 --memory-mib 96 --timeout 3000 --boot-wave 8 \
			>"$log" || echo "# the demo with $n workers failed: $log"
		# What the run reports as data: the demo's line and the manager's.
		results "$log" --program lab-demo
		results "$SIVSHM_ROOT/build/logs/manager.log" --program distribute-manager
		echo "# a manager and $n workers booted, fed and powered off in $((SECONDS - t0)) s"
	done
fi
if [ "$what" = churn ] || [ "$what" = all ]; then
	lab test --filter hotplug --churn 100 --timeout 3000 >"$SIVSHM_ROOT/build/scale-churn.tap" ||
		echo "# the churn run failed: build/scale-churn.tap"
	results "$SIVSHM_ROOT/build/scale-churn.tap" --program lab-test
	results "$SIVSHM_ROOT/build/logs/manager.log" --program hotplug-churn
fi
