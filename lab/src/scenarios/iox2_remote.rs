//! iox2-remote: the same job reaches a local worker over sivshm and a remote one over zenoh
//! in one run. Worker 1 stands for a worker on another host: its gateway talks zenoh over
//! TCP on its virtio-net link (the network baseline's) and never touches its sivshm device.
//! Which worker is which is the manager gateway's `via`, not code.

use anyhow::Result;

use super::iox2_pubsub::{beside_gateway, job_expectations, BYTES, ROUNDS};
use super::results::check;
use super::{Ran, Suite};
use crate::layout::{Layout, Roles, Topology};

/// The port the remote worker's gateway listens on.
const ZENOH_PORT: u16 = 7447;

struct Remote;

impl Roles for Remote {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        let remote = crate::net::worker_addr(1);
        beside_gateway(
            &format!(
                "--worker 'w0@sivshm:{}@jobs/w0/**' \
                 --worker 'w1@zenoh:tcp/{remote}:{ZENOH_PORT}@jobs/w1/**'",
                bdfs[0]
            ),
            &format!(
                "sivshm-iox2 job-manager --worker w0 --worker w1 --rounds {ROUNDS} \
                 --bytes {BYTES}"
            ),
        )
    }

    fn worker(&self, index: usize, _layout: &Layout) -> String {
        let via = match index {
            0 => "sivshm:/dev/sivshm0".to_string(),
            _ => format!("zenoh:tcp/0.0.0.0:{ZENOH_PORT}"),
        };
        beside_gateway(
            &format!("--to-manager w{index}@{via}"),
            &format!("sivshm-iox2 job-worker --name w{index} --rounds {ROUNDS}"),
        )
    }
}

pub(super) fn plan() -> Result<Topology> {
    Topology::new(2, 2 << 20, &Remote)?.network()
}

pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let finished = plan()?.run(s.machine, s.logdir, s.timeout)?;
    let mut expect = job_expectations(0);
    expect.extend(job_expectations(1));
    Ok(Ran {
        host: check("iox2-remote", &finished, &expect),
        ..Ran::plain(finished)
    })
}
