# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree build of sivshm.ko against a Rust-enabled kernel build:
#   make KDIR=<kernel build dir> [RUSTC=... BINDGEN=...] [CLIPPY=1]
#   make install-udev [DESTDIR=...] [SIVSHMCTL=/usr/local/bin/sivshmctl]
# The kernel and the module must be built by the same rustc.
#
# `install-udev` puts the udev rule in $(DESTDIR)$(UDEVRULESDIR)/ and the sivshm group's
# sysusers.d file in $(DESTDIR)$(SYSUSERSDIR)/ (no kernel needed).

KDIR ?= /lib/modules/$(shell uname -r)/build
DESTDIR ?=
UDEVRULESDIR ?= /usr/lib/udev/rules.d
SYSUSERSDIR ?= /usr/lib/sysusers.d
# Where the udev rule runs sivshmctl from (it prints each device's PCI address).
SIVSHMCTL ?= /usr/local/bin/sivshmctl

# The kernel's Makefile assigns RUSTC, BINDGEN and the like itself, so values that come from
# the environment (as under DKMS: `RUSTC=... dkms build ...`) would be lost: hand them on.
RUST_VARS := RUSTC RUSTDOC BINDGEN CLIPPY_DRIVER RUSTFMT
rust_args := $(foreach v,$(RUST_VARS),$(if $(filter environment,$(origin $(v))),$(v)=$($(v))))

all: modules

modules modules_install: check-kdir
	$(MAKE) -C $(KDIR) M=$(CURDIR) $(rust_args) $@

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) $@

# A kernel build without Rust fails deep inside kbuild; say so up front.
check-kdir:
	@test -f $(KDIR)/Makefile || { echo "sivshm: no kernel build at KDIR=$(KDIR) (make KDIR=<kernel build dir>)" >&2; exit 1; }
	@grep -qx 'CONFIG_RUST=y' $(KDIR)/.config || { echo "sivshm: the kernel at KDIR=$(KDIR) is not built with CONFIG_RUST=y; sivshm.ko needs a Rust-enabled kernel" >&2; exit 1; }

install-udev:
	@case "$(SIVSHMCTL)" in /*) ;; *) echo "sivshm: SIVSHMCTL=$(SIVSHMCTL) must be an absolute path (udev runs it)" >&2; exit 1 ;; esac
	install -d $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed 's|/usr/local/bin/sivshmctl|$(SIVSHMCTL)|' packaging/udev/60-sivshm.rules \
		> $(DESTDIR)$(UDEVRULESDIR)/60-sivshm.rules
	chmod 0644 $(DESTDIR)$(UDEVRULESDIR)/60-sivshm.rules
	install -m 0644 packaging/sysusers/sivshm.conf $(DESTDIR)$(SYSUSERSDIR)/sivshm.conf

.PHONY: all modules modules_install clean check-kdir install-udev
