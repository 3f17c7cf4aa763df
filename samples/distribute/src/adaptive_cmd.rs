//! The commands of the adaptive segment (`adaptive`): a manager and a worker in VMs whose
//! host hot-plugs the segments asked for, and the benchmark that runs both in one process
//! under fixed small, fixed large and adaptive segments.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use sivshm::channel::Channel;

use crate::adapt::Policy;
use crate::adaptive::{self, Local, Outcome, Plan, Plugged, Segments};

/// The load and the sizes, shared by every command.
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Heavy and idle phases, one pair per cycle.
    #[arg(long, default_value_t = 3)]
    pub cycles: u32,
    /// KiB per burst in a heavy phase (16 KiB batches).
    #[arg(long, default_value_t = 2048)]
    pub burst_kib: usize,
    /// Bursts per heavy phase (an idle phase sends eight times as many single batches).
    #[arg(long, default_value_t = 32)]
    pub bursts: u32,
    /// The smallest segment, KiB.
    #[arg(long, default_value_t = 64)]
    pub min_kib: usize,
    /// The largest segment, KiB.
    #[arg(long, default_value_t = 4096)]
    pub max_kib: usize,
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// `adaptive-manager`: in the manager VM, one worker's channel on the device at `--slots`'s
/// first address, resized by the policy (each new segment asked of the host on the console).
#[derive(Args, Debug)]
pub struct ManagerArgs {
    /// The two PCI addresses the worker's device alternates between in this VM (the first
    /// is there from boot).
    #[arg(long, value_delimiter = ',', required = true)]
    pub slots: Vec<String>,
    /// Keep the first segment (a fixed segment, for comparison).
    #[arg(long, conflicts_with = "sizes")]
    pub fixed: bool,
    /// KiB of the first segment, if it is not there from boot (default: --min-kib).
    #[arg(long)]
    pub start_kib: Option<usize>,
    /// A script instead of the policy (tests): after every --every batches, move to a
    /// segment of the next of these sizes (KiB).
    #[arg(long, value_delimiter = ',', requires = "every")]
    pub sizes: Vec<usize>,
    #[arg(long)]
    pub every: Option<u64>,
    #[command(flatten)]
    pub load: Load,
}

/// `adaptive-worker`: in the worker VM, answers every batch, following each move to the
/// device that appears.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The first device (default: the first sivshm device that appears).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub fn manager(a: &ManagerArgs) -> Result<()> {
    let timeout = Duration::from_secs(a.load.timeout);
    let config = adaptive::config(timeout);
    let [s0, s1] = <[String; 2]>::try_from(a.slots.clone())
        .map_err(|_| anyhow::anyhow!("--slots takes two PCI addresses"))?;
    let wanted = a.start_kib.unwrap_or(a.load.min_kib) << 10;
    let (mut segs, first) = Plugged::new([s0, s1], wanted, config)?;
    let start = segs.held();
    let (min, max) = (a.load.min_kib << 10, a.load.max_kib << 10);
    let (mode, plan) = match (a.fixed, a.every) {
        (true, _) => ("fixed", Plan::Fixed),
        (false, Some(every)) => (
            "script",
            Plan::Script {
                every,
                sizes: a.sizes.iter().map(|k| k << 10).collect(),
            },
        ),
        (false, None) => ("adaptive", Plan::Policy(Policy::new(min, max, start))),
    };
    let load = adaptive::varying_load(a.load.cycles, a.load.burst_kib, a.load.bursts);
    let o = adaptive::manager(first, &mut segs, plan, &load, timeout)?;
    result(mode, start, &o);
    Ok(())
}

pub fn worker(a: &WorkerArgs) -> Result<()> {
    let timeout = Duration::from_secs(a.timeout);
    let config = adaptive::config(timeout);
    let (first, current) = match &a.device {
        Some(path) => {
            let dev = sivshm::Device::open(path).with_context(|| format!("opening {path}"))?;
            let ch = Channel::on_device(&dev, sivshm::channel::Role::Worker, config.clone())?;
            (ch, dev.info().pci.to_string())
        }
        None => {
            let mut any = adaptive::plugged_opener(String::new(), config.clone());
            let ch = any(0).context("waiting for a sivshm device")?;
            let pci = sivshm::Device::list()
                .first()
                .and_then(|p| sivshm::Device::open(p).ok())
                .map(|d| d.info().pci.to_string())
                .unwrap_or_default();
            (ch, pci)
        }
    };
    let open = adaptive::plugged_opener(current, config);
    let o = adaptive::worker(first, open, timeout)?;
    println!(
        "SIVSHM-RESULT adaptive-worker impl=rust rounds={} mismatched={} moves={}",
        o.rounds, o.mismatched, o.moves
    );
    if o.mismatched > 0 {
        bail!(
            "{} of {} batches did not match their checksum",
            o.mismatched,
            o.rounds
        );
    }
    Ok(())
}

/// `adapt-bench`: the same load three times in this process: a fixed segment of the
/// smallest size, one of the largest, and one that follows the load from the smallest.
pub fn bench(load: &Load) -> Result<()> {
    let (min, max) = (load.min_kib << 10, load.max_kib << 10);
    let phases = adaptive::varying_load(load.cycles, load.burst_kib, load.bursts);
    let timeout = Duration::from_secs(load.timeout);
    let mut runs = Vec::new();
    for (mode, start, adapt) in [
        ("fixed-small", min, false),
        ("fixed-large", max, false),
        ("adaptive", min, true),
    ] {
        let config = adaptive::config(timeout);
        let (mut segs, mut open) = Local::new(config);
        let first = segs.make(start)?;
        let theirs = open(first.format_nonce())?;
        let worker = std::thread::spawn(move || adaptive::worker(theirs, open, timeout));
        let plan = match adapt {
            true => Plan::Policy(Policy::new(min, max, start)),
            false => Plan::Fixed,
        };
        let o = adaptive::manager(first, &mut segs, plan, &phases, timeout)?;
        let w = worker
            .join()
            .map_err(|_| anyhow::anyhow!("the worker panicked"))??;
        if w.rounds != o.verified || w.mismatched > 0 {
            bail!(
                "{mode}: the worker answered {} rounds, {} mismatched",
                w.rounds,
                w.mismatched
            );
        }
        result(mode, start, &o);
        runs.push((mode, o));
    }
    let large = &runs[1].1;
    let rate = |o: &Outcome| o.bytes as f64 / o.elapsed.as_secs_f64();
    for (mode, o) in &runs {
        println!(
            "SIVSHM-RESULT adapt-bench-ratio mode={mode} throughput_of_large={:.3} \
             memory_of_large={:.3}",
            rate(o) / rate(large),
            o.held_avg / large.held_avg
        );
    }
    Ok(())
}

fn result(mode: &str, start: usize, o: &Outcome) {
    let secs = o.elapsed.as_secs_f64();
    println!(
        "SIVSHM-RESULT adaptive-manager impl=rust mode={mode} start_kib={} batches={} \
         verified={} grows={} shrinks={} full={} held_avg_kib={:.0} held_peak_kib={} \
         elapsed_s={secs:.3} mib_per_s={:.1}",
        start >> 10,
        o.batches,
        o.verified,
        o.grows,
        o.shrinks,
        o.full,
        o.held_avg / 1024.0,
        o.held_peak >> 10,
        o.bytes as f64 / (1 << 20) as f64 / secs
    );
}
