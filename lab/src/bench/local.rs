//! `sivshm-lab local-bench`: the in-process transports of `sivshm-probe` on this machine (no
//! guest), several runs each, their medians and spread, and the channel's ratios to its
//! references, all read from the probe's `SIVSHM-RESULT probe` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use super::table::{parse_probe, Probe, PROBE};
use crate::console;
use crate::spread::Spread;

/// The transports measured, in the order they run.
const TRANSPORTS: [&str; 4] = ["channel-local", "rtrb", "shm-copy", "memcpy"];

/// Runs `probe throughput --transport T --sizes .. --seconds ..` `runs` times for each
/// transport; prints each result line as it comes, then the table.
pub fn run(probe: &Path, runs: usize, seconds: f64, sizes: &[usize]) -> Result<Vec<String>> {
    ensure!(
        runs > 0 && !sizes.is_empty(),
        "--runs and --sizes must not be empty"
    );
    let list = sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut probes = Vec::new();
    for _ in 0..runs {
        for t in TRANSPORTS {
            let out = Command::new(probe)
                .args(["throughput", "--transport", t, "--sizes", &list])
                .args(["--seconds", &seconds.to_string()])
                .output()
                .with_context(|| format!("running {}", probe.display()))?;
            ensure!(
                out.status.success(),
                "{} throughput --transport {t}: {}\n{}",
                probe.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            for line in console::parse(&String::from_utf8_lossy(&out.stdout)).results_of(PROBE) {
                eprintln!("# {}", line.to_line());
                probes.push(parse_probe(line).with_context(|| line.to_line())?);
            }
        }
    }
    Ok(table(&probes))
}

/// Median, min and max of the message rates of each (transport, size), then the channel's
/// ratio to each reference at each size (the median of an even count of runs is the mean of
/// the middle two).
fn table(probes: &[Probe]) -> Vec<String> {
    let mut rates: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    for p in probes.iter().filter(|p| p.kind == "throughput") {
        if let (Some(&size), Some(&rate)) = (p.values.get("size"), p.values.get("msgs_s")) {
            rates
                .entry((size as usize, p.transport.as_str()))
                .or_default()
                .push(rate);
        }
    }
    let spread: BTreeMap<_, _> = rates
        .iter()
        .filter_map(|(k, v)| Some((*k, Spread::of(v.iter().copied())?)))
        .collect();
    let median = |k| spread.get(&k).map(|s| s.median);
    let fmt = |n: f64| match n {
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n => format!("{:.1} k", n / 1e3),
    };
    let mut t = vec![format!(
        "{:<14}{:>8}  {:>14}  {:>22}  {:>8}",
        "transport", "size", "median msgs/s", "spread (min..max)", "MiB/s"
    )];
    for (&(size, name), s) in &spread {
        t.push(format!(
            "{name:<14}{size:>8}  {:>14}  {:>22}  {:>8.0}",
            fmt(s.median),
            format!("{}..{}", fmt(s.min), fmt(s.max)),
            s.median * size as f64 / f64::from(1 << 20)
        ));
    }
    let sizes: BTreeSet<usize> = spread.keys().map(|k| k.0).collect();
    for size in sizes {
        let Some(c) = median((size, "channel-local")) else {
            continue;
        };
        let parts: Vec<String> = ["shm-copy", "rtrb"]
            .into_iter()
            .filter_map(|r| Some(format!("{r} {:.2}", c / median((size, r))?)))
            .collect();
        t.push(format!("channel-local / size {size}: {}", parts.join(", ")));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_spread_and_ratios_come_from_the_result_lines() {
        let log = [
            (64, "channel-local", 1_000_000),
            (64, "channel-local", 3_000_000),
            (64, "channel-local", 2_000_000),
            (64, "rtrb", 4_000_000),
            (64, "shm-copy", 8_000_000),
            (4096, "memcpy", 500_000),
        ]
        .map(|(size, t, rate)| {
            format!(
                "throughput {t}: prose that is not read\n\
                 SIVSHM-RESULT probe kind=throughput transport={t} size={size} msgs_s={rate}\n"
            )
        })
        .concat();
        let probes: Vec<Probe> = console::parse(&log)
            .results_of(PROBE)
            .map(|l| parse_probe(l).unwrap())
            .collect();
        assert_eq!(probes.len(), 6);
        let t = table(&probes);
        assert!(
            t.iter().any(|l| l.starts_with("channel-local       64")
                && l.contains("2.00 M")
                && l.contains("1.00 M..3.00 M")),
            "{t:#?}"
        );
        assert!(t.contains(&"channel-local / size 64: shm-copy 0.25, rtrb 0.50".to_string()));
        assert!(!t.iter().any(|l| l.contains("size 4096:")), "{t:#?}");
    }
}
