//! Host tests: two gateways over an in-process memfd channel pair, each with an iceoryx2
//! system of its own (a prefix of its own), and the carrier and the grants alone.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iceoryx2::port::event_id::EventId;
use iceoryx2::prelude::*;
use iceoryx2::service::service_name::ServiceName;
use iceoryx2::service::static_config::message_type_details::TypeVariant;
use iceoryx2_bb_elementary::generation::Generation;
use iceoryx2_link_backend::service_description::{
    PublishSubscribeTypes, ServiceDescription, ServiceDescriptor, ServiceTypes, TypeDescription,
};
use iceoryx2_link_carrier::{Announcement, Carrier, Channel as _, Frame};
use proptest::prelude::*;
use sivshm::channel::{Channel, Config as ChannelConfig, Links, Role};
use sivshm::Mapping;

use crate::carrier::{CarrierError, Options, SivshmCarrier};
use crate::gateway::{self, Event};
use crate::grant::Grant;
use crate::granted::Granted;
use crate::listing::Lister;
use crate::wake::LocalWakes;
use crate::wire;

const SEGMENT: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(20);

struct Pair {
    map: Arc<Mapping>,
    manager: Links,
    worker: Links,
}

fn pair() -> Pair {
    let fd = rustix::fs::memfd_create("ipc", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, SEGMENT as u64).unwrap();
    let map = Arc::new(Mapping::new(fd.as_fd(), 0, SEGMENT).unwrap());
    let (manager, worker) = Links::in_process_pair().unwrap();
    Pair {
        map,
        manager,
        worker,
    }
}

fn channel_config() -> ChannelConfig {
    ChannelConfig {
        attach_timeout: Duration::from_secs(5),
        peer_timeout: Duration::from_secs(10),
        ..ChannelConfig::default()
    }
}

fn channels(p: &Pair) -> (Channel, Channel) {
    let m = Channel::new(
        p.map.clone(),
        0,
        SEGMENT,
        Role::Manager,
        p.manager.clone(),
        channel_config(),
    )
    .unwrap();
    let w = Channel::new(
        p.map.clone(),
        0,
        SEGMENT,
        Role::Worker,
        p.worker.clone(),
        channel_config(),
    )
    .unwrap();
    (m, w)
}

fn grant(patterns: &[&str]) -> Grant {
    Grant::new(patterns).unwrap()
}

fn bytes_types() -> ServiceTypes {
    ServiceTypes::PublishSubscribe(PublishSubscribeTypes {
        payload: TypeDescription {
            variant: TypeVariant::Dynamic,
            type_name: String::from("u8"),
            size: 1,
            alignment: 1,
        },
        user_header: TypeDescription {
            variant: TypeVariant::FixedSize,
            type_name: String::from("()"),
            size: 0,
            alignment: 1,
        },
    })
}

fn descriptor(name: &str) -> ServiceDescriptor {
    let d = ServiceDescription::with_default_settings::<ipc::Service>(
        ServiceName::new(name).unwrap(),
        bytes_types(),
        &iceoryx2::config::Config::default(),
    );
    ServiceDescriptor::from(&d)
}

fn offered_names(c: &SivshmCarrier) -> Vec<String> {
    let mut names = Vec::new();
    c.offers(&mut |o| names.push(o.descriptor.name.as_str().to_string()))
        .unwrap();
    names
}

/// Polls `f` until it gives something or WAIT passes.
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn offers_cross_and_the_generation_moves() {
    let p = pair();
    let (m, w) = channels(&p);
    let mut manager = SivshmCarrier::new(m, Options::default());
    let worker = SivshmCarrier::new(w, Options::default());
    let g0 = worker.generation();
    manager
        .announce(Announcement::Offered {
            descriptor: descriptor("jobs/w0/in"),
        })
        .unwrap();
    assert_ne!(worker.generation(), g0);
    assert_eq!(offered_names(&worker), ["jobs/w0/in"]);
    manager
        .announce(Announcement::Withdrawn {
            hash: descriptor("jobs/w0/in").hash,
        })
        .unwrap();
    assert!(offered_names(&worker).is_empty());
}

