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
//! [`Shared::revoke`] zaps every user mapping, maps a driver-owned stand-in page on later
//! faults (no process dies of a removal), turns later calls into `ENODEV`, and wakes every
//! eventfd waiter and every poller of the node. An open file pins the module, so `rmmod` is
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
    mem_type::MemType,
    pci_address::pci_address,
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

/// `SIVSHM_MEM_TYPE_*` of a memory type.
fn uapi_mem_type(t: Option<MemType>) -> u32 {
    match t {
        None => uapi::MEM_TYPE_UNKNOWN,
        Some(MemType::WriteBack) => uapi::MEM_TYPE_WB,
        Some(MemType::WriteCombining) => uapi::MEM_TYPE_WC,
        Some(MemType::UncachedMinus) => uapi::MEM_TYPE_UC_MINUS,
        Some(MemType::Uncached) => uapi::MEM_TYPE_UC,
        Some(MemType::WriteThrough) => uapi::MEM_TYPE_WT,
        Some(MemType::WriteProtect) => uapi::MEM_TYPE_WP,
    }
}

/// The one warning of a device whose shared memory is not write-back.
fn warn_not_write_back(pdev: &pci::Device<Bound>, t: Option<MemType>) {
    let start = pdev.resource_start(SHM_BAR).unwrap_or(0);
    let name = t.map_or("unknown (PAT disabled)", MemType::name);
    dev_warn!(
        pdev,
        "shared memory at {:#x} is {}, not write-back: on AMD, TDX and PAT-honouring Intel KVM \
         hosts every access to it is uncached. The firmware's MTRRs mark the BAR's range \
         uncached (the 32-bit PCI hole); have the host place the BAR above 4 GiB (see \
         Documentation/memory-type.rst)\n",
        start,
        name,
    );
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
            let mem_type = shm.mem_type();
            if mem_type != Some(MemType::WriteBack) {
                warn_not_write_back(pdev, mem_type);
            }
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
                mem_type: uapi_mem_type(mem_type),
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
