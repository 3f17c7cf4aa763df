//! Unit tests of `ivshmem_server`.

use super::*;
use sivshm_host::protocol::recv_message;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A server on a thread, its socket, its log, and a way to stop it.
struct Harness {
    path: std::path::PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(vectors: u16, peer_sndbuf: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ivshmem.sock");
        let listener = listen(&path).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop_rd, stop) = rustix::pipe::pipe().unwrap();
        let l2 = log.clone();
        let thread = std::thread::spawn(move || {
            let mut s = Server::new(
                Config {
                    size: 1 << 16,
                    vectors,
                    peer_sndbuf,
                },
                Box::new(move |l| l2.lock().unwrap().push(l)),
            )?;
            s.run(&listener, &stop_rd)
        });
        Harness {
            path,
            log,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// A client, as QEMU's ivshmem device is one: connects and reads the setup.
    fn connect(&self) -> Client {
        let sock = UnixStream::connect(&self.path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let sock = OwnedFd::from(sock);
        let (version, _) = recv_message(&sock).unwrap();
        assert_eq!(version, PROTOCOL_VERSION);
        let (id, _) = recv_message(&sock).unwrap();
        let (minus_one, shm) = recv_message(&sock).unwrap();
        assert_eq!(minus_one, -1);
        Client {
            sock,
            id: id as u16,
            shm: shm.expect("the shared memory comes with -1"),
            peers: BTreeMap::new(),
        }
    }

    fn log_has(&self, what: &str) -> bool {
        self.log_matches(|l| l.contains(what))
    }

    /// Whether a log line satisfies `f` within 10 s.
    fn log_matches(&self, f: impl Fn(&str) -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.log.lock().unwrap().iter().any(|l| f(l)) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.stop, b"x");
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

struct Client {
    sock: OwnedFd,
    id: u16,
    shm: OwnedFd,
    /// Per peer id, the eventfds received for it (own id included).
    peers: BTreeMap<u16, Vec<OwnedFd>>,
}

impl Client {
    /// Reads `n` peer announcements, as (id, with an fd); one without fd is a departure.
    fn read(&mut self, n: usize) -> Vec<(u16, bool)> {
        (0..n)
            .map(|_| {
                let (id, fd) = recv_message(&self.sock).unwrap();
                let (id, joined) = (id as u16, fd.is_some());
                match fd {
                    Some(fd) => self.peers.entry(id).or_default().push(fd),
                    None => drop(self.peers.remove(&id)),
                }
                (id, joined)
            })
            .collect()
    }
}

fn ring(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
}

fn rung(fd: &OwnedFd) -> bool {
    let mut b = [0u8; 8];
    rustix::io::read(fd, &mut b).is_ok()
}

#[test]
fn ids_in_connection_order_everyone_wired_to_everyone_one_region() {
    let h = Harness::new(2, PEER_SNDBUF);
    let mut a = h.connect();
    a.read(2); // its own two vectors
    let mut b = h.connect();
    b.read(4); // a's two, then its own two
    a.read(2); // b's two
    assert_eq!((a.id, b.id), (0, 1));
    assert_eq!(a.peers.keys().copied().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(b.peers.keys().copied().collect::<Vec<_>>(), [0, 1]);
    // Each side holds the other's doorbell: a rings b's vector 1, b's own fd fires.
    ring(&a.peers[&1][1]);
    assert!(rung(&b.peers[&1][1]));
    assert!(!rung(&b.peers[&1][0]));
    // One region: both got the same file, and what a writes there b reads.
    let (sa, sb) = (
        rustix::fs::fstat(&a.shm).unwrap(),
        rustix::fs::fstat(&b.shm).unwrap(),
    );
    assert_eq!(
        (sa.st_dev, sa.st_ino, sa.st_size),
        (sb.st_dev, sb.st_ino, 1 << 16)
    );
    rustix::io::pwrite(&a.shm, &[0x5a], 100).unwrap();
    let mut byte = [0u8];
    rustix::io::pread(&b.shm, &mut byte, 100).unwrap();
    assert_eq!(byte, [0x5a]);
    // A departure is announced with the id and no fd.
    drop(a);
    assert!(h.log_has("peer 0: closed its connection"));
    assert_eq!(b.read(1), [(0, false)]);
    // The freed id is not reused at once: the counter moves on, as QEMU's does.
    let c = h.connect();
    assert_eq!(c.id, 2);
}

#[test]
fn bad_clients_are_dropped_and_the_others_go_on() {
    // A small send buffer, so that a client that never reads fills it quickly.
    let h = Harness::new(1, 16 << 10);
    let mut good = h.connect();
    good.read(1);
    // Connects and closes at once. Either the server finds it gone before it told the
    // others (then nobody heard of it), or after (then the others see it come and go).
    drop(UnixStream::connect(&h.path).unwrap());
    // Wait until it is gone: were it still connected when the next client came, that
    // one could be announced between its coming and its going.
    assert!(
        h.log_matches(
            |l| l.starts_with("peer 1: ") && (l.contains("disconnected") || l.contains("dropped"))
        ),
        "{:?}",
        h.log.lock().unwrap()
    );
    // Sends something: dropped, and the others are told.
    let mut chatty = h.connect();
    chatty.read(2);
    let mut before = Vec::new();
    loop {
        let m = good.read(1)[0];
        if m == (chatty.id, true) {
            break;
        }
        before.push(m);
    }
    assert!(
        before.is_empty() || before == [(1, true), (1, false)],
        "peer 1 was announced but its departure was not: {before:?}"
    );
    rustix::io::write(&chatty.sock, b"garbage!").unwrap();
    assert!(h.log_has(&format!("peer {}: sent 8 byte(s)", chatty.id)));
    assert_eq!(good.read(1), [(chatty.id, false)]);
    // Never reads: the comings and goings of others pile up in its socket until it is
    // dropped; the server never blocks on it.
    let mute = UnixStream::connect(&h.path).unwrap();
    assert!(good.read(1)[0].1, "the mute peer is announced");
    let mut cycles = 0;
    while !h
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("does not read"))
    {
        assert!(cycles < 500, "a peer that never reads is never dropped");
        let mut c = h.connect();
        c.read(c.peers.len() + 3); // good's, mute's (if still there) and its own vector
        good.read(1);
        drop(c);
        good.read(1);
        cycles += 1;
    }
    // The good client learns that the mute one left, and still gets newcomers.
    let mut departures = good.read(1);
    while departures[0].1 {
        departures = good.read(1);
    }
    let late = h.connect();
    assert_eq!(good.read(1), [(late.id, true)]);
    drop(mute);
}

#[test]
fn bad_arguments_are_refused() {
    let bad = |size, vectors| {
        Config {
            size,
            vectors,
            peer_sndbuf: PEER_SNDBUF,
        }
        .check()
        .is_err()
    };
    assert!(bad(0, 1));
    assert!(bad(3 << 20, 1));
    assert!(bad(1024, 1));
    assert!(bad(1 << 20, 0));
    assert!(bad(1 << 20, 65));
    assert!(!bad(1 << 20, 1));
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join("sock");
    std::fs::write(&taken, b"").unwrap();
    let err = listen(&taken).unwrap_err();
    assert!(format!("{err}").contains("refusing to replace it"));
}
