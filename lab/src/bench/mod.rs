//! Benchmarks that boot guests and print figures measured in one run (never pass/fail).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::console::{self, ResultLine};
use crate::layout::{Layout, Roles, Topology};
use crate::net;
use crate::pair::channel;
use crate::qemu::{run_all, Finished, Machine, Vm};
use crate::run_file::RunFile;
use sivshm_host::pci::PciSlot;
use sivshm_host::segments::{self, PageSize};

mod capi;
pub mod iox2;
pub mod json;
pub mod local;
mod table;
use table::{alternatives, parse_probe, references, table, throughput_lines, PROBE};

/// One `SIVSHM-RESULT doorbell-pingpong name=NAME n=.. p50_us=X p99_us=Y ...` line of the
/// guest's `sivshm_doorbell pingpong-a|b`.
struct Figures {
    name: String,
    p50: f64,
    p99: f64,
}

/// The program whose results [`pingpong`] reads.
const PINGPONG: &str = "doorbell-pingpong";

fn parse(line: &ResultLine) -> Option<Figures> {
    let get = |k: &str| line.get(k)?.parse::<f64>().ok();
    Some(Figures {
        name: line.get("name")?.to_string(),
        p50: get("p50_us")?,
        p99: get("p99_us")?,
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
        for line in succeeded(f)?.results_of(PINGPONG) {
            let fig = parse(line).with_context(|| format!("{}: {}", f.name, line.to_line()))?;
            out.push(line.to_line());
            figures.push(fig);
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

/// What the log of a guest that ran to success says, or why it did not succeed.
fn succeeded(f: &Finished) -> Result<console::Report> {
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
    Ok(r)
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
    /// channel: the `vhost-device-vsock` binary; given, the VMs also get a virtio-vsock
    /// device it serves, and vsock between them is measured like TCP (`scripts/bench.sh`
    /// installs it and passes it).
    #[arg(long)]
    pub vsock_backend: Option<std::path::PathBuf>,
    /// channel: message sizes the C path (`sivshm_capi_probe`, on libsivshm) streams after
    /// the Rust one, each among --sizes; empty (`--c-sizes ''`): no C path.
    #[arg(long, value_delimiter = ',', default_values_t = [65536, 1 << 20])]
    pub c_sizes: Vec<usize>,
    /// channel: back the channel's segment with huge pages of this size (2M or 1G); the
    /// pool is raised for the run if it has too few free pages (root), and put back after.
    #[arg(long, value_name = "2M|1G", value_parser = crate::layout::parse_huge_pages)]
    #[serde(default, with = "json::page_size")]
    pub hugepages: Option<PageSize>,
    /// iox2: samples in flight at most while streaming, on every path (`bench-drive
    /// --window`); the gateways' mirrors get subscriber buffers this large.
    #[arg(long, default_value_t = 32)]
    #[serde(default = "window_of_old_runs")]
    pub window: usize,
}

/// The window of the iceoryx2 runs recorded before `--window` was an option.
fn window_of_old_runs() -> usize {
    8
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

/// vsock streams only messages below this size: through `vhost-device-vsock` 0.3.0 between
/// sibling VMs a stream of 4 KiB messages lost or garbled bytes in every run (the serving
/// side read "a message tagged 4096", or "tagged 0", where a message's tag belonged: a
/// length prefix or zeros), even with every write cut below the 4 KiB receive buffer
/// (a version of `sivshm-probe`'s vsock link did that); 64 B messages and round trips
/// arrived intact. The probe
/// checks every message's stamps, so a larger size ends the run with that error instead
/// of a figure.
pub const VSOCK_MAX_SIZE: usize = 4096;

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
        // vsock streams only the sizes below VSOCK_MAX_SIZE (see there).
        let small: Vec<String> = self
            .sizes
            .iter()
            .filter(|&&s| s < VSOCK_MAX_SIZE)
            .map(usize::to_string)
            .collect();
        let cid = crate::qemu::vsock::cid(1);
        let vsock = match (&self.vsock_backend, small.is_empty()) {
            (None, _) => String::new(),
            (Some(_), true) => {
                format!(" && sivshm-probe latency --transport vsock --vsock-cid {cid} {lat}")
            }
            (Some(_), false) => format!(
                " && sivshm-probe suite --transport vsock --vsock-cid {cid} {lat} \
                 --sizes {} --seconds {}",
                small.join(","),
                self.seconds
            ),
        };
        format!(
            "sivshm-probe suite --transport sivshm{} {lat} {thr}{} \
             && sivshm-probe latency --transport pipe {lat} \
             && sivshm-probe throughput --transport memcpy {thr} \
             && sivshm-probe throughput --transport shm-copy --region-kib {ring} {thr} \
             && sivshm-probe suite --transport channel-local --region-kib {ring}{} {lat} {thr} \
             && sivshm-probe throughput --transport rtrb --region-kib {ring} {thr} \
             && sivshm-probe suite --transport tcp --connect {}:{PROBE_PORT} {lat} {thr}{vsock}",
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
             && sivshm-probe serve --transport tcp --listen 0.0.0.0:{PROBE_PORT}{}",
            self.spin_args(),
            capi::worker(self),
            match self.vsock_backend {
                Some(_) => " && sivshm-probe serve --transport vsock",
                None => "",
            }
        )
    }
}

/// The sivshm channel against TCP over virtio-net (and vsock, given its backend) between the
/// same two VMs, in one boot, with the in-VM memcpy ceiling and pipe floor measured in the
/// same run. The run is kept as data ([`json::ChannelRun`], written to `json` if given) and
/// the tables and plot are made from it ([`report`]), as `sivshm-lab plot --from` makes them
/// later.
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
    let mut topo = Topology::with_pages(1, segment, page, o)?.network()?;
    // Kept until the VMs are gone.
    let _vsock = match &o.vsock_backend {
        Some(binary) => {
            let (backend, devices) =
                crate::qemu::vsock::Backend::start(binary, 2, crate::qemu::vsock::SLOT)?;
            let mut devices = devices.into_iter();
            topo.manager.vsock = devices.next();
            topo.workers[0].vsock = devices.next();
            Some(backend)
        }
        None => None,
    };
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
        for line in succeeded(f)?.results_of(PROBE) {
            probes.push(
                parse_probe(line).with_context(|| format!("{}: {}", f.name, line.to_line()))?,
            );
            lines.push(line.to_line());
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
    out.extend(alternatives(probes, o)?);
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
