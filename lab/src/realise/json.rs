//! The realise benchmark's run as data: what `realise-bench --json FILE` writes (schema
//! [`SCHEMA`], Documentation/results-json.rst) and what its table and plot are made from,
//! both in the run that measured and by `sivshm-lab plot --from FILE` later.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::table::{header, medians, prepare_row, row, Sample};
use super::{Options, Wiring};

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

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a realise run is plain data")
    }

    /// A run read back; a file of another schema is refused, naming it.
    pub fn from_json(text: &str) -> Result<RealiseRun> {
        let run: RealiseRun =
            serde_json::from_str(text).context("not a realise benchmark run (schema 1)")?;
        ensure!(
            run.schema == SCHEMA,
            "schema {:?}, not {SCHEMA:?}",
            run.schema
        );
        Ok(run)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))
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
