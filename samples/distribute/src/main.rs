//! `sivshm-distribute`: a data manager hands data to N workers, each through its own sivshm
//! segment, and verifies what every worker computed from it.
//!
//! SIVSHM: in the manager VM, `sivshm-distribute manager --workers BDF[,BDF...]` (the PCI
//! addresses of the devices that serve worker 0, 1, ...); in each worker VM,
//! `sivshm-distribute worker` (its one device, its whole segment).
//!
//! IVSHMEM, the baseline: every VM maps one region and finds its slice by convention. The
//! manager runs `sivshm-distribute manager --region BDF --count N --slot-size BYTES`, worker
//! i runs `sivshm-distribute worker --slot i --slot-size BYTES`.
//!
//! With doorbell devices each side rings the other and sleeps on an eventfd; with plain ones
//! both poll the header.

mod adapt;
mod adaptive;
mod adaptive_cmd;
mod batches;
mod manager;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sivshm::channel::{Channel, Config, Links, Role as End};
use sivshm::{Device, Mapping};

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Send `rounds` batches of `bytes` to every worker and check their checksums.
    Manager {
        /// SIVSHM: PCI addresses of the devices serving worker 0, 1, ..., comma separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "region")]
        workers: Vec<String>,
        /// IVSHMEM: PCI address of the one region all workers share.
        #[arg(long, conflicts_with = "workers", requires_all = ["count", "slot_size"])]
        region: Option<String>,
        /// IVSHMEM: number of workers in the region.
        #[arg(long)]
        count: Option<usize>,
        /// IVSHMEM: bytes of each worker's slice of the region.
        #[arg(long)]
        slot_size: Option<usize>,
        #[arg(long, default_value_t = 8)]
        rounds: u64,
        /// Bytes per round per worker (at most half the channel's ring, less 24 bytes).
        #[arg(long, default_value_t = 1 << 20)]
        bytes: usize,
        /// Seconds to wait for a worker's answer.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Send at most one batch per worker every MS milliseconds (data arriving over time).
        #[arg(long, value_name = "MS")]
        pace_ms: Option<u64>,
        /// A worker that stops (VM killed or rebooted) is waited for while the others are
        /// served, and its successor carries on where it stopped.
        #[arg(long)]
        rejoin: bool,
        /// Send no more rounds once FILE exists (those sent are still answered and checked).
        #[arg(long, value_name = "FILE")]
        stop_file: Option<std::path::PathBuf>,
        /// Seconds without a heartbeat after which a worker counts as stopped.
        #[arg(long, default_value_t = 30)]
        peer_timeout: u64,
        /// SIVSHM: a worker whose device is not there yet (hot-plugged later) is served once
        /// it appears, instead of failing the start.
        #[arg(long, conflicts_with = "region")]
        late: bool,
        /// Print a line each time a worker has N more rounds verified (0: never).
        #[arg(long, default_value_t = 0, value_name = "N")]
        progress: u64,
        /// SIVSHM: a worker whose device is removed is looked for again and, once its device
        /// is back, served from where it stopped (after asking the worker), instead of being
        /// dropped.
        #[arg(long, conflicts_with = "region")]
        replug: bool,
    },
    /// Receive rounds until the manager is done, answering each with its checksum.
    Worker {
        #[arg(long, default_value = "/dev/sivshm0")]
        device: String,
        /// Fail unless the device is the only sivshm device of this VM (what a SIVSHM
        /// worker must see: its own segment and nothing else).
        #[arg(long)]
        only_device: bool,
        /// IVSHMEM: this worker's slice of the region (its index).
        #[arg(long, requires = "slot_size")]
        slot: Option<usize>,
        /// IVSHMEM: bytes of each slice.
        #[arg(long)]
        slot_size: Option<usize>,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print a line every N rounds verified (0: never).
        #[arg(long, default_value_t = 0, value_name = "N")]
        progress: u64,
        /// A manager that leaves (stops beating or closes: its device removed, its VM
        /// stopped; or the channel is found set up anew after it left) ends the run,
        /// successfully if a round was verified, instead of failing it.
        #[arg(long, conflicts_with = "wait_for_manager")]
        until_manager_leaves: bool,
        /// A manager that leaves (stops beating or closes: its VM killed or restarted, its
        /// device removed) is waited for, up to --timeout; when a manager attaches again the
        /// worker tells it the last round it answered and carries on.
        #[arg(long)]
        wait_for_manager: bool,
        /// Seconds without the manager's heartbeat after which it counts as gone.
        #[arg(long, default_value_t = 30)]
        peer_timeout: u64,
    },
    /// One worker whose segment follows the load: the manager asks the host for a segment of
    /// a new size on the console (SIVSHM-RESIZE add|del) and moves the channel over.
    AdaptiveManager(adaptive_cmd::ManagerArgs),
    /// The worker of `adaptive-manager`: follows each move to the device that appears.
    AdaptiveWorker(adaptive_cmd::WorkerArgs),
    /// Benchmark: the varying load of `adaptive-manager` in this process over fixed small,
    /// fixed large and adaptive segments; memory held and throughput of each.
    AdaptBench(adaptive_cmd::Load),
}

