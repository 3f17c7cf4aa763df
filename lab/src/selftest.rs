//! The in-guest test suite: which VMs boot with which devices, and what counts as a pass.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::pair::channel;
use crate::console::{self, Outcome};
use crate::hotplug::{HotDevice, Monitor, SetupSocket};
use sivshm_host::protocol::{prefilled_socket, setup_messages, PeerVectors};
use crate::qemu::{run_all, unique_value, Device, Finished, Machine, Running, Vm};
use sivshm_host::pci::{bridges_for, manager_slot, PciSlot};
use sivshm_host::segments;
use crate::layout::{Distribute, Layout, Roles, Topology};

/// One reported result. Every scenario is built to run all of its tests, so there is no
/// "skipped": a skip is a failure.
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
}

pub struct Suite<'a> {
    pub machine: &'a Machine,
    pub logdir: &'a Path,
    pub timeout: Duration,
    pub verbose: bool,
    /// Add/remove cycles of the hot-plug scenario's churn test.
    pub churn: u32,
    pub stress: Stress,
}

/// The budgets of the adversarial scenarios: short in CI, long from `scripts/stress.sh`.
#[derive(Clone, Debug)]
pub struct Stress {
    /// Operations of the in-guest fuzzer (over all its threads).
    pub fuzz_ops: u64,
    /// Seconds of guest time the fuzzer may take at most.
    pub fuzz_seconds: u64,
    /// Unbind/bind cycles of the life-cycle scenario.
    pub cycles: u64,
    /// The fuzzer's seed; None: a new one each run (printed in the guest's log).
    pub seed: Option<u64>,
    /// Seconds the hostile peer storms.
    pub storm_seconds: u64,
}

impl Default for Stress {
    /// The CI budget: a few thousand operations, 50 cycles, a 15 s storm.
    fn default() -> Self {
        Stress {
            fuzz_ops: 3000,
            fuzz_seconds: 15,
            cycles: 50,
            seed: None,
            storm_seconds: 15,
        }
    }
}

impl Suite<'_> {
    /// Runs every scenario whose name contains `filter`.
    pub fn run(&self, filter: &str) -> Result<Vec<CaseResult>> {
        type Scenario = fn(&Suite<'_>) -> Result<Vec<Finished>>;
        // (name, runner, whether its guests print TAP)
        let scenarios: [(&str, Scenario, bool); 10] = [
            ("single-vm", single_vm, true),
            ("two-vm-plain", two_vm_plain, true),
            ("two-vm-doorbell", two_vm_doorbell, true),
            ("distribute", distribute, false),
            ("distribute-ivshmem", distribute_ivshmem, false),
            ("isolation-sivshm", isolation_sivshm, true),
            ("isolation-ivshmem", isolation_ivshmem, true),
            ("network", network, false),
            ("stress-fuzz", stress_fuzz, true),
            ("stress-hostile-peer", stress_hostile_peer, false),
        ];
        let mut all = Vec::new();
        for (name, f, tap) in scenarios {
            if !name.contains(filter) {
                continue;
            }
            eprintln!("# scenario {name}");
            let finished = f(self)?;
            all.extend(self.judge(name, &finished, tap));
        }
        // Scenarios the host drives while the guests run: their guests (TAP or not) and what
        // the host checked itself.
        if "hotplug".contains(filter) {
            eprintln!("# scenario hotplug");
            let h = hotplug(self)?;
            all.extend(self.judge("hotplug", &h.tap, true));
            all.extend(self.judge("hotplug", &h.plain, false));
            all.extend(h.host);
        }
        Ok(all)
    }

    /// Turns guests' logs into results: every TAP line, plus per guest whether it ran to the
    /// end and whether its kernel log is free of splats.
    fn judge(&self, scenario: &str, finished: &[Finished], tap: bool) -> Vec<CaseResult> {
        let mut out = Vec::new();
        for f in finished {
            let r = console::parse(&f.log);
            let prefix = format!("{scenario}/{}", f.name);
            let mut push = |name: String, passed: bool| {
                out.push(CaseResult { name, passed });
                passed
            };
            // Only a log that shows this boot's id is this boot's.
            let booted = r.booted && r.boot_id.as_deref() == Some(f.boot_id.as_str());
            let failed_tap = r.tap.iter().any(|t| t.outcome != Outcome::Pass);
            for t in &r.tap {
                push(format!("{prefix}/{}", t.name), t.outcome == Outcome::Pass);
            }
            // A TAP program's failures are reported one by one; anything else must exit 0.
            // A TAP program must also report every test it planned.
            let exited = !f.timed_out && (r.rc == Some(0) || (r.rc.is_some() && failed_tap));
            let planned = !tap || (r.plan.is_some() && r.plan == Some(r.tap.len()));
            let mut bad = !push(
                format!("{prefix}: booted, ran its command to success and powered off"),
                booted && exited && planned,
            );
            bad |= failed_tap;
            bad |= !push(
                format!("{prefix}: no oops, WARN, BUG or lockdep report"),
                // A guest that never booted proves nothing about its kernel log.
                booted && r.splats.is_empty(),
            );
            if f.memory.devices > 0 {
                let (ok, why) = memory_types_as_expected(&r, &f.memory);
                if !ok {
                    eprintln!("#   {prefix}: {why}");
                }
                bad |= !push(
                    format!(
                        "{prefix}: every sivshm device's memory is write-back (GET_INFO and \
                         pat_memtype_list agree){}",
                        if f.memory.in_hole {
                            ": no, it was placed in the uncached hole on purpose, and the \
                             driver says so and warns"
                        } else {
                            ""
                        }
                    ),
                    ok,
                );
            }
            if f.wants_kmemleak {
                let clean = r.kmemleak.as_ref().is_some_and(|l| l.is_empty());
                bad |= !push(
                    format!("{prefix}: kmemleak found no leak after the tests"),
                    clean,
                );
                for l in r.kmemleak.iter().flatten().take(20) {
                    eprintln!("#   kmemleak: {l}");
                }
            }
            if bad || self.verbose {
                eprintln!(
                    "# {prefix}: {} in {:.1} s, rc {:?}, {} of {:?} planned results, log {}",
                    if f.timed_out { "timed out" } else { "finished" },
                    f.elapsed.as_secs_f64(),
                    r.rc,
                    r.tap.len(),
                    r.plan,
                    f.log_path.display()
                );
                for s in &r.splats {
                    eprintln!("#   kernel: {s}");
                }
            }
            if bad {
                let lines: Vec<&str> = f.log.lines().collect();
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("#   | {line}");
                }
            }
        }
        out
    }
}

