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
//!
//! A worker whose device is removed (hot-unplug) is dropped: the library reports its channel
//! [`Error::DeviceGone`] (the device answers `ENODEV`, and the mapping shows the driver's
//! stand-in page instead of faulting), and the manager says so and serves the others. A worker whose device is not there yet (hot-plugged later) is served
//! from the moment it appears. With [`Options::replug`] a removed worker's device is looked
//! for again, and once it is back the worker is served from where it stopped.
//!
//! **Taking a channel over.** A manager that finds a channel a previous manager left (the
//! library's [`Channel::resumed`]: this manager restarted, its VM with it) does not know what
//! was sent before; nor, after its device was removed and plugged in again, does a manager
//! know which of its last batches reached the segment (writes into a removed device's
//! mapping are lost). So it first asks the worker (`Where`) and sends nothing else until the
//! answer: the worker answers every batch still queued before the question, each answer is
//! checked against the data of its round (reproducible from the round and the worker), and
//! then the worker's `Position`, the last round it answered, says where to carry on.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use sivshm::channel::{Channel, Error};

use crate::batches::{self, Answer, ACK_LEN, BATCH_HEADER, POSITION_LEN};

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
    /// Print a line each time a worker's verified rounds reach a multiple of this (0: never).
    pub progress: u64,
    /// A worker whose device is removed is looked for again and served from where it
    /// stopped once its device is back (see the module comment), instead of being dropped.
    pub replug: bool,
}

/// Opens worker `i`'s channel if its device is there now (`Ok(None)`: not yet).
pub type Opener<'a> = dyn FnMut(usize) -> Result<Option<Channel>> + 'a;

/// How often the devices of workers not yet there are looked for.
const LOOK_FOR_DEVICES: Duration = Duration::from_millis(100);

struct Worker {
    /// None: the device is not there yet, or it was removed.
    ch: Option<Channel>,
    /// The device was removed: the worker is not served any more.
    removed: bool,
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
    /// Times a stopped worker's successor attached (rejoin).
    reattached: u64,
    /// Taking the channel over (see the module comment).
    takeover: Takeover,
    /// Rounds the worker had answered before this manager took its channel over (counted in
    /// `acked`, but verified by a previous manager).
    base: u64,
    /// Answers to batches sent before a takeover, checked during it.
    recovered: u64,
    /// Times the device came back after a removal (replug).
    replugged: u64,
}

/// Where a manager taking a channel over stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takeover {
    No,
    /// `Where` is to be sent.
    Ask,
    /// `Where` was sent; the worker's position is awaited.
    Asked,
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
    /// Workers whose device was removed, with the rounds verified before.
    pub removed: Vec<(usize, u64)>,
    /// What each worker achieved, by index.
    pub workers: Vec<WorkerReport>,
}

/// What one worker achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerReport {
    /// Rounds verified (repeats not counted).
    pub verified: u64,
    /// Its device was removed: it was served no more.
    pub removed: bool,
    /// Times a successor re-attached after it stopped (rejoin).
    pub reattached: u64,
    /// Rounds the worker had answered before this manager took its channel over (a
    /// restarted manager), verified by the previous one and not counted in `verified`.
    pub resumed_after: u64,
    /// Answers to a previous manager's (or this manager's, before a removal) batches, checked
    /// while taking the channel over.
    pub recovered: u64,
    /// Times its device came back after a removal (replug).
    pub replugged: u64,
}

/// Fails unless a batch of `o.bytes` fits worker `i`'s channel.
fn check_fits(i: usize, ch: &Channel, o: &Options) -> Result<()> {
    if BATCH_HEADER + o.bytes > ch.max_message() {
        bail!(
            "--bytes {} does not fit worker {i}'s channel: at most {} bytes a batch",
            o.bytes,
            ch.max_message() - BATCH_HEADER
        );
    }
    Ok(())
}