#[test]
fn frames_cross_both_ways_up_to_the_largest_message() {
    let p = pair();
    let (m, w) = channels(&p);
    let max = m.max_message().min(w.max_message());
    let mut manager = SivshmCarrier::new(m, Options::default());
    let mut worker = SivshmCarrier::new(w, Options::default());
    let d = descriptor("jobs/w0/data");
    let mut mc = manager.open_channel(&d).unwrap();
    let mut wc = worker.open_channel(&d).unwrap();
    let prefix = wire::frame_prefix(&d.hash).len();
    for (len, from_manager) in [(0, true), (64, false), (4096, true), (max - prefix, false)] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let frame = Frame {
            header: &[],
            payload: &payload,
        };
        let (tx, rx) = match from_manager {
            true => (&mut mc, &mut wc),
            false => (&mut wc, &mut mc),
        };
        tx.send(frame).unwrap();
        let got = rx.receive(|b| b.to_vec()).unwrap();
        assert_eq!(got.as_deref(), Some(&payload[..]), "{len} bytes");
    }
}

#[test]
fn by_turn_a_frame_that_arrives_during_a_turn_waits_for_the_next() {
    let p = pair();
    let (m, w) = channels(&p);
    let mut manager = SivshmCarrier::new(m, Options::default());
    let by_turn = Options {
        by_turn: true,
        ..Options::default()
    };
    let mut worker = SivshmCarrier::new(w, by_turn);
    let session = worker.handle();
    let d = descriptor("jobs/w0/data");
    let mut mc = manager.open_channel(&d).unwrap();
    let mut wc = worker.open_channel(&d).unwrap();
    let send = |c: &mut crate::carrier::SivshmChannel, b: u8| {
        c.send(Frame {
            header: &[],
            payload: &[b; 8],
        })
        .unwrap()
    };
    send(&mut mc, 1);
    session.begin_turn();
    send(&mut mc, 2);
    // A look for offers in the middle of the turn takes the second frame in.
    let _ = worker.generation();
    assert_eq!(wc.receive(|b| b[0]).unwrap(), Some(1));
    assert_eq!(
        wc.receive(|b| b[0]).unwrap(),
        None,
        "taken in during the turn"
    );
    // The held frame is a reason not to sleep.
    let t = Instant::now();
    session.wait(Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "slept with a frame held"
    );
    session.begin_turn();
    assert_eq!(wc.receive(|b| b[0]).unwrap(), Some(2));
    assert_eq!(wc.receive(|b| b[0]).unwrap(), None);
}

#[test]
fn a_frame_beyond_the_largest_message_is_a_clear_error_and_the_carrier_goes_on() {
    let p = pair();
    let (m, w) = channels(&p);
    let max = m.max_message();
    let mut manager = SivshmCarrier::new(m, Options::default());
    let mut worker = SivshmCarrier::new(w, Options::default());
    let d = descriptor("jobs/w0/big");
    let mut mc = manager.open_channel(&d).unwrap();
    let mut wc = worker.open_channel(&d).unwrap();
    let big = vec![1u8; max];
    let e = mc
        .send(Frame {
            header: &[],
            payload: &big,
        })
        .unwrap_err();
    assert!(
        matches!(e, CarrierError::TooLarge { max: m, .. } if m == max),
        "{e}"
    );
    assert!(e.to_string().contains("carries at most"), "{e}");
    assert!(!e.is_fatal());
    mc.send(Frame {
        header: &[],
        payload: b"after",
    })
    .unwrap();
    assert_eq!(
        wc.receive(|b| b.to_vec()).unwrap().as_deref(),
        Some(&b"after"[..])
    );
}

#[test]
fn an_offer_outside_the_grant_is_refused_recorded_and_never_listed() {
    let p = pair();
    let (m, w) = channels(&p);
    let options = Options {
        grant: Some(grant(&["jobs/w0/**"])),
        ..Options::default()
    };
    let manager = SivshmCarrier::new(m, options);
    let session = manager.handle();
    let mut worker = SivshmCarrier::new(w, Options::default());
    for name in ["jobs/w1/out", "jobs/w0/out", "jobs/w01/out"] {
        worker
            .announce(Announcement::Offered {
                descriptor: descriptor(name),
            })
            .unwrap();
    }
    assert_eq!(offered_names(&manager), ["jobs/w0/out"]);
    let refused: Vec<String> = session
        .take_refusals()
        .into_iter()
        .map(|r| r.service)
        .collect();
    assert_eq!(refused, ["jobs/w1/out", "jobs/w01/out"]);
    // Frames of the refused service are dropped, not buffered.
    let d = descriptor("jobs/w1/out");
    let mut wc = worker.open_channel(&d).unwrap();
    wc.send(Frame {
        header: &[],
        payload: b"smuggled",
    })
    .unwrap();
    session.pump();
    assert_eq!(session.stats().dropped, 1);
    assert_eq!(session.stats().frames_in, 0);
}

