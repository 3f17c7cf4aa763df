//! Benchmarks that boot guests and print figures measured in one run (never pass/fail).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::console;
use crate::layout::{Layout, Roles, Topology};
use crate::net;
use crate::pair::channel;
use crate::qemu::{run_all, Finished, Machine, Vm};
use sivshm_host::pci::PciSlot;
use sivshm_host::segments;

/// One `pingpong NAME: n=.. p50=X us p99=Y us ...` line of the guest.
struct Figures {
    name: String,
    p50: f64,
    p99: f64,
}

fn parse(line: &str) -> Option<Figures> {
    let rest = line.strip_prefix("pingpong ")?;
    let (name, rest) = rest.split_once(": ")?;
    let get = |k: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse::<f64>().ok()))
    };
    Some(Figures {
        name: name.to_string(),
        p50: get("p50=")?,
        p99: get("p99=")?,
    })
}

/// Doorbell round trips between two VMs on one channel, and the eventfd floor in one VM.
pub fn pingpong(m: &Machine, logdir: &Path, timeout: Duration, n: u32) -> Result<Vec<String>> {
    let seg = segments::create("pingpong", 1 << 20)?;
    let ch = channel(&seg, (0, PciSlot::root(4)), (1, PciSlot::root(4)), 1)?;
    let a = Vm::new("pingpong-a", &format!("sivshm_doorbell pingpong-a {n}")).device(ch.a);
    let b = Vm::new("pingpong-b", &format!("sivshm_doorbell pingpong-b {n}")).device(ch.b);
    let finished = run_all(m, &[a, b], logdir, timeout)?;
    let mut out = vec![format!(
        "# {n} round trips, {} guests, 1 vCPU each, 2 host cores",
        m.accel.name()
    )];
    let mut figures = Vec::new();
    for f in &finished {
        for line in &succeeded(f)? {
            if let Some(fig) = parse(line) {
                out.push(line.clone());
                figures.push(fig);
            }
        }
    }
    let find = |name: &str| figures.iter().find(|f| f.name == name);
    match (find("doorbell-between-vms"), find("eventfd-within-one-vm")) {
        (Some(db), Some(floor)) => out.push(format!(
            "doorbell / in-VM eventfd: p50 {:.1}x, p99 {:.1}x",
            db.p50 / floor.p50,
            db.p99 / floor.p99
        )),
        _ => bail!("the guests did not print both figures"),
    }
    Ok(out)
}

/// The command output of a guest that ran to success, or why it did not.
fn succeeded(f: &Finished) -> Result<Vec<String>> {
    let r = console::parse(&f.log);
    let this_boot = r.boot_id.as_deref() == Some(f.boot_id.as_str());
    if f.timed_out || !this_boot || r.rc != Some(0) || !r.splats.is_empty() {
        let last: Vec<&str> = r
            .output
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(String::as_str)
            .collect();
        bail!(
            "{} failed (rc {:?}{}); log {}{}",
            f.name,
            r.rc,
            if f.timed_out { ", timed out" } else { "" },
            f.log_path.display(),
            if last.is_empty() {
                String::new()
            } else {
                format!("; its last output:\n  {}", last.join("\n  "))
            }
        );
    }
    Ok(r.output)
}

/// What the channel benchmark measures; see [`channel_vs_network`].
#[derive(clap::Args, Clone, Debug)]
pub struct ProbeOptions {
    /// channel: round trips per transport (sivshm, TCP, the in-VM pipe floor).
    #[arg(long, default_value_t = 2000)]
    pub round_trips: usize,
    /// channel: bytes per round-trip message (at least 24).
    #[arg(long, default_value_t = 64)]
    pub round_trip_size: usize,
    /// channel: seconds each throughput size streams, per transport.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// channel: message sizes of the throughput runs, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 4096, 65536, 1 << 20])]
    pub sizes: Vec<usize>,
    /// channel: the channel's segment in MiB (a power of two); its data ring must hold the
    /// largest size.
    #[arg(long, default_value_t = 8)]
    pub segment_mib: u64,
    /// channel: microseconds a waiting side of the channel polls before it sleeps
    /// (`Config::spin`), on both VMs; default the channel's.
    #[arg(long)]
    pub spin_us: Option<u64>,
    /// channel: the longest poll, in microseconds, of a side whose recent waits were short
    /// (`Config::spin_max`; 0: no adaptation), on both VMs; default the channel's.
    #[arg(long)]
    pub spin_max_us: Option<u64>,
}

