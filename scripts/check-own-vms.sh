#!/usr/bin/env bash
# check-own-vms.sh KERNEL INITRD: sivshm with VMs started the way a user starts their own.
#
# A topology file (a manager, workers w0 and w1) served by `sivshm-host serve`, and three
# QEMUs started here from plain command lines: the user's own options plus what
# `sivshm-host qemu-args` prints for that VM (nothing of the harness's spawning code). The
# manager streams paced batches to both workers over the channel, with doorbells, and
# `--rejoin`. Once w1 has answered batches, its QEMU is killed (SIGKILL, as a crash) and,
# after the manager has reported it stopped, started again: the new w1 must take over the
# channel where the old one stopped. Meanwhile a third worker, w2, is added while
# everything runs: the topology file gains it, serve reloads it (SIGHUP), `sivshm-host
# hotplug add` plugs its channel into the running manager over the manager's QMP socket
# (named in the file; qemu-args gives the manager its -qmp), and w2's QEMU boots from
# qemu-args. The manager, never restarted, must verify every batch of all three workers.
# Then SIGTERM ends serve, which must remove its sockets.
#
# Needs the product (target/release/sivshm-host, for serve and qemu-args), the lab
# (target/release/sivshm-lab, for the accelerator it picks and to read the programs'
# SIVSHM-RESULT lines) and the guest initramfs
# (scripts/test.sh builds both first).
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# = 2 ] || die "usage: check-own-vms.sh KERNEL INITRD"
kernel=$1 initrd=$2
host=$SIVSHM_ROOT/target/release/sivshm-host
lab=$LAB
[ -x "$host" ] || die "$host is not built (cargo build --release -p sivshm-host)"
[ -x "$lab" ] || die "$lab is not built (cargo build --release -p sivshm-lab)"
[ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel $kernel or initramfs $initrd"
# The accelerator the harness uses here (KVM only where a probe boot works): a user's line
# would say -accel kvm, but a host where KVM hangs must not hang this check.
accel=$("$lab" accel --kernel "$kernel" --initrd "$initrd" --cache "$SIVSHM_CACHE" \
	--logdir "$SIVSHM_ROOT/build/logs")

t=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}" ${serve:+"$serve"}; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$t"
}
trap cleanup EXIT
started=$(date +%s)
deadline=$((started + 420))

# Fails the check with the logs that explain it (common.sh).
fail() { check_fail own-vms "$*" "$t"/*.log; }
# status [--device NAME] [--get KEY]: what serve reports (sivshm-host status).
status() { serve_status "$host" "$t/own.toml" "$@"; }
# setups DEVICE: setup streams serve sent whole to DEVICE's clients.
setups() { status --device "$1" --get setups || echo none; }

cat >"$t/own.toml" <<EOF
name = "own"
runtime_dir = "$t/run"
user = "$(id -u)"
group = "$(id -g)"

[manager]
name = "mgr"
qmp = "$t/mgr.qmp"

[[worker]]
name = "w0"
segment_mib = 2

[[worker]]
name = "w1"
segment_mib = 2
EOF
# The file once w2 is added (serve reloads it mid-run).
cp "$t/own.toml" "$t/own-with-w2.toml"
printf '\n[[worker]]\nname = "w2"\nsegment_mib = 2\n' >>"$t/own-with-w2.toml"

# serve is the product: it says when it is ready by its status (and to systemd).
start_serve "$host" "$t/own.toml"

# boot VM LOG COMMAND: the user's QEMU command line for VM, its devices from qemu-args; the
# QEMU's pid in $booted.
boot() {
	local vm=$1 log=$2 run=$3 devices
	devices=$("$host" qemu-args "$t/own.toml" "$vm")
	# The paths here need no shell quoting; qemu-args would quote any that did.
	case "$devices" in *"'"*) fail "unexpected quoting in qemu-args: $devices" ;; esac
	# shellcheck disable=SC2086 # one word per argument, as printed
	qemu-system-x86_64 -M pc -accel "$accel" -m 256 -smp 1 -nodefaults -no-user-config \
		-display none -no-reboot -serial "file:$log" -kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 SIVSHM_RUN=\"$run\"" $devices \
		</dev/null >>"$t/qemu-$vm.log" 2>&1 &
	booted=$!
	pids+=("$booted")
}

# The manager's device for worker i sits at slot 4 + i (Documentation/own-vms.rst, "Using sivshm with your own
# VMs"); read it back from qemu-args rather than trusting that.
bdfs=$("$host" qemu-args "$t/own.toml" mgr | sed -n 's/.*id=sivshm-\(w[01]\),.*addr=0x\([0-9a-f]*\)\.0.*/\1 \2/p' |
	sort | while read -r _ slot; do printf '0000:00:%02x.0,' "0x$slot"; done)
