//! The manager's loop and workers on threads, over memfds, with eventfds as doorbells.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use sivshm::channel::{Channel, Config, Doorbell, Links, Role};

use crate::batches::{self, Received, BATCH_HEADER};
use crate::manager::Options;
use crate::worker::OnManagerGone;
use sivshm::model::{ModelDevice, Segment};
use sivshm::{EventFd, Mapping};

/// Peer `id` of a shared region: rings reach the eventfd of that id, as ivshmem does.
struct Bus(Vec<Arc<EventFd>>);

impl Doorbell for Bus {
    fn ring(&self, peer_id: u32) -> sivshm::Result<()> {
        match self.0.get(peer_id as usize) {
            Some(e) => e.signal(1),
            None => Ok(()),
        }
    }
}

fn memfd(len: usize) -> Arc<Mapping> {
    let fd = rustix::fs::memfd_create("seg", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len as u64).unwrap();
    Arc::new(Mapping::new(fd.as_fd(), 0, len).unwrap())
}

fn config() -> Config {
    Config {
        attach_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// Runs the manager over `manager_side` and a worker thread per `worker_side`.
fn options(rounds: u64, bytes: usize) -> Options {
    Options {
        rounds,
        bytes,
        timeout: Duration::from_secs(20),
        pace: None,
        rejoin: false,
        stop_file: None,
        progress: 0,
        replug: false,
    }
}

/// The manager's loop over channels that are all there from the start.
fn run_all(channels: Vec<Channel>, o: &Options) -> anyhow::Result<crate::manager::Report> {
    let channels = channels.into_iter().map(Some).collect();
    crate::manager::run(channels, o, &mut |_| Ok(None))
}

fn exchange(manager_side: Vec<Channel>, worker_side: Vec<Channel>, rounds: u64, bytes: usize) {
    let t = Duration::from_secs(20);
    let workers: Vec<_> = worker_side
        .into_iter()
        .map(|ch| {
            std::thread::spawn(move || crate::worker::run(ch, t, 0, OnManagerGone::Fail).unwrap())
        })
        .collect();
    let n = manager_side.len() as u64;
    let r = run_all(manager_side, &options(rounds, bytes)).unwrap();
    assert_eq!(r.verified, rounds * n);
    for w in workers {
        let w = w.join().unwrap();
        assert_eq!((w.rounds, w.mismatched), (rounds, 0));
        assert_eq!(w.bytes, rounds * bytes as u64);
    }
}

#[test]
fn three_workers_each_on_a_segment_of_its_own() {
    let (mut managers, mut workers) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let map = memfd(1 << 18);
        let to_m = Arc::new(EventFd::new().unwrap());
        let to_w = Arc::new(EventFd::new().unwrap());
        let ml = Links {
            doorbell: Some(to_w.clone()),
            wake: Some(to_m.clone()),
            own_id: Some(0),
            presence: None,
        };
        let wl = Links {
            doorbell: Some(to_m),
            wake: Some(to_w),
            own_id: Some(1),
            presence: None,
        };
        managers.push(Channel::new(map.clone(), 0, 1 << 18, Role::Manager, ml, config()).unwrap());
        workers.push(Channel::new(map, 0, 1 << 18, Role::Worker, wl, config()).unwrap());
    }
    exchange(managers, workers, 40, 50_000);
}

#[test]
fn workers_in_slots_of_one_region_with_one_manager_eventfd() {
    let slot = 1 << 17;
    let map = memfd(4 * slot);
    // Peer ids: the manager 0, worker i at i + 1.
    let fds: Vec<_> = (0..5).map(|_| Arc::new(EventFd::new().unwrap())).collect();
    let bus: Arc<dyn Doorbell> = Arc::new(Bus(fds.clone()));
    let (mut managers, mut workers) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let ml = Links {
            doorbell: Some(bus.clone()),
            wake: Some(fds[0].clone()),
            own_id: Some(0),
            presence: None,
        };
        let wl = Links {
            doorbell: Some(bus.clone()),
            wake: Some(fds[i + 1].clone()),
            own_id: Some(i as u32 + 1),
            presence: None,
        };
        managers
            .push(Channel::new(map.clone(), i * slot, slot, Role::Manager, ml, config()).unwrap());
        workers
            .push(Channel::new(map.clone(), i * slot, slot, Role::Worker, wl, config()).unwrap());
    }
    exchange(managers, workers, 30, 20_000);
}

