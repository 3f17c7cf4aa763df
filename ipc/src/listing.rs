//! The local services, listed by one thread of a gateway for all its links.
//!
//! A listing of every local service costs a read of each one's configuration and a look at
//! the nodes that hold its ports (under TCG 20 ms with 4 services, 70 ms with 12). A link
//! that listed them itself stood still meanwhile, and a manager's gateway listed them once
//! per worker. A [`Lister`] lists them on a thread of its own and publishes each listing
//! that differs from the last; a link's turn takes a new one when [`Lister::generation`]
//! moved (one atomic load otherwise, [`crate::turn`]).
//!
//! It lists every `every` while the services change, doubles the interval with every
//! listing that finds no change, up to `at_most`; and never sooner than [`BUSY_SHARE`]
//! times the last listing's own time after it, so that listing takes at most a fifth of a
//! CPU (under TCG, where one listing of a dozen services takes 70 ms, a new service is so
//! found within about 300 ms while services come and go; natively within `every`). A
//! failed listing is published too (with the last services, marked failed): the links run
//! their discovery then.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use iceoryx2::identifiers::UniqueNodeId;
use iceoryx2::node::{NodeState, NodeView};
use iceoryx2::prelude::CallbackProgression;
use iceoryx2::service::ipc;
use iceoryx2::service::static_config::messaging_pattern::MessagingPattern;
use iceoryx2::service::Service;

/// The least interval between two listings, in multiples of the last listing's time.
pub const BUSY_SHARE: u32 = 4;

/// One local service as a listing found it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub name: String,
    /// What tells this service from an earlier one of the same name.
    pub id: String,
    pub event: bool,
    /// The nodes that hold a port on it (the dead left out).
    pub holders: Vec<UniqueNodeId>,
}

impl Listed {
    /// Whether a node other than `own` holds a port on it.
    pub fn held_by_others(&self, own: &UniqueNodeId) -> bool {
        self.holders.iter().any(|h| h != own)
    }
}

/// A listing, as published.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub services: Vec<Listed>,
    /// The listing failed: `services` are the last ones found.
    pub failed: bool,
}

/// Lists the local services of the iceoryx2 system of `config`, sorted.
pub fn list(config: &iceoryx2::config::Config) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    ipc::Service::list(config, |details| {
        let s = &details.static_details;
        let holders = details
            .dynamic_details
            .as_ref()
            .map(|d| {
                d.nodes
                    .iter()
                    .filter_map(|n| match n {
                        NodeState::Alive(v) => Some(*v.id()),
                        NodeState::Inaccessible(id) | NodeState::Undefined(id) => Some(*id),
                        NodeState::Dead(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Listed {
            name: s.name().as_str().to_string(),
            id: format!("{:?}", s.unique_service_id()),
            event: matches!(s.messaging_pattern(), MessagingPattern::Event(_)),
            holders,
        });
        CallbackProgression::Continue
    })
    .map_err(|e| format!("listing the local iceoryx2 services: {e:?}"))?;
    for l in &mut out {
        l.holders.sort();
    }
    out.sort();
    Ok(out)
}

struct Shared {
    stop: AtomicBool,
    generation: AtomicU64,
    listing: Mutex<Arc<Listing>>,
    /// Wakes the thread early to stop.
    nap: (Mutex<()>, Condvar),
}

/// The thread that lists the local services for a gateway's links; stopped when dropped.
pub struct Lister {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Lister {
    /// Starts listing the services of the iceoryx2 system of `config`.
    pub fn spawn(config: iceoryx2::config::Config, every: Duration, at_most: Duration) -> Lister {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            listing: Mutex::new(Arc::new(Listing::default())),
            nap: (Mutex::new(()), Condvar::new()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sivshm-iox2-list".into())
            .spawn(move || run(&s, &config, every, at_most.max(every)))
            .ok();
        Lister { shared, thread }
    }

    /// Moves with every listing published (0: none yet).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// The last listing published.
    pub fn listing(&self) -> Arc<Listing> {
        match self.shared.listing.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn run(s: &Shared, config: &iceoryx2::config::Config, every: Duration, at_most: Duration) {
    let mut interval = every;
    let mut last: Option<Vec<Listed>> = None;
    while !s.stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let listed = list(config);
        let took = began.elapsed();
        let publish = match listed {
            Ok(services) if last.as_ref() == Some(&services) => None,
            Ok(services) => {
                last = Some(services.clone());
                Some(Listing {
                    services,
                    failed: false,
                })
            }
            Err(_) => Some(Listing {
                services: last.clone().unwrap_or_default(),
                failed: true,
            }),
        };
        interval = match publish {
            Some(listing) => {
                match s.listing.lock() {
                    Ok(mut l) => *l = Arc::new(listing),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(listing),
                }
                s.generation.fetch_add(1, Ordering::AcqRel);
                every
            }
            None => (interval * 2).min(at_most),
        };
        let nap = interval.max(took * BUSY_SHARE);
        let (lock, cv) = &s.nap;
        if let Ok(g) = lock.lock() {
            if !s.stop.load(Ordering::Relaxed) {
                let _ = cv.wait_timeout(g, nap);
            }
        }
    }
}

impl Drop for Lister {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let (lock, cv) = &self.shared.nap;
        let _guard = lock.lock();
        cv.notify_all();
        drop(_guard);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