bdfs=${bdfs%,}
[ "$(echo "$bdfs" | tr ',' '\n' | grep -c .)" = 2 ] || fail "qemu-args mgr did not give two devices: $bdfs"
# w2's device in the manager, where hotplug will put it: read back from the later file.
w2_bdf=$("$host" qemu-args "$t/own-with-w2.toml" mgr | sed -n 's/.*id=sivshm-w2,.*addr=0x\([0-9a-f]*\)\.0.*/\1/p' |
	while read -r slot; do printf '0000:00:%02x.0' "0x$slot"; done)
[ -n "$w2_bdf" ] || fail "qemu-args of the later file gave the manager no device for w2"

# The manager serves w2 from when its device appears (--late).
boot mgr "$t/mgr.log" "sivshm-distribute manager --workers $bdfs,$w2_bdf --late --rounds 60 --bytes 65536 --pace-ms 100 --rejoin --peer-timeout 3 --timeout 240"
mgr=$booted
boot w0 "$t/w0.log" "sivshm-distribute worker --only-device --timeout 240"
boot w1 "$t/w1-first.log" "sivshm-distribute worker --only-device --timeout 240 --progress 5"
w1=$booted

# The first w1 answers batches, then its QEMU dies.
until_deadline "round 10 from the first w1" \
	has_result "$t/w1-first.log" distribute-worker-progress impl=rust round=10
kill -9 "$w1"
wait "$w1" 2>/dev/null || true
echo "# w1 killed after $(($(date +%s) - started)) s"
# w2 added while everything runs: the file edited, serve reloaded, the manager's device
# plugged in over QMP, w2's QEMU started. w0 and the manager see nothing of it but w2.
cp "$t/own-with-w2.toml" "$t/own.toml"
kill -HUP "$serve"
reloaded_w2() { [ "$(status --get reloads)/$(status --get workers)" = 1/w0,w1,w2 ]; }
until_deadline "serve's reload adding w2" reloaded_w2
"$host" hotplug add "$t/own.toml" --worker w2 >"$t/hotplug.out" 2>&1 ||
	fail "hotplug add w2: $(cat "$t/hotplug.out")"
# Where the device landed is proven below: the manager, told to serve w2 at $w2_bdf, must
# verify every batch of w2's.
echo "# w2 added and plugged into the manager after $(($(date +%s) - started)) s"
boot w2 "$t/w2.log" "sivshm-distribute worker --only-device --timeout 240"
until_deadline "report of w1 stopped from the manager" \
	has_result "$t/mgr.log" distribute-manager-event impl=rust index=1 event=stopped
# The same command line again: serve gives the new QEMU the same segment and doorbells.
boot w1 "$t/w1-second.log" "sivshm-distribute worker --only-device --timeout 240 --progress 5"
for log in mgr w0 w1-second w2; do
	until_deadline "end of $log's command" ended "$t/$log.log"
done
echo "# manager done after $(($(date +%s) - started)) s"