/// Sends `o.rounds` batches of `o.bytes` to every channel's worker and checks every answer;
/// fails if no progress is made for `o.timeout`. A worker without a channel yet is looked for
/// with `open_late`.
pub fn run(
    channels: Vec<Option<Channel>>,
    o: &Options,
    open_late: &mut Opener<'_>,
) -> Result<Report> {
    for (i, ch) in channels.iter().enumerate() {
        if let Some(ch) = ch {
            check_fits(i, ch, o)?;
        }
    }
    let start = Instant::now();
    let mut workers: Vec<Worker> = channels
        .into_iter()
        .enumerate()
        .map(|(i, ch)| Worker {
            takeover: match &ch {
                Some(ch) if ch.resumed() => {
                    println!(
                        "manager: worker {i}'s channel was left by a previous manager; asking the \
                         worker where it stands"
                    );
                    Takeover::Ask
                }
                _ => Takeover::No,
            },
            base: 0,
            recovered: 0,
            replugged: 0,
            ch,
            removed: false,
            next: 1,
            due: start,
            unacked: VecDeque::new(),
            acked: 0,
            done_sent: false,
            repeats: 0,
            gone: false,
            reattached: 0,
        })
        .collect();
    let mut last_progress = Instant::now();
    let mut wakeups = 0;
    let mut o = o.clone();
    let o = &mut o;
    let mut stopping = false;
    let mut next_look = Instant::now();
    // Done: every worker answered every round, or is gone, or (told to stop) never came.
    let finished = |w: &Worker, rounds: u64, stopping: bool| {
        w.removed || (w.ch.is_none() && stopping) || (w.acked == rounds && w.done_sent)
    };
    while !workers.iter().all(|w| finished(w, o.rounds, stopping)) {
        if o.stop_file.as_ref().is_some_and(|p| p.exists()) {
            let sent = workers.iter().map(|w| w.next - 1).max().unwrap_or(0);
            o.rounds = o.rounds.min(sent.max(1));
            o.stop_file = None;
            stopping = true;
            println!(
                "manager: told to stop; {} round(s) to every worker",
                o.rounds
            );
        }
        let mut progress = false;
        let look = Instant::now() >= next_look;
        if look {
            next_look = Instant::now() + LOOK_FOR_DEVICES;
        }
        for (i, w) in workers.iter_mut().enumerate() {
            if w.ch.is_none() {
                if look && !w.removed && !stopping {
                    progress |= appear(i, w, o, open_late)?;
                }
                continue;
            }
            let r = step(i, w, o);
            progress |= unless_removed(i, w, o, r)?.unwrap_or(true);
        }
        if progress {
            last_progress = Instant::now();
            continue;
        }
        if last_progress.elapsed() > o.timeout {
            let missing: Vec<_> = (0..workers.len())
                .filter(|&i| workers[i].ch.is_none() && !workers[i].removed)
                .collect();
            if missing.is_empty() {
                bail!("no progress for {} s", o.timeout.as_secs());
            }
            bail!(
                "no progress for {} s; the devices of workers {missing:?} never appeared",
                o.timeout.as_secs()
            );
        }
        for (i, w) in workers.iter_mut().enumerate() {
            let r = look_at_peer(i, w, o);
            unless_removed(i, w, o, r)?;
        }
        wakeups += sleep(&mut workers, o)?;
    }
    let mut r = Report {
        rounds: o.rounds,
        verified: workers.iter().map(|w| w.acked - w.base).sum(),
        elapsed: start.elapsed(),
        rings: 0,
        wakeups: 0,
        restarts: 0,
        repeats: workers.iter().map(|w| w.repeats).sum(),
        removed: (0..workers.len())
            .filter(|&i| workers[i].removed)
            .map(|i| (i, workers[i].acked))
            .collect(),
        workers: workers
            .iter()
            .map(|w| WorkerReport {
                verified: w.acked - w.base,
                removed: w.removed,
                reattached: w.reattached,
                resumed_after: w.base,
                recovered: w.recovered,
                replugged: w.replugged,
            })
            .collect(),
    };
    let mut worker_wakeups = 0;
    for s in workers
        .iter()
        .filter_map(|w| w.ch.as_ref())
        .map(Channel::stats)
    {
        r.rings += s.rings;
        r.restarts += s.peer_restarts;
        worker_wakeups += s.wakeups;
    }
    r.wakeups = wakeups.max(worker_wakeups);
    Ok(r)
}

/// Opens worker `i`'s channel if its device has appeared; true if it did.
fn appear(i: usize, w: &mut Worker, o: &Options, open_late: &mut Opener<'_>) -> Result<bool> {
    let Some(ch) = open_late(i).with_context(|| format!("worker {i}"))? else {
        return Ok(false);
    };
    check_fits(i, &ch, o)?;
    if w.next > 1 {
        // Served before its device was removed: what reached the segment is asked.
        w.replugged += 1;
        println!(
            "manager: worker {i}'s device is back; asking the worker where it stands (sent up \
             to round {})",
            w.next - 1
        );
        event(i, "back", w.acked);
        w.takeover = Takeover::Ask;
    } else if ch.resumed() {
        println!(
            "manager: worker {i}'s device appeared with a channel a previous manager left; \
             asking the worker where it stands"
        );
        w.takeover = Takeover::Ask;
    } else {
        println!("manager: worker {i}'s device appeared; serving it");
    }
    w.ch = Some(ch);
    w.due = Instant::now();
    Ok(true)
}

