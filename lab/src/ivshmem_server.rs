//! The IVSHMEM baseline's central server: QEMU's `contrib/ivshmem-server`, in Rust.
//!
//! Every VM's `ivshmem-doorbell` connects to one unix socket (`-chardev socket,path=...`).
//! The server gives each connection the next free peer id and, exactly as QEMU's server does
//! (QEMU `docs/specs/ivshmem-spec.rst`, `contrib/ivshmem-server/ivshmem-server.c`):
//!
//! 1. sends the newcomer the protocol version (0), its id, and `-1` with the shared-memory fd;
//! 2. tells every existing peer the newcomer's id once per vector, each with one of the
//!    newcomer's eventfds;
//! 3. sends the newcomer every existing peer's id once per vector with that peer's eventfds;
//! 4. sends the newcomer its own id once per vector with its own eventfds;
//!
//! and when a peer leaves, tells every other peer its id with no fd. So every VM holds every
//! other VM's doorbells, and every VM maps the whole region: what SIVSHM is measured against.
//!
//! Clients never send anything: one that does is dropped. Sends never block: a client that
//! does not read until its socket buffer is full is dropped, and the others go on. Every such
//! event is a log line naming the peer.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};

use sivshm_host::protocol::{send_message, Message, MAX_VECTORS, PROTOCOL_VERSION};

/// Socket buffer of a peer: room for about a thousand fd-carrying messages, so that a slow
/// reader is not mistaken for one that never reads.
pub const PEER_SNDBUF: usize = 1 << 20;

/// What the server serves.
pub struct Config {
    /// Bytes of shared memory: a power of two, at least a page.
    pub size: u64,
    /// Interrupt vectors per peer.
    pub vectors: u16,
    /// Send buffer per peer: what a peer may leave unread before it is dropped.
    pub peer_sndbuf: usize,
}

impl Config {
    pub fn check(&self) -> Result<()> {
        if !self.size.is_power_of_two() || self.size < 4096 {
            bail!(
                "the shared memory size must be a power of two of at least 4096 bytes, not {}",
                self.size
            );
        }
        if self.vectors == 0 || self.vectors > MAX_VECTORS {
            bail!("vectors must be 1 to {MAX_VECTORS}, not {}", self.vectors);
        }
        Ok(())
    }
}

struct Peer {
    id: u16,
    conn: OwnedFd,
    /// The eventfds that interrupt this peer, one per vector.
    vectors: Vec<OwnedFd>,
}

/// The server's state: the region, the peers, the next id to try.
pub struct Server {
    config: Config,
    shm: File,
    peers: BTreeMap<u16, Peer>,
    next_id: u16,
    log: Box<dyn FnMut(String) + Send>,
}

impl Server {
    pub fn new(config: Config, log: Box<dyn FnMut(String) + Send>) -> Result<Self> {
        config.check()?;
        let shm = sivshm_host::segments::create("ivshmem-server", config.size)?;
        Ok(Server {
            config,
            shm,
            peers: BTreeMap::new(),
            next_id: 0,
            log,
        })
    }

    /// Ids in use, in order.
    pub fn peer_ids(&self) -> Vec<u16> {
        self.peers.keys().copied().collect()
    }

