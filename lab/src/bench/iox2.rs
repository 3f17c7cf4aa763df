//! The iceoryx2 benchmark (issue 28, item 5): iceoryx2 over sivshm (the gateways of ipc/)
//! against iceoryx2 over zenoh/TCP over virtio-net (the same gateways, zenoh carrier) and
//! against two processes of one VM (the ceiling), in one boot of the same two VMs.
//!
//! The manager VM runs `sivshm-iox2 bench-drive` three times: with its gateway linked to the
//! worker over the sivshm channel, then with its gateway linked to the worker over zenoh on
//! the virtio-net link (the worker VM runs the matching gateway and `bench-serve` for
//! these), then against a `bench-serve` in its own VM (no gateway). Only one gateway pair
//! runs at a time. The driver's `SIVSHM-RESULT iox2-bench` lines have the channel
//! benchmark's form (`kind`, `transport`, `size`, figures), parsed by [`parse_probe`].

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::table::{parse_probe, size_name, Probe};
use super::{succeeded, ProbeOptions};
use crate::layout::{Layout, Roles, Topology};
use crate::qemu::Machine;
use crate::run_file::RunFile;

/// The program whose results this benchmark reads.
const PROGRAM: &str = "iox2-bench";
/// The zenoh port the worker's gateway listens on.
const ZENOH_PORT: u16 = 7447;
/// Guest memory for this benchmark at least: the 1 MiB stream's iceoryx2 pools (the app's
/// publisher and the gateway's mirror, a window of samples each) beside the initramfs.
const MEMORY_MIB: u32 = 512;
/// The three paths, as the driver names them.
const IN_VM: &str = "in-vm";
const SIVSHM: &str = "sivshm";
const ZENOH: &str = "zenoh";
/// The targets of issue 28: sivshm at least this many times zenoh's throughput at 64 KiB
/// and above, and its round-trip p50 at most this share of zenoh's.
const THROUGHPUT_TARGET: f64 = 10.0;
const THROUGHPUT_TARGET_FROM: usize = 64 << 10;
const P50_TARGET: f64 = 0.1;

/// The schema of the run's JSON (Documentation/results-json.rst).
pub const SCHEMA: &str = "sivshm-lab/iox2-bench/1";

/// One run, as data.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Iox2Run {
    pub schema: String,
    pub accel: String,
    pub memory_mib: u32,
    pub options: ProbeOptions,
    /// Every `iox2-bench` line of the driver, in order.
    pub probes: Vec<Probe>,
}

impl RunFile for Iox2Run {
    const SCHEMA: &'static str = SCHEMA;
    const WHAT: &'static str = "an iceoryx2 benchmark run";

    fn schema(&self) -> &str {
        &self.schema
    }
}

struct Bench<'a>(&'a ProbeOptions);

impl Bench<'_> {
    fn common(&self, prefix: &str) -> String {
        let sizes: Vec<String> = self.0.sizes.iter().map(usize::to_string).collect();
        format!(
            "--prefix {prefix} --window {} --round-trips {} --sizes {}",
            self.0.window,
            self.0.round_trips,
            sizes.join(",")
        )
    }

    fn drive(&self, prefix: &str, transport: &str) -> String {
        format!(
            "sivshm-iox2 bench-drive {} --transport {transport} --seconds {}",
            self.common(prefix),
            self.0.seconds
        )
    }

    fn serve(&self, prefix: &str) -> String {
        format!("sivshm-iox2 bench-serve {}", self.common(prefix))
    }
}

/// `cmd` beside a gateway of `args`, which is stopped after it; fails with `cmd`.
fn with_gateway(window: usize, args: &str, cmd: &str) -> String {
    format!(
        "{{ sivshm-iox2 gateway --results --mirror-buffer {window} {args} & gw=$!; {cmd}; rc=$?; sleep 1; kill $gw; \
         wait $gw; [ $rc = 0 ]; }}"
    )
}

impl Roles for Bench<'_> {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        let remote = crate::net::worker_addr(0);
        let local = format!(
            "{{ {} & s=$!; {}; rc=$?; wait $s && [ $rc = 0 ]; }}",
            self.serve("bench/local"),
            self.drive("bench/local", IN_VM)
        );
        let sivshm = with_gateway(
            self.0.window,
            &format!("--worker 'w0@sivshm:{}@bench/w0/**'", bdfs[0]),
            &self.drive("bench/w0/sivshm", SIVSHM),
        );
        // The worker's zenoh gateway starts once its sivshm phase is over: give it a moment
        // to listen.
        let zenoh = with_gateway(
            self.0.window,
            &format!("--worker 'w0@zenoh:tcp/{remote}:{ZENOH_PORT}@bench/w0/**'"),
            &self.drive("bench/w0/zenoh", ZENOH),
        );
        // The ceiling last: the worker VM is done (powered off) by then, and its gateway never
        // waits for the manager's channel longer than the channel's attach timeout.
        format!("{sivshm} && sleep 2 && {zenoh} && {local}")
    }

    fn worker(&self, _index: usize, _layout: &Layout) -> String {
        let sivshm = with_gateway(
            self.0.window,
            "--to-manager w0@sivshm:/dev/sivshm0",
            &self.serve("bench/w0/sivshm"),
        );
        let zenoh = with_gateway(
            self.0.window,
            &format!("--to-manager w0@zenoh:tcp/0.0.0.0:{ZENOH_PORT}"),
            &self.serve("bench/w0/zenoh"),
        );
        format!("{sivshm} && {zenoh}")
    }
}

