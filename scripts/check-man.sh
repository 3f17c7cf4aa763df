#!/usr/bin/env bash
# check-man.sh: the documented install steps put the man pages and completions where `man`
# and the shells find them. Into a DESTDIR: the host's `make -C host install` (sivshm-host,
# its pages, completions and systemd unit; PREFIX=/usr/local) and the guest Makefile's
# `make install-sivshmctl-docs` (sivshmctl's, no kernel needed). Checks exactly the files
# installed, their modes, that every installed page renders with `man -l` without a warning
# and shows its NAME and SYNOPSIS, that `man sivshm-host` and `man sivshmctl` find the
# installed pages by name (MANPATH), that the unit runs the installed binary, and that
# `make -C host uninstall` removes everything.
set -euo pipefail
. "$(dirname "$0")/common.sh"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
dest=$t/dest

cargo build --release -q -p sivshm-host || die "sivshm-host does not build"
make -s -C "$SIVSHM_ROOT/host" install DESTDIR="$dest" >/dev/null
make -s -C "$SIVSHM_ROOT" install-sivshmctl-docs DESTDIR="$dest" >/dev/null
files=$(cd "$dest" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
echo "installed into DESTDIR:"
sed 's/^/  /' <<<"$files"
host_pages=$(cd "$SIVSHM_ROOT/packaging/man" && printf 'usr/local/share/man/man1/%s\n' sivshm-host.1 sivshm-host-*.1)
ctl_pages=$(cd "$SIVSHM_ROOT/packaging/man" && printf 'usr/share/man/man1/%s\n' sivshmctl.1 sivshmctl-*.1)
want=$(LC_ALL=C sort <<WANT
etc/systemd/system/sivshm-host@.service
usr/local/bin/sivshm-host
$host_pages
usr/local/share/bash-completion/completions/sivshm-host
usr/local/share/zsh/site-functions/_sivshm-host
usr/local/share/fish/vendor_completions.d/sivshm-host.fish
$ctl_pages
usr/share/bash-completion/completions/sivshmctl
usr/share/zsh/vendor-completions/_sivshmctl
usr/share/fish/vendor_completions.d/sivshmctl.fish
WANT
)
[ "$files" = "$want" ] || die "installed files differ from the expected ones: $(diff <(echo "$want") <(echo "$files"))"
for f in $files; do
	mode=$(stat -c %a "$dest/$f")
	case $f in
	usr/local/bin/*) [ "$mode" = 755 ] || die "$f is mode $mode, not 0755" ;;
	*) [ "$mode" = 644 ] || die "$f is mode $mode, not 0644" ;;
	esac
done
"$dest/usr/local/bin/sivshm-host" --version >/dev/null || die "the installed sivshm-host does not run"
grep -qx 'ExecStart=/usr/local/bin/sivshm-host serve /etc/sivshm/%i.toml' \
	"$dest/etc/systemd/system/sivshm-host@.service" || die "the unit does not run the installed binary"

# Every page renders: man's own formatter, warnings on, a fixed width; nothing on stderr.
n=0
for page in $host_pages $ctl_pages; do
	name=$(basename "$page" .1)
	out=$(MANPAGER=cat MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$dest/$page" 2>"$t/err") \
		|| die "man -l $page failed: $(cat "$t/err")"
	[ ! -s "$t/err" ] || die "man -l $page warned: $(cat "$t/err")"
	grep -q '^NAME' <<<"$out" || die "man -l $page shows no NAME section"
	grep -q '^SYNOPSIS' <<<"$out" || die "man -l $page shows no SYNOPSIS section"
	grep -qF "$name" <<<"$out" || die "man -l $page does not name $name"
	n=$((n + 1))
done
say "$n installed pages render with man -l"
# And by name, as a user types it, from where they were installed.
for cmd in sivshm-host sivshm-host-serve sivshmctl sivshmctl-info; do
	MANPATH="$dest/usr/local/share/man:$dest/usr/share/man" MANPAGER=cat man "$cmd" 2>&1 \
		| grep -q "^NAME" || die "man $cmd does not find the installed page"
done
say "man sivshm-host, man sivshmctl and their subcommands' pages are found by name"

make -s -C "$SIVSHM_ROOT/host" uninstall DESTDIR="$dest" >/dev/null
left=$(cd "$dest" && find . -type f | grep -v sivshmctl || true)
[ -z "$left" ] || die "make -C host uninstall left: $left"
# The install refuses what would break the unit.
if out=$(make -s -C "$SIVSHM_ROOT/host" install DESTDIR="$dest" BINDIR=bin 2>&1); then
	die "a relative BINDIR was accepted"
fi
grep -qF "must be an absolute path" <<<"$out" || die "a relative BINDIR failed, but not clearly: $out"
say "make -C host uninstall removes it all; a relative BINDIR is refused"
