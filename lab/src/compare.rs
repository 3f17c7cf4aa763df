//! SIVSHM against IVSHMEM, measured in one run (figures, never pass/fail).
//!
//! - Throughput: the same distribution job in both topologies, in interleaved runs.
//! - Boot time: a manager and N workers launched at once, without any shared-memory device
//!   (the floor), on IVSHMEM's central server, and pre-wired by SIVSHM; from launching the
//!   QEMUs to every guest's driver having probed its devices (the guest prints
//!   `SIVSHM-PROBED <uptime>` once `insmod` returns, and the host notes when that line
//!   appears on each serial console).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::console;
use crate::layout::{Distribute, Idle, Roles, Topology};
use crate::qemu::{Finished, Machine, Running};
use crate::spread::Spread;

/// Which wiring a run uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wiring {
    /// No shared-memory device at all: the floor.
    None,
    /// One region, every QEMU connected to the central server.
    Ivshmem,
    /// A segment and a pre-wired channel per worker.
    Sivshm,
}

impl Wiring {
    fn name(self) -> &'static str {
        match self {
            Wiring::None => "no device",
            Wiring::Ivshmem => "IVSHMEM",
            Wiring::Sivshm => "SIVSHM",
        }
    }
}

/// Median, min and max of figures a loop of one run or more gathered.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let s = Spread::of(v.iter().copied()).expect("at least one run");
    (s.median, s.min, s.max)
}

fn topology(wiring: Wiring, workers: usize, slot: u64, roles: &dyn Roles) -> Result<Topology> {
    match wiring {
        Wiring::Sivshm => Topology::new(workers, slot, roles),
        Wiring::Ivshmem => Topology::ivshmem(workers, slot, roles),
        Wiring::None => Ok(Topology::bare(workers, roles)),
    }
}

fn check(f: &Finished) -> Result<console::Report> {
    let r = console::parse(&f.log);
    if f.timed_out || r.boot_id.as_deref() != Some(f.boot_id.as_str()) || r.rc != Some(0) {
        bail!(
            "{} failed (rc {:?}); log {}",
            f.name,
            r.rc,
            f.log_path.display()
        );
    }
    if !r.splats.is_empty() {
        bail!("{}: kernel splat {:?}", f.name, r.splats[0]);
    }
    Ok(r)
}

/// The manager's rate: `mib_per_s` of its `SIVSHM-RESULT distribute-manager` line.
fn mib_per_s(r: &console::Report) -> Option<f64> {
    r.result("distribute-manager")?
        .get("mib_per_s")?
        .parse()
        .ok()
}

/// The distribution job `repeats` times in each topology, alternating.
pub fn throughput(
    m: &Machine,
    logdir: &Path,
    timeout: Duration,
    workers: usize,
    segment: u64,
    rounds: u64,
    repeats: usize,
) -> Result<Vec<String>> {
    let roles = Distribute {
        peer_timeout_s: None,
        rounds,
        bytes: segment as usize / 4,
    };
    let mut figures = [Vec::new(), Vec::new()];
    let mut progress = crate::progress::Progress::new("throughput runs", 2 * repeats as u64);
    for run in 0..repeats {
        for (i, wiring) in [Wiring::Sivshm, Wiring::Ivshmem].into_iter().enumerate() {
            progress.set(
                (2 * run + i) as u64,
                &format!("{}, run {}", wiring.name(), run + 1),
            );
            let finished = topology(wiring, workers, segment, &roles)?.run(m, logdir, timeout)?;
            for f in &finished {
                check(f)?;
            }
            let rate = mib_per_s(&console::parse(&finished[0].log))
                .with_context(|| format!("no throughput line from the manager ({wiring:?})"))?;
            eprintln!("# run {}: {}: {rate:.1} MiB/s", run + 1, wiring.name());
            figures[i].push(rate);
        }
    }
    let (s, i) = (stats(&figures[0]), stats(&figures[1]));
    Ok(vec![
        format!(
            "# throughput: {workers} workers, {rounds} rounds of {} MiB each, {repeats} runs per \
             topology, interleaved, {} guests",
            segment >> 20,
            m.accel.name()
        ),
        format!(
            "throughput SIVSHM:  median {:.1} MiB/s (min {:.1}, max {:.1})",
            s.0, s.1, s.2
        ),
        format!(
            "throughput IVSHMEM: median {:.1} MiB/s (min {:.1}, max {:.1})",
            i.0, i.1, i.2
        ),
        format!("throughput SIVSHM / IVSHMEM: {:.2}", s.0 / i.0),
    ])
}

