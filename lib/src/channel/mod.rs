//! A message channel between a manager and one worker over one shared segment.
//!
//! The segment (or a window of it) holds a versioned header and two single-producer
//! single-consumer rings of variable-length messages, one per direction (see `layout`). The
//! manager formats it (or resumes what a previous manager process left); the worker attaches.
//!
//! * **Zero copy, batched.** [`Channel::reserve`] gives space in the ring that the payload is
//!   written into, [`Reservation::commit`] publishes it, [`Channel::flush`] wakes the peer
//!   once for everything committed since ([`Channel::send`] does all three).
//!   [`Reservation::commit_batched`] leaves the publication to the flush (or a sixteenth of
//!   the ring later), so that a streaming sender writes its shared index once per batch. On
//!   the other side [`Channel::recv`] gives the oldest [`Message`], read in place, answered
//!   while held if it asks for an answer ([`Message::reply`]) and then
//!   [`Message::release`]d. Shared bytes are only ever touched through volatile copies and
//!   atomics, never through a Rust reference.
//! * **Notification suppression.** A side about to sleep raises a "waiting" flag in the
//!   shared control block and looks at the ring once more; a side that publishes looks at
//!   the flag and rings only if it is raised (and takes it down, so that one sleep costs one
//!   ring however many messages arrive). Both sides order their store and the following load
//!   with a sequentially consistent fence (Dekker's pattern): either the sleeper sees the new
//!   message on its second look, or the publisher sees the flag, so no wake-up is lost. A busy
//!   consumer never raises its flag and costs no rings at all. Before it raises its flag a
//!   waiting side polls the ring for a while ([`Config::spin`], longer while its recent waits
//!   were short, up to [`Config::spin_max`]), raising nothing, so a peer that answers or
//!   streams within that costs no ring either.
//! * **Liveness.** Each side publishes a generation and a heartbeat (see `peer`); a stopped
//!   peer is [`Error::PeerGone`] after [`Config::peer_timeout`], never a hang, and a restarted
//!   peer re-attaches where its predecessor stopped.
//! * **The device may go away.** After a removal the mapping does not fault: every page of
//!   it shows one page of the driver's, initially all `0xff` bytes (see [`crate::Mapping`]).
//!   Nothing in the memory says "removed", so the channel learns it from the API: an
//!   `ENODEV` from the device, the eventfd's wake-up, or a check of what it read that fails.
//!   Garbage read from the stand-in page and garbage written by a hostile peer fail the same
//!   checks; one question tells them apart ([`Presence::gone`], for a sivshm device a
//!   `GET_INFO` that answers `ENODEV`), asked whenever a check fails, a wait wakes with
//!   nothing to show, or the peer looks absent or stopped. If the device is gone the channel
//!   answers [`Error::DeviceGone`] for that call and every later one, else the error the
//!   check found ([`Error::Corrupt`] and the like). The stand-in page can never make the
//!   channel hand out a message it did not check, and any garbage, even one that passes
//!   some checks by chance (a process's own writes land in the page too), ends at a failed
//!   check or at the peer's timeout, both of which ask. A manager drops that worker's
//!   channel and serves the others.
//! * **The peer is hostile.** Everything read from the segment is checked before use and
//!   read once; a peer that breaks the rules gets this channel an [`Error::Corrupt`], and
//!   nothing else: no panic, no access outside the window, no unbounded loop. The channel
//!   does not checksum payloads: the peer is the one who writes them anyway.
//!
//! One thread can serve many channels: put each [`Channel::wake_fd`] in an epoll set, call
//! [`Channel::arm`] before sleeping and [`Channel::disarm`] after waking, and use the `try_`
//! calls in between.

mod doorbell;
mod error;
mod layout;
mod migrate;
mod peer;
mod receive;
mod ring;
mod send;
mod wait;
mod window;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{fence, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

pub use doorbell::{DeviceDoorbell, Doorbell, Presence};
pub use error::Error;
pub use layout::VERSION;
pub use migrate::{Incoming, Movable, Opener};
pub use receive::{Message, Received};
pub use send::{Reservation, Reserved};

use peer::{Heartbeat, PeerWatch};
use ring::{Consumer, Producer};
use wait::{deadline_after, passed};
use window::Window;

use crate::{Device, EventFd, Mapping};

/// Which end of the channel this is. The manager formats the segment and sends on ring 0;
/// the worker attaches and sends on ring 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    fn peer(self) -> Role {
        match self {
            Role::Manager => Role::Worker,
            Role::Worker => Role::Manager,
        }
    }
}

