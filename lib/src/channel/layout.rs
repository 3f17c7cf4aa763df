//! Where everything of a channel lives in its window, and the checks that a header another
//! VM wrote describes a usable channel.
//!
//! ```text
//! 0x000  header: magic, version, header size, both rings' offset and size, format nonce
//! 0x040  side block of the manager   (version spoken, state, generation, heartbeat, peer id,
//!                                     the channel moved to)
//! 0x080  side block of the worker
//! 0x100  ring 0 (manager -> worker): head (the producer's index)
//! 0x140                               tail (the consumer's index)
//! 0x180                               producer waiting (flag)
//! 0x1c0                               consumer waiting (flag)
//! 0x200  ring 1 (worker -> manager): the same four lines, to 0x2ff
//! 0x1000 ring 0's data, then ring 1's data
//! ```
//!
//! Each index and each flag sits alone on its 64-byte line. An index is written by one side
//! only, so producer and consumer never write the same line while messages flow; a flag is
//! written only around a sleep, so the side that looks at it after every publication finds
//! the line in its cache (version 1 kept each flag beside an index, and every look at a
//! flag fetched the line the other side had just written its index to).

use super::{Error, Role, Window};

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"SIVSHMCH");
/// Bumped on any change a peer of the previous version would misread.
pub const VERSION: u32 = 2;
pub(super) const HEADER_SIZE: usize = 4096;

const OFF_MAGIC: usize = 0x00;
const OFF_VERSION: usize = 0x08;
const OFF_HEADER_SIZE: usize = 0x0c;
const OFF_RINGS: usize = 0x10; // ring r: offset at +16r, size at +16r+8
const OFF_NONCE: usize = 0x30;
const OFF_SIDES: usize = 0x40; // side s at +64s
const OFF_CONTROL: usize = 0x100; // ring r: four lines from +256r: head, tail, the two flags

/// The smallest ring: a few small messages.
pub(super) const MIN_RING: usize = 256;

/// Fields of a side block.
pub(super) mod side {
    pub const VERSION: usize = 0;
    pub const STATE: usize = 4;
    pub const GENERATION: usize = 8;
    pub const HEARTBEAT: usize = 16;
    pub const PEER_ID: usize = 24;
    /// Non-zero once this side moved to another channel: that channel's format nonce.
    pub const MOVED_TO: usize = 32;
}

/// Values of a side's `state`.
pub(super) const STATE_ABSENT: u32 = 0;
pub(super) const STATE_ATTACHED: u32 = 1;
pub(super) const STATE_CLOSED: u32 = 2;

/// A side that publishes no peer id (it cannot be rung, only polled).
pub(super) const NO_PEER_ID: u32 = u32::MAX;

/// The largest peer id a doorbell reaches (the driver's `RING` refuses more: `EINVAL`).
pub(super) const MAX_PEER_ID: u32 = 0xffff;

/// Ring 0 carries the manager's messages to the worker, ring 1 the worker's to the manager.
pub(super) fn ring_out(role: Role) -> usize {
    match role {
        Role::Manager => 0,
        Role::Worker => 1,
    }
}

pub(super) fn side_block(role: Role) -> usize {
    OFF_SIDES + 64 * ring_out(role)
}

pub(super) fn head(ring: usize) -> usize {
    OFF_CONTROL + 256 * ring
}

pub(super) fn tail(ring: usize) -> usize {
    head(ring) + 64
}

pub(super) fn producer_waiting(ring: usize) -> usize {
    head(ring) + 128
}

pub(super) fn consumer_waiting(ring: usize) -> usize {
    head(ring) + 192
}

/// Where a ring's data lies in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RingArea {
    pub offset: usize,
    pub size: usize,
}

/// The geometry a manager formats: ring 1 (the replies) gets `reply_bytes`, or an eighth of
/// the space, ring 0 the rest; both multiples of 64 bytes.
pub(super) fn plan(window_len: usize, reply_bytes: Option<usize>) -> Result<[RingArea; 2], Error> {
    let space = window_len
        .checked_sub(HEADER_SIZE)
        .filter(|s| *s >= 2 * MIN_RING)
        .ok_or(Error::Geometry(
            "window too small: a channel needs its 4 KiB header and two rings of 256 bytes",
        ))?;
    let reply = reply_bytes.unwrap_or((space / 8).max(4096)) & !63;
    if reply < MIN_RING || reply > space - MIN_RING {
        return Err(Error::Geometry(
            "reply ring size leaves no room for one of the rings",
        ));
    }
    let data = (space - reply) & !63;
    Ok([
        RingArea {
            offset: HEADER_SIZE,
            size: data,
        },
        RingArea {
            offset: HEADER_SIZE + data,
            size: reply,
        },
    ])
}

/// Writes a fresh header: both rings empty, nobody waiting, the manager's side not yet
/// attached. The magic is written last, so a worker that sees it sees the rest.
pub(super) fn format(w: &Window, rings: [RingArea; 2], nonce: u64) -> Result<(), Error> {
    use std::sync::atomic::Ordering::{Relaxed, Release};
    w.u64(OFF_MAGIC)?.store(0, Release);
    for off in (8..HEADER_SIZE).step_by(8) {
        w.u64(off)?.store(0, Relaxed);
    }
    w.u32(OFF_VERSION)?.store(VERSION, Relaxed);
    w.u32(OFF_HEADER_SIZE)?.store(HEADER_SIZE as u32, Relaxed);
    for (r, area) in rings.iter().enumerate() {
        w.u64(OFF_RINGS + 16 * r)?
            .store(area.offset as u64, Relaxed);
        w.u64(OFF_RINGS + 16 * r + 8)?
            .store(area.size as u64, Relaxed);
    }
    w.u64(OFF_NONCE)?.store(nonce, Relaxed);
    w.u64(OFF_MAGIC)?.store(MAGIC, Release);
    Ok(())
}

