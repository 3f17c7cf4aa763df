//! two-vm-doorbell: two guests on one doorbell channel.

use anyhow::Result;
use sivshm_host::pci::PciSlot;
use sivshm_host::segments;

use super::{Plan, Ran, Suite};
use crate::pair::channel;
use crate::qemu::Vm;

/// Two guests on one doorbell channel (4 vectors): each wakes the other on every vector, both
/// ring themselves, and one rings the other as fast as it can for a while.
pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    Ok(Ran::tap(plan()?.run(s)?))
}

pub(super) fn plan() -> Result<Plan> {
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