/// Choices of the user; [`Config::default`] suits a manager and its workers on one host.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bytes of the worker-to-manager ring (None: an eighth of the space, at least 4 KiB);
    /// only the manager's choice counts, when it formats.
    pub reply_ring_bytes: Option<usize>,
    /// The vector both sides ring and wait on ([`Channel::on_device`]).
    pub vector: u32,
    /// How long a worker waits for the manager to format the segment.
    pub attach_timeout: Duration,
    /// How long the peer's heartbeat may stand still (or the peer stay absent) before calls
    /// that wait for it fail with [`Error::PeerGone`].
    pub peer_timeout: Duration,
    /// How often this side's heartbeat thread beats; `None` runs no thread (the peer will
    /// then think this side gone after its timeout).
    pub heartbeat: Option<Duration>,
    /// Without an eventfd (a device without doorbell), how often a waiting side looks.
    pub poll_interval: Duration,
    /// The longest sleep between two looks at the peer's liveness while waiting.
    pub check_interval: Duration,
    /// How long a waiting side polls the ring before it raises its flag and sleeps: a peer
    /// that answers within it costs no doorbell and no wake-up (zero: sleep at once). The
    /// poll does not look at the peer's liveness: a spin too long to end (`Duration::MAX`)
    /// polls until the message or room comes, or the call's timeout.
    pub spin: Duration,
    /// The longest a waiting side polls when its previous wait was short: a side whose last
    /// wait ended within this polls up to twice that wait (at least [`Config::spin`]) before
    /// it sleeps, so that a consumer fed a stream of messages a little further apart than
    /// `spin` (large messages the producer takes a while to write) keeps polling instead of
    /// costing a doorbell and a wake-up per message. A wait that took longer, or timed out,
    /// brings the poll back to `spin`: an idle channel sleeps. At most `spin` turns the
    /// adaptation off; a zero `spin` still means sleep at once, whatever this says.
    pub spin_max: Duration,
    /// Whether a polling side offers the CPU between its looks after the first few (128):
    /// a peer that shares the CPU (a loaded host, a guest with fewer CPUs than busy threads)
    /// then runs instead of waiting out this side's time slice. Off: the poll holds the CPU.
    pub spin_yield: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reply_ring_bytes: None,
            vector: 0,
            attach_timeout: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(10),
            heartbeat: Some(Duration::from_millis(100)),
            poll_interval: Duration::from_micros(200),
            check_interval: Duration::from_millis(100),
            spin: Duration::from_micros(100),
            spin_max: Duration::from_millis(5),
            spin_yield: true,
        }
    }
}

/// How a channel reaches its peer and waits for it.
#[derive(Clone, Default)]
pub struct Links {
    /// Rings the peer; `None`: the peer polls.
    pub doorbell: Option<Arc<dyn Doorbell>>,
    /// Where the peer's rings arrive; `None`: this side polls.
    pub wake: Option<Arc<EventFd>>,
    /// The id the peer rings this side at (published in the header).
    pub own_id: Option<u32>,
    /// Asked whether the device is gone when something goes wrong (see the module
    /// documentation); `None`: memory that cannot go away (threads of one process).
    pub presence: Option<Arc<dyn Presence>>,
}

impl Links {
    /// The links of a sivshm device: on a doorbell device, `vector` both rung on the peer
    /// and bound to an eventfd to wait on (without a doorbell, both sides poll), and the
    /// device itself asked whether it is gone.
    pub fn on_device(device: &Device, vector: u32) -> crate::Result<Links> {
        let presence: Option<Arc<dyn Presence>> = Some(Arc::new(device.try_clone()?));
        let info = device.info();
        if !info.doorbell || info.nr_vectors == 0 {
            return Ok(Links {
                presence,
                ..Links::default()
            });
        }
        Ok(Links {
            doorbell: Some(Arc::new(DeviceDoorbell::new(device, vector)?)),
            wake: Some(Arc::new(device.bind_eventfd(vector)?)),
            own_id: info.peer_id,
            presence,
        })
    }

    /// Links for a manager and a worker in one process or one VM (threads, tests): each
    /// rings the other's eventfd. The manager is id 0, the worker id 1.
    pub fn in_process_pair() -> crate::Result<(Links, Links)> {
        let to_manager = Arc::new(EventFd::new()?);
        let to_worker = Arc::new(EventFd::new()?);
        Ok((
            Links {
                doorbell: Some(to_worker.clone()),
                wake: Some(to_manager.clone()),
                own_id: Some(0),
                presence: None,
            },
            Links {
                doorbell: Some(to_manager),
                wake: Some(to_worker),
                own_id: Some(1),
                presence: None,
            },
        ))
    }
}

/// Counters of one side, since it attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages committed.
    pub sent: u64,
    /// Messages released.
    pub received: u64,
    /// Doorbells rung on the peer.
    pub rings: u64,
    /// Sleeps ended by the peer's doorbell.
    pub wakeups: u64,
    /// Times the peer re-attached with a new generation.
    pub peer_restarts: u64,
    /// Rings that failed (the flag stays up, so the next publish rings again); a removed
    /// device's `ENODEV` is reported as [`Error::DeviceGone`] instead.
    pub ring_errors: u64,
}

