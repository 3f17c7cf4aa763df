//! `sivshm-lab plot --from FILE.json`: a benchmark run's tables and plot, made from the JSON
//! the run wrote (`bench --what channel --json`, `realise-bench --json`, `wiring-bench
//! --json`) by the same functions the run used, so that no table or plot is ever made from
//! numbers typed by hand. The file's `schema` member says which benchmark it is.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use crate::run_file::RunFile;
use crate::{bench, realise, wiring};

/// The tables of the run in `from` (as the bench prints them, or with `rst` as
/// reStructuredText for Documentation/), and its plot drawn to `svg` if given.
pub fn from_file(from: &Path, svg: Option<&Path>, rst: bool) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
    let lines = from_text(&text, svg).with_context(|| format!("{}", from.display()))?;
    Ok(if rst { to_rst(&lines) } else { lines })
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
        bench::iox2::SCHEMA => {
            ensure!(
                svg.is_none(),
                "an iceoryx2 benchmark run has a table, no plot"
            );
            bench::iox2::report(&bench::iox2::Iox2Run::from_json(text)?)
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
            "schema {s:?} is not one this sivshm-lab reads ({}, {}, {}, {})",
            bench::json::SCHEMA,
            bench::iox2::SCHEMA,
            realise::json::SCHEMA,
            wiring::JSON_SCHEMA
        ),
    }
}

/// The cells of a `| a | b |` table line; None for other lines.
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

/// Whether a table row is the `|---|---|` line under a header.
fn is_rule(row: &[String]) -> bool {
    row.iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-'))
}

/// A run's lines as reStructuredText: each `| a | b |` table (its header the row above its
/// `|---|` line) as a grid table, each `# ` comment as a paragraph, other lines as a literal
/// block.
pub fn to_rst(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if cells(&lines[i]).is_none() {
            let l = &lines[i];
            match l.strip_prefix("# ") {
                Some(text) => out.push(text.to_string()),
                None => out.extend(["::".to_string(), String::new(), format!("   {l}")]),
            }
            out.push(String::new());
            i += 1;
            continue;
        }
        // The tables printed one after the other: each starts at the row above a rule.
        let mut block = Vec::new();
        while let Some(r) = lines.get(i).and_then(|l| cells(l)) {
            block.push(r);
            i += 1;
        }
        let mut tables: Vec<(Vec<Vec<String>>, bool)> = Vec::new();
        for (k, r) in block.iter().enumerate() {
            if is_rule(r) {
                continue;
            }
            let heads = block.get(k + 1).is_some_and(|n| is_rule(n));
            match tables.last_mut() {
                Some((rows, _)) if !heads => rows.push(r.clone()),
                _ => tables.push((vec![r.clone()], heads)),
            }
        }
        for (rows, header) in &tables {
            out.extend(grid(rows, *header));
            out.push(String::new());
        }
    }
    out
}

/// One grid table; its first row a header if `header`.
fn grid(rows: &[Vec<String>], header: bool) -> Vec<String> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|k| {
            rows.iter()
                .map(|r| r.get(k).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(1)
        })
        .collect();
    let rule = |c: char| {
        let mut l = String::from("+");
        for w in &widths {
            l += &c.to_string().repeat(w + 2);
            l.push('+');
        }
        l
    };
    let mut out = vec![rule('-')];
    for (k, r) in rows.iter().enumerate() {
        let mut l = String::from("|");
        for (j, w) in widths.iter().enumerate() {
            let c = r.get(j).map_or("", String::as_str);
            l += &format!(" {c:<w$} |");
        }
        out.push(l);
        out.push(rule(if k == 0 && header { '=' } else { '-' }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every run checked in under Documentation/plots reads back, and every grid table that
    /// Documentation/results.rst shows of a run is the one `plot --from --rst` makes of it.
    #[test]
    fn the_documented_runs_give_the_documented_tables() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Documentation");
        let results = std::fs::read_to_string(docs.join("results.rst")).unwrap();
        let mut runs = 0;
        for entry in std::fs::read_dir(docs.join("plots")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            runs += 1;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let lines = from_file(&path, None, true).unwrap();
            if !results.contains(&format!("plots/{name}")) {
                continue;
            }
            // The C path's table, as results.rst shows it after naming the file.
            let at = lines
                .iter()
                .position(|l| l.starts_with("| message | Rust channel"))
                .unwrap();
            let table = lines[at - 1..at + 6].join("\n");
            let after = &results[results.find(&format!("plots/{name}")).unwrap()..];
            assert!(
                after.contains(&table),
                "results.rst does not show {name}'s table:\n{table}"
            );
        }
        assert!(runs > 0, "no run checked in under Documentation/plots");
    }

    #[test]
    fn tables_become_grid_tables_and_comments_paragraphs() {
        let lines: Vec<String> = [
            "# a run",
            "| | x | ratio |",
            "|---|---|---|",
            "| 64 KiB | 10 | 0.960 (>= 0.95) |",
            "| 1 MiB | 1 | |",
            "| n | y |",
            "|---|---|",
            "| 2 | 3 |",
            "plain",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            to_rst(&lines),
            [
                "a run",
                "",
                "+--------+----+-----------------+",
                "|        | x  | ratio           |",
                "+========+====+=================+",
                "| 64 KiB | 10 | 0.960 (>= 0.95) |",
                "+--------+----+-----------------+",
                "| 1 MiB  | 1  |                 |",
                "+--------+----+-----------------+",
                "",
                "+---+---+",
                "| n | y |",
                "+===+===+",
                "| 2 | 3 |",
                "+---+---+",
                "",
                "::",
                "",
                "   plain",
                "",
            ]
        );
    }

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
