//! One worker whose segment follows the load: the manager sends batches in bursts (a varying
//! load: phases of large bursts and phases of a trickle), asks the policy (`adapt`) after
//! every batch, and when it says so moves the channel to a segment of the new size
//! ([`sivshm::channel::Movable`]): a new segment is made (in a VM: the host hot-plugs a
//! device of that size into both VMs when asked on the console), the manager moves, the
//! worker follows, and once the old channel is drained on both sides the old segment is
//! retired (in a VM: unplugged from both). Every batch is checked by the worker, every
//! answer by the manager, in order: a lost or repeated batch fails the run.
//!
//! The same loops run in one process over memfds (`adapt-bench`: fixed small, fixed large
//! and adaptive segments under the same load, memory held and throughput of each) and in the
//! lab's VMs over hot-plugged devices (`adaptive-manager`, `adaptive-worker`).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sivshm::channel::{Channel, Config, Error, Links, Movable, Opener, Role};
use sivshm::{Device, Mapping};

use crate::adapt::Policy;
use crate::batches::{self, Answer, Received, BATCH_HEADER};

/// One phase of the load: `bursts` bursts of `burst` batches of `bytes`, the manager busy
/// elsewhere for `gap` after each burst.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub bursts: u32,
    pub burst: u32,
    pub bytes: usize,
    pub gap: Duration,
}

/// The varying load of the benchmark and the guest scenario: `cycles` times a heavy phase
/// (bursts of `heavy_kib` KiB in 16 KiB batches) and an idle one (single 1 KiB batches, eight
/// times as many as the heavy phase's bursts).
pub fn varying_load(cycles: u32, heavy_kib: usize, bursts: u32) -> Vec<Phase> {
    let heavy = Phase {
        bursts,
        burst: (heavy_kib / 16).max(1) as u32,
        bytes: 16 << 10,
        gap: Duration::from_millis(2),
    };
    let idle = Phase {
        bursts: bursts * 8,
        burst: 1,
        bytes: 1 << 10,
        gap: Duration::from_millis(1),
    };
    (0..cycles).flat_map(|_| [heavy, idle]).collect()
}

/// Where new segments come from and where old ones go.
pub trait Segments {
    /// A manager's channel, formatted, on a new segment of `bytes`: the worker will find it
    /// through its opener.
    fn make(&mut self, bytes: usize) -> Result<Channel>;
    /// The segment before the last one made is used by neither side any more.
    fn retire(&mut self) -> Result<()>;
    /// Bytes of segment memory held now.
    fn held(&self) -> usize;
    /// Waits until what was retired is gone (in VMs: unplugged), before the run ends.
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Who decides the segment's size.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Nobody: a fixed segment.
    Fixed,
    /// The policy, from what the ring shows (`adapt`).
    Policy(Policy),
    /// A script (tests): after every `every` batches the next of `sizes`, whatever the load.
    Script { every: u64, sizes: VecDeque<usize> },
}

impl Plan {
    fn sent(&mut self, batch: u64, full: bool, in_flight: usize) -> Option<usize> {
        match self {
            Plan::Fixed => None,
            Plan::Policy(p) => p.sent(full, in_flight),
            Plan::Script { every, sizes } if *every > 0 && batch.is_multiple_of(*every) => {
                sizes.pop_front()
            }
            Plan::Script { .. } => None,
        }
    }
}

/// What the manager's run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub batches: u64,
    pub verified: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub grows: u64,
    pub shrinks: u64,
    /// Batches that found the ring full.
    pub full: u64,
    /// Segment memory held, averaged over the run's time, and at most.
    pub held_avg: f64,
    pub held_peak: usize,
}

/// Time-weighted memory held.
struct Held {
    since: Instant,
    bytes: usize,
    integral: f64,
    peak: usize,
}

impl Held {
    fn note(&mut self, now: usize) {
        let t = Instant::now();
        self.integral += self.bytes as f64 * (t - self.since).as_secs_f64();
        (self.since, self.bytes) = (t, now);
        self.peak = self.peak.max(now);
    }
}

