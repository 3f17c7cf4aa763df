//! The sivshm carrier: iceoryx2's link tunnel over one sivshm channel.
//!
//! A [`SivshmCarrier`] implements `iceoryx2_link_carrier::Carrier` on one
//! [`sivshm::channel::Channel`], the channel between a manager VM and one worker VM. Every
//! announcement and every frame of every bridged service is one channel message (see
//! [`crate::wire`]); the per-service byte channels the tunnel opens ([`SivshmChannel`]) share
//! it. On the manager's side the carrier holds the worker's [`Grant`]: it announces no
//! service outside it, opens no channel for one, and refuses (and records, see
//! [`SessionHandle::take_refusals`]) every offer the worker makes outside it.
//!
//! Everything the peer writes is untrusted: a message that does not decode, an offer whose
//! hash is not its name's, or a channel error (a corrupt ring, a peer gone) ends this carrier
//! with an error ([`SessionHandle::fault`]); nothing panics and nothing of another channel is
//! touched.
//!
//! Copies: a sent frame is written once, from the sample into the ring; a received frame is
//! copied out of the ring into a buffer (the carrier multiplexes services, so it reads before
//! it knows whose turn it is) and then by the tunnel into the sample it loans.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use iceoryx2::service::ipc;
use iceoryx2::service::service_hash::ServiceHash;
use iceoryx2_bb_elementary::generation::Generation;
use iceoryx2_link_backend::service_description::{
    ServiceDescription, ServiceDescriptor, ServiceTypes,
};
use iceoryx2_link_carrier::{Announcement, Carrier, Frame, Offer, PeerId};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use sivshm::channel::{Channel, Error as ChannelError, Role};

use crate::grant::Grant;
use crate::wake::{Borrowed, LocalWakes};
use crate::wire::{self, Malformed, Message};

/// What goes wrong on a sivshm carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierError {
    /// The sivshm channel failed (a corrupt ring, the peer gone, the device removed, ...).
    Channel(ChannelError),
    /// The peer wrote a message no honest gateway writes.
    Malformed(Malformed),
    /// The peer offered a service under a hash that is not its name's.
    ForgedHash { name: String },
    /// A frame larger than the channel's largest message.
    TooLarge {
        service: String,
        len: usize,
        max: usize,
    },
    /// The service is outside the worker's grant.
    NotGranted { service: String },
    /// No room in the ring within the send timeout (the peer does not read).
    SendTimedOut { service: String },
}

impl fmt::Display for CarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CarrierError::Channel(e) => write!(f, "sivshm channel: {e}"),
            CarrierError::Malformed(m) => write!(f, "{m}"),
            CarrierError::ForgedHash { name } => {
                write!(
                    f,
                    "the peer offered {name:?} under a hash that is not its name's"
                )
            }
            CarrierError::TooLarge { service, len, max } => write!(
                f,
                "a sample of service {service} needs a {len}-byte message, the sivshm channel \
                 carries at most {max} bytes"
            ),
            CarrierError::NotGranted { service } => {
                write!(f, "service {service:?} is not granted to this worker")
            }
            CarrierError::SendTimedOut { service } => {
                write!(
                    f,
                    "no room in the sivshm channel for service {service} in time"
                )
            }
        }
    }
}

impl std::error::Error for CarrierError {}

impl CarrierError {
    /// Whether the carrier is finished after this error (the others concern one call).
    pub fn is_fatal(&self) -> bool {
        match self {
            CarrierError::Channel(e) => {
                !matches!(e, ChannelError::TimedOut | ChannelError::TooLarge { .. })
            }
            CarrierError::Malformed(_) | CarrierError::ForgedHash { .. } => true,
            CarrierError::TooLarge { .. }
            | CarrierError::NotGranted { .. }
            | CarrierError::SendTimedOut { .. } => false,
        }
    }
}

/// A service the carrier refused, and why: recorded for the gateway to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub service: String,
    pub why: String,
}

