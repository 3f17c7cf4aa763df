//! Benchmarks that boot guests and print figures measured in one run (never pass/fail).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::console;
use crate::layout::{Layout, Roles, Topology};
use crate::net;
use crate::pair::channel;
use crate::qemu::{run_all, Finished, Machine, Vm};
use sivshm_host::pci::PciSlot;
use sivshm_host::segments::{self, PageSize};

mod capi;
pub mod json;
mod table;
use table::{parse_probe, references, table, throughput_lines};

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
#[derive(clap::Args, Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    /// channel: message sizes the C path (`sivshm_capi_probe`, on libsivshm) streams after
    /// the Rust one, each among --sizes; empty (`--c-sizes ''`): no C path.
    #[arg(long, value_delimiter = ',', default_values_t = [65536, 1 << 20])]
    pub c_sizes: Vec<usize>,
    /// channel: back the channel's segment with huge pages of this size (2M or 1G); the
    /// pool is raised for the run if it has too few free pages (root), and put back after.
    #[arg(long, value_name = "2M|1G", value_parser = crate::cli::parse_huge_pages)]
    #[serde(default, with = "json::page_size")]
    pub hugepages: Option<PageSize>,
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
/// the channel (the Rust probe, then right after it the C one, `capi`), runs the in-VM
/// references while the worker idles in `accept` (memcpy, the
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
            "sivshm-probe suite --transport sivshm{} {lat} {thr}{} \
             && sivshm-probe latency --transport pipe {lat} \
             && sivshm-probe throughput --transport memcpy {thr} \
             && sivshm-probe throughput --transport shm-copy --region-kib {ring} {thr} \
             && sivshm-probe throughput --transport channel-local --region-kib {ring}{} {thr} \
             && sivshm-probe throughput --transport rtrb --region-kib {ring} {thr} \
             && sivshm-probe suite --transport tcp --connect {}:{PROBE_PORT} {lat} {thr}",
            self.spin_args(),
            capi::manager(self),
            self.spin_args(),
            net::worker_addr(0),
            ring = self.ring_kib(),
        )
    }

    fn worker(&self, _index: usize, _layout: &Layout) -> String {
        format!(
            "sivshm-probe serve --transport sivshm{}{} \
             && sivshm-probe serve --transport tcp --listen 0.0.0.0:{PROBE_PORT}",
            self.spin_args(),
            capi::worker(self),
        )
    }
}

/// The sivshm channel against TCP over virtio-net between the same two VMs, in one boot,
/// with the in-VM memcpy ceiling and pipe floor measured in the same run. The run is kept as
/// data ([`json::ChannelRun`], written to `json` if given) and the tables and plot are made
/// from it ([`report`]), as `sivshm-lab plot --from` makes them later.
pub fn channel_vs_network(
    m: &Machine,
    logdir: &Path,
    timeout: Duration,
    o: &ProbeOptions,
    plot: Option<&Path>,
    json: Option<&Path>,
) -> Result<Vec<String>> {
    anyhow::ensure!(!o.sizes.is_empty(), "--sizes must list at least one size");
    if let Some(c) = o.c_sizes.iter().find(|c| !o.sizes.contains(c)) {
        bail!(
            "--c-sizes has {c}, which --sizes does not: the C path is compared at the Rust \
             path's sizes"
        );
    }
    let segment = crate::layout::segment_bytes(o.segment_mib)?;
    let page = o.hugepages.unwrap_or_default();
    let _pool = crate::layout::reserve_pages(page, 1, segment)?;
    let topo = Topology::with_pages(1, segment, page, o)?.network()?;
    let finished = topo.run(m, logdir, timeout)?;
    // The shared memory's type in each VM (guest/init's SIVSHM-MEMTYPE lines): under TCG it
    // changes nothing, on AMD or TDX hosts it decides everything, so it stands by the figures.
    let mut memory = Vec::new();
    for f in &finished {
        for t in crate::console::parse(&f.log).mem_types {
            memory.push(json::MemType {
                vm: f.name.clone(),
                bdf: t.bdf,
                driver: t.driver,
                pat: t.pat,
            });
        }
    }
    let (mut lines, mut probes) = (Vec::new(), Vec::new());
    for f in &finished {
        for line in succeeded(f)? {
            if let Some(p) = parse_probe(&line) {
                lines.push(line);
                probes.push(p);
            }
        }
    }
    let run = json::ChannelRun {
        schema: json::SCHEMA.to_string(),
        accel: m.accel.name().to_string(),
        options: o.clone(),
        memory,
        probes,
    };
    let mut out = report(&run, plot)?;
    // The guests' own lines after the heading and the memory types, before the tables.
    let at = 1 + run.memory.len();
    out.splice(at..at, lines);
    if let Some(path) = json {
        run.write(path)?;
        out.push(format!("# json: {}", path.display()));
    }
    Ok(out)
}

/// The heading, tables and (if `plot` is given) plot of a channel benchmark run.
pub fn report(run: &json::ChannelRun, plot: Option<&Path>) -> Result<Vec<String>> {
    let o = &run.options;
    let mut out = vec![format!(
        "# sivshm channel vs TCP over virtio-net: a manager and a worker, {}, 1 vCPU each, \
         2 host cores; {} round trips of {} B, {} s per throughput size, {} MiB segment of \
         {} pages; channel spin {}, spin max {}",
        run.accel,
        o.round_trips,
        o.round_trip_size,
        o.seconds,
        o.segment_mib,
        o.hugepages.unwrap_or_default(),
        o.spin_us.map_or("default".into(), |us| format!("{us} us")),
        o.spin_max_us
            .map_or("default".into(), |us| format!("{us} us")),
    )];
    for t in &run.memory {
        out.push(format!(
            "# {}: sivshm device {} is {} (driver), {} (PAT)",
            t.vm, t.bdf, t.driver, t.pat
        ));
    }
    let probes = &run.probes;
    out.extend(table(probes, o)?);
    out.extend(references(probes, o)?);
    out.extend(capi::table(probes, o)?);
    if let Some(path) = plot {
        let title = format!(
            "sivshm channel between two VMs and its references ({}, {} s per size)",
            run.accel, o.seconds
        );
        crate::plot::throughput(path, &title, &throughput_lines(probes, o), "sivshm")?;
        out.push(format!("# plot: {}", path.display()));
    }
    out.push(
        "# Under TCG both VMs and the network are emulated on the same 2 host cores: \
         compare the ratios of one run, not the absolute figures."
            .to_string(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests;