#[test]
fn polling_without_doorbells_works_too() {
    let map = memfd(1 << 16);
    let m = Channel::new(
        map.clone(),
        0,
        1 << 16,
        Role::Manager,
        Links::default(),
        config(),
    )
    .unwrap();
    let w = Channel::new(map, 0, 1 << 16, Role::Worker, Links::default(), config()).unwrap();
    exchange(vec![m], vec![w], 20, 3000);
}

#[test]
fn a_batch_larger_than_the_ring_is_refused_clearly() {
    let map = memfd(1 << 16);
    let m = Channel::new(map, 0, 1 << 16, Role::Manager, Links::default(), config()).unwrap();
    let e = run_all(vec![m], &options(1, 1 << 16)).err().unwrap();
    assert!(e.to_string().contains("does not fit"), "{e}");
}

/// A pair of links over two eventfds, as one device pair gives them.
fn links() -> (Links, Links) {
    let to_m = Arc::new(EventFd::new().unwrap());
    let to_w = Arc::new(EventFd::new().unwrap());
    (
        Links {
            doorbell: Some(to_w.clone()),
            wake: Some(to_m.clone()),
            own_id: Some(0),
            presence: None,
        },
        Links {
            doorbell: Some(to_m),
            wake: Some(to_w),
            own_id: Some(1),
            presence: None,
        },
    )
}

/// A worker that answers `rounds` batches, then reads the next one, answers it and stops
/// before releasing it (its VM killed at the worst moment). Returns the rounds it answered.
fn worker_that_stops_after(ch: &mut Channel, rounds: u64) -> u64 {
    let t = Some(Duration::from_secs(20));
    for n in 0..=rounds {
        let mut msg = ch.recv(t).unwrap();
        let mut head = [0u8; BATCH_HEADER];
        msg.read(0, &mut head).unwrap();
        let Received::Batch { round, len, .. } = batches::parse(&head, msg.len()).unwrap() else {
            panic!("done before round {n}");
        };
        let mut data = vec![0; len];
        msg.read(BATCH_HEADER, &mut data).unwrap();
        msg.reply(&batches::ack(round, batches::fnv1a(&data)), t)
            .unwrap();
        if n < rounds {
            msg.release().unwrap();
        }
    }
    rounds + 1
}

/// The manager with `rejoin`, a worker that stops mid-run and its successor on the same
/// channel; the manager must not have to restart.
fn run_with_a_stopping_worker(rejoin: bool) -> anyhow::Result<crate::manager::Report> {
    let map = memfd(1 << 18);
    let (ml, wl) = links();
    let m = Channel::new(map.clone(), 0, 1 << 18, Role::Manager, ml, config()).unwrap();
    let w = Channel::new(map.clone(), 0, 1 << 18, Role::Worker, wl.clone(), config()).unwrap();
    let o = Options {
        rejoin,
        timeout: Duration::from_secs(5),
        pace: Some(Duration::from_millis(2)),
        ..options(40, 3000)
    };
    let manager = std::thread::spawn(move || run_all(vec![m], &o));
    let answered = std::thread::spawn(move || worker_that_stops_after(&mut { w }, 10))
        .join()
        .unwrap();
    assert_eq!(answered, 11);
    if !rejoin {
        return manager.join().unwrap();
    }
    // The successor: a new process attaching to the same memory.
    let successor = std::thread::spawn(move || {
        let ch = Channel::new(map, 0, 1 << 18, Role::Worker, wl, config()).unwrap();
        crate::worker::run(ch, Duration::from_secs(5), 0, OnManagerGone::Fail)
    });
    let r = manager.join().unwrap();
    let s = successor.join().unwrap().unwrap();
    // It took over at the batch its predecessor answered but did not release.
    assert_eq!((s.first, s.rounds, s.mismatched), (Some(11), 30, 0));
    r
}

#[test]
fn with_rejoin_a_stopped_worker_s_successor_carries_on_and_nothing_is_lost() {
    let r = run_with_a_stopping_worker(true).unwrap();
    assert_eq!(r.verified, 40);
    assert_eq!(r.restarts, 1);
    // Round 11 was answered by both.
    assert_eq!(r.repeats, 1);
    assert_eq!(r.workers.len(), 1);
    assert_eq!((r.workers[0].verified, r.workers[0].removed), (40, false));
}

#[test]
fn without_rejoin_a_stopped_worker_fails_the_run() {
    let e = run_with_a_stopping_worker(false).err().unwrap();
    assert!(
        format!("{e:#}").contains("the peer closed the channel"),
        "{e:#}"
    );
}