/// Choices of the user.
#[derive(Clone, Debug)]
pub struct Options {
    /// The services the peer may see and offer (the manager's side); `None`: all (a worker
    /// trusts its manager).
    pub grant: Option<Grant>,
    /// How long a frame waits for room in the ring before the send fails.
    pub send_timeout: Duration,
    /// The most bytes of received frames held for services not yet read (beyond: dropped
    /// and counted).
    pub buffer_limit: usize,
    /// Frames are committed as a batch and reach the peer at [`SessionHandle::flush`] (or
    /// when the carrier waits, or once a sixteenth of the ring is unseen): the gateway
    /// flushes once per turn, so that a sample sent after its event within one turn still
    /// reaches the peer together with it (see `gateway`). False: each frame at once.
    pub defer_flush: bool,
    /// The peer's frames are taken in at [`SessionHandle::begin_turn`], and a turn's relays
    /// receive only those: a frame that arrives during the turn (taken in while a send waits
    /// for room, or by a look for offers) waits for the next turn. So one pass of the link
    /// delivers a turn's samples before its notifications, and a notification is never
    /// delivered a pass before its sample (see `gateway`). False: every receive takes in
    /// what the peer sent, and hands it out at once.
    pub by_turn: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grant: None,
            send_timeout: Duration::from_secs(5),
            buffer_limit: 64 << 20,
            defer_flush: false,
            by_turn: false,
        }
    }
}

/// Counters of one carrier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames_out: u64,
    /// Of `frames_out`, those of event services (notifications).
    pub events_out: u64,
    pub frames_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Frames dropped: for no service offered or opened, or beyond the buffer limit.
    pub dropped: u64,
    pub refusals: u64,
}

/// The most channel messages one look at the ring takes in.
const PUMP_BATCH: usize = 256;
/// The spare buffers a carrier keeps for frames it takes in: at most this many bytes in all
/// (a window of 64 KiB samples, or a ring's worth of larger ones, comes and goes without an
/// allocation: a fresh one costs page faults, under TCG more than the copy), and none larger
/// than `SPARE_BYTES`.
const SPARE_TOTAL: usize = 16 << 20;
const SPARE_BYTES: usize = 2 << 20;
/// The most refusals kept for the gateway to log (beyond, only counted).
const REFUSALS_KEPT: usize = 256;

/// A frame taken in: its message, where the frame starts in it, and its number in the order
/// of intake.
struct Taken {
    bytes: Vec<u8>,
    start: usize,
    number: u64,
}

struct Queue {
    frames: VecDeque<Taken>,
}

/// The state of one carrier, shared by it, its channels and the gateway's handle.
pub struct Session {
    channel: Channel,
    options: Options,
    offers: BTreeMap<ServiceHash, ServiceDescriptor>,
    queues: BTreeMap<ServiceHash, Queue>,
    opened: BTreeSet<ServiceHash>,
    buffered: usize,
    generation: u64,
    fault: Option<CarrierError>,
    refusals: Vec<Refusal>,
    /// Errors of single sends (too large, no room in time), for the gateway to log.
    errors: Vec<CarrierError>,
    stats: Stats,
    peer: PeerId,
    /// Buffers of frames delivered, for the next frames taken in.
    spare: Vec<Vec<u8>>,
    /// The capacity of the spare buffers, in bytes.
    spare_bytes: usize,
    /// Frames taken in so far (the next one's number).
    taken: u64,
    /// Frames numbered below this may be delivered (with [`Options::by_turn`], those taken
    /// in before the turn began).
    deliverable: u64,
}

/// A handle on a carrier's session for the loop that drives the link: wait, faults,
/// refusals, counters.
#[derive(Clone)]
pub struct SessionHandle(Rc<RefCell<Session>>);

/// The carrier over one sivshm channel.
pub struct SivshmCarrier {
    session: Rc<RefCell<Session>>,
}

/// The byte channel of one service on a [`SivshmCarrier`].
pub struct SivshmChannel {
    session: Rc<RefCell<Session>>,
    hash: ServiceHash,
    prefix: Vec<u8>,
    /// Whether the service is an event service (its frames are notifications).
    event: bool,
}

