//! `sivshm-host hotplug add|remove TOPOLOGY --worker NAME`: a worker's channel plugged into
//! (or out of) the user's running manager QEMU over its QMP socket (`hotplug`), so that a
//! worker added by a reload of `serve` reaches the manager without a reboot.
//!
//! The device is the one `qemu-args` gives the manager for that worker (the same id, chardev
//! id, socket, vectors and PCI slot), so a device plugged here and one there from boot are
//! alike: either can be removed here. Adding needs `serve` to have the worker's socket (the
//! file reloaded); removing waits for the guest to let the device go, and QEMU's chardev then
//! closes its connection to `serve`, after which a reload may remove the worker.
//!
//! `--into VM` plugs the worker's own device into a running worker VM instead: how a resized
//! worker's new segment (a worker of its own in the file, `w0b` beside `w0`) reaches the VM
//! that runs `w0`, at the first free slot of bus 0, as `sivshm-w0b`; in the worker's own VM it
//! is the device `qemu-args` gives that VM (`sivshm-MANAGER`), so the old one can be removed
//! the same way.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::topology_file::TopologyFile;
use crate::hotplug::{HotDevice, Monitor};

/// QEMU's id of the manager's device (and of its chardev) for `worker`, as `qemu-args` has it.
pub fn device_id(worker: &str) -> String {
    format!("sivshm-{worker}")
}

/// Where a hot-plugged device goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The manager: the manager's device for the worker, as `qemu-args` gives it.
    Manager,
    /// A worker VM: the worker's own device. In the worker's own VM it is the one `qemu-args`
    /// gives that VM; in another (the VM of the worker whose segment this one replaces) it is
    /// `sivshm-WORKER` at the first free slot of bus 0.
    Worker { vm: String },
}

/// A device to plug or unplug, the QMP socket of its VM and how messages name the VM. With
/// `free_slot` the device has no slot of its own in that VM: `add` takes the first free one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub device: HotDevice,
    pub free_slot: bool,
    pub qmp: PathBuf,
    /// How messages name the VM.
    pub who: String,
}

/// The device of `worker` of `t` for `into` (`None`: the manager), and the QMP socket to reach
/// it: `qmp` if given, else the file's `[manager] qmp` (a worker VM's must be given).
pub fn plan(
    t: &TopologyFile,
    worker: &str,
    into: Option<&str>,
    qmp: Option<&Path>,
) -> Result<Planned> {
    let Some(w) = t.worker(worker) else {
        let names: Vec<&str> = t.workers.iter().map(|w| w.name.as_str()).collect();
        bail!(
            "topology {} has no worker {worker:?} (its workers: {}); nothing was changed",
            t.name,
            names.join(", ")
        );
    };
    let target = match into {
        None => Target::Manager,
        Some(vm) if vm == t.manager => Target::Manager,
        Some(vm) => Target::Worker { vm: vm.to_string() },
    };
    let qmp = match (&target, qmp, &t.manager_qmp) {
        (_, Some(q), _) => q.to_path_buf(),
        (Target::Manager, None, Some(q)) => q.clone(),
        (Target::Manager, None, None) => bail!(
            "no QMP socket for manager {:?}: name it in the file ([manager] qmp = \"PATH\", \
             which qemu-args then gives the manager) or give --qmp PATH",
            t.manager
        ),
        (Target::Worker { vm }, None, _) => bail!(
            "no QMP socket for VM {vm:?}: give --qmp PATH (the file names the manager's only); \
             nothing was changed"
        ),
    };
    let (vm, peer) = match &target {
        Target::Manager => (t.manager.as_str(), w.name.as_str()),
        Target::Worker { .. } => (w.name.as_str(), t.manager.as_str()),
    };
    let d = t
        .devices_of(vm)
        .into_iter()
        .find(|d| d.peer == peer)
        .context("the manager has a device for each worker, and each worker one")?;
    let (id, free_slot, who) = match &target {
        Target::Manager => (device_id(&w.name), false, "the manager".to_string()),
        // Its own VM: the device qemu-args gives it, named after its peer.
        Target::Worker { vm } if *vm == w.name => (device_id(peer), false, format!("VM {vm}")),
        Target::Worker { vm } => (device_id(&w.name), true, format!("VM {vm}")),
    };
    Ok(Planned {
        device: HotDevice {
            chardev: id.clone(),
            id,
            socket: d.socket,
            slot: d.slot,
            vectors: d.vectors,
        },
        free_slot,
        qmp,
        who,
    })
}

