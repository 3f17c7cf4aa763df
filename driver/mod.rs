// SPDX-License-Identifier: GPL-2.0

//! The sivshm PCI driver: binds QEMU's `ivshmem-plain` and `ivshmem-doorbell` devices and gives
//! each a misc device, `/dev/sivshmN`.
//!
//! | module         | what it holds                                                     |
//! |----------------|-------------------------------------------------------------------|
//! | this one       | probe and unbind: what a bound device owns ([`Binding`])          |
//! | [`device`]     | the state open files share with the binding, and its revocation  |
//! | [`file`]       | an open file: `mmap` and the ioctls                               |
//! | [`interrupts`] | the eventfd bound to each vector and the file that owns it        |
//! | [`irq`]        | the MSI-X handler of a vector                                     |
//! | [`names`]      | the N of `/dev/sivshmN`                                           |
//! | [`regs`]       | the BAR0 registers                                                |
//! | [`uapi`]       | the Rust mirror of `uapi/linux/sivshm.h`                          |
//!
//! Lifetimes: the binding owns the misc device, the MSI-X handlers, the BAR2 reservation and
//! the node's name. Open files share [`Shared`], which outlives the binding; on unbind
//! [`Shared::revoke`] zaps every user mapping, turns later faults into `SIGBUS` and later calls
//! into `ENODEV`, and wakes every eventfd waiter. An open file pins the module, so `rmmod` is
//! refused until `close`.

mod device;
mod file;
mod interrupts;
mod irq;
mod names;
mod regs;
mod uapi;

use kernel::{
    device::{Bound, Core},
    io::Io,
    pci::{self, IrqType, IrqTypes},
    prelude::*,
};

use crate::abstractions::{
    irq_vectors::VectorHandlers,
    pci_bar::{msix_table_size, MappableBar},
};
use device::Shared;
use file::Node;
use irq::VectorIrq;
use names::NodeName;

/// The register BAR of an ivshmem device.
const REGS_BAR: u32 = 0;
/// The shared-memory BAR of an ivshmem device.
const SHM_BAR: u32 = 2;

pub(crate) struct SivshmDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    <SivshmDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, 0x1110),
        ()
    )]
);

/// What a bound device owns. Fields drop in declaration order: the misc device first (no new
/// `open`), then the interrupt handlers and their vectors, then the shared-memory reservation
/// (which revokes every user mapping again before it lets go of the BAR), then the name.
#[pin_data]
pub(crate) struct Binding<'bound> {
    #[pin]
    node: Node,
    _irqs: Option<VectorHandlers<'bound, VectorIrq>>,
    _shm: MappableBar<'bound>,
    _name: NodeName,
}

/// The PCI address `(domain, bus, slot, function)` of `pdev`.
fn pci_address(pdev: &pci::Device<Bound>) -> (u32, u8, u8, u8) {
    let id = pdev.dev_id();
    // The domain is only in the device's name, `DDDD:BB:SS.F`.
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

impl pci::Driver for SivshmDriver {
    type IdInfo = ();
    type Data<'bound> = Binding<'bound>;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            pdev.enable_device_mem()?;
            // MSI-X messages are memory writes by the device: without bus mastering they are
            // silently dropped.
            pdev.set_master();

            let name = NodeName::claim()?;
            let regs = pdev.iomap_region_sized::<{ regs::BAR0_SIZE }>(REGS_BAR, c"sivshm/regs")?;
            let shm = MappableBar::new(pdev, SHM_BAR, c"sivshm/shm")
                .inspect_err(|e| dev_err!(pdev, "cannot reserve the shared memory: {e:?}\n"))?;

            // ivshmem-plain has no doorbell and no interrupts; ivshmem-doorbell has both, its
            // interrupts through MSI-X only (QEMU's ivshmem devices have had no INTx pin since
            // QEMU 4.0).
            let msix = msix_table_size(pdev);
            let doorbell = msix.is_some();
            let nr_vectors = msix.unwrap_or(0).min(uapi::MAX_VECTORS);
            let peer_id = if doorbell {
                regs.read(regs::IV_POSITION).peer().into()
            } else {
                uapi::PEER_ID_NONE
            };
            let (pci_domain, pci_bus, pci_slot, pci_func) = pci_address(pdev);
            let info = uapi::Info {
                flags: if doorbell { uapi::INFO_F_DOORBELL } else { 0 },
                shm_size: pdev.resource_len(SHM_BAR)?,
                peer_id,
                nr_vectors: u16::try_from(nr_vectors)?,
                pci_domain,
                pci_bus,
                pci_slot,
                pci_func,
                index: name.index(),
                ..Default::default()
            };
            let shared = Shared::new(info, shm.mappings().clone(), regs.into_devres()?)?;
            let irqs = if doorbell {
                let msix_only = IrqTypes::default().with(IrqType::MsiX);
                let handlers = VectorHandlers::new(pdev, nr_vectors, msix_only, c"sivshm", |v| {
                    VectorIrq::new(shared.clone(), v)
                })
                .inspect_err(|e| {
                    dev_err!(pdev, "cannot enable {nr_vectors} MSI-X vector(s): {e:?}\n")
                })?;
                Some(handlers)
            } else {
                None
            };
            dev_info!(
                pdev,
                "/dev/{}: {} MiB shared memory, peer id {}, {} MSI-X vector(s)\n",
                name.name().to_str().unwrap_or("?"),
                info.shm_size >> 20,
                peer_id as i32,
                irqs.as_ref().map_or(0, |h| h.len()),
            );

            Ok(try_pin_init!(Binding {
                _irqs: irqs,
                _shm: shm,
                node <- Node::new(name.name(), shared),
                _name: name,
            }))
        })
    }

    fn unbind<'bound>(_pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        this.node.data().revoke();
    }
}