/// Whether the boot-time memory types of a guest's devices are what the scenario expects: one
/// line per device, driver and PAT agreeing, write-back except for the devices deliberately
/// placed in the uncached hole, which must be uncached-minus and warned about. Otherwise,
/// why not.
fn memory_types_as_expected(
    r: &console::Report,
    want: &crate::qemu::MemoryExpectation,
) -> (bool, String) {
    if r.mem_types.len() != want.devices {
        return (
            false,
            format!(
                "{} memory type line(s) for {} device(s)",
                r.mem_types.len(),
                want.devices
            ),
        );
    }
    for m in &r.mem_types {
        let hole = want.in_hole;
        let expected = if hole { "uncached-minus" } else { "write-back" };
        if m.driver != expected || m.pat != expected {
            return (
                false,
                format!(
                    "{} (BAR at {}): the driver says {}, the PAT {}; expected {expected}",
                    m.bdf, m.bar, m.driver, m.pat
                ),
            );
        }
        if hole != r.not_write_back_warnings.contains(&m.bdf) {
            return (
                false,
                format!(
                    "{}: the driver {} about its memory type",
                    m.bdf,
                    if hole { "did not warn" } else { "warned" }
                ),
            );
        }
    }
    (true, String::new())
}

/// The guests of a scenario, and what must stay open while they run.
struct Plan {
    vms: Vec<Vm>,
    /// Our ends of the chardev sockets: QEMU sees a closed one as a disconnected server.
    _keep: Vec<OwnedFd>,
}

impl Plan {
    fn run(self, s: &Suite<'_>) -> Result<Vec<Finished>> {
        run_all(s.machine, &self.vms, s.logdir, s.timeout)
    }
}

/// One guest with two devices: `ivshmem-plain` (512 MiB, twice the guest's RAM, so that
/// touching every page of a mapping after removal shows that the stand-in costs no memory per
/// page) and `ivshmem-doorbell` (1 MiB, peer id 3, wired by a prefilled socket): device
/// nodes, info, mmap, bad arguments, unbind and module reload; then the guest command
/// `sivshmctl` on both devices.
fn single_vm(s: &Suite<'_>) -> Result<Vec<Finished>> {
    single_vm_plan()?.run(s)
}

/// The plain device of single-vm: larger than the guest's 256 MiB of RAM.
const SINGLE_VM_PLAIN: u64 = 512 << 20;