impl ProbeOptions {
    /// The spin options of both `sivshm-probe` ends of the channel.
    fn spin_args(&self) -> String {
        let mut a = String::new();
        if let Some(us) = self.spin_us {
            a += &format!(" --spin-us {us}");
        }
        if let Some(us) = self.spin_max_us {
            a += &format!(" --spin-max-us {us}");
        }
        a
    }

    /// KiB of the channel's data ring, near enough: seven eighths of the segment (the
    /// replies take an eighth), for the shm-copy reference to cycle through.
    fn ring_kib(&self) -> u64 {
        self.segment_mib * 1024 * 7 / 8
    }
}

/// The TCP port the worker listens on.
const PROBE_PORT: u16 = 7777;

/// The `sivshm-probe` commands: the worker serves the channel, then TCP; the manager drives
/// the channel, runs the in-VM references while the worker idles in `accept` (memcpy, the
/// ceiling; shm-copy, the sender's volatile copy alone into a ring-sized shared area; the
/// pipe floor), then drives TCP. One worker, one of each measurement, all in one boot of the
/// same two VMs.
impl Roles for ProbeOptions {
    fn manager(&self, _bdfs: &[String], _layout: &Layout) -> String {
        let sizes = self
            .sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let lat = format!(
            "--latency-sizes {} --count {}",
            self.round_trip_size, self.round_trips
        );
        let thr = format!("--sizes {sizes} --seconds {}", self.seconds);
        format!(
            "sivshm-probe suite --transport sivshm{} {lat} {thr} \
             && sivshm-probe latency --transport pipe {lat} \
             && sivshm-probe throughput --transport memcpy {thr} \
             && sivshm-probe throughput --transport shm-copy --region-kib {} {thr} \
             && sivshm-probe suite --transport tcp --connect {}:{PROBE_PORT} {lat} {thr}",
            self.spin_args(),
            self.ring_kib(),
            net::worker_addr(0)
        )
    }

    fn worker(&self, _index: usize, _layout: &Layout) -> String {
        format!(
            "sivshm-probe serve --transport sivshm{} \
             && sivshm-probe serve --transport tcp --listen 0.0.0.0:{PROBE_PORT}",
            self.spin_args()
        )
    }
}

/// One `latency NAME: k=v ...` or `throughput NAME: k=v ...` line of `sivshm-probe`.
#[derive(Debug)]
struct Probe {
    kind: String,
    transport: String,
    values: HashMap<String, f64>,
}

fn parse_probe(line: &str) -> Option<Probe> {
    let (head, rest) = line.split_once(": ")?;
    let (kind, transport) = head.split_once(' ')?;
    if kind != "latency" && kind != "throughput" {
        return None;
    }
    let values = rest
        .split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    Some(Probe {
        kind: kind.to_string(),
        transport: transport.to_string(),
        values,
    })
}

