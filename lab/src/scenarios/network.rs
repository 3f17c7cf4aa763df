//! network: the network baseline and the probes, checked for correctness.

use anyhow::Result;

use super::{Ran, Suite};
use crate::layout::{Layout, Roles, Topology};

/// The network baseline works and the probes measure what they claim: a manager and a
/// worker with a sivshm channel and a virtio-net link; over both, `sivshm-probe` round trips
/// and streams tiny and mid-sized messages with every byte filled and checked (correctness
/// only: nothing is timed). The in-VM references run too.
struct NetworkCheck;

impl NetworkCheck {
    const PROBE: &str = "--latency-sizes 24,4096 --count 20 --warmup 2 \
                         --sizes 24,4096,65536 --messages 16 --verify --timeout 60";
}

impl Roles for NetworkCheck {
    fn manager(&self, _bdfs: &[String], _layout: &Layout) -> String {
        let peer = crate::net::worker_addr(0);
        let p = Self::PROBE;
        format!(
            "sivshm-probe suite --transport sivshm {p} \
             && ping -c 1 -w 30 {peer} \
             && sivshm-probe suite --transport tcp --connect {peer}:7777 {p} \
             && sivshm-probe latency --transport pipe --count 20 --verify \
             && sivshm-probe throughput --transport memcpy --sizes 24,65536 --messages 16"
        )
    }

    fn worker(&self, _index: usize, _layout: &Layout) -> String {
        "sivshm-probe serve --transport sivshm --timeout 60 \
         && sivshm-probe serve --transport tcp --listen 0.0.0.0:7777 --timeout 60"
            .to_string()
    }
}

pub(super) fn plan() -> Result<Topology> {
    Topology::new(1, 2 << 20, &NetworkCheck)?.network()
}

pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    Ok(Ran::plain(plan()?.run(s.machine, s.logdir, s.timeout)?))
}