fn single_vm_plan() -> Result<Plan> {
    let plain = segments::create("plain", SINGLE_VM_PLAIN)?;
    let doorbell_shm = segments::create("doorbell", 1 << 20)?;
    let own = PeerVectors::new(3, 2)?;
    let msgs = setup_messages(&own, doorbell_shm.as_fd(), &[])?;
    let (server_end, chardev) = prefilled_socket(&msgs)?;
    let plain = Device::Plain {
        slot: PciSlot::root(4),
        segment: plain,
        size: SINGLE_VM_PLAIN,
    };
    let doorbell = Device::Doorbell {
        slot: PciSlot::root(5),
        chardev,
        vectors: 2,
    };
    // What the guest must find: PCI address, size, peer id, vectors.
    let expect = format!(
        "{},{},none,0;{},{},{},2",
        plain.bdf(),
        SINGLE_VM_PLAIN,
        doorbell.bdf(),
        1 << 20,
        own.id
    );
    // The C sample runs after the kselftests, on both devices; then sivshmctl (its own TAP,
    // reading what the sample wrote); then the module must unload (before the kmemleak scan,
    // which so also covers the unload).
    let run = "sivshm_test && sivshm_hello /dev/sivshm0 && sivshm_hello /dev/sivshm1 \
               && sivshmctl_test.sh && rmmod sivshm && ! test -e /dev/sivshm0";
    // Two vCPUs: unbind, faults, release and interrupts race for real.
    let vm = Vm::new("vm", run)
        .smp(2)
        .env("SIVSHM_KMEMLEAK", "1")
        .env("SIVSHM_EXPECT", expect)
        .env("SIVSHM_LARGER_THAN_RAM", "1")
        .device(plain)
        .device(doorbell);
    // A guest whose one device is left in the firmware's uncached 32-bit hole: the driver must
    // report uncached-minus, as the PAT lists it, and warn (the judge checks both).
    let hole_seg = segments::create("hole", 1 << 20)?;
    let hole = Device::Plain {
        slot: PciSlot::root(4),
        segment: hole_seg,
        size: 1 << 20,
    };
    let hole_expect = format!("{},{},none,0", hole.bdf(), 1 << 20);
    let hole_vm = Vm::new(
        "hole",
        "sivshm_test -r dev.info_mem_type_is_what_the_pat_lists && rmmod sivshm \
         && ! test -e /dev/sivshm0",
    )
    .env("SIVSHM_KMEMLEAK", "1")
    .env("SIVSHM_EXPECT", hole_expect)
    .env("SIVSHM_EXPECT_MEMTYPE", "uncached-minus")
    .device(hole)
    .in_uncached_hole();
    Ok(Plan {
        vms: vec![vm, hole_vm],
        _keep: vec![server_end],
    })
}

/// Two guests on one `ivshmem-plain` segment: data written in one is read in the other.
fn two_vm_plain(s: &Suite<'_>) -> Result<Vec<Finished>> {
    two_vm_plain_plan()?.run(s)
}

fn two_vm_plain_plan() -> Result<Plan> {
    let size = 8 << 20;
    let seg = segments::create("shared", size)?;
    // Per run, so that a stale segment can never pass for this run's data.
    let nonce = format!("{:#x}", unique_value());
    let dev = |seg: &std::fs::File| -> Result<Device> {
        Ok(Device::Plain {
            slot: PciSlot::root(4),
            segment: seg.try_clone()?,
            size,
        })
    };
    // Both unload the module afterwards, before the kmemleak scan.
    let writer = Vm::new("writer", "sivshm_xvm writer && rmmod sivshm")
        .env("SIVSHM_KMEMLEAK", "1")
        .env("SIVSHM_NONCE", &nonce)
        .device(dev(&seg)?);
    let reader = Vm::new("reader", "sivshm_xvm reader && rmmod sivshm")
        .env("SIVSHM_KMEMLEAK", "1")
        .env("SIVSHM_NONCE", &nonce)
        .device(dev(&seg)?);
    Ok(Plan {
        vms: vec![writer, reader],
        _keep: Vec::new(),
    })
}

/// Two guests on one doorbell channel (4 vectors): each wakes the other on every vector, both
/// ring themselves, and one rings the other as fast as it can for a while.
fn two_vm_doorbell(s: &Suite<'_>) -> Result<Vec<Finished>> {
    two_vm_doorbell_plan()?.run(s)
}

fn two_vm_doorbell_plan() -> Result<Plan> {
    let seg = segments::create("channel", 1 << 20)?;
    let ch = channel(&seg, (0, PciSlot::root(4)), (1, PciSlot::root(4)), 4)?;
    // Both unload the module afterwards, before the kmemleak scan.
    // Two vCPUs: the receiver's interrupts arrive while its other CPU runs the test.
    let a = Vm::new("a", "sivshm_doorbell a && rmmod sivshm")
        .smp(2)
        .env("SIVSHM_KMEMLEAK", "1")
        .device(ch.a);
    let b = Vm::new("b", "sivshm_doorbell b && rmmod sivshm")
        .smp(2)
        .env("SIVSHM_KMEMLEAK", "1")
        .device(ch.b);
    Ok(Plan {
        vms: vec![a, b],
        _keep: ch._keep,
    })
}

/// A manager and two workers on their own segments: the manager hands each worker data and
/// checks what the worker computed from it; each worker sees exactly one device.
fn distribute(s: &Suite<'_>) -> Result<Vec<Finished>> {
    let roles = Distribute {
        peer_timeout_s: None,
        rounds: 16,
        bytes: 512 << 10,
    };
    Topology::new(2, 2 << 20, &roles)?.run(s.machine, s.logdir, s.timeout)
}

/// The same job on the IVSHMEM baseline: one region, a central server; data verified too.
fn distribute_ivshmem(s: &Suite<'_>) -> Result<Vec<Finished>> {
    let roles = Distribute {
        peer_timeout_s: None,
        rounds: 16,
        bytes: 512 << 10,
    };
    Topology::ivshmem(2, 2 << 20, &roles)?.run(s.machine, s.logdir, s.timeout)
}

/// Segment of each worker in the isolation scenarios.
const ISOLATION_SLOT: u64 = 1 << 20;