/// With a stop file the manager carries data until the file appears, then ends cleanly once
/// every worker has answered the same number of rounds, each checked.
#[test]
fn the_stop_file_ends_a_long_run_with_every_batch_verified() {
    let dir = tempfile::tempdir().unwrap();
    let stop = dir.path().join("stop");
    let (mut managers, mut workers) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let map = memfd(1 << 18);
        let (ml, wl) = links();
        managers.push(Channel::new(map.clone(), 0, 1 << 18, Role::Manager, ml, config()).unwrap());
        workers.push(Channel::new(map, 0, 1 << 18, Role::Worker, wl, config()).unwrap());
    }
    let t = Duration::from_secs(20);
    let threads: Vec<_> = workers
        .into_iter()
        .map(|ch| {
            std::thread::spawn(move || crate::worker::run(ch, t, 0, OnManagerGone::Fail).unwrap())
        })
        .collect();
    let o = Options {
        pace: Some(Duration::from_millis(5)),
        stop_file: Some(stop.clone()),
        ..options(1_000_000, 1000)
    };
    let touch = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&stop, b"").unwrap();
    });
    let r = run_all(managers, &o).unwrap();
    touch.join().unwrap();
    assert!(r.rounds > 1 && r.rounds < 1_000_000, "{}", r.rounds);
    assert_eq!(r.verified, 2 * r.rounds);
    for w in threads {
        let w = w.join().unwrap();
        assert_eq!((w.rounds, w.mismatched), (r.rounds, 0));
    }
}

/// A manager and a worker over a segment of their own, each through a device of its own
/// (the two VMs'); the manager's device is returned too, to remove it.
fn own_segment(len: usize) -> (Arc<ModelDevice>, Channel, Channel) {
    let seg = Segment::new(len).unwrap();
    let (md, wd) = (seg.device(0).unwrap(), seg.device(1).unwrap());
    let open = |d: &Arc<ModelDevice>, role| {
        Channel::new(d.map().unwrap(), 0, len, role, d.links(), config()).unwrap()
    };
    let m = open(&md, Role::Manager);
    let w = open(&wd, Role::Worker);
    (md, m, w)
}

/// Worker 1's device is removed under the manager mid-run (as the driver does: one page of
/// 0xff bytes under every page of the mapping, calls ENODEV, the eventfd signalled). The
/// manager reports the worker gone with what it had verified, and worker 0 gets every round.
#[test]
fn a_worker_whose_device_is_removed_is_dropped_and_the_others_carry_on() {
    let (_d0, m0, w0) = own_segment(1 << 18);
    let (d1, m1, w1) = own_segment(1 << 18);
    let t = Duration::from_secs(20);
    let steady =
        std::thread::spawn(move || crate::worker::run(w0, t, 0, OnManagerGone::Fail).unwrap());
    let removed = std::thread::spawn(move || {
        // The channel stays open until the device is gone: what the manager meets is the
        // removal, not a close.
        let mut w1 = w1;
        let answered = worker_that_stops_after(&mut w1, 5);
        d1.remove().unwrap();
        drop(w1);
        answered
    });
    let o = Options {
        pace: Some(Duration::from_millis(2)),
        ..options(60, 3000)
    };
    let r = run_all(vec![m0, m1], &o).unwrap();
    assert_eq!(removed.join().unwrap(), 6);
    let s = steady.join().unwrap();
    assert_eq!((s.rounds, s.mismatched), (60, 0));
    assert_eq!(r.removed.len(), 1);
    let (which, verified) = r.removed[0];
    assert_eq!(which, 1);
    // Rounds 1-5 were answered and released; round 6 answered and maybe seen before the end.
    assert!((5..=6).contains(&verified), "{verified}");
    assert_eq!(r.verified, 60 + verified);
    let w: Vec<_> = r.workers.iter().map(|w| (w.verified, w.removed)).collect();
    assert_eq!(w, [(60, false), (verified, true)]);
}

/// Worker 1's device is not there at the start (hot-plugged later): the manager serves worker
/// 0 meanwhile and worker 1 from the moment its channel can be opened.
#[test]
fn a_late_worker_is_served_once_its_device_appears() {
    let (_fd0, m0, w0) = own_segment(1 << 18);
    let (_fd1, m1, w1) = own_segment(1 << 18);
    let t = Duration::from_secs(20);
    let threads = [w0, w1]
        .map(|w| std::thread::spawn(move || crate::worker::run(w, t, 0, OnManagerGone::Fail)));
    let mut late = Some(m1);
    let mut looks = 0;
    let mut open = |i: usize| {
        assert_eq!(i, 1, "only the missing worker is looked for");
        looks += 1;
        Ok(if looks < 3 { None } else { late.take() })
    };
    let o = Options {
        pace: Some(Duration::from_millis(2)),
        ..options(30, 3000)
    };
    let r = crate::manager::run(vec![Some(m0), None], &o, &mut open).unwrap();
    assert_eq!(looks, 3);
    assert_eq!(r.verified, 60);
    assert!(r.removed.is_empty());
    for w in threads {
        let w = w.join().unwrap().unwrap();
        assert_eq!((w.rounds, w.mismatched), (30, 0));
    }
}

