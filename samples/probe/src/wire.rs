//! What the probes exchange, the same over every link.
//!
//! Every message starts with a 16-byte header: a tag (`u32`), flags (`u32`) and a sequence
//! number (`u64`); probe messages repeat the sequence number in their last 8 bytes, so that a
//! message delivered short, torn, out of order or twice is caught. With [`FLAG_PATTERN`] the
//! bytes between carry a pattern derived from the sequence number, checked by whoever
//! receives them. The driver (manager) sends; the peer (`serve`) echoes [`ECHO`], counts
//! and checks [`DATA`], answers [`SYNC`] with a [`REPORT`], and ends at [`BYE`].

use anyhow::{bail, ensure, Result};

pub const ECHO: u32 = 1;
pub const DATA: u32 = 2;
pub const SYNC: u32 = 3;
pub const BYE: u32 = 4;
pub const REPORT: u32 = 5;

/// The body between header and trailer carries [`pattern`].
pub const FLAG_PATTERN: u32 = 1;

pub const HEADER: usize = 16;
/// The smallest probe message: header and a trailer of its own.
pub const MIN_SIZE: usize = HEADER + 8;

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The byte at `offset` of message `seq`'s body.
fn pattern(seq: u64, offset: usize) -> u8 {
    (offset as u8) ^ (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// A message of `size` bytes with tag, flags and stamps; the body patterned if asked.
pub fn message(tag: u32, flags: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size.max(MIN_SIZE)];
    m[0..4].copy_from_slice(&tag.to_le_bytes());
    m[4..8].copy_from_slice(&flags.to_le_bytes());
    if flags & FLAG_PATTERN != 0 {
        let end = m.len().saturating_sub(8);
        for (i, b) in m.iter_mut().enumerate().take(end).skip(HEADER) {
            *b = pattern(seq, i);
        }
    }
    stamp(&mut m, seq);
    m
}

/// Writes `seq` into the header and the trailer (and the pattern, if the message has one).
pub fn stamp(m: &mut [u8], seq: u64) {
    put_u64(m, 8, seq);
    let end = m.len() - 8;
    if u32_at(m, 4) & FLAG_PATTERN != 0 {
        for (i, b) in m.iter_mut().enumerate().take(end).skip(HEADER) {
            *b = pattern(seq, i);
        }
    }
    put_u64(m, end, seq);
}

/// The stamps of a plain data message read in place ([`Link::recv_data`]), as little-endian
/// words: the header's first word (tag and flags), its sequence number and the 8-byte
/// trailer. Returns the sequence number if the message is a [`DATA`] message without
/// pattern whose stamps agree; None if it is another kind of message (to be copied and
/// checked whole); an error if it is torn.
pub fn plain_data_stamps(len: usize, tag_flags: u64, seq: u64, end: u64) -> Result<Option<u64>> {
    let (tag, flags) = (tag_flags as u32, (tag_flags >> 32) as u32);
    if len < MIN_SIZE || tag != DATA || flags & FLAG_PATTERN != 0 {
        return Ok(None);
    }
    ensure!(
        end == seq,
        "message {seq} of {len} bytes ends with the stamp of {end} (torn or mixed up)"
    );
    Ok(Some(seq))
}

/// Checks a received probe message: tag, stamps and (if flagged) pattern. Returns its seq.
pub fn check(m: &[u8], tag: u32) -> Result<u64> {
    ensure!(
        m.len() >= MIN_SIZE,
        "a message of {} bytes is shorter than a header",
        m.len()
    );
    let got = u32_at(m, 0);
    ensure!(got == tag, "expected a message tagged {tag}, got {got}");
    let seq = u64_at(m, 8);
    let trailer = u64_at(m, m.len() - 8);
    ensure!(
        trailer == seq,
        "message {seq} of {} bytes ends with the stamp of {trailer} (torn or mixed up)",
        m.len()
    );
    if u32_at(m, 4) & FLAG_PATTERN != 0 {
        if let Some(i) = (HEADER..m.len() - 8).find(|&i| m[i] != pattern(seq, i)) {
            bail!(
                "message {seq} of {} bytes is corrupt at byte {i}: {:#04x} instead of {:#04x}",
                m.len(),
                m[i],
                pattern(seq, i)
            );
        }
    }
    Ok(seq)
}