/// The `sivshm-isolation` roles: worker 0 is the victim, worker 1 the rogue. Under SIVSHM
/// (segments) every attack must fail; under IVSHMEM (one region) every attack must succeed.
struct Isolation {
    nonce: u64,
}

/// `isolated` or `exposed`, and where slot `i` starts in a worker's device (`i * stride`).
fn expectation(layout: &Layout) -> (&'static str, u64) {
    match layout {
        Layout::Segments => ("isolated", 0),
        Layout::Region { slot_size, .. } => ("exposed", *slot_size),
    }
}

impl Roles for Isolation {
    fn manager(&self, bdfs: &[String], layout: &Layout) -> String {
        // Under SIVSHM one device per worker; under IVSHMEM one region, slots by offset.
        let stride = expectation(layout).1;
        let at = |i: usize| format!("{}@{}", bdfs[i.min(bdfs.len() - 1)], i as u64 * stride);
        format!(
            "sivshm-isolation manager --victim {} --rogue {} --slot-size {ISOLATION_SLOT} \
             --nonce {}",
            at(0),
            at(1),
            self.nonce
        )
    }

    fn worker(&self, index: usize, layout: &Layout) -> String {
        let role = if index == 0 {
            "victim"
        } else {
            "rogue --victim-index 0"
        };
        let (expect, stride) = expectation(layout);
        format!(
            "sivshm-isolation {role} --slot {} --slot-size {ISOLATION_SLOT} --expect {expect}",
            index as u64 * stride,
        )
    }
}

/// A manager, an honest worker and a rogue, each worker on a segment and a doorbell channel
/// of its own: every attack of the rogue must fail.
fn isolation_sivshm(s: &Suite<'_>) -> Result<Vec<Finished>> {
    let roles = Isolation {
        nonce: unique_value(),
    };
    Topology::new(2, ISOLATION_SLOT, &roles)?.run(s.machine, s.logdir, s.timeout)
}

/// The same three VMs on IVSHMEM, one region and a central server: every attack of the rogue
/// must succeed, or the baseline would not be the one the comparison is about.
fn isolation_ivshmem(s: &Suite<'_>) -> Result<Vec<Finished>> {
    let roles = Isolation {
        nonce: unique_value(),
    };
    Topology::ivshmem(2, ISOLATION_SLOT, &roles)?.run(s.machine, s.logdir, s.timeout)
}

/// The network baseline works and the probes measure what they claim: a manager and a
/// worker with a sivshm channel and a virtio-net link; over both, `sivshm-probe` round trips
/// and streams tiny and mid-sized messages with every byte filled and checked (correctness
/// only: nothing is timed). The in-VM references run too.
struct NetworkCheck;

impl NetworkCheck {
    const PROBE: &str = "--latency-sizes 24,4096 --count 20 --warmup 2 \
                         --sizes 24,4096,65536 --messages 16 --verify --timeout 60";
}

impl Roles for NetworkCheck {
    fn manager(&self, _bdfs: &[String], _layout: &Layout) -> String {
        let peer = crate::net::worker_addr(0);
        let p = Self::PROBE;
        format!(
            "sivshm-probe suite --transport sivshm {p} \
             && ping -c 1 -w 30 {peer} \
             && sivshm-probe suite --transport tcp --connect {peer}:7777 {p} \
             && sivshm-probe latency --transport pipe --count 20 --verify \
             && sivshm-probe throughput --transport memcpy --sizes 24,65536 --messages 16"
        )
    }

    fn worker(&self, _index: usize, _layout: &Layout) -> String {
        "sivshm-probe serve --transport sivshm --timeout 60 \
         && sivshm-probe serve --transport tcp --listen 0.0.0.0:7777 --timeout 60"
            .to_string()
    }
}

fn network_plan() -> Result<Topology> {
    Topology::new(1, 2 << 20, &NetworkCheck)?.network()
}

fn network(s: &Suite<'_>) -> Result<Vec<Finished>> {
    network_plan()?.run(s.machine, s.logdir, s.timeout)
}

/// The hot-plugged worker's index: its channel sits behind the manager's first bridge.
const HOT_INDEX: usize = 24;

/// A manager with one worker channel at boot and one added and removed while it runs.
struct HotplugPlan {
    manager: Vm,
    /// Worker 0, booted with the manager: it carries data through every add and remove.
    cold: Vm,
    /// The worker whose channel is hot-plugged, booted once it is.
    late: Vm,
    hot: HotDevice,
    /// The manager's end of the hot channel: its eventfds, its peer's, the segment.
    own: PeerVectors,
    peer: PeerVectors,
    segment: File,
    qmp: std::path::PathBuf,
    dir: tempfile::TempDir,
    _keep: Vec<OwnedFd>,
}