/// The result of serving worker `i`, unless its device was removed: then the worker is
/// dropped (`Ok(None)`) and the others are served on.
fn unless_removed<T>(i: usize, w: &mut Worker, o: &Options, r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.downcast_ref::<Error>() == Some(&Error::DeviceGone) && o.replug => {
            println!(
                "manager: worker {i}'s device was removed after {} verified rounds; serving \
                 the others until it is back",
                w.acked
            );
            event(i, "removed", w.acked);
            w.ch = None;
            w.takeover = Takeover::No;
            Ok(None)
        }
        Err(e) if e.downcast_ref::<Error>() == Some(&Error::DeviceGone) => {
            println!(
                "manager: worker {i}'s device was removed after {} verified rounds; serving \
                 the others",
                w.acked
            );
            event(i, "removed", w.acked);
            w.ch = None;
            w.removed = true;
            Ok(None)
        }
        Err(e) => Err(e.context(format!("worker {i}"))),
    }
}

/// What happened to worker `i` mid-run, as data (beside the line for people): a
/// `SIVSHM-RESULT distribute-manager-event` line (Documentation/host-and-tests.rst,
/// "Reading results").
fn event(i: usize, what: &str, verified: u64) {
    println!(
        "SIVSHM-RESULT distribute-manager-event impl=rust index={i} event={what} \
         verified={verified}"
    );
}

/// The channel of a worker being served.
fn channel(w: &mut Worker) -> &mut Channel {
    w.ch.as_mut()
        .expect("only workers with a channel are served")
}

