//! single-vm: one guest with a plain and a doorbell device, and one whose device is left in
//! the uncached hole.

use std::os::fd::AsFd;

use anyhow::Result;
use sivshm_host::pci::PciSlot;
use sivshm_host::protocol::{prefilled_socket, setup_messages, PeerVectors};
use sivshm_host::segments;

use super::{Plan, Ran, Suite};
use crate::qemu::{Device, Vm};

/// One guest with two devices: `ivshmem-plain` (512 MiB, twice the guest's RAM, so that
/// touching every page of a mapping after removal shows that the stand-in costs no memory per
/// page) and `ivshmem-doorbell` (1 MiB, peer id 3, wired by a prefilled socket): device
/// nodes, info, mmap, bad arguments, unbind and module reload; then the guest command
/// `sivshmctl` on both devices.
pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    Ok(Ran::tap(plan()?.run(s)?))
}

/// The plain device of single-vm: larger than the guest's 256 MiB of RAM.
const SINGLE_VM_PLAIN: u64 = 512 << 20;

pub(super) fn plan() -> Result<Plan> {
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
