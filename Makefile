# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree build of sivshm.ko against a Rust-enabled kernel build:
#   make KDIR=<kernel build dir> [RUSTC=... BINDGEN=...] [CLIPPY=1]
# The kernel and the module must be built by the same rustc.

KDIR ?= /lib/modules/$(shell uname -r)/build

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

.PHONY: all modules modules_install clean check-kdir
