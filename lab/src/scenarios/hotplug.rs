//! hotplug: worker channels added to and removed from a running manager over QMP, asked
//! for by the guest; the host also tries the bad inputs and reports what it checked.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sivshm_host::pci::{bridges_for, manager_slot, PciSlot};
use sivshm_host::protocol::{prefilled_socket, setup_messages, PeerVectors};
use sivshm_host::segments;

use super::results::{check, pairs, Expect};
use super::{CaseResult, Ran, Suite};
use crate::pair::channel;
use crate::qemu::{Device, Running, Vm};
use crate::setup_socket::{chardev_id, SetupSocket};
use sivshm_host::hotplug::{HotDevice, Monitor};

/// The hot-plugged worker's index: its channel sits behind the manager's first bridge.
const HOT_INDEX: usize = 24;

/// A manager with one worker channel at boot and one added and removed while it runs.
pub(super) struct HotplugPlan {
    pub(super) manager: Vm,
    /// Worker 0, booted with the manager: it carries data through every add and remove.
    pub(super) cold: Vm,
    /// The worker whose channel is hot-plugged, booted once it is.
    pub(super) late: Vm,
    pub(super) hot: HotDevice,
    /// The manager's end of the hot channel: its eventfds, its peer's, the segment.
    own: PeerVectors,
    peer: PeerVectors,
    segment: File,
    qmp: std::path::PathBuf,
    dir: tempfile::TempDir,
    _keep: Vec<OwnedFd>,
}

pub(super) fn plan(churn: u32) -> Result<HotplugPlan> {
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
    let name = format!("worker{HOT_INDEX}");
    let hot = HotDevice {
        chardev: chardev_id(&name),
        id: name,
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
    // Between the first removal and the driver-level tests the channel appears once more for
    // a C program on libsivshm (`sivshm_capi_removal`), which asks for its removal while it
    // waits for a worker that does not come: it must get SIVSHM_ERR_DEVICE_GONE from that
    // wait and every call after it, not crash
    // ([`removal_results`]).
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
         && wait_out SIVSHM-RESULT.distribute-manager-progress.impl=rust.index=1.verified=16 300 \
         && echo SIVSHM-HOT''PLUG del {hot_bdf} \
         && wait_out SIVSHM-RESULT.distribute-manager-event.impl=rust.index=1.event=removed 120 \
         && sivshm_hotplug -t appears && sivshm_capi_removal --timeout 120 {hot_bdf} \
         && sivshm_hotplug -t appears \
         && sivshm_hotplug -t unplug_with_live_users && sivshm_hotplug -t churn; rc=$?; \
         if kill -0 $m; then echo 'manager: worker 0 carried data through every add and remove'; \
         else echo 'manager: the manager process stopped before the churn ended'; rc=1; fi; \
         touch /tmp/stop; wait $m || rc=1; cat /tmp/manager.out; \
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

/// Hot-plug, hot-unplug with live users, and churn: the manager's guest asks for each add
/// and remove on its console (`sivshm_hotplug`) and the host carries it out over QMP; the
/// first add also boots the worker at the other end, and the host tries the bad inputs on
/// the running manager.
pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let p = plan(s.churn)?;
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
    // The churn's adds and removes, as they are carried out.
    let mut progress = crate::progress::Progress::new("hot-plug requests", 0);
    loop {
        crate::interrupt::check()?;
        progress.set(
            u64::from(adds + removes),
            &format!("{adds} adds, {removes} removes"),
        );
        let done = manager.exited()?;
        let text = crate::console::new_lines(manager.log_path(), &mut offset);
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
                    .remove(&p.hot.id, &p.hot.chardev, Duration::from_secs(60))
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
    let manager = manager.wait(deadline)?;
    host.extend(check(
        "hotplug",
        std::slice::from_ref(&manager),
        &removal_results(),
    ));
    Ok(Ran {
        tap: vec![manager],
        plain,
        host,
    })
}

/// What the manager process must report of the hot channel's worker (removed: its device
/// went), and what the C program whose device is removed under it
/// (`samples/c/sivshm_capi_removal.c`) must report: the wait for a worker it was in (which only the removal could end) and
/// every later call ended with SIVSHM_ERR_DEVICE_GONE (-12), and the node went away.
fn removal_results() -> Vec<Expect> {
    let gone = "-12";
    vec![
        Expect {
            vm: "manager".into(),
            program: "distribute-manager-worker",
            pick: pairs(&[("impl", "rust"), ("index", "1")]),
            want: pairs(&[("status", "removed")]),
            what: "the manager process reported the hot channel's worker removed (its device \
                   gone) and served worker 0 on"
                .into(),
        },
        Expect {
            vm: "manager".into(),
            program: "capi-removal",
            pick: pairs(&[("impl", "c")]),
            want: pairs(&[
                ("wait", gone),
                ("receive", gone),
                ("reserve", gone),
                ("send", gone),
                ("flush", gone),
                ("check_peer", gone),
                ("node_gone", "1"),
                ("status", "ok"),
            ]),
            what: "a C program's device removed while it waits: SIVSHM_ERR_DEVICE_GONE from the \
               wait and every later call, no crash"
                .into(),
        },
    ]
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
        "already has a device",
        m,
    )?;
    let r = m.remove(
        "worker-nobody",
        &chardev_id("worker-nobody"),
        Duration::from_secs(5),
    );
    check(
        "removing a worker that does not exist is refused, nothing changed",
        r,
        "has no device",
        m,
    )?;
    // A new name on the slot the hot channel holds: QEMU refuses the device, and the chardev
    // added for it is removed again.
    let mut other = SetupSocket::bind(&p.dir.path().join("clash.sock"))?;
    let clash = HotDevice {
        id: "clash".into(),
        chardev: chardev_id("clash"),
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
