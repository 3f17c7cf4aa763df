//! iox2-isolation: through the sivshm gateways, a worker can neither see nor publish another
//! worker's iceoryx2 services, and a hostile worker (no gateway, garbage in its channel)
//! costs only its own link.

use anyhow::Result;

use super::iox2_pubsub::{
    beside_gateway, job_expectations, job_worker, manager_gateway, worker_gateway, BYTES, ROUNDS,
};
use super::results::{check, pairs, Expect};
use super::{Ran, Suite};
use crate::layout::{Layout, Roles, Topology};

/// Worker 0 runs the job, worker 1 is the rogue, worker 2 the hostile one.
struct Isolation;

impl Roles for Isolation {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        beside_gateway(
            &manager_gateway(bdfs),
            &format!("sivshm-iox2 job-manager --worker w0 --rounds {ROUNDS} --bytes {BYTES}"),
        )
    }

    fn worker(&self, index: usize, _layout: &Layout) -> String {
        match index {
            0 => job_worker(0),
            1 => beside_gateway(
                &worker_gateway(1),
                "sivshm-iox2 rogue --victim w0 --seconds 12",
            ),
            // Until 5 s after the manager touched the channel (30 s at most).
            _ => {
                "sivshm-iox2 hostile --device /dev/sivshm0 --seconds 30 --after-peer 5".to_string()
            }
        }
    }
}

pub(super) fn plan() -> Result<Topology> {
    Topology::new(3, 2 << 20, &Isolation)
}

pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let finished = plan()?.run(s.machine, s.logdir, s.timeout)?;
    let mut expect = job_expectations(0);
    expect.extend([
        Expect {
            vm: "manager".into(),
            program: "iox2-gateway",
            pick: pairs(&[("event", "refused"), ("worker", "w1")]),
            want: pairs(&[("service", "jobs/w0/out")]),
            what: "the gateway refused (and logged) w1's offer of w0's answer service".into(),
        },
        Expect {
            vm: "manager".into(),
            program: "iox2-gateway",
            pick: pairs(&[("event", "failed")]),
            want: pairs(&[("worker", "w2")]),
            what: "the hostile worker's link, and only it, ended".into(),
        },
        Expect {
            vm: "worker1".into(),
            program: "iox2-rogue",
            pick: pairs(&[("victim", "w0")]),
            want: pairs(&[("seen_foreign", "0")]),
            what: "the rogue saw none of w0's services".into(),
        },
    ]);
    Ok(Ran {
        host: check("iox2-isolation", &finished, &expect),
        ..Ran::plain(finished)
    })
}
