#!/usr/bin/env bash
# setup-libvirt.sh: installs what scripts/check-libvirt.sh needs, idempotently and only what
# is missing: Debian's libvirt daemon and its QEMU driver (libvirt-daemon,
# libvirt-daemon-driver-qemu, 9.0 on bookworm; libvirt-clients, for virsh, comes with
# scripts/setup.sh), and what Debian's libvirt-daemon-system would otherwise set up for
# them: the user and group QEMU runs as (libvirt-qemu, in group kvm) and the daemons'
# directories. libvirt-daemon-system itself is not installed: without systemd as PID 1 its
# maintainer scripts start libvirtd through its init script at install time, and the check
# starts the daemons it needs itself (see check-libvirt.sh). Nothing is configured: libvirtd
# runs with its built-in defaults, which are those of Debian's (all commented) qemu.conf.
#
# Prints how long the install took (0 when nothing was missing) as its last line.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ "$(id -u)" = 0 ] || die "setup-libvirt needs root (apt-get, adduser)"
t0=$(date +%s)

missing=()
for p in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	log=$(mktemp)
	# Another apt run on the machine (a helper, CI) is waited for, not failed on.
	if ! { apt-get update -qq -o DPkg::Lock::Timeout=300 &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			-o DPkg::Lock::Timeout=300 "${missing[@]}"; } >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		rm -f "$log"
		die "apt-get install ${missing[*]} failed"
	fi
	rm -f "$log"
fi

# As libvirt-daemon-system's postinst does: a system group and user, the user in kvm.
getent group kvm >/dev/null || addgroup --quiet --system kvm
getent group libvirt-qemu >/dev/null || addgroup --quiet --system libvirt-qemu
if ! getent passwd libvirt-qemu >/dev/null; then
	adduser --quiet --system --ingroup libvirt-qemu --home /var/lib/libvirt --no-create-home \
		--disabled-password libvirt-qemu
fi
id -nG libvirt-qemu | tr ' ' '\n' | grep -qx kvm || usermod -a -G kvm libvirt-qemu
# The directories the package would ship (libvirtd and virtlogd do not start without the log
# directory).
install -d -m 0755 /var/log/libvirt /var/lib/libvirt /var/cache/libvirt
install -d -m 0700 /var/log/libvirt/qemu
install -d -m 0751 /var/lib/libvirt/qemu
install -d -m 0711 /var/cache/libvirt/qemu
echo "$(($(date +%s) - t0))"
