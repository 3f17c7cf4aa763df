//! The channel benchmark's tables, from the `sivshm-probe` result lines of one run.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::ProbeOptions;
use crate::console::ResultLine;

/// The program whose results the channel benchmark reads (`sivshm-probe`, and the C path's
/// `sivshm_capi_probe`).
pub(super) const PROBE: &str = "probe";

/// One `SIVSHM-RESULT probe kind=latency|throughput transport=NAME k=v ...` line of
/// `sivshm-probe`, its figures as numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub(super) kind: String,
    pub(super) transport: String,
    pub(super) values: BTreeMap<String, f64>,
}

/// The figures of a probe result line; None for a line without a kind, a transport, or a
/// number where one belongs.
pub(super) fn parse_probe(line: &ResultLine) -> Option<Probe> {
    let kind = line.get("kind")?;
    if kind != "latency" && kind != "throughput" {
        return None;
    }
    let values = line
        .values
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "kind" | "transport"))
        .map(|(k, v)| Some((k.clone(), v.parse().ok()?)))
        .collect::<Option<_>>()?;
    Some(Probe {
        kind: kind.to_string(),
        transport: line.get("transport")?.to_string(),
        values,
    })
}

pub(super) fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The table of one run's probe lines (see Documentation/results.rst): throughput per size, round trips,
/// the ratios and the sivshm channel's rings per message; then, where the run has them, the
/// shm-copy reference (the sender's copy alone) and what it says: sivshm / shm-copy is what
/// the channel costs beyond its copy, shm-copy / memcpy what the volatile copy into a
/// ring-sized area costs against a plain one.
pub(super) fn table(probes: &[Probe], o: &ProbeOptions) -> Result<Vec<String>> {
    let find = |kind: &str, transport: &str, size: usize| {
        probe(probes, kind, transport, size)
            .with_context(|| format!("no {kind} figure for {transport} at {size} bytes"))
    };
    let get = |p: &Probe, k: &str| {
        p.values
            .get(k)
            .copied()
            .with_context(|| format!("{} {}: no {k}", p.kind, p.transport))
    };
    let mut t = vec![
        "| | sivshm channel | TCP over virtio-net | in-VM reference: memcpy, pipe for round \
         trips | sivshm / TCP | sivshm / reference | sivshm rings per message \
         | in-VM shm-copy (the sender's copy alone) | sivshm / shm-copy | shm-copy / memcpy |"
            .to_string(),
        "|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for &size in &o.sizes {
        let (s, n, c) = (
            find("throughput", "sivshm", size)?,
            find("throughput", "tcp", size)?,
            find("throughput", "memcpy", size)?,
        );
        let cell = |p: &Probe| -> Result<String> {
            Ok(format!(
                "{:.1} MiB/s ({:.0} msg/s)",
                get(p, "mib_s")?,
                get(p, "msgs_s")?
            ))
        };
        let copy = match find("throughput", "shm-copy", size) {
            Ok(k) => format!(
                "{} | {:.2} | {:.2}",
                cell(k)?,
                get(s, "mib_s")? / get(k, "mib_s")?,
                get(k, "mib_s")? / get(c, "mib_s")?
            ),
            Err(_) => "n/a | |".to_string(),
        };
        t.push(format!(
            "| throughput, {} messages | {} | {} | {} | {:.1}x | {:.2} | {:.3} | {copy} |",
            size_name(size),
            cell(s)?,
            cell(n)?,
            cell(c)?,
            get(s, "mib_s")? / get(n, "mib_s")?,
            get(s, "mib_s")? / get(c, "mib_s")?,
            get(s, "rings_per_msg")?,
        ));
    }
    let size = o.round_trip_size;
    let (s, n, f) = (
        find("latency", "sivshm", size)?,
        find("latency", "tcp", size)?,
        find("latency", "pipe", size)?,
    );
    for (q, key) in [("p50", "p50_us"), ("p99", "p99_us")] {
        t.push(format!(
            "| round trip {q}, {} | {:.0} us | {:.0} us | {:.0} us | \
             TCP / sivshm {:.1}x | {:.1}x the floor | {} | | | |",
            size_name(size),
            get(s, key)?,
            get(n, key)?,
            get(f, key)?,
            get(n, key)? / get(s, key)?,
            get(s, key)? / get(f, key)?,
            if q == "p50" {
                format!("{:.2} per round trip", get(s, "rings_per_rt")?)
            } else {
                String::new()
            }
        ));
    }
    Ok(t)
}

/// Issue 25's targets for the channel between two VMs, by message size: at least this share
/// of (shm-copy, the rtrb crate between two threads, the same channel between two threads).
fn targets(size: usize) -> (f64, f64, f64) {
    match size {
        s if s <= 64 => (0.5, 0.5, 0.9),
        s if s < 65536 => (0.8, 0.0, 0.9),
        _ => (0.9, 0.0, 0.9),
    }
}

/// The message rate (`msgs_s`) of `transport`'s throughput result at `size` bytes, if the run
/// has one.
pub(super) fn throughput_rate(probes: &[Probe], transport: &str, size: usize) -> Option<f64> {
    value(probes, "throughput", transport, size, "msgs_s")
}

/// The probe of `kind` over `transport` at `size` bytes, if the run has one.
pub(super) fn probe<'a>(
    probes: &'a [Probe],
    kind: &str,
    transport: &str,
    size: usize,
) -> Option<&'a Probe> {
    probes.iter().find(|p| {
        p.kind == kind && p.transport == transport && p.values.get("size") == Some(&(size as f64))
    })
}

