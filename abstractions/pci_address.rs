// SPDX-License-Identifier: GPL-2.0

//! The PCI address of a device, domain included.
//!
//! 7.3's `pci::Device` gives the bus, slot and function (`dev_id()`), but not the domain
//! (segment): on x86 `pci_domain_nr()` is an inline the bindings do not have. The device's
//! name, which the PCI core sets to `DDDD:BB:SS.F` (`pci_setup_device()`), carries it.

use kernel::{device::Bound, pci};

/// The PCI address `(domain, bus, slot, function)` of `pdev`.
pub(crate) fn pci_address(pdev: &pci::Device<Bound>) -> (u32, u8, u8, u8) {
    let id = pdev.dev_id();
    let name = pdev.as_ref().name().to_bytes();
    let domain = name
        .split(|&c| c == b':')
        .next()
        .and_then(|d| core::str::from_utf8(d).ok())
        .and_then(|d| u32::from_str_radix(d, 16).ok())
        .unwrap_or(0);
    (
        domain,
        (id >> 8) as u8,
        ((id >> 3) & 0x1f) as u8,
        (id & 7) as u8,
    )
}