ended_ok "$t/mgr.log" || fail "the manager failed"
ended_ok "$t/w0.log" || fail "w0 failed"
ended_ok "$t/w2.log" || fail "w2, added by a reload and hot-plugged, failed"
ended_ok "$t/w1-second.log" || fail "the restarted w1 failed"
# The manager was never restarted: its one QEMU, started first, booted once and ended by
# itself when the run was done.
[ "$(grep -c SIVSHM-BOOTED "$t/mgr.log")" = 1 ] || fail "the manager booted more than once"
wait "$mgr" || fail "the manager's QEMU exited with $?"
# What the programs report as data (SIVSHM-RESULT lines, parsed by the lab: `result`).
mgr_result() { result "$t/mgr.log" distribute-manager "$1" impl=rust; }
[ "$(mgr_result verified)/$(mgr_result batches)" = 180/180 ] ||
	fail "not every batch was verified ($(mgr_result verified) of $(mgr_result batches))"
[ "$(mgr_result restarts)" = 1 ] || fail "the manager did not see w1 restart ($(mgr_result restarts))"
# w1 came back at least once: a worker that boots later than the peer timeout is also
# reported stopped and then re-attached before its first round, so more than one is fine.
w1_back=$(result "$t/mgr.log" distribute-manager-worker reattached impl=rust index=1)
[ "$w1_back" != none ] && [ "$w1_back" -ge 1 ] || fail "the manager did not report w1 back"
# Each worker saw only its own device; the second w1 took over mid-stream.
w1_result() { result "$t/w1-second.log" distribute-worker "$1" impl=rust; }
[ "$(w1_result devices)" = 1 ] || fail "w1 saw other devices ($(w1_result devices))"
[ "$(w1_result took_over)" = 1 ] || fail "the new w1 started from round $(w1_result first_round)"
# Doorbells crossed both ways: the manager was woken, the workers were woken.
mw=$(mgr_result wakeups) mr=$(mgr_result rings) ww=$(w1_result woken)
[ "$mw" != none ] && [ "$mw" -gt 0 ] && [ "$mr" != none ] && [ "$mr" -gt 0 ] ||
	fail "no doorbells between manager and workers ($mw wake-ups, $mr rings)"
[ "$ww" != none ] && [ "$ww" -gt 0 ] || fail "the new w1 was never woken by a doorbell"
# Every device of every VM, wired as qemu-args prints it, is write-back (guest/init's
# SIVSHM-MEMTYPE lines: the driver's GET_INFO and the PAT's pat_memtype_list).
for log in "$t/mgr.log" "$t/w0.log" "$t/w1-second.log" "$t/w2.log"; do
	why=$(all_write_back "$log") || fail "$(basename "$log"): $why"
done
[ "$(results_count "$t/mgr.log" memtype)" = 2 ] || fail "the manager did not report both devices' memory type"
# As serve reports it: w1's device got its setup twice, and nothing else was sent for it.
[ "$(setups w1.mgr)" = 2 ] || fail "serve sent w1's setup $(setups w1.mgr) times, not twice"
[ "$(setups mgr.w1)" = 1 ] || fail "the manager's device for w1 was set up $(setups mgr.w1) times"
# The reload touched no running device: the manager's device for w0 was set up once, and
# its device for w2 (peer id 3) once, by the hot-plug.
[ "$(setups mgr.w0)" = 1 ] || fail "the manager's device for w0 was set up $(setups mgr.w0) times"
[ "$(setups mgr.w2)/$(status --device mgr.w2 --get peer_id)" = 1/3 ] ||
	fail "the manager's hot-plugged device for w2: $(status --device mgr.w2)"
# Every one of w2's batches verified: the manager's report for worker index 2.
w2_ok=$(result "$t/mgr.log" distribute-manager-worker verified impl=rust index=2)
[ "$w2_ok" = 60 ] || fail "the manager verified $w2_ok of w2's 60 batches"

kill -TERM "$serve"
wait "$serve" || fail "serve exited with $? on SIGTERM"
# The lock file stays by design (its flock goes with the process); the sockets must not.
left=$(ls -A "$t/run" | grep -vx serve.lock || true)
[ -z "$left" ] || fail "serve left $left behind"
for log in "$t/mgr.log" "$t/w1-second.log" "$t/w2.log"; do "$lab" results "$log"; done
echo "# own VMs: done in $(($(date +%s) - started)) s"