#[test]
fn the_manager_side_neither_announces_nor_opens_outside_the_grant() {
    let p = pair();
    let (m, w) = channels(&p);
    let options = Options {
        grant: Some(grant(&["jobs/w0/**"])),
        ..Options::default()
    };
    let mut manager = SivshmCarrier::new(m, options);
    let worker = SivshmCarrier::new(w, Options::default());
    manager
        .announce(Announcement::Offered {
            descriptor: descriptor("jobs/w1/in"),
        })
        .unwrap();
    assert!(offered_names(&worker).is_empty());
    let e = manager
        .open_channel(&descriptor("jobs/w1/in"))
        .err()
        .unwrap();
    assert!(matches!(e, CarrierError::NotGranted { .. }), "{e}");
}

#[test]
fn an_offer_under_another_services_hash_ends_the_carrier() {
    let p = pair();
    let (m, mut w) = channels(&p);
    let manager = SivshmCarrier::new(
        m,
        Options {
            grant: Some(grant(&["jobs/w0/**"])),
            ..Options::default()
        },
    );
    let mut forged = descriptor("jobs/w0/out");
    forged.hash = descriptor("jobs/w1/out").hash;
    w.send(&wire::offered(&forged), None).unwrap();
    let e = manager.offers(&mut |_| {}).unwrap_err();
    assert!(matches!(e, CarrierError::ForgedHash { .. }), "{e}");
    assert_eq!(manager.handle().fault(), Some(e));
}

#[test]
fn garbage_written_over_the_whole_segment_is_an_error_not_a_crash() {
    let p = pair();
    let (m, w) = channels(&p);
    let manager = SivshmCarrier::new(m, Options::default());
    let mut worker = SivshmCarrier::new(w, Options::default());
    worker
        .announce(Announcement::Offered {
            descriptor: descriptor("jobs/w0/out"),
        })
        .unwrap();
    // The hostile worker scribbles over everything, the manager's side included.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<u8> = (0..SEGMENT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    p.map.write(0, &garbage).unwrap();
    let session = manager.handle();
    let r = manager.offers(&mut |_| {});
    let fault = eventually(|| {
        let _ = manager.offers(&mut |_| {});
        let _ = session.check_peer();
        session.fault()
    });
    assert!(
        r.is_err() || fault.is_some(),
        "garbage went unnoticed: {r:?}"
    );
    let fault = fault.unwrap();
    assert!(fault.is_fatal(), "{fault}");
    assert!(matches!(manager.generation(), Generation::At(_)));
}

proptest! {
    /// Whatever a peer puts in a message, decoding answers without panicking.
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode(&bytes);
    }

    /// A carrier fed any sequence of messages answers with offers or a fault, never a panic,
    /// and frames it did not expect are never buffered.
    #[test]
    fn a_carrier_fed_any_messages_stays_sound(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..96), 0..16),
        tags in proptest::collection::vec(1u8..4, 0..16),
    ) {
        let p = pair();
        let (m, mut w) = channels(&p);
        let manager = SivshmCarrier::new(m, Options {
            grant: Some(grant(&["jobs/w0/**"])),
            ..Options::default()
        });
        for (mut msg, tag) in msgs.into_iter().zip(tags) {
            msg.insert(0, tag);
            w.send(&msg, None).unwrap();
        }
        let r = manager.offers(&mut |o| assert!(o.descriptor.name.as_str().starts_with("jobs/w0/")));
        let s = manager.handle();
        prop_assert_eq!(r.is_err(), s.fault().is_some());
        prop_assert_eq!(s.stats().frames_in, 0);
    }

    /// `**` grants whole segments below a prefix and nothing beside it.
    #[test]
    fn a_double_star_grant_admits_exactly_its_subtree(
        worker in "w[0-9]{1,2}",
        other in "w[0-9]{1,2}",
        rest in proptest::collection::vec("[a-z0-9_]{1,6}", 1..4),
    ) {
        let g = grant(&[&format!("jobs/{worker}/**")]);
        let tail = rest.join("/");
        let own = format!("jobs/{worker}/{tail}");
        let others = format!("jobs/{other}/{tail}");
        let longer = format!("jobs/{worker}x/{tail}");
        let deeper = format!("other/jobs/{worker}/{tail}");
        prop_assert!(g.admits(&own));
        prop_assert_eq!(g.admits(&others), other == worker);
        prop_assert!(!g.admits(&longer));
        prop_assert!(!g.admits(&deeper));
    }

    /// `*` stays within one segment.
    #[test]
    fn a_star_stays_within_a_segment(a in "[a-z]{1,5}", b in "[a-z]{1,5}") {
        let g = grant(&["jobs/*/in"]);
        let one = format!("jobs/{a}/in");
        let two = format!("jobs/{a}/{b}/in");
        prop_assert!(g.admits(&one));
        prop_assert!(!g.admits(&two));
    }
}

