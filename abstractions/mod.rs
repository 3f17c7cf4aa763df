// SPDX-License-Identifier: GPL-2.0

//! Abstractions over kernel C APIs that the 7.3 kernel crate does not wrap yet.
//!
//! Every `unsafe` block of the module lives here, each next to a `// SAFETY:` comment that
//! argues it. Nothing here knows the sivshm driver: these modules import only the kernel crate
//! and each other, never `crate::driver`, so that each could be proposed for `rust/kernel/` as
//! it is. Each one offers a safe API that no caller can misuse into a use-after-free; where a
//! precondition cannot be expressed in types, the function is `unsafe` with a `# Safety`
//! section.
//!
//! | module            | what it wraps                                                   |
//! |-------------------|-----------------------------------------------------------------|
//! | [`eventfd`]       | a reference on an eventfd context, signalled from any context   |
//! | [`private_inode`] | an inode of a module-private pseudo filesystem: one address     |
//! |                   | space that many open files share                                |
//! | [`io_mmap`]       | user mappings of device memory, inserted on fault and revocable |
//! | [`pci_address`]   | a device's PCI address, domain included                         |
//! | [`pci_bar`]       | a PCI BAR reserved write-back, whose user mappings are revoked  |
//! |                   | before the reservation is released                              |
//! | [`irq_vectors`]   | MSI-X vectors together with their handlers, freed in order      |
//! | [`mem_type`]      | the memory type (x86 PAT cache mode) a kernel mapping got       |
//! | [`misc_node`]     | a misc device with data its `open` can reach, and `poll`        |

pub(crate) mod eventfd;
pub(crate) mod io_mmap;
pub(crate) mod irq_vectors;
pub(crate) mod mem_type;
pub(crate) mod misc_node;
pub(crate) mod pci_address;
pub(crate) mod pci_bar;
pub(crate) mod private_inode;
