#!/usr/bin/env bash
# check-dkms.sh KERNEL_BUILD: Debian's dkms adds, builds and installs sivshm.ko from dkms.conf
# against a kernel build directory (not under /lib/modules: --kernelsourcedir), checks the
# module it installed, and removes the registration. Its source, build and install trees are
# in a temporary directory (--sourcetree, --dkmstree, --installtree): nothing of the machine's
# DKMS state (/usr/src, /var/lib/dkms, /lib/modules) is read or left behind, and two runs at
# once do not meet. Fails if any step fails, the build included.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# = 1 ] || die "usage: check-dkms.sh KERNEL_BUILD"
kb=$1
command -v dkms >/dev/null || die "dkms is not installed (scripts/setup.sh installs it)"
kver=$(cat "$kb/include/config/kernel.release") || die "$kb is not a configured kernel build"
ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$SIVSHM_ROOT/dkms.conf")
[ -n "$ver" ] || die "dkms.conf has no PACKAGE_VERSION"

t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
# What a DKMS source package of sivshm holds: the module's sources and its build files.
src=$t/src/sivshm-$ver
# The install tree stands for /lib/modules: the kernel is "installed" there.
mkdir -p "$src" "$t/dkms" "$t/install/$kver"
(cd "$SIVSHM_ROOT" && cp -r --parents dkms.conf Makefile Kbuild sivshm.rs driver abstractions "$src/")
trees=(--sourcetree "$t/src" --dkmstree "$t/dkms" --installtree "$t/install")
mv=(-m sivshm -v "$ver")

# The kernel's rustc and bindgen, handed to kbuild through the Makefile.
run_dkms() {
	say "dkms $*"
	env RUSTC="$KRUSTC" RUSTDOC="$KRUSTDOC" BINDGEN="$BINDGEN" dkms "$@"
}
run_dkms add "${mv[@]}" "${trees[@]}"
# From here on, whatever happens, the registration goes again.
trap 'dkms remove "${mv[@]}" "${trees[@]}" --all --no-depmod >/dev/null 2>&1 || true; rm -rf "$t"' EXIT
if ! run_dkms build "${mv[@]}" -k "$kver" --kernelsourcedir "$kb" "${trees[@]}"; then
	cat "$t/dkms/sivshm/$ver/build/make.log" >&2 2>/dev/null || true
	die "dkms build failed"
fi
run_dkms install "${mv[@]}" -k "$kver" --kernelsourcedir "$kb" --no-depmod "${trees[@]}"
status=$(dkms status "${mv[@]}" "${trees[@]}")
echo "$status"
grep -q "^sivshm/$ver, $kver, x86_64: installed" <<<"$status" || die "dkms status does not say installed"

ko=$(find "$t/install/$kver" -name sivshm.ko)
[ "$(wc -l <<<"$ko")" = 1 ] && [ -f "$ko" ] || die "no single sivshm.ko under the install tree: $ko"
modinfo "$ko"
[ "$(modinfo -F version "$ko")" = "$ver" ] || die "modinfo version is not dkms.conf's $ver"
crate_ver=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SIVSHM_ROOT/Cargo.toml")
[ "$crate_ver" = "$ver" ] || die "dkms.conf's version $ver is not the workspace's $crate_ver (Cargo.toml)"
[ "$(modinfo -F vermagic "$ko" | cut -d' ' -f1)" = "$kver" ] || die "the module is not built for $kver"
modinfo -F alias "$ko" | grep -qx 'pci:v00001AF4d00001110sv\*sd\*bc\*sc\*i\*' || die "no PCI alias 1af4:1110"

# A kernel without Rust is refused up front (BUILD_EXCLUSIVE_CONFIG, exit code 77), not
# with a kbuild error halfway through.
norust=$t/norust
mkdir -p "$norust/include/config" "$t/install/$kver-norust"
grep -v '^CONFIG_RUST=' "$kb/.config" >"$norust/.config"
cp "$kb/Makefile" "$norust/"
echo "$kver-norust" >"$norust/include/config/kernel.release"
rc=0
run_dkms build "${mv[@]}" -k "$kver-norust" --kernelsourcedir "$norust" "${trees[@]}" || rc=$?
[ "$rc" = 77 ] || die "dkms build for a kernel without CONFIG_RUST exited $rc, not 77"

run_dkms remove "${mv[@]}" --all --no-depmod "${trees[@]}"
[ -z "$(dkms status "${mv[@]}" "${trees[@]}")" ] || die "dkms still lists sivshm after remove"
[ -z "$(find "$t/install" -name 'sivshm.ko*')" ] || die "dkms remove left the module installed"
say "dkms built, installed and removed sivshm $ver for $kver"
