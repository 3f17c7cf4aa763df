//! distribute and distribute-ivshmem: the main job on SIVSHM and on the IVSHMEM baseline.

use anyhow::Result;

use super::{Ran, Suite};
use crate::layout::{Distribute, Topology};

/// A manager and two workers on their own segments: the manager hands each worker data and
/// checks what the worker computed from it; each worker sees exactly one device.
pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let roles = Distribute {
        peer_timeout_s: None,
        rounds: 16,
        bytes: 512 << 10,
    };
    Ok(Ran::plain(
        Topology::new(2, 2 << 20, &roles)?.run(s.machine, s.logdir, s.timeout)?,
    ))
}

/// The same job on the IVSHMEM baseline: one region, a central server; data verified too.
pub(super) fn run_ivshmem(s: &Suite<'_>) -> Result<Ran> {
    let roles = Distribute {
        peer_timeout_s: None,
        rounds: 16,
        bytes: 512 << 10,
    };
    Ok(Ran::plain(
        Topology::ivshmem(2, 2 << 20, &roles)?.run(s.machine, s.logdir, s.timeout)?,
    ))
}
