// SPDX-License-Identifier: GPL-2.0

//! sivshm: Secure Inter-VM Shared Memory, guest driver.
//!
//! Binds QEMU's `ivshmem-plain` and `ivshmem-doorbell` devices (PCI 1af4:1110) and gives each
//! one a misc device, `/dev/sivshmN`, through which user space maps the shared memory (BAR2,
//! write-back cached) and queries the device. The host decides which memory and which peers a
//! VM's device reaches (see `Documentation/sivshm.rst`); the driver never parses the shared
//! memory, which is untrusted input.
//!
//! Lifetimes: the binding (`Binding`) owns the misc registration, the BAR2 reservation and
//! the index N. Open files share `device::Shared`, which outlives the binding; on unbind,
//! `Shared::revoke` zaps every user mapping and turns later faults into `SIGBUS` and later
//! calls into `ENODEV`. An open file pins the module, so `rmmod` is refused until `close`.

use kernel::{
    device::{Bound, Core},
    io::Io,
    pci::{self, IrqType, IrqTypes},
    prelude::*,
};

mod device;
mod file;
mod index;
mod interrupts;
mod raw;
mod regs;
mod uapi;

use device::{Node, Shared};
use index::Index;

/// The shared-memory BAR of an ivshmem device.
const SHM_BAR: u32 = 2;
/// The capability ID of MSI-X in a capability header.
const PCI_CAP_ID_MSIX: u8 = 0x11;

struct SivshmDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    <SivshmDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, 0x1110),
        ()
    )]
);

/// The driver data of one bound device. Fields drop in declaration order: the misc device
/// first, then the interrupt handlers (before the vectors they use), then the shared-memory
/// reservation, after `unbind` revoked every user mapping.
#[pin_data]
struct Binding<'bound> {
    #[pin]
    node: Node,
    irqs: raw::IrqRegistrations<'bound>,
    vectors: Option<pci::IrqVectorRegistration<'bound>>,
    _shm: raw::ShmRegion<'bound>,
    _index: Index,
}

/// Size of the MSI-X table, if the device has one: the doorbell vectors of ivshmem-doorbell.
fn msix_table_size(pdev: &pci::Device<Bound>) -> Option<u16> {
    let config = pdev.config_space();
    let status = config.try_read16(0x06).ok()?;
    if status & 0x10 == 0 {
        return None;
    }
    let mut pos = config.try_read8(0x34).ok()? & !3;
    // At most 48 capabilities fit in the 192 bytes after the header: bounds a looping list.
    for _ in 0..48 {
        if pos < 0x40 {
            return None;
        }
        let hdr = config.try_read16(pos as usize).ok()?;
        if hdr as u8 == PCI_CAP_ID_MSIX {
            let control = config.try_read16(pos as usize + 2).ok()?;
            return Some((control & 0x7ff) + 1);
        }
        pos = (hdr >> 8) as u8 & !3;
    }
    None
}

/// Splits the device name `DDDD:BB:SS.F` into its numbers.
fn pci_address(pdev: &pci::Device<Bound>) -> (u32, u8, u8, u8) {
    let devfn = pdev.dev_id();
    let name = pdev.as_ref().name().to_bytes();
    let domain = name
        .split(|&c| c == b':')
        .next()
        .and_then(|d| core::str::from_utf8(d).ok())
        .and_then(|d| u32::from_str_radix(d, 16).ok())
        .unwrap_or(0);
    (
        domain,
        (devfn >> 8) as u8,
        ((devfn >> 3) & 0x1f) as u8,
        (devfn & 7) as u8,
    )
}

