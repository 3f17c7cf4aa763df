//! `sivshm-isolation`: what a rogue worker can do to an honest one, run in guests.
//!
//! Three VMs: a manager, an honest worker (the victim) and a rogue worker. The manager puts a
//! batch in each worker's slot, then lets the rogue attack while the victim watches:
//!
//! 1. the rogue looks at how much memory its device gives it, maps beyond its own slot,
//!    searches everything it can map for the victim's batch, overwrites it where found, and
//!    rings every peer id but the manager's on every vector;
//! 2. the victim counts the interrupts it gets meanwhile and checks its batch afterwards.
//!
//! `--expect isolated` (SIVSHM: a segment and a doorbell channel per worker) asserts that every
//! attack fails; `--expect exposed` (IVSHMEM: one region for all, a central server wiring every
//! peer to every peer) asserts that every attack succeeds, which is what that design allows.
//! Either way a result that contradicts the expectation is a failed TAP line. The manager only
//! ever polls, so every interrupt the victim counts during the attack is the rogue's.
//!
//! A slot is given as `--slot OFFSET` into the VM's one device (`/dev/sivshm0`) and
//! `--slot-size BYTES`; the manager names each worker's slot as `BDF@OFFSET`.

mod slot;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use sivshm::Device;

use slot::{batch, marker, Phase, Slot, State, DATA};

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Expect {
    /// SIVSHM: every attack must fail.
    Isolated,
    /// IVSHMEM: every attack must succeed.
    Exposed,
}

#[derive(Subcommand)]
enum Role {
    /// Puts a batch in both slots and runs the phases.
    Manager {
        /// The victim's slot: PCI address of the device, `@`, offset.
        #[arg(long)]
        victim: String,
        /// The rogue's slot, likewise.
        #[arg(long)]
        rogue: String,
        #[arg(long)]
        slot_size: usize,
        /// Makes the batches differ from run to run.
        #[arg(long)]
        nonce: u64,
        #[arg(long, default_value_t = 65536)]
        batch_bytes: usize,
        #[arg(long, default_value_t = 240)]
        timeout: u64,
    },
    /// The honest worker: checks its batch, watches for interrupts during the attack.
    Victim {
        #[arg(long)]
        slot: usize,
        #[arg(long)]
        slot_size: usize,
        #[arg(long, value_enum)]
        expect: Expect,
        #[arg(long, default_value_t = 240)]
        timeout: u64,
    },
    /// The rogue worker: attacks worker `--victim-index`.
    Rogue {
        #[arg(long)]
        slot: usize,
        #[arg(long)]
        slot_size: usize,
        #[arg(long)]
        victim_index: usize,
        #[arg(long, value_enum)]
        expect: Expect,
        #[arg(long, default_value_t = 240)]
        timeout: u64,
    },
}

/// Top-level TAP output.
struct Tap {
    next: usize,
    failed: usize,
}

impl Tap {
    fn plan(n: usize) -> Self {
        println!("TAP version 13\n1..{n}");
        Tap { next: 1, failed: 0 }
    }

    fn check(&mut self, ok: bool, name: &str) {
        println!("{}ok {} {name}", if ok { "" } else { "not " }, self.next);
        self.next += 1;
        self.failed += usize::from(!ok);
    }

    fn done(self) -> Result<()> {
        match self.failed {
            0 => Ok(()),
            n => bail!("{n} check(s) failed"),
        }
    }
}