impl SivshmCarrier {
    pub fn new(channel: Channel, options: Options) -> SivshmCarrier {
        // One peer: the other end of the channel, named after its role.
        let peer = match channel.role() {
            Role::Manager => PeerId::new([2; PeerId::LENGTH]),
            Role::Worker => PeerId::new([1; PeerId::LENGTH]),
        };
        SivshmCarrier {
            session: Rc::new(RefCell::new(Session {
                channel,
                options,
                offers: BTreeMap::new(),
                queues: BTreeMap::new(),
                opened: BTreeSet::new(),
                buffered: 0,
                generation: 0,
                fault: None,
                refusals: Vec::new(),
                errors: Vec::new(),
                stats: Stats::default(),
                peer,
                spare: Vec::new(),
                spare_bytes: 0,
                taken: 0,
                deliverable: 0,
            })),
        }
    }

    pub fn handle(&self) -> SessionHandle {
        SessionHandle(self.session.clone())
    }
}

impl SessionHandle {
    /// The error that ended the carrier, if one did.
    pub fn fault(&self) -> Option<CarrierError> {
        self.0.borrow().fault.clone()
    }

    /// The refusals since the last call.
    pub fn take_refusals(&self) -> Vec<Refusal> {
        std::mem::take(&mut self.0.borrow_mut().refusals)
    }

    /// The errors of single sends since the last call (the fault is [`Self::fault`]).
    pub fn take_errors(&self) -> Vec<CarrierError> {
        std::mem::take(&mut self.0.borrow_mut().errors)
    }

    pub fn stats(&self) -> Stats {
        self.0.borrow().stats
    }

    /// The generation of the peer's offers as taken in so far ([`Self::begin_turn`],
    /// [`Self::pump`]): it moves with every offer and withdrawal.
    pub fn generation(&self) -> u64 {
        self.0.borrow().generation
    }

    /// Lets the peer see the frames committed since the last flush, and wakes it if it
    /// sleeps (see [`Options::defer_flush`]).
    pub fn flush(&self) {
        let mut s = self.0.borrow_mut();
        if s.fault.is_none() {
            if let Err(e) = s.channel.flush() {
                s.set_fault(CarrierError::Channel(e));
            }
        }
    }

    /// Takes in what the peer sent (announcements, frames) without waiting.
    pub fn pump(&self) {
        self.0.borrow_mut().pump();
    }

    /// Begins a turn of the link ([`Options::by_turn`]): takes in what the peer sent, and lets
    /// the turn's relays deliver every frame taken in so far.
    pub fn begin_turn(&self) {
        let mut s = self.0.borrow_mut();
        s.pump();
        s.deliverable = s.taken;
    }

    /// Sleeps until the peer rings or `timeout` passes (returns at once if a message waits).
    pub fn wait(&self, timeout: Duration) {
        self.0.borrow_mut().wait(timeout, None);
    }

    /// As [`Self::wait`], and also wakes when a local application notifies one of `local`'s
    /// event services.
    pub fn wait_also(&self, local: &LocalWakes, timeout: Duration) {
        self.0.borrow_mut().wait(timeout, Some(local));
    }

    /// Looks at the peer's liveness: an error (recorded as the fault) if it stopped or left.
    pub fn check_peer(&self) -> Result<bool, CarrierError> {
        let mut s = self.0.borrow_mut();
        if let Some(f) = &s.fault {
            return Err(f.clone());
        }
        match s.channel.check_peer() {
            Ok(alive) => Ok(alive),
            Err(e) => Err(s.set_fault(CarrierError::Channel(e))),
        }
    }
}

impl Session {
    fn set_fault(&mut self, e: CarrierError) -> CarrierError {
        if self.fault.is_none() && e.is_fatal() {
            self.fault = Some(e.clone());
        }
        e
    }