fn hotplug_plan(churn: u32) -> Result<HotplugPlan> {
    let dir = tempfile::tempdir().context("a directory for the QMP and setup sockets")?;
    let seg0 = segments::create("hot-cold", 1 << 20)?;
    let ch = channel(
        &seg0,
        (0, manager_slot(0)?),
        (1, PciSlot::root(sivshm_host::pci::FIRST_SLOT)),
        1,
    )?;
    let cold_bdf = ch.a.bdf();
    let slot = manager_slot(HOT_INDEX)?;
    let hot = HotDevice {
        name: format!("worker{HOT_INDEX}"),
        socket: dir.path().join("hot.sock"),
        slot,
        vectors: 1,
    };
    let segment = segments::create("hot", 1 << 20)?;
    let own = PeerVectors::new(0, 1)?;
    let peer = PeerVectors::new(HOT_INDEX as u16 + 1, 1)?;
    let (late_keep, late_chardev) =
        prefilled_socket(&setup_messages(&peer, segment.as_fd(), &[&own])?)?;
    let hot_bdf = slot.bdf();
    // One manager process serves both workers the way a user's would: worker 0 from the
    // start, worker 1 (the hot channel) from when its device appears. Once worker 1 has 16
    // rounds verified its device is removed under that process, which must report the worker
    // gone and keep serving worker 0 (the library's Error::DeviceGone). Then the driver-level tests:
    // the channel appears again, is removed with raw live users, and churns; worker 0 is sent
    // paced batches all along, until told to stop, and every batch it was sent must check out.
    // (The kernel command line carries this, and the console shows that line: no double
    // quotes, so `wait_out`'s patterns are regular expressions without spaces, and the request
    // is spelt so that only its output, not the command line, reads as one.)
    let run = format!(
        "wait_out() {{ n=0; until grep -q $1 /tmp/manager.out; do n=$((n+1)); \
         if [ $n -gt $2 ]; then echo hotplug: the manager did not say $1 within $2 s; \
         return 1; fi; sleep 1; done; }}; \
         sivshm-distribute manager --workers {cold_bdf},{hot_bdf} --late --rounds 1000000 \
         --bytes 65536 --pace-ms 50 --progress 16 --stop-file /tmp/stop \
         >/tmp/manager.out 2>&1 & m=$!; \
         sivshm_hotplug -t appears \
         && wait_out worker.1:.16.rounds.verified 300 \
         && echo SIVSHM-HOT''PLUG del {hot_bdf} \
         && wait_out device.was.removed.after 120 \
         && sivshm_hotplug -t appears \
         && sivshm_hotplug -t unplug_with_live_users && sivshm_hotplug -t churn; rc=$?; \
         if kill -0 $m; then echo 'manager: worker 0 carried data through every add and remove'; \
         else echo 'manager: the manager process stopped before the churn ended'; rc=1; fi; \
         touch /tmp/stop; wait $m || rc=1; cat /tmp/manager.out; \
         grep -q 'worker 1 was removed (device gone)' /tmp/manager.out || rc=1; \
         test $rc = 0 && rmmod sivshm"
    );
    let qmp = dir.path().join("qmp.sock");
    let manager = Vm::new("manager", &run)
        .env("SIVSHM_KMEMLEAK", "1")
        .env("SIVSHM_HOTPLUG_BDF", &hot_bdf)
        .env("SIVSHM_CHURN", churn.to_string())
        .bridges(bridges_for(HOT_INDEX + 1))
        .qmp(&qmp)
        .device(ch.a);
    let worker = "sivshm-distribute worker --only-device --timeout 600";
    let cold = Vm::new("worker0", worker).device(ch.b);
    // Its manager leaves when the device is removed: that ends its run.
    let late_worker = format!("{worker} --until-manager-leaves");
    let late = Vm::new(&format!("worker{HOT_INDEX}"), &late_worker).device(Device::Doorbell {
        slot: PciSlot::root(sivshm_host::pci::FIRST_SLOT),
        chardev: late_chardev,
        vectors: 1,
    });
    let mut keep = ch._keep;
    keep.push(late_keep);
    Ok(HotplugPlan {
        manager,
        cold,
        late,
        hot,
        own,
        peer,
        segment,
        qmp,
        dir,
        _keep: keep,
    })
}

/// What the hot-plug scenario produced.
struct Hotplug {
    /// Guests whose command prints TAP (the manager), and the others (the workers).
    tap: Vec<Finished>,
    plain: Vec<Finished>,
    /// What the host checked over QMP.
    host: Vec<CaseResult>,
}