/// Boots the manager and one worker (a sivshm channel and a virtio-net link between them),
/// runs the three paths one after the other, and prints the table.
pub fn run(
    m: &Machine,
    logdir: &Path,
    timeout: Duration,
    o: &ProbeOptions,
    json: Option<&Path>,
) -> Result<Vec<String>> {
    anyhow::ensure!(!o.sizes.is_empty(), "--sizes must list at least one size");
    let m = Machine {
        memory_mib: m.memory_mib.max(MEMORY_MIB),
        ..m.clone()
    };
    let segment = crate::layout::segment_bytes(o.segment_mib)?;
    let finished = Topology::new(1, segment, &Bench(o))?
        .network()?
        .run(&m, logdir, timeout)?;
    let (mut lines, mut probes) = (Vec::new(), Vec::new());
    for f in &finished {
        for line in succeeded(f)?.results_of(PROGRAM) {
            probes.push(
                parse_probe(line).with_context(|| format!("{}: {}", f.name, line.to_line()))?,
            );
            lines.push(line.to_line());
        }
    }
    let run = Iox2Run {
        schema: SCHEMA.to_string(),
        accel: m.accel.name().to_string(),
        memory_mib: m.memory_mib,
        options: o.clone(),
        probes,
    };
    let mut out = vec![heading(&run)];
    out.extend(lines);
    out.extend(table(&run.probes, o)?);
    if let Some(path) = json {
        run.write(path)?;
        out.push(format!("# json: {}", path.display()));
    }
    Ok(out)
}

/// The heading and table of a run read back (`sivshm-lab plot --from`).
pub fn report(run: &Iox2Run) -> Result<Vec<String>> {
    let mut out = vec![heading(run)];
    out.extend(table(&run.probes, &run.options)?);
    Ok(out)
}

fn heading(run: &Iox2Run) -> String {
    let o = &run.options;
    format!(
        "# iceoryx2 across VMs: sivshm gateways vs zenoh gateways (TCP over virtio-net) vs two \
         processes of one VM; a manager and a worker, {}, 1 vCPU and {} MiB each, 2 host \
         cores; {} round trips of 64 B (events for wake-ups), {} s per size, at most {} \
         samples in flight, {} MiB sivshm segment",
        run.accel, run.memory_mib, o.round_trips, o.seconds, o.window, o.segment_mib
    )
}

