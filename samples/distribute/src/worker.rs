//! A worker: receives batches until the manager is done, checks each against the checksum the
//! manager sent, and answers with the checksum it computed itself.

use std::time::Duration;

use anyhow::{bail, Result};
use sivshm::channel::Channel;

use crate::batches::{self, Received, BATCH_HEADER};

pub struct Report {
    pub rounds: u64,
    pub bytes: u64,
    /// Batches whose data did not match the manager's checksum.
    pub mismatched: u64,
    pub wakeups: u64,
    pub rings: u64,
}

pub fn run(mut ch: Channel, timeout: Duration) -> Result<Report> {
    let (mut rounds, mut bytes, mut mismatched) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        let msg = ch.recv(Some(timeout))?;
        let mut head = [0u8; BATCH_HEADER];
        let n = msg.len().min(BATCH_HEADER);
        msg.read(0, &mut head[..n])?;
        match batches::parse(&head, msg.len())? {
            Received::Batch { round, sum, len } => {
                buf.resize(len, 0);
                msg.read(BATCH_HEADER, &mut buf)?;
                msg.release()?;
                let mine = batches::fnv1a(&buf);
                if mine != sum {
                    mismatched += 1;
                    println!(
                        "worker: round {round}: checksum {mine:016x}, manager says {sum:016x}"
                    );
                }
                if round != rounds + 1 {
                    bail!("round {round} arrived after round {rounds}");
                }
                ch.send(&batches::ack(round, mine), Some(timeout))?;
                rounds += 1;
                bytes += len as u64;
            }
            Received::Done { rounds: sent } => {
                msg.release()?;
                if sent != rounds {
                    bail!("the manager says it sent {sent} rounds, {rounds} arrived");
                }
                let s = ch.stats();
                return Ok(Report {
                    rounds,
                    bytes,
                    mismatched,
                    wakeups: s.wakeups,
                    rings: s.rings,
                });
            }
        }
    }
}
