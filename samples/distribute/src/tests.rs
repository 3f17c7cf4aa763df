//! The manager's loop and workers on threads, over memfds, with eventfds as doorbells.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use sivshm::channel::{Channel, Config, Doorbell, Links, Role};
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
fn exchange(manager_side: Vec<Channel>, worker_side: Vec<Channel>, rounds: u64, bytes: usize) {
    let t = Duration::from_secs(20);
    let workers: Vec<_> = worker_side
        .into_iter()
        .map(|ch| std::thread::spawn(move || crate::worker::run(ch, t).unwrap()))
        .collect();
    let n = manager_side.len() as u64;
    let r = crate::manager::run(manager_side, rounds, bytes, t).unwrap();
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
        };
        let wl = Links {
            doorbell: Some(to_m),
            wake: Some(to_w),
            own_id: Some(1),
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
        };
        let wl = Links {
            doorbell: Some(bus.clone()),
            wake: Some(fds[i + 1].clone()),
            own_id: Some(i as u32 + 1),
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
    let e = crate::manager::run(vec![m], 1, 1 << 16, Duration::from_secs(1))
        .err()
        .unwrap();
    assert!(e.to_string().contains("does not fit"), "{e}");
}
