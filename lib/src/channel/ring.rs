//! One single-producer single-consumer ring of variable-length records.
//!
//! Positions are free-running byte counts (`head`: bytes the producer published, `tail`:
//! bytes the consumer released); `pos % size` is where they are in the data area. A record
//! is an 8-byte header (`len | kind << 32`) and its payload padded to 8 bytes, and never wraps:
//! when it does not fit before the end, the producer fills the rest with a pad record and
//! starts again at offset 0. A message therefore needs at most twice its record size of free
//! space, which is why the largest message is half the ring.
//!
//! Each side keeps its own index in private memory and only publishes it (the producer at
//! every commit or, for batched commits, at the flush or per batch of committed bytes; the
//! consumer in batches of released room, see [`Consumer`]); what it reads of
//! the other side's index is checked (monotonic, at most `size` ahead, 8-byte aligned) before
//! use, and a record header is read once and checked against what was published. A peer that
//! breaks any of this gets [`Error::Corrupt`], never an access outside the ring.
//!
//! Positions never wrap: 2^64 bytes take centuries to send, so a position that would pass
//! `u64::MAX` can only come from a segment that was tampered with (a side resumes the
//! positions it finds there). Every addition to a position is checked, and one that would
//! overflow is [`Error::Corrupt`] ("ring position at the end of its range").

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::layout::{self, RingArea};
use super::{Error, Window};

const KIND_MESSAGE: u64 = 1;
const KIND_PAD: u64 = 2;
const RECORD_HEADER: u64 = 8;

fn record_size(len: usize) -> u64 {
    RECORD_HEADER + (len as u64).next_multiple_of(8)
}

fn record_header(kind: u64, len: u64) -> u64 {
    len | kind << 32
}

/// The largest payload a ring of `size` bytes always accepts.
pub(super) fn max_message(size: usize) -> usize {
    (size / 2 - RECORD_HEADER as usize) & !7
}

/// The room a consumer releases before it publishes its tail even though it has more messages
/// in hand: a sixteenth of the ring (every message in the smallest rings), so that a producer
/// waiting for room sees it come in steps a fraction of the ring, however long the backlog.
fn release_batch(size: usize) -> u64 {
    (size as u64 / 16).max(1)
}

/// `pos + n`, or the error of a position that would overflow.
fn advance(pos: u64, n: u64) -> Result<u64, Error> {
    pos.checked_add(n)
        .ok_or(Error::Corrupt("ring position at the end of its range"))
}

/// Checks a pair of positions one of which the peer wrote.
fn check_positions(head: u64, tail: u64, size: u64) -> Result<(), Error> {
    if tail > head || head - tail > size || !head.is_multiple_of(8) || !tail.is_multiple_of(8) {
        return Err(Error::Corrupt("ring indices out of order"));
    }
    Ok(())
}

/// A ring's published `(head, tail)`, checked: what a side takes over when it attaches.
fn published(w: &Window, ring: usize, area: RingArea) -> Result<(u64, u64), Error> {
    let head = w.u64(layout::head(ring))?.load(Acquire);
    let tail = w.u64(layout::tail(ring))?.load(Acquire);
    check_positions(head, tail, area.size as u64)?;
    Ok((head, tail))
}

/// The producing side of a ring.
pub(super) struct Producer {
    ring: usize,
    area: RingArea,
    /// Next free position: published at commit (it may run ahead by a pad not yet published).
    head: u64,
    /// `head % size`, kept beside it so that the fast path divides nothing (a 64-bit
    /// division is a helper call under emulation): records never wrap, so it only ever
    /// grows by a record or returns to 0.
    head_off: u64,
    /// The head as last published: behind `head` while committed messages wait for
    /// [`Self::publish`] (see [`Self::commit`]).
    published: u64,
    /// Committed bytes after which the head is published even though the caller asked to
    /// wait for its flush: a sixteenth of the ring, so that the consumer works on one batch
    /// while the producer writes the next.
    batch: u64,
    /// The consumer's tail as last read and checked.
    tail: u64,
}

/// Where a reserved message's payload goes.
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub pos: u64,
    pub data: usize,
    pub len: usize,
}

impl Producer {
    /// Takes over a ring whose indices are in the window: a fresh one (both 0), or one a
    /// previous process of this side left (resuming where it stopped).
    pub(super) fn attach(w: &Window, ring: usize, area: RingArea) -> Result<Self, Error> {
        let (head, tail) = published(w, ring, area)?;
        w.u32(layout::producer_waiting(ring))?.store(0, Relaxed);
        Ok(Producer {
            ring,
            area,
            head,
            head_off: head % area.size as u64,
            published: head,
            batch: release_batch(area.size),
            tail,
        })
    }

    pub(super) fn ring(&self) -> usize {
        self.ring
    }

    pub(super) fn max_message(&self) -> usize {
        max_message(self.area.size)
    }

