//! resize: a worker's segment grown and shrunk while the job runs. The manager's guest asks
//! on its console for each new segment (`SIVSHM-RESIZE add BDF BYTES`) and gives each old one
//! back (`SIVSHM-RESIZE del BDF`); the host makes the segment and hot-plugs a device of that
//! size into both VMs, or unplugs the old one from both, over QMP. The guests move the
//! channel over (`sivshm::channel::Movable`) with batches in flight: every batch must arrive
//! once and in order, and check out.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sivshm_host::hotplug::{HotDevice, Monitor};
use sivshm_host::pci::PciSlot;
use sivshm_host::protocol::{setup_messages, PeerVectors};
use sivshm_host::segments;

use super::results::{check, pairs, Expect};
use super::{CaseResult, Ran, Suite};
use crate::qemu::Vm;
use crate::setup_socket::{chardev_id, SetupSocket};

/// The two slots the worker's device alternates between, in both VMs (behind bridge 0,
/// whose window keeps the shared memory write-back).
const SLOTS: [PciSlot; 2] = [PciSlot::behind(0, 1), PciSlot::behind(0, 2)];
/// The sizes the guest may ask for.
const MIN: u64 = 64 << 10;
const MAX: u64 = 4 << 20;
/// The script: moves after every `EVERY` batches, to these sizes (KiB): grow, shrink, grow.
const EVERY: u64 = 96;
const SIZES: &str = "256,64,512";
const MOVES: u64 = 3;
/// The load: 2 cycles of 8 bursts of 256 KiB (16 KiB batches) and 64 single 1 KiB batches.
const LOAD: &str = "--cycles 2 --bursts 8 --burst-kib 256";
const BATCHES: u64 = 2 * (8 * 16 + 64);

/// One generation of the worker's segment: the segment, its eventfds, and its device in
/// each VM.
struct Generation {
    _segment: File,
    _ends: (PeerVectors, PeerVectors),
    devices: [HotDevice; 2],
    _sockets: [SetupSocket; 2],
}

/// A request of the guest's, checked (it is untrusted input): the slot, and the size of the
/// segment to add there (`None`: remove the one there).
fn parse(line: &str) -> Result<(usize, Option<u64>)> {
    let mut w = line.split_whitespace();
    let (op, bdf) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
    let Some(slot) = SLOTS.iter().position(|s| s.bdf() == bdf) else {
        bail!("the guest asked to {op} {bdf:?}, not one of the worker's slots");
    };
    match (op, w.next().map(str::parse::<u64>)) {
        ("add", Some(Ok(b))) if b.is_power_of_two() && (MIN..=MAX).contains(&b) => {
            Ok((slot, Some(b)))
        }
        ("add", _) => bail!("the guest asked for a segment of a size out of bounds: {line:?}"),
        ("del", None) => Ok((slot, None)),
        _ => bail!("unknown request {line:?}"),
    }
}

/// Makes generation `g` of `bytes` at `slot` and plugs it into both VMs (`m`: the manager's
/// monitor, then the worker's).
fn add(g: u32, slot: usize, bytes: u64, dir: &Path, m: &mut [Monitor; 2]) -> Result<Generation> {
    let segment = segments::create(&format!("resize-{g}"), bytes)?;
    let (manager, worker) = (PeerVectors::new(0, 1)?, PeerVectors::new(1, 1)?);
    let mut sockets = Vec::new();
    let mut devices = Vec::new();
    for (vm, (own, peer)) in [(&manager, &worker), (&worker, &manager)]
        .into_iter()
        .enumerate()
    {
        let id = format!("gen{g}-{}", ["manager", "worker"][vm]);
        let mut socket = SetupSocket::bind(&dir.join(format!("{id}.sock")))?;
        let d = HotDevice {
            chardev: chardev_id(&id),
            socket: socket.path().to_path_buf(),
            id,
            slot: SLOTS[slot],
            vectors: 1,
        };
        let msgs = setup_messages(own, segment.as_fd(), &[peer])?;
        m[vm].add(&d, || socket.serve(&msgs, Duration::from_secs(10)))?;
        sockets.push(socket);
        devices.push(d);
    }
    let (Ok(devices), Ok(sockets)) = (devices.try_into(), sockets.try_into()) else {
        unreachable!("one of each per VM");
    };
    Ok(Generation {
        _segment: segment,
        _ends: (manager, worker),
        devices,
        _sockets: sockets,
    })
}

pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let dir = tempfile::tempdir().context("a directory for the QMP and setup sockets")?;
    let slots = SLOTS.map(|s| s.bdf());
    let manager = format!(
        "sivshm-distribute adaptive-manager --slots {},{} {LOAD} --every {EVERY} --sizes \
         {SIZES} --start-kib 128 --timeout 120",
        slots[0], slots[1]
    );
    let worker = "sivshm-distribute adaptive-worker --timeout 120";
    let qmp = [
        dir.path().join("manager.qmp"),
        dir.path().join("worker.qmp"),
    ];
    let vms = [
        Vm::new("manager", &manager).bridges(1).qmp(&qmp[0]),
        Vm::new("worker", worker).bridges(1).qmp(&qmp[1]),
    ];
    let deadline = Instant::now() + s.timeout;
    let mut running = vms
        .iter()
        .map(|vm| s.machine.spawn(vm, s.logdir))
        .collect::<Result<Vec<_>>>()?;
    let mut monitors: Option<[Monitor; 2]> = None;
    let mut live: BTreeMap<usize, Generation> = BTreeMap::new();
    let (mut adds, mut dels, mut g, mut offset) = (0u64, 0u64, 0u32, 0usize);
    let mut errors = Vec::new();
    loop {
        crate::interrupt::check()?;
        let done = running[0].exited()?;
        let text = crate::console::new_lines(running[0].log_path(), &mut offset);
        for line in text.lines() {
            let Some(at) = line.find("SIVSHM-RESIZE ") else {
                continue;
            };
            let r = parse(&line[at + "SIVSHM-RESIZE ".len()..]).and_then(|(slot, bytes)| {
                let m = match monitors.as_mut() {
                    Some(m) => m,
                    None => monitors.insert([
                        Monitor::connect_to(&qmp[0], "the manager")?,
                        Monitor::connect_to(&qmp[1], "the worker")?,
                    ]),
                };
                match bytes {
                    Some(b) if !live.contains_key(&slot) => {
                        live.insert(slot, add(g, slot, b, dir.path(), m)?);
                        (g, adds) = (g + 1, adds + 1);
                    }
                    Some(_) => bail!("the guest asked for a second device at slot {slot}"),
                    None => {
                        let old = live.remove(&slot).context("no device there to remove")?;
                        // The worker's first: once the manager's is gone, the manager
                        // knows both are (it waits for that before it ends the run).
                        for (vm, d) in old.devices.iter().enumerate().rev() {
                            m[vm].remove(&d.id, &d.chardev, Duration::from_secs(60))?;
                        }
                        dels += 1;
                    }
                }
                Ok(())
            });
            if let Err(e) = r {
                eprintln!("# resize/host: {e:#}");
                errors.push(format!("{e:#}"));
            }
        }
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let worker = running.pop().expect("two VMs").wait(deadline)?;
    let manager = running.pop().expect("two VMs").wait(deadline)?;
    eprintln!("# resize/host: {adds} segments plugged and {dels} unplugged over QMP");
    let mut host = vec![CaseResult {
        name: format!(
            "resize/host: the first segment and {MOVES} resized ones plugged into both VMs, \
             {MOVES} old ones unplugged from both, as the guest asked"
        ),
        passed: errors.is_empty() && adds == MOVES + 1 && dels == MOVES,
    }];
    let finished = vec![manager, worker];
    let expect = [
        Expect {
            vm: "manager".into(),
            program: "adaptive-manager",
            pick: pairs(&[("mode", "script")]),
            want: pairs(&[
                ("batches", BATCHES),
                ("verified", BATCHES),
                ("grows", 2),
                ("shrinks", 1),
            ]),
            what: format!(
                "the manager moved the channel {MOVES} times under load and verified all \
                 {BATCHES} batches in order"
            ),
        },
        Expect {
            vm: "worker".into(),
            program: "adaptive-worker",
            pick: pairs(&[("impl", "rust")]),
            want: pairs(&[("rounds", BATCHES), ("mismatched", 0), ("moves", MOVES)]),
            what: format!(
                "the worker followed every move and received each of the {BATCHES} batches \
                 once, in order, intact"
            ),
        },
    ];
    host.extend(check("resize", &finished, &expect));
    Ok(Ran {
        host,
        ..Ran::plain(finished)
    })
}