/// Hot-plug, hot-unplug with live users, and churn: the manager's guest asks for each add
/// and remove on its console (`sivshm_hotplug`) and the host carries it out over QMP; the
/// first add also boots the worker at the other end, and the host tries the bad inputs on
/// the running manager.
fn hotplug(s: &Suite<'_>) -> Result<Hotplug> {
    let p = hotplug_plan(s.churn)?;
    let mut setup = SetupSocket::bind(&p.hot.socket)?;
    let deadline = Instant::now() + s.timeout;
    let mut manager = s.machine.spawn(&p.manager, s.logdir)?;
    let cold = s.machine.spawn(&p.cold, s.logdir)?;
    let mut late: Option<Running> = None;
    let mut monitor: Option<Monitor> = None;
    let mut host = Vec::new();
    let mut errors = Vec::new();
    let (mut adds, mut removes, mut offset) = (0u32, 0u32, 0usize);
    let prefix = "hotplug/host";
    loop {
        crate::interrupt::check()?;
        let done = manager.exited()?;
        let log = std::fs::read(manager.log_path()).unwrap_or_default();
        let end = log[offset..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(offset, |i| offset + i + 1);
        let text = String::from_utf8_lossy(&log[offset..end]).into_owned();
        offset = end;
        for line in text.lines() {
            let Some(at) = line.find("SIVSHM-HOTPLUG ") else {
                continue;
            };
            let mut w = line[at + "SIVSHM-HOTPLUG ".len()..].split_whitespace();
            let (op, bdf) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            if bdf != p.hot.slot.bdf() {
                errors.push(format!(
                    "the guest asked to {op} {bdf}, not the hot channel"
                ));
                continue;
            }
            let m = match monitor.as_mut() {
                Some(m) => m,
                None => match Monitor::connect(&p.qmp) {
                    Ok(m) => monitor.insert(m),
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        continue;
                    }
                },
            };
            let r = match op {
                "add" => {
                    let msgs = setup_messages(&p.own, p.segment.as_fd(), &[&p.peer])?;
                    m.add(&p.hot, || setup.serve(&msgs, Duration::from_secs(10)))
                        .map(|()| adds += 1)
                }
                "del" => m
                    .remove(&p.hot.name, Duration::from_secs(60))
                    .map(|()| removes += 1),
                _ => Err(anyhow::anyhow!("unknown request {line:?}")),
            };
            if let Err(e) = r {
                eprintln!("# {prefix}: {op} {bdf}: {e:#}");
                errors.push(format!("{op}: {e:#}"));
            }
            if op == "add" && late.is_none() {
                late = Some(s.machine.spawn(&p.late, s.logdir)?);
                host.extend(bad_input(m, &p)?);
            }
        }
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for e in &errors {
        eprintln!("# {prefix}: {e}");
    }
    eprintln!("# {prefix}: {adds} adds and {removes} removes over QMP");
    host.push(CaseResult {
        name: format!("{prefix}: every add and remove the guest asked for was done over QMP"),
        passed: errors.is_empty() && adds > 0 && adds == removes,
    });
    host.push(CaseResult {
        name: format!("{prefix}: the hot-plugged worker's VM was started"),
        passed: late.is_some(),
    });
    let mut plain = vec![cold.wait(deadline)?];
    if let Some(l) = late {
        plain.push(l.wait(deadline)?);
    }
    Ok(Hotplug {
        tap: vec![manager.wait(deadline)?],
        plain,
        host,
    })
}

/// The bad inputs, tried on the running manager: each must be refused with a clear error and
/// leave its devices and chardevs as they were.
fn bad_input(m: &mut Monitor, p: &HotplugPlan) -> Result<Vec<CaseResult>> {
    let before = (m.devices()?, m.chardevs()?);
    let mut out = Vec::new();
    let mut check = |name: &str, r: Result<()>, want: &str, m: &mut Monitor| -> Result<()> {
        let after = (m.devices()?, m.chardevs()?);
        let refused = r.as_ref().err().map(|e| format!("{e:#}"));
        let passed = refused.as_deref().is_some_and(|e| e.contains(want)) && after == before;
        if !passed {
            eprintln!("# hotplug/host: {name}: {refused:?}; before {before:?}, after {after:?}");
        }
        out.push(CaseResult {
            name: format!("hotplug/host: {name}"),
            passed,
        });
        Ok(())
    };
    let r = m.add(&p.hot, || Ok(()));
    check(
        "adding a worker whose name exists is refused, nothing changed",
        r,
        "already has a worker channel",
        m,
    )?;
    let r = m.remove("worker-nobody", Duration::from_secs(5));
    check(
        "removing a worker that does not exist is refused, nothing changed",
        r,
        "no worker channel named",
        m,
    )?;
    // A new name on the slot the hot channel holds: QEMU refuses the device, and the chardev
    // added for it is removed again.
    let mut other = SetupSocket::bind(&p.dir.path().join("clash.sock"))?;
    let clash = HotDevice {
        name: "clash".into(),
        socket: other.path().to_path_buf(),
        ..p.hot.clone()
    };
    let msgs = setup_messages(&p.own, p.segment.as_fd(), &[&p.peer])?;
    let r = m.add(&clash, || other.serve(&msgs, Duration::from_secs(10)));
    check(
        "a device QEMU refuses (its slot is taken) leaves no chardev behind",
        r,
        "device_add",
        m,
    )?;
    let missing = p.dir.path().join("stopped.sock");
    let r = Monitor::connect(&missing).map(drop);
    check(
        "a manager that is not running is a clear error",
        r,
        "the manager is not running",
        m,
    )?;
    Ok(out)
}

/// The devices of the fuzz and life-cycle guests: `ivshmem-plain` (4 MiB) and
/// `ivshmem-doorbell` (1 MiB, peer id 3, two vectors), as in single-vm.
fn stress_vm(name: &str, run: &str) -> Result<Plan> {
    let plain = segments::create("plain", 4 << 20)?;
    let doorbell_shm = segments::create("doorbell", 1 << 20)?;
    let own = PeerVectors::new(3, 2)?;
    let msgs = setup_messages(&own, doorbell_shm.as_fd(), &[])?;
    let (server_end, chardev) = prefilled_socket(&msgs)?;
    // Two vCPUs: the fuzzer's threads, the unbinds and the interrupts race for real. The
    // module is unloaded last, before the kmemleak scan.
    let vm = Vm::new(name, &format!("{run} && rmmod sivshm"))
        .smp(2)
        .env("SIVSHM_KMEMLEAK", "1")
        .device(Device::Plain {
            slot: PciSlot::root(4),
            segment: plain,
            size: 4 << 20,
        })
        .device(Device::Doorbell {
            slot: PciSlot::root(5),
            chardev,
            vectors: 2,
        });
    Ok(Plan {
        vms: vec![vm],
        _keep: vec![server_end],
    })
}

/// The fuzzer's command line for a budget.
fn fuzz_command(b: &Stress) -> String {
    let mut run = format!(
        "sivshm_fuzz --ops {} --seconds {} --threads 4 --chaos",
        b.fuzz_ops, b.fuzz_seconds
    );
    if let Some(seed) = b.seed {
        run += &format!(" --seed {seed}");
    }
    run
}

/// The fuzz guest's command: the fuzzer (random, concurrent calls of every entry point from
/// four threads, every result checked against the UAPI, while another thread unbinds, binds,
/// rmmods and insmods), then the life-cycle stress (unbind and bind with mappings live,
/// readers blocked on bound eventfds, rmmod refused while files are open, reloads in between);
/// see `selftests/sivshm_fuzz.c`. One boot for both: under TCG a boot costs as much as either.
fn stress_command(b: &Stress) -> String {
    format!(
        "{} && sivshm_fuzz --lifecycle {}",
        fuzz_command(b),
        b.cycles
    )
}

fn stress_fuzz(s: &Suite<'_>) -> Result<Vec<Finished>> {
    stress_vm("fuzz", &stress_command(&s.stress))?.run(s)
}

/// A manager, an honest worker 0 and a hostile worker 1 that storms the doorbell and scribbles
/// over its segment (see `selftests/sivshm_hostile.c`).
struct HostilePeer {
    storm_seconds: u64,
}

impl Roles for HostilePeer {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        // Worker i is peer i + 1 on its channel (topology.rs): the hostile one is peer 2.
        format!(
            "sivshm_hostile victim --honest {} --hostile {} --peer 2 --quiet 2 --storm 2 \
             --rounds 16 --bytes 262144",
            bdfs[0], bdfs[1]
        )
    }

    fn worker(&self, index: usize, _layout: &Layout) -> String {
        if index == 0 {
            "sivshm-distribute worker --only-device --timeout 120".to_string()
        } else {
            format!(
                "sivshm_hostile storm --device /dev/sivshm0 --seconds {} --wait-start 120",
                self.storm_seconds
            )
        }
    }
}

