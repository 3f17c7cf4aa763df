//! Sending: room reserved in this side's ring, written in place, committed, flushed.

use std::sync::atomic::{fence, Ordering::SeqCst};
use std::time::Duration;

use super::ring::Slot;
use super::wait::{deadline_after, Want};
use super::{layout, Channel, Error};

impl Channel {
    /// Space for a message of `len` bytes if the ring has it now.
    pub fn try_reserve(&mut self, len: usize) -> Result<Option<Reservation<'_>>, Error> {
        self.live()?;
        self.check_len(len)?;
        let slot = self.tx.reserve(&self.w, len);
        match self.guard(slot)? {
            Some(slot) => {
                self.want_space = None;
                self.reservations += 1;
                Ok(Some(Reservation { ch: self, slot }))
            }
            None => {
                self.want_space = Some(len);
                Ok(None)
            }
        }
    }

    /// Space for a message of `len` bytes, waiting up to `timeout` (`None`, or one no clock
    /// reaches such as `Duration::MAX`: as long as the peer lives) for the peer to release
    /// enough.
    pub fn reserve(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Reservation<'_>, Error> {
        self.live()?;
        self.check_len(len)?;
        // The clock is read only once the call has to wait (a read costs more than a
        // message in some guests).
        let mut deadline = None;
        loop {
            let slot = self.tx.reserve(&self.w, len);
            if let Some(slot) = self.guard(slot)? {
                self.reservations += 1;
                return Ok(Reservation { ch: self, slot });
            }
            let d = *deadline.get_or_insert_with(|| timeout.and_then(deadline_after));
            self.block(Want::Space(len), d)?;
        }
    }

    /// Sends `data` if there is room now (and wakes the peer if it sleeps).
    pub fn try_send(&mut self, data: &[u8]) -> Result<bool, Error> {
        let Some(mut r) = self.try_reserve(data.len())? else {
            return Ok(false);
        };
        r.write(0, data)?;
        r.commit()?;
        self.flush()?;
        Ok(true)
    }

    /// Sends `data`, waiting up to `timeout` for room, and wakes the peer if it sleeps.
    pub fn send(&mut self, data: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
        let mut r = self.reserve(data.len(), timeout)?;
        r.write(0, data)?;
        r.commit()?;
        self.flush()
    }

    /// Sends `data` as one message of a batch, waiting up to `timeout` for room: the peer sees
    /// it at this side's next flush (or a sixteenth of the ring later), as after
    /// [`Reservation::commit_batched`], and is woken at the flush. The streaming sender's
    /// call: reserve, copy and commit in one step, without a [`Reservation`] in between, so
    /// that a small message costs little more than its copy (see the channel's
    /// documentation, "Per-message cost").
    #[inline]
    pub fn send_batched(&mut self, data: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
        if self.try_send_batched(data)? {
            return Ok(());
        }
        let mut r = self.reserve(data.len(), timeout)?;
        r.write(0, data)?;
        r.commit_batched()
    }

    /// [`Self::send_batched`] if there is room now: false if there is not (then
    /// [`Self::arm`] also waits for room, as after [`Self::try_reserve`]).
    #[inline]
    pub fn try_send_batched(&mut self, data: &[u8]) -> Result<bool, Error> {
        self.live()?;
        self.check_len(data.len())?;
        let pushed = self.tx.push(&self.w, data);
        if !self.guard(pushed)? {
            self.want_space = Some(data.len());
            return Ok(false);
        }
        // Room was used: a reservation set aside before is stale now.
        self.reservations += 1;
        self.want_space = None;
        self.unflushed = true;
        self.stats.sent += 1;
        Ok(true)
    }

    /// Wakes the peer if it sleeps waiting for what was committed since the last flush.
    /// Calls that wait flush first, so a pipelined sender cannot deadlock by forgetting it.
    ///
    /// What was committed is delivered whatever ringing does: a ring that fails does not
    /// make this (or [`Self::send`], or [`Message::release`](super::Message::release)) an error, so a caller never
    /// sends a message twice because of one. The one error is [`Error::DeviceGone`] (the
    /// messages are lost with the device); a peer that published an id no doorbell reaches
    /// gets its channel [`Error::Corrupt`] from the next call.
    ///
    /// It also gives back the room of released messages that this side still holds back
    /// (see [`Message::release`](super::Message::release)), and wakes the peer if it waits for room.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.live()?;
        // What was committed with `commit_batched` and not published yet.
        let published = self.tx.publish(&self.w);
        self.guard(published)?;
        let released = self.rx.publish(&self.w);
        let released = self.guard(released)?;
        let committed = std::mem::take(&mut self.unflushed);
        if !committed && !released {
            return Ok(());
        }
        // One fence for both: the stores of `head` and `tail` before it, the loads of the
        // waiting flags after it.
        fence(SeqCst);
        let data = match committed {
            true => self.notify_if_waiting(layout::consumer_waiting(self.tx.ring())),
            false => Ok(()),
        };
        let room = match released {
            true => self.notify_if_waiting(layout::producer_waiting(self.rx.ring())),
            false => Ok(()),
        };
        let r = data.and(room);
        self.guard(r)
    }
}

