//! The in-guest test suite: which VMs boot with which devices, and what counts as a pass.
//! One file per scenario; [`SCENARIOS`] lists them in the order they run, and
//! `judge.rs` turns their guests' logs into results.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::qemu::{run_all, Finished, Machine, Vm};

mod c_api;
mod distribute;
mod hotplug;
mod iox2_isolation;
mod iox2_pubsub;
mod iox2_remote;
mod isolation;
mod judge;
mod network;
mod resize;
mod results;
mod single_vm;
mod stress_fuzz;
mod stress_hostile_peer;
#[cfg(test)]
mod tests;
mod two_vm_doorbell;
mod two_vm_plain;

/// One reported result. Every scenario is built to run all of its tests, so there is no
/// "skipped": a skip is a failure.
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
}

pub struct Suite<'a> {
    pub machine: &'a Machine,
    pub logdir: &'a Path,
    pub timeout: Duration,
    pub verbose: bool,
    /// Add/remove cycles of the hot-plug scenario's churn test.
    pub churn: u32,
    pub stress: Stress,
}

/// The budgets of the adversarial scenarios: short in CI, long from `scripts/stress.sh`.
#[derive(Clone, Debug)]
pub struct Stress {
    /// Operations of the in-guest fuzzer (over all its threads).
    pub fuzz_ops: u64,
    /// Seconds of guest time the fuzzer may take at most.
    pub fuzz_seconds: u64,
    /// Unbind/bind cycles of the life-cycle scenario.
    pub cycles: u64,
    /// The fuzzer's seed; None: a new one each run (printed in the guest's log).
    pub seed: Option<u64>,
    /// Seconds the hostile peer storms.
    pub storm_seconds: u64,
    /// Where stress-hostile-peer draws the storm's cost to the victim (SVG), if anywhere.
    pub storm_plot: Option<std::path::PathBuf>,
}

impl Default for Stress {
    /// The CI budget: a few thousand operations, 50 cycles, a 15 s storm.
    fn default() -> Self {
        Stress {
            fuzz_ops: 3000,
            fuzz_seconds: 15,
            cycles: 50,
            seed: None,
            storm_seconds: 15,
            storm_plot: None,
        }
    }
}

/// What a scenario produced: the guests whose command prints TAP, the others, and what the
/// host checked itself while they ran (hot-plug over QMP).
#[derive(Default)]
pub struct Ran {
    pub tap: Vec<Finished>,
    pub plain: Vec<Finished>,
    pub host: Vec<CaseResult>,
}

impl Ran {
    /// Guests whose command prints TAP.
    fn tap(tap: Vec<Finished>) -> Self {
        Ran {
            tap,
            ..Ran::default()
        }
    }

    /// Guests whose command only has to succeed.
    fn plain(plain: Vec<Finished>) -> Self {
        Ran {
            plain,
            ..Ran::default()
        }
    }
}

type Scenario = fn(&Suite<'_>) -> Result<Ran>;

/// Every scenario, in the order they run: (name, runner). `--filter` picks by name.
const SCENARIOS: [(&str, Scenario); 16] = [
    ("single-vm", single_vm::run),
    ("two-vm-plain", two_vm_plain::run),
    ("two-vm-doorbell", two_vm_doorbell::run),
    ("distribute", distribute::run),
    ("distribute-ivshmem", distribute::run_ivshmem),
    // The channel's C library against a Rust worker, and under a hostile peer.
    ("c-api-manager", c_api::run_c_manager),
    ("isolation-sivshm", isolation::run_sivshm),
    ("isolation-ivshmem", isolation::run_ivshmem),
    ("network", network::run),
    // iceoryx2 services across VMs through the sivshm gateways (ipc/).
    ("iox2-pubsub", iox2_pubsub::run),
    ("iox2-isolation", iox2_isolation::run),
    // A local worker over sivshm and a remote one over zenoh (virtio-net), in one run.
    ("iox2-remote", iox2_remote::run),
    ("stress-fuzz", stress_fuzz::run),
    ("stress-hostile-peer", stress_hostile_peer::run),
    // The host drives this one while the guests run: it also reports what it checked.
    ("hotplug", hotplug::run),
    // A worker's segment grown and shrunk under load: the host plugs what the guest asks.
    ("resize", resize::run),
];

impl Suite<'_> {
    /// Runs every scenario whose name contains `filter`.
    pub fn run(&self, filter: &str) -> Result<Vec<CaseResult>> {
        let mut all = Vec::new();
        let chosen: Vec<_> = SCENARIOS
            .iter()
            .filter(|(name, _)| name.contains(filter))
            .collect();
        let mut progress = crate::progress::Progress::new("guest scenarios", chosen.len() as u64);
        for (i, (name, f)) in chosen.into_iter().enumerate() {
            progress.set(i as u64, name);
            eprintln!("# scenario {name}");
            let ran = f(self)?;
            all.extend(self.judge(name, &ran.tap, true));
            all.extend(self.judge(name, &ran.plain, false));
            all.extend(ran.host);
            progress.set(i as u64 + 1, name);
        }
        Ok(all)
    }
}

/// The guests of a scenario, and what must stay open while they run.
pub(super) struct Plan {
    pub(super) vms: Vec<Vm>,
    /// Our ends of the chardev sockets: QEMU sees a closed one as a disconnected server.
    pub(super) _keep: Vec<OwnedFd>,
}

impl Plan {
    pub(super) fn run(self, s: &Suite<'_>) -> Result<Vec<Finished>> {
        run_all(s.machine, &self.vms, s.logdir, s.timeout)
    }
}