/// One end of a channel. See the module documentation.
pub struct Channel {
    w: Window,
    role: Role,
    config: Config,
    links: Links,
    nonce: u64,
    tx: Producer,
    rx: Consumer,
    peer: PeerWatch,
    /// Stopped (joined) before the channel announces that it leaves.
    heartbeat: Option<Heartbeat>,
    poisoned: Option<Error>,
    unflushed: bool,
    /// The length a `try_` send found no room for: `arm` then also waits for space.
    want_space: Option<usize>,
    /// How long the next wait (`block`) polls before it sleeps (see [`Config::spin_max`]).
    spin_next: Duration,
    stats: Stats,
    /// Counts the reservations and the messages handed out, so that one set aside
    /// ([`Reservation::set_aside`], [`Message::set_aside`]) is only taken up again while no
    /// other was handed out since.
    reservations: u64,
    messages: u64,
    /// This manager took over a header (and rings) that a previous manager left.
    resumed: bool,
}

impl Channel {
    /// A channel over a whole sivshm device: its memory and its links
    /// ([`Links::on_device`] with [`Config::vector`]).
    pub fn on_device(device: &Device, role: Role, config: Config) -> Result<Self, Error> {
        let gone = |e| match e {
            rustix::io::Errno::NODEV => Error::DeviceGone,
            e => Error::Os(e),
        };
        let map = Arc::new(device.map().map_err(gone)?);
        let len = map.len();
        let links = Links::on_device(device, config.vector).map_err(gone)?;
        Channel::new(map, 0, len, role, links, config)
    }

    /// A channel over `len` bytes at `offset` of `map` (64-byte aligned), with the given
    /// links. The manager formats (or resumes a valid header); the worker waits up to
    /// [`Config::attach_timeout`] for a header. On a device that is gone (before or while
    /// attaching) this is [`Error::DeviceGone`].
    pub fn new(
        map: Arc<Mapping>,
        offset: usize,
        len: usize,
        role: Role,
        links: Links,
        config: Config,
    ) -> Result<Self, Error> {
        let gone = || links.presence.as_ref().is_some_and(|p| p.gone());
        match Self::attach(map, offset, len, role, links.clone(), config) {
            // Attached to the stand-in page of a removed device: a channel of nothing.
            Ok(_) if gone() => Err(Error::DeviceGone),
            Err(Error::Geometry(e)) => Err(Error::Geometry(e)),
            Err(_) if gone() => Err(Error::DeviceGone),
            r => r,
        }
    }

    fn attach(
        map: Arc<Mapping>,
        offset: usize,
        len: usize,
        role: Role,
        links: Links,
        config: Config,
    ) -> Result<Self, Error> {
        let w = Window::new(map, offset, len)?;
        let (header, tx, rx, resumed) = match role {
            Role::Manager => Self::format_or_resume(&w, &config)?,
            Role::Worker => {
                let h = Self::wait_for_header(&w, config.attach_timeout)?;
                let (tx, rx) = Self::attach_rings(&w, role, &h)?;
                (h, tx, rx, false)
            }
        };
        let block = layout::side_block(role);
        let mut peer = PeerWatch::new(layout::side_block(role.peer()));
        // A peer attached already: the id to ring it at is fixed (and checked) now.
        peer.ring_id(&w)?;
        peer::announce(&w, block, links.own_id)?;
        let heartbeat = match config.heartbeat {
            Some(every) => Some(Heartbeat::start(w.clone(), block, every)?),
            None => None,
        };
        Ok(Channel {
            peer,
            w,
            role,
            config,
            links,
            nonce: header.nonce,
            tx,
            rx,
            heartbeat,
            poisoned: None,
            unflushed: false,
            want_space: None,
            spin_next: Duration::ZERO,
            stats: Stats::default(),
            reservations: 0,
            messages: 0,
            resumed,
        })
    }

    fn attach_rings(
        w: &Window,
        role: Role,
        h: &layout::Header,
    ) -> Result<(Producer, Consumer), Error> {
        let out = layout::ring_out(role);
        let inbound = 1 - out;
        Ok((
            Producer::attach(w, out, h.rings[out])?,
            Consumer::attach(w, inbound, h.rings[inbound])?,
        ))
    }

    /// The manager keeps a valid header whose rings it can take over (true), and formats
    /// otherwise (false).
    fn format_or_resume(
        w: &Window,
        config: &Config,
    ) -> Result<(layout::Header, Producer, Consumer, bool), Error> {
        if let Ok(Some(h)) = layout::read(w) {
            if let Ok((tx, rx)) = Self::attach_rings(w, Role::Manager, &h) {
                return Ok((h, tx, rx, true));
            }
        }
        let rings = layout::plan(w.len(), config.reply_ring_bytes)?;
        let nonce = fresh_nonce();
        layout::format(w, rings, nonce)?;
        let h = layout::Header { rings, nonce };
        let (tx, rx) = Self::attach_rings(w, Role::Manager, &h)?;
        Ok((h, tx, rx, false))
    }

