//! The segmented topology: a data manager VM and N worker VMs. Worker i has segment i (a
//! file of its own) and a doorbell channel to the manager: an `ivshmem-doorbell` in worker i
//! (peer id i + 1) and one in the manager (peer id 0) at PCI slot `FIRST_SLOT + i`, on the
//! same segment. A worker is never given another worker's segment or eventfds.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::channel::channel;
use crate::qemu::{run_all, Device, Finished, Machine, Vm};
use crate::segments;

/// First PCI slot used for sivshm devices (0-3 hold the i440fx chipset's devices).
pub const FIRST_SLOT: u8 = 4;
/// Slots left on bus 0 for the manager's devices.
pub const MAX_WORKERS: usize = 32 - FIRST_SLOT as usize;

pub struct Topology {
    pub manager: Vm,
    pub workers: Vec<Vm>,
    /// Kept until the VMs are gone.
    _sockets: Vec<OwnedFd>,
}

/// What each VM runs, given the manager's device addresses in worker order.
pub trait Roles {
    fn manager(&self, worker_bdfs: &[String]) -> String;
    fn worker(&self, index: usize) -> String;
}

impl Topology {
    pub fn new(workers: usize, segment_size: u64, roles: &dyn Roles) -> Result<Self> {
        if workers == 0 {
            bail!("at least one worker is needed");
        }
        if workers > MAX_WORKERS {
            bail!("at most {MAX_WORKERS} workers fit on the manager's PCI bus");
        }
        let mut manager_devices = Vec::new();
        let mut worker_vms = Vec::new();
        let mut sockets = Vec::new();
        for i in 0..workers {
            let segment = segments::create(&format!("worker{i}"), segment_size)?;
            let slot = FIRST_SLOT + i as u8;
            let ch = channel(&segment, (0, slot), (i as u16 + 1, FIRST_SLOT), 1)?;
            manager_devices.push(ch.a);
            worker_vms.push(Vm::new(&format!("worker{i}"), &roles.worker(i)).device(ch.b));
            sockets.extend(ch._keep);
        }
        let bdfs: Vec<String> = manager_devices.iter().map(Device::bdf).collect();
        let mut manager = Vm::new("manager", &roles.manager(&bdfs));
        for d in manager_devices {
            manager = manager.device(d);
        }
        Ok(Topology {
            manager,
            workers: worker_vms,
            _sockets: sockets,
        })
    }

    /// Boots every VM at once and waits for all of them.
    pub fn run(self, m: &Machine, logdir: &Path, timeout: Duration) -> Result<Vec<Finished>> {
        let mut vms = vec![self.manager];
        vms.extend(self.workers);
        run_all(m, &vms, logdir, timeout)
    }
}

/// The `sivshm-distribute` sample in every VM.
pub struct Distribute {
    pub rounds: u64,
    pub bytes: usize,
}

impl Roles for Distribute {
    fn manager(&self, bdfs: &[String]) -> String {
        format!(
            "sivshm-distribute manager --workers {} --rounds {} --bytes {}",
            bdfs.join(","),
            self.rounds,
            self.bytes
        )
    }

    fn worker(&self, _index: usize) -> String {
        // In this topology a worker must see its own channel and nothing else.
        "sivshm-distribute worker --only-device".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_one_channel_and_the_manager_one_per_worker() {
        let t = Topology::new(
            3,
            1 << 20,
            &Distribute {
                rounds: 1,
                bytes: 10,
            },
        )
        .unwrap();
        assert_eq!(t.manager.devices.len(), 3);
        let slots: Vec<u8> = t.manager.devices.iter().map(Device::slot).collect();
        assert_eq!(slots, [4, 5, 6]);
        for w in &t.workers {
            assert_eq!(w.devices.len(), 1, "a worker must see exactly one device");
            assert_eq!(w.devices[0].slot(), FIRST_SLOT);
        }
        let run = &t.manager.env[0].1;
        assert!(
            run.contains("--workers 0000:00:04.0,0000:00:05.0,0000:00:06.0"),
            "{run}"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let roles = Distribute {
            rounds: 1,
            bytes: 1,
        };
        assert!(Topology::new(0, 1 << 20, &roles).is_err());
        assert!(Topology::new(MAX_WORKERS + 1, 1 << 20, &roles).is_err());
        assert!(Topology::new(2, 3 << 20, &roles).is_err());
    }
}
