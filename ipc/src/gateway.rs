//! The gateway: one iceoryx2 link per worker, each over that worker's own sivshm channel (or
//! over zenoh for a worker on another host), each restricted to that worker's grant.
//!
//! In the manager VM the gateway runs one thread per worker; a worker's link exports the
//! local services its grant admits and mirrors the granted services the worker offers. A
//! worker whose channel fails (its peer hostile, gone or removed) ends its own thread with
//! an [`Event::Failed`]; the others go on. In a worker VM the gateway runs the one link to
//! its manager, unrestricted.
//!
//! The loop of a link: look for new and gone services (local ones and the peer's) every
//! [`Options::discover_every`], move pending samples and notifications every turn, and
//! sleep on the channel's doorbell for up to [`Options::idle_wait`] when a turn moved
//! nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use iceoryx2::node::NodeBuilder;
use iceoryx2::prelude::SignalHandlingMode;
use iceoryx2::service::ipc;
use iceoryx2_integrations_zenoh_link_carrier::ZenohCarrier;
use iceoryx2_link::Link;
use iceoryx2_link_tunnel::Tunnel;
use sivshm::channel::{Channel, Role};
use sivshm::Device;

use crate::carrier::{self, SessionHandle, SivshmCarrier};
use crate::config::{Config, Via};
use crate::grant::Grant;

/// What a gateway tells its operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The link to `worker` is up.
    Up { worker: String, via: String },
    /// A service was refused: the worker offered it outside its grant, or it was not
    /// announced to the worker.
    Refused {
        worker: String,
        service: String,
        why: String,
    },
    /// A sample or a notification could not be relayed (the link goes on).
    Error { worker: String, what: String },
    /// The link to `worker` ended with this error (the others go on).
    Failed { worker: String, error: String },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Up { worker, via } => write!(f, "{worker}: link up over {via}"),
            Event::Refused {
                worker,
                service,
                why,
            } => write!(f, "{worker}: refused service {service:?}: {why}"),
            Event::Error { worker, what } => write!(f, "{worker}: {what}"),
            Event::Failed { worker, error } => write!(f, "{worker}: link ended: {error}"),
        }
    }
}

/// Choices of the user.
#[derive(Clone, Debug)]
pub struct Options {
    /// The local iceoryx2 system's configuration.
    pub iceoryx2: iceoryx2::config::Config,
    /// The sivshm channels' configuration.
    pub channel: sivshm::channel::Config,
    /// How often a link looks for new and gone services.
    pub discover_every: Duration,
    /// The longest a link sleeps after a turn that moved nothing.
    pub idle_wait: Duration,
    /// How long the manager's side waits for a worker's gateway to attach.
    pub attach_timeout: Duration,
    /// How often a link looks at its peer's liveness.
    pub check_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iceoryx2: iceoryx2::config::Config::default(),
            channel: sivshm::channel::Config::default(),
            discover_every: Duration::from_millis(20),
            idle_wait: Duration::from_millis(1),
            attach_timeout: Duration::from_secs(120),
            check_every: Duration::from_millis(500),
        }
    }
}

