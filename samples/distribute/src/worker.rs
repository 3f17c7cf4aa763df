//! A worker: receives batches until the manager is done, checks each against the checksum the
//! manager sent, and answers with the checksum it computed itself.
//!
//! A batch is answered while held ([`sivshm::channel::Message::reply`]) and released after,
//! so a worker that stops between the two (its VM killed) loses nothing: its successor,
//! attaching to the same channel, finds the batch again and answers it once more (the
//! manager knows repeats). A successor therefore starts at
//! whatever round the channel holds, not necessarily round 1.
//!
//! With [`OnManagerGone::Wait`] a manager that stops (its VM killed, its device removed) is
//! waited for: the worker keeps its place, and when a manager attaches to the channel again
//! (a new generation of the peer) it answers that manager's `Where` with the last round it
//! answered and carries on from there.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sivshm::channel::{Channel, Error};

use crate::batches::{self, Received, BATCH_HEADER};

pub struct Report {
    /// Batches received by this worker (its predecessors' not counted).
    pub rounds: u64,
    pub bytes: u64,
    /// The first round this worker received: 1 unless it took over from a stopped worker.
    pub first: Option<u64>,
    /// Batches whose data did not match the manager's checksum.
    pub mismatched: u64,
    pub wakeups: u64,
    pub rings: u64,
    /// With [`OnManagerGone::End`]: why the run ended before the manager's Done.
    pub manager_left: Option<Error>,
    /// With [`OnManagerGone::Wait`]: times the manager stopped and one came back.
    pub manager_back: u64,
    /// `Where` questions answered (from managers that took the channel over).
    pub positions: u64,
}

/// What a worker does when its manager stops beating or closes the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnManagerGone {
    /// The run fails.
    Fail,
    /// The run ends (successfully if a round was verified); after it left, the host may hand
    /// its segment to someone else, so a channel found set up anew ends it too.
    End,
    /// The worker waits up to the run's timeout for a manager to attach again, and carries on.
    Wait,
}

/// How often a worker waiting for its manager looks for it.
const LOOK_FOR_MANAGER: Duration = Duration::from_millis(50);

/// Serves the channel until the manager's Done (or as `gone` says when the manager leaves);
/// prints a line every `progress` rounds (0: never).
pub fn run(
    mut ch: Channel,
    timeout: Duration,
    progress: u64,
    gone: OnManagerGone,
) -> Result<Report> {
    let (mut rounds, mut bytes, mut mismatched) = (0u64, 0u64, 0u64);
    let (mut first, mut last) = (None, 0u64);
    let (mut manager_back, mut positions) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        let mut msg = match ch.recv(Some(timeout)) {
            // After it left, the host may hand its segment to someone else: whatever is
            // found there then (Reformatted) ends the run too.
            Err(e @ (Error::PeerGone | Error::PeerClosed | Error::Reformatted))
                if gone == OnManagerGone::End =>
            {
                let mut r = report(&ch, rounds, bytes, first, mismatched, Some(e));
                r.positions = positions;
                return Ok(r);
            }
            Err(e @ (Error::PeerGone | Error::PeerClosed)) if gone == OnManagerGone::Wait => {
                println!(
                    "worker: the manager left ({e}) after round {last}; waiting for it to come \
                     back"
                );
                println!(
                    "SIVSHM-RESULT distribute-worker-event impl=rust event=manager_left \
                     round={last}"
                );
                wait_for_manager(&mut ch, timeout)?;
                manager_back += 1;
                println!(
                    "worker: a manager attached again (its restart {}); carrying on after round \
                     {last}",
                    ch.stats().peer_restarts
                );
                println!(
                    "SIVSHM-RESULT distribute-worker-event impl=rust event=manager_back \
                     round={last}"
                );
                continue;
            }
            r => r?,
        };
        let mut head = [0u8; BATCH_HEADER];
        let n = msg.len().min(BATCH_HEADER);
        msg.read(0, &mut head[..n])?;
        match batches::parse(&head, msg.len())? {
            Received::Batch { round, sum, len } => {
                buf.resize(len, 0);
                msg.read(BATCH_HEADER, &mut buf)?;
                // `msg` is not released: the batch stays in the ring until answered (see
                // the module comment).
                let mine = batches::fnv1a(&buf);
                if mine != sum {
                    mismatched += 1;
                    println!(
                        "worker: round {round}: checksum {mine:016x}, manager says {sum:016x}"
                    );
                }
                match first {
                    None => {
                        if round != 1 {
                            println!("worker: took over the channel at round {round}");
                        }
                        first = Some(round);
                    }
                    Some(_) if round != last + 1 => {
                        bail!("round {round} arrived after round {last}")
                    }
                    Some(_) => {}
                }
                msg.reply(&batches::ack(round, mine), Some(timeout))?;
                msg.release()?;
                last = round;
                rounds += 1;
                bytes += len as u64;
                if progress > 0 && rounds % progress == 0 {
                    println!("worker: round {round} verified and answered");
                    // The same as data, for whoever waits for the run to get this far.
                    println!("SIVSHM-RESULT distribute-worker-progress impl=rust round={round}");
                }
            }
            Received::Done { rounds: sent } => {
                msg.release()?;
                if first.is_some() && sent != last {
                    bail!(
                        "the manager says it sent {sent} rounds, the last that arrived is {last}"
                    );
                }
                if first == Some(1) && rounds != sent {
                    bail!("the manager says it sent {sent} rounds, {rounds} arrived");
                }
                let mut r = report(&ch, rounds, bytes, first, mismatched, None);
                (r.manager_back, r.positions) = (manager_back, positions);
                return Ok(r);
            }
            Received::Where => {
                msg.release()?;
                ch.send(&batches::position(last), Some(timeout))?;
                positions += 1;
                println!("worker: told the manager the last round answered: {last}");
            }
        }
    }
}

/// Waits until a manager attaches to the channel again (a new generation of the peer), for
/// up to `timeout`.
fn wait_for_manager(ch: &mut Channel, timeout: Duration) -> Result<()> {
    let before = ch.stats().peer_restarts;
    let start = Instant::now();
    loop {
        match ch.check_peer() {
            Ok(true) if ch.stats().peer_restarts > before => return Ok(()),
            Ok(_) | Err(Error::PeerGone | Error::PeerClosed) => {}
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() > timeout {
            bail!("no manager attached again within {} s", timeout.as_secs());
        }
        std::thread::sleep(LOOK_FOR_MANAGER);
    }
}

/// What the run received, with the channel's doorbell counts.
fn report(
    ch: &Channel,
    rounds: u64,
    bytes: u64,
    first: Option<u64>,
    mismatched: u64,
    manager_left: Option<Error>,
) -> Report {
    let s = ch.stats();
    Report {
        rounds,
        bytes,
        first,
        mismatched,
        wakeups: s.wakeups,
        rings: s.rings,
        manager_left,
        manager_back: 0,
        positions: 0,
    }
}
