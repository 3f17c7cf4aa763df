// SPDX-License-Identifier: GPL-2.0

//! sivshm: Secure Inter-VM Shared Memory, guest driver.
//!
//! Binds QEMU's `ivshmem-plain` and `ivshmem-doorbell` devices (PCI 1af4:1110) and gives each
//! one a misc device, `/dev/sivshmN`, through which user space maps the shared memory (BAR2),
//! rings peers' doorbells and binds eventfds to the device's MSI-X vectors. The host decides
//! which memory and which peers a VM's device reaches (see `Documentation/sivshm.rst`); the
//! driver never reads the shared memory, which is untrusted input.
//!
//! Two rooms, and imports go one way:
//!
//! - [`driver`]: the PCI driver, the device state, the file operations, the UAPI mirror.
//! - [`abstractions`]: safe wrappers of kernel C APIs that the kernel crate lacks (eventfd,
//!   revocable PFN mappings, BAR reservation, MSI-X handlers, misc device data). They know
//!   nothing of the driver, and hold every `unsafe` block of the module.

mod abstractions;
mod driver;

kernel::module_pci_driver! {
    type: driver::SivshmDriver,
    name: "sivshm",
    authors: ["The sivshm developers"],
    description: "Secure Inter-VM Shared Memory (ivshmem) guest driver",
    license: "GPL v2",
}

/// `modinfo -F version`, as C's `MODULE_VERSION()` records it: 7.3's `module!` has no `version`
/// field, so the string goes into `.modinfo` directly, the way `module!` emits its own fields. The same version as `dkms.conf`'s
/// `PACKAGE_VERSION` and the workspace's crates (`scripts/check-dkms.sh` compares them).
#[cfg(MODULE)]
#[link_section = ".modinfo"]
#[used(compiler)]
static __SIVSHM_VERSION: [u8; 14] = *b"version=0.1.0\0";