/// Runs the gateway of `config` until `stop` is set. A manager returns once every worker's
/// link ended; its result is an error if all of them failed.
pub fn run(
    config: &Config,
    options: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    match config {
        Config::Worker { name, via } => serve(name, via, Role::Worker, None, options, stop, log),
        Config::Manager { workers } => {
            let failed = std::thread::scope(|scope| {
                let threads: Vec<_> = workers
                    .iter()
                    .map(|w| {
                        scope.spawn(move || {
                            let r = serve(
                                &w.name,
                                &w.via,
                                Role::Manager,
                                Some(w.grant.clone()),
                                options,
                                stop,
                                log,
                            );
                            if let Err(e) = &r {
                                log(Event::Failed {
                                    worker: w.name.clone(),
                                    error: format!("{e:#}"),
                                });
                            }
                            r.is_err()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap_or(true))
                    .filter(|&f| f)
                    .count()
            });
            if failed == workers.len() {
                return Err(anyhow!("every worker's link failed"));
            }
            Ok(())
        }
    }
}

fn serve(
    name: &str,
    via: &Via,
    role: Role,
    grant: Option<Grant>,
    options: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    match via {
        Via::Sivshm(path) => {
            // A path (/dev/sivshm0), or a PCI address (0000:00:04.0) to find the device by.
            let device = match path.is_absolute() {
                true => Device::open(path),
                false => Device::find(&path.to_string_lossy()),
            };
            let device = device.with_context(|| format!("opening {}", path.display()))?;
            let channel = Channel::on_device(&device, role, options.channel.clone())
                .with_context(|| format!("sivshm channel on {}", path.display()))?;
            serve_channel(name, channel, grant, options, stop, log)
        }
        Via::Zenoh(endpoint) => serve_zenoh(name, endpoint, role, grant, options, stop, log),
    }
}

fn link<C: iceoryx2_link_carrier::Carrier>(
    carrier: C,
    grant: Option<Grant>,
    options: &Options,
) -> Result<Link<ipc::Service, Tunnel<C>>> {
    let node = NodeBuilder::new()
        .config(&options.iceoryx2)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| anyhow!("creating the gateway's iceoryx2 node: {e:?}"))?;
    let link = Link::new(node, Tunnel::new(carrier, &options.iceoryx2));
    Ok(match grant {
        Some(g) => link.with_filter(move |n| g.admits(n.as_str())),
        None => link,
    })
}

/// Serves one link over an open sivshm channel until `stop` is set or the channel fails.
pub fn serve_channel(
    name: &str,
    mut channel: Channel,
    grant: Option<Grant>,
    options: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let via = String::from("sivshm");
    if channel.role() == Role::Manager {
        channel
            .wait_for_peer(options.attach_timeout)
            .context("waiting for the worker's gateway")?;
    }
    let carrier = SivshmCarrier::new(
        channel,
        carrier::Options {
            grant: grant.clone(),
            ..carrier::Options::default()
        },
    );
    let session = carrier.handle();
    let mut link = link(carrier, grant, options)?;
    log(Event::Up {
        worker: name.to_string(),
        via,
    });
    let mut turn = Turn::new(name, options);
    while !stop.load(Ordering::Relaxed) {
        let before = session.stats();
        turn.run(&mut link, log);
        report(name, &session, log);
        if let Some(f) = session.fault() {
            return Err(f.into());
        }
        if turn.check_due() {
            session.check_peer()?;
        }
        if session.stats() == before {
            session.wait(options.idle_wait);
        }
    }
    Ok(())
}

fn report(name: &str, session: &SessionHandle, log: &(dyn Fn(Event) + Sync)) {
    for r in session.take_refusals() {
        log(Event::Refused {
            worker: name.to_string(),
            service: r.service,
            why: r.why,
        });
    }
    for e in session.take_errors() {
        log(Event::Error {
            worker: name.to_string(),
            what: e.to_string(),
        });
    }
}

/// One turn of a link: discover when due, propagate always; repeated errors logged once.
struct Turn {
    name: String,
    discover_every: Duration,
    check_every: Duration,
    next_discover: Instant,
    next_check: Instant,
    last_error: Option<String>,
}

impl Turn {
    fn new(name: &str, options: &Options) -> Turn {
        let now = Instant::now();
        Turn {
            name: name.to_string(),
            discover_every: options.discover_every,
            check_every: options.check_every,
            next_discover: now,
            next_check: now + options.check_every,
            last_error: None,
        }
    }

    fn run<C: iceoryx2_link_carrier::Carrier>(
        &mut self,
        link: &mut Link<ipc::Service, Tunnel<C>>,
        log: &(dyn Fn(Event) + Sync),
    ) {
        let now = Instant::now();
        if now >= self.next_discover {
            self.next_discover = now + self.discover_every;
            if let Err(e) = link.discover() {
                self.error(format!("discovery: {e}"), log);
            }
        }
        if let Err(e) = link.propagate() {
            self.error(format!("propagation: {e:?}"), log);
        }
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

    fn check_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_check {
            return false;
        }
        self.next_check = now + self.check_every;
        true
    }
}

/// The zenoh configuration of a gateway's session: peer mode, no multicast scouting, the
/// manager connecting to the worker's endpoint, the worker listening on it.
pub fn zenoh_config(endpoint: &str, role: Role) -> Result<zenoh::Config> {
    let mut c = zenoh::Config::default();
    let set = |c: &mut zenoh::Config, key: &str, value: &str| {
        c.insert_json5(key, value)
            .map_err(|e| anyhow!("zenoh configuration {key} = {value}: {e}"))
    };
    set(&mut c, "mode", "\"peer\"")?;
    set(&mut c, "scouting/multicast/enabled", "false")?;
    let list = format!("[{:?}]", endpoint);
    match role {
        Role::Manager => set(&mut c, "connect/endpoints", &list)?,
        Role::Worker => set(&mut c, "listen/endpoints", &list)?,
    }
    Ok(c)
}

fn serve_zenoh(
    name: &str,
    endpoint: &str,
    role: Role,
    grant: Option<Grant>,
    options: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let carrier = ZenohCarrier::create(zenoh_config(endpoint, role)?)
        .map_err(|e| anyhow!("zenoh session on {endpoint}: {e}"))?;
    let mut link = link(carrier, grant, options)?;
    let listener = link
        .listener()
        .map_err(|e| anyhow!("the zenoh link's wake-up listener: {e:?}"))?;
    log(Event::Up {
        worker: name.to_string(),
        via: format!("zenoh:{endpoint}"),
    });
    let mut turn = Turn::new(name, options);
    while !stop.load(Ordering::Relaxed) {
        turn.run(&mut link, log);
        // Woken by zenoh when an offer changes or data arrives; local samples are looked
        // for every idle_wait.
        listener
            .timed_wait(|_| {}, options.idle_wait)
            .map_err(|e| anyhow!("waiting on the zenoh link: {e:?}"))?;
    }
    Ok(())
}
