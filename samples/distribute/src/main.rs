//! `sivshm-distribute`: a data manager hands data to N workers, each through its own sivshm
//! segment, and verifies what every worker computed from it.
//!
//! In the manager VM: `sivshm-distribute manager --workers BDF[,BDF...]` (the PCI addresses
//! of the devices that serve worker 0, 1, ...). In each worker VM: `sivshm-distribute worker`
//! (its one device). With doorbell devices each side rings the other and sleeps on an
//! eventfd; with plain ones both poll the header.

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
        /// PCI addresses of the devices serving worker 0, 1, ..., comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        workers: Vec<String>,
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
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().role {
        Role::Manager {
            workers,
            rounds,
            bytes,
            timeout,
        } => manager(&workers, rounds, bytes, Duration::from_secs(timeout)),
        Role::Worker {
            device,
            only_device,
            timeout,
        } => worker(&device, only_device, Duration::from_secs(timeout)),
    }
}

fn manager(workers: &[String], rounds: u64, bytes: usize, timeout: Duration) -> Result<()> {
    let devices = workers
        .iter()
        .map(|bdf| Device::find(bdf).with_context(|| format!("no sivshm device at {bdf}")))
        .collect::<Result<Vec<_>>>()?;
    let maps = devices
        .iter()
        .map(|d| d.map().context("mmap"))
        .collect::<Result<Vec<_>>>()?;
    let boxes = maps
        .iter()
        .zip(&devices)
        .map(|(m, d)| Mailbox::new(m, Side::Manager, Bell::new(d)?))
        .collect::<Result<Vec<_>>>()?;
    for (i, (d, b)) in devices.iter().zip(&boxes).enumerate() {
        println!(
            "manager: worker {i} on /dev/sivshm{} ({}), segment {} MiB",
            d.info().index,
            d.info().pci,
            d.info().shm_size >> 20
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
    let wakeups: u64 = boxes
        .iter()
        .filter_map(|b| b.bell().map(|b| b.wakeups()))
        .sum();
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

fn worker(device: &str, only_device: bool, timeout: Duration) -> Result<()> {
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
    let map = dev.map().context("mmap")?;
    let mb = Mailbox::new(&map, Side::Worker, Bell::new(&dev)?)?;
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
