//! `sivshm-host serve TOPOLOGY`: the long-running host side for the user's own VMs.
//!
//! Every segment and every eventfd is made once, at start or when a reload adds its worker
//! (`reload`: `SIGHUP`, which the binary turns into a readable fd); the segments are taken
//! back from systemd's fd store or from the files of the last start where there are any
//! (`store`), so that a restarted serve hands a restarted QEMU the same memory. Each VM device
//! listens on a unix socket of its own (`devices`); a QEMU that connects there receives that
//! device's complete setup stream at once (protocol version, its peer id, the segment, its
//! peer's eventfds, its own), the same ids and eventfds on every connection, so a QEMU that
//! restarts is wired as before while its peer runs on. A connection never causes anything to
//! be sent on any other: there is no distribution.
//!
//! Sockets are `0660`, owned by the file's `user` and `group`; they are bound before they
//! are opened to anyone (`listen` comes after `chmod` and `chown`), so nobody connects in
//! between. Sends never block: a stream that does not fit the socket is sent as the client
//! reads, and a client that has not taken its stream within [`Options::send_timeout`] is
//! dropped. A client that sends anything is dropped (QEMU never does). Each event is a log
//! line, and what serve has done is data in `RUNTIME_DIR/status` (`super::status`, read by
//! `sivshm-host status`); no client can stop the others from being served. The clients are
//! served in `clients`, the sockets made in `sockets`. On `SIGTERM` or `SIGINT` the
//! sockets are removed and serve exits 0; the eventfds go with the process, and so do the
//! segments that are memfds not in systemd's fd store.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::devices::DeviceSpec;
use super::doorbells;
use super::owner::{self, Ids};
use super::runtime_dir::RuntimeDir;
use super::store::{self, Places, Segment, Stored};
use super::topology_file::{TopologyFile, Worker};
use crate::protocol::{setup_messages, Message, PeerVectors};

/// How serve treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long a client may take to read its whole setup stream.
    pub send_timeout: Duration,
    /// At most this send buffer per client (tests: a stream that does not fit at once);
    /// `None` sizes it to the stream.
    pub sndbuf_cap: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            send_timeout: Duration::from_secs(5),
            sndbuf_cap: None,
        }
    }
}

/// One worker's channel: its segment and eventfds, made once (or when a reload adds it).
struct Channel {
    segment: Segment,
    /// The eventfds that interrupt the manager's device, and the worker's.
    manager_side: PeerVectors,
    worker_side: PeerVectors,
    /// Whether they came back from systemd's fd store (`status`).
    doorbells_from_store: bool,
}

impl Channel {
    /// Worker `w`'s channel over `segment`, its doorbells taken back from `stored` or made
    /// anew (and stored through `notify`): `doorbells::open`. Also the log line of them.
    fn new(
        topo: &str,
        w: &Worker,
        segment: Segment,
        stored: &mut Stored,
        notify: Option<&str>,
    ) -> Result<(Self, String)> {
        let d = doorbells::open(topo, w, stored, notify)?;
        let ch = Channel {
            segment,
            manager_side: d.manager_side,
            worker_side: d.worker_side,
            doorbells_from_store: d.from_store,
        };
        Ok((ch, d.line))
    }

    /// The setup stream of device `d`, one of this channel's two.
    fn stream(&self, d: &DeviceSpec) -> Result<Vec<Message<'_>>> {
        let (m, w) = (&self.manager_side, &self.worker_side);
        let (own, peer) = if d.own_id == 0 { (m, w) } else { (w, m) };
        setup_messages(own, self.segment.file.as_fd(), &[peer])
    }
}

/// The worker at the other end of device `d`'s channel.
fn worker_of(d: &DeviceSpec) -> &str {
    if d.own_id == 0 {
        &d.peer
    } else {
        &d.vm
    }
}

/// One device served: what it is, and the socket it listens on.
struct Served {
    spec: DeviceSpec,
    listener: OwnedFd,
    /// Setup streams sent whole since the device was added (`status`).
    setups: u64,
}

/// Where serve keeps its segments across restarts (`store`).
#[derive(Debug, Default)]
pub struct Keeping {
    /// The host's tmpfs, hugetlbfs mounts and huge page pools.
    pub places: Places,
    /// Segments systemd handed back.
    pub stored: Stored,
    /// `$NOTIFY_SOCKET`: where to store the segments, if systemd runs serve.
    pub notify: Option<String>,
}

