//! The manager's loop and workers on threads, over memfds, with eventfds as doorbells.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use sivshm::channel::{Channel, Config, Doorbell, Links, Role};

use crate::batches::{self, Received, BATCH_HEADER};
use crate::manager::Options;
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
        .map(|ch| std::thread::spawn(move || crate::worker::run(ch, t, 0, false).unwrap()))
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
fn worker_that_stops_after(mut ch: Channel, rounds: u64) -> u64 {
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
    let answered = std::thread::spawn(move || worker_that_stops_after(w, 10))
        .join()
        .unwrap();
    assert_eq!(answered, 11);
    if !rejoin {
        return manager.join().unwrap();
    }
    // The successor: a new process attaching to the same memory.
    let successor = std::thread::spawn(move || {
        let ch = Channel::new(map, 0, 1 << 18, Role::Worker, wl, config()).unwrap();
        crate::worker::run(ch, Duration::from_secs(5), 0, false)
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
        .map(|ch| std::thread::spawn(move || crate::worker::run(ch, t, 0, false).unwrap()))
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
    let steady = std::thread::spawn(move || crate::worker::run(w0, t, 0, false).unwrap());
    let removed = std::thread::spawn(move || {
        let answered = worker_that_stops_after(w1, 5);
        d1.remove().unwrap();
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
    let threads = [w0, w1].map(|w| std::thread::spawn(move || crate::worker::run(w, t, 0, false)));
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