/// `sivshm-host hotplug add`: what it did, for the user.
pub fn add(path: &Path, worker: &str, into: Option<&str>, qmp: Option<&Path>) -> Result<String> {
    let t = TopologyFile::load(path)?;
    let mut p = plan(&t, worker, into, qmp)?;
    match std::fs::symlink_metadata(&p.device.socket) {
        Ok(m) if m.file_type().is_socket() => {}
        _ if served_manager(&t, worker).is_some_and(|m| m != t.manager) => bail!(
            "serve's manager of topology {} is named {:?}, not {:?}: the file renames it, which \
             serve does not take while it runs (a reload is refused); stop serve and every VM to \
             rename it; nothing was changed",
            t.name,
            served_manager(&t, worker).unwrap_or_default(),
            t.manager
        ),
        _ => bail!(
            "serve has no socket {} for worker {worker:?}: start serve, or reload it after \
             adding the worker to the file (systemctl reload sivshm-host@{}, or kill -HUP its \
             pid); nothing was changed",
            p.device.socket.display(),
            t.name
        ),
    }
    let mut m = Monitor::connect_to(&p.qmp, &p.who)?;
    if p.free_slot {
        let taken = m.devices()?.contains(&p.device.id);
        if !taken {
            p.device.slot = m.free_root_slot(crate::pci::FIRST_SLOT)?;
        }
    }
    let d = &p.device;
    // serve sends the setup stream as soon as QEMU's chardev connects.
    m.add(d, || Ok(()))?;
    let w = t.worker(worker).map_or(0, |w| w.id);
    Ok(match into.filter(|vm| *vm != t.manager) {
        None => format!(
            "worker {worker}'s channel plugged into manager {}: device {} at {} (worker peer \
             id {w})",
            t.manager,
            d.id,
            d.slot.bdf()
        ),
        Some(vm) => format!(
            "worker {worker}'s own device plugged into VM {vm}: device {} at {} (its peer, \
             manager {}, is id 0)",
            d.id,
            d.slot.bdf(),
            t.manager
        ),
    })
}

/// The manager `serve` serves `worker` with, from the name of the worker's own socket in the
/// runtime directory (`WORKER.MANAGER.sock`), if there is one.
fn served_manager(t: &TopologyFile, worker: &str) -> Option<String> {
    let prefix = format!("{worker}.");
    std::fs::read_dir(&t.runtime_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|f| f.is_socket()))
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|n| {
            let peer = n.strip_prefix(&prefix)?.strip_suffix(".sock")?;
            (!peer.is_empty() && !peer.contains('.')).then(|| peer.to_string())
        })
}

/// `sivshm-host hotplug remove`: what it did, for the user.
pub fn remove(
    path: &Path,
    worker: &str,
    into: Option<&str>,
    qmp: Option<&Path>,
    timeout: Duration,
) -> Result<String> {
    let t = TopologyFile::load(path)?;
    let p = plan(&t, worker, into, qmp)?;
    let mut m = Monitor::connect_to(&p.qmp, &p.who)?;
    m.remove(&p.device.id, &p.device.chardev, timeout)?;
    let from = match into.filter(|vm| *vm != t.manager) {
        None => format!(
            "worker {worker}'s channel unplugged from manager {}",
            t.manager
        ),
        Some(vm) => format!("worker {worker}'s own device unplugged from VM {vm}"),
    };
    Ok(format!("{from}: device {} is gone", p.device.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_is_the_one_qemu_args_gives_the_manager() {
        let t = TopologyFile::parse(
            "name = \"t\"\nruntime_dir = \"/r\"\n[manager]\nname = \"m\"\nqmp = \"/r/m.qmp\"\n\
             [[worker]]\nname = \"a\"\nsegment_mib = 1\n\
             [[worker]]\nname = \"b\"\nsegment_mib = 1\nvectors = 3\nid = 30\n",
        )
        .unwrap();
        let p = plan(&t, "b", None, None).unwrap();
        let (d, qmp) = (p.device, p.qmp);
        assert_eq!(qmp, Path::new("/r/m.qmp"));
        assert_eq!(
            (d.id.as_str(), d.chardev.as_str(), d.vectors),
            ("sivshm-b", "sivshm-b", 3)
        );
        assert_eq!(d.socket, Path::new("/r/m.b.sock"));
        assert_eq!(d.slot.bdf(), "0000:01:06.0");
        let args = super::super::config::qemu_args(&t, "m").unwrap().join(" ");
        assert!(
            args.contains(
                "-chardev socket,id=sivshm-b,path=/r/m.b.sock -device \
                 ivshmem-doorbell,id=sivshm-b,chardev=sivshm-b,vectors=3,\
                 bus=sivshm-bridge.0,addr=0x6.0"
            ),
            "{args}"
        );
        let q = plan(&t, "a", None, Some(Path::new("/other.qmp")))
            .unwrap()
            .qmp;
        assert_eq!(q, Path::new("/other.qmp"));
        let e = plan(&t, "c", None, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "topology t has no worker \"c\" (its workers: a, b); nothing was changed"
        );
        // Into worker VMs: its own VM's device as qemu-args gives it; another VM's at a free
        // slot; the QMP socket must be given.
        let q = Some(Path::new("/r/a.qmp"));
        let own = plan(&t, "b", Some("b"), q).unwrap();
        assert_eq!(
            (own.device.id.as_str(), own.device.slot.bdf(), own.free_slot),
            ("sivshm-m", "0000:00:04.0".to_string(), false)
        );
        assert_eq!(own.device.socket, Path::new("/r/b.m.sock"));
        assert_eq!(own.who, "VM b");
        let other = plan(&t, "b", Some("a"), q).unwrap();
        assert_eq!(
            (
                other.device.id.as_str(),
                other.free_slot,
                other.device.vectors
            ),
            ("sivshm-b", true, 3)
        );
        assert_eq!(other.device.socket, Path::new("/r/b.m.sock"));
        assert_eq!(
            plan(&t, "b", Some("m"), None).unwrap().device.id,
            "sivshm-b"
        );
        let e = plan(&t, "b", Some("a"), None).unwrap_err().to_string();
        assert!(
            e.starts_with("no QMP socket for VM \"a\": give --qmp PATH"),
            "{e}"
        );
        let mut none = t.clone();
        none.manager_qmp = None;
        let e = plan(&none, "a", None, None).unwrap_err().to_string();
        assert!(e.starts_with("no QMP socket for manager \"m\""), "{e}");
    }
}
