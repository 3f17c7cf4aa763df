# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree build of sivshm.ko against a Rust-enabled kernel build:
#   make KDIR=<kernel build dir> [RUSTC=... BINDGEN=...] [CLIPPY=1]
#   make KDIR=<kernel build dir> install [DESTDIR=...] [SIVSHMCTL=/usr/local/bin/sivshmctl]
# The kernel and the module must be built by the same rustc.
#
# `install` puts the built module under $(DESTDIR)/lib/modules/<kernel release>/ (the kernel's
# modules_install, then depmod), the UAPI header in $(DESTDIR)$(INCLUDEDIR)/linux/, the udev
# rule in $(DESTDIR)$(UDEVRULESDIR)/ and the sivshm group's sysusers.d file in
# $(DESTDIR)$(SYSUSERSDIR)/. `install-udev` installs the last two alone (no kernel needed).
# It also installs sivshmctl's man pages in $(DESTDIR)$(MANDIR)/man1/ and its bash, zsh and
# fish completions; `install-sivshmctl-docs` installs these alone (no kernel needed). They
# are generated from sivshmctl's command line (packaging/man, packaging/completions:
# `cargo run -p sivshm-gen-docs`); sivshm-host's are installed on the host
# (Documentation/install.rst).

KDIR ?= /lib/modules/$(shell uname -r)/build
DESTDIR ?=
INCLUDEDIR ?= /usr/include
UDEVRULESDIR ?= /usr/lib/udev/rules.d
SYSUSERSDIR ?= /usr/lib/sysusers.d
MANDIR ?= /usr/share/man
BASHCOMPDIR ?= /usr/share/bash-completion/completions
# Debian's zsh searches vendor-completions; Fedora's and Arch's: ZSHCOMPDIR=/usr/share/zsh/site-functions.
ZSHCOMPDIR ?= /usr/share/zsh/vendor-completions
FISHCOMPDIR ?= /usr/share/fish/vendor_completions.d
# Where the udev rule runs sivshmctl from (it prints each device's PCI address).
SIVSHMCTL ?= /usr/local/bin/sivshmctl

# The kernel's Makefile assigns RUSTC, BINDGEN and the like itself, so values that come from
# the environment (as under DKMS: `RUSTC=... dkms build ...`) would be lost: hand them on.
RUST_VARS := RUSTC RUSTDOC BINDGEN CLIPPY_DRIVER RUSTFMT
rust_args := $(foreach v,$(RUST_VARS),$(if $(filter environment,$(origin $(v))),$(v)=$($(v))))

all: modules

modules modules_install: check-kdir
	$(MAKE) -C $(KDIR) M=$(CURDIR) $(rust_args) $@ $(if $(DESTDIR),INSTALL_MOD_PATH=$(DESTDIR))

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) $@

# A kernel build without Rust fails deep inside kbuild; say so up front.
check-kdir:
	@test -f $(KDIR)/Makefile || { echo "sivshm: no kernel build at KDIR=$(KDIR) (make KDIR=<kernel build dir>)" >&2; exit 1; }
	@grep -qx 'CONFIG_RUST=y' $(KDIR)/.config || { echo "sivshm: the kernel at KDIR=$(KDIR) is not built with CONFIG_RUST=y; sivshm.ko needs a Rust-enabled kernel" >&2; exit 1; }

install: install-module install-uapi install-udev install-sivshmctl-docs

install-module:
	@test -f sivshm.ko || { echo "sivshm: build the module first: make KDIR=$(KDIR)" >&2; exit 1; }
	$(MAKE) modules_install

install-uapi:
	install -D -m 0644 uapi/linux/sivshm.h $(DESTDIR)$(INCLUDEDIR)/linux/sivshm.h

install-udev:
	@case "$(SIVSHMCTL)" in /*) ;; *) echo "sivshm: SIVSHMCTL=$(SIVSHMCTL) must be an absolute path (udev runs it)" >&2; exit 1 ;; esac
	install -d $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed 's|/usr/local/bin/sivshmctl|$(SIVSHMCTL)|' packaging/udev/60-sivshm.rules \
		> $(DESTDIR)$(UDEVRULESDIR)/60-sivshm.rules
	chmod 0644 $(DESTDIR)$(UDEVRULESDIR)/60-sivshm.rules
	install -m 0644 packaging/sysusers/sivshm.conf $(DESTDIR)$(SYSUSERSDIR)/sivshm.conf

install-sivshmctl-docs:
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0644 packaging/man/sivshmctl.1 packaging/man/sivshmctl-*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 packaging/completions/bash/sivshmctl $(DESTDIR)$(BASHCOMPDIR)/sivshmctl
	install -m 0644 packaging/completions/zsh/_sivshmctl $(DESTDIR)$(ZSHCOMPDIR)/_sivshmctl
	install -m 0644 packaging/completions/fish/sivshmctl.fish $(DESTDIR)$(FISHCOMPDIR)/sivshmctl.fish

.PHONY: all modules modules_install clean check-kdir install install-module install-uapi install-udev \
	install-sivshmctl-docs