/// Room for one message in the ring, to be written and then committed. Dropping it without
/// committing gives the room back.
pub struct Reservation<'a> {
    pub(super) ch: &'a mut Channel,
    pub(super) slot: Slot,
}

impl Reservation<'_> {
    pub fn len(&self) -> usize {
        self.slot.len
    }

    pub fn is_empty(&self) -> bool {
        self.slot.len == 0
    }

    /// Copies `data` into the message at `offset`.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Error> {
        match offset.checked_add(data.len()) {
            Some(end) if end <= self.slot.len => {}
            _ => {
                return Err(Error::TooLarge {
                    len: offset.saturating_add(data.len()),
                    max: self.slot.len,
                })
            }
        }
        let r = self.ch.w.write(self.slot.data + offset, data);
        self.ch.guard(r)
    }

    /// Ends the borrow of the channel and keeps the room, to be taken up again by
    /// [`Channel::resume_reservation`] (for bindings to languages that cannot hold the
    /// borrow, such as the C API). The room stays reserved as long as no other reservation
    /// is made; dropping the result gives it back.
    pub fn set_aside(self) -> Reserved {
        Reserved {
            epoch: self.ch.reservations,
            slot: self.slot,
        }
    }

    /// Publishes the message (the peer sees it; it is woken at the next flush), with every
    /// message committed before it.
    pub fn commit(self) -> Result<(), Error> {
        self.commit_as(false)
    }

    /// Commits the message as one of a batch: the peer sees it at this side's next flush
    /// ([`Channel::flush`], or any call that waits, or [`Channel::arm`], or the close), at
    /// the next [`Self::commit`], or once a sixteenth of the ring is committed unseen,
    /// whichever comes first; it is woken at the flush, as after [`Self::commit`]. A
    /// streaming sender so publishes its position once per batch instead of once per
    /// message, and the receiver, which reads that position (a cache line the sender writes)
    /// whenever it has caught up, fetches it once per batch too.
    pub fn commit_batched(self) -> Result<(), Error> {
        self.commit_as(true)
    }

    fn commit_as(self, defer: bool) -> Result<(), Error> {
        let ch = self.ch;
        let r = ch.tx.commit(&ch.w, self.slot, defer);
        ch.guard(r)?;
        ch.unflushed = true;
        ch.stats.sent += 1;
        Ok(())
    }
}

/// A [`Reservation`] set aside: see [`Reservation::set_aside`].
pub struct Reserved {
    pub(super) epoch: u64,
    pub(super) slot: Slot,
}

impl Reserved {
    pub fn len(&self) -> usize {
        self.slot.len
    }

    pub fn is_empty(&self) -> bool {
        self.slot.len == 0
    }
}
