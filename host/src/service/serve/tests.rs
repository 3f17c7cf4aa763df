//! Unit tests of `serve`.

use super::*;
use std::os::unix::fs::PermissionsExt;

use crate::protocol::{recv_message, PROTOCOL_VERSION};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// A topology of a manager `m` and workers `w0` (4 MiB, 2 vectors) and `w1` (1 MiB,
/// `w1_vectors`), served on a thread.
struct Harness {
    topo: TopologyFile,
    log: Arc<Mutex<Vec<String>>>,
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    _dir: tempfile::TempDir,
}

fn topology(dir: &Path, w1_vectors: u16) -> TopologyFile {
    TopologyFile::parse(&format!(
        "name = \"t\"\nruntime_dir = \"{}\"\n[manager]\nname = \"m\"\n\
         [[worker]]\nname = \"w0\"\nsegment_mib = 4\nvectors = 2\n\
         [[worker]]\nname = \"w1\"\nsegment_mib = 1\nvectors = {w1_vectors}\n",
        dir.join("run").display()
    ))
    .unwrap()
}

impl Harness {
    fn new(w1_vectors: u16, options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let topo = topology(dir.path(), w1_vectors);
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        let mut server = Server::new(
            topo.clone(),
            options,
            Box::new(move |l| l2.lock().unwrap().push(l)),
        )
        .unwrap();
        let (stop_rd, stop) = rustix::pipe::pipe().unwrap();
        let thread = std::thread::spawn(move || server.run(&stop_rd));
        Harness {
            topo,
            log,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn socket(&self, vm: &str, peer: &str) -> std::path::PathBuf {
        self.topo.runtime_dir.join(format!("{vm}.{peer}.sock"))
    }

    fn connect(&self, vm: &str, peer: &str) -> UnixStream {
        let s = UnixStream::connect(self.socket(vm, peer)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Whether a log line satisfies `f` within 10 s.
    fn log_has(&self, what: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(what)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) -> Vec<String> {
        rustix::io::write(&self.stop, b"x").unwrap();
        self.thread.take().unwrap().join().unwrap().unwrap();
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = rustix::io::write(&self.stop, b"x");
            let _ = t.join();
        }
    }
}

/// A device's stream as QEMU reads it: own id, segment, and per id the eventfds.
struct Setup {
    own: i64,
    shm: OwnedFd,
    fds: Vec<(i64, OwnedFd)>,
}

fn read_setup(s: &UnixStream, vectors: usize) -> Setup {
    let fd = s.as_fd().try_clone_to_owned().unwrap();
    let (version, _) = recv_message(&fd).unwrap();
    assert_eq!(version, PROTOCOL_VERSION);
    let (own, none) = recv_message(&fd).unwrap();
    assert!(none.is_none());
    let (minus_one, shm) = recv_message(&fd).unwrap();
    assert_eq!(minus_one, -1);
    let fds = (0..2 * vectors)
        .map(|_| {
            let (id, fd) = recv_message(&fd).unwrap();
            (id, fd.expect("every peer message carries an eventfd"))
        })
        .collect();
    Setup {
        own,
        shm: shm.unwrap(),
        fds,
    }
}

/// Whether `a` and `b` are one eventfd: what is written to one is read from the other.
/// (`fstat` cannot tell: every eventfd shares one anonymous inode.)
fn same_eventfd(a: &OwnedFd, b: &OwnedFd) -> bool {
    let mut buf = [0u8; 8];
    let drain = |f: &OwnedFd| while rustix::io::read(f, &mut [0u8; 8]).is_ok() {};
    drain(a);
    drain(b);
    rustix::io::write(a, &7u64.to_ne_bytes()).unwrap();
    let same = rustix::io::read(b, &mut buf).is_ok() && u64::from_ne_bytes(buf) == 7;
    drain(a);
    same
}

/// Whether `a` and `b` are one memfd.
fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    let (a, b) = (rustix::fs::fstat(a).unwrap(), rustix::fs::fstat(b).unwrap());
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// Nothing more is queued on `s`.
fn nothing_more(s: &UnixStream) {
    s.set_nonblocking(true).unwrap();
    let fd = s.as_fd().try_clone_to_owned().unwrap();
    assert_eq!(recv_message(&fd).unwrap_err(), rustix::io::Errno::AGAIN);
    s.set_nonblocking(false).unwrap();
}

#[test]
fn each_device_gets_its_own_stream_the_same_on_every_connection() {
    let h = Harness::new(1, Options::default());
    // Socket permissions: 0660.
    let mode = std::fs::metadata(h.socket("m", "w0"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    let mgr = h.connect("m", "w0");
    let m = read_setup(&mgr, 2);
    assert_eq!(m.own, 0);
    let ids: Vec<i64> = m.fds.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 1, 0, 0]);
    let wk = h.connect("w0", "m");
    let w = read_setup(&wk, 2);
    assert_eq!(w.own, 1);
    let ids: Vec<i64> = w.fds.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [0, 0, 1, 1]);
    // The worker joining sent the manager nothing, and neither got more than its stream.
    nothing_more(&mgr);
    nothing_more(&wk);

    // One segment, and each side's doorbells are the other's own eventfds.
    assert!(same_file(&m.shm, &w.shm));
    assert_eq!(rustix::fs::fstat(&m.shm).unwrap().st_size, 4 << 20);
    for v in 0..2 {
        assert!(same_eventfd(&m.fds[v].1, &w.fds[2 + v].1), "vector {v}");
        assert!(same_eventfd(&w.fds[v].1, &m.fds[2 + v].1), "vector {v}");
        assert!(!same_eventfd(&m.fds[v].1, &w.fds[v].1), "vector {v}");
        assert!(!same_eventfd(&m.fds[v].1, &m.fds[2 + v].1), "vector {v}");
        assert!(!same_eventfd(&m.fds[v].1, &m.fds[1 - v].1), "vector {v}");
    }
    // The other worker's channel is another segment and other eventfds.
    let other = read_setup(&h.connect("w1", "m"), 1);
    assert_eq!(other.own, 2);
    assert!(!same_file(&other.shm, &m.shm));
    for (_, f) in &m.fds {
        assert!(!same_eventfd(f, &other.fds[0].1));
        assert!(!same_eventfd(f, &other.fds[1].1));
    }

    // The worker's QEMU restarts: the same wiring again.
    drop(wk);
    assert!(h.log_has("w0.m: pid"));
    let again = read_setup(&h.connect("w0", "m"), 2);
    assert_eq!(again.own, 1);
    assert!(same_file(&again.shm, &w.shm));
    for (a, b) in again.fds.iter().zip(&w.fds) {
        assert_eq!(a.0, b.0);
        assert!(same_eventfd(&a.1, &b.1));
    }
    nothing_more(&mgr);
    let log = h.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("w0.m: pid") && l.ends_with("disconnected")),
        "{log:?}"
    );
}

