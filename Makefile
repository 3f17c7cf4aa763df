# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree build of sivshm.ko against a Rust-enabled kernel build:
#   make KDIR=<kernel build dir> [RUSTC=... BINDGEN=...] [CLIPPY=1]
# The kernel and the module must be built by the same rustc.

KDIR ?= /lib/modules/$(shell uname -r)/build

all: modules

modules modules_install clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) $@

.PHONY: all modules modules_install clean