/// What a header says, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub rings: [RingArea; 2],
    pub nonce: u64,
}

/// Reads and checks a header: `Ok(None)` if there is none yet (no magic). Every field is read
/// once and checked before use; the peer may change them at any time afterwards, which is why
/// the channel keeps what it read here and never reads the geometry again.
pub(super) fn read(w: &Window) -> Result<Option<Header>, Error> {
    use std::sync::atomic::Ordering::{Acquire, Relaxed};
    if w.u64(OFF_MAGIC)?.load(Acquire) != MAGIC {
        return Ok(None);
    }
    let version = w.u32(OFF_VERSION)?.load(Relaxed);
    if version != VERSION {
        return Err(Error::Version {
            ours: VERSION,
            theirs: version,
        });
    }
    if w.u32(OFF_HEADER_SIZE)?.load(Relaxed) as usize != HEADER_SIZE {
        return Err(Error::Corrupt("header size"));
    }
    let mut rings = [RingArea { offset: 0, size: 0 }; 2];
    for (r, area) in rings.iter_mut().enumerate() {
        let offset = w.u64(OFF_RINGS + 16 * r)?.load(Relaxed);
        let size = w.u64(OFF_RINGS + 16 * r + 8)?.load(Relaxed);
        let (Ok(offset), Ok(size)) = (usize::try_from(offset), usize::try_from(size)) else {
            return Err(Error::Corrupt("ring geometry"));
        };
        *area = RingArea { offset, size };
    }
    check(w.len(), &rings)?;
    Ok(Some(Header {
        rings,
        nonce: w.u64(OFF_NONCE)?.load(Relaxed),
    }))
}

/// Rings inside the window, after the header, apart, 64-byte aligned and not too small.
fn check(window_len: usize, rings: &[RingArea; 2]) -> Result<(), Error> {
    for a in rings {
        let end = a.offset.checked_add(a.size);
        if a.offset < HEADER_SIZE
            || a.size < MIN_RING
            || !a.offset.is_multiple_of(64)
            || !a.size.is_multiple_of(64)
            || end.is_none_or(|e| e > window_len)
        {
            return Err(Error::Corrupt("ring geometry"));
        }
    }
    let [a, b] = rings;
    if a.offset < b.offset + b.size && b.offset < a.offset + a.size {
        return Err(Error::Corrupt("rings overlap"));
    }
    Ok(())
}

pub(super) fn nonce(w: &Window) -> Result<u64, Error> {
    w.u64(OFF_NONCE)
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
}

pub(super) fn magic_present(w: &Window) -> Result<bool, Error> {
    Ok(w.u64(OFF_MAGIC)?.load(std::sync::atomic::Ordering::Acquire) == MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_and_flag_has_a_line_of_its_own_inside_the_header() {
        let mut offsets: Vec<usize> = (0..2)
            .flat_map(|r| [head(r), tail(r), producer_waiting(r), consumer_waiting(r)])
            .collect();
        offsets.extend([OFF_SIDES, OFF_SIDES + 64]);
        assert!(offsets
            .iter()
            .all(|o| o % 64 == 0 && *o >= OFF_CONTROL.min(OFF_SIDES)));
        assert!(offsets.iter().all(|o| o + 64 <= HEADER_SIZE));
        let mut lines = offsets.clone();
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), offsets.len(), "two fields share a line");
    }

    #[test]
    fn plan_gives_replies_an_eighth_and_keeps_rings_apart() {
        let r = plan(4 << 20, None).unwrap();
        assert_eq!(r[0].offset, HEADER_SIZE);
        assert_eq!(r[1].size, (((4 << 20) - HEADER_SIZE) / 8) & !63);
        assert!(r[0].offset + r[0].size <= r[1].offset);
        assert!(r[1].offset + r[1].size <= 4 << 20);
        check(4 << 20, &r).unwrap();
    }

    #[test]
    fn plan_refuses_windows_without_room() {
        assert!(plan(0, None).is_err());
        assert!(plan(HEADER_SIZE + 256, None).is_err());
        assert!(plan(8192, Some(8192)).is_err());
        assert!(plan(8192, Some(64)).is_err());
        assert!(plan(8192, Some(1024)).is_ok());
    }

    #[test]
    fn check_rejects_what_a_hostile_header_could_say() {
        let good = RingArea {
            offset: HEADER_SIZE,
            size: 4096,
        };
        let other = RingArea {
            offset: HEADER_SIZE + 4096,
            size: 4096,
        };
        assert!(check(16384, &[good, other]).is_ok());
        assert!(check(16384, &[good, good]).is_err(), "overlap");
        let into_header = RingArea { offset: 0, ..good };
        assert!(check(16384, &[into_header, other]).is_err());
        let beyond = RingArea {
            offset: 12288,
            size: 8192,
        };
        assert!(check(16384, &[good, beyond]).is_err());
        let huge = RingArea {
            offset: usize::MAX - 63,
            size: 128,
        };
        assert!(check(16384, &[good, huge]).is_err());
        let odd = RingArea {
            offset: HEADER_SIZE + 4096,
            size: 4100,
        };
        assert!(check(16384, &[good, odd]).is_err());
    }
}