#[test]
fn bad_clients_are_dropped_with_a_log_line_and_the_others_are_served() {
    // A send buffer far below w1's stream (3 + 2 * 64 messages), and a short deadline.
    let h = Harness::new(
        64,
        Options {
            send_timeout: Duration::from_millis(500),
            sndbuf_cap: Some(8 << 10),
        },
    );
    // Connects and closes at once.
    drop(UnixStream::connect(h.socket("m", "w0")).unwrap());
    // Sends garbage.
    let mut chatty = h.connect("m", "w0");
    std::io::Write::write_all(&mut chatty, b"garbage!").unwrap();
    assert!(h.log_has("sent 8 byte(s), but clients must not send anything; dropped"));
    // Never reads a stream that does not fit its buffer: dropped after the deadline.
    let mute = h.connect("w1", "m");
    // Meanwhile another device is served in full, and a slow reader of the large stream
    // gets all of it as it reads.
    let m = read_setup(&h.connect("m", "w0"), 2);
    assert_eq!(m.own, 0);
    let slow = h.connect("w1", "m");
    std::thread::sleep(Duration::from_millis(100));
    let s = read_setup(&slow, 64);
    assert_eq!((s.own, s.fds.len()), (2, 128));
    assert!(h.log_has("does not read; dropped"));
    let log = h.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.starts_with("w1.m: pid") && l.contains("took") && l.contains("of its 131")),
        "{log:?}"
    );
    drop(mute);
    // Still serving.
    assert_eq!(read_setup(&h.connect("w0", "m"), 2).own, 1);
    h.stop();
}

