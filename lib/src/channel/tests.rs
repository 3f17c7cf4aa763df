//! The channel between two threads over a memfd, with eventfds for doorbells.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::model::{ModelDevice, Segment};

pub(super) struct Pair {
    pub map: Arc<Mapping>,
    pub manager_links: Links,
    pub worker_links: Links,
}

pub(super) fn pair(len: usize) -> Pair {
    let fd = rustix::fs::memfd_create("channel", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len as u64).unwrap();
    let map = Arc::new(Mapping::new(fd.as_fd(), 0, len).unwrap());
    let (manager_links, worker_links) = Links::in_process_pair().unwrap();
    Pair {
        map,
        manager_links,
        worker_links,
    }
}

fn quick() -> Config {
    Config {
        attach_timeout: Duration::from_millis(200),
        peer_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// One side of a channel over the first `len` bytes of `p`'s memory, with that side's links.
pub(super) fn side(p: &Pair, len: usize, role: Role, config: Config) -> Result<Channel, Error> {
    let links = match role {
        Role::Manager => p.manager_links.clone(),
        Role::Worker => p.worker_links.clone(),
    };
    Channel::new(p.map.clone(), 0, len, role, links, config)
}

/// Both sides of a channel over the first `len` bytes of `p`'s memory.
pub(super) fn open(p: &Pair, len: usize, config: Config) -> (Channel, Channel) {
    let m = side(p, len, Role::Manager, config.clone()).unwrap();
    let w = side(p, len, Role::Worker, config).unwrap();
    (m, w)
}

const SEC: Option<Duration> = Some(Duration::from_secs(5));

#[test]
fn messages_cross_both_ways_in_order() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    m.send(b"hello", SEC).unwrap();
    m.send(b"", SEC).unwrap();
    m.send(&[7; 100], SEC).unwrap();
    let msg = w.recv(SEC).unwrap();
    assert_eq!(msg.to_vec().unwrap(), b"hello");
    msg.release().unwrap();
    let msg = w.recv(SEC).unwrap();
    assert!(msg.is_empty());
    msg.release().unwrap();
    let msg = w.recv(SEC).unwrap();
    let mut part = [0u8; 10];
    msg.read(90, &mut part).unwrap();
    assert_eq!(part, [7; 10]);
    assert!(
        msg.read(95, &mut part).is_err(),
        "reads stop at the message's end"
    );
    msg.release().unwrap();
    assert!(w.try_recv().unwrap().is_none());
    w.send(b"done", SEC).unwrap();
    assert_eq!(m.recv(SEC).unwrap().to_vec().unwrap(), b"done");
    assert_eq!(w.stats().received, 3);
    assert_eq!(m.stats().sent, 3);
}

#[test]
fn set_aside_reservations_and_messages_are_taken_up_while_nothing_came_between() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    let mut r = m.reserve(8, SEC).unwrap();
    r.write(0, b"part").unwrap();
    let aside = r.set_aside();
    assert_eq!(aside.len(), 8);
    let mut r = m.resume_reservation(aside).unwrap();
    r.write(4, b" two").unwrap();
    r.commit().unwrap();
    m.flush().unwrap();
    // A reservation made after one was set aside makes that one stale.
    let stale = m.reserve(4, SEC).unwrap().set_aside();
    m.send(b"next", SEC).unwrap();
    assert!(m.resume_reservation(stale).is_none());

    let aside = w.recv(SEC).unwrap().set_aside();
    let msg = w.resume_message(aside).unwrap();
    assert_eq!(msg.to_vec().unwrap(), b"part two");
    msg.release().unwrap();
    let stale = w.recv(SEC).unwrap().set_aside();
    w.recv(SEC).unwrap().release().unwrap();
    assert!(w.resume_message(stale).is_none());
    assert!(w.try_recv().unwrap().is_none());
}

#[test]
fn an_unreleased_message_is_seen_again() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    m.send(b"once", SEC).unwrap();
    let _unreleased = w.recv(SEC).unwrap();
    let msg = w.try_recv().unwrap().unwrap();
    assert_eq!(msg.to_vec().unwrap(), b"once");
    msg.release().unwrap();
    assert!(w.try_recv().unwrap().is_none());
}

#[test]
fn a_held_message_is_answered_then_released_without_receiving_it_again() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    m.send(b"first", SEC).unwrap();
    m.send(b"second", SEC).unwrap();
    let mut msg = w.recv(SEC).unwrap();
    msg.reply(b"ack first", SEC).unwrap();
    let mut r = msg.reserve_reply(4, SEC).unwrap();
    r.write(0, b"more").unwrap();
    r.commit().unwrap();
    msg.flush().unwrap();
    // Answered, still held: the reply reached the manager, the request is still the
    // worker's to read.
    for want in [&b"ack first"[..], b"more"] {
        let reply = m.recv(SEC).unwrap();
        assert_eq!(reply.to_vec().unwrap(), want);
        reply.release().unwrap();
    }
    assert_eq!(msg.to_vec().unwrap(), b"first");
    msg.release().unwrap();
    assert_eq!(w.recv(SEC).unwrap().to_vec().unwrap(), b"second");
}

#[test]
fn a_worker_that_stops_after_answering_leaves_the_request_to_its_successor() {
    let p = pair(1 << 16);
    let (mut m, w) = open(&p, 1 << 16, quick());
    m.send(b"job", SEC).unwrap();
    let mut w = w;
    {
        let mut msg = w.recv(SEC).unwrap();
        msg.reply(b"done", SEC).unwrap();
        // Stops here: never released.
    }
    drop(w);
    let mut w = side(&p, 1 << 16, Role::Worker, quick()).unwrap();
    assert_eq!(w.recv(SEC).unwrap().to_vec().unwrap(), b"job");
    assert_eq!(m.recv(SEC).unwrap().to_vec().unwrap(), b"done");
}

