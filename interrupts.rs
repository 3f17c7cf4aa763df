// SPDX-License-Identifier: GPL-2.0

//! Interrupt delivery: per-vector counters, the eventfd bound to each vector, and the
//! blocking `read()` of counters.
//!
//! The hard-IRQ path (`deliver`) takes one IRQ-safe spinlock, bumps a counter, signals at
//! most one eventfd and wakes readers: bounded work, no sleeping lock, and it never touches
//! the shared memory. A peer ringing in a loop only makes the counters grow; the hypervisor
//! coalesces rings that arrive while an interrupt is pending.

use kernel::{
    irq::{self, IrqReturn},
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{Arc, CondVar, SpinLockIrq},
};

use crate::{device::Shared, raw::EventFd};

/// One vector.
struct Vector {
    /// Interrupts delivered since probe.
    count: u64,
    /// The bound eventfd and the id of the open file that bound it.
    eventfd: Option<(EventFd, u64)>,
}

struct State {
    vectors: KVec<Vector>,
    /// Set on unbind: readers return `ENODEV`, bindings are refused.
    gone: bool,
}

impl State {
    fn copy_counts(&self, out: &mut [u64]) {
        for (out, v) in out.iter_mut().zip(self.vectors.iter()) {
            *out = v.count;
        }
    }
}

#[pin_data]
pub(crate) struct Interrupts {
    #[pin]
    state: SpinLockIrq<State>,
    #[pin]
    readers: CondVar,
}

impl Interrupts {
    pub(crate) fn new(vectors: usize) -> Result<impl PinInit<Self>> {
        let mut v = KVec::with_capacity(vectors, GFP_KERNEL)?;
        for _ in 0..vectors {
            v.push(
                Vector {
                    count: 0,
                    eventfd: None,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(pin_init!(Self {
            state <- new_spinlock_irq!(State { vectors: v, gone: false }),
            readers <- new_condvar!(),
        }))
    }

    /// Hard-IRQ context: an interrupt arrived on `vector`.
    pub(crate) fn deliver(&self, vector: usize) {
        {
            let mut s = self.state.lock();
            if let Some(v) = s.vectors.get_mut(vector) {
                v.count = v.count.wrapping_add(1);
                if let Some((eventfd, _)) = &v.eventfd {
                    eventfd.signal();
                }
            }
        }
        self.readers.notify_all();
    }

    /// Binds `eventfd` (or nothing) to `vector` on behalf of open file `owner`.
    pub(crate) fn bind(&self, vector: usize, eventfd: Option<EventFd>, owner: u64) -> Result {
        let mut s = self.state.lock();
        if s.gone {
            return Err(ENODEV);
        }
        let v = s.vectors.get_mut(vector).ok_or(EINVAL)?;
        // The previous eventfd, if any, is released here.
        v.eventfd = eventfd.map(|e| (e, owner));
        Ok(())
    }

    /// Drops every binding `owner` made; called when that file is released.
    pub(crate) fn release_owner(&self, owner: u64) {
        let mut s = self.state.lock();
        for v in s.vectors.iter_mut() {
            if v.eventfd.as_ref().is_some_and(|(_, o)| *o == owner) {
                // Putting an eventfd context only frees memory: fine under a spinlock.
                v.eventfd = None;
            }
        }
    }

    /// Waits until some counter differs from `seen`, then stores the counters in `now`.
    pub(crate) fn wait_for_change(&self, seen: &[u64], now: &mut [u64], nonblock: bool) -> Result {
        let mut s = self.state.lock();
        loop {
            if s.gone {
                return Err(ENODEV);
            }
            if s.vectors.iter().zip(seen).any(|(v, seen)| v.count != *seen) {
                s.copy_counts(now);
                return Ok(());
            }
            if nonblock {
                return Err(EAGAIN);
            }
            if self.readers.wait_interruptible(&mut s) {
                return Err(ERESTARTSYS);
            }
        }
    }

    /// The counters now.
    pub(crate) fn counts(&self, now: &mut [u64]) {
        self.state.lock().copy_counts(now);
    }

    /// Unbind: releases every eventfd and wakes every reader with `ENODEV`.
    pub(crate) fn revoke(&self) {
        {
            let mut s = self.state.lock();
            s.gone = true;
            for v in s.vectors.iter_mut() {
                v.eventfd = None;
            }
        }
        self.readers.notify_all();
    }
}

/// The handler of one MSI-X vector, or of the INTx line.
#[pin_data]
pub(crate) struct VectorIrq {
    shared: Arc<Shared>,
    vector: usize,
    intx: bool,
}

impl VectorIrq {
    pub(crate) fn new(shared: Arc<Shared>, vector: usize, intx: bool) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            shared,
            vector,
            intx
        })
    }
}

impl irq::Handler for VectorIrq {
    fn handle(&self) -> IrqReturn {
        // The INTx line may be shared: only claim it if our status register says so.
        if self.intx && !self.shared.take_intx_status() {
            return IrqReturn::None;
        }
        self.shared.interrupts().deliver(self.vector);
        IrqReturn::Handled
    }
}