    /// Free bytes needed for a message of `len`, and whether a pad comes first.
    #[inline]
    fn need(&self, len: usize) -> (u64, u64) {
        let size = self.area.size as u64;
        let contiguous = size - self.head_off;
        let rec = record_size(len);
        if rec <= contiguous {
            (rec, 0)
        } else {
            (contiguous + rec, contiguous)
        }
    }

    fn refresh_tail(&mut self, w: &Window) -> Result<(), Error> {
        let tail = w.u64(layout::tail(self.ring))?.load(Acquire);
        check_positions(self.head, tail, self.area.size as u64)?;
        if tail < self.tail {
            return Err(Error::Corrupt("consumer index went backwards"));
        }
        self.tail = tail;
        Ok(())
    }

    /// Whether a message of `len` bytes fits now (reading the consumer's index again).
    pub(super) fn fits(&mut self, w: &Window, len: usize) -> Result<bool, Error> {
        let (need, _) = self.need(len);
        self.room_for(w, need)
    }

    /// Whether `need` bytes are free, reading the consumer's index again only when the
    /// copy of it this side keeps says they are not.
    #[inline]
    fn room_for(&mut self, w: &Window, need: u64) -> Result<bool, Error> {
        let size = self.area.size as u64;
        if size - (self.head - self.tail) >= need {
            return Ok(true);
        }
        self.refresh_tail(w)?;
        Ok(size - (self.head - self.tail) >= need)
    }

    /// Space for a message of `len` bytes (`len` at most [`Self::max_message`]), or `None`
    /// while the consumer has not released enough. The message's end position is checked
    /// here, so that [`Self::commit`] cannot overflow either.
    #[inline]
    pub(super) fn reserve(&mut self, w: &Window, len: usize) -> Result<Option<Slot>, Error> {
        debug_assert!(len <= self.max_message());
        let (need, pad) = self.need(len);
        advance(self.head, need)?;
        if !self.room_for(w, need)? {
            return Ok(None);
        }
        if pad > 0 {
            let at = self.area.offset + self.head_off as usize;
            w.u64(at)?
                .store(record_header(KIND_PAD, pad - RECORD_HEADER), Relaxed);
            self.head = advance(self.head, pad)?;
            self.head_off = 0;
        }
        let off = self.head_off as usize;
        Ok(Some(Slot {
            pos: self.head,
            data: self.area.offset + off + RECORD_HEADER as usize,
            len,
        }))
    }

    /// Commits the message written into `slot` (and a pad before it) and publishes it with
    /// every message committed before it, or, if `defer`, leaves the publication to
    /// [`Self::publish`] (the channel's flush) unless a batch of bytes waits for it already.
    /// The release store of `head` orders the payloads and record headers before it for a
    /// consumer that acquires it.
    #[inline]
    pub(super) fn commit(&mut self, w: &Window, slot: Slot, defer: bool) -> Result<(), Error> {
        debug_assert_eq!(slot.pos, self.head);
        let at = self.area.offset + self.head_off as usize;
        w.u64(at)?
            .store(record_header(KIND_MESSAGE, slot.len as u64), Relaxed);
        let rec = record_size(slot.len);
        self.head = advance(slot.pos, rec)?;
        // `reserve` found the record before the end of the ring.
        self.head_off += rec;
        if self.head_off == self.area.size as u64 {
            self.head_off = 0;
        }
        if defer && self.head - self.published < self.batch {
            return Ok(());
        }
        self.publish(w)?;
        Ok(())
    }

    /// Reserves, writes and commits `data` as one of a batch (see [`Self::commit`] with
    /// `defer`) if there is room now; false if there is not (nothing changed then).
    #[inline]
    pub(super) fn push(&mut self, w: &Window, data: &[u8]) -> Result<bool, Error> {
        let Some(slot) = self.reserve(w, data.len())? else {
            return Ok(false);
        };
        w.write(slot.data, data)?;
        self.commit(w, slot, true)?;
        Ok(true)
    }

    /// Publishes the head if it moved since it was last published; true if it did (the
    /// caller then looks at the consumer's waiting flag, behind a fence).
    pub(super) fn publish(&mut self, w: &Window) -> Result<bool, Error> {
        if self.head == self.published {
            return Ok(false);
        }
        w.u64(layout::head(self.ring))?.store(self.head, Release);
        self.published = self.head;
        Ok(true)
    }
}

/// The consuming side of a ring.
///
/// Released room is given back in batches: `tail` moves at every release (and pad skipped),
/// the shared index only at [`Self::publish`], which the channel calls when this side has
/// caught up with what it saw of the producer, when [`Self::publish_due`] says a batch is
/// complete, and before it waits, flushes or leaves. So a busy consumer stores the index
/// (and looks at the producer's waiting flag behind a fence) once per batch, not per message.
pub(super) struct Consumer {
    ring: usize,
    area: RingArea,
    /// Next position to read.
    tail: u64,
    /// `tail % size` (see [`Producer`]'s `head_off`).
    tail_off: u64,
    /// The tail as last published.
    published: u64,
    /// Released bytes after which the tail is published even though messages remain.
    batch: u64,
    /// The producer's head as last read and checked.
    head: u64,
}