/// Figure `key` of that probe.
pub(super) fn value(
    probes: &[Probe],
    kind: &str,
    transport: &str,
    size: usize,
    key: &str,
) -> Option<f64> {
    probe(probes, kind, transport, size).and_then(|p| p.values.get(key).copied())
}

/// The channel between the VMs against the in-VM references of the same run, message rates
/// and ratios, each ratio marked with its target: the sender's copy alone (shm-copy), an SPSC
/// ring crate between two threads (rtrb), the same channel between two threads
/// (channel-local: what the VM boundary costs). Sizes a run has no reference for say n/a.
pub(super) fn references(probes: &[Probe], o: &ProbeOptions) -> Result<Vec<String>> {
    let rate = |transport: &str, size: usize| throughput_rate(probes, transport, size);
    let mut t = vec![
        "| message | sivshm (msg/s) | channel-local | rtrb | shm-copy | sivshm / channel-local \
         | sivshm / rtrb | sivshm / shm-copy |"
            .to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let ratio = |s: f64, r: Option<f64>, target: f64| match r {
        Some(r) if r > 0.0 => {
            let q = s / r;
            match target {
                0.0 => format!("{q:.2}"),
                t if q >= t => format!("{q:.2} (>= {t}) (target met)"),
                t => format!("{q:.2} (>= {t}) (below target)"),
            }
        }
        _ => "n/a".to_string(),
    };
    for &size in &o.sizes {
        let s = rate("sivshm", size)
            .with_context(|| format!("no sivshm throughput at {size} bytes"))?;
        let (c, r, k) = (
            rate("channel-local", size),
            rate("rtrb", size),
            rate("shm-copy", size),
        );
        let (tk, tr, tc) = targets(size);
        let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
        t.push(format!(
            "| {} | {s:.0} | {} | {} | {} | {} | {} | {} |",
            size_name(size),
            cell(c),
            cell(r),
            cell(k),
            ratio(s, c, tc),
            ratio(s, r, tr),
            ratio(s, k, tk),
        ));
    }
    Ok(t)
}

/// The throughput figures the tables are made of, as plot lines: messages/s against size,
/// one line per transport in the order the run printed them (sivshm first), at `o.sizes`.
pub(super) fn throughput_lines(probes: &[Probe], o: &ProbeOptions) -> Vec<crate::plot::Line> {
    let mut names: Vec<&str> = vec!["sivshm"];
    for p in probes.iter().filter(|p| p.kind == "throughput") {
        if !names.contains(&p.transport.as_str()) {
            names.push(&p.transport);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let points = o
                .sizes
                .iter()
                .filter_map(|&size| Some((size as f64, throughput_rate(probes, name, size)?)))
                .collect();
            crate::plot::Line::new(name, points)
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

/// The transports users would pick instead, between the same two VMs (vsock, TCP), message
/// rate by size, each with sivshm's lead over it (the target: ahead, above 1); then the
/// 64 B round trip's p50 over each, and over the same channel between two threads of the
/// manager VM (channel-local), with the target of the channel between the VMs: at most
/// twice that. A transport the run did not measure says n/a.
pub(super) fn alternatives(probes: &[Probe], o: &ProbeOptions) -> Result<Vec<String>> {
    let find = |kind: &str, transport: &str, size: usize, key: &str| {
        value(probes, kind, transport, size, key)
    };
    let lead = |s: f64, r: Option<f64>| match r {
        Some(r) if r > 0.0 => {
            let q = s / r;
            let verdict = if q > 1.0 { "ahead" } else { "behind" };
            format!("{q:.1}x ({verdict})")
        }
        _ => "n/a".to_string(),
    };
    let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    let mut t = vec![
        "| message | sivshm (msg/s) | vsock | TCP | sivshm / vsock | sivshm / TCP |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    for &size in &o.sizes {
        let s = find("throughput", "sivshm", size, "msgs_s")
            .with_context(|| format!("no sivshm throughput at {size} bytes"))?;
        let (v, n) = (
            find("throughput", "vsock", size, "msgs_s"),
            find("throughput", "tcp", size, "msgs_s"),
        );
        t.push(format!(
            "| {} | {s:.0} | {} | {} | {} | {} |",
            size_name(size),
            cell(v),
            cell(n),
            lead(s, v),
            lead(s, n),
        ));
    }
    let size = o.round_trip_size;
    let us = |transport: &str| find("latency", transport, size, "p50_us");
    let s = us("sivshm").with_context(|| format!("no sivshm round trip at {size} bytes"))?;
    let (c, v, n) = (us("channel-local"), us("vsock"), us("tcp"));
    let us_cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} us"));
    let local = match c {
        Some(c) if c > 0.0 => {
            let q = s / c;
            let verdict = if q <= 2.0 {
                "target met"
            } else {
                "above target"
            };
            format!("{q:.2} (<= 2) ({verdict})")
        }
        _ => "n/a".to_string(),
    };
    let slower = |r: Option<f64>| match r {
        Some(r) if s > 0.0 => format!("{:.0}x", r / s),
        _ => "n/a".to_string(),
    };
    t.push(String::new());
    t.push(
        "| round trip p50 | sivshm | channel-local (two threads of one VM) | vsock | TCP \
         | sivshm / channel-local | vsock / sivshm | TCP / sivshm |"
            .to_string(),
    );
    t.push("|---|---|---|---|---|---|---|---|".to_string());
    t.push(format!(
        "| {} | {} | {} | {} | {} | {local} | {} | {} |",
        size_name(size),
        us_cell(Some(s)),
        us_cell(c),
        us_cell(v),
        us_cell(n),
        slower(v),
        slower(n),
    ));
    Ok(t)
}
