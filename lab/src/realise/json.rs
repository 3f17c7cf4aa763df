//! The realise benchmark's run as data: what `realise-bench --json FILE` writes (schema
//! [`SCHEMA`], Documentation/results-json.rst) and what its table and plot are made from,
//! both in the run that measured and by `sivshm-lab plot --from FILE` later.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::table::{header, medians, prepare_row, row, Sample};
use super::{Options, Wiring};
use crate::run_file::RunFile;

/// The `schema` member: changes when a member is removed, renamed or changes its type or
/// meaning; members may be added without a change.
pub const SCHEMA: &str = "sivshm-lab/realise-bench/1";

/// One run of the realise benchmark: how it was run, and every sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealiseRun {
    pub schema: String,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// Runs per point and wiring.
    pub runs: usize,
    pub segment_mib: u64,
    /// The worker counts, in the order measured.
    pub workers: Vec<usize>,
    /// The wirings measured, in table order.
    pub modes: Vec<Wiring>,
    pub samples: Vec<Sample>,
}

impl RunFile for RealiseRun {
    const SCHEMA: &'static str = SCHEMA;
    const WHAT: &'static str = "a realise benchmark run";

    fn schema(&self) -> &str {
        &self.schema
    }
}

impl RealiseRun {
    pub fn new(o: &Options, samples: Vec<Sample>) -> RealiseRun {
        RealiseRun {
            schema: SCHEMA.to_string(),
            accel: o.accel.clone(),
            runs: o.runs,
            segment_mib: o.segment_mib,
            workers: o.workers.clone(),
            modes: o.wirings(),
            samples,
        }
    }

    /// The table (header, a row per count, then the preparation lines), as the bench prints
    /// it at its end.
    pub fn table(&self) -> Vec<String> {
        let mut out = vec![header(&self.modes)];
        for &n in &self.workers {
            out.push(row(n, &self.modes, &self.samples));
        }
        for &n in &self.workers {
            out.push(prepare_row(n, &self.modes, &self.samples));
        }
        out
    }

    /// The table's medians, seconds against N per wiring, as an SVG file.
    pub fn plot(&self, path: &Path) -> Result<()> {
        let lines: Vec<_> = self
            .modes
            .iter()
            .map(|&w| crate::plot::Line::new(w.title(), medians(w, &self.workers, &self.samples)))
            .collect();
        let title = format!(
            "Realising a manager and N workers, paused: launch to all ready ({}, {} run(s) per \
             point)",
            self.accel, self.runs
        );
        crate::plot::realise(path, &title, &lines)
    }
}
