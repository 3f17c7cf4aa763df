//! The gateway: one iceoryx2 link per worker, each over that worker's own sivshm channel (or
//! over zenoh for a worker on another host), each restricted to that worker's grant.
//!
//! In the manager VM the gateway runs one thread per worker; a worker's link exports the
//! local services its grant admits and mirrors the granted services the worker offers. A
//! worker whose channel fails (its peer hostile, gone or removed) ends its own thread with
//! an [`Event::Failed`]; the others go on. In a worker VM the gateway runs the one link to
//! its manager, unrestricted.
//!
//! The loop of a link ([`crate::turn`]): follow new and gone services (the local ones as the
//! gateway's one [`Lister`] thread lists them for all links, every
//! [`Options::discover_every`] while they change and less often, up to
//! [`Options::discover_at_most`], while they do not; and the peer's); move pending samples
//! and notifications every turn; and after a turn that moved nothing sleep until the peer
//! sends (the channel's doorbell, the zenoh link's wake) or a local application notifies an
//! event service the link may relay ([`crate::wake`]). A sample published without an event has
//! nothing to wake the link: it is found by the next turn, at most [`Options::idle_wait`]
//! later while the link was busy in the last [`Options::busy_for`], at most
//! [`Options::discover_every`] later otherwise.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, Context, Result};
use iceoryx2::node::NodeBuilder;
use iceoryx2::prelude::SignalHandlingMode;
use iceoryx2::service::ipc;
use iceoryx2_integrations_zenoh_link_carrier::ZenohCarrier;
use iceoryx2_link::Link;
use iceoryx2_link_tunnel::Tunnel;
use sivshm::channel::{Channel, Role};
use sivshm::Device;

use crate::carrier::{self, Refusal, SessionHandle, SivshmCarrier};
use crate::config::{Config, Via};
use crate::grant::Grant;
use crate::granted::Granted;
use crate::listing::Lister;
use crate::turn::Turn;

pub use crate::event::Event;
pub use crate::options::Options;

