//! A carrier restricted to a worker's grant, for carriers that are not ours (zenoh): offers
//! of the peer outside the grant are left out of the listing and recorded for the gateway
//! to log, once per offer, as [`crate::carrier::SivshmCarrier`] does for its own.
//!
//! The link's filter (`Link::with_filter`) already keeps such services out; this wrapper
//! only makes the refusal visible, and stops the tunnel from resolving what it would drop.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use iceoryx2_bb_elementary::generation::Generation;
use iceoryx2_link_backend::service_description::ServiceDescriptor;
use iceoryx2_link_backend::{Reactive, WakeHandle};
use iceoryx2_link_carrier::{Announcement, Carrier, Offer};

use crate::carrier::Refusal;
use crate::grant::Grant;

/// The refusals of a [`Granted`] carrier, for the loop that drives its link.
#[derive(Clone, Default)]
pub struct Refusals(Rc<RefCell<Vec<Refusal>>>);

impl Refusals {
    /// The refusals since the last call.
    pub fn take(&self) -> Vec<Refusal> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

/// `C` with the peer's offers filtered by a grant (`None`: all pass).
pub struct Granted<C> {
    inner: C,
    grant: Option<Grant>,
    refusals: Refusals,
    /// Offers refused already (logged once while the peer keeps offering them).
    refused: RefCell<BTreeSet<String>>,
}

impl<C> Granted<C> {
    pub fn new(inner: C, grant: Option<Grant>) -> Granted<C> {
        Granted {
            inner,
            grant,
            refusals: Refusals::default(),
            refused: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn refusals(&self) -> Refusals {
        self.refusals.clone()
    }
}

impl<C: Carrier> Carrier for Granted<C> {
    type AnnouncementError = C::AnnouncementError;
    type ListError = C::ListError;
    type ChannelError = C::ChannelError;
    type Channel = C::Channel;

    fn announce(&mut self, announcement: Announcement) -> Result<(), C::AnnouncementError> {
        // The link's filter announces nothing outside the grant.
        self.inner.announce(announcement)
    }

    fn generation(&self) -> Generation {
        self.inner.generation()
    }

    fn offers(&self, callback: &mut dyn FnMut(Offer)) -> Result<(), C::ListError> {
        let Some(grant) = &self.grant else {
            return self.inner.offers(callback);
        };
        let mut offered = BTreeSet::new();
        let mut refused = self.refused.borrow_mut();
        let r = self.inner.offers(&mut |o: Offer| {
            let name = o.descriptor.name.as_str().to_string();
            if grant.admits(&name) {
                callback(o);
                return;
            }
            if refused.insert(name.clone()) {
                self.refusals.0.borrow_mut().push(Refusal {
                    service: name.clone(),
                    why: format!("offered by the peer, not granted (grant: {grant})"),
                });
            }
            offered.insert(name);
        });
        // An offer withdrawn and made again is logged again.
        if r.is_ok() {
            refused.retain(|n| offered.contains(n));
        }
        r
    }

    fn open_channel(
        &mut self,
        descriptor: &ServiceDescriptor,
    ) -> Result<C::Channel, C::ChannelError> {
        self.inner.open_channel(descriptor)
    }
}

impl<C: Reactive> Reactive for Granted<C> {
    fn attach(&mut self, wake: WakeHandle) {
        self.inner.attach(wake);
    }
}
