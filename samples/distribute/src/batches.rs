//! What the manager and a worker say to each other over their channel.
//!
//! Manager to worker: a `Batch` (round, checksum, then the round's data) or `Done` (how many
//! rounds were sent). Worker to manager: an `Ack` (round, and the checksum the worker computed
//! over what it received). Everything received is checked: the peer is not trusted.

use anyhow::{bail, Result};

const KIND_BATCH: u32 = 1;
const KIND_DONE: u32 = 2;
/// kind (u32), padding (u32), round (u64), checksum (u64).
pub const BATCH_HEADER: usize = 24;
pub const ACK_LEN: usize = 16;

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

/// What a worker received, from the first bytes of a message of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Batch { round: u64, sum: u64, len: usize },
    Done { rounds: u64 },
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
        kind => bail!("message of kind {kind} and {len} bytes is not a batch or done"),
    }
}

pub fn ack(round: u64, sum: u64) -> [u8; ACK_LEN] {
    let mut m = [0u8; ACK_LEN];
    m[..8].copy_from_slice(&round.to_le_bytes());
    m[8..].copy_from_slice(&sum.to_le_bytes());
    m
}

pub fn parse_ack(m: &[u8; ACK_LEN]) -> (u64, u64) {
    (
        u64::from_le_bytes(m[..8].try_into().unwrap()),
        u64::from_le_bytes(m[8..].try_into().unwrap()),
    )
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
        assert_eq!(parse_ack(&ack(5, 6)), (5, 6));
    }
}
