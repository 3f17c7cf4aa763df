#!/usr/bin/env bash
# build-initramfs.sh OUT MODULE [PROGRAM...]
# A busybox initramfs with guest/init, the module at /lib/modules/sivshm.ko
# and the given statically linked programs in /bin.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "usage: build-initramfs.sh OUT MODULE [PROGRAM...]"
out=$1 ko=$2; shift 2
busybox=$(command -v busybox || true)
[ -x /bin/busybox ] && busybox=/bin/busybox
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox-static is not installed (run scripts/setup.sh)"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$root/bin/busybox"
install -m 0755 "$SIVSHM_ROOT/guest/init" "$root/init"
install -m 0644 "$ko" "$root/lib/modules/sivshm.ko"
for p in "$@"; do
	install -m 0755 "$p" "$root/bin/$(basename "$p")"
done
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
