//! isolation-sivshm and isolation-ivshmem: a rogue worker attacks its neighbour, on SIVSHM
//! (every attack must fail) and on the IVSHMEM baseline (every attack must succeed).

use anyhow::Result;

use super::{Ran, Suite};
use crate::layout::{Layout, Roles, Topology};
use crate::qemu::unique_value;

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
pub(super) fn run_sivshm(s: &Suite<'_>) -> Result<Ran> {
    let roles = Isolation {
        nonce: unique_value(),
    };
    let t = Topology::new(2, ISOLATION_SLOT, &roles)?;
    Ok(Ran::tap(t.run(s.machine, s.logdir, s.timeout)?))
}

/// The same three VMs on IVSHMEM, one region and a central server: every attack of the rogue
/// must succeed, or the baseline would not be the one the comparison is about.
pub(super) fn run_ivshmem(s: &Suite<'_>) -> Result<Ran> {
    let roles = Isolation {
        nonce: unique_value(),
    };
    let t = Topology::ivshmem(2, ISOLATION_SLOT, &roles)?;
    Ok(Ran::tap(t.run(s.machine, s.logdir, s.timeout)?))
}
