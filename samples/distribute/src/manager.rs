//! The manager: one thread streams rounds to every worker at once, pipelined.
//!
//! Each worker's ring holds as many batches as fit; the loop tops every ring up, flushes
//! (one doorbell per sleeping worker), collects the acknowledgements and checks each against
//! the checksum of what was sent. When nothing moves it arms every channel and sleeps in one
//! `poll` on their eventfds (one shared eventfd under IVSHMEM, where every worker rings the
//! same device).

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use sivshm::channel::{Channel, Error};

use crate::batches::{self, ACK_LEN, BATCH_HEADER};

struct Worker {
    ch: Channel,
    /// The next round to send.
    next: u64,
    /// Checksums of the rounds sent and not yet acknowledged, oldest first.
    unacked: VecDeque<(u64, u64)>,
    acked: u64,
    done_sent: bool,
}

/// What the run achieved.
pub struct Report {
    pub verified: u64,
    pub elapsed: Duration,
    /// Doorbells the manager rang, over all workers.
    pub rings: u64,
    /// Sleeps of the manager that a doorbell ended.
    pub wakeups: u64,
}

/// Sends `rounds` batches of `bytes` to every channel's worker and checks every answer;
/// fails if no progress is made for `timeout`.
pub fn run(channels: Vec<Channel>, rounds: u64, bytes: usize, timeout: Duration) -> Result<Report> {
    for (i, ch) in channels.iter().enumerate() {
        if BATCH_HEADER + bytes > ch.max_message() {
            bail!(
                "--bytes {bytes} does not fit worker {i}'s channel: at most {} bytes a batch",
                ch.max_message() - BATCH_HEADER
            );
        }
    }
    let mut workers: Vec<Worker> = channels
        .into_iter()
        .map(|ch| Worker {
            ch,
            next: 1,
            unacked: VecDeque::new(),
            acked: 0,
            done_sent: false,
        })
        .collect();
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut wakeups = 0;
    while !workers.iter().all(|w| w.acked == rounds && w.done_sent) {
        let mut progress = false;
        for (i, w) in workers.iter_mut().enumerate() {
            progress |= step(i, w, rounds, bytes).with_context(|| format!("worker {i}"))?;
        }
        if progress {
            last_progress = Instant::now();
            continue;
        }
        if last_progress.elapsed() > timeout {
            bail!("no progress for {} s", timeout.as_secs());
        }
        for (i, w) in workers.iter_mut().enumerate() {
            if w.acked == rounds && w.done_sent {
                continue; // it may have closed already
            }
            match w.ch.check_peer() {
                Ok(_) => {}
                // The worker closes once done; its last acknowledgement may still be queued.
                Err(Error::PeerClosed) if w.ch.try_recv()?.is_some() => {}
                Err(e) => return Err(e).with_context(|| format!("worker {i}")),
            }
        }
        wakeups += sleep(&mut workers)?;
    }
    let (mut rings, mut worker_wakeups) = (0, 0);
    for w in &workers {
        rings += w.ch.stats().rings;
        worker_wakeups += w.ch.stats().wakeups;
    }
    Ok(Report {
        verified: workers.iter().map(|w| w.acked).sum(),
        elapsed: start.elapsed(),
        rings,
        wakeups: wakeups.max(worker_wakeups),
    })
}

/// Tops worker `i`'s ring up and collects its acknowledgements; true if anything moved.
fn step(i: usize, w: &mut Worker, rounds: u64, bytes: usize) -> Result<bool> {
    let mut moved = false;
    while w.next <= rounds {
        let Some(mut r) = w.ch.try_reserve(BATCH_HEADER + bytes)? else {
            break;
        };
        let data = batches::payload(i, w.next, bytes);
        let sum = batches::fnv1a(&data);
        r.write(0, &batches::batch_header(w.next, sum))?;
        r.write(BATCH_HEADER, &data)?;
        r.commit()?;
        w.unacked.push_back((w.next, sum));
        w.next += 1;
        moved = true;
    }
    if w.next > rounds && !w.done_sent && w.ch.try_send(&batches::done(rounds))? {
        w.done_sent = true;
        moved = true;
    }
    w.ch.flush()?;
    while let Some(msg) = w.ch.try_recv()? {
        if msg.len() != ACK_LEN {
            bail!("an answer of {} bytes, not an acknowledgement", msg.len());
        }
        let mut a = [0u8; ACK_LEN];
        msg.read(0, &mut a)?;
        msg.release()?;
        let (round, sum) = batches::parse_ack(&a);
        match w.unacked.pop_front() {
            Some((r, s)) if r == round && s == sum => w.acked += 1,
            Some((r, s)) => bail!(
                "round {round} acknowledged with checksum {sum:016x}; expected round {r}, {s:016x}"
            ),
            None => bail!("round {round} acknowledged but never sent"),
        }
        moved = true;
    }
    Ok(moved)
}

/// Arms every channel and sleeps until a doorbell (or 100 ms, to look at the workers'
/// liveness). Returns 1 if a doorbell ended the sleep.
fn sleep(workers: &mut [Worker]) -> Result<u64> {
    let mut ready = false;
    for w in workers.iter_mut() {
        ready |= !w.ch.arm()?;
    }
    let mut woken = 0;
    if !ready {
        let mut fds: Vec<_> = workers.iter().filter_map(|w| w.ch.wake_fd()).collect();
        fds.sort_by_key(|f| f.as_raw_fd());
        fds.dedup_by_key(|f| f.as_raw_fd());
        if fds.is_empty() {
            // No doorbells (plain devices): poll the rings.
            std::thread::sleep(Duration::from_micros(200));
        } else {
            let mut set: Vec<_> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
            let t = Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            woken = u64::from(rustix::io::retry_on_intr(|| poll(&mut set, Some(&t)))? > 0);
        }
    }
    for w in workers.iter_mut() {
        w.ch.disarm()?;
    }
    Ok(woken)
}
