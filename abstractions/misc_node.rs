// SPDX-License-Identifier: GPL-2.0

//! A misc device registration together with data that its `open` can reach.
//!
//! In 7.3, [`MiscDevice::open`] receives only the [`MiscDeviceRegistration`], which carries no
//! data of its own. A driver with one misc device per bound device needs to find that device's
//! state: [`MiscNode`] embeds the registration next to the data and finds the one from the other
//! (`container_of`).

use kernel::{
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

/// A registered misc device of type `T` and its data `D`.
#[pin_data]
pub(crate) struct MiscNode<T: MiscDevice, D> {
    /// Declared first so that it is dropped (deregistered) first: once no `open` can start,
    /// `data` may go.
    #[pin]
    registration: MiscDeviceRegistration<T>,
    data: D,
}

impl<T: MiscDevice, D: Send + Sync> MiscNode<T, D> {
    /// Registers a misc device named `name` whose `open` can reach `data`.
    pub(crate) fn new(name: &'static CStr, data: D) -> impl PinInit<Self, Error> {
        // `data` is written before the device is registered: an `open` may arrive as soon as
        // `misc_register()` returns.
        try_pin_init!(Self {
            data,
            registration <- MiscDeviceRegistration::register(MiscDeviceOptions { name }),
        })
    }

    /// The data.
    pub(crate) fn data(&self) -> &D {
        &self.data
    }

    /// The data of the node that embeds `misc`, as given to [`MiscDevice::open`].
    ///
    /// # Safety
    ///
    /// `misc` is the registration of a `MiscNode<T, D>`: every `MiscDeviceRegistration<T>` of
    /// the program is made by [`MiscNode::new`] with this `D`.
    pub(crate) unsafe fn data_of(misc: &MiscDeviceRegistration<T>) -> &D {
        let misc: *const MiscDeviceRegistration<T> = misc;
        // SAFETY: `misc` is the `registration` field of a pinned `MiscNode<T, D>` (safety
        // requirement), so stepping back by the field's offset stays inside that allocation and
        // yields a valid, initialised node. The node outlives the returned reference: it is
        // borrowed from `misc`, which the caller holds, and `misc_open()` holds `misc_mtx`
        // during `open`, so `misc_deregister()` (in the node's drop) cannot complete meanwhile.
        let node = unsafe { &*kernel::container_of!(misc, Self, registration) };
        &node.data
    }
}