#[test]
fn patterns_beyond_the_language_are_refused() {
    for p in ["", "jobs/[ab]/**", "jobs/{a,b}", "jobs\\/x"] {
        assert!(Grant::new(&[p]).is_err(), "{p:?}");
    }
    assert!(!grant(&[]).admits("jobs/w0/in"));
}

// --- Through iceoryx2: two systems, two gateways, one channel. ---

static PREFIX: AtomicU64 = AtomicU64::new(0);

fn iceoryx2_system() -> iceoryx2::config::Config {
    let mut c = iceoryx2::config::Config::default();
    let n = PREFIX.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("sivt{}x{n}_", std::process::id());
    c.global.prefix = iceoryx2::prelude::FileName::new(prefix.as_bytes()).unwrap();
    c
}

fn node(config: &iceoryx2::config::Config) -> Node<ipc::Service> {
    NodeBuilder::new()
        .config(config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .unwrap()
}

struct Gateways {
    manager: iceoryx2::config::Config,
    worker: iceoryx2::config::Config,
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Gateways {
    fn start(worker_grant: &[&str]) -> Gateways {
        let p = pair();
        let (m, w) = channels(&p);
        let manager = iceoryx2_system();
        let worker = iceoryx2_system();
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let g = grant(worker_grant);
        let mut threads = Vec::new();
        for (ch, cfg, grant) in [(m, manager.clone(), Some(g)), (w, worker.clone(), None)] {
            let stop = stop.clone();
            let events = events.clone();
            threads.push(std::thread::spawn(move || {
                let options = gateway::Options {
                    iceoryx2: cfg,
                    ..gateway::Options::default()
                };
                let log = move |e: Event| events.lock().unwrap().push(e);
                let lister = Lister::spawn(
                    options.iceoryx2.clone(),
                    options.discover_every,
                    options.discover_at_most,
                );
                gateway::serve_channel("w0", ch, grant, &lister, &options, &stop, &log)
            }));
        }
        Gateways {
            manager,
            worker,
            stop,
            events,
            threads,
        }
    }

    fn stop(self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap().unwrap();
        }
        let events = self.events.lock().unwrap().clone();
        events
    }
}

fn service_name(n: &str) -> ServiceName {
    ServiceName::new(n).unwrap()
}

/// Publishes `data` on `name` in `from` until a subscriber on it in `to` gets it.
fn publish_until_received(
    from: &iceoryx2::config::Config,
    to: &iceoryx2::config::Config,
    name: &str,
    data: &[u8],
) -> bool {
    let pub_node = node(from);
    let sub_node = node(to);
    let service = pub_node
        .service_builder(&service_name(name))
        .publish_subscribe::<[u8]>()
        .open_or_create()
        .unwrap();
    let publisher = service
        .publisher_builder()
        .initial_max_slice_len(data.len().max(1))
        .create()
        .unwrap();
    let sub_service = sub_node
        .service_builder(&service_name(name))
        .publish_subscribe::<[u8]>()
        .open_or_create()
        .unwrap();
    let subscriber = sub_service.subscriber_builder().create().unwrap();
    eventually(|| {
        let s = publisher.loan_slice_uninit(data.len()).unwrap();
        s.write_from_slice(data).send().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut got = None;
        while let Some(sample) = subscriber.receive().unwrap() {
            if sample.payload() == data {
                got = Some(());
            }
        }
        got
    })
    .is_some()
}

#[test]
fn publish_subscribe_crosses_both_ways_through_the_gateways() {
    let g = Gateways::start(&["jobs/w0/**"]);
    let batch: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    assert!(publish_until_received(
        &g.manager,
        &g.worker,
        "jobs/w0/in",
        &batch
    ));
    assert!(publish_until_received(
        &g.worker,
        &g.manager,
        "jobs/w0/out",
        b"answer"
    ));
    g.stop();
}

#[test]
fn events_cross_both_ways_through_the_gateways() {
    let g = Gateways::start(&["jobs/w0/**"]);
    for (from, to, id) in [(&g.manager, &g.worker, 7), (&g.worker, &g.manager, 11)] {
        let n_from = node(from);
        let n_to = node(to);
        let name = service_name(&format!("jobs/w0/wake{id}"));
        let notifier = n_from
            .service_builder(&name)
            .event()
            .open_or_create()
            .unwrap()
            .notifier_builder()
            .create()
            .unwrap();
        let listener = n_to
            .service_builder(&name)
            .event()
            .open_or_create()
            .unwrap()
            .listener_builder()
            .create()
            .unwrap();
        let got = eventually(|| {
            notifier
                .notify_with_custom_event_id(EventId::new(id))
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let mut got = None;
            listener
                .try_wait(|a| {
                    if a.id == EventId::new(id) {
                        got = Some(());
                    }
                })
                .unwrap();
            got
        });
        assert!(got.is_some(), "event {id}");
    }
    g.stop();
}

#[test]
fn a_worker_publishing_an_ungranted_service_is_refused_and_logged() {
    let g = Gateways::start(&["jobs/w0/**"]);
    // The worker's application offers a service of w1's and one of its own.
    let wn = node(&g.worker);
    let _stolen = wn
        .service_builder(&service_name("jobs/w1/out"))
        .publish_subscribe::<[u8]>()
        .open_or_create()
        .unwrap()
        .publisher_builder()
        .create()
        .unwrap();
    assert!(publish_until_received(
        &g.worker,
        &g.manager,
        "jobs/w0/out",
        b"mine"
    ));
    let refused = eventually(|| {
        g.events.lock().unwrap().iter().find_map(|e| match e {
            Event::Refused { service, .. } if service == "jobs/w1/out" => Some(()),
            _ => None,
        })
    });
    assert!(refused.is_some(), "{:?}", g.events.lock().unwrap());
    // The manager's system never saw it.
    let mn = node(&g.manager);
    let exists = ipc::Service::does_exist(
        &service_name("jobs/w1/out"),
        mn.config(),
        MessagingPattern::PublishSubscribe,
    )
    .unwrap();
    assert!(!exists);
    g.stop();
}

#[test]
fn a_worker_never_sees_a_service_outside_its_grant() {
    let g = Gateways::start(&["jobs/w0/**"]);
    let mn = node(&g.manager);
    let _other = mn
        .service_builder(&service_name("jobs/w1/in"))
        .publish_subscribe::<[u8]>()
        .open_or_create()
        .unwrap()
        .publisher_builder()
        .create()
        .unwrap();
    // A granted service crosses (so discovery has run), the other does not.
    assert!(publish_until_received(
        &g.manager,
        &g.worker,
        "jobs/w0/in",
        b"x"
    ));
    let wn = node(&g.worker);
    let exists = ipc::Service::does_exist(
        &service_name("jobs/w1/in"),
        wn.config(),
        MessagingPattern::PublishSubscribe,
    )
    .unwrap();
    assert!(!exists);
    g.stop();
}

#[test]
fn a_granted_wrapper_leaves_out_and_records_offers_outside_the_grant_once() {
    let p = pair();
    let (m, w) = channels(&p);
    // The inner carrier trusts its peer (as zenoh's does); the wrapper holds the grant.
    let inner = SivshmCarrier::new(m, Options::default());
    let manager = Granted::new(inner, Some(grant(&["jobs/w0/**"])));
    let refusals = manager.refusals();
    let mut worker = SivshmCarrier::new(w, Options::default());
    for name in ["jobs/w1/out", "jobs/w0/out"] {
        worker
            .announce(Announcement::Offered {
                descriptor: descriptor(name),
            })
            .unwrap();
    }
    let listed = || {
        let mut names = Vec::new();
        manager
            .offers(&mut |o| names.push(o.descriptor.name.as_str().to_string()))
            .unwrap();
        names
    };
    assert_eq!(listed(), ["jobs/w0/out"]);
    assert_eq!(listed(), ["jobs/w0/out"]);
    let refused: Vec<String> = refusals.take().into_iter().map(|r| r.service).collect();
    assert_eq!(refused, ["jobs/w1/out"], "logged once while offered");
    // Withdrawn and offered again: logged again.
    let d = descriptor("jobs/w1/out");
    worker
        .announce(Announcement::Withdrawn { hash: d.hash })
        .unwrap();
    assert_eq!(listed(), ["jobs/w0/out"]);
    worker
        .announce(Announcement::Offered { descriptor: d })
        .unwrap();
    assert_eq!(listed(), ["jobs/w0/out"]);
    assert_eq!(refusals.take().len(), 1);
}

/// Lists the services of `node`'s system now and lets `wakes` follow them.
fn refresh(wakes: &mut LocalWakes, node: &Node<ipc::Service>) -> bool {
    let services = crate::listing::list(node.config()).unwrap();
    wakes.follow(
        &crate::listing::Listing {
            services,
            failed: false,
        },
        node,
    )
}

#[test]
fn the_lister_publishes_services_as_they_come_and_go_and_stops_at_once() {
    let config = iceoryx2_system();
    let link_node = node(&config);
    let app = node(&config);
    let lister = Lister::spawn(
        config.clone(),
        Duration::from_millis(5),
        Duration::from_millis(40),
    );
    let listed = |lister: &Lister| -> Vec<(String, bool, bool)> {
        lister
            .listing()
            .services
            .iter()
            .map(|l| (l.name.clone(), l.event, l.held_by_others(link_node.id())))
            .collect()
    };
    let ready = app
        .service_builder(&service_name("jobs/w0/ready"))
        .event()
        .open_or_create()
        .unwrap();
    let notifier = ready.notifier_builder().create().unwrap();
    let want = vec![("jobs/w0/ready".to_string(), true, true)];
    assert_eq!(
        eventually(|| (listed(&lister) == want).then_some(())),
        Some(())
    );
    let g = lister.generation();
    // Nothing changes: nothing is published (the interval backs off meanwhile).
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(lister.generation(), g, "an unchanged listing was published");
    drop(notifier);
    drop(ready);
    assert_eq!(
        eventually(|| listed(&lister).is_empty().then_some(())),
        Some(())
    );
    assert!(lister.generation() > g);
    let t = Instant::now();
    drop(Lister::spawn(
        config,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a dropped lister did not stop"
    );
}

#[test]
fn a_wait_takes_in_the_notification_that_woke_it_and_the_next_wait_sleeps() {
    let config = iceoryx2_system();
    let link_node = node(&config);
    let app = node(&config);
    let mut wakes = LocalWakes::new(None);
    let event = |name: &str| {
        app.service_builder(&service_name(name))
            .event()
            .open_or_create()
            .unwrap()
    };
    let (a, b) = (event("jobs/a"), event("jobs/b"));
    let (na, nb) = (
        a.notifier_builder().create().unwrap(),
        b.notifier_builder().create().unwrap(),
    );
    refresh(&mut wakes, &link_node);
    assert_eq!(wakes.len(), 2);
    for n in [&na, &nb, &na] {
        n.notify().unwrap();
        assert!(wakes.wait(&[], WAIT), "woken by the notification");
        // Had the listener that woke it kept its notification, this would return at once.
        let t = Instant::now();
        assert!(
            !wakes.wait(&[], Duration::from_millis(50)),
            "nothing left to wake it"
        );
        assert!(t.elapsed() >= Duration::from_millis(40));
    }
}

#[test]
fn local_wakes_follow_the_admitted_event_services_and_wake_on_a_notification() {
    let config = iceoryx2_system();
    let link_node = node(&config);
    let app = node(&config);
    let mut wakes = LocalWakes::new(Some(grant(&["jobs/w0/**"])));
    assert!(
        !refresh(&mut wakes, &link_node),
        "nothing there, nothing changed"
    );
    let event = |name: &str| {
        app.service_builder(&service_name(name))
            .event()
            .open_or_create()
            .unwrap()
    };
    let ready = event("jobs/w0/ready");
    let notifier = ready.notifier_builder().create().unwrap();
    let other = event("jobs/w1/ready");
    let _other_notifier = other.notifier_builder().create().unwrap();
    assert!(refresh(&mut wakes, &link_node), "a new admitted service");
    assert_eq!(wakes.len(), 1, "only the admitted one");
    assert!(!refresh(&mut wakes, &link_node), "no change");
    notifier.notify().unwrap();
    assert!(
        wakes.wait(&[], WAIT),
        "woken by the application's notification"
    );
    drop(notifier);
    drop(ready);
    assert!(refresh(&mut wakes, &link_node), "the service is gone");
    assert!(wakes.is_empty());
}