/// A message found in the ring, not yet released.
#[derive(Clone, Copy)]
pub(super) struct Found {
    pub data: usize,
    pub len: usize,
    pub record: u64,
}

impl Consumer {
    pub(super) fn attach(w: &Window, ring: usize, area: RingArea) -> Result<Self, Error> {
        let (head, tail) = published(w, ring, area)?;
        w.u32(layout::consumer_waiting(ring))?.store(0, Relaxed);
        Ok(Consumer {
            ring,
            area,
            tail,
            tail_off: tail % area.size as u64,
            published: tail,
            batch: release_batch(area.size),
            head,
        })
    }

    /// Publishes the tail if it moved since it was last published; true if it did (the
    /// caller then looks at the producer's waiting flag, behind a fence).
    pub(super) fn publish(&mut self, w: &Window) -> Result<bool, Error> {
        if self.tail == self.published {
            return Ok(false);
        }
        w.u64(layout::tail(self.ring))?.store(self.tail, Release);
        self.published = self.tail;
        Ok(true)
    }

    /// Whether the released room should be published now: this side has caught up with
    /// what it saw of the producer (it will look for more, and maybe wait, next), or a
    /// batch of room is held back.
    #[inline]
    pub(super) fn publish_due(&self) -> bool {
        self.tail == self.head || self.tail - self.published >= self.batch
    }

    pub(super) fn ring(&self) -> usize {
        self.ring
    }

    fn refresh_head(&mut self, w: &Window) -> Result<(), Error> {
        let head = w.u64(layout::head(self.ring))?.load(Acquire);
        check_positions(head, self.tail, self.area.size as u64)?;
        if head < self.head {
            return Err(Error::Corrupt("producer index went backwards"));
        }
        self.head = head;
        Ok(())
    }

    /// The oldest unreleased message if it lies within what this side knows to be published
    /// and is a message record that passes [`Self::peek`]'s checks: the streaming case, in
    /// a few instructions; `None` for everything else (nothing known, a pad, anything
    /// wrong), which [`Self::peek`] then looks at.
    #[inline]
    pub(super) fn peek_ready(&self, w: &Window) -> Option<Found> {
        if self.tail == self.head {
            return None;
        }
        let off = self.tail_off;
        let header = w.u64(self.area.offset + off as usize).ok()?.load(Relaxed);
        if header >> 32 != KIND_MESSAGE {
            return None;
        }
        let len = (header & 0xffff_ffff) as usize;
        let record = record_size(len);
        if record > self.area.size as u64 - off || record > self.head - self.tail {
            return None;
        }
        Some(Found {
            data: self.area.offset + off as usize + RECORD_HEADER as usize,
            len,
            record,
        })
    }

    /// The oldest unreleased message, skipping (and releasing) a pad before it. At most one
    /// pad can precede a message, so this looks at two records at most.
    pub(super) fn peek(&mut self, w: &Window) -> Result<Option<Found>, Error> {
        let size = self.area.size as u64;
        for _ in 0..2 {
            if self.tail == self.head {
                self.refresh_head(w)?;
                if self.tail == self.head {
                    return Ok(None);
                }
            }
            let off = self.tail_off;
            let contiguous = size - off;
            let available = self.head - self.tail;
            let header = w.u64(self.area.offset + off as usize)?.load(Relaxed);
            let (kind, len) = (header >> 32, header & 0xffff_ffff);
            match kind {
                KIND_PAD
                    if off != 0 && len + RECORD_HEADER == contiguous && contiguous <= available =>
                {
                    // Published with the message after it.
                    self.tail = advance(self.tail, contiguous)?;
                    self.tail_off = 0;
                }
                KIND_MESSAGE => {
                    let len = len as usize;
                    let record = record_size(len);
                    if record > contiguous || record > available {
                        return Err(Error::Corrupt("message longer than what was published"));
                    }
                    return Ok(Some(Found {
                        data: self.area.offset + off as usize + RECORD_HEADER as usize,
                        len,
                        record,
                    }));
                }
                KIND_PAD => return Err(Error::Corrupt("pad record of the wrong length")),
                _ => return Err(Error::Corrupt("unknown record kind")),
            }
        }
        Err(Error::Corrupt("two pad records in a row"))
    }

    /// Gives the space of the message `found` (the one [`Self::peek`] returned) back, to be
    /// published by [`Self::publish`].
    #[inline]
    pub(super) fn release(&mut self, found: Found) -> Result<(), Error> {
        self.tail = advance(self.tail, found.record)?;
        // `peek` checked that the record ends within the ring.
        self.tail_off += found.record;
        if self.tail_off == self.area.size as u64 {
            self.tail_off = 0;
        }
        Ok(())
    }

    /// Whether a message is waiting (reading the producer's index again).
    pub(super) fn has_data(&mut self, w: &Window) -> Result<bool, Error> {
        if self.tail != self.head {
            return Ok(true);
        }
        self.refresh_head(w)?;
        Ok(self.tail != self.head)
    }
}