    fn live(&self) -> Result<(), CarrierError> {
        match &self.fault {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    fn refuse(&mut self, service: String, why: String) {
        self.stats.refusals += 1;
        if self.refusals.len() < REFUSALS_KEPT {
            self.refusals.push(Refusal { service, why });
        }
    }

    fn granted(&self, name: &str) -> bool {
        self.options.grant.as_ref().is_none_or(|g| g.admits(name))
    }

    fn not_granted_why(&self) -> String {
        match &self.options.grant {
            Some(g) => format!("not granted (grant: {g})"),
            None => String::from("not granted"),
        }
    }

    fn send_message(&mut self, data: &[u8]) -> Result<(), CarrierError> {
        self.live()?;
        let r = self.channel.send(data, Some(self.options.send_timeout));
        r.map_err(|e| self.set_fault(CarrierError::Channel(e)))
    }

    /// Takes in up to a batch of the peer's messages.
    fn pump(&mut self) {
        if self.fault.is_some() {
            return;
        }
        for _ in 0..PUMP_BATCH {
            let bytes = match self.channel.try_recv() {
                Ok(Some(m)) => {
                    // Into a spare buffer: a fresh allocation of a large frame costs a page
                    // fault per page (under TCG more than its copy).
                    let mut b = self.spare.pop().unwrap_or_default();
                    self.spare_bytes -= b.capacity();
                    b.resize(m.len(), 0);
                    let bytes = m.read(0, &mut b).map(|()| b);
                    match bytes.and_then(|b| m.release().map(|()| b)) {
                        Ok(b) => b,
                        Err(e) => {
                            self.set_fault(CarrierError::Channel(e));
                            return;
                        }
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.set_fault(CarrierError::Channel(e));
                    return;
                }
            };
            if let Err(e) = self.take_in(bytes) {
                self.set_fault(e);
                return;
            }
        }
    }

    fn take_in(&mut self, bytes: Vec<u8>) -> Result<(), CarrierError> {
        let header = match wire::decode(&bytes).map_err(CarrierError::Malformed)? {
            Message::Offered(descriptor) => return self.offered(descriptor),
            Message::Withdrawn(hash) => {
                if self.offers.remove(&hash).is_some() {
                    self.generation += 1;
                }
                if !self.opened.contains(&hash) {
                    if let Some(q) = self.queues.remove(&hash) {
                        self.buffered -= q.frames.iter().map(|f| f.bytes.len()).sum::<usize>();
                    }
                }
                return Ok(());
            }
            Message::Frame { hash, bytes: frame } => (hash, bytes.len() - frame.len()),
        };
        let (hash, start) = header;
        let wanted = self.opened.contains(&hash) || self.offers.contains_key(&hash);
        if !wanted || self.buffered + bytes.len() > self.options.buffer_limit {
            self.stats.dropped += 1;
            return Ok(());
        }
        self.stats.frames_in += 1;
        self.stats.bytes_in += (bytes.len() - start) as u64;
        self.buffered += bytes.len();
        let number = self.taken;
        self.taken += 1;
        if !self.options.by_turn {
            self.deliverable = self.taken;
        }
        self.queues
            .entry(hash)
            .or_insert_with(|| Queue {
                frames: VecDeque::new(),
            })
            .frames
            .push_back(Taken {
                bytes,
                start,
                number,
            });
        Ok(())
    }

    fn offered(&mut self, d: ServiceDescriptor) -> Result<(), CarrierError> {
        let name = d.name.as_str().to_string();
        // The hash is what the tunnel keys the service by: one that is not the name's would
        // pass a granted name off for another service.
        let own = ServiceDescription::with_default_settings::<ipc::Service>(
            d.name,
            d.types.clone(),
            &iceoryx2::config::Config::default(),
        )
        .hash();
        if own != d.hash {
            return Err(CarrierError::ForgedHash { name });
        }
        if !self.granted(&name) {
            let why = self.not_granted_why();
            self.refuse(name, format!("offered by the peer, {why}"));
            return Ok(());
        }
        if let ServiceTypes::PublishSubscribe(t) = &d.types {
            let fits = t.payload.alignment.is_power_of_two()
                && t.user_header.alignment.is_power_of_two()
                && t.payload.size.saturating_add(t.user_header.size) <= self.channel.max_message();
            if !fits {
                self.refuse(
                    name,
                    format!(
                        "offered by the peer with samples ({} + {} bytes) no message of the \
                         channel ({} bytes) can carry",
                        t.user_header.size,
                        t.payload.size,
                        self.channel.max_message()
                    ),
                );
                return Ok(());
            }
        }
        if self.offers.insert(d.hash, d.clone()) != Some(d) {
            self.generation += 1;
        }
        Ok(())
    }

    /// Whether frames taken in wait for the next turn ([`Options::by_turn`]).
    fn held(&self) -> bool {
        self.queues.values().any(|q| {
            q.frames
                .back()
                .is_some_and(|f| f.number >= self.deliverable)
        })
    }

    fn wait(&mut self, timeout: Duration, local: Option<&LocalWakes>) {
        if self.fault.is_some() {
            std::thread::sleep(timeout);
            return;
        }
        if self.options.by_turn && self.held() {
            return;
        }
        let armed = match self.channel.arm() {
            Ok(sleep) => sleep,
            Err(e) => {
                self.set_fault(CarrierError::Channel(e));
                return;
            }
        };
        if armed {
            match (self.channel.wake_fd(), local) {
                (Some(fd), Some(local)) => {
                    let _ = match Borrowed::new(fd) {
                        Some(b) => local.wait(&[&b], timeout),
                        None => local.wait(&[], timeout),
                    };
                }
                (None, Some(local)) => {
                    let _ = local.wait(&[], timeout);
                }
                (Some(fd), None) => {
                    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
                    let ts = Timespec::try_from(timeout).ok();
                    // An interrupted or failed poll is one short sleep: the loop looks again.
                    let _ = poll(&mut fds, ts.as_ref());
                }
                (None, None) => std::thread::sleep(timeout),
            }
        }
        if let Err(e) = self.channel.disarm() {
            self.set_fault(CarrierError::Channel(e));
        }
    }

    /// Sends one frame, waiting for room (and taking in the peer's messages meanwhile, so
    /// that two gateways sending to each other never wait on each other).
    fn send_frame(
        &mut self,
        hash: &ServiceHash,
        prefix: &[u8],
        frame: &Frame<'_>,
        event: bool,
    ) -> Result<(), CarrierError> {
        self.live()?;
        let len = prefix.len() + frame.header.len() + frame.payload.len();
        let max = self.channel.max_message();
        if len > max {
            return Err(CarrierError::TooLarge {
                service: self.name_of(hash),
                len,
                max,
            });
        }
        let deadline = Instant::now() + self.options.send_timeout;
        loop {
            let r = self.channel.try_reserve(len);
            match r {
                Ok(Some(mut r)) => {
                    let written = r
                        .write(0, prefix)
                        .and_then(|()| r.write(prefix.len(), frame.header))
                        .and_then(|()| r.write(prefix.len() + frame.header.len(), frame.payload))
                        .and_then(|()| match self.options.defer_flush {
                            true => r.commit_batched(),
                            false => r.commit(),
                        });
                    let flushed = match self.options.defer_flush {
                        true => written,
                        false => written.and_then(|()| self.channel.flush()),
                    };
                    flushed.map_err(|e| self.set_fault(CarrierError::Channel(e)))?;
                    self.stats.frames_out += 1;
                    self.stats.events_out += u64::from(event);
                    self.stats.bytes_out += (len - prefix.len()) as u64;
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(self.set_fault(CarrierError::Channel(e))),
            }
            self.pump();
            self.live()?;
            if Instant::now() >= deadline {
                return Err(CarrierError::SendTimedOut {
                    service: self.name_of(hash),
                });
            }
            self.wait(Duration::from_millis(1), None);
        }
    }

    fn name_of(&self, hash: &ServiceHash) -> String {
        match self.offers.get(hash) {
            Some(d) => d.name.as_str().to_string(),
            None => hash.as_str().to_string(),
        }
    }
}

impl Carrier for SivshmCarrier {
    type AnnouncementError = CarrierError;
    type ListError = CarrierError;
    type ChannelError = CarrierError;
    type Channel = SivshmChannel;

    fn announce(&mut self, announcement: Announcement) -> Result<(), CarrierError> {
        let mut s = self.session.borrow_mut();
        let data = match &announcement {
            Announcement::Offered { descriptor } => {
                let name = descriptor.name.as_str();
                if !s.granted(name) {
                    let why = s.not_granted_why();
                    s.refuse(
                        name.to_string(),
                        format!("not announced to the peer, {why}"),
                    );
                    return Ok(());
                }
                wire::offered(descriptor)
            }
            Announcement::Withdrawn { hash } => wire::withdrawn(hash),
        };
        s.send_message(&data)
    }

    fn generation(&self) -> Generation {
        let mut s = self.session.borrow_mut();
        s.pump();
        Generation::At(s.generation)
    }

    fn offers(&self, callback: &mut dyn FnMut(Offer)) -> Result<(), CarrierError> {
        let offers: Vec<Offer> = {
            let mut s = self.session.borrow_mut();
            s.pump();
            s.live()?;
            let peer = s.peer;
            s.offers
                .values()
                .map(|d| Offer {
                    peer,
                    descriptor: d.clone(),
                })
                .collect()
        };
        for o in offers {
            callback(o);
        }
        Ok(())
    }

    fn open_channel(
        &mut self,
        descriptor: &ServiceDescriptor,
    ) -> Result<SivshmChannel, CarrierError> {
        let mut s = self.session.borrow_mut();
        s.live()?;
        let name = descriptor.name.as_str();
        if !s.granted(name) {
            return Err(CarrierError::NotGranted {
                service: name.to_string(),
            });
        }
        s.opened.insert(descriptor.hash);
        Ok(SivshmChannel {
            session: self.session.clone(),
            hash: descriptor.hash,
            prefix: wire::frame_prefix(&descriptor.hash),
            event: matches!(descriptor.types, ServiceTypes::Event),
        })
    }
}

impl iceoryx2_link_carrier::Channel for SivshmChannel {
    type Error = CarrierError;

    fn send(&mut self, frame: Frame<'_>) -> Result<(), CarrierError> {
        let mut s = self.session.borrow_mut();
        let r = s.send_frame(&self.hash, &self.prefix, &frame, self.event);
        if let Err(e) = &r {
            if !e.is_fatal() && s.errors.len() < REFUSALS_KEPT {
                s.errors.push(e.clone());
            }
        }
        r
    }

    fn receive<R>(&mut self, on_frame: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, CarrierError> {
        let next = {
            let mut s = self.session.borrow_mut();
            if !s.options.by_turn {
                s.pump();
            }
            let deliverable = s.deliverable;
            let next = s
                .queues
                .get_mut(&self.hash)
                .and_then(|q| match q.frames.front() {
                    Some(f) if f.number < deliverable => q.frames.pop_front(),
                    _ => None,
                });
            if let Some(f) = &next {
                s.buffered -= f.bytes.len();
            }
            if next.is_none() {
                s.live()?;
            }
            next
        };
        Ok(next.map(|Taken { bytes, start, .. }| {
            let r = on_frame(&bytes[start..]);
            let mut s = self.session.borrow_mut();
            let room = SPARE_TOTAL - s.spare_bytes;
            if bytes.capacity() <= SPARE_BYTES.min(room) {
                s.spare_bytes += bytes.capacity();
                s.spare.push(bytes);
            }
            r
        }))
    }
}

impl Drop for SivshmChannel {
    fn drop(&mut self) {
        if let Ok(mut s) = self.session.try_borrow_mut() {
            s.opened.remove(&self.hash);
            if !s.offers.contains_key(&self.hash) {
                if let Some(q) = s.queues.remove(&self.hash) {
                    s.buffered -= q.frames.iter().map(|f| f.bytes.len()).sum::<usize>();
                }
            }
        }
    }
}
