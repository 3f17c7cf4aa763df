// SPDX-License-Identifier: GPL-2.0

//! Interrupt vectors of a PCI device together with one handler each.
//!
//! An [`irq::Registration`] borrows the [`pci::IrqVectorRegistration`] it was requested from,
//! and must be freed before the vectors are. The kernel crate offers the two as separate values,
//! so a driver that wants to keep both in its driver data would have to store a value next to a
//! borrow of it. [`VectorHandlers`] owns both, the vectors in a box of their own so that their
//! address does not change when the value moves, and drops the handlers first.

use kernel::{
    device::Bound,
    irq,
    pci::{self, IrqTypes, IrqVectorRegistration},
    prelude::*,
};

/// Vectors of a device and a handler of type `H` on each.
pub(crate) struct VectorHandlers<'a, H: irq::Handler + 'static> {
    // Held only to be dropped, before `vectors`, so dropped (each `free_irq()` returning) before the vectors are
    // freed. Both fields are private and never replaced.
    _handlers: KVec<Pin<KBox<irq::Registration<'a, H>>>>,
    vectors: KBox<IrqVectorRegistration<'a>>,
}

impl<'a, H: irq::Handler + 'static> VectorHandlers<'a, H> {
    /// Allocates exactly `count` vectors of the given types for `pdev` and requests a handler
    /// on each, initialised by `handler(index)`.
    pub(crate) fn new<I: PinInit<H, Error> + 'a>(
        pdev: &'a pci::Device<Bound>,
        count: u32,
        types: IrqTypes,
        name: &'static CStr,
        mut handler: impl FnMut(usize) -> I,
    ) -> Result<Self> {
        let vectors = KBox::new(pdev.alloc_irq_vectors(count, count, types)?, GFP_KERNEL)?;
        // SAFETY: The registration lives in its own heap allocation, which does not move when
        // the box (or `Self`) moves, and which is freed only when `Self::vectors` is dropped.
        // Every borrow made here ends up in `Self::handlers`, which is dropped before
        // `Self::vectors` (field order above), and `vectors` is never replaced or handed out
        // mutably. So the borrow outlives every use of it.
        let borrowed: &'a IrqVectorRegistration<'a> = unsafe { &*core::ptr::from_ref(&*vectors) };
        let mut handlers = KVec::with_capacity(borrowed.len(), GFP_KERNEL)?;
        for i in 0..borrowed.len() {
            let request = borrowed.index(i)?.into();
            // SAFETY: The registration is boxed and kept in `handlers` until `Self` is dropped;
            // it is never `mem::forget()`-ed.
            let registration = unsafe {
                irq::Registration::new(request, irq::Flags::TRIGGER_NONE, name, handler(i))
            };
            handlers.push(KBox::pin_init(registration, GFP_KERNEL)?, GFP_KERNEL)?;
        }
        Ok(Self {
            _handlers: handlers,
            vectors,
        })
    }

    /// Number of vectors, each with its handler.
    pub(crate) fn len(&self) -> usize {
        self.vectors.len()
    }
}
