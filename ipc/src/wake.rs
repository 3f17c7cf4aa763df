//! What wakes a gateway's link: the peer (the channel's doorbell, or the zenoh link's wake
//! listener) and the local applications' events.
//!
//! iceoryx2 gives a subscriber nothing to sleep on: an application wakes a reader with an
//! event (a notifier beside its publisher), and the job and the benchmark do. So a link
//! keeps, on its own node, a listener on every local event service its grant admits that an
//! application holds a port on ([`LocalWakes::follow`], with each new listing of the
//! services), and sleeps on those and the peer's descriptor at once ([`LocalWakes::wait`]):
//! a sample published and notified is relayed at once. The link's own notifications skip
//! listeners of its node (`Notifier::__internal_notify` with `skip_self_deliver`), so what
//! it relays from the peer does not wake it again. A sample published without an event is
//! found by the next turn the gateway's fallback timeout allows (see `gateway::Options`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use iceoryx2::node::Node;
use iceoryx2::port::listener::Listener;
use iceoryx2::service::ipc;
use iceoryx2::service::service_name::ServiceName;
use iceoryx2_bb_posix::file_descriptor::{FileDescriptor, FileDescriptorBased};
use iceoryx2_bb_posix::file_descriptor_set::{
    FileDescriptorSet, FileEvent, SynchronousMultiplexing,
};

use crate::grant::Grant;
use crate::listing::Listing;

/// Listeners of a link's node on the local event services it may relay.
pub struct LocalWakes {
    grant: Option<Grant>,
    /// The admitted local services others hold a port on, by name and creation, as the last
    /// listing found them.
    seen: BTreeSet<(String, String)>,
    listeners: BTreeMap<String, Listener<ipc::Service>>,
    /// Services whose listener could not be made (full, gone): not tried again.
    failed: BTreeMap<String, String>,
}

/// A descriptor someone else owns, to wait on beside the listeners.
pub struct Borrowed(FileDescriptor);

impl Borrowed {
    /// None for a descriptor iceoryx2 cannot wait on (negative, closed).
    pub fn new(fd: BorrowedFd<'_>) -> Option<Borrowed> {
        FileDescriptor::non_owning_new(fd.as_raw_fd()).map(Borrowed)
    }
}

impl FileDescriptorBased for Borrowed {
    fn file_descriptor(&self) -> &FileDescriptor {
        &self.0
    }
}

impl SynchronousMultiplexing for Borrowed {}

impl LocalWakes {
    pub fn new(grant: Option<Grant>) -> LocalWakes {
        LocalWakes {
            grant,
            seen: BTreeSet::new(),
            listeners: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// How many local event services wake the link.
    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Listens on the admitted local event services of `listing` that a node other than
    /// `node` holds a port on, and lets go of those no longer there. True if the admitted
    /// local services (of any pattern) others hold a port on changed since the last call,
    /// or the listing failed (it leaves everything as it is; the link's discovery is then
    /// due).
    pub fn follow(&mut self, listing: &Listing, node: &Node<ipc::Service>) -> bool {
        if listing.failed {
            return true;
        }
        let own = node.id();
        let mut seen = BTreeSet::new();
        let mut events = Vec::new();
        for l in &listing.services {
            let admitted = self.grant.as_ref().is_none_or(|g| g.admits(&l.name));
            if admitted && l.held_by_others(own) {
                seen.insert((l.name.clone(), l.id.clone()));
                if l.event {
                    events.push(l.name.clone());
                }
            }
        }
        let changed = seen != self.seen;
        self.seen = seen;
        self.listeners.retain(|k, _| events.contains(k));
        self.failed.retain(|k, _| events.contains(k));
        for name in events {
            if self.listeners.contains_key(&name) || self.failed.contains_key(&name) {
                continue;
            }
            let listener = ServiceName::new(&name)
                .map_err(|e| format!("{e:?}"))
                .and_then(|service| {
                    node.service_builder(&service)
                        .event()
                        .open()
                        .map_err(|e| format!("{e:?}"))
                })
                .and_then(|f| f.listener_builder().create().map_err(|e| format!("{e:?}")));
            match listener {
                Ok(l) => {
                    self.listeners.insert(name, l);
                }
                Err(e) => {
                    self.failed.insert(name, e);
                }
            }
        }
        changed
    }

    /// Sleeps until a local application notifies, something of `peer` is readable, or
    /// `timeout` passes; then takes in the notifications of the listeners that woke it (the
    /// link's own listener has its copy). Only those: under TCG every `try_wait` of an
    /// iceoryx2 listener costs a system call and a sweep of its whole event-id set, and the
    /// others have nothing. An interrupted or failed wait counts as a short sleep: the
    /// caller's loop looks again. True if something woke it before the timeout.
    pub fn wait(&self, peer: &[&dyn SynchronousMultiplexing], timeout: Duration) -> bool {
        let set = FileDescriptorSet::new();
        let mut guards = Vec::new();
        for l in self.listeners.values() {
            if let Ok(g) = set.add(l) {
                guards.push(g);
            }
        }
        for p in peer {
            if let Ok(g) = set.add(*p) {
                guards.push(g);
            }
        }
        let mut ready = Vec::new();
        let woken = matches!(
            set.timed_wait(timeout, FileEvent::Read, |fd| ready.push(raw(fd))),
            Ok(n) if n > 0
        );
        drop(guards);
        for l in self.listeners.values() {
            if ready.contains(&raw(l.file_descriptor())) {
                let _ = l.try_wait(|_| {});
            }
        }
        woken
    }
}

/// What tells one descriptor from another: its number. iceoryx2 hands the number out only
/// through an `unsafe` accessor, and its `Debug` starts with it (`FileDescriptor { value: 7,
/// is_owned: .. }`); the set's callback gives a non-owning copy, so the whole `Debug` (or
/// `==`, which compares the ownership too) would not match the listener's own.
fn raw(fd: &FileDescriptor) -> String {
    let d = format!("{fd:?}");
    match d.split_once(',') {
        Some((number, _)) => number.to_string(),
        None => d,
    }
}
