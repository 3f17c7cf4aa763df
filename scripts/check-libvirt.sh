#!/usr/bin/env bash
# check-libvirt.sh KERNEL INITRD: sivshm with VMs that libvirt runs.
#
# Installs Debian's libvirtd and its QEMU driver if missing (scripts/setup-libvirt.sh), starts
# virtlogd and libvirtd itself unless a libvirtd already answers on qemu:///system (this
# machine has no systemd to socket-activate them), and serves a topology (a manager, workers w0
# and w1) whose sockets belong to libvirt-qemu, the user libvirt's QEMU runs as. Three TCG
# domains (type='qemu') are defined from XML that contains what `sivshm-host libvirt-xml`
# prints for each VM, checked by virt-xml-validate, and started with `virsh start`. The
# manager streams paced batches to both workers (`--rejoin --replug`; the workers
# `--wait-for-manager`), and while it runs:
#   1. the manager's device for w1 is detached (`virsh detach-device --live`, the <shmem>
#      element libvirt-xml printed): the manager reports it removed and serves w0 on, w1
#      reports its manager gone; the same element is attached again (`attach-device
#      --live`): the manager asks w1 where it stands and carries it on;
#   2. the manager's QEMU is killed (SIGKILL) and the domain started again (`virsh start`,
#      the same command line): both workers report their manager gone, the new manager takes
#      both channels over (asks each worker where it stands) and ends the run.
# Every batch of both workers reaches them once, in order, and checks out; neither worker
# restarts. Then every domain is destroyed and undefined, serve and the daemons this check
# started are stopped, and nothing is left: the trap does the same on any failure.
#
# Needs the product (target/release/sivshm-host), the lab (target/release/sivshm-lab, to
# read the programs' SIVSHM-RESULT lines) and the guest initramfs (scripts/test.sh builds
# them first). As root.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# = 2 ] || die "usage: check-libvirt.sh KERNEL INITRD"
kernel=$1 initrd=$2
host=$SIVSHM_ROOT/target/release/sivshm-host
lab=$SIVSHM_ROOT/target/release/sivshm-lab
[ -x "$host" ] || die "$host is not built (cargo build --release -p sivshm-host)"
[ -x "$lab" ] || die "$lab is not built (cargo build --release -p sivshm-lab)"
[ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel $kernel or initramfs $initrd"
started=$(date +%s)
install_s=$("$SIVSHM_ROOT/scripts/setup-libvirt.sh" | tail -n1)
echo "# libvirt packages and user ready in $install_s s"

virsh() { command virsh -q -c qemu:///system "$@"; }
# Everything of this run: QEMU (as libvirt-qemu) reads the kernel and initramfs from here
# and connects to the sockets under it, so every directory on the way must let it through.
t=$(mktemp -d /tmp/sivshm-libvirt.XXXXXX)
chmod 0755 "$t"
prefix=sivshm-check-$$
vms=(mgr w0 w1)
daemons=()
cleanup() {
	local vm p
	for vm in "${vms[@]}"; do
		virsh destroy "$prefix-$vm" >/dev/null 2>&1 || true
		virsh undefine "$prefix-$vm" >/dev/null 2>&1 || true
	done
	[ -z "${serve:-}" ] || kill -TERM "$serve" 2>/dev/null || true
	for p in "${daemons[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	for p in "${daemons[@]}"; do
		while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
	done
	rm -rf "$t"
	rm -f /var/log/libvirt/qemu/"$prefix"-*.log
}
trap cleanup EXIT
# A signal ends the script through its EXIT trap too.
trap "exit 143" TERM
trap "exit 130" INT
deadline=$((started + 480))

# Fails the check with the logs that explain it (common.sh).
fail() { check_fail libvirt "$*" "$t"/*.log /var/log/libvirt/qemu/"$prefix"-*.log; }
# count FILE TEXT: lines of FILE containing TEXT (guest/init's marker lines).
count() { grep -cF -- "$2" "$1" 2>/dev/null || true; }
# at_least N COMMAND...: COMMAND prints a number of at least N.
at_least() {
	local n=$1 got
	shift
	got=$("$@")
	[ "$got" != none ] && [ "$got" -ge "$n" ]
}
# What the programs report, as data (common.sh's result helpers).
event() { has_result "$t/mgr.log" distribute-manager-event impl=rust "$@"; }
verified() { result "$t/mgr.log" distribute-manager-progress verified impl=rust index="$1"; }
manager_left() { results_count "$t/$1.log" distribute-worker-event impl=rust event=manager_left; }
# setups DEVICE: setup streams serve sent whole to DEVICE's clients (sivshm-host status).
setups() { serve_status "$host" "$t/own.toml" --device "$1" --get setups || echo none; }

# --- the daemons: the machine's if one answers, else our own --------------------------------
if virsh uri >/dev/null 2>&1; then
	echo "# using the running libvirtd"
else
	/usr/sbin/virtlogd --daemon --pid-file "$t/virtlogd.pid"
	/usr/sbin/libvirtd --daemon --pid-file "$t/libvirtd.pid"
	for f in virtlogd libvirtd; do
		until [ -s "$t/$f.pid" ]; do
			[ "$(date +%s)" -lt "$deadline" ] || fail "$f wrote no pid file"
			sleep 0.1
		done
		daemons+=("$(cat "$t/$f.pid")")
	done
	until virsh uri >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "libvirtd did not answer"
		sleep 0.2
	done
	echo "# started virtlogd and libvirtd after $(($(date +%s) - started)) s"
fi
virsh version | sed 's/^/# /'

# --- the topology, served ------------------------------------------------------------------
cat >"$t/own.toml" <<EOF
name = "lv$$"
runtime_dir = "$t/run"
user = "libvirt-qemu"
group = "libvirt-qemu"

[manager]
name = "mgr"

[[worker]]
name = "w0"
segment_mib = 2

[[worker]]
name = "w1"
segment_mib = 2
EOF
start_serve "$host" "$t/own.toml"
cp "$kernel" "$t/bzImage"
cp "$initrd" "$t/initramfs.cpio.gz"
chmod 0644 "$t/bzImage" "$t/initramfs.cpio.gz"

# domain VM RUN: the domain XML of VM, running RUN in the guest (guest/init's SIVSHM_RUN),
# with the parts `sivshm-host libvirt-xml` prints for it. ACPI is on (libvirt 9.0 would pass
# QEMU 10 the -no-acpi it no longer has, and the hot-plug is ACPI's); the guest ends with
# `reboot -f`, which -no-reboot turns into the end of its QEMU (libvirt 9.0 passes none for
# on_reboot='destroy' and would act only on QEMU's reset event, after the reboot began).
domain() {
	local vm=$1 run=$2 devices override
	devices=$("$host" libvirt-xml "$t/own.toml" "$vm" --part devices)
	override=$("$host" libvirt-xml "$t/own.toml" "$vm" --part domain)
	cat <<EOF
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$prefix-$vm</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$t/bzImage</kernel>
    <initrd>$t/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 SIVSHM_RUN="$run"</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <serial type='file'>
      <source path='$t/$vm.log' append='on'/>
      <target port='0'/>
    </serial>
$devices
  </devices>
$override
  <qemu:commandline>
    <qemu:arg value='-no-reboot'/>
  </qemu:commandline>
</domain>
EOF
}

# The manager's device for worker i, as libvirt-xml places it (slot 4 + i on bus 0).
bdfs=$("$host" libvirt-xml "$t/own.toml" mgr |
	sed -n "s/.*<address type='pci' domain='0x0000' bus='0x00' slot='0x\([0-9a-f]*\)'.*/\1/p" |
	grep -v '^1c$' | while read -r slot; do printf '0000:00:%02x.0,' "0x$slot"; done)
bdfs=${bdfs%,}
[ "$(echo "$bdfs" | tr ',' '\n' | grep -c .)" = 2 ] || fail "libvirt-xml mgr did not give two devices: $bdfs"
rounds=100
domain mgr "sivshm-distribute manager --workers $bdfs --rounds $rounds --bytes 65536 --pace-ms 100 --rejoin --replug --peer-timeout 3 --timeout 240 --progress 5" >"$t/mgr.xml"
for w in w0 w1; do
	domain "$w" "sivshm-distribute worker --only-device --wait-for-manager --peer-timeout 3 --timeout 240" >"$t/$w.xml"
done
# The manager's <shmem> for w1 alone: what is detached and attached again.
"$host" libvirt-xml "$t/own.toml" mgr | awk "/<shmem name='sivshm-lv$$-mgr-w1'>/ { p = 1 } p { print } p && /<\/shmem>/ { exit }" >"$t/mgr-w1.xml"
grep -q '<server path=' "$t/mgr-w1.xml" || fail "no <shmem> for w1 in libvirt-xml mgr"

for vm in "${vms[@]}"; do
	virt-xml-validate "$t/$vm.xml" domain >/dev/null || fail "$vm.xml does not validate"
	virsh define "$t/$vm.xml" >/dev/null || fail "virsh define $vm failed"
done
for vm in "${vms[@]}"; do
	virsh start "$prefix-$vm" >/dev/null || fail "virsh start $vm failed"
done
echo "# three domains started after $(($(date +%s) - started)) s"
# The confinement exercised: each QEMU runs as libvirt-qemu (libvirt's DAC driver), in a mount
# namespace of its own (libvirt's private /dev).
for vm in "${vms[@]}"; do
	pid=$(cat "/run/libvirt/qemu/$prefix-$vm.pid")
	user=$(ps -o user= -p "$pid")
	[ "$user" = libvirt-qemu ] || fail "$vm's QEMU runs as $user, not libvirt-qemu"
	[ "$(readlink "/proc/$pid/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] ||
		fail "$vm's QEMU shares the host's mount namespace"
done

# 1. w1's device detached from the running manager and attached again.
until_deadline "10 rounds of w1 verified" at_least 10 verified 1
t_detach=$(date +%s)
virsh detach-device "$prefix-mgr" "$t/mgr-w1.xml" --live >/dev/null || fail "virsh detach-device failed"
until_deadline "report of w1's device removed" event index=1 event=removed
echo "# w1's device removed in the guest $(($(date +%s) - t_detach)) s after virsh detach-device began"
# libvirt has the device gone once the guest released it.
until ! virsh dumpxml "$prefix-mgr" | grep -q "sivshm-lv$$-mgr-w1"; do
	[ "$(date +%s)" -lt "$deadline" ] || fail "the detached device is still in the manager's live XML"
	sleep 0.2
done
w0_before=$(verified 0)
[ "$w0_before" != none ] || w0_before=0
until_deadline "report of the manager gone from w1" at_least 1 manager_left w1
# The manager serves w0 meanwhile: 10 more of its rounds verified while w1 is away.
until_deadline "10 more rounds of w0 verified while w1 was detached" \
	at_least $((w0_before + 10)) verified 0
echo "# w1 detached after $(($(date +%s) - started)) s; w0 served on"
virsh attach-device "$prefix-mgr" "$t/mgr-w1.xml" --live >/dev/null || fail "virsh attach-device failed"
until_deadline "report of w1's device back" event index=1 event=back
until_deadline "report of w1's position" event index=1 event=resumed
until_deadline "report of a manager back from w1" \
	has_result "$t/w1.log" distribute-worker-event impl=rust event=manager_back
echo "# w1 attached again after $(($(date +%s) - started)) s"

# 2. The manager's QEMU killed and its domain started again, once w1 has 10 more rounds
# verified since it came back.
w1_back=$(verified 1)
until_deadline "10 more rounds of w1 verified after it came back" at_least $((w1_back + 10)) verified 1
pid=$(cat "/run/libvirt/qemu/$prefix-mgr.pid")
kill -9 "$pid"
until [ "$(virsh domstate "$prefix-mgr")" = "shut off" ]; do
	[ "$(date +%s)" -lt "$deadline" ] || fail "the killed manager's domain is not shut off"
	sleep 0.2
done
echo "# manager killed after $(($(date +%s) - started)) s"
until_deadline "report of the manager gone from w0" at_least 1 manager_left w0
until_deadline "second report of the manager gone from w1" at_least 2 manager_left w1
virsh start "$prefix-mgr" >/dev/null || fail "virsh start mgr (again) failed"
for f in mgr w0 w1; do until_deadline "end of $f's command" ended "$t/$f.log"; done
echo "# job done after $(($(date +%s) - started)) s"

ended_ok "$t/mgr.log" || fail "the manager failed"
ended_ok "$t/w0.log" || fail "w0 failed"
ended_ok "$t/w1.log" || fail "w1 failed"
[ "$(count "$t/mgr.log" SIVSHM-BOOTED)" = 2 ] || fail "the manager did not boot exactly twice"
for w in w0 w1; do
	[ "$(count "$t/$w.log" SIVSHM-BOOTED)" = 1 ] || fail "$w restarted"
done
for i in 0 1; do
	w=w$i
	# The worker got every round once, in order, each matching the manager's checksum.
	wr() { result "$t/$w.log" distribute-worker "$1" impl=rust; }
	[ "$(wr rounds)/$(wr first_round)/$(wr mismatched)" = "$rounds/1/0" ] ||
		fail "$w: rounds $(wr rounds) from $(wr first_round), $(wr mismatched) mismatched"
	[ "$(wr devices)" = 1 ] || fail "$w saw other devices ($(wr devices))"
	# Its manager went away and came back: once for w0 (the restart), twice for w1 (the
	# detach too); each new manager asked where it stood.
	want=$((i + 1))
	[ "$(wr manager_back)/$(wr positions)" = "$want/$want" ] ||
		fail "$w: manager back $(wr manager_back) times, $(wr positions) positions asked (want $want)"
	# The restarted manager verified the rest of the run after the worker's position.
	mr() { result "$t/mgr.log" distribute-manager-worker "$1" impl=rust index=$i; }
	after=$(mr resumed_after) verified=$(mr verified)
	[ "$after" != none ] && [ "$after" -gt 0 ] && [ $((after + verified)) = $rounds ] ||
		fail "$w: the restarted manager took over after round $after and verified $verified"
	[ "$(mr status)" = ok ] || fail "$w: status $(mr status)"
done
# Every device of every VM is write-back (guest/init's memtype results).
for vm in "${vms[@]}"; do
	why=$(all_write_back "$t/$vm.log") || fail "$vm: $why"
done
# As serve reports it: the manager's device for w1 set up three times (boot, attach,
# restart) and w0's twice; the workers' once.
[ "$(setups mgr.w1)" = 3 ] || fail "serve sent mgr.w1's setup $(setups mgr.w1) times, not three"
[ "$(setups mgr.w0)" = 2 ] || fail "serve sent mgr.w0's setup $(setups mgr.w0) times, not twice"
for w in w0 w1; do
	[ "$(setups $w.mgr)" = 1 ] || fail "$w's device was set up $(setups $w.mgr) times"
done
for log in "$t/mgr.log" "$t/w1.log"; do "$lab" results "$log" --program distribute-manager-event; done

# Nothing left behind: the domains go, serve removes its sockets.
for vm in "${vms[@]}"; do
	virsh destroy "$prefix-$vm" >/dev/null 2>&1 || true
	virsh undefine "$prefix-$vm" >/dev/null || fail "virsh undefine $vm failed"
done
kill -TERM "$serve"
wait "$serve" || fail "serve exited with $? on SIGTERM"
serve=
left=$(ls -A "$t/run" | grep -vx serve.lock || true)
[ -z "$left" ] || fail "serve left $left behind"
[ -z "$(virsh list --all --name | grep "^$prefix-" || true)" ] || fail "a domain is left"
echo "# libvirt: done in $(($(date +%s) - started)) s (install $install_s s)"