/// How long a worker here waits for a silent manager's heartbeat before it counts it gone.
const PEER_TIMEOUT: Duration = Duration::from_millis(200);

fn impatient() -> Config {
    Config {
        peer_timeout: PEER_TIMEOUT,
        ..config()
    }
}

/// A manager that sends rounds 1 to `sent` and reads the first `read` answers, then stops
/// as a killed VM's would: no heartbeat (it never beat), no goodbye.
fn predecessor_that_dies(map: Arc<Mapping>, links: Links, len: usize, sent: u64, read: u64) {
    let t = Some(Duration::from_secs(20));
    let c = Config {
        heartbeat: None,
        ..config()
    };
    let mut ch = Channel::new(map, 0, len, Role::Manager, links, c).unwrap();
    assert!(!ch.resumed());
    for round in 1..=sent {
        let data = batches::payload(0, round, 3000);
        let mut m = batches::batch_header(round, batches::fnv1a(&data)).to_vec();
        m.extend_from_slice(&data);
        ch.send(&m, t).unwrap();
    }
    for _ in 0..read {
        ch.recv(t).unwrap().release().unwrap();
    }
    std::mem::forget(ch);
}

/// The manager's VM is killed mid-run and its program started again (the same command line):
/// the new manager takes the channel over (the library's `resumed`), asks the worker where it
/// stands, checks the answers to its predecessor's batches still queued, and carries the run
/// to its end. The worker, never restarted, reports its manager gone, waits, and carries on.
#[test]
fn a_restarted_manager_takes_the_channel_over_and_the_worker_carries_on() {
    let len = 1 << 18;
    let map = memfd(len);
    let (ml, wl) = links();
    let worker = {
        let map = map.clone();
        std::thread::spawn(move || {
            let w = Channel::new(map, 0, len, Role::Worker, wl, impatient()).unwrap();
            crate::worker::run(w, Duration::from_secs(20), 0, OnManagerGone::Wait)
        })
    };
    predecessor_that_dies(map.clone(), ml.clone(), len, 6, 3);
    // Long enough for the worker to see its manager's heartbeat stand still (not a
    // measurement: the test holds either way, this makes it take the waiting path).
    std::thread::sleep(PEER_TIMEOUT * 10);
    let m = Channel::new(map, 0, len, Role::Manager, ml, config()).unwrap();
    assert!(m.resumed());
    let r = run_all(vec![m], &options(40, 3000)).unwrap();
    let w = worker.join().unwrap().unwrap();
    // Every round reached the worker once, in order, and matched its checksum.
    assert_eq!((w.first, w.rounds, w.mismatched), (Some(1), 40, 0));
    assert_eq!((w.manager_back, w.positions), (1, 1));
    // The worker had answered 6; those the predecessor did not read (3 at least: it may not
    // have published its reading of the others) were checked by the new manager.
    let s = &r.workers[0];
    assert_eq!((s.resumed_after, s.verified), (6, 34));
    assert!((3..=6).contains(&s.recovered), "{}", s.recovered);
    assert_eq!(r.verified, 34);
}

/// Without a previous manager, nothing is asked: a fresh segment is formatted.
#[test]
fn a_manager_on_a_fresh_segment_asks_nothing() {
    let len = 1 << 18;
    let map = memfd(len);
    let (ml, wl) = links();
    let m = Channel::new(map.clone(), 0, len, Role::Manager, ml, config()).unwrap();
    let w = Channel::new(map, 0, len, Role::Worker, wl, config()).unwrap();
    let worker = std::thread::spawn(move || {
        crate::worker::run(w, Duration::from_secs(20), 0, OnManagerGone::Wait)
    });
    let r = run_all(vec![m], &options(10, 3000)).unwrap();
    let w = worker.join().unwrap().unwrap();
    assert_eq!((w.positions, w.manager_back, w.rounds), (0, 0, 10));
    assert_eq!((r.workers[0].resumed_after, r.workers[0].recovered), (0, 0));
}

