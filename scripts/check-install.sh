#!/usr/bin/env bash
# check-install.sh KERNEL_BUILD: `make install DESTDIR=...` from a copy of the sources installs
# exactly the module (with its modinfo), the UAPI header, the udev rule, the sysusers.d file and
# sivshmctl's man pages and bash/zsh/fish completions; and the Makefile's refusals (no kernel, a kernel without Rust, install before build, a
# relative SIVSHMCTL) are clear errors.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# = 1 ] || die "usage: check-install.sh KERNEL_BUILD"
kb=$1
kver=$(cat "$kb/include/config/kernel.release") || die "$kb is not a configured kernel build"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
src=$t/src dest=$t/dest
mkdir -p "$src" "$dest"
(cd "$SIVSHM_ROOT" && cp -r --parents Makefile Kbuild sivshm.rs driver abstractions uapi/linux/sivshm.h \
	packaging/udev packaging/sysusers packaging/man packaging/completions "$src/")

# $1: what the error must say; the rest: make's arguments.
refused() {
	local want=$1 out; shift
	if out=$(make -s -C "$src" "$@" 2>&1); then
		die "make $* succeeded, it should have failed with: $want"
	fi
	grep -qF "$want" <<<"$out" || die "make $* failed, but not with \"$want\": $out"
	say "refused as it should: make $*: $(grep -F "$want" <<<"$out" | head -n1)"
}
refused "no kernel build at KDIR=$t/nowhere" KDIR="$t/nowhere"
mkdir -p "$t/norust" && touch "$t/norust/Makefile" && grep -v '^CONFIG_RUST=' "$kb/.config" >"$t/norust/.config"
refused "is not built with CONFIG_RUST=y" KDIR="$t/norust"
refused "build the module first" KDIR="$kb" DESTDIR="$dest" install
refused "must be an absolute path" DESTDIR="$dest" SIVSHMCTL=sivshmctl install-udev
[ -z "$(find "$dest" -mindepth 1)" ] || die "a refused install left files in DESTDIR"

# shellcheck disable=SC2046
make -s -C "$src" KDIR="$kb" $(kmake_args) >/dev/null
# shellcheck disable=SC2046
make -s -C "$src" KDIR="$kb" $(kmake_args) DESTDIR="$dest" install >/dev/null
files=$(cd "$dest" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
echo "installed into DESTDIR:"
sed 's/^/  /' <<<"$files"
# sivshmctl's pages: one for the command and one for each subcommand, as generated.
pages=$(cd "$SIVSHM_ROOT/packaging/man" && printf 'usr/share/man/man1/%s\n' sivshmctl.1 sivshmctl-*.1)
# depmod's index files come with the module; nothing else may appear.
want=$(LC_ALL=C sort <<WANT
lib/modules/$kver/updates/sivshm.ko
usr/include/linux/sivshm.h
usr/lib/sysusers.d/sivshm.conf
usr/lib/udev/rules.d/60-sivshm.rules
$pages
usr/share/bash-completion/completions/sivshmctl
usr/share/zsh/vendor-completions/_sivshmctl
usr/share/fish/vendor_completions.d/sivshmctl.fish
WANT
)
got=$(grep -v "^lib/modules/$kver/modules\." <<<"$files")
[ "$got" = "$want" ] || die "installed files differ from the expected ones: $(diff <(echo "$want") <(echo "$got"))"
grep -qx 'updates/sivshm.ko:' "$dest/lib/modules/$kver/modules.dep" || die "depmod did not index the module"
modinfo "$dest/lib/modules/$kver/updates/sivshm.ko"
for f in description author license version; do
	[ -n "$(modinfo -F "$f" "$dest/lib/modules/$kver/updates/sivshm.ko")" ] || die "modinfo has no $f"
done
cmp "$src/uapi/linux/sivshm.h" "$dest/usr/include/linux/sivshm.h"
grep -qF 'IMPORT{program}="/usr/local/bin/sivshmctl info --udev $devnode"' \
	"$dest/usr/lib/udev/rules.d/60-sivshm.rules" || die "the installed rule does not run /usr/local/bin/sivshmctl"
for f in $(grep -v "^lib/modules/" <<<"$want"); do
	[ "$(stat -c %a "$dest/$f")" = 644 ] || die "$f is not mode 0644"
done
cmp "$src/packaging/man/sivshmctl.1" "$dest/usr/share/man/man1/sivshmctl.1"
cmp "$src/packaging/completions/bash/sivshmctl" "$dest/usr/share/bash-completion/completions/sivshmctl"
# The header compiles on its own as user space includes it.
printf '#include <linux/sivshm.h>\nint main(void) { return sizeof(struct sivshm_info) == 0; }\n' >"$t/h.c"
gcc -Wall -Werror -I"$dest/usr/include" -o "$t/h" "$t/h.c"
