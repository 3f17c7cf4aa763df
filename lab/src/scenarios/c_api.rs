//! c-api-manager: the channel's C library (`capi/`) in the guests, against a Rust worker on
//! the other side of the same channel, and under a hostile peer. (The Rust manager with a C
//! worker is the `distribute` scenario's worker 1.)

use anyhow::Result;

use super::{Ran, Suite};
use crate::layout::{Layout, Roles, Topology};

/// Rounds and batch size of both scenarios: a batch and its header fit a 2 MiB segment's ring.
const ROUNDS: u64 = 16;
const BYTES: usize = 256 << 10;

/// The C manager (`samples/c/sivshm_distribute_manager.c`) serves an honest Rust worker 0
/// (`sivshm-distribute worker`) and a hostile worker 1 that storms the doorbell and scribbles
/// over its channel (`sivshm_hostile storm`). The C manager must verify every batch of
/// worker 0, report worker 1's channel failed with an error code (exit 1), and not crash.
struct CManager;

impl Roles for CManager {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        // The hostile worker starts when it is rung (peer 2, vector 0 of its channel), once
        // the channels are formatted.
        format!(
            "(sleep 2; sivshmctl ring {hostile} 2 0) & \
             sivshm_distribute_manager --workers {honest},{hostile} --rounds {ROUNDS} \
             --bytes {BYTES} --progress {ROUNDS} --timeout 120 > /tmp/manager.out 2>&1; rc=$?; cat /tmp/manager.out; \
             test $rc = 1 && grep -q 'worker 0: {ROUNDS} rounds verified' /tmp/manager.out \
             && grep -q 'worker 1 failed after' /tmp/manager.out",
            honest = bdfs[0],
            hostile = bdfs[1],
        )
    }

    fn worker(&self, index: usize, _layout: &Layout) -> String {
        if index == 0 {
            "sivshm-distribute worker --only-device --timeout 120".to_string()
        } else {
            "sivshm_hostile storm --device /dev/sivshm0 --seconds 5 --wait-start 120".to_string()
        }
    }
}

/// The guest command of a C worker (`samples/c/sivshm_distribute_worker.c`) that must see
/// `rounds` rounds, every one matching, from round 1.
pub(super) fn c_worker(rounds: u64) -> String {
    format!(
        "sivshm_distribute_worker --timeout 120 /dev/sivshm0 > /tmp/worker.out 2>&1; \
         rc=$?; cat /tmp/worker.out; test $rc = 0 \
         && grep -q 'c-worker: received {rounds} rounds from round 1' /tmp/worker.out"
    )
}

pub(super) fn run_c_manager(s: &Suite<'_>) -> Result<Ran> {
    Ok(Ran::plain(
        Topology::new(2, 2 << 20, &CManager)?.run(s.machine, s.logdir, s.timeout)?,
    ))
}