fn hostile_plan(b: &Stress) -> Result<Topology> {
    let roles = HostilePeer {
        storm_seconds: b.storm_seconds,
    };
    Topology::new(2, 2 << 20, &roles)
}

fn stress_hostile_peer(s: &Suite<'_>) -> Result<Vec<Finished>> {
    hostile_plan(&s.stress)?.run(s.machine, s.logdir, s.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(vm: &Vm) -> &str {
        &vm.env.iter().find(|(k, _)| k == "SIVSHM_RUN").unwrap().1
    }

    #[test]
    fn the_racing_scenarios_boot_two_vcpus_the_others_one() {
        // Unbind against faults, release and waiters; interrupts against the test.
        // (single-vm's second guest only checks its device's memory type.)
        for vm in single_vm_plan().unwrap().vms {
            let want = if vm.name == "hole" { 1 } else { 2 };
            assert_eq!(vm.cpus, want, "single-vm/{}", vm.name);
        }
        for vm in two_vm_doorbell_plan().unwrap().vms {
            assert_eq!(vm.cpus, 2, "two-vm-doorbell/{}", vm.name);
        }
        for vm in two_vm_plain_plan().unwrap().vms {
            assert_eq!(vm.cpus, 1, "two-vm-plain/{}", vm.name);
        }
        let roles = Distribute {
            peer_timeout_s: None,
            rounds: 1,
            bytes: 1,
        };
        for vm in Topology::new(2, 1 << 20, &roles).unwrap().vms() {
            assert_eq!(vm.cpus, 1, "distribute/{}", vm.name);
        }
    }

    #[test]
    fn single_vm_runs_sivshmctl_on_a_plain_and_a_doorbell_device() {
        let plan = single_vm_plan().unwrap();
        let run = run_of(&plan.vms[0]);
        assert!(run.contains("&& sivshmctl_test.sh &&"), "{run}");
        // sivshmctl_test.sh reads the devices from SIVSHM_EXPECT: plain first, then doorbell.
        let expect = &plan.vms[0]
            .env
            .iter()
            .find(|(k, _)| k == "SIVSHM_EXPECT")
            .unwrap()
            .1;
        let devices: Vec<&str> = expect.split(';').collect();
        assert_eq!(devices.len(), 2, "{expect}");
        assert!(devices[0].contains(",none,0"), "{expect}");
        assert!(devices[1].ends_with(",2"), "{expect}");
    }

    #[test]
    fn the_network_scenario_links_the_vms_and_checks_both_transports() {
        let t = network_plan().unwrap();
        assert_eq!(t.manager.nics.len(), 1);
        assert_eq!(t.workers[0].nics.len(), 1);
        let run = run_of(&t.manager);
        for want in [
            "--transport sivshm",
            "--transport tcp --connect 10.77.0.2:7777",
        ] {
            assert!(run.contains(want), "{run}");
        }
        // Every transport's data is checked byte by byte.
        assert_eq!(run.matches("--verify").count(), 3, "{run}");
    }

    #[test]
    fn the_hotplug_scenario_plugs_behind_a_bridge_and_runs_the_guest_side_in_order() {
        let p = hotplug_plan(7).unwrap();
        assert_eq!(p.hot.slot.bdf(), "0000:01:01.0");
        assert_eq!(p.manager.bridges, 1);
        assert!(p.manager.qmp.is_some());
        assert!(p.manager.wants_kmemleak());
        let run = run_of(&p.manager);
        let order = [
            "--workers 0000:00:04.0,0000:01:01.0 --late",
            "sivshm_hotplug -t appears",
            "wait_out worker.1:.16.rounds.verified",
            "echo SIVSHM-HOT''PLUG del 0000:01:01.0",
            "wait_out device.was.removed.after",
            "sivshm_hotplug -t appears",
            "sivshm_hotplug -t unplug_with_live_users",
            "sivshm_hotplug -t churn",
            "touch /tmp/stop",
            "rmmod sivshm",
        ];
        // Each step after the one before (`appears` comes twice).
        let mut from = 0;
        for w in order {
            let at = run[from..]
                .find(w)
                .unwrap_or_else(|| panic!("{w} after {from}: {run}"));
            from += at + w.len();
        }
        let env = |k: &str| {
            p.manager
                .env
                .iter()
                .find(|(n, _)| n == k)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(env("SIVSHM_CHURN"), "7");
        assert_eq!(env("SIVSHM_HOTPLUG_BDF"), "0000:01:01.0");
        // The hot channel's worker has one device, its end of the same channel.
        assert_eq!(p.late.devices.len(), 1);
        assert_eq!(p.cold.devices.len(), 1);
        assert_eq!(p.manager.devices.len(), 1);
    }

    #[test]
    fn the_guest_kernel_is_smp() {
        // Two vCPUs race only in an SMP kernel (its NR_CPUS, 2 in tinyconfig, caps them).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel/sivshm-guest.config");
        let config = std::fs::read_to_string(path).unwrap();
        assert!(config.lines().any(|l| l.trim() == "CONFIG_SMP=y"));
    }

    #[test]
    fn guests_that_unload_the_module_are_scanned_for_leaks_after() {
        let b = Stress::default();
        for (scenario, plan) in [
            (
                "stress-fuzz",
                stress_vm("fuzz", &stress_command(&b)).unwrap(),
            ),
            ("single-vm", single_vm_plan().unwrap()),
            ("two-vm-plain", two_vm_plain_plan().unwrap()),
            ("two-vm-doorbell", two_vm_doorbell_plan().unwrap()),
        ] {
            for vm in &plan.vms {
                assert!(vm.wants_kmemleak(), "{scenario}/{}", vm.name);
                // rmmod last, so that the scan covers the unload too.
                assert!(
                    run_of(vm).contains("&& rmmod sivshm"),
                    "{scenario}/{}: {}",
                    vm.name,
                    run_of(vm)
                );
            }
        }
    }

    #[test]
    fn the_stress_scenarios_race_on_two_vcpus_within_the_ci_budget() {
        let b = Stress::default();
        for vm in stress_vm("fuzz", &stress_command(&b)).unwrap().vms {
            assert_eq!(vm.cpus, 2);
            let run = run_of(&vm);
            // Concurrent unbind, rebind, rmmod and insmod: the point of the scenario.
            assert!(run.contains("--chaos"), "{run}");
            assert!(run.contains(&format!("--lifecycle {}", b.cycles)), "{run}");
        }
        // A few thousand operations and tens of cycles in CI; the long run is stress.sh's.
        assert!((1000..=10_000).contains(&b.fuzz_ops));
        assert!(b.fuzz_seconds <= 40);
        assert!((10..=100).contains(&b.cycles));
        let seeded = Stress {
            seed: Some(42),
            ..b.clone()
        };
        assert!(fuzz_command(&seeded).ends_with("--seed 42"));
    }

    #[test]
    fn the_hostile_peer_is_worker_1_next_to_an_honest_worker_0() {
        let t = hostile_plan(&Stress::default()).unwrap();
        let manager = run_of(&t.manager);
        assert!(manager.starts_with("sivshm_hostile victim"), "{manager}");
        assert!(manager.contains("--peer 2"), "{manager}");
        assert!(run_of(&t.workers[0]).starts_with("sivshm-distribute worker"));
        assert!(run_of(&t.workers[1]).starts_with("sivshm_hostile storm"));
    }
}
