// SPDX-License-Identifier: GPL-2.0

//! Per-device state that open files share with the binding, and its revocation on unbind.

use kernel::{
    io::Io,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    new_mutex,
    num::Bounded,
    page::PAGE_SHIFT,
    pci::DevresBar,
    prelude::*,
    sync::{Arc, Mutex},
};

use crate::{
    file::OpenDevice,
    interrupts::Interrupts,
    raw::{Fault, FileMapping, PfnFault},
    regs, uapi,
};

/// Pages inserted per fault (1 MiB): a sequential pass over the memory takes one fault per
/// window instead of one per page, and a fault stays bounded work.
const FAULT_AROUND_PAGES: usize = 256;

/// What user space may map, and who maps it.
struct MapState {
    /// Set on unbind: no new open, mmap or fault succeeds.
    gone: bool,
    /// Address spaces of open files and how many files use each.
    mappings: KVec<(FileMapping, usize)>,
}

/// The state of one bound device that outlives the binding while files are open.
#[pin_data]
pub(crate) struct Shared {
    /// `GET_INFO`'s answer, less `argsz`.
    info: uapi::Info,
    /// First page frame of the shared-memory BAR.
    shm_pfn: usize,
    /// Size of the shared-memory BAR in pages.
    shm_pages: usize,
    #[pin]
    state: Mutex<MapState>,
    /// The registers; access is revoked when the device is unbound.
    regs: DevresBar<{ regs::BAR0_SIZE }>,
    /// Vectors of the doorbell register (the MSI-X table size, capped); 0 without doorbell.
    doorbell_vectors: u32,
    #[pin]
    interrupts: Interrupts,
}

