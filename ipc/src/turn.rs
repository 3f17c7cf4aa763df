//! One turn of a gateway's link, and when the link may sleep.
//!
//! The local services are listed by the gateway's [`Lister`] thread, not by the turn: a
//! listing takes milliseconds of a guest's CPU under TCG (20 ms with 4 services, 70 ms with
//! 12), during which a link that listed them itself moved nothing. A turn takes a new
//! listing when the lister published one ([`LocalWakes::follow`]), looks at the peer's
//! offers (a counter of the carrier), and runs the link's discovery (which lists the local
//! services again) only if either changed, or a discovery failed, or `discover_anyway`
//! passed since the last. Retries of a failed discovery and the `discover_anyway` check
//! come every `discover_every`, doubling while nothing changes, up to `discover_at_most`.

use std::time::{Duration, Instant};

use iceoryx2::service::ipc;
use iceoryx2_link::Link;
use iceoryx2_link_tunnel::Tunnel;

use crate::event::Event;
use crate::grant::Grant;
use crate::listing::Lister;
use crate::options::Options;
use crate::wake::LocalWakes;

/// The state of a link's loop between turns.
pub struct Turn<'l> {
    name: String,
    wakes: LocalWakes,
    lister: &'l Lister,
    /// The generation of the last listing followed.
    listing: Option<u64>,
    discover_every: Duration,
    discover_at_most: Duration,
    discover_anyway: Duration,
    /// The interval until the next check of an overdue or failed discovery, doubled while
    /// nothing changes.
    interval: Duration,
    next_look: Instant,
    last_discovery: Option<Instant>,
    discovery_failed: bool,
    peer_generation: Option<u64>,
    check_every: Duration,
    next_check: Instant,
    idle_wait: Duration,
    busy_for: Duration,
    busy_until: Instant,
    last_error: Option<String>,
}

impl<'l> Turn<'l> {
    pub fn new(name: &str, options: &Options, grant: Option<Grant>, lister: &'l Lister) -> Self {
        let now = Instant::now();
        Turn {
            name: name.to_string(),
            wakes: LocalWakes::new(grant),
            lister,
            listing: None,
            discover_every: options.discover_every,
            discover_at_most: options.discover_at_most.max(options.discover_every),
            discover_anyway: options.discover_anyway,
            interval: options.discover_every,
            next_look: now,
            last_discovery: None,
            discovery_failed: false,
            peer_generation: None,
            check_every: options.check_every,
            next_check: now + options.check_every,
            idle_wait: options.idle_wait,
            busy_for: options.busy_for,
            busy_until: now + options.busy_for,
            last_error: None,
        }
    }

    /// The local events that wake the link.
    pub fn wakes(&self) -> &LocalWakes {
        &self.wakes
    }

    /// One turn: the link's discovery if the local services or the peer's offers (`peer`
    /// says their generation, if the carrier can) changed, or it is due; then the
    /// propagation of what is pending.
    pub fn run<C: iceoryx2_link_carrier::Carrier>(
        &mut self,
        link: &mut Link<ipc::Service, Tunnel<C>>,
        peer: impl FnOnce() -> Option<u64>,
        log: &(dyn Fn(Event) + Sync),
    ) {
        let now = Instant::now();
        let generation = self.lister.generation();
        let local = match self.listing == Some(generation) {
            true => false,
            false => {
                self.listing = Some(generation);
                self.wakes.follow(&self.lister.listing(), link.node())
            }
        };
        let offers = peer();
        let remote = offers.is_some() && offers != self.peer_generation;
        self.peer_generation = offers;
        let due = now >= self.next_look;
        let overdue = self
            .last_discovery
            .is_none_or(|t| now.duration_since(t) >= self.discover_anyway);
        if local || remote || (due && (overdue || self.discovery_failed)) {
            self.last_discovery = Some(now);
            let r = link.discover();
            self.discovery_failed = r.is_err();
            if let Err(e) = r {
                self.error(format!("discovery: {e}"), log);
            }
        }
        if local || remote || due {
            self.interval = match local || remote {
                true => self.discover_every,
                false => (self.interval * 2).min(self.discover_at_most),
            };
            self.next_look = now + self.interval;
        }
        self.propagate(link, log);
    }

    /// Moves what is pending on every bridge, both ways.
    pub fn propagate<C: iceoryx2_link_carrier::Carrier>(
        &mut self,
        link: &mut Link<ipc::Service, Tunnel<C>>,
        log: &(dyn Fn(Event) + Sync),
    ) {
        if let Err(e) = link.propagate() {
            self.error(format!("propagation: {e:?}"), log);
        }
    }

    /// Records whether the last turn or wait saw activity.
    pub fn busy(&mut self, active: bool) {
        if active {
            self.busy_until = Instant::now() + self.busy_for;
        }
    }

    /// How long the link may sleep when nothing wakes it: `idle_wait` while busy, else until
    /// the next look, and never longer than `discover_every` (a sample published without
    /// an event waits that long at most).
    pub fn rest(&self) -> Duration {
        let now = Instant::now();
        if now < self.busy_until {
            return self.idle_wait;
        }
        self.next_look
            .saturating_duration_since(now)
            .clamp(self.idle_wait, self.discover_every.max(self.idle_wait))
    }

    fn error(&mut self, what: String, log: &(dyn Fn(Event) + Sync)) {
        if self.last_error.as_ref() != Some(&what) {
            log(Event::Error {
                worker: self.name.clone(),
                what: what.clone(),
            });
            self.last_error = Some(what);
        }
    }

    /// Whether it is time to look at the peer's liveness.
    pub fn check_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_check {
            return false;
        }
        self.next_check = now + self.check_every;
        true
    }
}
