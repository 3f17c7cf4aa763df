#!/usr/bin/env bash
# Benchmarks (figures, never pass/fail). Installs what is missing and reuses caches.
#
#   scripts/bench.sh [--what pingpong|channel|all] [--exchanges N] [--accel auto|tcg|kvm]
#                    [--round-trips N] [--seconds S] [--sizes 64,4096,...]
#                    [--spin-us N] [--spin-max-us N]
#     pingpong: doorbell ping-pong between two VMs next to an eventfd ping-pong in one VM
#     channel:  the sivshm channel against TCP over virtio-net and vsock (vhost-device-vsock,
#               installed into the cache on first use; --no-vsock leaves it out) between
#               the same two VMs,
#               with the in-VM memcpy ceiling, the shm-copy reference (the sender's copy
#               alone) and the pipe floor, as one table; --spin-us, --spin-max-us set the
#               channel's spin on both VMs
#     iox2:     iceoryx2 between the two VMs through the sivshm gateways (ipc/) against the
#               same through the zenoh gateways (TCP over virtio-net) and against two
#               processes of one VM (the ceiling): throughput at --sizes, round trips of 64 B
#               (--round-trips), the ratios and issue 28's targets (MET/MISSED); the run is
#               written as build/iox2.json (--json FILE.json). --window N: samples in flight
#               while streaming, the same on every path (default 32). Not part of `all`.
#     all (the default): pingpong and channel
#   The channel table is also drawn as build/channel.svg (messages/s against size per
#   transport, and sivshm's ratio to each) unless --plot FILE.svg says where, and the run
#   written as build/channel.json (--json FILE.json; Documentation/results-json.rst), from
#   which `sivshm-lab plot --from build/channel.json --svg X.svg` makes the tables and plot
#   again. --c-sizes 65536,1048576 (the default) also runs the C path (libsivshm) at those
#   sizes, beside the Rust path, with the ratio.
#
#   scripts/bench.sh --what realise [--workers 1,2,4,8,16,32,64] [--runs N]
#                    [--modes sivshm,ivshmem,none] [--accel tcg|kvm] [--segment-mib M]
#     realise: a manager and N workers launched paused (-S, no guest, no kernel needed), from
#              the launch to every QEMU answering QMP with its ivshmem devices realised:
#              pre-wired (SIVSHM), on the central server (IVSHMEM) and with no device (the
#              floor); `sivshm-lab realise-bench`. Not part of `all`. Writes
#              build/realise.svg and build/realise.json unless --plot, --json say where.
#
#   scripts/bench.sh --what adapt [--cycles N] [--bursts N] [--burst-kib K] [--min-kib K]
#                    [--max-kib K]
#     adapt: one worker's segment that follows a varying load (heavy phases of bursts, idle
#            phases of a trickle) against a fixed small (--min-kib) and a fixed large
#            (--max-kib) segment, in one process over memfds (no guest): memory held and
#            throughput of each, as ratios of the fixed large one; `sivshm-distribute
#            adapt-bench`. Not part of `all`.
set -euo pipefail
. "$(dirname "$0")/common.sh"

# realise boots no guest: only the lab (sivshm-lab) is built.
# args: as given; rest: without --what (for the commands that take no --what).
args=() rest=() what= plot= json= vsock=1
while [ $# -gt 0 ]; do
	case $1 in
	--no-vsock) vsock=; shift ;;
	--what) [ $# -ge 2 ] || die "--what needs a value"; what=$2; args+=("$1" "$2"); shift 2 ;;
	--what=*) what=${1#--what=}; args+=("$1"); shift ;;
	--plot|--plot=*) plot=given; args+=("$1"); rest+=("$1"); shift ;;
	--json|--json=*) json=given; args+=("$1"); rest+=("$1"); shift ;;
	*) args+=("$1"); rest+=("$1"); shift ;;
	esac
done
mkdir -p "$SIVSHM_ROOT/build"
if [ "$what" = realise ]; then
	[ -n "$plot" ] || rest+=(--plot "$SIVSHM_ROOT/build/realise.svg")
	[ -n "$json" ] || rest+=(--json "$SIVSHM_ROOT/build/realise.json")
	cargo build --release -q -p sivshm-lab || die "sivshm-lab does not build"
	exec "$LAB" realise-bench ${rest[@]+"${rest[@]}"}
fi
if [ "$what" = adapt ]; then
	cargo build --release -q -p sivshm-distribute || die "sivshm-distribute does not build"
	exec "$SIVSHM_ROOT/target/release/sivshm-distribute" adapt-bench ${rest[@]+"${rest[@]}"}
fi
if [ "$what" = iox2 ]; then
	[ -n "$json" ] || args+=(--json "$SIVSHM_ROOT/build/iox2.json")
	run_lab bench "${args[@]}"
fi
# The channel's plot and JSON (pingpong has neither).
if [ "$what" != pingpong ]; then
	[ -n "$plot" ] || args+=(--plot "$SIVSHM_ROOT/build/channel.svg")
	[ -n "$json" ] || args+=(--json "$SIVSHM_ROOT/build/channel.json")
fi
# vsock between the two VMs beside TCP: the vhost-user backend from crates.io, built once
# into the cache (about 2 minutes on 2 cores).
if [ "$what" != pingpong ] && [ -n "$vsock" ]; then
	vsock_root=$SIVSHM_CACHE/vhost-device-vsock-$VHOST_DEVICE_VSOCK_VERSION
	if [ ! -x "$vsock_root/bin/vhost-device-vsock" ]; then
		say "building vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION with cargo install (about 2 minutes)"
		cargo install vhost-device-vsock --version "$VHOST_DEVICE_VSOCK_VERSION" --locked \
			--root "$vsock_root" >&2 || die "cargo install vhost-device-vsock failed"
	fi
	args+=(--vsock-backend "$vsock_root/bin/vhost-device-vsock")
fi
run_lab bench ${args[@]+"${args[@]}"}