    fn wait_for_header(w: &Window, timeout: Duration) -> Result<layout::Header, Error> {
        let deadline = deadline_after(timeout);
        loop {
            let last = match layout::read(w) {
                Ok(Some(h)) => return Ok(h),
                Ok(None) => Error::NotFormatted,
                Err(e @ Error::Version { .. }) => return Err(e),
                // A manager formatting right now: look again.
                Err(e) => e,
            };
            if passed(deadline) {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether this manager took over a channel that a previous manager left (its header,
    /// the messages still in both rings, the positions), instead of formatting a new one: a
    /// manager that restarted finds what it had sent and not yet seen answered still queued,
    /// and the worker, which sees a new generation of its peer, carries on. What the previous
    /// manager had sent before that, and which answers it had already read, the channel does
    /// not know: the application asks its worker (the distribution sample's `Where`). Always
    /// false for a worker.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The largest message this side can send.
    pub fn max_message(&self) -> usize {
        self.tx.max_message()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            peer_restarts: self.peer.restarts,
            ..self.stats
        }
    }

    /// The eventfd this side's doorbell signals, for an epoll set (see [`Channel::arm`]).
    pub fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.links.wake.as_ref().map(|e| e.as_fd())
    }

    #[inline]
    fn live(&self) -> Result<(), Error> {
        match self.poisoned {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes up a reservation set aside by [`Reservation::set_aside`]; `None` if another
    /// reservation was handed out since (the room may be someone else's now).
    pub fn resume_reservation(&mut self, r: Reserved) -> Option<Reservation<'_>> {
        (r.epoch == self.reservations).then_some(Reservation {
            ch: self,
            slot: r.slot,
        })
    }

    /// Takes up a message set aside by [`Message::set_aside`]; `None` if another message was
    /// handed out since (this one may have been released meanwhile).
    pub fn resume_message(&mut self, m: Received) -> Option<Message<'_>> {
        (m.epoch == self.messages).then_some(Message {
            ch: self,
            found: m.found,
        })
    }

    /// Whether the device under the window is gone (see the module documentation).
    fn device_gone(&self) -> bool {
        self.links.presence.as_ref().is_some_and(|p| p.gone())
    }

    /// Classifies an error and records a fatal one: the channel answers every later call
    /// with it. An `ENODEV`, or any failure on a device that is gone (garbage read from the
    /// stand-in page fails the checks as a hostile peer's does), is [`Error::DeviceGone`]; a
    /// corruption seen right after the manager formatted anew is [`Error::Reformatted`].
    /// The caller's own mistakes (too large a message) and its timeouts are not looked into.
    #[cold]
    fn fail(&mut self, e: Error) -> Error {
        let e = match e {
            Error::TooLarge { .. } | Error::TimedOut => e,
            Error::Os(rustix::io::Errno::NODEV) | Error::DeviceGone => Error::DeviceGone,
            _ if self.device_gone() => Error::DeviceGone,
            Error::Corrupt(_) if self.reformatted() => Error::Reformatted,
            e => e,
        };
        if e.is_fatal() {
            self.poisoned = Some(e);
        }
        e
    }

    fn reformatted(&self) -> bool {
        !matches!(layout::magic_present(&self.w), Ok(true))
            || layout::nonce(&self.w).ok() != Some(self.nonce)
    }

    /// The result of an access to the window, its error classified (see [`Self::fail`]).
    #[inline]
    fn guard<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|e| self.fail(e))
    }

    #[inline]
    fn check_len(&self, len: usize) -> Result<(), Error> {
        let max = self.max_message();
        if len > max {
            return Err(Error::TooLarge { len, max });
        }
        Ok(())
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.heartbeat = None;
        // The messages committed in a batch and not yet published are delivered; the room
        // released and not yet given back is: a successor resumes from here.
        if self.poisoned.is_none() && matches!(self.tx.publish(&self.w), Ok(true)) {
            fence(SeqCst);
            let _ = self.notify_if_waiting(layout::consumer_waiting(self.tx.ring()));
        }
        if self.poisoned.is_none() && matches!(self.rx.publish(&self.w), Ok(true)) {
            fence(SeqCst);
            let _ = self.notify_if_waiting(layout::producer_waiting(self.rx.ring()));
        }
        let _ = self.lower_flags();
        peer::leave(&self.w, layout::side_block(self.role));
    }
}

/// A value that differs between formats, so that a worker notices a new one.
fn fresh_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t ^ u64::from(std::process::id()).rotate_left(32)).max(1)
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod tests;