/// A worker that does not wait for its manager fails when it goes.
#[test]
fn a_worker_that_does_not_wait_fails_when_its_manager_dies() {
    let len = 1 << 18;
    let map = memfd(len);
    let (ml, wl) = links();
    let worker = {
        let map = map.clone();
        std::thread::spawn(move || {
            let w = Channel::new(map, 0, len, Role::Worker, wl, impatient()).unwrap();
            crate::worker::run(w, Duration::from_secs(20), 0, OnManagerGone::Fail)
        })
    };
    predecessor_that_dies(map, ml, len, 2, 0);
    let e = worker.join().unwrap().err().unwrap();
    assert!(format!("{e:#}").contains("stopped"), "{e:#}");
}

/// The manager's device for worker 1 is removed mid-run and plugged in again (the same
/// segment, a new device): with `replug` the manager serves worker 0 meanwhile, asks worker
/// 1 where it stands once its device is back (batches written after the removal never
/// reached the segment) and carries it to the end; worker 1, waiting for its manager, is
/// never restarted. Every round of both reaches its worker once and checks out.
#[test]
fn with_replug_a_removed_worker_is_served_again_once_its_device_is_back() {
    let len = 1 << 18;
    let (_d0, m0, w0) = own_segment(len);
    let seg = Segment::new(len).unwrap();
    let (md, wd) = (seg.device(0).unwrap(), seg.device(1).unwrap());
    let m1 = Channel::new(
        md.map().unwrap(),
        0,
        len,
        Role::Manager,
        md.links(),
        config(),
    )
    .unwrap();
    let w1 = Channel::new(
        wd.map().unwrap(),
        0,
        len,
        Role::Worker,
        wd.links(),
        impatient(),
    )
    .unwrap();
    let t = Duration::from_secs(20);
    let steady = std::thread::spawn(move || crate::worker::run(w0, t, 0, OnManagerGone::Fail));
    let waiting = std::thread::spawn(move || crate::worker::run(w1, t, 0, OnManagerGone::Wait));
    let remover = {
        let md = md.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            md.remove().unwrap();
        })
    };
    let mut looks = 0;
    let mut open = |i: usize| {
        assert_eq!(i, 1, "only the removed worker is looked for");
        looks += 1;
        if looks < 3 {
            return Ok(None);
        }
        let d = seg.device(0).unwrap();
        Ok(Some(Channel::new(
            d.map().unwrap(),
            0,
            len,
            Role::Manager,
            d.links(),
            config(),
        )?))
    };
    let o = Options {
        pace: Some(Duration::from_millis(5)),
        replug: true,
        ..options(60, 3000)
    };
    let r = crate::manager::run(vec![Some(m0), Some(m1)], &o, &mut open).unwrap();
    remover.join().unwrap();
    assert_eq!(looks, 3);
    assert!(r.removed.is_empty());
    assert_eq!(r.verified, 120);
    assert_eq!((r.workers[1].replugged, r.workers[1].verified), (1, 60));
    let s = steady.join().unwrap().unwrap();
    assert_eq!((s.rounds, s.mismatched), (60, 0));
    let w = waiting.join().unwrap().unwrap();
    assert_eq!(
        (w.first, w.rounds, w.mismatched, w.positions),
        (Some(1), 60, 0, 1)
    );
}

/// Without `replug` the same removal drops the worker for good (as before).
#[test]
fn without_replug_a_removed_worker_is_not_looked_for_again() {
    let len = 1 << 18;
    let (_d0, m0, w0) = own_segment(len);
    let (d1, m1, w1) = own_segment(len);
    let t = Duration::from_secs(20);
    let steady = std::thread::spawn(move || crate::worker::run(w0, t, 0, OnManagerGone::Fail));
    let removed = std::thread::spawn(move || {
        // The channel stays open until the device is gone: what the manager meets is the
        // removal, not a close.
        let mut w1 = w1;
        let answered = worker_that_stops_after(&mut w1, 3);
        d1.remove().unwrap();
        drop(w1);
        answered
    });
    let o = Options {
        pace: Some(Duration::from_millis(2)),
        ..options(30, 3000)
    };
    let r = crate::manager::run(vec![Some(m0), Some(m1)], &o, &mut |_| {
        panic!("a removed worker was looked for")
    })
    .unwrap();
    assert_eq!(removed.join().unwrap(), 4);
    assert_eq!(steady.join().unwrap().unwrap().rounds, 30);
    assert_eq!(r.removed.len(), 1);
}
