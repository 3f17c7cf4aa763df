//! distribute and distribute-ivshmem: the main job on SIVSHM and on the IVSHMEM baseline.

use anyhow::Result;

use super::c_api::{c_worker, c_worker_result};
use super::results::{check, pairs, Expect};
use super::{Ran, Suite};
use crate::layout::{reserve_pages, Distribute, Layout, Roles, Topology};
use sivshm_host::segments::PageSize;

/// The main job with worker 1 written in C: the Rust manager and worker 0, and the C worker
/// (`samples/c/sivshm_distribute_worker.c` on `libsivshm`) on the same kind of channel.
struct RustAndC(Distribute);

impl Roles for RustAndC {
    fn manager(&self, bdfs: &[String], layout: &Layout) -> String {
        self.0.manager(bdfs, layout)
    }

    fn worker(&self, index: usize, layout: &Layout) -> String {
        if index == 1 {
            c_worker()
        } else {
            self.0.worker(index, layout)
        }
    }
}

/// A manager and two workers on their own segments: the manager hands each worker data and
/// checks what the worker computed from it; each worker sees exactly one device. Worker 1
/// is the C program: the Rust manager verifies its answers as it does the Rust worker's.
/// The segments are of 2 MiB huge pages (the pool raised for the run if need be), so the
/// job also shows huge-page segments end to end.
pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let rounds = 16;
    let (workers, segment, page) = (2, 2 << 20, PageSize::Huge2M);
    let _pool = reserve_pages(page, workers, segment)?;
    let roles = RustAndC(Distribute {
        peer_timeout_s: None,
        rounds,
        bytes: 512 << 10,
    });
    let finished = Topology::with_pages(workers, segment, page, &roles)?
        .run(s.machine, s.logdir, s.timeout)?;
    let expect = [
        c_worker_result("worker1", rounds),
        Expect {
            vm: "manager".into(),
            program: "distribute-manager",
            pick: pairs(&[("impl", "rust")]),
            want: pairs(&[("verified", 2 * rounds), ("batches", 2 * rounds)]),
            what: format!(
                "the Rust manager verified all {} batches of the Rust and the C worker",
                2 * rounds
            ),
        },
    ];
    Ok(Ran {
        host: check("distribute", &finished, &expect),
        ..Ran::plain(finished)
    })
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
