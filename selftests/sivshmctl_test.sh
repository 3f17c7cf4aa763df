#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# sivshmctl_test.sh: the guest command sivshmctl on real devices, in TAP. Runs in the single-vm
# guest after sivshm_hello, which left "hello from sivshm\0" at offset 0 of every device.
#   SIVSHM_EXPECT="DDDD:BB:SS.F,<size>,<peer id or none>,<vectors>;..." (as sivshm_test reads it):
#   the first entry is a plain device (/dev/sivshm0), the second a doorbell device
#   (/dev/sivshm1) with at least 2 vectors.
# Each check is one TAP line; exit status 1 if any failed.

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n sivshmctl: $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n sivshmctl: $1"; }
# check NAME COMMAND...: the command's status is the result; its output goes to the log.
check() {
	name=$1; shift
	if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name"; echo "$out" | sed 's/^/# /'; fi
}
# exits CODE NAME COMMAND...: the command exits with CODE and says why on stderr.
exits() {
	code=$1 name=$2; shift 2
	"$@" >/tmp/out 2>/tmp/err
	rc=$?
	if [ "$rc" = "$code" ] && [ -s /tmp/err ]; then
		ok "$name"; echo "# exit $code: $(head -n1 /tmp/err)"
	else
		not_ok "$name: exit $rc, wanted $code"
		sed 's/^/# stdout: /' /tmp/out; sed 's/^/# stderr: /' /tmp/err
	fi
}
# same NAME WANT COMMAND...: the command succeeds and prints exactly WANT.
same() {
	name=$1 want=$2; shift 2
	got=$("$@" 2>&1)
	if [ $? = 0 ] && [ "$got" = "$want" ]; then
		ok "$name"
	else
		not_ok "$name"
		echo "$want" | sed 's/^/# want: /'; echo "$got" | sed 's/^/# got:  /'
	fi
}

# The two devices as SIVSHM_EXPECT describes them.
IFS=';' read -r plain doorbell <<EOF
$SIVSHM_EXPECT
EOF
IFS=, read -r p_pci p_size p_peer p_vec <<EOF
$plain
EOF
IFS=, read -r d_pci d_size d_peer d_vec <<EOF
$doorbell
EOF
[ "$p_peer" = none ] && p_peer=-

echo "TAP version 13"
echo "1..13"

same "list shows both devices" \
	"/dev/sivshm0 pci=$p_pci size=$p_size peer=$p_peer vectors=$p_vec memtype=write-back
/dev/sivshm1 pci=$d_pci size=$d_size peer=$d_peer vectors=$d_vec memtype=write-back" \
	sivshmctl list
same "info by PCI address" \
	"node=/dev/sivshm1
index=1
pci=$d_pci
size=$d_size
doorbell=yes
peer=$d_peer
vectors=$d_vec
memtype=write-back" \
	sivshmctl info "$d_pci"
same "info --udev gives the rule its SIVSHM_PCI" \
	"SIVSHM_NODE=/dev/sivshm0
SIVSHM_INDEX=0
SIVSHM_PCI=$p_pci
SIVSHM_SIZE=$p_size
SIVSHM_DOORBELL=no
SIVSHM_PEER=$p_peer
SIVSHM_VECTORS=$p_vec
SIVSHM_MEMTYPE=write-back" \
	sivshmctl info --udev /dev/sivshm0
same "dump shows what sivshm_hello wrote, as hexdump -C" \
	"00000000  68 65 6c 6c 6f 20 66 72  6f 6d 20 73 69 76 73 68  |hello from sivsh|
00000010  6d 00                                             |m.|" \
	sivshmctl dump sivshm0 0 18

# A wait that a ring of our own peer id ends: the device's own vectors are among its peers'.
rm -f /tmp/wait.rc
(sivshmctl wait 1 1 --timeout 30 >/tmp/wait.out 2>&1; echo $? >/tmp/wait.rc) &
rang=0
for _ in $(seq 60); do
	[ -e /tmp/wait.rc ] && break
	sleep 0.5
	sivshmctl ring 1 "$d_peer" 1 && rang=$((rang + 1))
done
wait
if [ "$(cat /tmp/wait.rc 2>/dev/null)" = 0 ] && grep -qE '^interrupts=[1-9][0-9]*$' /tmp/wait.out; then
	ok "wait on vector 1 wakes on a ring of it"; echo "# $(cat /tmp/wait.out) after $rang ring(s)"
else
	not_ok "wait on vector 1 wakes on a ring of it"
	echo "# wait exited $(cat /tmp/wait.rc 2>/dev/null), $rang ring(s):"; sed 's/^/# /' /tmp/wait.out
fi
check "ring a peer that is not there (QEMU drops it)" sivshmctl ring 1 7 0

exits 1 "wait --timeout with nobody ringing" sivshmctl wait 1 0 --timeout 0.5
exits 4 "ring on a plain device is refused" sivshmctl ring 0 1 0
exits 4 "ring of a vector out of range" sivshmctl ring 1 "$d_peer" "$d_vec"
exits 4 "dump beyond the shared memory" sivshmctl dump 0 $((p_size - 16)) 32
exits 3 "info of a device that is not there" sivshmctl info 7
exits 3 "info of a PCI address with no device" sivshmctl info 0000:00:1f.7
exits 2 "usage error" sivshmctl ring 0

[ "$failed" = 0 ]
