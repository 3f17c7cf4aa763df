//! The manager: one thread streams rounds to every worker at once, pipelined.
//!
//! Each worker's ring holds as many batches as fit; the loop tops every ring up, flushes
//! (one doorbell per sleeping worker), collects the acknowledgements and checks each against
//! the checksum of what was sent. When nothing moves it arms every channel and sleeps in one
//! `poll` on their eventfds (one shared eventfd under IVSHMEM, where every worker rings the
//! same device).
//!
//! With [`Options::rejoin`] a worker that stops (its VM killed or rebooted) does not end the
//! run: the manager serves the others, and when a successor attaches to the same channel it
//! carries on from the first batch its predecessor had not answered. A worker answers a batch
//! before it releases it, so nothing is lost with a stopped worker; a batch answered but not
//! released is answered again by the successor, and the manager checks such a repeat against
//! the data it sent and counts it.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use sivshm::channel::{Channel, Error};

use crate::batches::{self, ACK_LEN, BATCH_HEADER};

/// What the manager sends and how it treats its workers.
#[derive(Clone, Debug)]
pub struct Options {
    /// Batches per worker.
    pub rounds: u64,
    /// Data bytes per batch.
    pub bytes: usize,
    /// The run fails after this long without any progress.
    pub timeout: Duration,
    /// At most one batch per worker per `pace` (data that arrives over time); None sends as
    /// fast as the rings take it.
    pub pace: Option<Duration>,
    /// A worker that stops is waited for (see the module comment) instead of failing the run.
    pub rejoin: bool,
    /// Once this file exists, no worker is sent more rounds than the most any has been sent
    /// so far: the run ends as soon as those are answered (data carried until told to stop).
    pub stop_file: Option<std::path::PathBuf>,
}

struct Worker {
    ch: Channel,
    /// The next round to send.
    next: u64,
    /// When the next round may be sent (pacing).
    due: Instant,
    /// Checksums of the rounds sent and not yet acknowledged, oldest first.
    unacked: VecDeque<(u64, u64)>,
    acked: u64,
    done_sent: bool,
    /// Answers repeated by a worker's successor.
    repeats: u64,
    /// Whether the worker is known to have stopped (rejoin).
    gone: bool,
}

/// What the run achieved.
pub struct Report {
    /// Rounds each worker was sent: `Options::rounds`, or fewer after the stop file.
    pub rounds: u64,
    pub verified: u64,
    pub elapsed: Duration,
    /// Doorbells the manager rang, over all workers.
    pub rings: u64,
    /// Sleeps of the manager that a doorbell ended.
    pub wakeups: u64,
    /// Times a worker re-attached with a new generation, over all workers.
    pub restarts: u64,
    /// Answers repeated by restarted workers (checked, not counted as verified twice).
    pub repeats: u64,
}

/// Sends `o.rounds` batches of `o.bytes` to every channel's worker and checks every answer;
/// fails if no progress is made for `o.timeout`.
pub fn run(channels: Vec<Channel>, o: &Options) -> Result<Report> {
    for (i, ch) in channels.iter().enumerate() {
        if BATCH_HEADER + o.bytes > ch.max_message() {
            bail!(
                "--bytes {} does not fit worker {i}'s channel: at most {} bytes a batch",
                o.bytes,
                ch.max_message() - BATCH_HEADER
            );
        }
    }
    let start = Instant::now();
    let mut workers: Vec<Worker> = channels
        .into_iter()
        .map(|ch| Worker {
            ch,
            next: 1,
            due: start,
            unacked: VecDeque::new(),
            acked: 0,
            done_sent: false,
            repeats: 0,
            gone: false,
        })
        .collect();
    let mut last_progress = Instant::now();
    let mut wakeups = 0;
    let mut o = o.clone();
    let o = &mut o;
    while !workers.iter().all(|w| w.acked == o.rounds && w.done_sent) {
        if o.stop_file.as_ref().is_some_and(|p| p.exists()) {
            let sent = workers.iter().map(|w| w.next - 1).max().unwrap_or(0);
            o.rounds = o.rounds.min(sent.max(1));
            o.stop_file = None;
            println!(
                "manager: told to stop; {} round(s) to every worker",
                o.rounds
            );
        }
        let mut progress = false;
        for (i, w) in workers.iter_mut().enumerate() {
            progress |= step(i, w, o).with_context(|| format!("worker {i}"))?;
        }
        if progress {
            last_progress = Instant::now();
            continue;
        }
        if last_progress.elapsed() > o.timeout {
            bail!("no progress for {} s", o.timeout.as_secs());
        }
        for (i, w) in workers.iter_mut().enumerate() {
            look_at_peer(i, w, o)?;
        }
        wakeups += sleep(&mut workers, o)?;
    }
    let mut r = Report {
        rounds: o.rounds,
        verified: workers.iter().map(|w| w.acked).sum(),
        elapsed: start.elapsed(),
        rings: 0,
        wakeups: 0,
        restarts: 0,
        repeats: workers.iter().map(|w| w.repeats).sum(),
    };
    let mut worker_wakeups = 0;
    for w in &workers {
        let s = w.ch.stats();
        r.rings += s.rings;
        r.restarts += s.peer_restarts;
        worker_wakeups += s.wakeups;
    }
    r.wakeups = wakeups.max(worker_wakeups);
    Ok(r)
}