/// Where a worker's channel lives: a window of one of the manager's devices.
struct Window {
    device: usize,
    offset: u64,
    len: Option<usize>,
}

fn config(timeout: Duration, peer_timeout: Duration) -> Config {
    Config {
        // Workers may boot after the manager and the other way round.
        attach_timeout: timeout,
        peer_timeout,
        ..Config::default()
    }
}

/// What a device's channels ring and wait on: vector 0, one eventfd per device (shared by
/// the channels of every worker in an IVSHMEM region), or polling on a device without
/// doorbell; and the device, asked whether it is gone.
fn links(dev: &Device) -> Result<Links> {
    Links::on_device(dev, 0).context("binding an eventfd to vector 0")
}

fn main() -> Result<()> {
    match Cli::parse().role {
        Role::AdaptiveManager(a) => adaptive_cmd::manager(&a),
        Role::AdaptiveWorker(a) => adaptive_cmd::worker(&a),
        Role::AdaptBench(l) => adaptive_cmd::bench(&l),
        Role::Manager {
            workers,
            region,
            count,
            slot_size,
            rounds,
            bytes,
            timeout,
            pace_ms,
            rejoin,
            stop_file,
            peer_timeout,
            late,
            progress,
            replug,
        } => {
            let (bdfs, windows) = match region {
                // One device per worker, each channel its whole segment.
                None => {
                    let windows = (0..workers.len())
                        .map(|device| Window {
                            device,
                            offset: 0,
                            len: None,
                        })
                        .collect::<Vec<_>>();
                    (workers, windows)
                }
                // One device, worker i's channel at i * slot size.
                Some(bdf) => {
                    let (count, size) = (count.unwrap_or(0), slot_size.unwrap_or(0));
                    if count == 0 || size == 0 {
                        bail!("--region needs --count and --slot-size above zero");
                    }
                    let windows = (0..count)
                        .map(|i| Window {
                            device: 0,
                            offset: (i * size) as u64,
                            len: Some(size),
                        })
                        .collect::<Vec<_>>();
                    (vec![bdf], windows)
                }
            };
            if rounds == 0 || bytes == 0 {
                bail!("--rounds and --bytes must be above zero");
            }
            let options = manager::Options {
                rounds,
                bytes,
                timeout: Duration::from_secs(timeout),
                pace: pace_ms.map(Duration::from_millis),
                rejoin,
                stop_file,
                progress,
                replug,
            };
            manager(
                &bdfs,
                &windows,
                &options,
                Duration::from_secs(peer_timeout),
                late,
            )
        }
        Role::Worker {
            device,
            only_device,
            slot,
            slot_size,
            timeout,
            progress,
            until_manager_leaves,
            wait_for_manager,
            peer_timeout,
        } => {
            let window = slot
                .zip(slot_size)
                .map(|(i, size)| ((i * size) as u64, size));
            let gone = match (until_manager_leaves, wait_for_manager) {
                (true, _) => worker::OnManagerGone::End,
                (_, true) => worker::OnManagerGone::Wait,
                _ => worker::OnManagerGone::Fail,
            };
            worker(
                &device,
                only_device,
                window,
                (
                    Duration::from_secs(timeout),
                    Duration::from_secs(peer_timeout),
                ),
                progress,
                gone,
            )
        }
    }
}

