//! Moving a channel to another segment while it runs: a segment that grows or shrinks with
//! the load, without losing or repeating a message and in order.
//!
//! A [`Movable`] is a [`Channel`] that can be moved to a new one. The manager formats the new
//! segment (a new device of the new size, hot-plugged into both VMs) and calls
//! [`Movable::move_to`]; the worker follows by itself: it finds the manager's mark in the old
//! channel, asks the opener it was given for the channel with that mark, and moves as well.
//! Each side, when it moves:
//!
//! 1. publishes everything it committed on the old channel, then writes the mark (the new
//!    channel's format nonce) into its side block and says it left the old channel (its state
//!    `CLOSED`, so that a peer sleeping on it wakes and looks: it is rung, or sees it within a
//!    look at the peer);
//! 2. sends only on the new channel from then on;
//! 3. reads the old channel until it has seen the peer's mark there and the old ring is empty
//!    after it, and only then the new one. The peer published its last message before its
//!    mark (release, then acquire here), so "mark seen, then ring empty" means nothing more
//!    comes on the old channel: every message is read once, and in the order sent.
//!
//! Then the old channel is dropped; once both sides did, its device can be unplugged.
//! Replies to a message of the old channel go on the new one ([`Incoming::reply`]).
//!
//! Everything read of the mark is untrusted: a mark that names another channel than the
//! one this side moved to (or was given by its opener) is [`Error::Corrupt`], and a peer
//! that goes on writing into the old ring after its mark only loses its own messages (they
//! are read while the ring is drained, or not at all). A device removed under the old
//! channel is [`Error::DeviceGone`], as everywhere. A peer of a version without moves reads
//! the mark as the manager closing the channel.

