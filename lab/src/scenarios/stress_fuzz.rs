//! stress-fuzz: the in-guest fuzzer and the life-cycle stress on one guest.

use std::os::fd::AsFd;

use anyhow::Result;
use sivshm_host::pci::PciSlot;
use sivshm_host::protocol::{prefilled_socket, setup_messages, PeerVectors};
use sivshm_host::segments;

use super::{Plan, Ran, Stress, Suite};
use crate::qemu::{Device, Vm};

/// The devices of the fuzz and life-cycle guests: `ivshmem-plain` (4 MiB) and
/// `ivshmem-doorbell` (1 MiB, peer id 3, two vectors), as in single-vm.
pub(super) fn stress_vm(name: &str, run: &str) -> Result<Plan> {
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
pub(super) fn fuzz_command(b: &Stress) -> String {
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
pub(super) fn stress_command(b: &Stress) -> String {
    format!(
        "{} && sivshm_fuzz --lifecycle {}",
        fuzz_command(b),
        b.cycles
    )
}

pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    Ok(Ran::tap(
        stress_vm("fuzz", &stress_command(&s.stress))?.run(s)?,
    ))
}