/// All MSI-X vectors, or else the INTx line; `None` if the device has neither.
fn alloc_vectors<'a>(
    pdev: &'a pci::Device<Bound>,
    msix: Option<u16>,
    pin: bool,
) -> Option<pci::IrqVectorRegistration<'a>> {
    if let Some(n) = msix {
        let n = u32::from(n).min(uapi::MAX_VECTORS);
        let msix = IrqTypes::default().with(IrqType::MsiX);
        if let Ok(v) = pdev.alloc_irq_vectors(n, n, msix) {
            return Some(v);
        }
    }
    if pin {
        let intx = IrqTypes::default().with(IrqType::Intx);
        return pdev.alloc_irq_vectors(1, 1, intx).ok();
    }
    None
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
            // MSI-X messages are memory writes by the device: without bus mastering the
            // interrupts are silently dropped.
            pdev.set_master();

            let index = Index::claim()?;
            let bar0 = pdev.iomap_region_sized::<{ regs::BAR0_SIZE }>(0, c"sivshm/regs")?;
            let shm = raw::ShmRegion::new(pdev, SHM_BAR, c"sivshm/shm")?;

            // ivshmem-plain has neither doorbell nor interrupts; ivshmem-doorbell has MSI-X
            // (and the legacy device with msi=off an INTx pin instead).
            let msix = msix_table_size(pdev);
            let pin = pdev.config_space().try_read8(0x3d).unwrap_or(0) != 0;
            let doorbell = msix.is_some() || pin;
            let peer_id = if doorbell {
                bar0.read(regs::IV_POSITION).peer().into()
            } else {
                uapi::PEER_ID_NONE
            };
            let doorbell_vectors = match msix {
                Some(n) => u32::from(n).min(uapi::MAX_VECTORS),
                None => u32::from(doorbell),
            };
            let vectors = if doorbell {
                alloc_vectors(pdev, msix, pin)
            } else {
                None
            };
            let (irq_mode, nr_vectors) = match &vectors {
                Some(v) if matches!(v.irq_type(), IrqType::MsiX) => (uapi::IRQ_MSIX, v.len()),
                Some(v) => (uapi::IRQ_INTX, v.len()),
                None => (uapi::IRQ_NONE, 0),
            };
            let intx = irq_mode == uapi::IRQ_INTX;
            let (pci_domain, pci_bus, pci_slot, pci_func) = pci_address(pdev);
            let shm_start = pdev.resource_start(SHM_BAR)?;
            let shm_size = pdev.resource_len(SHM_BAR)?;
            let info = uapi::Info {
                api_version: uapi::API_VERSION,
                shm_size,
                peer_id,
                flags: if doorbell { uapi::INFO_F_DOORBELL } else { 0 },
                nr_vectors: u16::try_from(nr_vectors)?,
                irq_mode,
                pci_domain,
                pci_bus,
                pci_slot,
                pci_func,
                index: index.get(),
                ..Default::default()
            };
            let regs = bar0.into_devres()?;
            let shared = Shared::new(info, shm_start, shm_size, regs, doorbell_vectors)?;
            dev_info!(
                pdev,
                "/dev/{}: {} MiB shared memory, peer id {}, {} vector(s){}\n",
                index.name().to_str().unwrap_or("?"),
                shm_size >> 20,
                peer_id as i32,
                nr_vectors,
                match irq_mode {
                    uapi::IRQ_MSIX => " (MSI-X)",
                    uapi::IRQ_INTX => " (INTx)",
                    _ => "",
                }
            );

            Ok(try_pin_init!(Binding {
                vectors,
                irqs: match vectors {
                    Some(v) => raw::request_irqs(v, &shared, intx)?,
                    None => KVec::new(),
                },
                node <- Node::new(index.name(), shared.clone()),
                // Unmask INTx only once nothing can fail any more: a failed probe must not
                // leave an unclaimed interrupt on a shared line.
                _: {
                    if intx {
                        shared.set_intx_enabled(true);
                    }
                },
                _shm: shm,
                _index: index,
            }))
        })
    }

    fn unbind<'bound>(_pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        this.node.shared.revoke();
    }
}

kernel::module_pci_driver! {
    type: SivshmDriver,
    name: "sivshm",
    authors: ["The sivshm developers"],
    description: "Secure Inter-VM Shared Memory (ivshmem) guest driver",
    license: "GPL v2",
}
