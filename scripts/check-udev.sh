#!/usr/bin/env bash
# check-udev.sh: runs the installed udev rule (`make install-udev`) through udev itself,
# `udevadm test --action=add`, for three fake misc devices: sivshm0, whose sivshmctl reports
# PCI 0000:00:04.0; sivshm1, whose sivshmctl fails (as it does without the driver's answer);
# and another misc device. sivshm0 and sivshm1 must end up root:sivshm 0660, sivshm0 with the
# link /dev/sivshm/by-path/pci-0000:00:04.0 and sivshm1 with none; the other device must be
# left alone, and sivshmctl run for the sivshm devices only. The group comes from the
# installed sysusers.d file (systemd-sysusers --root).
#
# Everything runs in a mount namespace of its own (unshare -m) whose /dev, /run, /etc/group,
# rules directory and /sys/devices/virtual/misc are temporary, so the machine's udev state is
# untouched. udev refuses device paths that are not on sysfs; SYSTEMD_DEVICE_VERIFY_SYSFS=0,
# systemd's switch for testing, lets it read the fake ones. (`udevadm verify` is newer than
# Debian 12's udev 252; this exercises the rule rather than only parsing it.)
set -euo pipefail
. "$(dirname "$0")/common.sh"
command -v udevadm >/dev/null || die "udevadm is not installed (scripts/setup.sh installs udev)"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
root=$t/root
make -s -C "$SIVSHM_ROOT" DESTDIR="$root" SIVSHMCTL="$t/bin/sivshmctl" install-udev
rule=$root/usr/lib/udev/rules.d/60-sivshm.rules
[ -f "$rule" ] && [ -f "$root/usr/lib/sysusers.d/sivshm.conf" ] || die "install-udev did not install the rule and the sysusers.d file"

mkdir -p "$root/etc" "$t/bin" "$t/misc"
cp /etc/passwd /etc/group "$root/etc/"
systemd-sysusers --root="$root" 2>&1
gid=$(awk -F: '$1 == "sivshm" { print $3 }' "$root/etc/group")
[ -n "$gid" ] || die "systemd-sysusers did not create the group sivshm from sivshm.conf"

# sivshmctl as the rule runs it, logging each call.
cat >"$t/bin/sivshmctl" <<STUB
#!/bin/sh
echo "\$*" >>"$t/calls"
case "\$*" in
"info --udev /dev/sivshm0") printf 'SIVSHM_NODE=/dev/sivshm0\nSIVSHM_PCI=0000:00:04.0\nSIVSHM_PEER=3\n' ;;
"info --udev /dev/sivshm1") echo "sivshmctl: cannot open /dev/sivshm1: No such device" >&2; exit 3 ;;
*) echo "sivshmctl: unexpected arguments: \$*" >&2; exit 2 ;;
esac
STUB
chmod 0755 "$t/bin/sivshmctl"
minor=200
for d in sivshm0 sivshm1 other0; do
	mkdir "$t/misc/$d"
	printf 'MAJOR=10\nMINOR=%s\nDEVNAME=%s\n' "$minor" "$d" >"$t/misc/$d/uevent"
	echo "10:$minor" >"$t/misc/$d/dev"
	ln -s /sys/class/misc "$t/misc/$d/subsystem"
	minor=$((minor + 1))
done
mkdir "$t/rules"
cp "$rule" "$t/rules/"
touch "$t/null"

# In the namespace: the nodes as devtmpfs makes them (root 0600), then udev, then what it did.
cat >"$t/inside.sh" <<INSIDE
set -eu
mount --bind /dev/null "$t/null"
mount -t tmpfs tmpfs /dev
touch /dev/null && mount --bind "$t/null" /dev/null
mount -t tmpfs tmpfs /run
mount --bind "$t/misc" /sys/devices/virtual/misc
mount --bind "$t/rules" /usr/lib/udev/rules.d
mount -t tmpfs tmpfs /etc/udev/rules.d
mount --bind "$root/etc/group" /etc/group
minor=200
for d in sivshm0 sivshm1 other0; do
	mknod -m 0600 /dev/\$d c 10 \$minor
	minor=\$((minor + 1))
	SYSTEMD_DEVICE_VERIFY_SYSFS=0 udevadm test --action=add /sys/devices/virtual/misc/\$d \
		>"$t/udev-\$d.log" 2>&1 || { cat "$t/udev-\$d.log"; exit 1; }
done
stat -c '%n %U %G %a' /dev/sivshm0 /dev/sivshm1 /dev/other0
find /dev/sivshm -type l -printf '%p -> %l\n' 2>/dev/null || true
INSIDE
unshare -m sh "$t/inside.sh" >"$t/result" || { cat "$t/result"; die "udevadm test failed"; }
cat "$t/result"
grep -h 'sivshm.rules' "$t"/udev-*.log | sed 's/^/  udev: /'

want="/dev/sivshm0 root sivshm 660
/dev/sivshm1 root sivshm 660
/dev/other0 root root 600
/dev/sivshm/by-path/pci-0000:00:04.0 -> ../../sivshm0"
[ "$(cat "$t/result")" = "$want" ] || die "udev did not do what the rule says: $(diff <(echo "$want") "$t/result")"
calls=$(cat "$t/calls")
[ "$calls" = "$(printf 'info --udev /dev/sivshm0\ninfo --udev /dev/sivshm1')" ] \
	|| die "sivshmctl was called as: $calls"
grep -q "SIVSHM_PCI=0000:00:04.0" "$t/udev-sivshm0.log" || die "udev did not import SIVSHM_PCI"