impl Shared {
    pub(crate) fn new(
        info: uapi::Info,
        shm_start: u64,
        shm_len: u64,
        regs: DevresBar<{ regs::BAR0_SIZE }>,
        doorbell_vectors: u32,
    ) -> Result<Arc<Self>> {
        let interrupts = Interrupts::new(info.nr_vectors.into())?;
        Arc::pin_init(
            try_pin_init!(Self {
                info,
                shm_pfn: usize::try_from(shm_start >> PAGE_SHIFT)?,
                shm_pages: usize::try_from(shm_len >> PAGE_SHIFT)?,
                state <- new_mutex!(MapState { gone: false, mappings: KVec::new() }),
                regs,
                doorbell_vectors,
                interrupts <- interrupts,
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn interrupts(&self) -> &Interrupts {
        &self.interrupts
    }

    /// Interrupt vectors in use.
    pub(crate) fn nr_vectors(&self) -> usize {
        self.info.nr_vectors.into()
    }

    /// Interrupts `vector` of peer `peer_id` through the doorbell register.
    pub(crate) fn ring(&self, peer_id: u32, vector: u32) -> Result {
        if self.info.flags & uapi::INFO_F_DOORBELL == 0 {
            return Err(EOPNOTSUPP);
        }
        let peer = Bounded::<u32, 16>::try_new(peer_id).ok_or(EINVAL)?;
        if vector >= self.doorbell_vectors {
            return Err(EINVAL);
        }
        let vector = Bounded::<u32, 16>::try_new(vector).ok_or(EINVAL)?;
        let regs = self.regs.try_access().ok_or(ENODEV)?;
        regs.write_reg(regs::DOORBELL::zeroed().with_peer(peer).with_vector(vector));
        Ok(())
    }

    /// Enables or masks the INTx interrupt of the device (no effect with MSI-X).
    pub(crate) fn set_intx_enabled(&self, on: bool) {
        if let Some(regs) = self.regs.try_access() {
            regs.write_reg(regs::INTR_MASK::zeroed().with_mask(u32::from(on)));
        }
    }

    /// Reads (and so clears) the INTx status; whether our device raised the interrupt.
    pub(crate) fn take_intx_status(&self) -> bool {
        self.regs
            .try_access()
            .is_some_and(|regs| u32::from(regs.read(regs::INTR_STATUS).status()) != 0)
    }

    /// `ENODEV` once the device is unbound.
    pub(crate) fn check_alive(&self) -> Result {
        if self.state.lock().gone {
            return Err(ENODEV);
        }
        Ok(())
    }

    /// The device's description, or `ENODEV` once it is unbound.
    pub(crate) fn info(&self) -> Result<uapi::Info> {
        self.check_alive()?;
        Ok(self.info)
    }

    /// Records an open file's address space so that [`Self::revoke`] can zap its mappings.
    pub(crate) fn attach(&self, mapping: FileMapping) -> Result {
        let mut state = self.state.lock();
        if state.gone {
            return Err(ENODEV);
        }
        if let Some(entry) = state.mappings.iter_mut().find(|(m, _)| *m == mapping) {
            entry.1 += 1;
        } else {
            state.mappings.push((mapping, 1), GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Undoes one [`Self::attach`]; called when the file is released.
    pub(crate) fn detach(&self, mapping: FileMapping) {
        let mut state = self.state.lock();
        if let Some(entry) = state.mappings.iter_mut().find(|(m, _)| *m == mapping) {
            entry.1 -= 1;
        }
        state.mappings.retain(|(_, opens)| *opens > 0);
    }

    /// Checks a new mapping of `pages` pages at page offset `pgoff`.
    pub(crate) fn check_mmap(&self, pgoff: usize, pages: usize) -> Result {
        if self.state.lock().gone {
            return Err(ENODEV);
        }
        match pgoff.checked_add(pages) {
            Some(end) if pages > 0 && end <= self.shm_pages => Ok(()),
            _ => Err(EINVAL),
        }
    }

    /// Serves a fault on a shared-memory mapping: maps the faulting page and the rest of its
    /// fault-around window, or `SIGBUS` once the device is gone.
    pub(crate) fn fault(&self, fault: &PfnFault) -> Fault {
        // Held across the insertion so that `revoke` cannot zap in between the check and the
        // new page-table entries.
        let state = self.state.lock();
        if state.gone {
            return Fault::SigBus;
        }
        let (start, end) = fault.vma_range();
        let page = 1usize << PAGE_SHIFT;
        let window = FAULT_AROUND_PAGES * page;
        let addr = fault.address();
        let first = core::cmp::max(start, addr & !(window - 1));
        let last = core::cmp::min(end, first.saturating_add(window));
        let pfn_of = |at: usize| {
            let pgoff = fault.pgoff_of(at);
            (pgoff < self.shm_pages).then(|| self.shm_pfn + pgoff)
        };
        // The faulting page must be mapped; the rest of the window is opportunistic.
        let Some(pfn) = pfn_of(addr) else {
            return Fault::SigBus;
        };
        if let Err(e) = fault.insert(addr, pfn) {
            return e;
        }
        let mut at = first;
        while at < last {
            if at != addr {
                match pfn_of(at) {
                    Some(pfn) if fault.insert(at, pfn).is_ok() => {}
                    _ => break,
                }
            }
            at += page;
        }
        Fault::Mapped
    }

    /// Called on unbind: refuses new users and removes every user mapping, so that no process
    /// keeps access to the BAR once the driver lets go of it. Later faults get `SIGBUS`.
    pub(crate) fn revoke(&self) {
        {
            let mut state = self.state.lock();
            state.gone = true;
            for (mapping, _) in state.mappings.iter() {
                mapping.zap_all();
            }
        }
        if self.info.irq_mode == uapi::IRQ_INTX {
            self.set_intx_enabled(false);
        }
        self.interrupts.revoke();
    }
}

/// The misc device of one bound PCI device, with the state its open files share.
///
/// `raw::node_of` finds the `Node` from the registration that `open` is given, which is why
/// the registration is embedded here rather than stored on its own.
#[pin_data]
pub(crate) struct Node {
    /// Declared first so that it is dropped (deregistered) first.
    #[pin]
    pub(crate) misc: MiscDeviceRegistration<OpenDevice>,
    pub(crate) shared: Arc<Shared>,
}

impl Node {
    pub(crate) fn new(name: &'static CStr, shared: Arc<Shared>) -> impl PinInit<Self, Error> {
        // `shared` is written before the device is registered: an `open` may arrive as soon as
        // `misc_register()` returns.
        try_pin_init!(Self {
            shared,
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions { name }),
        })
    }
}
