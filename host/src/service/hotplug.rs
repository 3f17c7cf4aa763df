//! `sivshm-host hotplug add|remove TOPOLOGY --worker NAME`: a worker's channel plugged into
//! (or out of) the user's running manager QEMU over its QMP socket (`hotplug`), so that a
//! worker added by a reload of `serve` reaches the manager without a reboot.
//!
//! The device is the one `qemu-args` gives the manager for that worker (the same id, chardev
//! id, socket, vectors and PCI slot), so a device plugged here and one there from boot are
//! alike: either can be removed here. Adding needs `serve` to have the worker's socket (the
//! file reloaded); removing waits for the guest to let the device go, and QEMU's chardev then
//! closes its connection to `serve`, after which a reload may remove the worker.

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

/// The manager's device for `worker` of `t`, and the QMP socket to reach it: `qmp` if given,
/// else the file's `[manager] qmp`.
pub fn plan(t: &TopologyFile, worker: &str, qmp: Option<&Path>) -> Result<(HotDevice, PathBuf)> {
    let Some(w) = t.worker(worker) else {
        let names: Vec<&str> = t.workers.iter().map(|w| w.name.as_str()).collect();
        bail!(
            "topology {} has no worker {worker:?} (its workers: {}); nothing was changed",
            t.name,
            names.join(", ")
        );
    };
    let qmp = match (qmp, &t.manager_qmp) {
        (Some(q), _) => q.to_path_buf(),
        (None, Some(q)) => q.clone(),
        (None, None) => bail!(
            "no QMP socket for manager {:?}: name it in the file ([manager] qmp = \"PATH\", \
             which qemu-args then gives the manager) or give --qmp PATH",
            t.manager
        ),
    };
    let d = t
        .devices_of(&t.manager)
        .into_iter()
        .find(|d| d.peer == w.name)
        .context("the manager has a device for each worker")?;
    let id = device_id(&w.name);
    Ok((
        HotDevice {
            chardev: id.clone(),
            id,
            socket: d.socket,
            slot: d.slot,
            vectors: d.vectors,
        },
        qmp,
    ))
}

/// `sivshm-host hotplug add`: what it did, for the user.
pub fn add(path: &Path, worker: &str, qmp: Option<&Path>) -> Result<String> {
    let t = TopologyFile::load(path)?;
    let (d, qmp) = plan(&t, worker, qmp)?;
    match std::fs::symlink_metadata(&d.socket) {
        Ok(m) if m.file_type().is_socket() => {}
        _ => bail!(
            "serve has no socket {} for worker {worker:?}: start serve, or reload it after \
             adding the worker to the file (systemctl reload sivshm-host@{}, or kill -HUP its \
             pid); nothing was changed",
            d.socket.display(),
            t.name
        ),
    }
    let mut m = Monitor::connect(&qmp)?;
    // serve sends the setup stream as soon as QEMU's chardev connects.
    m.add(&d, || Ok(()))?;
    Ok(format!(
        "worker {worker}'s channel plugged into manager {}: device {} at {} (worker peer id \
         {})",
        t.manager,
        d.id,
        d.slot.bdf(),
        t.worker(worker).map_or(0, |w| w.id)
    ))
}

/// `sivshm-host hotplug remove`: what it did, for the user.
pub fn remove(path: &Path, worker: &str, qmp: Option<&Path>, timeout: Duration) -> Result<String> {
    let t = TopologyFile::load(path)?;
    let (d, qmp) = plan(&t, worker, qmp)?;
    let mut m = Monitor::connect(&qmp)?;
    m.remove(&d.id, &d.chardev, timeout)?;
    Ok(format!(
        "worker {worker}'s channel unplugged from manager {}: device {} at {} is gone",
        t.manager,
        d.id,
        d.slot.bdf()
    ))
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
        let (d, qmp) = plan(&t, "b", None).unwrap();
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
        let (_, q) = plan(&t, "a", Some(Path::new("/other.qmp"))).unwrap();
        assert_eq!(q, Path::new("/other.qmp"));
        let e = plan(&t, "c", None).unwrap_err().to_string();
        assert_eq!(
            e,
            "topology t has no worker \"c\" (its workers: a, b); nothing was changed"
        );
        let mut none = t.clone();
        none.manager_qmp = None;
        let e = plan(&none, "a", None).unwrap_err().to_string();
        assert!(e.starts_with("no QMP socket for manager \"m\""), "{e}");
    }
}