use std::sync::atomic::{fence, Ordering::Acquire, Ordering::Release, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::layout::{self, side};
use super::wait::{deadline_after, Want};
use super::{peer, Channel, Error, Message, Reservation, Role, Stats};

/// Finds and opens the channel a peer moved to: given the mark (the new channel's format
/// nonce), returns that channel (a worker attaches to the new device of its segment).
pub type Opener = Box<dyn FnMut(u64) -> Result<Channel, Error> + Send>;

impl Channel {
    /// The nonce the manager formatted this channel with: what a move names as its target.
    pub fn format_nonce(&self) -> u64 {
        self.nonce
    }

    /// Whether there is a message to read now.
    fn has_data(&mut self) -> Result<bool, Error> {
        self.live()?;
        let r = self.rx.has_data(&self.w);
        self.guard(r)
    }

    /// The mark the peer left when it moved away from this channel, if it did.
    fn peer_moved(&mut self) -> Result<Option<u64>, Error> {
        self.live()?;
        let at = layout::side_block(self.role.peer()) + side::MOVED_TO;
        let r = self.w.u64(at).map(|m| m.load(Acquire));
        match self.guard(r)? {
            0 => Ok(None),
            // The stand-in page of a removed device reads as a mark too.
            _ if self.device_gone() => Err(self.fail(Error::DeviceGone)),
            to => Ok(Some(to)),
        }
    }

    /// Step 1 of a move (see the module documentation): everything committed published, then
    /// the mark, then this side's leaving; the peer is rung if it sleeps on this ring.
    fn mark_moved(&mut self, to: u64) -> Result<(), Error> {
        self.live()?;
        let r = self.tx.publish(&self.w);
        self.guard(r)?;
        let block = layout::side_block(self.role);
        let r = self
            .w
            .u64(block + side::MOVED_TO)
            .map(|m| m.store(to, Release));
        self.guard(r)?;
        peer::leave(&self.w, block);
        self.unflushed = false;
        fence(SeqCst);
        let r = self.notify_if_waiting(layout::consumer_waiting(self.tx.ring()));
        self.guard(r)
    }
}

/// Where the next message comes from.
#[derive(Clone, Copy)]
enum Source {
    Old,
    Current,
}

/// A channel that can move to another segment while it runs (see the module documentation).
pub struct Movable {
    current: Channel,
    /// The channel moved away from, while the peer's messages on it are still to be read.
    draining: Option<Channel>,
    open: Opener,
    moves: u64,
}

impl Movable {
    /// `channel`, movable: `open` is asked for the new channel when the peer moves first
    /// (a worker's; a manager, which moves first, may give one that always fails).
    pub fn new(channel: Channel, open: Opener) -> Self {
        Movable {
            current: channel,
            draining: None,
            open,
            moves: 0,
        }
    }

    /// The channel this side sends on.
    pub fn channel(&self) -> &Channel {
        &self.current
    }

    /// The channel this side sends on, for what [`Movable`] does not wrap ([`Channel::arm`]
    /// and the like). Sending on the old channel is not possible through it.
    pub fn channel_mut(&mut self) -> &mut Channel {
        &mut self.current
    }

    /// Moves this side has made.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// Whether the peer's messages on the channel moved away from are still to be read.
    pub fn draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Counters of the channel sent on, with what was received on the one moved away from
    /// while it was drained not included.
    pub fn stats(&self) -> Stats {
        self.current.stats()
    }

    /// The manager moves the channel to `new` (formatted by this manager on the new segment):
    /// what it sends from now on goes there; the worker follows when it reads the mark.
    /// Refused while the previous move is still being drained (try again after a receive),
    /// or for a worker (the manager moves first).
    pub fn move_to(&mut self, new: Channel) -> Result<(), Error> {
        if self.current.role != Role::Manager || new.role != Role::Manager {
            return Err(Error::Geometry(
                "only the manager moves a channel; the worker follows",
            ));
        }
        if self.draining.is_some() {
            return Err(Error::Geometry(
                "the previous move is still under way: receive until it is drained",
            ));
        }
        if new.nonce == self.current.nonce {
            return Err(Error::Geometry("a channel cannot move to itself"));
        }
        self.current.mark_moved(new.nonce)?;
        let old = std::mem::replace(&mut self.current, new);
        self.draining = Some(old);
        self.moves += 1;
        Ok(())
    }

    /// Follows a peer that moved to the channel marked `to`.
    fn follow(&mut self, to: u64) -> Result<(), Error> {
        let new = (self.open)(to)?;
        if new.role != self.current.role || new.nonce != to || to == self.current.nonce {
            return Err(self
                .current
                .fail(Error::Corrupt("the peer moved to another channel")));
        }
        self.current.mark_moved(to)?;
        let old = std::mem::replace(&mut self.current, new);
        self.draining = Some(old);
        self.moves += 1;
        Ok(())
    }

    /// Where the next message is, after any step of a move that is due now; `None`: nowhere
    /// yet.
    fn source(&mut self) -> Result<Option<Source>, Error> {
        loop {
            if let Some(old) = &mut self.draining {
                if old.has_data()? {
                    return Ok(Some(Source::Old));
                }
                let Some(to) = old.peer_moved()? else {
                    return Ok(None);
                };
                if to != self.current.nonce {
                    return Err(old.fail(Error::Corrupt("the peer moved to another channel")));
                }
                // The mark was read (acquire) after the peer published its last message:
                // one more look finds it if it was not read yet.
                if old.has_data()? {
                    return Ok(Some(Source::Old));
                }
                self.draining = None;
                continue;
            }
            if self.current.has_data()? {
                return Ok(Some(Source::Current));
            }
            let Some(to) = self.current.peer_moved()? else {
                return Ok(None);
            };
            if self.current.has_data()? {
                return Ok(Some(Source::Current));
            }
            self.follow(to)?;
        }
    }

    /// The oldest message, if there is one now, from the old channel while it is drained.
    pub fn try_recv(&mut self) -> Result<Option<Incoming<'_>>, Error> {
        match self.source()? {
            None => Ok(None),
            Some(s) => self.take(s).map(Some),
        }
    }

    /// The oldest message, waiting up to `timeout` (`None`: as long as the peer lives).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Incoming<'_>, Error> {
        let deadline = timeout.and_then(deadline_after);
        let s = loop {
            if let Some(s) = self.source()? {
                break s;
            }
            let ch = self.draining.as_mut().unwrap_or(&mut self.current);
            match ch.block(Want::Data, deadline) {
                Ok(()) => {}
                // A peer that moved says it left this channel: look at its mark.
                Err(Error::PeerClosed) if ch.peer_moved()?.is_some() => {}
                Err(e) => return Err(e),
            }
        };
        self.take(s)
    }

    fn take(&mut self, s: Source) -> Result<Incoming<'_>, Error> {
        let (msg, reply_to) = match (s, &mut self.draining) {
            (Source::Old, Some(old)) => (old.try_recv()?, Some(&mut self.current)),
            _ => (self.current.try_recv()?, None),
        };
        let msg = msg.ok_or(Error::Corrupt("a message seen in the ring went away"))?;
        Ok(Incoming { msg, reply_to })
    }

    /// Follows the peer if it moved and this side has not (a worker that only sends would
    /// otherwise go on sending on the old channel until its ring filled).
    fn catch_up(&mut self) -> Result<(), Error> {
        if self.draining.is_none() && !self.current.has_data()? {
            self.source()?;
        }
        Ok(())
    }

    /// [`Channel::send`] on the channel sent on.
    pub fn send(&mut self, data: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = timeout.and_then(deadline_after);
        loop {
            self.catch_up()?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.current.send(data, left) {
                Err(Error::PeerClosed) if self.current.peer_moved()?.is_some() => {}
                r => return r,
            }
        }
    }

    /// [`Channel::try_send`] on the channel sent on.
    pub fn try_send(&mut self, data: &[u8]) -> Result<bool, Error> {
        self.catch_up()?;
        self.current.try_send(data)
    }

    /// [`Channel::reserve`] on the channel sent on.
    pub fn reserve(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Reservation<'_>, Error> {
        self.catch_up()?;
        self.current.reserve(len, timeout)
    }

    /// [`Channel::flush`] on the channel sent on.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.current.flush()
    }
}

/// A message of a [`Movable`]: its answers go on the channel sent on, whichever channel it
/// came from.
pub struct Incoming<'a> {
    msg: Message<'a>,
    /// The channel sent on, when the message came from the one moved away from.
    reply_to: Option<&'a mut Channel>,
}

impl Incoming<'_> {
    pub fn len(&self) -> usize {
        self.msg.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msg.is_empty()
    }

    /// [`Message::read`].
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        self.msg.read(offset, buf)
    }

    /// [`Message::to_vec`].
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        self.msg.to_vec()
    }

    /// [`Message::reply`], on the channel sent on.
    pub fn reply(&mut self, data: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
        match &mut self.reply_to {
            Some(ch) => ch.send(data, timeout),
            None => self.msg.reply(data, timeout),
        }
    }

    /// [`Message::release`].
    pub fn release(self) -> Result<(), Error> {
        self.msg.release()
    }
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
