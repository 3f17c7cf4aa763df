//! What the manager and a worker say to each other over their channel.
//!
//! Manager to worker: a `Batch` (round, checksum, then the round's data), `Done` (how many
//! rounds were sent) or `Where` (which round did you answer last? asked by a manager that took
//! the channel over: restarted, or its device plugged in again). Worker to manager: an `Ack`
//! (round, and the checksum the worker computed over what it received) or, to a `Where`, a
//! `Position` (the last round it answered). Everything received is checked: the peer is not
//! trusted.

use anyhow::{bail, Result};

const KIND_BATCH: u32 = 1;
const KIND_DONE: u32 = 2;
const KIND_WHERE: u32 = 3;
/// kind (u32), padding (u32), round (u64), checksum (u64).
pub const BATCH_HEADER: usize = 24;
pub const ACK_LEN: usize = 16;
/// marker (u64::MAX, never a round), last round answered (0: none), zero (u64).
pub const POSITION_LEN: usize = 24;
const POSITION_MARK: u64 = u64::MAX;

/// The header of a batch whose data follows it.
pub fn batch_header(round: u64, sum: u64) -> [u8; BATCH_HEADER] {
    let mut h = [0u8; BATCH_HEADER];
    h[..4].copy_from_slice(&KIND_BATCH.to_le_bytes());
    h[8..16].copy_from_slice(&round.to_le_bytes());
    h[16..].copy_from_slice(&sum.to_le_bytes());
    h
}

pub fn done(rounds: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&KIND_DONE.to_le_bytes());
    m[8..].copy_from_slice(&rounds.to_le_bytes());
    m
}

pub fn where_query() -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&KIND_WHERE.to_le_bytes());
    m
}

/// What a worker received, from the first bytes of a message of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Batch { round: u64, sum: u64, len: usize },
    Done { rounds: u64 },
    Where,
}

pub fn parse(head: &[u8; BATCH_HEADER], len: usize) -> Result<Received> {
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(head[r].try_into().unwrap());
    match u32::from_le_bytes(head[..4].try_into().unwrap()) {
        KIND_BATCH if len >= BATCH_HEADER => Ok(Received::Batch {
            round: word(8..16),
            sum: word(16..24),
            len: len - BATCH_HEADER,
        }),
        KIND_DONE if len == 16 => Ok(Received::Done {
            rounds: word(8..16),
        }),
        KIND_WHERE if len == 16 => Ok(Received::Where),
        kind => bail!("message of kind {kind} and {len} bytes is not a batch or done"),
    }
}

pub fn ack(round: u64, sum: u64) -> [u8; ACK_LEN] {
    let mut m = [0u8; ACK_LEN];
    m[..8].copy_from_slice(&round.to_le_bytes());
    m[8..].copy_from_slice(&sum.to_le_bytes());
    m
}

/// A worker's answer to `Where`: the last round it answered (0: none yet).
pub fn position(last: u64) -> [u8; POSITION_LEN] {
    let mut m = [0u8; POSITION_LEN];
    m[..8].copy_from_slice(&POSITION_MARK.to_le_bytes());
    m[8..16].copy_from_slice(&last.to_le_bytes());
    m
}

/// What a manager received from a worker.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Ack { round: u64, sum: u64 },
    Position { last: u64 },
}

/// An answer from its bytes (`m`: the whole message).
pub fn parse_answer(m: &[u8]) -> Result<Answer> {
    let word = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().unwrap());
    match m.len() {
        ACK_LEN => Ok(Answer::Ack {
            round: word(0),
            sum: word(8),
        }),
        POSITION_LEN if word(0) == POSITION_MARK && word(16) == 0 => {
            Ok(Answer::Position { last: word(8) })
        }
        len => bail!("an answer of {len} bytes, not an acknowledgement or a position"),
    }
}

pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The reproducible data of one round for one worker.
pub fn payload(worker: usize, round: u64, len: usize) -> Vec<u8> {
    let mut x = (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes()[..(len - v.len()).min(8)]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_per_worker_and_round_and_have_the_asked_length() {
        assert_eq!(payload(0, 1, 13).len(), 13);
        assert_ne!(payload(0, 1, 64), payload(1, 1, 64));
        assert_ne!(payload(0, 1, 64), payload(0, 2, 64));
        assert_eq!(payload(3, 9, 64), payload(3, 9, 64));
    }

    #[test]
    fn fnv1a_known_value() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn messages_parse_back_and_garbage_is_refused() {
        let h = batch_header(7, 99);
        assert_eq!(
            parse(&h, BATCH_HEADER + 5).unwrap(),
            Received::Batch {
                round: 7,
                sum: 99,
                len: 5
            }
        );
        let mut d = [0u8; BATCH_HEADER];
        d[..16].copy_from_slice(&done(3));
        assert_eq!(parse(&d, 16).unwrap(), Received::Done { rounds: 3 });
        assert!(parse(&d, 24).is_err(), "done of the wrong length");
        assert!(parse(&[0xff; BATCH_HEADER], 24).is_err());
        let mut w = [0u8; BATCH_HEADER];
        w[..16].copy_from_slice(&where_query());
        assert_eq!(parse(&w, 16).unwrap(), Received::Where);
        assert!(parse(&w, 24).is_err(), "where of the wrong length");
    }

    #[test]
    fn answers_parse_back_and_garbage_is_refused() {
        assert_eq!(
            parse_answer(&ack(5, 6)).unwrap(),
            Answer::Ack { round: 5, sum: 6 }
        );
        assert_eq!(
            parse_answer(&position(9)).unwrap(),
            Answer::Position { last: 9 }
        );
        let mut p = position(9);
        p[16] = 1;
        assert!(parse_answer(&p).is_err(), "a position with a non-zero tail");
        p = position(9);
        p[0] = 0;
        assert!(parse_answer(&p).is_err(), "24 bytes without the marker");
        assert!(parse_answer(&[0; 17]).is_err());
    }
}
