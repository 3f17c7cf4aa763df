// SPDX-License-Identifier: GPL-2.0

//! Per-device state that open files share with the binding, and its revocation on unbind.

use kernel::{
    fs::File,
    io::Io,
    new_poll_condvar,
    num::Bounded,
    pci::DevresBar,
    prelude::*,
    sync::{
        atomic::{Acquire, AtomicFlag, Release},
        poll::{PollCondVar, PollTable},
        Arc,
    },
};

use crate::{
    abstractions::{
        io_mmap::IoMmap,
        misc_node::{EPOLLERR, EPOLLHUP},
    },
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
    /// Woken on unbind: what a `poll` of the node sleeps on.
    #[pin]
    removal: PollCondVar,
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
                removal <- new_poll_condvar!("sivshm/removal"),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn interrupts(&self) -> &Interrupts {
        &self.interrupts
    }

    pub(crate) fn mappings(&self) -> &Arc<IoMmap> {
        &self.mappings
    }

    /// `poll` of the node: nothing while the device is bound, `EPOLLHUP | EPOLLERR` once it is
    /// gone, so that the node can sit in an epoll set beside the eventfds.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        // Registered before the flag is read: an unbind after the read wakes this table.
        table.register_wait(file, &self.removal);
        if self.gone.load(Acquire) {
            EPOLLHUP | EPOLLERR
        } else {
            0
        }
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

    /// Called on unbind: refuses new users, points every user mapping at the stand-in page
    /// (so that no process keeps access to the BAR once the driver lets go of it, and none
    /// dies of it), and wakes every eventfd waiter and every poller of the node.
    pub(crate) fn revoke(&self) {
        self.gone.store(true, Release);
        self.mappings.revoke();
        self.interrupts.revoke();
        self.removal.notify_all();
    }
}
