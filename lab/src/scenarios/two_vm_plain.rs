//! two-vm-plain: two guests on one `ivshmem-plain` segment.

use anyhow::Result;
use sivshm_host::pci::PciSlot;
use sivshm_host::segments;

use super::{Plan, Ran, Suite};
use crate::qemu::{unique_value, Device, Vm};

/// Two guests on one `ivshmem-plain` segment: data written in one is read in the other.
pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    Ok(Ran::tap(plan()?.run(s)?))
}

pub(super) fn plan() -> Result<Plan> {
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