/// Runs the gateway of `config` until `stop` is set. A manager returns once every worker's
/// link ended; its result is an error if all of them failed.
pub fn run(
    config: &Config,
    options: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let lister = Lister::spawn(
        options.iceoryx2.clone(),
        options.discover_every,
        options.discover_at_most,
    );
    let lister = &lister;
    match config {
        Config::Worker { name, via } => {
            let to = LinkTo {
                name,
                via,
                role: Role::Worker,
                grant: None,
            };
            serve(&to, lister, options, stop, log)
        }
        Config::Manager { workers } => {
            let failed = std::thread::scope(|scope| {
                let threads: Vec<_> = workers
                    .iter()
                    .map(|w| {
                        scope.spawn(move || {
                            let to = LinkTo {
                                name: &w.name,
                                via: &w.via,
                                role: Role::Manager,
                                grant: Some(w.grant.clone()),
                            };
                            let r = serve(&to, lister, options, stop, log);
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

/// The other side of one link, as the configuration names it.
struct LinkTo<'a> {
    name: &'a str,
    via: &'a Via,
    role: Role,
    grant: Option<Grant>,
}

fn serve(
    to: &LinkTo<'_>,
    lister: &Lister,
    options: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let (name, role, grant) = (to.name, to.role, to.grant.clone());
    match to.via {
        Via::Sivshm(path) => {
            // A path (/dev/sivshm0), or a PCI address (0000:00:04.0) to find the device by.
            let device = match path.is_absolute() {
                true => Device::open(path),
                false => Device::find(&path.to_string_lossy()),
            };
            let device = device.with_context(|| format!("opening {}", path.display()))?;
            let channel = Channel::on_device(&device, role, options.channel.clone())
                .with_context(|| format!("sivshm channel on {}", path.display()))?;
            serve_channel(name, channel, grant, lister, options, stop, log)
        }
        Via::Zenoh(endpoint) => serve_zenoh(to, endpoint, lister, options, stop, log),
    }
}

fn new_link<C: iceoryx2_link_carrier::Carrier>(
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

/// Serves one link over an open sivshm channel until `stop` is set or the channel fails;
/// `lister` lists the local services of `options.iceoryx2`'s system.
pub fn serve_channel(
    name: &str,
    mut channel: Channel,
    grant: Option<Grant>,
    lister: &Lister,
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
            defer_flush: true,
            by_turn: true,
            ..carrier::Options::default()
        },
    );
    let session = carrier.handle();
    let grant_of_wakes = grant.clone();
    let mut link = new_link(carrier, grant, options)?;
    log(Event::Up {
        worker: name.to_string(),
        via,
    });
    let mut turn = Turn::new(name, options, grant_of_wakes, lister);
    while !stop.load(Ordering::Relaxed) {
        // What the peer sent so far is this turn's to deliver; what comes during the turn
        // waits for the next (carrier::Options::by_turn). The link's pass delivers samples,
        // then notifications, so a notification never arrives before its sample here.
        session.begin_turn();
        let before = session.stats();
        turn.run(&mut link, || Some(session.generation()), log);
        // Towards the peer, a pass moves the applications' samples, then their
        // notifications: a sample published between the two goes out after its event. So
        // while a pass sent notifications, pass again before the peer sees any of it (one
        // flush a turn): the late samples join their events. A pass that sent none ends it.
        let mut last = before;
        for _ in 0..EXTRA_PASSES {
            let now = session.stats();
            if now.events_out == last.events_out {
                break;
            }
            last = now;
            turn.propagate(&mut link, log);
        }
        session.flush();
        report(name, &session, log);
        if let Some(f) = session.fault() {
            return Err(f.into());
        }
        if turn.check_due() {
            session.check_peer()?;
        }
        // Returns at once if the peer sent more meanwhile, an application notified, or
        // frames taken in during the turn wait for the next.
        turn.busy(session.stats() != before);
        session.wait_also(turn.wakes(), turn.rest());
    }
    Ok(())
}

/// The most passes a turn makes after one that sent notifications (see `serve_channel`).
const EXTRA_PASSES: usize = 4;

fn report(name: &str, session: &SessionHandle, log: &(dyn Fn(Event) + Sync)) {
    report_refusals(name, session.take_refusals(), log);
    for e in session.take_errors() {
        log(Event::Error {
            worker: name.to_string(),
            what: e.to_string(),
        });
    }
}

fn report_refusals(name: &str, refusals: Vec<Refusal>, log: &(dyn Fn(Event) + Sync)) {
    for r in refusals {
        log(Event::Refused {
            worker: name.to_string(),
            service: r.service,
            why: r.why,
        });
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
    to: &LinkTo<'_>,
    endpoint: &str,
    lister: &Lister,
    options: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let (name, grant) = (to.name, to.grant.clone());
    let carrier = ZenohCarrier::create(zenoh_config(endpoint, to.role)?)
        .map_err(|e| anyhow!("zenoh session on {endpoint}: {e}"))?;
    let carrier = Granted::new(carrier, grant.clone());
    let refusals = carrier.refusals();
    let grant_of_wakes = grant.clone();
    let mut link = new_link(carrier, grant, options)?;
    let listener = link
        .listener()
        .map_err(|e| anyhow!("the zenoh link's wake-up listener: {e:?}"))?;
    log(Event::Up {
        worker: name.to_string(),
        via: format!("zenoh:{endpoint}"),
    });
    let mut turn = Turn::new(name, options, grant_of_wakes, lister);
    while !stop.load(Ordering::Relaxed) {
        // zenoh's changes of offers are found by the periodic discovery.
        turn.run(&mut link, || None, log);
        report_refusals(name, refusals.take(), log);
        // Woken by zenoh when an offer changes or data arrives, or by a local event.
        let woken = turn.wakes().wait(&[&listener], turn.rest());
        listener
            .try_wait(|_| {})
            .map_err(|e| anyhow!("waiting on the zenoh link: {e:?}"))?;
        turn.busy(woken);
    }
    Ok(())
}
