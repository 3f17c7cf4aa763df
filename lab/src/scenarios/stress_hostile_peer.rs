//! stress-hostile-peer: a worker that storms the doorbell and scribbles over its segment,
//! next to an honest one.

use anyhow::Result;

use super::{Ran, Stress, Suite};
use crate::layout::{Layout, Roles, Topology};

/// A manager, an honest worker 0 and a hostile worker 1 that storms the doorbell and scribbles
/// over its segment (see `selftests/sivshm_hostile.c`).
struct HostilePeer {
    storm_seconds: u64,
}

impl Roles for HostilePeer {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        // Worker i is peer i + 1 on its channel (layout.rs): the hostile one is peer 2.
        format!(
            "sivshm_hostile victim --honest {} --hostile {} --peer 2 --quiet 2 --storm 2 \
             --rounds 16 --bytes 262144",
            bdfs[0], bdfs[1]
        )
    }

    fn worker(&self, index: usize, _layout: &Layout) -> String {
        if index == 0 {
            "sivshm-distribute worker --only-device --timeout 120".to_string()
        } else {
            format!(
                "sivshm_hostile storm --device /dev/sivshm0 --seconds {} --wait-start 120",
                self.storm_seconds
            )
        }
    }
}

pub(super) fn plan(b: &Stress) -> Result<Topology> {
    let roles = HostilePeer {
        storm_seconds: b.storm_seconds,
    };
    Topology::new(2, 2 << 20, &roles)
}

pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    Ok(Ran::plain(
        plan(&s.stress)?.run(s.machine, s.logdir, s.timeout)?,
    ))
}