#[test]
fn a_reply_meets_the_checks_of_a_send() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    m.send(b"request", SEC).unwrap();
    let mut msg = w.recv(SEC).unwrap();
    let max = msg.ch.max_message();
    assert_eq!(
        msg.reply(&vec![0; max + 1], SEC).err(),
        Some(Error::TooLarge { len: max + 1, max })
    );
    // The peer corrupts the reply ring's tail (the room the worker may use) under it: the
    // replies that fill the ring meet it.
    let win = Window::new(p.map.clone(), 0, 1 << 16).unwrap();
    win.u64(layout::tail(1)).unwrap().store(1 << 40, SeqCst);
    let e = (0..100)
        .find_map(|_| msg.reply(&[1; 1000], SEC).err())
        .unwrap();
    assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    assert_eq!(msg.release().err(), Some(e), "the error sticks");
}

#[test]
fn records_wrap_around_a_small_ring_many_times_intact() {
    let p = pair(8192);
    let config = Config {
        reply_ring_bytes: Some(1024),
        ..quick()
    };
    let (mut m, mut w) = open(&p, 8192, config);
    let max = m.max_message();
    assert_eq!(max, 3072 / 2 - 8);
    for i in 0..2000usize {
        let len = (i * 37) % (max + 1);
        let data: Vec<u8> = (0..len).map(|k| (i + k) as u8).collect();
        let mut r = m.try_reserve(len).unwrap().expect("an empty ring has room");
        r.write(0, &data).unwrap();
        r.commit().unwrap();
        let msg = w.try_recv().unwrap().unwrap();
        assert_eq!(msg.to_vec().unwrap(), data, "message {i}");
        msg.release().unwrap();
    }
}

#[test]
fn bad_sizes_and_windows_get_clear_errors() {
    let p = pair(1 << 16);
    let (mut m, _w) = open(&p, 1 << 16, quick());
    let max = m.max_message();
    let e = m.send(&vec![0; max + 1], SEC).unwrap_err();
    assert_eq!(e, Error::TooLarge { len: max + 1, max });
    assert!(e.to_string().contains("larger than the ring"));
    m.send(&vec![1; max], SEC).unwrap();

    let mut r = m.reserve(8, SEC).unwrap();
    assert!(
        r.write(4, &[0; 5]).is_err(),
        "writes stop at the reservation"
    );

    let q = pair(1 << 16);
    for len in [0, 4096, 4096 + 256] {
        let e = Channel::new(
            q.map.clone(),
            0,
            len,
            Role::Manager,
            Links::default(),
            quick(),
        );
        assert!(matches!(e, Err(Error::Geometry(_))), "window of {len}");
    }
    let e = Channel::new(
        q.map.clone(),
        8,
        8192,
        Role::Manager,
        Links::default(),
        quick(),
    );
    assert!(matches!(e, Err(Error::Geometry(_))), "misaligned window");
    let e = Channel::new(
        q.map.clone(),
        0,
        1 << 17,
        Role::Manager,
        Links::default(),
        quick(),
    );
    assert!(
        matches!(e, Err(Error::Geometry(_))),
        "window beyond the mapping"
    );
}

#[test]
fn a_worker_without_a_manager_is_told_so() {
    let p = pair(1 << 16);
    let e = side(&p, 1 << 16, Role::Worker, quick());
    assert_eq!(e.err(), Some(Error::NotFormatted));
}

#[test]
fn another_version_is_refused_on_both_ends() {
    // The next version, and the previous one (version 1 kept each waiting flag beside an
    // index: its peers must not meet ours).
    for other in [VERSION + 1, VERSION - 1] {
        let p = pair(1 << 16);
        let (mut m, w) = open(&p, 1 << 16, quick());
        let win = Window::new(p.map.clone(), 0, 1 << 16).unwrap();
        // The worker's side says it speaks another version.
        win.u32(layout::side_block(Role::Worker) + layout::side::VERSION)
            .unwrap()
            .store(other, SeqCst);
        let e = m.check_peer().unwrap_err();
        assert_eq!(
            e,
            Error::Version {
                ours: VERSION,
                theirs: other
            }
        );
        assert_eq!(m.send(b"x", SEC).unwrap_err(), e, "the channel stays dead");
        drop(w);
        // A header of another version: a worker refuses it.
        win.u32(8).unwrap().store(other, SeqCst);
        let e = Channel::new(
            p.map.clone(),
            0,
            1 << 16,
            Role::Worker,
            Links::default(),
            quick(),
        );
        assert_eq!(
            e.err(),
            Some(Error::Version {
                ours: VERSION,
                theirs: other
            })
        );
    }
}