fn size_name(bytes: usize) -> String {
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
fn table(probes: &[Probe], o: &ProbeOptions) -> Result<Vec<String>> {
    let find = |kind: &str, transport: &str, size: usize| {
        probes
            .iter()
            .find(|p| {
                p.kind == kind
                    && p.transport == transport
                    && p.values.get("size") == Some(&(size as f64))
            })
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
    for q in ["p50", "p99"] {
        t.push(format!(
            "| round trip {q}, {} | {:.0} us | {:.0} us | {:.0} us | \
             TCP / sivshm {:.1}x | {:.1}x the floor | {} | | | |",
            size_name(size),
            get(s, q)?,
            get(n, q)?,
            get(f, q)?,
            get(n, q)? / get(s, q)?,
            get(s, q)? / get(f, q)?,
            if q == "p50" {
                format!("{:.2} per round trip", get(s, "rings_per_rt")?)
            } else {
                String::new()
            }
        ));
    }
    Ok(t)
}

/// The sivshm channel against TCP over virtio-net between the same two VMs, in one boot,
/// with the in-VM memcpy ceiling and pipe floor measured in the same run.
pub fn channel_vs_network(
    m: &Machine,
    logdir: &Path,
    timeout: Duration,
    o: &ProbeOptions,
) -> Result<Vec<String>> {
    anyhow::ensure!(!o.sizes.is_empty(), "--sizes must list at least one size");
    let segment = crate::layout::segment_bytes(o.segment_mib)?;
    let topo = Topology::new(1, segment, o)?.network()?;
    let finished = topo.run(m, logdir, timeout)?;
    let mut out = vec![format!(
        "# sivshm channel vs TCP over virtio-net: a manager and a worker, {}, 1 vCPU each, \
         2 host cores; {} round trips of {} B, {} s per throughput size, {} MiB segment; \
         channel spin {}, spin max {}",
        m.accel.name(),
        o.round_trips,
        o.round_trip_size,
        o.seconds,
        o.segment_mib,
        o.spin_us.map_or("default".into(), |us| format!("{us} us")),
        o.spin_max_us
            .map_or("default".into(), |us| format!("{us} us")),
    )];
    // The shared memory's type in each VM (guest/init's SIVSHM-MEMTYPE lines): under TCG it
    // changes nothing, on AMD or TDX hosts it decides everything, so it stands by the figures.
    for f in &finished {
        for t in crate::console::parse(&f.log).mem_types {
            out.push(format!(
                "# {}: sivshm device {} is {} (driver), {} (PAT)",
                f.name, t.bdf, t.driver, t.pat
            ));
        }
    }
    let mut probes = Vec::new();
    for f in &finished {
        for line in succeeded(f)? {
            if let Some(p) = parse_probe(&line) {
                out.push(line.clone());
                probes.push(p);
            }
        }
    }
    out.extend(table(&probes, o)?);
    out.push(
        "# Under TCG both VMs and the network are emulated on the same 2 host cores: \
         compare the ratios of one run, not the absolute figures."
            .to_string(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_the_guest_line() {
        let f = parse(
            "pingpong doorbell-between-vms: n=10 p50=812.5 us p99=1503.0 us min=1 us max=2 us",
        )
        .unwrap();
        assert_eq!(f.name, "doorbell-between-vms");
        assert_eq!((f.p50, f.p99), (812.5, 1503.0));
        assert!(parse("storm: 3 rings").is_none());
    }

    #[test]
    fn probe_lines_make_one_table_with_the_ratios() {
        let o = ProbeOptions {
            round_trips: 10,
            round_trip_size: 64,
            seconds: 1.0,
            sizes: vec![4096],
            segment_mib: 8,
            spin_us: None,
            spin_max_us: None,
        };
        let lines = [
            "throughput sivshm: size=4096 messages=100 seconds=1.000 mib_s=400.00 msgs_s=102400 rings_per_msg=0.0100",
            "throughput tcp: size=4096 messages=10 seconds=1.000 mib_s=20.00 msgs_s=5120",
            "throughput memcpy: size=4096 messages=10 seconds=1.000 mib_s=500.00 msgs_s=128000",
            "latency sivshm: size=64 n=10 p50=100.0 us p99=300.0 us max=400.0 us rings_per_rt=1.500",
            "latency tcp: size=64 n=10 p50=1000.0 us p99=6000.0 us max=9000.0 us",
            "latency pipe: size=64 n=10 p50=50.0 us p99=60.0 us max=70.0 us",
            "serve tcp: 20 messages",
        ];
        let probes: Vec<Probe> = lines.iter().filter_map(|l| parse_probe(l)).collect();
        assert_eq!(probes.len(), 6);
        let t = table(&probes, &o).unwrap().join("\n");
        assert!(
            t.contains("| throughput, 4 KiB messages | 400.0 MiB/s (102400 msg/s) | 20.0 MiB/s"),
            "{t}"
        );
        assert!(t.contains("| 20.0x | 0.80 | 0.010 |"), "{t}");
        assert!(t.contains("| round trip p50, 64 B | 100 us | 1000 us | 50 us | TCP / sivshm 10.0x | 2.0x the floor | 1.50 per round trip |"), "{t}");
        assert!(t.contains("TCP / sivshm 20.0x"), "{t}");
        assert!(t.contains("| 0.010 | n/a | | |"), "no shm-copy line: {t}");
        // A missing figure is an error naming it, not a hole in the table.
        let e = table(&probes[1..], &o).unwrap_err().to_string();
        assert!(
            e.contains("no throughput figure for sivshm at 4096 bytes"),
            "{e}"
        );
    }

    #[test]
    fn the_shm_copy_line_adds_its_cell_and_ratios() {
        let o = ProbeOptions {
            round_trips: 10,
            round_trip_size: 64,
            seconds: 1.0,
            sizes: vec![1 << 20],
            segment_mib: 8,
            spin_us: None,
            spin_max_us: None,
        };
        let lines = [
            "throughput sivshm: size=1048576 messages=600 seconds=1.000 mib_s=600.00 msgs_s=600 rings_per_msg=0.7060",
            "throughput tcp: size=1048576 messages=30 seconds=1.000 mib_s=30.00 msgs_s=30",
            "throughput memcpy: size=1048576 messages=800 seconds=1.000 mib_s=800.00 msgs_s=800",
            "throughput shm-copy: size=1048576 messages=750 seconds=1.000 mib_s=750.00 msgs_s=750",
            "latency sivshm: size=64 n=10 p50=8.0 us p99=300.0 us max=400.0 us rings_per_rt=0.500",
            "latency tcp: size=64 n=10 p50=1000.0 us p99=6000.0 us max=9000.0 us",
            "latency pipe: size=64 n=10 p50=50.0 us p99=60.0 us max=70.0 us",
        ];
        let probes: Vec<Probe> = lines.iter().filter_map(|l| parse_probe(l)).collect();
        let p = &probes[3];
        assert_eq!(
            (p.kind.as_str(), p.transport.as_str()),
            ("throughput", "shm-copy")
        );
        assert_eq!(p.values["mib_s"], 750.0);
        let t = table(&probes, &o).unwrap().join("\n");
        assert!(
            t.contains("| 20.0x | 0.75 | 0.706 | 750.0 MiB/s (750 msg/s) | 0.80 | 0.94 |"),
            "{t}"
        );
    }

    #[test]
    fn the_bench_vms_get_the_channel_and_the_link() {
        let o = ProbeOptions {
            round_trips: 10,
            round_trip_size: 64,
            seconds: 1.0,
            sizes: vec![64, 1 << 20],
            segment_mib: 8,
            spin_us: None,
            spin_max_us: None,
        };
        let t = Topology::new(1, 8 << 20, &o).unwrap().network().unwrap();
        let run = &t.manager.env[0].1;
        assert!(run.contains("--connect 10.77.0.2:7777"), "{run}");
        assert!(run.contains("--sizes 64,1048576 --seconds 1"), "{run}");
        assert!(
            run.contains("throughput --transport shm-copy --region-kib 7168 --sizes"),
            "{run}"
        );
        assert!(!run.contains("--spin"), "{run}");
        let spun = ProbeOptions {
            spin_us: Some(5000),
            spin_max_us: Some(0),
            ..o.clone()
        };
        let t = Topology::new(1, 8 << 20, &spun).unwrap().network().unwrap();
        let (run, serve) = (&t.manager.env[0].1, &t.workers[0].env[0].1);
        assert!(
            run.contains("suite --transport sivshm --spin-us 5000 --spin-max-us 0 --latency"),
            "{run}"
        );
        assert!(
            serve.contains("serve --transport sivshm --spin-us 5000 --spin-max-us 0 &&"),
            "{serve}"
        );
        assert_eq!((t.manager.devices.len(), t.manager.nics.len()), (1, 1));
        assert_eq!(
            (t.workers[0].devices.len(), t.workers[0].nics.len()),
            (1, 1)
        );
        assert_eq!(size_name(1 << 20), "1 MiB");
        assert_eq!(size_name(65536), "64 KiB");
        assert_eq!(size_name(64), "64 B");
    }
}