#[test]
fn a_manager_of_128_workers_is_served_each_channel_on_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let topo = TopologyFile::parse(&crate::service::topology_file::file_with_workers(
        128,
        run.to_str().unwrap(),
    ))
    .unwrap();
    let mut server = Server::new(topo.clone(), Options::default(), Box::new(|_| {})).unwrap();
    let (stop_rd, stop) = rustix::pipe::pipe().unwrap();
    let thread = std::thread::spawn(move || server.run(&stop_rd));
    let connect = |vm: &str, peer: &str| {
        let s = UnixStream::connect(run.join(format!("{vm}.{peer}.sock"))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        read_setup(&s, 1)
    };
    for i in 0..128 {
        let w = format!("w{i}");
        let m = connect("m", &w);
        let wk = connect(&w, "m");
        // The manager's device is peer 0 and its peer the worker; the worker's the
        // reverse; both on the worker's segment, each holding the other's eventfd.
        let id = i as i64 + 1;
        let ids = |s: &Setup| s.fds.iter().map(|(id, _)| *id).collect::<Vec<_>>();
        assert_eq!((m.own, ids(&m)), (0, vec![id, 0]), "worker {i}");
        assert_eq!((wk.own, ids(&wk)), (id, vec![0, id]), "worker {i}");
        assert!(same_file(&m.shm, &wk.shm), "worker {i}");
        assert!(same_eventfd(&m.fds[0].1, &wk.fds[1].1), "worker {i}");
    }
    rustix::io::write(&stop, b"x").unwrap();
    thread.join().unwrap().unwrap();
}

#[test]
fn clients_beyond_the_limit_are_refused() {
    let h = Harness::new(1, Options::default());
    let held: Vec<_> = (0..MAX_CLIENTS_PER_DEVICE)
        .map(|_| {
            let s = h.connect("w1", "m");
            read_setup(&s, 1);
            s
        })
        .collect();
    let extra = h.connect("w1", "m");
    assert!(h.log_has("refused: 4 clients already connected"));
    let fd = extra.as_fd().try_clone_to_owned().unwrap();
    assert_eq!(recv_message(&fd).unwrap_err(), rustix::io::Errno::PIPE);
    drop(held);
    h.stop();
}

#[test]
fn stale_sockets_are_replaced_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let topo = topology(dir.path(), 1);
    std::fs::create_dir_all(&topo.runtime_dir).unwrap();
    let stale = topo.runtime_dir.join("m.w0.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let server = Server::new(
        topo.clone(),
        Options::default(),
        Box::new(move |l| l2.lock().unwrap().push(l)),
    )
    .unwrap();
    let lines = log.lock().unwrap().clone();
    assert!(lines[0].starts_with("segment t-w0: "), "{lines:?}");
    assert_eq!(lines[2], "worker w0: doorbells: made anew", "{lines:?}");
    assert!(
        lines[2..]
            .iter()
            .any(|l| l.starts_with("removed stale socket")),
        "{lines:?}"
    );
    drop(server);
    // Stopped: no socket is left.
    for d in topo.devices() {
        assert!(!d.socket.exists(), "{} is left", d.socket.display());
    }
    std::fs::write(&stale, "mine").unwrap();
    let e = Server::new(topo, Options::default(), Box::new(|_| {}))
        .err()
        .unwrap();
    assert!(e.to_string().contains("is not a socket: refusing"), "{e}");
    assert_eq!(std::fs::read_to_string(&stale).unwrap(), "mine");
}
