//! Shared by the integration tests: `sivshm-host serve` run as a user runs it, and a client
//! that reads the ivshmem protocol as QEMU does (8 bytes and at most one fd per message),
//! with the library's own reader (`sivshm_host::protocol::recv_message`).
#![allow(dead_code)]

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use sivshm_host::protocol::recv_message;
use sivshm_host::service::{doorbells, status, store};

/// `key` of worker `name`'s line in status text `s` (where its segment and doorbells came
/// from: `segment`, `doorbells`).
pub fn worker_status(s: &str, name: &str, key: &str) -> String {
    status::query(s, Some(("worker", name)), Some(key)).unwrap()[0].clone()
}

/// The setups device `name` sent whole, in status text `s`.
pub fn setups(s: &str, name: &str) -> Option<u64> {
    status::query(s, Some(("device", name)), Some("setups")).ok()?[0]
        .parse()
        .ok()
}

/// A manager `mgr` and workers `w0` (2 vectors) and `w1` (1 vector), sockets owned by the
/// user running the test (so that it passes as any user).
pub fn topology(dir: &Path) -> String {
    format!(
        "{}[[worker]]\nname = \"w0\"\nsegment_mib = 2\nvectors = 2\n\
         [[worker]]\nname = \"w1\"\nsegment_mib = 1\n",
        header(dir)
    )
}

/// A manager `mgr` and `n` workers `w0`, `w1`, ... of 1 MiB and 1 vector, owned as in
/// [`topology`].
pub fn topology_of(dir: &Path, n: usize) -> String {
    let mut t = header(dir);
    for i in 0..n {
        t += &format!("[[worker]]\nname = \"w{i}\"\nsegment_mib = 1\n");
    }
    t
}

/// A worker's lines in a topology file.
pub fn worker(name: &str, mib: u64, more: &str) -> String {
    format!("[[worker]]\nname = \"{name}\"\nsegment_mib = {mib}\n{more}")
}