/// The table: throughput per size and round trips, each path with sivshm's ratios to zenoh
/// (with issue 28's targets, MET or MISSED) and to the in-VM ceiling; then where the copies
/// are.
pub(super) fn table(probes: &[Probe], o: &ProbeOptions) -> Result<Vec<String>> {
    let get = |kind: &str, transport: &str, size: usize, key: &str| {
        super::table::value(probes, kind, transport, size, key)
            .with_context(|| format!("no {kind} {key} for {transport} at {size} bytes"))
    };
    let verdict = |met: bool| if met { "MET" } else { "MISSED" };
    let mut t = vec![
        "| | iceoryx2 over sivshm | iceoryx2 over zenoh/TCP | in one VM (ceiling) \
         | sivshm / zenoh | target | sivshm / in-VM |"
            .to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for &size in &o.sizes {
        let cell = |tr: &str| -> Result<String> {
            Ok(format!(
                "{:.1} MiB/s ({:.0} msg/s)",
                get("throughput", tr, size, "mib_s")?,
                get("throughput", tr, size, "msgs_s")?
            ))
        };
        let s = get("throughput", SIVSHM, size, "msgs_s")?;
        let z = get("throughput", ZENOH, size, "msgs_s")?;
        let c = get("throughput", IN_VM, size, "msgs_s")?;
        let q = s / z;
        let target = if size >= THROUGHPUT_TARGET_FROM {
            format!(
                ">= {THROUGHPUT_TARGET}x: {}",
                verdict(q >= THROUGHPUT_TARGET)
            )
        } else {
            "-".to_string()
        };
        t.push(format!(
            "| throughput, {} | {} | {} | {} | {q:.1}x | {target} | {:.2} |",
            size_name(size),
            cell(SIVSHM)?,
            cell(ZENOH)?,
            cell(IN_VM)?,
            s / c
        ));
    }
    for (q, key) in [("p50", "p50_us"), ("p99", "p99_us")] {
        let (s, z, c) = (
            get("latency", SIVSHM, 64, key)?,
            get("latency", ZENOH, 64, key)?,
            get("latency", IN_VM, 64, key)?,
        );
        let target = match q {
            "p50" => format!("<= {P50_TARGET} of zenoh: {}", verdict(s <= P50_TARGET * z)),
            _ => "-".to_string(),
        };
        t.push(format!(
            "| round trip {q}, 64 B | {s:.0} us | {z:.0} us | {c:.0} us | {:.2} (zenoh {:.1}x \
             slower) | {target} | {:.1}x |",
            s / z,
            z / s,
            s / c
        ));
    }
    let lost: f64 = probes
        .iter()
        .filter(|p| p.kind == "throughput")
        .filter_map(|p| p.values.get("lost"))
        .sum();
    t.push(format!(
        "# samples lost on the way in all streams: {lost:.0}"
    ));
    t.extend(COPIES.iter().map(|l| format!("# {l}")));
    Ok(t)
}

/// Where each path copies a sample (Documentation/iceoryx2.rst).
const COPIES: [&str; 4] = [
    "copies per sample: in one VM, none (the subscriber reads the publisher's memory);",
    "over sivshm, three: the sending gateway into the channel's ring, the receiving gateway \
     out of the ring into a buffer, the tunnel from it into the mirror's loaned sample;",
    "over zenoh, the sending gateway into zenoh's buffer, then TCP, virtio-net and the \
     receiving kernel, out of zenoh's buffer into the loaned sample;",
    "the sender's own copy into its loaned sample is in every path (the application \
     producing its data).",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn probe(kind: &str, transport: &str, size: usize, v: &[(&str, f64)]) -> Probe {
        let mut values: BTreeMap<String, f64> =
            v.iter().map(|(k, x)| (k.to_string(), *x)).collect();
        values.insert("size".into(), size as f64);
        Probe {
            kind: kind.into(),
            transport: transport.into(),
            values,
        }
    }

    fn options() -> ProbeOptions {
        use clap::Parser;
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            o: ProbeOptions,
        }
        let mut o = A::parse_from(["x"]).o;
        o.sizes = vec![64, 65536];
        o
    }

    fn run(sivshm_rate: f64, sivshm_p50: f64) -> Vec<String> {
        let mut p = Vec::new();
        for (t, rate, p50) in [
            (SIVSHM, sivshm_rate, sivshm_p50),
            (ZENOH, 100.0, 2000.0),
            (IN_VM, 5000.0, 100.0),
        ] {
            for size in [64, 65536] {
                let v = [("msgs_s", rate), ("mib_s", rate * size as f64 / 1048576.0)];
                p.push(probe("throughput", t, size, &v));
            }
            p.push(probe(
                "latency",
                t,
                64,
                &[("p50_us", p50), ("p99_us", p50 * 2.0)],
            ));
        }
        table(&p, &options()).unwrap()
    }

    #[test]
    fn targets_met_and_missed() {
        let met = run(1500.0, 150.0).join("\n");
        assert!(met.contains("| 15.0x | >= 10x: MET |"), "{met}");
        assert!(met.contains("<= 0.1 of zenoh: MET"), "{met}");
        let missed = run(500.0, 400.0).join("\n");
        assert!(missed.contains("| 5.0x | >= 10x: MISSED |"), "{missed}");
        assert!(missed.contains("<= 0.1 of zenoh: MISSED"), "{missed}");
        // Below 64 KiB no target.
        assert!(missed.contains("| 5.0x | - |"), "{missed}");
    }

    #[test]
    fn the_json_of_a_run_gives_back_the_same_table() {
        let probes = |rate: f64| {
            let mut p = Vec::new();
            for t in [SIVSHM, ZENOH, IN_VM] {
                for size in [64, 65536] {
                    p.push(probe(
                        "throughput",
                        t,
                        size,
                        &[("msgs_s", rate), ("mib_s", 1.0)],
                    ));
                }
                p.push(probe(
                    "latency",
                    t,
                    64,
                    &[("p50_us", 9.0), ("p99_us", 20.0)],
                ));
            }
            p
        };
        let run = Iox2Run {
            schema: SCHEMA.into(),
            accel: "tcg".into(),
            memory_mib: MEMORY_MIB,
            options: options(),
            probes: probes(42.0),
        };
        let text = run.to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for member in ["schema", "accel", "memory_mib", "options", "probes"] {
            assert!(v.get(member).is_some(), "{member} in {text}");
        }
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["probes"][0]["transport"], SIVSHM);
        let back = Iox2Run::from_json(&text).unwrap();
        let other = text.replace(SCHEMA, "sivshm-lab/channel-bench/1");
        assert!(
            Iox2Run::from_json(&other).is_err(),
            "another schema is refused"
        );
        assert_eq!(
            table(&back.probes, &back.options).unwrap(),
            table(&run.probes, &run.options).unwrap()
        );
    }

    #[test]
    fn a_missing_path_is_an_error() {
        let p = vec![probe(
            "throughput",
            SIVSHM,
            64,
            &[("msgs_s", 1.0), ("mib_s", 1.0)],
        )];
        let e = table(&p, &options()).unwrap_err().to_string();
        assert!(e.contains("zenoh"), "{e}");
    }
}
