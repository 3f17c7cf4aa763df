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

mod mailbox;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sivshm::Device;

use mailbox::{fnv1a, payload, Bell, Mailbox, Side};

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
        /// Bytes per round per worker (at most the segment size less one page).
        #[arg(long, default_value_t = 1 << 20)]
        bytes: usize,
        /// Seconds to wait for a worker's answer.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
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
    },
}

/// Where a worker's mailbox lives: a window of one of the manager's devices.
struct Window {
    device: usize,
    offset: u64,
    len: Option<usize>,
}

fn main() -> Result<()> {
    match Cli::parse().role {
        Role::Manager {
            workers,
            region,
            count,
            slot_size,
            rounds,
            bytes,
            timeout,
        } => {
            let (bdfs, windows) = match region {
                // One device per worker, each mailbox its whole segment.
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
                // One device, worker i's mailbox at i * slot size.
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
            manager(&bdfs, &windows, rounds, bytes, Duration::from_secs(timeout))
        }
        Role::Worker {
            device,
            only_device,
            slot,
            slot_size,
            timeout,
        } => {
            let window = slot
                .zip(slot_size)
                .map(|(i, size)| ((i * size) as u64, size));
            worker(&device, only_device, window, Duration::from_secs(timeout))
        }
    }
}

fn manager(
    bdfs: &[String],
    windows: &[Window],
    rounds: u64,
    bytes: usize,
    timeout: Duration,
) -> Result<()> {
    let devices = bdfs
        .iter()
        .map(|bdf| Device::find(bdf).with_context(|| format!("no sivshm device at {bdf}")))
        .collect::<Result<Vec<_>>>()?;
    // One bell per device: under IVSHMEM every worker's mailbox rings through the same one.
    let bells = devices.iter().map(Bell::new).collect::<Result<Vec<_>>>()?;
    let maps = windows
        .iter()
        .map(|w| {
            let d = &devices[w.device];
            match w.len {
                None => d.map(),
                Some(len) => d.map_range(w.offset, len),
            }
            .with_context(|| format!("mmap of {:?} bytes at {}", w.len, w.offset))
        })
        .collect::<Result<Vec<_>>>()?;
    let boxes = maps
        .iter()
        .zip(windows)
        .map(|(m, w)| Mailbox::new(m, Side::Manager, bells[w.device].as_ref()))
        .collect::<Result<Vec<_>>>()?;
    for (i, (w, b)) in windows.iter().zip(&boxes).enumerate() {
        let d = &devices[w.device];
        println!(
            "manager: worker {i} on /dev/sivshm{} ({}) at offset {} MiB, {} MiB",
            d.info().index,
            d.info().pci,
            w.offset >> 20,
            (b.capacity() as u64 + 4096) >> 20
        );
        if bytes > b.capacity() {
            bail!(
                "--bytes {bytes} exceeds worker {i}'s capacity {}",
                b.capacity()
            );
        }
        b.open();
    }
    for (i, b) in boxes.iter().enumerate() {
        b.wait_worker(timeout)
            .with_context(|| format!("worker {i}"))?;
    }
    let start = Instant::now();
    let mut verified = 0u64;
    for round in 1..=rounds {
        let mut sums = Vec::with_capacity(boxes.len());
        for (i, b) in boxes.iter().enumerate() {
            let data = payload(i, round, bytes);
            let sum = fnv1a(&data);
            b.send(round, &data, sum)?;
            sums.push(sum);
        }
        for (i, (b, sum)) in boxes.iter().zip(sums).enumerate() {
            let got = b
                .wait_result(round, timeout)
                .with_context(|| format!("worker {i}"))?;
            if got != sum {
                bail!("worker {i}, round {round}: checksum {got:016x}, sent {sum:016x}");
            }
            verified += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    for b in &boxes {
        b.close()?;
    }
    let wakeups: u64 = bells.iter().flatten().map(|b| b.wakeups()).sum();
    let mode = if boxes.iter().all(|b| b.bell().is_some()) {
        "doorbells"
    } else {
        "polling"
    };
    let total = bytes as u64 * rounds * boxes.len() as u64;
    println!(
        "manager: {verified} of {} batches verified, {:.1} MiB in {secs:.2} s ({:.1} MiB/s), \
         {mode}, {wakeups} wake-ups",
        rounds * boxes.len() as u64,
        total as f64 / (1 << 20) as f64,
        total as f64 / (1 << 20) as f64 / secs
    );
    Ok(())
}

fn worker(
    device: &str,
    only_device: bool,
    window: Option<(u64, usize)>,
    timeout: Duration,
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
    let map = match window {
        None => dev.map(),
        Some((offset, len)) => dev.map_range(offset, len),
    }
    .context("mmap")?;
    let bell = Bell::new(&dev)?;
    let mb = Mailbox::new(&map, Side::Worker, bell.as_ref())?;
    mb.wait_open(timeout)?;
    let (mut last, mut rounds, mut bytes, mut buf) = (0, 0u64, 0u64, Vec::new());
    while let Some((round, sum)) = mb.receive(last, &mut buf, timeout)? {
        let mine = fnv1a(&buf);
        if mine != sum {
            println!("worker: round {round}: checksum {mine:016x}, manager says {sum:016x}");
        }
        mb.reply(round, mine)?;
        last = round;
        rounds += 1;
        bytes += buf.len() as u64;
    }
    match mb.bell() {
        Some(b) => println!(
            "worker: received {rounds} rounds, {bytes} bytes; woken {} times by the doorbell",
            b.wakeups()
        ),
        None => println!("worker: received {rounds} rounds, {bytes} bytes (polling)"),
    }
    Ok(())
}