#[test]
fn a_peer_that_closes_is_reported_at_once() {
    let p = pair(1 << 16);
    let (mut m, w) = open(&p, 1 << 16, quick());
    drop(w);
    let t = Instant::now();
    assert_eq!(m.recv(None).err(), Some(Error::PeerClosed));
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A manager and a worker over one segment, each through a device of its own (as two VMs
/// are); the devices are returned too, to remove them.
fn on_model_devices(len: usize) -> ([Arc<ModelDevice>; 2], Channel, Channel) {
    let seg = Segment::new(len).unwrap();
    let (md, wd) = (seg.device(0).unwrap(), seg.device(1).unwrap());
    let open = |d: &Arc<ModelDevice>, role| {
        Channel::new(d.map().unwrap(), 0, len, role, d.links(), quick()).unwrap()
    };
    let mut m = open(&md, Role::Manager);
    let w = open(&wd, Role::Worker);
    m.wait_for_peer(Duration::from_secs(5)).unwrap();
    ([md, wd], m, w)
}

#[test]
fn a_removed_device_ends_its_channel_and_spares_the_others() {
    let (_d0, mut m0, mut w0) = on_model_devices(1 << 16);
    let ([md1, wd1], mut m1, mut w1) = on_model_devices(1 << 16);
    m1.send(b"before", SEC).unwrap();
    w1.recv(SEC).unwrap().release().unwrap();
    // A worker thread blocked waiting, as the worker is when its device goes.
    let waiter = std::thread::spawn(move || {
        let r = w1.recv(None).err();
        (r, w1)
    });
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    wd1.remove().unwrap();
    let (r, _w1) = waiter.join().unwrap();
    assert_eq!(r, Some(Error::DeviceGone), "the waiter woke with it");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "at once: {:?}",
        t.elapsed()
    );
    // The manager's device goes too: the call that finds it, and every later one, say so.
    md1.remove().unwrap();
    assert_eq!(m1.send(b"after", SEC).err(), Some(Error::DeviceGone));
    assert_eq!(m1.try_recv().err(), Some(Error::DeviceGone), "and for good");
    assert_eq!(m1.check_peer().err(), Some(Error::DeviceGone));
    assert_eq!(m1.flush().err(), Some(Error::DeviceGone));
    // The other worker is served as before, in the same process.
    for i in 0..200u32 {
        let data = vec![i as u8; 1000 + i as usize];
        m0.send(&data, SEC).unwrap();
        let msg = w0.recv(SEC).unwrap();
        assert_eq!(msg.to_vec().unwrap(), data);
        msg.release().unwrap();
    }
    assert!(m0.check_peer().unwrap());
}

/// Every way a call can meet the stand-in page answers DeviceGone: a receive, a send, a
/// reservation already made, a message already found, a peer check; and a new channel
/// cannot be opened on the removed device's mapping.
#[test]
fn every_call_that_meets_a_removed_device_says_so() {
    let len = 1 << 16;
    type Step = fn(&mut Channel) -> Result<(), Error>;
    let steps: [(&str, Step); 6] = [
        ("try_recv", |c| c.try_recv().map(drop)),
        ("recv", |c| c.recv(SEC).map(drop)),
        // The worker's flag reads as raised (all ones): the ring says ENODEV.
        ("try_send", |c| c.try_send(b"x").map(drop)),
        ("send", |c| c.send(b"x", SEC)),
        ("check_peer", |c| c.check_peer().map(drop)),
        ("arm", |c| c.arm().map(drop)),
    ];
    for (name, step) in steps {
        let ([md, _wd], mut m, mut w) = on_model_devices(len);
        w.send(b"hello", SEC).unwrap();
        md.remove().unwrap();
        assert_eq!(step(&mut m).err(), Some(Error::DeviceGone), "{name}");
        assert_eq!(
            m.try_recv().err(),
            Some(Error::DeviceGone),
            "{name}: for good"
        );
        drop(w);
    }
    // Removed between finding a message and releasing it: the payload reads as the stand-in
    // page (the caller's check of it fails), and the release says why.
    let ([md, _wd], mut m, mut w) = on_model_devices(len);
    w.send(b"hello", SEC).unwrap();
    let msg = m.recv(SEC).unwrap();
    md.remove().unwrap();
    assert_eq!(msg.to_vec().unwrap(), [0xff; 5]);
    assert_eq!(msg.release().err(), Some(Error::DeviceGone));
    // Removed between reserving and committing.
    let ([md, _wd], mut m, _w) = on_model_devices(len);
    let mut r = m.reserve(8, SEC).unwrap();
    md.remove().unwrap();
    r.write(0, b"12345678").unwrap();
    let committed = r.commit();
    assert!(
        matches!(committed, Ok(()) | Err(Error::DeviceGone)),
        "{committed:?}"
    );
    assert_eq!(m.flush().err(), Some(Error::DeviceGone));
    // The mapping is still there; a channel over it is not.
    let map = md.map();
    assert_eq!(map.err(), Some(rustix::io::Errno::NODEV));
    let seg = Segment::new(len).unwrap();
    let d = seg.device(0).unwrap();
    let map = d.map().unwrap();
    d.remove().unwrap();
    for role in [Role::Manager, Role::Worker] {
        let e = Channel::new(map.clone(), 0, len, role, d.links(), quick());
        assert_eq!(e.err(), Some(Error::DeviceGone), "{role:?}");
    }
}

/// What the stand-in page reads as (all 0xff), written by a peer on a device that is still
/// there, is the peer's corruption, not a removal.
#[test]
fn garbage_on_a_present_device_is_the_peer_s() {
    let len = 1 << 16;
    let ([md, _wd], mut m, _w) = on_model_devices(len);
    let map = md.map().unwrap();
    let win = Window::new(map, 0, len).unwrap();
    // The worker's side block and ring 1's indices, all ones.
    win.write(layout::side_block(Role::Worker), &[0xff; 64])
        .unwrap();
    win.write(layout::head(1), &[0xff; 8]).unwrap();
    let e = m.try_recv().err().unwrap();
    assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    // The whole header: a manager formatting anew, as far as the worker can tell.
    let ([md, _wd], _m, mut w) = on_model_devices(len);
    let win = Window::new(md.map().unwrap(), 0, len).unwrap();
    win.write(0, &[0xff; 4096]).unwrap();
    assert_eq!(w.check_peer().err(), Some(Error::Reformatted));
}

/// `wait_for_peer` notices a removal within a look, whatever the stand-in page reads as:
/// as all ones (a peer of another version), or, after this process's own writes, as a peer
/// not attached yet; and a channel already gone answers at once.
#[test]
fn waiting_for_a_peer_ends_when_the_device_goes() {
    let len = 1 << 16;
    for absent in [false, true] {
        let seg = Segment::new(len).unwrap();
        let d = seg.device(0).unwrap();
        let map = d.map().unwrap();
        let mut m = Channel::new(map.clone(), 0, len, Role::Manager, d.links(), quick()).unwrap();
        let waiter = std::thread::spawn(move || m.wait_for_peer(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        d.remove().unwrap();
        if absent {
            // The worker's state, as the manager's own writes may leave it in the page.
            let win = Window::new(map, 0, len).unwrap();
            win.u32(layout::side_block(Role::Worker) + layout::side::STATE)
                .unwrap()
                .store(layout::STATE_ABSENT, SeqCst);
        }
        assert_eq!(waiter.join().unwrap(), Err(Error::DeviceGone), "{absent}");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    let ([md, _wd], mut m, _w) = on_model_devices(len);
    md.remove().unwrap();
    assert_eq!(m.try_recv().err(), Some(Error::DeviceGone));
    let t = Instant::now();
    assert_eq!(
        m.wait_for_peer(Duration::from_secs(10)),
        Err(Error::DeviceGone)
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_peer_that_stops_beating_is_gone_after_the_timeout() {
    let p = pair(1 << 16);
    let frozen = Config {
        heartbeat: None,
        ..quick()
    };
    let impatient = Config {
        peer_timeout: Duration::from_millis(300),
        ..quick()
    };
    let mut m = side(&p, 1 << 16, Role::Manager, impatient).unwrap();
    let _w = side(&p, 1 << 16, Role::Worker, frozen).unwrap();
    let t = Instant::now();
    assert_eq!(m.recv(None).err(), Some(Error::PeerGone));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_restarted_worker_resumes_where_its_predecessor_stopped() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    for i in 0..4u8 {
        m.send(&[i], SEC).unwrap();
    }
    let msg = w.recv(SEC).unwrap();
    assert_eq!(msg.to_vec().unwrap(), [0]);
    msg.release().unwrap();
    w.send(b"ack 0", SEC).unwrap();
    // Peeked but never released: the successor sees it again.
    let _unreleased = w.recv(SEC).unwrap();
    drop(w);
    assert_eq!(m.check_peer().err(), Some(Error::PeerClosed));
    let mut w2 = side(&p, 1 << 16, Role::Worker, quick()).unwrap();
    for i in 1..4u8 {
        let msg = w2.recv(SEC).unwrap();
        assert_eq!(msg.to_vec().unwrap(), [i]);
        msg.release().unwrap();
    }
    assert_eq!(m.recv(SEC).unwrap().to_vec().unwrap(), b"ack 0");
    assert!(m.check_peer().unwrap());
    assert_eq!(m.stats().peer_restarts, 1);
}

#[test]
fn a_corrupted_index_kills_the_channel_and_only_it() {
    let p = pair(1 << 17);
    let half = 1 << 16;
    let open_at = |off| {
        let m = Channel::new(
            p.map.clone(),
            off,
            half,
            Role::Manager,
            p.manager_links.clone(),
            quick(),
        )
        .unwrap();
        let w = Channel::new(
            p.map.clone(),
            off,
            half,
            Role::Worker,
            p.worker_links.clone(),
            quick(),
        )
        .unwrap();
        (m, w)
    };
    let (mut m1, mut w1) = open_at(0);
    let (mut m2, mut w2) = open_at(half);
    let win = Window::new(p.map.clone(), 0, half).unwrap();
    win.u64(layout::head(0)).unwrap().store(1 << 40, SeqCst);
    let e = w1.try_recv().err().unwrap();
    assert!(matches!(e, Error::Corrupt(_)));
    assert_eq!(w1.recv(SEC).err(), Some(e), "the error sticks");
    m2.send(b"still fine", SEC).unwrap();
    assert_eq!(w2.recv(SEC).unwrap().to_vec().unwrap(), b"still fine");
    // A record header claiming more than was published.
    m1.flush().unwrap();
    win.u64(layout::head(1)).unwrap().store(16, SeqCst);
    win.u64(4096 + ((1 << 16) - 4096) / 8 * 7 / 64 * 64)
        .unwrap()
        .store(1 << 32 | 4000, SeqCst);
    let _ = m1.try_recv().err().unwrap();
}

#[test]
fn a_manager_formatting_anew_is_noticed_by_the_worker() {
    let p = pair(1 << 16);
    let (m, mut w) = open(&p, 1 << 16, quick());
    drop(m);
    let win = Window::new(p.map.clone(), 0, 1 << 16).unwrap();
    win.u64(0).unwrap().store(0, SeqCst); // no valid header: the next manager formats
    let _m = side(&p, 1 << 16, Role::Manager, quick()).unwrap();
    assert_eq!(w.check_peer().err(), Some(Error::Reformatted));
}

#[test]
fn a_busy_consumer_costs_far_less_than_a_ring_per_message() {
    let p = pair(1 << 20);
    let (mut m, mut w) = open(&p, 1 << 20, quick());
    let n = 20_000u32;
    let consumer = std::thread::spawn(move || {
        let mut got = 0u32;
        while got < n {
            let msg = w.recv(SEC).unwrap();
            let mut b = [0u8; 4];
            msg.read(0, &mut b).unwrap();
            assert_eq!(u32::from_le_bytes(b), got);
            msg.release().unwrap();
            got += 1;
        }
        w.stats()
    });
    for i in 0..n {
        let mut r = m.reserve(64, SEC).unwrap();
        r.write(0, &i.to_le_bytes()).unwrap();
        r.commit().unwrap();
        if i % 16 == 15 {
            m.flush().unwrap();
        }
    }
    m.flush().unwrap();
    let ws = consumer.join().unwrap();
    let ms = m.stats();
    assert_eq!(ws.received, u64::from(n));
    assert!(
        ms.rings * 10 < u64::from(n),
        "{} rings for {n} messages",
        ms.rings
    );
    // Every ring answers a sleep: never more rings than the consumer's sleeps.
    assert!(ms.rings <= ws.wakeups + 1, "{ms:?} {ws:?}");
}

/// A consumer fed messages a little further apart than `Config::spin` (a producer that takes
/// a while to write each, as with large messages) keeps polling between them once it has
/// seen the gap, instead of sleeping before each and costing a ring and a wake-up: far fewer
/// rings than messages. With the adaptation off it sleeps before nearly every message.
#[test]
fn a_streaming_consumer_keeps_polling_between_messages() {
    const N: u32 = 1000;
    fn stream(config: Config) -> (Stats, Stats) {
        let p = pair(1 << 16);
        let (mut m, mut w) = open(&p, 1 << 16, config);
        let consumer = std::thread::spawn(move || {
            for i in 0..N {
                let msg = w.recv(SEC).unwrap();
                let mut b = [0u8; 4];
                msg.read(0, &mut b).unwrap();
                assert_eq!(u32::from_le_bytes(b), i);
                msg.release().unwrap();
            }
            w.stats()
        });
        for i in 0..N {
            // "Writing" the message: busy for three times the spin, as a copy would be.
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(300) {
                std::hint::spin_loop();
            }
            m.send(&i.to_le_bytes(), SEC).unwrap();
        }
        (m.stats(), consumer.join().unwrap())
    }
    // The poll holds the CPU, as it did before polls yielded: on a loaded host a yield lets
    // the producer run on this CPU until it has sent, and no poll ever ends in a sleep.
    let holding = Config {
        spin_yield: false,
        ..quick()
    };
    let (ms, ws) = stream(holding.clone());
    let (fixed, _) = stream(Config {
        spin_max: Duration::ZERO,
        ..holding
    });
    // Yielding (the default) sleeps no more often than holding the CPU may.
    let (yielding, _) = stream(quick());
    assert!(
        yielding.rings * 4 < u64::from(N),
        "{} rings for {N} messages with yields",
        yielding.rings
    );
    eprintln!("adaptive: {ms:?} {ws:?}; fixed spin: {fixed:?}");
    assert_eq!(ws.received, u64::from(N));
    // Far fewer: about none on an idle machine; a loaded one preempts the producer now and
    // then for longer than `spin_max`, after which the consumer sleeps again for a message
    // or two.
    assert!(
        ms.rings * 4 < u64::from(N),
        "{} rings for {N} messages",
        ms.rings
    );
    assert!(ms.rings <= ws.wakeups + 1, "{ms:?} {ws:?}");
    assert!(
        fixed.rings > 2 * ms.rings,
        "without the adaptation the consumer sleeps before most messages: {} rings against {}",
        fixed.rings,
        ms.rings
    );
}

/// How the sides of [`exchange_never_losing_a_wake_up`] are configured: they sleep with no
/// spinning and no periodic look (an hour between liveness looks), and the reply ring is
/// small, so that the rings run full.
pub(super) fn sleepy() -> Config {
    Config {
        reply_ring_bytes: Some(256),
        check_interval: Duration::from_secs(3600),
        spin: Duration::ZERO,
        spin_max: Duration::ZERO,
        peer_timeout: Duration::from_secs(3600),
        ..quick()
    }
}

/// No lost wake-up: 30,000 messages of varying size from the manager (each committed by
/// `commit`, the ring flushed after those for which `flush_after` says so) to the worker,
/// which answers every seventh, both sides sleeping when there is nothing to do ([`sleepy`]).
/// One missed doorbell hangs the exchange, and the watchdog fails the test.
pub(super) fn exchange_never_losing_a_wake_up(
    mut m: Channel,
    mut w: Channel,
    commit: fn(Reservation<'_>),
    flush_after: fn(u32) -> bool,
) {
    let n = 30_000u32;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        for i in 0..n {
            let msg = w.recv(None).unwrap();
            let mut b = [0u8; 4];
            msg.read(0, &mut b).unwrap();
            assert_eq!(u32::from_le_bytes(b), i);
            msg.release().unwrap();
            if i % 7 == 0 {
                w.send(&i.to_le_bytes(), None).unwrap();
            }
        }
        done_tx.send(w.stats()).unwrap();
    });
    let manager = std::thread::spawn(move || {
        let mut acks = 0u32;
        for i in 0..n {
            let len = 4 + (i as usize * 13) % 200;
            let mut r = m.reserve(len, None).unwrap();
            r.write(0, &i.to_le_bytes()).unwrap();
            commit(r);
            if flush_after(i) {
                m.flush().unwrap();
            }
            while let Some(msg) = m.try_recv().unwrap() {
                msg.release().unwrap();
                acks += 1;
            }
        }
        while acks < n.div_ceil(7) {
            m.recv(None).unwrap().release().unwrap();
            acks += 1;
        }
        m.stats()
    });
    let ws = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a wake-up was lost: the exchange hung");
    worker.join().unwrap();
    let ms = manager.join().unwrap();
    assert_eq!(ws.received, u64::from(n));
    assert_eq!(ms.received, u64::from(n.div_ceil(7)));
}

#[test]
fn ping_pong_through_full_rings_never_loses_a_wake_up() {
    let p = pair(4096 + 1024);
    let (m, w) = open(&p, 4096 + 1024, sleepy());
    exchange_never_losing_a_wake_up(m, w, |r| r.commit().unwrap(), |_| true);
}

#[test]
fn epoll_style_arm_says_when_not_to_sleep() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    assert!(w.arm().unwrap(), "nothing there: sleep");
    m.send(b"x", SEC).unwrap();
    assert_eq!(m.stats().rings, 1, "the armed side is rung");
    let fd = w.wake_fd().unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    assert_eq!(rustix::event::poll(&mut fds, None).unwrap(), 1);
    w.disarm().unwrap();
    assert!(!w.arm().unwrap(), "a message is there: do not sleep");
    w.try_recv().unwrap().unwrap().release().unwrap();
    m.send(b"y", SEC).unwrap();
    assert_eq!(m.stats().rings, 1, "a side that is not armed is not rung");
}

/// A hostile worker publishes a peer id the driver refuses (above 0xffff) and keeps its
/// waiting flags up. Ringing must not turn a delivered message into an error (a caller that
/// retried would send it twice): the manager rings the id the worker attached with.
#[test]
fn a_hostile_peer_id_does_not_turn_a_delivered_message_into_an_error() {
    let p = pair(1 << 16);
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    let win = Window::new(p.map.clone(), 0, 1 << 16).unwrap();
    let worker = layout::side_block(Role::Worker);
    assert!(m.check_peer().unwrap());
    win.u32(worker + layout::side::PEER_ID)
        .unwrap()
        .store(0x1_0000, SeqCst);
    for i in 0..3u8 {
        win.u32(layout::consumer_waiting(0))
            .unwrap()
            .store(1, SeqCst);
        assert_eq!(m.send(&[i], SEC), Ok(()), "send {i}");
        win.u32(layout::consumer_waiting(0))
            .unwrap()
            .store(1, SeqCst);
        let mut r = m.reserve(1, SEC).unwrap();
        r.write(0, &[i + 100]).unwrap();
        r.commit().unwrap();
        assert_eq!(m.flush(), Ok(()), "flush {i}");
    }
    assert_eq!(
        m.stats().rings,
        6,
        "rung at the id fixed when the worker attached"
    );
    for i in 0..3u8 {
        for v in [i, i + 100] {
            let msg = w.try_recv().unwrap().unwrap();
            assert_eq!(msg.to_vec().unwrap(), [v]);
            msg.release().unwrap();
        }
    }
    assert!(w.try_recv().unwrap().is_none(), "each message once");
    // The same on the way back: a release with the producer's flag up.
    w.send(b"reply", SEC).unwrap();
    win.u32(layout::producer_waiting(1))
        .unwrap()
        .store(1, SeqCst);
    let msg = m.recv(SEC).unwrap();
    assert_eq!(msg.release(), Ok(()));
    assert!(
        m.check_peer().unwrap(),
        "the attachment seen did not change"
    );
}

/// A peer that attaches (a new generation) with an id no doorbell reaches: the id is
/// checked when the attachment is seen, and the channel is Corrupt from then on; a message
/// committed before is still delivered and its call answers Ok.
#[test]
fn a_peer_id_beyond_the_doorbell_is_refused_when_the_peer_attaches() {
    let p = pair(1 << 16);
    let (mut m, w) = open(&p, 1 << 16, quick());
    drop(w);
    let win = Window::new(p.map.clone(), 0, 1 << 16).unwrap();
    let worker = layout::side_block(Role::Worker);
    // A worker attaching with id 0x10000, by hand.
    let gen = win.u64(worker + layout::side::GENERATION).unwrap();
    gen.store(gen.load(SeqCst) + 1, SeqCst);
    win.u32(worker + layout::side::PEER_ID)
        .unwrap()
        .store(0x1_0000, SeqCst);
    win.u32(worker + layout::side::STATE)
        .unwrap()
        .store(layout::STATE_ATTACHED, SeqCst);
    win.u32(layout::consumer_waiting(0))
        .unwrap()
        .store(1, SeqCst);
    // The manager has not looked at the peer since it opened (before the worker attached):
    // its send fixes the id, finds it bad, and still answers for the message it committed.
    assert_eq!(m.send(b"committed", SEC), Ok(()));
    assert_eq!(m.stats().sent, 1);
    let e = m.try_recv().err().unwrap();
    assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    // A manager opened on it now refuses it at once.
    let e = side(&p, 1 << 16, Role::Manager, quick());
    assert!(matches!(e.err(), Some(Error::Corrupt(_))));
    // And one that had seen the honest attachment refuses the new one when it looks.
    let q = pair(1 << 16);
    let (mut m, w) = open(&q, 1 << 16, quick());
    assert!(m.check_peer().unwrap());
    drop(w);
    let win = Window::new(q.map.clone(), 0, 1 << 16).unwrap();
    let gen = win.u64(worker + layout::side::GENERATION).unwrap();
    gen.store(gen.load(SeqCst) + 1, SeqCst);
    win.u32(worker + layout::side::PEER_ID)
        .unwrap()
        .store(0x1_0000, SeqCst);
    win.u32(worker + layout::side::STATE)
        .unwrap()
        .store(layout::STATE_ATTACHED, SeqCst);
    let e = m.check_peer().err().unwrap();
    assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
}

/// Positions resumed from the segment near the end of `u64` (a tampered segment: 2^64
/// bytes are never sent) are used as long as they do not overflow, then refused with
/// Corrupt; never a panic (this runs in debug builds, where an overflow would panic).
#[test]
fn positions_resumed_near_the_end_of_u64_are_refused_before_they_overflow() {
    let p = pair(1 << 16);
    drop(open(&p, 1 << 16, quick()));
    let win = Window::new(p.map.clone(), 0, 1 << 16).unwrap();
    // 72 bytes below 2^64: four records of 16 bytes fit (the last ends at 2^64 - 8).
    let start = u64::MAX - 71;
    for ring in 0..2 {
        win.u64(layout::head(ring)).unwrap().store(start, SeqCst);
        win.u64(layout::tail(ring)).unwrap().store(start, SeqCst);
    }
    // The manager resumes the valid header with these positions, the worker attaches.
    let (mut m, mut w) = open(&p, 1 << 16, quick());
    let mut sent = 0u8;
    let e = loop {
        match m.send(&[sent; 8], SEC) {
            Ok(()) => {
                let msg = w.recv(SEC).unwrap();
                assert_eq!(msg.to_vec().unwrap(), [sent; 8]);
                msg.release().unwrap();
                sent += 1;
            }
            Err(e) => break e,
        }
        assert!(sent < 100, "positions went past the end of u64");
    };
    assert!(sent >= 1, "the room left was used");
    assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    assert_eq!(m.try_send(b"x").err(), Some(e), "and for good");
    // The worker's side, the same on ring 1.
    let mut n = 0;
    let e = loop {
        match w.try_send(&[1; 8]) {
            Ok(true) => n += 1,
            Ok(false) => panic!("no room in an empty ring"),
            Err(e) => break e,
        }
        assert!(n < 100);
    };
    assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
}

/// `Duration::MAX` is "forever" wherever a timeout is taken (it used to overflow
/// `Instant + Duration` and panic): attaching, waiting for the peer, receiving, reserving,
/// and the spin. The peer answers, so every wait ends.
#[test]
fn duration_max_means_forever() {
    let p = pair(8192);
    let config = Config {
        reply_ring_bytes: Some(1024),
        attach_timeout: Duration::MAX,
        peer_timeout: Duration::MAX,
        ..quick()
    };
    let mut m = side(&p, 8192, Role::Manager, config.clone()).unwrap();
    let map = p.map.clone();
    let links = p.worker_links.clone();
    let spinning = Config {
        spin: Duration::MAX,
        spin_max: Duration::MAX,
        ..config.clone()
    };
    let worker = std::thread::spawn(move || {
        let mut w = Channel::new(map, 0, 8192, Role::Worker, links, spinning).unwrap();
        // A receive that spins "forever": until the message comes.
        let msg = w.recv(Some(Duration::MAX)).unwrap();
        assert_eq!(msg.to_vec().unwrap(), b"first");
        msg.release().unwrap();
        // Fill the reply ring, then wait for room with no end.
        let max = w.max_message();
        while w.try_send(&vec![1; max]).unwrap() {}
        w.send(b"after room", Some(Duration::MAX)).unwrap();
        w
    });
    m.wait_for_peer(Duration::MAX).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    m.send(b"first", Some(Duration::MAX)).unwrap();
    let mut got = 0;
    loop {
        let msg = m.recv(Some(Duration::MAX)).unwrap();
        let last = msg.to_vec().unwrap() == b"after room";
        msg.release().unwrap();
        got += 1;
        if last {
            break;
        }
    }
    assert!(got >= 2, "{got}");
    let mut w = worker.join().unwrap();
    m.send(b"bye", None).unwrap();
    assert_eq!(
        w.recv(Some(Duration::MAX)).unwrap().to_vec().unwrap(),
        b"bye"
    );
}

/// Released room is given back in batches: while the receiver has more messages in hand,
/// the shared tail stays where it was (up to a sixteenth of the ring); it moves when the
/// receiver has caught up with what it saw, at a flush, and when the receiver closes.
#[test]
fn released_room_is_published_in_batches_and_never_lost() {
    let len = 1 << 16;
    let p = pair(len);
    let (mut m, mut w) = open(&p, len, quick());
    let win = Window::new(p.map.clone(), 0, len).unwrap();
    let tail = || win.u64(layout::tail(0)).unwrap().load(SeqCst);
    for i in 0..8u8 {
        m.send(&[i; 40], SEC).unwrap();
    }
    // A backlog of eight: the first releases are held back.
    for i in 0..3u8 {
        let msg = w.recv(SEC).unwrap();
        assert_eq!(msg.to_vec().unwrap(), [i; 40]);
        msg.release().unwrap();
    }
    assert_eq!(tail(), 0, "held back while messages remain");
    w.flush().unwrap();
    assert_eq!(tail(), 3 * 48, "a flush gives the room back");
    // Caught up: the last release publishes at once.
    for i in 3..8u8 {
        let msg = w.recv(SEC).unwrap();
        assert_eq!(msg.to_vec().unwrap(), [i; 40]);
        msg.release().unwrap();
    }
    assert_eq!(tail(), 8 * 48);
    // A sixteenth of the ring released in a backlog is published without a flush.
    let ring = ((len - layout::HEADER_SIZE) - ((len - layout::HEADER_SIZE) / 8).max(4096)) & !63;
    let per = ring / 16 / 48 + 1;
    for _ in 0..per + 4 {
        m.send(&[9; 40], SEC).unwrap();
    }
    for _ in 0..per {
        w.recv(SEC).unwrap().release().unwrap();
    }
    assert!(tail() > (8 * 48) as u64, "a full batch is published");
    // The receiver closes with released room unpublished: its successor starts after it.
    let before = tail();
    w.recv(SEC).unwrap().release().unwrap();
    assert_eq!(tail(), before, "held back: messages remain");
    drop(w);
    assert_eq!(
        tail(),
        (8 + per as u64 + 1) * 48,
        "closing gives all the room back"
    );
}

/// A receiver that never waits on the channel (try_recv only, sleeping elsewhere) still gives
/// room back to a sender that sleeps for it: with no periodic look (an hour between liveness
/// looks), a release held back for good would hang the sender and fail the watchdog.
#[test]
fn a_receiver_that_never_waits_still_wakes_a_sender_waiting_for_room() {
    let len = 4096 + 2048;
    let p = pair(len);
    let config = Config {
        reply_ring_bytes: Some(256),
        check_interval: Duration::from_secs(3600),
        spin: Duration::ZERO,
        spin_max: Duration::ZERO,
        peer_timeout: Duration::from_secs(3600),
        ..quick()
    };
    let (mut m, mut w) = open(&p, len, config);
    let n = 20_000u32;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            let size = 4 + (i as usize * 29) % 500;
            let mut r = m.reserve(size, None).unwrap();
            r.write(0, &i.to_le_bytes()).unwrap();
            r.commit().unwrap();
            m.flush().unwrap();
        }
        done_tx.send(m.stats()).unwrap();
        m
    });
    let mut got = 0u32;
    while got < n {
        match w.try_recv().unwrap() {
            Some(msg) => {
                let mut b = [0u8; 4];
                msg.read(0, &mut b).unwrap();
                assert_eq!(u32::from_le_bytes(b), got);
                msg.release().unwrap();
                got += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    let ms = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("room released was never given back: the sender hung");
    assert_eq!(ms.sent, u64::from(n));
    drop(sender.join().unwrap());
}

/// A manager that stops (`crash`: its heartbeat stands still and it never says it leaves, as
/// when its VM is killed; else it closes) and a new manager process over the same memory:
/// the new one takes the channel over with what was queued both ways, and the worker, which
/// saw its manager gone, carries on with it without restarting.
fn a_manager_restart(crash: bool) {
    let p = pair(1 << 16);
    let worker_config = Config {
        peer_timeout: Duration::from_millis(300),
        ..quick()
    };
    let first_config = Config {
        heartbeat: if crash { None } else { quick().heartbeat },
        ..quick()
    };
    let (mut m, _) = open(&p, 1 << 16, first_config);
    assert!(!m.resumed(), "a fresh segment is formatted");
    let mut w = side(&p, 1 << 16, Role::Worker, worker_config).unwrap();
    for i in 0..3u8 {
        m.send(&[i], SEC).unwrap();
    }
    let msg = w.recv(SEC).unwrap();
    assert_eq!(msg.to_vec().unwrap(), [0]);
    msg.release().unwrap();
    w.send(b"ack 0", SEC).unwrap();
    if crash {
        // No Drop: nothing announces the end, the heartbeat (none) stands still.
        std::mem::forget(m);
    } else {
        drop(m);
    }
    // The worker drains what was queued, then sees its manager gone.
    for i in 1..3u8 {
        let msg = w.recv(SEC).unwrap();
        assert_eq!(msg.to_vec().unwrap(), [i]);
        msg.release().unwrap();
    }
    let gone = w.recv(SEC).err();
    let expected = if crash {
        Error::PeerGone
    } else {
        Error::PeerClosed
    };
    assert_eq!(gone, Some(expected));
    assert_eq!(w.check_peer().err(), Some(expected));
    // The new manager process.
    let mut m2 = side(&p, 1 << 16, Role::Manager, quick()).unwrap();
    assert!(m2.resumed(), "the valid header is taken over");
    // The answer its predecessor never read is there for it.
    let msg = m2.recv(SEC).unwrap();
    assert_eq!(msg.to_vec().unwrap(), b"ack 0");
    msg.release().unwrap();
    m2.send(b"after the restart", SEC).unwrap();
    let msg = w.recv(SEC).unwrap();
    assert_eq!(msg.to_vec().unwrap(), b"after the restart");
    msg.release().unwrap();
    assert!(w.check_peer().unwrap());
    assert_eq!(w.stats().peer_restarts, 1);
    w.send(b"ack 3", SEC).unwrap();
    assert_eq!(m2.recv(SEC).unwrap().to_vec().unwrap(), b"ack 3");
}

#[test]
fn a_crashed_manager_s_successor_resumes_and_the_worker_carries_on() {
    a_manager_restart(true);
}

#[test]
fn a_closed_manager_s_successor_resumes_and_the_worker_carries_on() {
    a_manager_restart(false);
}
