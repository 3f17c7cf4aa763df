//! `sivshm-lab plot --from FILE.json`: a benchmark run's tables and plot, made from the JSON
//! the run wrote (`bench --what channel --json`, `realise-bench --json`, `wiring-bench
//! --json`) by the same functions the run used, so that no table or plot is ever made from
//! numbers typed by hand. The file's `schema` member says which benchmark it is.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::{bench, realise, wiring};

/// The tables of the run in `from`, and its plot drawn to `svg` if given.
pub fn from_file(from: &Path, svg: Option<&Path>) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
    from_text(&text, svg).with_context(|| format!("{}", from.display()))
}

fn from_text(text: &str, svg: Option<&Path>) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let schema = v["schema"]
        .as_str()
        .context("no \"schema\" member: not a sivshm-lab benchmark run")?;
    let plotted = |out: &mut Vec<String>| {
        if let Some(p) = svg {
            out.push(format!("# plot: {}", p.display()));
        }
    };
    match schema {
        bench::json::SCHEMA => bench::report(&bench::json::ChannelRun::from_json(text)?, svg),
        realise::json::SCHEMA => {
            let run = realise::json::RealiseRun::from_json(text)?;
            let mut out = run.table();
            if let Some(p) = svg {
                run.plot(p)?;
            }
            plotted(&mut out);
            Ok(out)
        }
        wiring::JSON_SCHEMA => {
            let f = wiring::from_json(text)?;
            let mut out = wiring::table(&f);
            if let Some(p) = svg {
                wiring::plot(&f, p)?;
            }
            plotted(&mut out);
            Ok(out)
        }
        s => bail!(
            "schema {s:?} is not one this sivshm-lab reads ({}, {}, {})",
            bench::json::SCHEMA,
            realise::json::SCHEMA,
            wiring::JSON_SCHEMA
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_told_by_its_schema_and_others_are_refused() {
        let f = wiring::measure(&[2, 4]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("w.svg");
        let out = from_text(&wiring::json(&f), Some(&svg)).unwrap();
        assert_eq!(out[..out.len() - 1], wiring::table(&f)[..]);
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
        for (text, want) in [
            (
                "{\"schema\": \"sivshm-lab/other/1\"}",
                "is not one this sivshm-lab reads",
            ),
            ("{\"rows\": []}", "no \"schema\" member"),
            ("[1, 2", "not JSON"),
            (
                "{\"schema\": \"sivshm-lab/realise-bench/1\", \"accel\": 3}",
                "not a realise benchmark run",
            ),
        ] {
            let e = format!("{:#}", from_text(text, None).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