/// Worker `i`'s channel in `windows[i]` of `dev`.
fn open_channel(
    i: usize,
    dev: &Device,
    map: &Arc<Mapping>,
    links: &Links,
    w: &Window,
    config: Config,
) -> Result<Channel> {
    let len = w.len.unwrap_or(map.len());
    let ch = Channel::new(
        map.clone(),
        w.offset as usize,
        len,
        End::Manager,
        links.clone(),
        config,
    )
    .with_context(|| format!("worker {i}'s channel at {} of {}", w.offset, dev.info().pci))?;
    println!(
        "manager: worker {i} on /dev/sivshm{} ({}) at offset {} MiB, {} MiB, {}",
        dev.info().index,
        dev.info().pci,
        w.offset >> 20,
        len >> 20,
        sivshm::mem_type_name(dev.info().mem_type)
    );
    Ok(ch)
}

fn manager(
    bdfs: &[String],
    windows: &[Window],
    o: &manager::Options,
    peer_timeout: Duration,
    late: bool,
) -> Result<()> {
    let find =
        |bdf: &String| Device::find(bdf).with_context(|| format!("no sivshm device at {bdf}"));
    // With --late a device that is not there is looked for again while the others are served.
    let devices = bdfs
        .iter()
        .map(|bdf| match find(bdf) {
            Err(_) if late => {
                println!("manager: no device at {bdf} yet; serving it once it appears");
                Ok(None)
            }
            r => r.map(Some),
        })
        .collect::<Result<Vec<_>>>()?;
    let maps = devices
        .iter()
        .map(|d| {
            d.as_ref()
                .map(|d| d.map().map(Arc::new).context("mmap"))
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    let device_links = devices
        .iter()
        .map(|d| d.as_ref().map(links).transpose())
        .collect::<Result<Vec<_>>>()?;
    let config = || config(o.timeout, peer_timeout);
    let mut channels = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let ch = match (&devices[w.device], &maps[w.device], &device_links[w.device]) {
            (Some(d), Some(map), Some(l)) => Some(open_channel(i, d, map, l, w, config())?),
            _ => None,
        };
        channels.push(ch);
    }
    // Under SIVSHM worker i is device i, its whole segment: open it once it is there.
    let mut open_late = |i: usize| -> Result<Option<Channel>> {
        let Ok(dev) = Device::find(&bdfs[i]) else {
            return Ok(None);
        };
        let map = Arc::new(dev.map().context("mmap")?);
        let l = links(&dev)?;
        open_channel(i, &dev, &map, &l, &windows[i], config()).map(Some)
    };
    let mode = if device_links.iter().flatten().all(|l| l.wake.is_some()) {
        "doorbells"
    } else {
        "polling"
    };
    let n = channels.len() as u64;
    let r = manager::run(channels, o, &mut open_late)?;
    let secs = r.elapsed.as_secs_f64();
    // A manager that took channels over sent only the batches after the workers' positions:
    // the others were its predecessor's.
    let resumed: u64 = r.workers.iter().map(|w| w.resumed_after).sum();
    let rounds = r.rounds;
    let total = o.bytes as u64 * (rounds * n - resumed);
    let before = if resumed > 0 {
        format!(" ({resumed} answered before this manager took over)")
    } else {
        String::new()
    };
    println!(
        "manager: {} of {} batches verified{before}, {:.1} MiB in {secs:.2} s ({:.1} MiB/s), \
         {mode}, {} wake-ups, {} rings for {} batches",
        r.verified,
        rounds * n - resumed,
        total as f64 / (1 << 20) as f64,
        total as f64 / (1 << 20) as f64 / secs,
        r.wakeups,
        r.rings,
        rounds * n - resumed
    );
    for (i, verified) in &r.removed {
        println!("manager: worker {i} was removed (device gone) after {verified} verified rounds");
    }
    if o.rejoin {
        println!(
            "manager: {} worker restart(s); {} answer(s) repeated by a restarted worker",
            r.restarts, r.repeats
        );
    }
    // The results as data (Documentation/host-and-tests.rst, "Reading results"): one line
    // per worker, then the run's.
    for (i, w) in r.workers.iter().enumerate() {
        println!(
            "SIVSHM-RESULT distribute-manager-worker impl=rust index={i} verified={} \
             status={} reattached={} resumed_after={} recovered={} replugged={}",
            w.verified,
            if w.removed { "removed" } else { "ok" },
            w.reattached,
            w.resumed_after,
            w.recovered,
            w.replugged
        );
    }
    println!(
        "SIVSHM-RESULT distribute-manager impl=rust verified={} batches={} workers={n} \
         batch_bytes={} mode={mode} wakeups={} rings={} restarts={} repeats={} reattached={} \
         removed={} resumed_after={resumed} elapsed_s={secs:.3} mib_per_s={:.1}",
        r.verified,
        rounds * n,
        o.bytes,
        r.wakeups,
        r.rings,
        r.restarts,
        r.repeats,
        r.workers.iter().map(|w| w.reattached).sum::<u64>(),
        r.removed.len(),
        total as f64 / (1 << 20) as f64 / secs,
    );
    Ok(())
}

fn worker(
    device: &str,
    only_device: bool,
    window: Option<(u64, usize)>,
    (timeout, peer_timeout): (Duration, Duration),
    progress: u64,
    gone: worker::OnManagerGone,
) -> Result<()> {
    let visible = Device::list();
    if only_device && visible.len() != 1 {
        bail!(
            "this worker sees {} sivshm devices, not only its own",
            visible.len()
        );
    }
    let dev = Device::open(device).with_context(|| format!("opening {device}"))?;
    println!(
        "worker: sees {} sivshm device(s); {device} is {} with a {} MiB segment",
        visible.len(),
        dev.info().pci,
        dev.info().shm_size >> 20
    );
    let map: Mapping = match window {
        None => dev.map(),
        Some((offset, len)) => dev.map_range(offset, len),
    }
    .context("mmap")?;
    let len = map.len();
    let ch = Channel::new(
        Arc::new(map),
        0,
        len,
        End::Worker,
        links(&dev)?,
        config(timeout, peer_timeout),
    )
    .context("attaching to the manager's channel")?;
    let r = worker::run(ch, timeout, progress, gone)?;
    if let Some(why) = &r.manager_left {
        println!(
            "worker: the manager left ({why}) after {} verified rounds",
            r.rounds
        );
        if r.rounds == 0 {
            bail!("the manager left before a round was verified");
        }
    }
    let from = r
        .first
        .map_or(String::new(), |f| format!(" from round {f}"));
    println!(
        "worker: received {} rounds{from}, {} bytes; woken {} times by the doorbell, rang {} times",
        r.rounds, r.bytes, r.wakeups, r.rings
    );
    // The result as data (Documentation/host-and-tests.rst, "Reading results").
    let first = r.first.unwrap_or(0);
    println!(
        "SIVSHM-RESULT distribute-worker impl=rust rounds={} first_round={first} bytes={} \
         woken={} rang={} took_over={} mismatched={} devices={} manager_left={} \
         manager_back={} positions={}",
        r.rounds,
        r.bytes,
        r.wakeups,
        r.rings,
        u8::from(first > 1),
        r.mismatched,
        visible.len(),
        u8::from(r.manager_left.is_some()),
        r.manager_back,
        r.positions,
    );
    if r.mismatched > 0 {
        bail!(
            "{} of {} batches did not match their checksum",
            r.mismatched,
            r.rounds
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
