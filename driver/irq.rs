// SPDX-License-Identifier: GPL-2.0

//! The MSI-X handler of one vector: hands the interrupt to the device's [`Interrupts`].
//!
//! [`Interrupts`]: super::interrupts::Interrupts

use kernel::{
    irq::{self, IrqReturn},
    prelude::*,
    sync::Arc,
};

use crate::driver::device::Shared;

/// The handler of one MSI-X vector. It holds the device state, which so outlives it.
#[pin_data]
pub(crate) struct VectorIrq {
    shared: Arc<Shared>,
    vector: usize,
}

impl VectorIrq {
    pub(crate) fn new(shared: Arc<Shared>, vector: usize) -> impl PinInit<Self, Error> {
        try_pin_init!(Self { shared, vector })
    }
}

impl irq::Handler for VectorIrq {
    fn handle(&self) -> IrqReturn {
        // MSI-X vectors are never shared: every interrupt on ours is ours.
        self.shared.interrupts().deliver(self.vector);
        IrqReturn::Handled
    }
}