/// Topology `it` with its sockets in `dir/run`, and its manager `mgr`.
pub fn header(dir: &Path) -> String {
    format!(
        "name = \"it\"\nruntime_dir = \"{}\"\nuser = \"{}\"\ngroup = \"{}\"\n\
         [manager]\nname = \"mgr\"\n",
        dir.join("run").display(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    )
}

pub struct Serve {
    pub child: Child,
    pub dir: PathBuf,
    pub stderr: PathBuf,
}

pub fn spawn(file: &Path, stderr: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .arg("serve")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

impl Serve {
    /// Starts serve on the test topology in `dir` and waits until it listens.
    pub fn start(dir: &Path) -> Serve {
        Self::start_with(dir, &topology(dir))
    }

    /// Starts serve on topology `it` of text `text` in `dir` and waits until it listens.
    pub fn start_with(dir: &Path, text: &str) -> Serve {
        let file = dir.join("it.toml");
        fs::write(&file, text).unwrap();
        let stderr = dir.join(format!("serve-{}.log", fs::read_dir(dir).unwrap().count()));
        let mut s = Serve {
            child: spawn(&file, &stderr),
            dir: dir.to_path_buf(),
            stderr,
        };
        s.wait_for_status("serve ready", |_| true);
        s.check_alive();
        s
    }

    /// What serve reports now (`sivshm-host status`), if it is ready; found by the runtime
    /// directory, which every test's topology `it` shares (its file may be one serve refuses).
    pub fn status(&self) -> Option<String> {
        status::read_dir("it", &self.dir.join("run")).ok()
    }

    /// Until serve's status satisfies `done`, within 10 s.
    pub fn wait_for_status(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.status().is_some_and(|s| done(&s)) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("serve exited ({st}) before {what}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 10 s: status {:?}, log:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `key` of worker `name`'s status line (serve must be ready).
    pub fn worker_status(&self, name: &str, key: &str) -> String {
        worker_status(&self.status().expect("serve is ready"), name, key)
    }

    /// `key` of device `name`'s status line (`None` before serve is ready).
    pub fn device(&self, name: &str, key: &str) -> Option<u64> {
        let text = self.status()?;
        status::query(&text, Some(("device", name)), Some(key)).ok()?[0]
            .parse()
            .ok()
    }

    /// Until device `name` has sent `n` setup streams whole.
    pub fn wait_for_setups(&mut self, name: &str, n: u64) {
        let got = |s: &str| setups(s, name) == Some(n);
        self.wait_for_status(&format!("{n} setup(s) of {name}"), got);
    }

    /// Until device `name` has `n` clients connected.
    pub fn wait_for_clients(&mut self, name: &str, n: u64) {
        let got = |s: &str| {
            status::query(s, Some(("device", name)), Some("clients"))
                .is_ok_and(|v| v[0] == n.to_string())
        };
        self.wait_for_status(&format!("{n} client(s) of {name}"), got);
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.join("run").join(format!("{name}.sock"))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn check_alive(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("serve exited ({st}):\n{}", self.log());
        }
    }

    /// Writes `text` as the topology file and reloads it (`SIGHUP`); serve's log line about
    /// it, the `n`th reload (applied or refused, as its status counts them).
    pub fn reload(&mut self, text: &str, n: usize) -> String {
        fs::write(self.dir.join("it.toml"), text).unwrap();
        self.signal(Signal::HUP);
        let done = |s: &str| {
            let count = |k| status::query(s, None, Some(k)).map_or(0, |v| v[0].parse().unwrap());
            count("reloads") + count("refused") == n
        };
        self.wait_for_status(&format!("reload {n}"), done);
        self.check_alive();
        self.log()
            .lines()
            .filter(|l| l.starts_with("serve: reload"))
            .nth(n - 1)
            .unwrap()
            .to_string()
    }

    pub fn signal(&self, sig: Signal) {
        kill_process(Pid::from_raw(self.child.id() as i32).unwrap(), sig).unwrap();
    }

    pub fn exit_within(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "serve still runs after {secs} s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message as QEMU reads it: 8 bytes, at most one fd (the library's own reader).
pub fn recv(sock: &impl AsFd) -> Option<(i64, Option<OwnedFd>)> {
    recv_message(sock.as_fd()).ok()
}

/// A device's setup: own id, segment, and (id, eventfd) per peer message.
pub struct Setup {
    pub conn: UnixStream,
    pub own: i64,
    pub shm: OwnedFd,
    pub fds: Vec<(i64, OwnedFd)>,
}

pub fn connect(path: &Path, vectors: usize) -> Setup {
    let conn = UnixStream::connect(path).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (version, _) = recv(&conn).expect("version");
    assert_eq!(version, 0);
    let (own, none) = recv(&conn).expect("own id");
    assert!(none.is_none());
    let (minus_one, shm) = recv(&conn).expect("segment");
    assert_eq!(minus_one, -1);
    let fds = (0..2 * vectors)
        .map(|i| {
            let (id, fd) = recv(&conn).unwrap_or_else(|| panic!("peer message {i}"));
            (id, fd.expect("an eventfd"))
        })
        .collect();
    Setup {
        conn,
        own,
        shm: shm.expect("the segment's fd"),
        fds,
    }
}

impl Setup {
    pub fn ids(&self) -> Vec<i64> {
        self.fds.iter().map(|(id, _)| *id).collect()
    }

    /// Nothing beyond the stream was sent.
    pub fn nothing_more(&self) {
        self.conn.set_nonblocking(true).unwrap();
        let mut b = [0u8; 8];
        let r = rustix::io::read(&self.conn, &mut b);
        assert_eq!(r.unwrap_err(), rustix::io::Errno::AGAIN, "more was sent");
        self.conn.set_nonblocking(false).unwrap();
    }
}

/// Whether what is written to eventfd `a` is read from `b` (one object).
pub fn same_eventfd(a: &OwnedFd, b: &OwnedFd) -> bool {
    let drain = |f: &OwnedFd| while rustix::io::read(f, &mut [0u8; 8]).is_ok() {};
    drain(a);
    drain(b);
    rustix::io::write(a, &5u64.to_ne_bytes()).unwrap();
    let mut buf = [0u8; 8];
    let same = rustix::io::read(b, &mut buf).is_ok() && u64::from_ne_bytes(buf) == 5;
    drain(a);
    same
}

/// What serve of topology file `file` puts in systemd's fd store, in its order: every
/// worker's segment, then every worker's doorbells (`doorbells::fd_names`).
pub fn fd_store_names(file: &Path) -> Vec<String> {
    let t = sivshm_host::service::topology_file::TopologyFile::load(file).unwrap();
    let segments = t
        .workers
        .iter()
        .map(|w| store::segment_name(&t.name, &w.name));
    let doorbells = t
        .workers
        .iter()
        .flat_map(|w| doorbells::fd_names(&t.name, w));
    segments.chain(doorbells).collect()
}

/// The names of `stored`, as `FakeSystemd::until_ready` gives them.
pub fn names_of(stored: &[(String, OwnedFd)]) -> Vec<String> {
    stored.iter().map(|(n, _)| n.clone()).collect()
}

/// A stand-in for systemd's notify socket: a unix datagram socket the test binds.
pub struct FakeSystemd {
    pub sock: OwnedFd,
    pub path: PathBuf,
}

impl FakeSystemd {
    pub fn bind(path: &Path) -> FakeSystemd {
        use rustix::net::{
            bind, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
        };
        let sock = socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(&sock, &SocketAddrUnix::new(path).unwrap()).unwrap();
        FakeSystemd {
            sock,
            path: path.to_path_buf(),
        }
    }

    /// The next datagram and the fd it carries, within 10 s.
    pub fn recv(&self) -> Option<(String, Option<OwnedFd>)> {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        use std::io::IoSliceMut;
        use std::mem::MaybeUninit;
        let mut fds = [rustix::event::PollFd::new(
            &self.sock,
            rustix::event::PollFlags::IN,
        )];
        let ten = rustix::event::Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        if rustix::event::poll(&mut fds, Some(&ten)).ok()? == 0 {
            return None;
        }
        let mut buf = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let r = recvmsg(
            &self.sock,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .ok()?;
        let mut got = None;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = m {
                got = fds.next();
            }
        }
        Some((String::from_utf8_lossy(&buf[..r.bytes]).into_owned(), got))
    }

    /// Datagrams up to and with `READY=1`: the fd store's `(FDNAME, fd)`s, in order.
    pub fn until_ready(&self) -> Vec<(String, OwnedFd)> {
        let mut stored = Vec::new();
        loop {
            let (msg, fd) = self.recv().expect("no READY=1 within 10 s");
            if msg == "READY=1" {
                assert!(fd.is_none());
                return stored;
            }
            let name = msg
                .strip_prefix("FDSTORE=1\nFDNAME=")
                .unwrap_or_else(|| panic!("unexpected notification {msg:?}"));
            stored.push((name.to_string(), fd.expect("FDSTORE=1 without its fd")));
        }
    }
}

/// Runs `sivshm-host serve FILE`, which must refuse it: exit code 1. Its stderr.
#[allow(dead_code)] // not every test binary refuses a file
pub fn serve_refuses(file: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .arg("serve")
        .arg(file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "serve {}: {err}",
        file.display()
    );
    err
}