/// Checks that worker `i` is still there; with rejoin a stopped worker is reported once and
/// waited for, and its successor reported when it attaches.
fn look_at_peer(i: usize, w: &mut Worker, o: &Options) -> Result<()> {
    if w.acked == o.rounds && w.done_sent {
        return Ok(()); // it may have closed already
    }
    match w.ch.check_peer() {
        Ok(true) if w.gone => {
            w.gone = false;
            println!(
                "manager: worker {i} re-attached (restart {}); carrying on from round {}",
                w.ch.stats().peer_restarts,
                w.unacked.front().map_or(w.next, |u| u.0)
            );
        }
        Ok(_) => {}
        // The worker closes once done; its last acknowledgement may still be queued.
        Err(Error::PeerClosed) if w.ch.try_recv()?.is_some() => {}
        Err(e @ (Error::PeerGone | Error::PeerClosed)) if o.rejoin => {
            if !w.gone {
                w.gone = true;
                println!(
                    "manager: worker {i} stopped ({e}) after {} verified rounds; serving the \
                     others until it re-attaches",
                    w.acked
                );
            }
        }
        Err(e) => return Err(e).with_context(|| format!("worker {i}")),
    }
    Ok(())
}

/// Tops worker `i`'s ring up and collects its acknowledgements; true if anything moved.
fn step(i: usize, w: &mut Worker, o: &Options) -> Result<bool> {
    let mut moved = false;
    while w.next <= o.rounds && Instant::now() >= w.due {
        let Some(mut r) = w.ch.try_reserve(BATCH_HEADER + o.bytes)? else {
            break;
        };
        let data = batches::payload(i, w.next, o.bytes);
        let sum = batches::fnv1a(&data);
        r.write(0, &batches::batch_header(w.next, sum))?;
        r.write(BATCH_HEADER, &data)?;
        r.commit()?;
        w.unacked.push_back((w.next, sum));
        w.next += 1;
        if let Some(p) = o.pace {
            w.due = Instant::now() + p;
        }
        moved = true;
    }
    // With rejoin, Done waits for every answer: a successor must not find Done first and
    // leave with batches unanswered.
    let all_sent = w.next > o.rounds && (!o.rejoin || w.unacked.is_empty());
    if all_sent && !w.done_sent && w.ch.try_send(&batches::done(o.rounds))? {
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
        let oldest = w.unacked.front().map_or(w.next, |u| u.0);
        let repeat = o.rejoin && (1..oldest).contains(&round) && restarted(&mut w.ch);
        match w.unacked.front() {
            Some(&(r, s)) if r == round => {
                if s != sum {
                    bail!("round {round} acknowledged with checksum {sum:016x}, not {s:016x}");
                }
                w.unacked.pop_front();
                w.acked += 1;
            }
            // A successor answering again what its predecessor answered but did not release.
            _ if repeat => {
                let expected = batches::fnv1a(&batches::payload(i, round, o.bytes));
                if sum != expected {
                    bail!(
                        "round {round} answered again with checksum {sum:016x}, not {expected:016x}"
                    );
                }
                w.repeats += 1;
            }
            Some((r, s)) => bail!(
                "round {round} acknowledged with checksum {sum:016x}; expected round {r}, {s:016x}"
            ),
            None => bail!("round {round} acknowledged but never sent"),
        }
        moved = true;
    }
    Ok(moved)
}

/// Whether the channel's worker has been replaced since the channel opened (looking at the
/// peer now: its successor may have answered before the manager's loop looked).
fn restarted(ch: &mut Channel) -> bool {
    // An error here (say, the successor stopped too) shows in the loop's next look.
    let _ = ch.check_peer();
    ch.stats().peer_restarts > 0
}

/// Arms every channel and sleeps until a doorbell, the next paced batch is due, or 100 ms
/// have passed (to look at the workers' liveness). Returns 1 if a doorbell ended the sleep.
fn sleep(workers: &mut [Worker], o: &Options) -> Result<u64> {
    let mut ready = false;
    for w in workers.iter_mut() {
        ready |= !w.ch.arm()?;
    }
    let now = Instant::now();
    let mut wait = Duration::from_millis(100);
    if o.pace.is_some() {
        for w in workers.iter().filter(|w| w.next <= o.rounds) {
            wait = wait.min(w.due.saturating_duration_since(now));
        }
    }
    let mut woken = 0;
    if !ready && !wait.is_zero() {
        let mut fds: Vec<_> = workers.iter().filter_map(|w| w.ch.wake_fd()).collect();
        fds.sort_by_key(|f| f.as_raw_fd());
        fds.dedup_by_key(|f| f.as_raw_fd());
        if fds.is_empty() {
            // No doorbells (plain devices): poll the rings.
            std::thread::sleep(wait.min(Duration::from_micros(200)));
        } else {
            let mut set: Vec<_> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
            let t = Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos()),
            };
            woken = u64::from(rustix::io::retry_on_intr(|| poll(&mut set, Some(&t)))? > 0);
        }
    }
    for w in workers.iter_mut() {
        w.ch.disarm()?;
    }
    Ok(woken)
}
