//! Receiving: the oldest message of the peer's ring, read in place, answered while held,
//! released.

use std::sync::atomic::{
    fence,
    Ordering::{Relaxed, SeqCst},
};
use std::time::Duration;

use super::ring::Found;
use super::wait::{deadline_after, Want};
use super::{layout, Channel, Error, Reservation};

impl Channel {
    /// The oldest message, if there is one now.
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>, Error> {
        self.live()?;
        let found = self.rx.peek(&self.w);
        let found = self.guard(found)?;
        self.messages += u64::from(found.is_some());
        Ok(found.map(|found| Message { ch: self, found }))
    }

    /// The oldest message, waiting up to `timeout` (`None`, or one no clock reaches such as
    /// `Duration::MAX`: as long as the peer lives).
    #[inline]
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Message<'_>, Error> {
        self.live()?;
        // The streaming case inline: a message is there already.
        if let Some(found) = self.rx.peek_ready(&self.w) {
            self.messages += 1;
            return Ok(Message { ch: self, found });
        }
        self.recv_waiting(timeout)
    }

    /// [`Self::recv`] when no message was ready at the first look.
    fn recv_waiting(&mut self, timeout: Option<Duration>) -> Result<Message<'_>, Error> {
        let mut deadline = None;
        loop {
            let found = self.rx.peek(&self.w);
            if let Some(found) = self.guard(found)? {
                self.messages += 1;
                return Ok(Message { ch: self, found });
            }
            let d = *deadline.get_or_insert_with(|| timeout.and_then(deadline_after));
            self.block(Want::Data, d)?;
        }
    }
}

/// The oldest message of the ring, read in place, and answerable while held
/// ([`Message::reply`]). Dropping it without releasing leaves it in the ring: the next
/// receive returns it again.
pub struct Message<'a> {
    pub(super) ch: &'a mut Channel,
    pub(super) found: Found,
}

impl Message<'_> {
    pub fn len(&self) -> usize {
        self.found.len
    }

    pub fn is_empty(&self) -> bool {
        self.found.len == 0
    }

    /// Copies `buf.len()` bytes at `offset` of the message out. The peer may still change
    /// them while they are read: check what you read (a checksum, a sequence number).
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        match offset.checked_add(buf.len()) {
            // On a device removed since the message was found, this copies the stand-in
            // page's bytes: the caller's check of the payload fails, and the channel reports
            // the device gone at the release (its ring meets ENODEV) or at the next look at
            // the ring.
            Some(end) if end <= self.found.len => self.ch.w.read(self.found.data + offset, buf),
            _ => Err(Error::TooLarge {
                len: offset.saturating_add(buf.len()),
                max: self.found.len,
            }),
        }
    }

    /// The little-endian 64-bit word at `offset` of the message, read in place: one load
    /// where the word is 8-byte aligned in the ring (a message starts 8-byte aligned), a
    /// copy of 8 bytes elsewhere. For a message's stamps (a sequence number, a length), as
    /// the peer may change them while they are read: check them.
    #[inline]
    pub fn read_u64(&self, offset: usize) -> Result<u64, Error> {
        match offset.checked_add(8) {
            Some(end) if end <= self.found.len => {}
            _ => {
                return Err(Error::TooLarge {
                    len: offset.saturating_add(8),
                    max: self.found.len,
                })
            }
        }
        let at = self.found.data + offset;
        if at.is_multiple_of(8) {
            return Ok(u64::from_le(self.ch.w.u64(at)?.load(Relaxed)));
        }
        let mut b = [0u8; 8];
        self.ch.w.read(at, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Sends `data` to the peer while this message is held, as [`Channel::send`] does
    /// (waiting up to `timeout` for room, then waking the peer): a request is answered, then
    /// released, without receiving it again. The message stays in the ring until
    /// [`Message::release`], so a receiver that stops between the two leaves it to its
    /// successor.
    pub fn reply(&mut self, data: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
        self.ch.send(data, timeout)
    }

    /// Room for a reply of `len` bytes while this message is held, as [`Channel::reserve`]
    /// gives it (to be written, committed and flushed by [`Reservation::commit`] and
    /// [`Message::flush`] or this side's next wait); see [`Message::reply`].
    pub fn reserve_reply(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Reservation<'_>, Error> {
        self.ch.reserve(len, timeout)
    }

    /// [`Channel::flush`] while this message is held: wakes the peer for the replies
    /// committed since the last flush.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.ch.flush()
    }

    /// The whole message, copied out.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0; self.found.len];
        self.read(0, &mut v)?;
        Ok(v)
    }

    /// Ends the borrow of the channel and leaves the message in the ring, to be taken up
    /// again by [`Channel::resume_message`] (for bindings such as the C API).
    pub fn set_aside(self) -> Received {
        Received {
            epoch: self.ch.messages,
            found: self.found,
        }
    }

    /// Gives the message's room back to the sender (and wakes it if it waits for room): at
    /// once when this was the last message this side had seen, else once a sixteenth of the
    /// ring is released, or at this side's next flush, wait ([`Channel::recv`],
    /// [`Channel::reserve`], [`Channel::arm`]) or close, whichever comes first. A busy
    /// receiver so publishes its position (and looks whether the sender sleeps, behind a
    /// fence) once per batch, not per message. A receiver that stops in the middle of a
    /// backlog holds back at most that sixteenth, and a successor that resumes after a crash
    /// may see those messages again.
    #[inline]
    pub fn release(self) -> Result<(), Error> {
        let ch = self.ch;
        // A reply may have found the channel dead while the message was held.
        ch.live()?;
        let r = ch.rx.release(self.found);
        ch.guard(r)?;
        ch.stats.received += 1;
        if !ch.rx.publish_due() {
            return Ok(());
        }
        ch.publish_released()
    }
}

impl Channel {
    /// Publishes the room released (a batch of it, or all once this side caught up) and
    /// wakes the producer if it waits for room.
    fn publish_released(&mut self) -> Result<(), Error> {
        let ch = self;
        let r = ch.rx.publish(&ch.w);
        if !ch.guard(r)? {
            return Ok(());
        }
        fence(SeqCst);
        let r = ch.notify_if_waiting(layout::producer_waiting(ch.rx.ring()));
        ch.guard(r)
    }
}

/// A [`Message`] set aside: see [`Message::set_aside`].
pub struct Received {
    pub(super) epoch: u64,
    pub(super) found: Found,
}

impl Received {
    pub fn len(&self) -> usize {
        self.found.len
    }

    pub fn is_empty(&self) -> bool {
        self.found.len == 0
    }
}
