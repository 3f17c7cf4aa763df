//! A benchmark run kept as data: one JSON file whose `schema` member names the kind of run
//! and its version (Documentation/results-json.rst). What every kind of run shares: written
//! pretty, read back only under its own schema, a file of another schema refused, naming it.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A benchmark run that is written to and read from a JSON file of schema [`RunFile::SCHEMA`].
pub trait RunFile: Serialize + DeserializeOwned {
    /// The `schema` member of this kind of run.
    const SCHEMA: &'static str;
    /// What the run is, for errors: "a channel benchmark run".
    const WHAT: &'static str;

    /// The run's own `schema` member.
    fn schema(&self) -> &str;

    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a benchmark run is plain data")
    }

    /// A run read back; a file of another schema is refused, naming it.
    fn from_json(text: &str) -> Result<Self> {
        let run: Self = serde_json::from_str(text)
            .with_context(|| format!("not {} ({})", Self::WHAT, Self::SCHEMA))?;
        ensure!(
            run.schema() == Self::SCHEMA,
            "schema {:?}, not {:?}",
            run.schema(),
            Self::SCHEMA
        );
        Ok(run)
    }

    /// Writes the run to `path`.
    fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }
}
