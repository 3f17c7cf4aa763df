//! Liveness: each side publishes a generation (bumped at every attach) and a heartbeat that a
//! thread of its own bumps while the channel lives; the other side watches both.
//!
//! A heartbeat that stands still for longer than the user's timeout means the peer stopped
//! (its VM was killed, its process died): reported as [`Error::PeerGone`], never waited on for
//! ever. A peer that detaches cleanly says so (`STATE_CLOSED`, reported as
//! [`Error::PeerClosed`]). A new generation means the peer re-attached: the channel goes on.
//!
//! The id to ring the peer at is read once per attachment of the peer (the first time this
//! side sees that generation attached), checked against what a doorbell can reach (16 bits,
//! or "none") and kept in private memory: ringing never reads it from the segment again, so
//! a peer cannot make a ring fail after a message was committed by publishing another id.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::layout::{self, side};
use super::{Error, Window};

/// What the peer's side block said at the last look.
pub(super) struct PeerWatch {
    block: usize,
    generation: u64,
    heartbeat: u64,
    /// When the heartbeat or generation last moved (or when watching began).
    since: Instant,
    pub(super) restarts: u64,
    /// The id to ring the peer at (`None`: it cannot be rung), as published by the
    /// attachment seen last; `None` until one was seen.
    ring_id: Option<Option<u32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PeerState {
    /// Attached, with a heartbeat seen within the timeout.
    Alive,
    /// Not attached yet.
    Absent,
}

impl PeerWatch {
    pub(super) fn new(block: usize) -> Self {
        PeerWatch {
            block,
            generation: 0,
            heartbeat: 0,
            since: Instant::now(),
            restarts: 0,
            ring_id: None,
        }
    }

    /// The id to ring the peer at: the one fixed when this side first saw the peer's current
    /// attachment (see the module documentation), or, if it has seen none yet, the one the
    /// peer publishes now if it is attached. `Ok(None)`: nobody to ring.
    pub(super) fn ring_id(&mut self, w: &Window) -> Result<Option<u32>, Error> {
        if let Some(id) = self.ring_id {
            return Ok(id);
        }
        if w.u32(self.block + side::STATE)?.load(Acquire) != layout::STATE_ATTACHED {
            return Ok(None);
        }
        self.fix_ring_id(w)
    }

    /// Reads the peer's published id once, checks it and keeps it. Only after its state was
    /// seen attached (acquire): the id is then the one of that attachment or a later one.
    fn fix_ring_id(&mut self, w: &Window) -> Result<Option<u32>, Error> {
        let id = match w.u32(self.block + side::PEER_ID)?.load(Relaxed) {
            layout::NO_PEER_ID => None,
            id if id <= layout::MAX_PEER_ID => Some(id),
            _ => return Err(Error::Corrupt("peer id beyond what a doorbell reaches")),
        };
        self.ring_id = Some(id);
        Ok(id)
    }

    /// Starts the peer's absence over (waiting for it to attach from now on).
    pub(super) fn restart_clock(&mut self) {
        self.since = Instant::now();
    }

    /// Looks at the peer's side block. `timeout` bounds how long a still heartbeat (or an
    /// absent peer) is tolerated.
    pub(super) fn look(&mut self, w: &Window, timeout: Duration) -> Result<PeerState, Error> {
        let b = self.block;
        let state = w.u32(b + side::STATE)?.load(Acquire);
        let generation = w.u64(b + side::GENERATION)?.load(Relaxed);
        let heartbeat = w.u64(b + side::HEARTBEAT)?.load(Relaxed);
        if state == layout::STATE_ABSENT {
            if self.since.elapsed() > timeout {
                return Err(Error::PeerGone);
            }
            return Ok(PeerState::Absent);
        }
        let version = w.u32(b + side::VERSION)?.load(Relaxed);
        if version != layout::VERSION {
            return Err(Error::Version {
                ours: layout::VERSION,
                theirs: version,
            });
        }
        if generation != self.generation {
            if self.generation != 0 {
                self.restarts += 1;
            }
            self.generation = generation;
            self.heartbeat = heartbeat;
            self.since = Instant::now();
            // A new attachment: its id, once, when it is seen attached.
            self.ring_id = None;
        }
        match state {
            layout::STATE_ATTACHED => {
                if self.ring_id.is_none() {
                    self.fix_ring_id(w)?;
                }
                if heartbeat != self.heartbeat {
                    self.heartbeat = heartbeat;
                    self.since = Instant::now();
                } else if self.since.elapsed() > timeout {
                    return Err(Error::PeerGone);
                }
                Ok(PeerState::Alive)
            }
            layout::STATE_CLOSED => Err(Error::PeerClosed),
            _ => Err(Error::Corrupt("peer state")),
        }
    }
}

/// Announces this side in its block: a new generation, the version it speaks, the id to ring
/// it at, then (release) the attached state.
pub(super) fn announce(w: &Window, block: usize, own_id: Option<u32>) -> Result<u64, Error> {
    let generation = w
        .u64(block + side::GENERATION)?
        .load(Relaxed)
        .wrapping_add(1)
        .max(1);
    w.u64(block + side::GENERATION)?.store(generation, Relaxed);
    w.u32(block + side::VERSION)?
        .store(layout::VERSION, Relaxed);
    w.u32(block + side::PEER_ID)?
        .store(own_id.unwrap_or(layout::NO_PEER_ID), Relaxed);
    // A new attachment has not moved anywhere (see `migrate`).
    w.u64(block + side::MOVED_TO)?.store(0, Relaxed);
    w.u32(block + side::STATE)?
        .store(layout::STATE_ATTACHED, Release);
    Ok(generation)
}

/// Says this side left on purpose, so that the peer reports it at once.
pub(super) fn leave(w: &Window, block: usize) {
    if let Ok(state) = w.u32(block + side::STATE) {
        state.store(layout::STATE_CLOSED, Release);
    }
}

/// The thread that bumps this side's heartbeat while the channel lives.
pub(super) struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub(super) fn start(w: Window, block: usize, every: Duration) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let beat = w.u64(block + side::HEARTBEAT)?;
        beat.fetch_add(1, Relaxed);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sivshm-heartbeat".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if let Ok(beat) = w.u64(block + side::HEARTBEAT) {
                        beat.fetch_add(1, Relaxed);
                    }
                    std::thread::park_timeout(every);
                }
            })
            .map_err(|e| {
                Error::Os(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::AGAIN))
            })?;
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