    /// The next free id from a running counter, as QEMU's server picks it.
    fn take_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX as u32 {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if !self.peers.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Serves a new connection; on failure the connection is closed and logged.
    pub fn accept(&mut self, conn: OwnedFd) {
        let Some(id) = self.take_id() else {
            (self.log)("refusing a connection: all 65536 peer ids are taken".into());
            return;
        };
        if let Err(e) = self.welcome(id, conn) {
            (self.log)(format!("peer {id}: setup failed, dropped: {e:#}"));
        }
    }

    fn welcome(&mut self, id: u16, conn: OwnedFd) -> Result<()> {
        rustix::fs::fcntl_setfl(&conn, rustix::fs::OFlags::NONBLOCK)?;
        let sndbuf = self.config.peer_sndbuf;
        if rustix::net::sockopt::set_socket_send_buffer_size_force(&conn, sndbuf).is_err() {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&conn, sndbuf);
        }
        let vectors = (0..self.config.vectors)
            .map(|_| eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK))
            .collect::<rustix::io::Result<Vec<_>>>()
            .context("eventfd")?;
        let peer = Peer { id, conn, vectors };
        let send = |to: &Peer, value: i64, fd: Option<&OwnedFd>| {
            send_message(
                &to.conn,
                &Message {
                    value,
                    fd: fd.map(|f| f.as_fd()),
                },
            )
        };
        // Until the others hear of it, a failure concerns the newcomer alone.
        send(&peer, PROTOCOL_VERSION, None)?;
        send(&peer, id.into(), None)?;
        send(&peer, -1, Some(&OwnedFd::from(self.shm.try_clone()?)))?;
        // The others learn of the newcomer; one that cannot take it is dropped below.
        let mut stuck = Vec::new();
        for other in self.peers.values() {
            for v in &peer.vectors {
                if let Err(e) = send(other, id.into(), Some(v)) {
                    stuck.push((other.id, e));
                    break;
                }
            }
        }
        // From here on the newcomer is known: if it fails now, the others hear that it left.
        let others = self.peers.len();
        self.peers.insert(id, peer);
        let peer = &self.peers[&id];
        let mut result = Ok(());
        for other in self.peers.values().filter(|o| o.id != id) {
            if stuck.iter().any(|(s, _)| *s == other.id) {
                continue;
            }
            for v in &other.vectors {
                result = result.and_then(|()| send(peer, other.id.into(), Some(v)));
            }
        }
        for v in &peer.vectors {
            result = result.and_then(|()| send(peer, id.into(), Some(v)));
        }
        match result {
            Ok(()) => (self.log)(format!("peer {id}: connected, {others} other peer(s)")),
            Err(e) => self.drop_peer(id, &format!("setup failed ({e})")),
        }
        for (s, e) in stuck {
            self.drop_peer(s, &format!("its socket is full ({e}): it does not read"));
        }
        Ok(())
    }

    /// Removes peer `id` and tells the others it left.
    pub fn drop_peer(&mut self, id: u16, why: &str) {
        if self.peers.remove(&id).is_none() {
            return;
        }
        (self.log)(format!("peer {id}: {why}; disconnected"));
        let mut stuck = Vec::new();
        for other in self.peers.values() {
            let m = Message {
                value: id.into(),
                fd: None,
            };
            if let Err(e) = send_message(&other.conn, &m) {
                stuck.push((other.id, e));
            }
        }
        for (s, e) in stuck {
            self.drop_peer(s, &format!("its socket is full ({e}): it does not read"));
        }
    }

    /// Handles readiness on a peer's connection: a hang-up or anything sent ends it.
    fn serve_peer(&mut self, id: u16) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let mut buf = [0u8; 64];
        let why = match rustix::io::read(&peer.conn, &mut buf) {
            Ok(0) => "closed its connection".to_string(),
            Ok(n) => format!("sent {n} byte(s), but clients must not send anything"),
            Err(rustix::io::Errno::AGAIN) => return,
            Err(e) => format!("connection error {e}"),
        };
        self.drop_peer(id, &why);
    }

    /// Serves `listener` until `stop` becomes readable.
    pub fn run(&mut self, listener: &UnixListener, stop: &impl AsFd) -> Result<()> {
        listener.set_nonblocking(true)?;
        loop {
            let ids: Vec<u16> = self.peer_ids();
            let mut fds = vec![
                PollFd::new(listener, PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
            ];
            for id in &ids {
                fds.push(PollFd::new(&self.peers[id].conn, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            if ready[1] {
                return Ok(());
            }
            for (id, r) in ids.iter().zip(&ready[2..]) {
                if *r {
                    self.serve_peer(*id);
                }
            }
            if ready[0] {
                while let Ok((conn, _)) = listener.accept() {
                    self.accept(conn.into());
                }
            }
        }
    }
}

/// Binds `path`, refusing to take over anything that exists there.
pub fn listen(path: &Path) -> Result<UnixListener> {
    if path.symlink_metadata().is_ok() {
        bail!(
            "{} exists: refusing to replace it (another server, or a stale socket to remove)",
            path.display()
        );
    }
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

/// `sivshm-lab ivshmem-server`: serves until SIGTERM or SIGINT, then removes the socket.
pub fn main(path: &Path, config: Config) -> Result<()> {
    config.check()?;
    let listener = listen(path)?;
    let stop = sivshm_host::stop::StopPipe::new()?;
    let result = (|| {
        let mut server = Server::new(config, Box::new(|l| eprintln!("ivshmem-server: {l}")))?;
        eprintln!(
            "ivshmem-server: serving {} bytes, {} vector(s) per peer, on {}",
            server.config.size,
            server.config.vectors,
            path.display()
        );
        server.run(&listener, &stop.fd())
    })();
    let _ = std::fs::remove_file(path);
    drop(stop);
    result
}

#[cfg(test)]
mod tests;
