//! c-api-manager: the channel's C library (`capi/`) in the guests, against a Rust worker on
//! the other side of the same channel, and under a hostile peer. (The Rust manager with a C
//! worker is the `distribute` scenario's worker 1.)

use anyhow::Result;

use super::results::{check, pairs, Expect};
use super::{Ran, Suite};
use crate::layout::{Layout, Roles, Topology};

/// Rounds and batch size of both scenarios: a batch and its header fit a 2 MiB segment's ring.
const ROUNDS: u64 = 16;
const BYTES: usize = 256 << 10;

/// The C manager (`samples/c/sivshm_distribute_manager.c`) serves an honest Rust worker 0
/// (`sivshm-distribute worker`) and a hostile worker 1 that storms the doorbell and scribbles
/// over its channel (`sivshm_hostile storm`). The C manager must verify every batch of
/// worker 0, report worker 1's channel failed with an error code (exit 1), and not crash:
/// the guest command checks the exit status, the host the manager's `SIVSHM-RESULT` lines
/// ([`c_manager_results`]).
struct CManager;

impl Roles for CManager {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        // The hostile worker starts when it is rung (peer 2, vector 0 of its channel), once
        // the channels are formatted. A ring before its VM has bound the vector is lost (a
        // worker may boot seconds after the manager on a busy host): ring every 2 s until
        // the manager is done; rings after the first only add to the hostile's own vector.
        format!(
            "(while sleep 2; do sivshmctl ring {hostile} 2 0 >/dev/null; done) & go=$!; \
             sivshm_distribute_manager --workers {honest},{hostile} --rounds {ROUNDS} \
             --bytes {BYTES} --progress {ROUNDS} --timeout 120; rc=$?; kill $go; test $rc = 1",
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

/// What the C manager must report as data: every batch of the honest worker 0 verified,
/// the hostile worker 1's channel failed (an error code, not a removal).
fn c_manager_results() -> Vec<Expect> {
    let e = |program, pick: &[(&'static str, &str)], want: &[(&'static str, &str)], what: &str| {
        Expect {
            vm: "manager".into(),
            program,
            pick: pairs(pick),
            want: pairs(want),
            what: what.into(),
        }
    };
    let rounds = ROUNDS.to_string();
    vec![
        e(
            "distribute-manager-worker",
            &[("impl", "c"), ("index", "0")],
            &[("verified", &rounds), ("status", "ok")],
            &format!("the C manager verified all {ROUNDS} rounds of the honest Rust worker 0"),
        ),
        e(
            "distribute-manager-worker",
            &[("impl", "c"), ("index", "1")],
            &[("status", "failed")],
            "the C manager reported the hostile worker 1's channel failed with an error code",
        ),
        e(
            "distribute-manager",
            &[("impl", "c")],
            &[("failed", "1"), ("removed", "0")],
            "the C manager's run ended with a worker failed and none removed",
        ),
    ]
}

/// The guest command of a C worker (`samples/c/sivshm_distribute_worker.c`); what it must
/// report is [`c_worker_result`].
pub(super) fn c_worker() -> String {
    "sivshm_distribute_worker --timeout 120 /dev/sivshm0".to_string()
}

/// What the C worker on VM `vm` must report as data: `rounds` rounds received, every one
/// matching its checksum, from round 1.
pub(super) fn c_worker_result(vm: &str, rounds: u64) -> Expect {
    Expect {
        vm: vm.into(),
        program: "distribute-worker",
        pick: pairs(&[("impl", "c")]),
        want: pairs(&[
            ("rounds", rounds),
            ("first_round", 1),
            ("took_over", 0),
            ("mismatched", 0),
        ]),
        what: format!(
            "the C worker received {rounds} rounds from round 1, each matching its checksum"
        ),
    }
}

pub(super) fn run_c_manager(s: &Suite<'_>) -> Result<Ran> {
    let finished = Topology::new(2, 2 << 20, &CManager)?.run(s.machine, s.logdir, s.timeout)?;
    Ok(Ran {
        host: check("c-api-manager", &finished, &c_manager_results()),
        ..Ran::plain(finished)
    })
}