impl Keeping {
    /// This host's places, and no systemd.
    pub fn host() -> Self {
        Keeping {
            places: Places::host(),
            ..Default::default()
        }
    }
}

/// The served topology.
pub struct Server {
    topo: TopologyFile,
    /// By worker name.
    channels: BTreeMap<String, Channel>,
    /// In the topology's device order; a device is here once its socket is bound.
    devices: Vec<Served>,
    clients: Vec<Client>,
    options: Options,
    log: Box<dyn FnMut(String) + Send>,
    ids: Ids,
    places: Places,
    notify: Option<String>,
    /// Reloads applied and refused, and the status file as last written (`status`).
    reloads: u64,
    refused: u64,
    published: String,
    _dir: RuntimeDir,
}

impl Server {
    /// Locks the runtime directory, creates every segment and eventfd, and binds every
    /// device's socket.
    pub fn new(
        topo: TopologyFile,
        options: Options,
        log: Box<dyn FnMut(String) + Send>,
    ) -> Result<Self> {
        Self::with_keeping(topo, options, log, Keeping::host())
    }

    /// As [`Server::new`], with the segments taken from and kept as `keeping` says.
    pub fn with_keeping(
        topo: TopologyFile,
        options: Options,
        mut log: Box<dyn FnMut(String) + Send>,
        mut keeping: Keeping,
    ) -> Result<Self> {
        let ids = owner::resolve(&topo)?;
        let dir = RuntimeDir::lock(&topo.runtime_dir, &topo.name, ids)?;
        let segments = store::open_segments(&topo, &keeping.places, &mut keeping.stored)?;
        let notify = keeping.notify.take();
        for (seg, w) in segments.iter().zip(&topo.workers) {
            log(segment_line(seg, w, notify.as_deref())?);
        }
        let mut channels = BTreeMap::new();
        for (seg, w) in segments.into_iter().zip(&topo.workers) {
            let (ch, line) =
                Channel::new(&topo.name, w, seg, &mut keeping.stored, notify.as_deref())?;
            log(format!("worker {}: {line}", w.name));
            channels.insert(w.name.clone(), ch);
        }
        for name in std::mem::take(&mut keeping.stored.fds).into_keys() {
            let mut line = format!(
                "systemd's fd store held {name:?}, no segment or doorbell of this topology: \
                 dropped"
            );
            if let Some(target) = &notify {
                if super::notify::unstore(target, &name).is_ok() {
                    line += " and removed from the store";
                }
            }
            log(line);
        }
        let mut server = Server {
            topo,
            channels,
            devices: Vec::new(),
            clients: Vec::new(),
            options,
            log,
            ids,
            places: keeping.places,
            notify,
            reloads: 0,
            refused: 0,
            published: String::new(),
            _dir: dir,
        };
        let specs = server.topo.devices();
        for d in &specs {
            remove_stale(&d.socket, &mut server.log)?;
        }
        // Pushed one by one: a failure on the way removes the sockets bound so far (Drop).
        for spec in specs {
            let listener = listener(&spec.socket, ids)?;
            server.devices.push(Served {
                spec,
                listener,
                setups: 0,
            });
        }
        let t = &server.topo;
        let line = format!(
            "serving topology {}: a manager and {} worker(s), {} sockets in {}",
            t.name,
            t.workers.len(),
            server.devices.len(),
            t.runtime_dir.display()
        );
        (server.log)(line);
        server.publish();
        Ok(server)
    }

    /// Serves until `stop` becomes readable.
    pub fn run(&mut self, stop: &impl AsFd) -> Result<()> {
        self.run_reloading(stop, None)
    }