/// The manager: sends `load` over a channel on `first` (a segment `segs` made), resizing as
/// `plan` says, and checks every answer.
pub fn manager(
    first: Channel,
    segs: &mut dyn Segments,
    mut plan: Plan,
    load: &[Phase],
    timeout: Duration,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut held = Held {
        since: start,
        bytes: segs.held(),
        integral: 0.0,
        peak: segs.held(),
    };
    let mut m = Movable::new(first, Box::new(|_| Err(Error::NotFormatted)));
    let mut o = Outcome::default();
    let mut sent: VecDeque<(u64, u64, usize)> = VecDeque::new();
    let (mut retire, mut msg) = (false, Vec::new());
    let (mut data, mut sum) = (Vec::new(), 0);
    let mut want = None;
    for phase in load {
        for burst in 0..phase.bursts {
            for _ in 0..phase.burst {
                o.batches += 1;
                // The data of a size is made once (the round in the header tells batches
                // apart): the manager's cost per batch is the copy, the worker's the check.
                if data.len() != phase.bytes {
                    data = batches::payload(0, phase.bytes as u64, phase.bytes);
                    sum = batches::fnv1a(&data);
                }
                msg.clear();
                msg.extend_from_slice(&batches::batch_header(o.batches, sum));
                msg.extend_from_slice(&data);
                answers(&mut m, &mut sent, &mut o)?;
                let full = !m.try_send(&msg).context("sending a batch")?;
                if full {
                    send_when_room(&mut m, &msg, &mut sent, &mut o, start + timeout)?;
                }
                o.full += u64::from(full);
                sent.push_back((o.batches, sum, phase.bytes));
                let in_flight: usize = sent.iter().map(|s| s.2 + BATCH_HEADER + 8).sum();
                // A size the policy chose while a move was under way waits for its end.
                if let Some(w) = plan.sent(o.batches, full, in_flight) {
                    want = Some(w);
                }
                if retire && !m.draining() {
                    segs.retire()?;
                    held.note(segs.held());
                    retire = false;
                }
                if let Some(bytes) = want.take_if(|_| !retire) {
                    let grow = bytes > held.bytes;
                    let new = segs.make(bytes)?;
                    m.move_to(new).context("moving to the new segment")?;
                    held.note(segs.held());
                    (o.grows, o.shrinks) =
                        (o.grows + u64::from(grow), o.shrinks + u64::from(!grow));
                    retire = true;
                }
            }
            if !phase.gap.is_zero() && burst + 1 < phase.bursts {
                std::thread::sleep(phase.gap);
            }
        }
    }
    // Every answer, then the end of a move under way and its old segment's retirement:
    // the worker is told Done only once its VM has nothing more to let go.
    while !sent.is_empty() {
        let a = m.recv(Some(timeout)).context("waiting for answers")?;
        check(a, &mut sent, &mut o)?;
    }
    let deadline = Instant::now() + timeout;
    while m.draining() {
        answers(&mut m, &mut sent, &mut o)?;
        if Instant::now() > deadline {
            bail!("the worker did not follow the last move within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if retire {
        segs.retire()?;
    }
    segs.settle()?;
    m.send(&batches::done(o.batches), Some(timeout))?;
    m.flush()?;
    held.note(segs.held());
    o.elapsed = start.elapsed();
    o.held_avg = held.integral / o.elapsed.as_secs_f64();
    o.held_peak = held.peak;
    Ok(o)
}

/// Sends `msg` once the ring has room, reading answers meanwhile (the worker may be waiting
/// for room for them).
fn send_when_room(
    m: &mut Movable,
    msg: &[u8],
    sent: &mut VecDeque<(u64, u64, usize)>,
    o: &mut Outcome,
    deadline: Instant,
) -> Result<()> {
    loop {
        match m.send(msg, Some(Duration::from_millis(1))) {
            Ok(()) => return Ok(()),
            Err(Error::TimedOut) => {}
            Err(e) => return Err(e).context("sending a batch"),
        }
        answers(m, sent, o)?;
        if Instant::now() > deadline {
            bail!("no room for batch {} in time", o.batches);
        }
    }
}

/// Reads and checks the answers there are now.
fn answers(m: &mut Movable, sent: &mut VecDeque<(u64, u64, usize)>, o: &mut Outcome) -> Result<()> {
    while let Some(a) = m.try_recv()? {
        check(a, sent, o)?;
    }
    Ok(())
}

/// One answer: the next round expected, with the manager's checksum.
fn check(
    a: sivshm::channel::Incoming<'_>,
    sent: &mut VecDeque<(u64, u64, usize)>,
    o: &mut Outcome,
) -> Result<()> {
    let bytes = a.to_vec()?;
    a.release()?;
    let Answer::Ack { round, sum } = batches::parse_answer(&bytes)? else {
        bail!("a position where an acknowledgement was due");
    };
    let Some((want, mine, len)) = sent.pop_front() else {
        bail!("an answer for round {round}, none outstanding");
    };
    if round != want {
        bail!("round {round} answered where round {want} was due (lost or repeated)");
    }
    if sum != mine {
        bail!("round {round}: the worker's checksum {sum:016x} is not {mine:016x}");
    }
    o.verified += 1;
    o.bytes += len as u64;
    Ok(())
}

/// What a worker's run did.
#[derive(Debug, Default)]
pub struct WorkerOutcome {
    pub rounds: u64,
    pub mismatched: u64,
    pub moves: u64,
}

/// The worker: answers every batch with its checksum until Done, following every move.
pub fn worker(first: Channel, open: Opener, timeout: Duration) -> Result<WorkerOutcome> {
    let mut w = Movable::new(first, open);
    let mut o = WorkerOutcome::default();
    let mut buf = Vec::new();
    loop {
        let mut msg = w.recv(Some(timeout)).context("waiting for a batch")?;
        let mut head = [0u8; BATCH_HEADER];
        let n = msg.len().min(BATCH_HEADER);
        msg.read(0, &mut head[..n])?;
        match batches::parse(&head, msg.len())? {
            Received::Batch { round, sum, len } => {
                if round != o.rounds + 1 {
                    bail!(
                        "round {round} arrived after round {} (lost or repeated)",
                        o.rounds
                    );
                }
                buf.resize(len, 0);
                msg.read(BATCH_HEADER, &mut buf)?;
                let mine = batches::fnv1a(&buf);
                o.mismatched += u64::from(mine != sum);
                msg.reply(&batches::ack(round, mine), Some(timeout))?;
                msg.release()?;
                o.rounds = round;
            }
            Received::Done { rounds } if rounds == o.rounds => {
                msg.release()?;
                break;
            }
            Received::Done { rounds } => bail!("done after {rounds} rounds, {} seen", o.rounds),
            Received::Where => bail!("a Where on an adaptive channel"),
        }
    }
    w.flush()?;
    o.moves = w.moves();
    Ok(o)
}

/// The channels' settings: waits as long as the run's timeout.
pub fn config(timeout: Duration) -> Config {
    Config {
        attach_timeout: timeout,
        peer_timeout: timeout,
        ..Config::default()
    }
}

/// Segments in this process: memfds, with eventfds for doorbells, handed to the worker's
/// thread through a queue (as a hot-plugged device appears in its VM).
pub struct Local {
    to_worker: mpsc::Sender<(Arc<Mapping>, Links)>,
    live: VecDeque<usize>,
    config: Config,
}

impl Local {
    /// The segments, and the worker's opener that finds each new one.
    pub fn new(config: Config) -> (Self, Opener) {
        let (tx, rx) = mpsc::channel::<(Arc<Mapping>, Links)>();
        let wait = config.attach_timeout;
        let worker_config = config.clone();
        let open: Opener = Box::new(move |_to| {
            let (map, links) = rx.recv_timeout(wait).map_err(|_| Error::NotFormatted)?;
            let len = map.len();
            Channel::new(map, 0, len, Role::Worker, links, worker_config.clone())
        });
        let local = Local {
            to_worker: tx,
            live: VecDeque::new(),
            config,
        };
        (local, open)
    }
}

impl Segments for Local {
    fn make(&mut self, bytes: usize) -> Result<Channel> {
        use rustix::fs::{memfd_create, MemfdFlags};
        let fd = memfd_create("sivshm-adaptive", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, bytes as u64)?;
        let map = Arc::new(Mapping::new(std::os::fd::AsFd::as_fd(&fd), 0, bytes)?);
        let (mine, theirs) = Links::in_process_pair()?;
        let ch = Channel::new(
            map.clone(),
            0,
            bytes,
            Role::Manager,
            mine,
            self.config.clone(),
        )?;
        self.to_worker
            .send((map, theirs))
            .map_err(|_| anyhow::anyhow!("the worker is gone"))?;
        self.live.push_back(bytes);
        Ok(ch)
    }

    fn retire(&mut self) -> Result<()> {
        self.live.pop_front();
        Ok(())
    }

    fn held(&self) -> usize {
        self.live.iter().sum()
    }
}

/// Segments in VMs: each new one is asked of the host on the console (`SIVSHM-RESIZE add BDF
/// BYTES`: a device of that size plugged into both VMs, in the manager at BDF, which
/// alternates between two slots), and each old one given back (`SIVSHM-RESIZE del BDF`).
pub struct Plugged {
    slots: [String; 2],
    /// The slot in use, and the one last given back.
    current: usize,
    retired: Option<usize>,
    bytes: [usize; 2],
    config: Config,
}

impl Plugged {
    /// The first segment is the device at `slots[0]`: there from boot, or asked for (of
    /// `bytes`) if it is not.
    pub fn new(slots: [String; 2], bytes: usize, config: Config) -> Result<(Self, Channel)> {
        let mut p = Plugged {
            slots,
            current: 1,
            retired: None,
            bytes: [0, 0],
            config,
        };
        let ch = match Device::find(&p.slots[0]) {
            Ok(dev) => {
                p.bytes[0] = dev.info().shm_size as usize;
                Channel::on_device(&dev, Role::Manager, p.config.clone())?
            }
            Err(_) => p.make(bytes)?,
        };
        p.current = 0;
        Ok((p, ch))
    }
}

impl Segments for Plugged {
    fn make(&mut self, bytes: usize) -> Result<Channel> {
        // `current` is the slot in use: the new segment goes to the other one.
        let next = 1 - self.current;
        let bdf = &self.slots[next];
        let wait = self.config.attach_timeout;
        // The slot's previous device must be gone before a new one goes there.
        poll(wait, || Device::find(bdf).is_err())
            .with_context(|| format!("the old device at {bdf} was not removed"))?;
        println!("SIVSHM-RESIZE add {bdf} {bytes}");
        std::io::stdout().flush()?;
        poll(wait, || Device::find(bdf).is_ok())
            .with_context(|| format!("no device at {bdf} after asking for it"))?;
        let dev = Device::find(bdf)?;
        let ch = Channel::on_device(&dev, Role::Manager, self.config.clone())?;
        self.bytes[next] = dev.info().shm_size as usize;
        self.current = next;
        Ok(ch)
    }

    fn retire(&mut self) -> Result<()> {
        let old = 1 - self.current;
        println!("SIVSHM-RESIZE del {}", self.slots[old]);
        std::io::stdout().flush()?;
        self.bytes[old] = 0;
        self.retired = Some(old);
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        if let Some(old) = self.retired {
            let bdf = &self.slots[old];
            poll(self.config.attach_timeout, || Device::find(bdf).is_err())
                .with_context(|| format!("the old device at {bdf} was not removed"))?;
        }
        Ok(())
    }

    fn held(&self) -> usize {
        self.bytes.iter().sum()
    }
}

/// A worker's opener in a VM: the new device is the one sivshm device whose PCI address is
/// not the one in use (`current`; empty: any device, the first).
pub fn plugged_opener(current: String, config: Config) -> Opener {
    let mut current = current;
    Box::new(move |_to| {
        let deadline = Instant::now() + config.attach_timeout;
        loop {
            for path in Device::list() {
                let Ok(dev) = Device::open(&path) else {
                    continue;
                };
                let pci = dev.info().pci.to_string();
                if pci != current {
                    let ch = Channel::on_device(&dev, Role::Worker, config.clone())?;
                    println!("worker: moved to {pci} ({} KiB)", dev.info().shm_size >> 10);
                    current = pci;
                    return Ok(ch);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::NotFormatted);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// Polls `done` every 10 ms for up to `wait`.
fn poll(wait: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + wait;
    while !done() {
        if Instant::now() > deadline {
            bail!("not within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole run in one process: every batch answered once and in order, whatever the
    /// policy did; the worker followed every move.
    #[test]
    fn a_run_that_follows_the_load_verifies_every_batch_across_its_moves() {
        let timeout = Duration::from_secs(60);
        let (mut segs, mut open) = Local::new(config(timeout));
        let first = segs.make(64 << 10).unwrap();
        let theirs = open(first.format_nonce()).unwrap();
        let worker = std::thread::spawn(move || worker(theirs, open, timeout));
        let load = varying_load(2, 1024, 8);
        let policy = Plan::Policy(Policy::new(64 << 10, 1 << 20, 64 << 10));
        let o = manager(first, &mut segs, policy, &load, timeout).unwrap();
        let w = worker.join().unwrap().unwrap();
        let batches: u64 = load.iter().map(|p| u64::from(p.bursts * p.burst)).sum();
        assert_eq!(
            (o.batches, o.verified, w.rounds),
            (batches, batches, batches)
        );
        assert_eq!(w.mismatched, 0);
        assert_eq!(w.moves, o.grows + o.shrinks);
        assert_eq!(segs.live.len(), 1, "every old segment retired");
    }

    #[test]
    fn a_scripted_run_moves_where_the_script_says() {
        let timeout = Duration::from_secs(60);
        let (mut segs, mut open) = Local::new(config(timeout));
        let first = segs.make(64 << 10).unwrap();
        let theirs = open(first.format_nonce()).unwrap();
        let worker = std::thread::spawn(move || worker(theirs, open, timeout));
        let load = varying_load(2, 256, 4);
        let plan = Plan::Script {
            every: 40,
            sizes: [256 << 10, 64 << 10, 512 << 10].into(),
        };
        let o = manager(first, &mut segs, plan, &load, timeout).unwrap();
        let w = worker.join().unwrap().unwrap();
        assert_eq!((o.grows, o.shrinks, w.moves), (2, 1, 3));
        assert_eq!((o.verified, w.rounds), (o.batches, o.batches));
        assert_eq!(segs.held(), 512 << 10);
    }
}