/// Checks that worker `i` is still there; with rejoin a stopped worker is reported once and
/// waited for, and its successor reported when it attaches.
fn look_at_peer(i: usize, w: &mut Worker, o: &Options) -> Result<()> {
    if w.ch.is_none() || (w.acked == o.rounds && w.done_sent) {
        return Ok(()); // it may have closed already
    }
    match channel(w).check_peer() {
        Ok(true) if w.gone => {
            w.gone = false;
            w.reattached += 1;
            println!(
                "manager: worker {i} re-attached (restart {}); carrying on from round {}",
                channel(w).stats().peer_restarts,
                w.unacked.front().map_or(w.next, |u| u.0)
            );
            event(i, "reattached", w.acked);
        }
        Ok(_) => {}
        // The worker closes once done; its last acknowledgement may still be queued.
        Err(Error::PeerClosed) if channel(w).try_recv()?.is_some() => {}
        Err(e @ (Error::PeerGone | Error::PeerClosed)) if o.rejoin => {
            if !w.gone {
                w.gone = true;
                println!(
                    "manager: worker {i} stopped ({e}) after {} verified rounds; serving the \
                     others until it re-attaches",
                    w.acked
                );
                event(i, "stopped", w.acked);
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Tops worker `i`'s ring up and collects its acknowledgements; true if anything moved.
fn step(i: usize, w: &mut Worker, o: &Options) -> Result<bool> {
    let mut moved = false;
    let Some(ch) = w.ch.as_mut() else {
        return Ok(false);
    };
    if w.takeover == Takeover::Ask && ch.try_send(&batches::where_query())? {
        w.takeover = Takeover::Asked;
        moved = true;
    }
    while w.takeover == Takeover::No && w.next <= o.rounds && Instant::now() >= w.due {
        let Some(mut r) = ch.try_reserve(BATCH_HEADER + o.bytes)? else {
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
    let all_sent =
        w.next > o.rounds && (!o.rejoin || w.unacked.is_empty()) && w.takeover == Takeover::No;
    if all_sent && !w.done_sent && ch.try_send(&batches::done(o.rounds))? {
        w.done_sent = true;
        moved = true;
    }
    ch.flush()?;
    let mut position = None;
    while let Some(msg) = ch.try_recv()? {
        if msg.len() != ACK_LEN && msg.len() != POSITION_LEN {
            bail!(
                "an answer of {} bytes, not an acknowledgement or a position",
                msg.len()
            );
        }
        let mut a = [0u8; POSITION_LEN];
        msg.read(0, &mut a[..msg.len()])?;
        let answer = batches::parse_answer(&a[..msg.len()])?;
        msg.release()?;
        moved = true;
        let (round, sum) = match answer {
            Answer::Ack { round, sum } => (round, sum),
            // Acted on after the loop (which borrows the channel); what follows it is read
            // in the next step.
            Answer::Position { last } => {
                position = Some(last);
                break;
            }
        };
        let oldest = w.unacked.front().map_or(w.next, |u| u.0);
        // Taking over, an answer to a batch sent before (by a previous manager, or by this
        // one before its device was removed) is checked against the data of its round.
        if w.takeover != Takeover::No && w.unacked.front().map(|u| u.0) != Some(round) {
            if !(1..=o.rounds).contains(&round) {
                bail!(
                    "round {round} answered, but the run has rounds 1 to {}",
                    o.rounds
                );
            }
            let expected = batches::fnv1a(&batches::payload(i, round, o.bytes));
            if sum != expected {
                bail!("round {round} answered with checksum {sum:016x}, not {expected:016x}");
            }
            w.recovered += 1;
            continue;
        }
        let repeat = o.rejoin && (1..oldest).contains(&round) && restarted(ch);
        match w.unacked.front() {
            Some(&(r, s)) if r == round => {
                if s != sum {
                    bail!("round {round} acknowledged with checksum {sum:016x}, not {s:016x}");
                }
                w.unacked.pop_front();
                w.acked += 1;
                if o.progress > 0 && w.acked.is_multiple_of(o.progress) {
                    println!("manager: worker {i}: {} rounds verified", w.acked);
                    println!(
                        "SIVSHM-RESULT distribute-manager-progress impl=rust index={i} \
                         verified={}",
                        w.acked
                    );
                }
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
    }
    if let Some(last) = position {
        take_over_at(i, w, o, last)?;
    }
    Ok(moved)
}

/// The worker's answer to `Where`: it answered every round up to `last`, and the next batch
/// it is sent is `last + 1`.
fn take_over_at(i: usize, w: &mut Worker, o: &Options, last: u64) -> Result<()> {
    if w.takeover != Takeover::Asked {
        bail!("a position (round {last}) that was not asked for");
    }
    if last > o.rounds {
        bail!(
            "the worker says it answered round {last}, but the run has {}",
            o.rounds
        );
    }
    // Batches this manager sent that never reached the segment (written after its device
    // was removed) are sent again.
    while w.unacked.back().is_some_and(|u| u.0 > last) {
        w.unacked.pop_back();
    }
    if let Some(&(r, _)) = w.unacked.front() {
        bail!("the worker says it answered up to round {last}, but round {r} was never answered");
    }
    if w.next == 1 && w.acked == 0 {
        // A manager new to this channel: what came before was its predecessor's.
        w.base = last;
        w.acked = last;
    } else if last < w.acked {
        bail!(
            "the worker says it answered up to round {last}, but {} were verified",
            w.acked
        );
    }
    w.next = last + 1;
    w.due = Instant::now();
    w.takeover = Takeover::No;
    println!(
        "manager: worker {i} answered up to round {last}; carrying on from round {}",
        last + 1
    );
    event(i, "resumed", w.acked);
    Ok(())
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
    for (i, w) in workers.iter_mut().enumerate() {
        if let Some(ch) = w.ch.as_mut() {
            let r = ch.arm().map_err(anyhow::Error::from);
            ready |= !unless_removed(i, w, o, r)?.unwrap_or(true);
        }
    }
    let now = Instant::now();
    let mut wait = LOOK_FOR_DEVICES;
    if o.pace.is_some() {
        for w in workers
            .iter()
            .filter(|w| w.ch.is_some() && w.next <= o.rounds)
        {
            wait = wait.min(w.due.saturating_duration_since(now));
        }
    }
    let mut woken = 0;
    if !ready && !wait.is_zero() {
        let served = workers.iter().filter(|w| w.ch.is_some()).count();
        let mut fds: Vec<_> = workers
            .iter()
            .filter_map(|w| w.ch.as_ref().and_then(Channel::wake_fd))
            .collect();
        fds.sort_by_key(|f| f.as_raw_fd());
        fds.dedup_by_key(|f| f.as_raw_fd());
        if served == 0 {
            // Nobody to serve yet: wait for devices to appear.
            std::thread::sleep(wait);
        } else if fds.is_empty() {
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
    for (i, w) in workers.iter_mut().enumerate() {
        if let Some(ch) = w.ch.as_mut() {
            let r = ch.disarm().map_err(anyhow::Error::from);
            unless_removed(i, w, o, r)?;
        }
    }
    Ok(woken)
}