    /// Serves until `stop` becomes readable; each time `reload`'s fd becomes readable (the
    /// binary makes it so on `SIGHUP`), reads what is there and reloads its topology file
    /// ([`Server::reload_file`]).
    pub fn run_reloading(
        &mut self,
        stop: &impl AsFd,
        reload: Option<(BorrowedFd<'_>, &Path)>,
    ) -> Result<()> {
        loop {
            self.drop_late();
            let deadline = self
                .clients
                .iter()
                .filter(|c| c.sent < c.total)
                .map(|c| c.accepted + self.options.send_timeout)
                .min();
            let timeout = deadline.map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()) + 1_000_000,
                }
            });
            let mut fds = vec![PollFd::new(stop, PollFlags::IN)];
            if let Some((hup, _)) = &reload {
                fds.push(PollFd::new(hup, PollFlags::IN));
            }
            let first = fds.len();
            for d in &self.devices {
                fds.push(PollFd::new(&d.listener, PollFlags::IN));
            }
            for c in &self.clients {
                let mut flags = PollFlags::IN;
                if c.sent < c.total {
                    flags |= PollFlags::OUT;
                }
                fds.push(PollFd::new(&c.fd, flags));
            }
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            if !ready[0].is_empty() {
                return Ok(());
            }
            let nl = self.devices.len();
            // Clients first, last to first so that indices stay valid; then new ones.
            for i in (0..self.clients.len()).rev() {
                let r = ready[first + nl + i];
                if r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                    self.read_client(i);
                } else if r.contains(PollFlags::OUT) {
                    self.pump(i);
                }
            }
            for d in 0..nl {
                if !ready[first + d].is_empty() {
                    self.accept(d);
                }
            }
            // Last: a reload changes the devices the indices above refer to.
            if let Some((hup, path)) = &reload {
                if first == 2 && !ready[1].is_empty() {
                    // What the signal wrote; a pipe read takes what is there and no more.
                    let _ = rustix::io::read(hup, &mut [0u8; 64]);
                    self.reload_file(path);
                }
            }
            self.publish();
        }
    }

    /// How log lines name device `d`.
    fn name(&self, d: usize) -> String {
        let d = &self.devices[d].spec;
        format!("{}.{}", d.vm, d.peer)
    }

    /// The setup stream of device `d`.
    fn stream(&self, d: usize) -> Result<Vec<Message<'_>>> {
        let spec = &self.devices[d].spec;
        let ch = self
            .channels
            .get(worker_of(spec))
            .with_context(|| format!("no channel of worker {}", worker_of(spec)))?;
        ch.stream(spec)
    }

    /// The topology served now.
    pub fn topology(&self) -> &TopologyFile {
        &self.topo
    }
}

impl Drop for Server {
    /// The sockets go; the segments and eventfds go with their last fd.
    fn drop(&mut self) {
        super::status::Status::remove(&self.topo.runtime_dir);
        for d in &self.devices {
            let _ = std::fs::remove_file(&d.spec.socket);
        }
    }
}

/// The log line of a worker's segment; puts it in systemd's fd store first if systemd runs
/// serve (`notify`) and it did not come from there.
fn segment_line(seg: &Segment, w: &Worker, notify: Option<&str>) -> Result<String> {
    let mut line = format!(
        "segment {}: {} MiB of {} pages, {}",
        seg.name,
        w.segment_size >> 20,
        w.page_size,
        seg.origin
    );
    if let Some(target) = notify {
        if seg.origin != store::Origin::FdStore {
            store::keep_in_fdstore(target, seg)?;
            line += &format!("; put in systemd's fd store as {}", seg.name);
        }
    }
    Ok(line)
}

/// `sivshm-host serve TOPOLOGY`: serves until `stop` becomes readable (the binary makes it
/// readable on `SIGTERM` or `SIGINT`; the library installs no signal handler), reloading the
/// file each time `reload` becomes readable (on `SIGHUP`), then removes the sockets.
pub fn main(path: &Path, stop: BorrowedFd<'_>, reload: BorrowedFd<'_>) -> Result<()> {
    // Taken first, so that the fds systemd passed are ours whatever else fails.
    let stored = Stored::take_from_env()?;
    let topo = TopologyFile::load(path)?;
    let keeping = Keeping {
        places: Places::host(),
        stored,
        notify: super::notify::socket(),
    };
    let mut server = Server::with_keeping(
        topo,
        Options::default(),
        Box::new(|l| eprintln!("serve: {l}")),
        keeping,
    )?;
    super::notify::ready()?;
    let result = server.run_reloading(&stop, Some((reload, path)));
    drop(server);
    eprintln!("serve: stopped; sockets removed");
    result
}

mod clients;
mod reload;
mod report;
mod sockets;

use clients::Client;
pub use clients::MAX_CLIENTS_PER_DEVICE;
use sockets::{listener, remove_stale};

#[cfg(test)]
mod tests;