fn main() -> Result<()> {
    match Cli::parse().role {
        Role::Manager {
            victim,
            rogue,
            slot_size,
            nonce,
            batch_bytes,
            timeout,
        } => manager(
            &victim,
            &rogue,
            slot_size,
            nonce,
            batch_bytes,
            secs(timeout),
        ),
        Role::Victim {
            slot,
            slot_size,
            expect,
            timeout,
        } => victim(slot, slot_size, expect, secs(timeout)),
        Role::Rogue {
            slot,
            slot_size,
            victim_index,
            expect,
            timeout,
        } => rogue(slot, slot_size, victim_index, expect, secs(timeout)),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `BDF@OFFSET`.
fn parse_slot(spec: &str) -> Result<(String, usize)> {
    let (bdf, off) = spec
        .split_once('@')
        .with_context(|| format!("slot {spec:?} is not BDF@OFFSET"))?;
    Ok((bdf.to_string(), off.parse().context("slot offset")?))
}

fn manager(
    victim: &str,
    rogue: &str,
    slot_size: usize,
    nonce: u64,
    batch_bytes: usize,
    timeout: Duration,
) -> Result<()> {
    let mut tap = Tap::plan(1);
    let (vbdf, voff) = parse_slot(victim)?;
    let (rbdf, roff) = parse_slot(rogue)?;
    let vdev = Device::find(&vbdf).with_context(|| format!("no sivshm device at {vbdf}"))?;
    let rdev = Device::find(&rbdf).with_context(|| format!("no sivshm device at {rbdf}"))?;
    let vmap = vdev.map().context("mapping the victim's device")?;
    let rmap = rdev.map().context("mapping the rogue's device")?;
    let vslot = Slot::new(&vmap, voff, slot_size)?;
    let rslot = Slot::new(&rmap, roff, slot_size)?;
    // Worker 0 is the victim, worker 1 the rogue.
    vslot.publish(&batch(0, nonce, batch_bytes), vdev.info().peer_id)?;
    rslot.publish(&batch(1, nonce, batch_bytes), rdev.info().peer_id)?;
    let run = || -> Result<()> {
        vslot.wait_state(State::Ready, timeout).context("victim")?;
        rslot.wait_state(State::Ready, timeout).context("rogue")?;
        vslot.set_phase(Phase::Watch);
        vslot
            .wait_state(State::Watching, timeout)
            .context("victim")?;
        rslot.set_phase(Phase::Attack);
        rslot
            .wait_state(State::Attacked, timeout)
            .context("rogue")?;
        vslot.set_phase(Phase::Check);
        vslot.wait_state(State::Checked, timeout).context("victim")
    };
    let r = run();
    if let Err(e) = &r {
        println!("# manager: {e:#}");
    }
    tap.check(r.is_ok(), "manager: both workers went through every phase");
    tap.done()
}

/// The VM's one device, and its slot.
fn own_device(slot: usize, slot_size: usize) -> Result<(Device, sivshm::Mapping)> {
    let dev = Device::open("/dev/sivshm0").context("opening /dev/sivshm0")?;
    let map = dev
        .map_range(slot as u64, slot_size)
        .context("mapping the own slot")?;
    Ok((dev, map))
}

fn victim(slot: usize, slot_size: usize, expect: Expect, timeout: Duration) -> Result<()> {
    let mut tap = Tap::plan(3);
    let (dev, map) = own_device(slot, slot_size)?;
    let s = Slot::new(&map, 0, slot_size)?;
    let irq = dev
        .bind_eventfd(0)
        .context("binding an eventfd to vector 0")?;
    s.wait_phase(Phase::Batch, timeout)?;
    s.announce(dev.info().peer_id);
    tap.check(
        s.batch()
            .is_some_and(|(b, ok)| ok && b.starts_with(&marker(0))),
        "victim: its batch arrived intact",
    );
    s.set_state(State::Ready);
    s.wait_phase(Phase::Watch, timeout)?;
    // Whatever came before the attack does not count.
    irq.take().context("eventfd")?;
    s.set_state(State::Watching);
    s.wait_phase(Phase::Check, timeout)?;
    // Rings are delivered asynchronously (the rogue's QEMU signals an eventfd that ours
    // turns into an MSI-X message): give the last ones time to arrive.
    std::thread::sleep(Duration::from_secs(1));
    let interrupts = irq.take().context("eventfd")?;
    let intact = s.batch().is_some_and(|(_, ok)| ok);
    println!("# victim: {interrupts} interrupt(s) during the attack; batch intact: {intact}");
    match expect {
        Expect::Isolated => {
            tap.check(
                intact,
                "isolated: the victim's batch is intact after the attack",
            );
            tap.check(
                interrupts == 0,
                "isolated: no interrupt reached the victim during the rogue's ring storm",
            );
        }
        Expect::Exposed => {
            tap.check(!intact, "exposed: the rogue overwrote the victim's batch");
            tap.check(
                interrupts > 0,
                "exposed: the rogue's rings interrupted the victim",
            );
        }
    }
    s.set_state(State::Checked);
    tap.done()
}

fn rogue(
    slot: usize,
    slot_size: usize,
    victim_index: usize,
    expect: Expect,
    timeout: Duration,
) -> Result<()> {
    let mut tap = Tap::plan(6);
    let devices = Device::list();
    let (dev, map) = own_device(slot, slot_size)?;
    let s = Slot::new(&map, 0, slot_size)?;
    s.wait_phase(Phase::Batch, timeout)?;
    s.announce(dev.info().peer_id);
    s.set_state(State::Ready);
    s.wait_phase(Phase::Attack, timeout)?;
    let exposed = expect == Expect::Exposed;

    // Both designs give a worker one device; what differs is what the device holds.
    tap.check(devices.len() == 1, "rogue: sees exactly one sivshm device");
    let size = dev.info().shm_size;
    println!("# rogue: device of {size} bytes, own slot {slot_size} bytes at {slot}");
    let spans_others = size > slot_size as u64;
    tap.check(
        spans_others == exposed,
        if exposed {
            "exposed: the rogue's device spans other workers' slots"
        } else {
            "isolated: the rogue's device holds its own segment and nothing else"
        },
    );

    // Map what lies after the own slot (or, for the last slot, before it).
    let other = if slot == 0 { slot_size } else { 0 };
    let beyond = dev.map_range(other as u64, slot_size);
    if let Err(e) = &beyond {
        println!("# rogue: mmap of {slot_size} bytes at {other}: {e}");
    }
    tap.check(
        if exposed {
            beyond.is_ok()
        } else {
            beyond.as_ref().err() == Some(&rustix::io::Errno::INVAL)
        },
        if exposed {
            "exposed: the rogue maps memory outside its own slot"
        } else {
            "isolated: mmap outside the rogue's segment fails with EINVAL"
        },
    );

    // Search everything the device lets us map for the victim's batch.
    let whole = dev.map().context("mapping the whole device")?;
    let found = find(&whole, &marker(victim_index));
    println!("# rogue: victim's batch found at {found:?}");
    let read_it = found.is_some_and(|at| {
        at >= DATA
            && Slot::new(&whole, at - DATA, slot_size).is_ok_and(|v| {
                v.batch()
                    .is_some_and(|(b, ok)| ok && b.starts_with(&marker(victim_index)))
            })
    });
    tap.check(
        read_it == exposed,
        if exposed {
            "exposed: the rogue reads the victim's batch, checksum and all"
        } else {
            "isolated: the victim's batch appears nowhere in the rogue's memory"
        },
    );

    // Overwrite it where found; scribble over everything we can map otherwise.
    let overwritten = match found {
        Some(at) => {
            let junk = vec![0xa5; 4096];
            let at = at + marker(victim_index).len();
            whole.write(at, &junk).is_ok() && {
                let mut back = vec![0; junk.len()];
                whole.read(at, &mut back).is_ok() && back == junk
            }
        }
        None => {
            // Everything but the own header, which tells the manager where we are.
            let junk = vec![0x5a; 4096];
            let mut off = 0;
            while off < whole.len() {
                let n = junk.len().min(whole.len() - off);
                if !(slot..slot + DATA).contains(&off) {
                    whole.write(off, &junk[..n])?;
                }
                off += n;
            }
            false
        }
    };
    tap.check(
        overwritten == exposed,
        if exposed {
            "exposed: the rogue's write lands in the victim's batch"
        } else {
            "isolated: the rogue has nowhere to write into the victim's batch"
        },
    );

    // Ring everybody but the manager (whose id the manager announced in our slot) on every
    // vector.
    let manager = s.manager_id();
    let vectors = u32::from(dev.info().nr_vectors).max(1);
    let (mut rung, mut refused) = (0u64, 0u64);
    for peer in 0..=u16::MAX as u32 {
        if Some(peer) == manager {
            continue;
        }
        for v in 0..vectors {
            match dev.ring(peer, v) {
                Ok(()) => rung += 1,
                Err(_) => refused += 1,
            }
        }
    }
    println!("# rogue: {rung} rings sent, {refused} refused (manager is peer {manager:?})");
    tap.check(
        refused == 0 && rung == 65535 * u64::from(vectors),
        "rogue: rang every peer id but the manager's on every vector",
    );
    s.set_state(State::Attacked);
    tap.done()
}

/// Offset of the first occurrence of `needle` in `m`, read in chunks through volatile copies.
fn find(m: &sivshm::Mapping, needle: &[u8]) -> Option<usize> {
    const CHUNK: usize = 1 << 16;
    let mut buf = vec![0; CHUNK + needle.len()];
    let mut off = 0;
    while off < m.len() {
        let n = (CHUNK + needle.len()).min(m.len() - off);
        m.read(off, &mut buf[..n]).ok()?;
        if let Some(i) = buf[..n].windows(needle.len()).position(|w| w == needle) {
            return Some(off + i);
        }
        off += CHUNK;
    }
    None
}
