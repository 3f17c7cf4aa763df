//! The `ivshmem-doorbell` devices a topology file implies, the same for `serve`, `qemu-args`
//! and `libvirt-xml`: worker of peer id *n* (file position plus one unless the file gives
//! its `id`) has one device at PCI slot 4 of bus 0; the manager has one per worker with peer
//! id 0, worker *n*'s at `pci::manager_slot(n - 1)` (slot 4 + *i* of bus 0 for the first 24, then behind PCI
//! bridges), as the harness's topology has them (`topology::Topology::new`). Both ends of a
//! channel share the worker's segment and hold only each other's eventfds.
//!
//! The device of VM *X* on its channel with peer *Y* listens on `RUNTIME_DIR/X.Y.sock`
//! (names never contain a dot, so no two devices share a path).

use std::path::PathBuf;

use super::topology_file::TopologyFile;
use crate::pci::{manager_slot, PciSlot, FIRST_SLOT};

/// One device of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The VM that has the device.
    pub vm: String,
    /// The VM at the other end of its channel.
    pub peer: String,
    /// The channel's worker, by index in the file.
    pub worker: usize,
    /// The device's own peer id, and its peer's.
    pub own_id: u16,
    pub peer_id: u16,
    /// Where it sits: a slot of bus 0, or behind one of the VM's PCI bridges (`config` gives
    /// the VM those bridges).
    pub slot: PciSlot,
    pub vectors: u16,
    /// Bytes of the worker's segment.
    pub segment_size: u64,
    /// The unix socket QEMU connects to.
    pub socket: PathBuf,
}

impl DeviceSpec {
    /// The guest's PCI address, as `lspci -D` and `SIVSHM_IOCTL_GET_INFO` give it. Behind
    /// bridge *k* the bus is *k + 1*: the firmware numbers buses depth first in slot order,
    /// so this holds only if the VM has no other PCI bridge on bus 0 at a slot below the
    /// first of ours (0x1c).
    pub fn bdf(&self) -> String {
        self.slot.bdf()
    }
}

impl TopologyFile {
    /// Every device: per worker, the manager's device then the worker's.
    pub fn devices(&self) -> Vec<DeviceSpec> {
        let mut v = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            let worker_id = w.id;
            let spec = |vm: &str, peer: &str, own_id, peer_id, slot| DeviceSpec {
                vm: vm.to_string(),
                peer: peer.to_string(),
                worker: i,
                own_id,
                peer_id,
                slot,
                vectors: w.vectors,
                segment_size: w.segment_size,
                socket: self.runtime_dir.join(format!("{vm}.{peer}.sock")),
            };
            // `parse` takes at most `MAX_WORKERS` workers, and each of those has a slot.
            let slot = manager_slot(w.index()).expect("a worker's id is at most MAX_WORKERS");
            v.push(spec(&self.manager, &w.name, 0, worker_id, slot));
            v.push(spec(
                &w.name,
                &self.manager,
                worker_id,
                0,
                PciSlot::root(FIRST_SLOT),
            ));
        }
        v
    }

    /// The devices of `vm`, in slot order (bus 0 first, then bridge by bridge).
    pub fn devices_of(&self, vm: &str) -> Vec<DeviceSpec> {
        let mut v: Vec<_> = self.devices().into_iter().filter(|d| d.vm == vm).collect();
        v.sort_by_key(|d| d.slot);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn manager_gets_a_device_per_worker_and_each_worker_one() {
        let t = TopologyFile::parse(
            "name = \"t\"\nruntime_dir = \"/r\"\n[manager]\nname = \"m\"\n\
             [[worker]]\nname = \"a\"\nsegment_mib = 2\nvectors = 3\n\
             [[worker]]\nname = \"b\"\nsegment_mib = 8\n",
        )
        .unwrap();
        let m = t.devices_of("m");
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[1],
            DeviceSpec {
                vm: "m".into(),
                peer: "b".into(),
                worker: 1,
                own_id: 0,
                peer_id: 2,
                slot: PciSlot::root(5),
                vectors: 1,
                segment_size: 8 << 20,
                socket: Path::new("/r/m.b.sock").into(),
            }
        );
        assert_eq!(m[0].bdf(), "0000:00:04.0");
        assert_eq!((m[0].vectors, m[0].peer_id), (3, 1));
        let a = t.devices_of("a");
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].own_id, a[0].peer_id, a[0].slot),
            (1, 0, PciSlot::root(4))
        );
        assert_eq!(a[0].socket, Path::new("/r/a.m.sock"));
        assert!(t.devices_of("nobody").is_empty());
        // Every path differs.
        let mut paths: Vec<_> = t.devices().into_iter().map(|d| d.socket).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 4);
    }

    #[test]
    fn past_24_workers_the_managers_devices_are_behind_bridges_and_the_workers_are_not() {
        let t = TopologyFile::parse(&crate::service::topology_file::file_with_workers(128, "/r"))
            .unwrap();
        let m = t.devices_of("m");
        assert_eq!(m.len(), 128);
        // In worker order: bus 0 first, then bridge by bridge.
        assert!(m.iter().enumerate().all(|(i, d)| d.worker == i));
        assert_eq!(
            (m[23].slot, m[23].bdf()),
            (PciSlot::root(0x1b), "0000:00:1b.0".into())
        );
        assert_eq!(m[24].peer, "w24");
        assert_eq!(m[24].slot, PciSlot::behind(0, 1));
        assert_eq!(m[24].bdf(), "0000:01:01.0");
        assert_eq!(m[127].bdf(), "0000:04:0b.0");
        let w = t.devices_of("w127");
        assert_eq!((w.len(), w[0].slot), (1, PciSlot::root(4)));
        assert_eq!((w[0].own_id, w[0].bdf()), (128, "0000:00:04.0".into()));
    }
}
