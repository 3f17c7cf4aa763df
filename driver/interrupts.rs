// SPDX-License-Identifier: GPL-2.0

//! Interrupt delivery: the eventfd bound to each vector and the open file that owns it. The
//! handlers that call [`Interrupts::deliver`] are in `irq.rs`.
//!
//! The hard-IRQ path ([`Interrupts::deliver`]) takes one IRQ-safe spinlock and signals at most
//! one eventfd: bounded work, no sleeping lock, and it never touches the shared memory. A peer
//! ringing in a loop only makes an eventfd's counter grow; the hypervisor coalesces rings that
//! arrive while an interrupt is pending.

use kernel::{new_spinlock_irq, prelude::*, sync::SpinLockIrq};

use crate::abstractions::eventfd::EventFd;

/// Identifies an open file, the owner of the bindings it made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId(pub(crate) u64);

/// An eventfd bound to a vector, and who bound it.
struct Bound {
    eventfd: EventFd,
    owner: FileId,
}

struct State {
    /// One slot per vector.
    vectors: KVec<Option<Bound>>,
    /// Set on unbind: bindings are refused.
    gone: bool,
}

#[pin_data]
pub(crate) struct Interrupts {
    #[pin]
    state: SpinLockIrq<State>,
}

impl Interrupts {
    pub(crate) fn new(vectors: usize) -> Result<impl PinInit<Self>> {
        let mut v = KVec::with_capacity(vectors, GFP_KERNEL)?;
        for _ in 0..vectors {
            v.push(None, GFP_KERNEL)?;
        }
        Ok(pin_init!(Self {
            state <- new_spinlock_irq!(State { vectors: v, gone: false }),
        }))
    }

    /// Hard-IRQ context: an interrupt arrived on `vector`.
    pub(crate) fn deliver(&self, vector: usize) {
        if let Some(Some(bound)) = self.state.lock().vectors.get(vector) {
            bound.eventfd.signal();
        }
    }

    /// Binds `eventfd` to `vector` for `owner`, or removes `owner`'s binding (`None`). A vector
    /// bound by another file is `EBUSY`.
    pub(crate) fn bind(&self, vector: usize, eventfd: Option<EventFd>, owner: FileId) -> Result {
        let mut s = self.state.lock();
        if s.gone {
            return Err(ENODEV);
        }
        let slot = s.vectors.get_mut(vector).ok_or(EINVAL)?;
        if slot.as_ref().is_some_and(|b| b.owner != owner) {
            return Err(EBUSY);
        }
        // The previous eventfd, if any, is put here (see `release_owner`).
        *slot = eventfd.map(|eventfd| Bound { eventfd, owner });
        Ok(())
    }

    /// Drops every binding `owner` made; called when that file is released.
    pub(crate) fn release_owner(&self, owner: FileId) {
        let mut s = self.state.lock();
        for slot in s.vectors.iter_mut() {
            if slot.as_ref().is_some_and(|b| b.owner == owner) {
                // Putting an eventfd only frees memory (`kfree`, `ida_free`, both fine under a
                // spinlock).
                *slot = None;
            }
        }
    }

    /// Unbind: signals every bound eventfd once more, so that a waiter wakes up and learns
    /// from its next call that the device is gone, then releases them; refuses new bindings.
    pub(crate) fn revoke(&self) {
        let mut s = self.state.lock();
        s.gone = true;
        for slot in s.vectors.iter_mut() {
            if let Some(b) = slot.take() {
                b.eventfd.signal();
            }
        }
    }
}
