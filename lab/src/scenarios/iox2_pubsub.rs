//! iox2-pubsub: iceoryx2 publish-subscribe and events across VMs through the sivshm gateways
//! (ipc/, Documentation/iceoryx2.rst): the job's manager and workers are plain iceoryx2
//! programs, each VM runs a gateway, and every batch is verified.

use anyhow::Result;

use super::results::{check, pairs, Expect};
use super::{Ran, Suite};
use crate::layout::{Layout, Roles, Topology};

/// Rounds of the job (batches per worker).
pub(super) const ROUNDS: u32 = 8;
/// Bytes per batch: larger than a page, well under the channel's largest message.
pub(super) const BYTES: usize = 64 << 10;

/// `CMD` with the VM's gateway running beside it: the gateway starts first, is stopped once
/// `CMD` ends, and the VM's command fails with `CMD`.
pub(super) fn beside_gateway(gateway_args: &str, cmd: &str) -> String {
    format!(
        "sivshm-iox2 gateway --results {gateway_args} & gw=$!; {cmd}; rc=$?; sleep 1; \
         kill $gw; exit $rc"
    )
}

/// The manager's gateway arguments: worker i on the device at `bdfs[i]`, granted
/// `jobs/w<i>/**`.
pub(super) fn manager_gateway(bdfs: &[String]) -> String {
    bdfs.iter()
        .enumerate()
        .map(|(i, b)| format!("--worker 'w{i}@sivshm:{b}@jobs/w{i}/**'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A worker's gateway arguments: its one device, to its manager.
pub(super) fn worker_gateway(index: usize) -> String {
    format!("--to-manager w{index}@sivshm:/dev/sivshm0")
}

/// The job's worker `w<index>`.
pub(super) fn job_worker(index: usize) -> String {
    beside_gateway(
        &worker_gateway(index),
        &format!("sivshm-iox2 job-worker --name w{index} --rounds {ROUNDS}"),
    )
}

/// What the manager and worker `w<index>` of a finished job report.
pub(super) fn job_expectations(index: usize) -> Vec<Expect> {
    let w = format!("w{index}");
    vec![
        Expect {
            vm: "manager".into(),
            program: "iox2-job-manager",
            pick: pairs(&[("worker", w.as_str())]),
            want: pairs(&[
                ("verified", ROUNDS.to_string()),
                ("wrong", "0".into()),
                ("woken", "yes".into()),
                ("status", "ok".into()),
            ]),
            what: format!(
                "iceoryx2 manager verified all {ROUNDS} batches of {w}, woken by its events"
            ),
        },
        Expect {
            vm: format!("worker{index}"),
            program: "iox2-job-worker",
            pick: pairs(&[("worker", w.as_str())]),
            want: pairs(&[
                ("answered", ROUNDS.to_string()),
                ("woken", "yes".into()),
                ("status", "ok".into()),
            ]),
            what: "iceoryx2 worker answered every batch, woken by the manager's events".into(),
        },
    ]
}

struct PubSub;

impl Roles for PubSub {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        let workers: Vec<String> = (0..bdfs.len()).map(|i| format!("--worker w{i}")).collect();
        beside_gateway(
            &manager_gateway(bdfs),
            &format!(
                "sivshm-iox2 job-manager {} --rounds {ROUNDS} --bytes {BYTES}",
                workers.join(" ")
            ),
        )
    }

    fn worker(&self, index: usize, _layout: &Layout) -> String {
        job_worker(index)
    }
}

pub(super) fn plan() -> Result<Topology> {
    Topology::new(2, 2 << 20, &PubSub)
}

/// A manager and two workers, each worker on its own segment and channel, each VM with its
/// gateway: batches and answers cross as iceoryx2 samples, wake-ups as iceoryx2 events.
pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let finished = plan()?.run(s.machine, s.logdir, s.timeout)?;
    let mut expect = job_expectations(0);
    expect.extend(job_expectations(1));
    Ok(Ran {
        host: check("iox2-pubsub", &finished, &expect),
        ..Ran::plain(finished)
    })
}