/// Launches every VM of `t` at once; returns the seconds from the first launch until every
/// guest printed `SIVSHM-PROBED`, and the latest guest uptime at that line.
fn launch_to_probed(
    m: &Machine,
    t: Topology,
    logdir: &Path,
    timeout: Duration,
) -> Result<(f64, f64)> {
    let start = Instant::now();
    let deadline = start + timeout;
    let running: Vec<Running> = t
        .vms()
        .map(|vm| m.spawn(vm, logdir))
        .collect::<Result<_>>()?;
    let logs: Vec<_> = running.iter().map(|r| r.log_path().to_path_buf()).collect();
    let mut probed = vec![None; logs.len()];
    while probed.iter().any(Option::is_none) {
        // Dropping `running` kills the guests.
        crate::interrupt::check()?;
        if Instant::now() > deadline {
            bail!("not every guest probed its devices within {timeout:?}");
        }
        for (p, log) in probed.iter_mut().zip(&logs) {
            if p.is_none() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if console::probed(&text) {
                    *p = Some(start.elapsed().as_secs_f64());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut uptime: f64 = 0.0;
    for r in running {
        let f = r.wait(deadline)?;
        let rep = check(&f)?;
        uptime = uptime.max(rep.probed_uptime.context("no SIVSHM-PROBED uptime")?);
    }
    let wall = probed.into_iter().flatten().fold(0.0, f64::max);
    drop(t);
    Ok((wall, uptime))
}

/// Boot time of a manager and N workers in each wiring, `repeats` times, interleaved.
pub fn boot_time(
    m: &Machine,
    logdir: &Path,
    timeout: Duration,
    counts: &[usize],
    repeats: usize,
    mut emit: impl FnMut(String),
) -> Result<()> {
    let wirings = [Wiring::None, Wiring::Ivshmem, Wiring::Sivshm];
    for line in [
        format!(
            "# boot time: launch of the QEMUs to every guest's driver probed (host wall clock), \
             {repeats} runs per point, interleaved, {} guests, 2 host cores",
            m.accel.name()
        ),
        "# workers | no device (floor) | IVSHMEM (central server) | SIVSHM (pre-wired) | \
         SIVSHM/IVSHMEM | IVSHMEM/floor | SIVSHM/floor"
            .into(),
    ] {
        emit(line);
    }
    // Each row is printed once its point is done: a later point that fails (a boot past the
    // timeout) loses no row already measured.
    let total = counts.len() * repeats * wirings.len();
    let mut progress = crate::progress::Progress::new("boots", total as u64);
    let mut booted = 0u64;
    for &n in counts {
        let mut wall = [Vec::new(), Vec::new(), Vec::new()];
        for run in 0..repeats {
            // Rotate the order so that no wiring always runs first on a cold cache.
            for k in 0..wirings.len() {
                let i = (k + run) % wirings.len();
                progress.set(
                    booted,
                    &format!("{} with {n} worker(s), run {}", wirings[i].name(), run + 1),
                );
                let t = topology(wirings[i], n, 1 << 20, &Idle)?;
                let (w, up) = launch_to_probed(m, t, logdir, timeout)?;
                booted += 1;
                eprintln!(
                    "# {n} worker(s), run {}: {}: {w:.2} s (latest guest uptime {up:.2} s)",
                    run + 1,
                    wirings[i].name()
                );
                wall[i].push(w);
            }
        }
        let [f, i, s] = wall.map(|v| stats(&v));
        let cell = |x: (f64, f64, f64)| format!("{:.2} s ({:.2}-{:.2})", x.0, x.1, x.2);
        emit(format!(
            "{n:>9} | {} | {} | {} | {:.2} | {:.2} | {:.2}",
            cell(f),
            cell(i),
            cell(s),
            s.0 / i.0,
            i.0 / f.0,
            s.0 / f.0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managers_rate_is_read() {
        let l = "manager: 8 of 8 batches verified, 8.0 MiB in 0.14 s (55.6 MiB/s), doorbells, 8\n\
                 SIVSHM-RESULT distribute-manager impl=rust verified=8 batches=8 mib_per_s=55.6\n";
        assert_eq!(mib_per_s(&console::parse(l)), Some(55.6));
        // The prose alone is not read.
        assert_eq!(mib_per_s(&console::parse(l.lines().next().unwrap())), None);
    }

    #[test]
    fn stats_are_median_min_max() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
    }
}
