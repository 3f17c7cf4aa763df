// SPDX-License-Identifier: GPL-2.0

//! Per-device state that open files share with the binding, and its revocation on unbind.

use kernel::{
    io::Io,
    num::Bounded,
    pci::DevresBar,
    prelude::*,
    sync::{
        atomic::{Acquire, AtomicFlag, Release},
        Arc,
    },
};

use crate::{
    abstractions::io_mmap::IoMmap,
    driver::{interrupts::Interrupts, regs, uapi},
};

/// The state of one bound device. It outlives the binding while files are open.
#[pin_data]
pub(crate) struct Shared {
    /// `GET_INFO`'s answer, less `argsz`.
    info: uapi::Info,
    /// Set on unbind; read without a lock by every call.
    gone: AtomicFlag,
    /// The user mappings of the shared memory; revoked on unbind.
    mappings: Arc<IoMmap>,
    /// The registers; access is revoked when the device is unbound.
    regs: DevresBar<{ regs::BAR0_SIZE }>,
    #[pin]
    interrupts: Interrupts,
}

impl Shared {
    pub(crate) fn new(
        info: uapi::Info,
        mappings: Arc<IoMmap>,
        regs: DevresBar<{ regs::BAR0_SIZE }>,
    ) -> Result<Arc<Self>> {
        let interrupts = Interrupts::new(info.nr_vectors.into())?;
        Arc::pin_init(
            try_pin_init!(Self {
                info,
                gone: AtomicFlag::new(false),
                mappings,
                regs,
                interrupts <- interrupts,
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn interrupts(&self) -> &Interrupts {
        &self.interrupts
    }

    pub(crate) fn mappings(&self) -> &IoMmap {
        &self.mappings
    }

    /// Interrupt vectors in use.
    pub(crate) fn nr_vectors(&self) -> usize {
        self.info.nr_vectors.into()
    }

    /// `ENODEV` once the device is unbound.
    pub(crate) fn check_alive(&self) -> Result {
        if self.gone.load(Acquire) {
            return Err(ENODEV);
        }
        Ok(())
    }

    /// The device's description.
    pub(crate) fn info(&self) -> uapi::Info {
        self.info
    }

    /// Interrupts `vector` of peer `peer_id` through the doorbell register.
    pub(crate) fn ring(&self, peer_id: u32, vector: u32) -> Result {
        if self.info.flags & uapi::INFO_F_DOORBELL == 0 {
            return Err(EOPNOTSUPP);
        }
        let peer = Bounded::<u32, 16>::try_new(peer_id).ok_or(EINVAL)?;
        if vector >= u32::from(self.info.nr_vectors) {
            return Err(EINVAL);
        }
        let vector = Bounded::<u32, 16>::try_new(vector).ok_or(EINVAL)?;
        // The registers' access is revoked by the driver core on unbind, independently of
        // `gone`: a ring racing with unbind gets `ENODEV` either here or from `check_alive`.
        let regs = self.regs.try_access().ok_or(ENODEV)?;
        regs.write_reg(regs::DOORBELL::zeroed().with_peer(peer).with_vector(vector));
        Ok(())
    }

    /// Called on unbind: refuses new users, removes every user mapping (so that no process
    /// keeps access to the BAR once the driver lets go of it), and wakes every eventfd waiter.
    pub(crate) fn revoke(&self) {
        self.gone.store(true, Release);
        self.mappings.revoke();
        self.interrupts.revoke();
    }
}
