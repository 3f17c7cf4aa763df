//! What the wiring costs on the boot path, apart from the guest's boot: a manager and N
//! workers, exactly as the harness and `demo` build them ([`Topology::new`] pre-wired by
//! SIVSHM, [`Topology::ivshmem`] on the central server, [`Topology::bare`] with no device as
//! the floor), launched at once and paused (`-S`, no kernel: the guest never runs). QEMU
//! realises every device while it starts, `ivshmem-doorbell` reading its whole setup from its
//! chardev synchronously (`ivshmem_recv_setup`), and only then enters its main loop, where QMP
//! commands are answered. So the time from the first launch until every QEMU has answered
//! `qmp_capabilities` and lists its `ivshmem-doorbell` devices (`qom-list
//! /machine/peripheral-anon`) is QEMU's start with the wiring on its path, and nothing else.
//!
//! What is done before the first launch (segments, eventfds and prefilled sockets for SIVSHM;
//! starting the server and its region for IVSHMEM) is timed apart ("prepare") and not counted:
//! a deployment does it once, not per boot.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use command_fds::CommandFdExt;

use crate::layout::{Idle, Topology};
use crate::qemu::{tie_to_parent, Accel, Machine, Vm};
use sivshm_host::hotplug::Monitor;
use sivshm_host::pci::MAX_WORKERS;

pub mod json;
mod table;
use table::prepare_row;
pub use table::{header, row, Sample};

/// How the manager and the workers are wired.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Wiring {
    /// A segment and a pre-wired doorbell channel per worker: the manager has N devices.
    Sivshm,
    /// One region, every QEMU's one device connected to the central server.
    Ivshmem,
    /// No shared-memory device at all: QEMU's own start, the floor.
    None,
}

impl Wiring {
    /// Table order.
    const ALL: [Wiring; 3] = [Wiring::Sivshm, Wiring::Ivshmem, Wiring::None];

    /// The name in `SIVSHM-RESULT` lines (as `--modes` takes it).
    pub fn key(self) -> &'static str {
        match self {
            Wiring::Sivshm => "sivshm",
            Wiring::Ivshmem => "ivshmem",
            Wiring::None => "none",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Wiring::Sivshm => "SIVSHM (pre-wired)",
            Wiring::Ivshmem => "IVSHMEM (central server)",
            Wiring::None => "no device (floor)",
        }
    }
}

/// `sivshm-lab realise-bench`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Worker counts, comma separated (a manager and N workers: N + 1 QEMUs at once).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16, 32, 64])]
    pub workers: Vec<usize>,
    /// Runs per point and wiring, interleaved (the wirings' order rotates from run to run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Wirings to measure, comma separated: sivshm, ivshmem, none (no device, the floor).
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Wiring::Sivshm, Wiring::Ivshmem, Wiring::None])]
    pub modes: Vec<Wiring>,
    /// Size of each worker's segment in MiB (a power of two); IVSHMEM's region holds N.
    #[arg(long, default_value_t = 1)]
    pub segment_mib: u64,
    /// tcg or kvm. The guest never runs; the accelerator only changes QEMU's start.
    #[arg(long, default_value = "tcg")]
    pub accel: String,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// Guest memory in MiB (allocated, never touched: the guest does not run).
    #[arg(long, default_value_t = 256)]
    pub memory_mib: u32,
    /// Seconds one run may take before its QEMUs are killed and the bench fails.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

impl Options {
    /// Refuses what cannot be measured, before anything starts.
    pub fn check(&self) -> Result<()> {
        if self.workers.is_empty() || !self.workers.iter().all(|&n| (1..=MAX_WORKERS).contains(&n))
        {
            bail!("--workers must list counts from 1 to {MAX_WORKERS}");
        }
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if self.modes.is_empty() {
            bail!("--modes must name at least one of sivshm, ivshmem, none");
        }
        crate::layout::segment_bytes(self.segment_mib)?;
        self.accel()?;
        Ok(())
    }

    fn accel(&self) -> Result<Accel> {
        match self.accel.as_str() {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            a => bail!("--accel must be tcg or kvm, not {a:?}"),
        }
    }

    /// The wirings asked for, in table order, each once.
    fn wirings(&self) -> Vec<Wiring> {
        Wiring::ALL
            .into_iter()
            .filter(|w| self.modes.contains(w))
            .collect()
    }
}

/// Runs the benchmark; every line (results, then each count's table row) goes to `emit` as
/// soon as it is known, progress to stderr. Returns every sample, for the plot.
pub fn bench(o: &Options, mut emit: impl FnMut(String)) -> Result<Vec<Sample>> {
    o.check()?;
    let accel = o.accel()?;
    let segment = crate::layout::segment_bytes(o.segment_mib)?;
    let wirings = o.wirings();
    raise_nofile();
    let m = Machine {
        qemu: o.qemu.clone(),
        // Dropped from QEMU's arguments: the guest never runs.
        kernel: "none".into(),
        initrd: "none".into(),
        accel,
        memory_mib: o.memory_mib,
    };
    let timeout = Duration::from_secs(o.timeout);
    emit(format!(
        "# realise: a manager and N workers launched at once, paused (-S, no guest runs), from \
         the first launch to every QEMU answering QMP with its ivshmem-doorbell devices realised; \
         host wall clock; {} run(s) per point, interleaved; {}; {} MiB segments",
        o.runs,
        accel.name(),
        o.segment_mib
    ));
    emit(header(&wirings));
    let mut rows = Vec::new();
    let mut all = Vec::new();
    let total = o.workers.len() * o.runs * wirings.len();
    let mut progress = crate::progress::Progress::new("realise runs", total as u64);
    for &n in &o.workers {
        let mut samples = Vec::new();
        for run in 0..o.runs {
            // Rotate the order so that no wiring always runs first.
            for k in 0..wirings.len() {
                let wiring = wirings[(k + run) % wirings.len()];
                crate::interrupt::check()?;
                progress.set(
                    all.len() as u64 + samples.len() as u64,
                    &format!("{} with {n} worker(s), run {}", wiring.key(), run + 1),
                );
                let s = trial(&m, wiring, n, run + 1, segment, timeout).with_context(|| {
                    format!("{} with {n} worker(s), run {}", wiring.key(), run + 1)
                })?;
                eprintln!(
                    "# {n} worker(s), run {}: {}: {:.1} ms (manager {:.1} ms, prepare {:.1} ms)",
                    run + 1,
                    wiring.title(),
                    s.ready * 1e3,
                    s.manager * 1e3,
                    s.prepare * 1e3
                );
                emit(s.line(accel));
                samples.push(s);
            }
        }
        rows.push(row(n, &wirings, &samples));
        rows.push(prepare_row(n, &wirings, &samples));
        emit(rows[rows.len() - 2].clone());
        all.extend(samples);
    }
    // The whole table once more, in one piece, with the preparation apart.
    emit(header(&wirings));
    for r in rows.iter().filter(|r| !r.starts_with('#')) {
        emit(r.clone());
    }
    for r in rows.iter().filter(|r| r.starts_with('#')) {
        emit(r.clone());
    }
    Ok(all)
}

/// Arguments of the harness's QEMU line that boot a guest, each with its value.
const BOOT_ARGS: [&str; 4] = ["-kernel", "-initrd", "-append", "-serial"];

/// `vm`'s QEMU arguments as the harness builds them, without what boots a guest (kernel,
/// initramfs, command line, serial log) and paused before the first instruction (`-S`);
/// with the fds QEMU inherits.
pub fn paused_args(m: &Machine, vm: &Vm) -> Result<(Vec<OsString>, Vec<command_fds::FdMapping>)> {
    let (args, fds) = vm.args(m, Path::new("/dev/null"), "realise")?;
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a.to_str().is_some_and(|a| BOOT_ARGS.contains(&a)) {
            it.next();
        } else {
            out.push(a);
        }
    }
    out.push("-S".into());
    Ok((out, fds))
}

/// A paused QEMU, killed when dropped.
struct Qemu {
    name: String,
    child: Child,
    stderr: PathBuf,
}

impl Qemu {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gives every VM of `t` a QMP socket in `dir`; returns the sockets in `vms()` order.
fn with_qmp(t: &mut Topology, dir: &Path) -> Vec<PathBuf> {
    let path = |vm: &Vm| dir.join(format!("{}.qmp", vm.name));
    let manager = std::mem::replace(&mut t.manager, Vm::new("placeholder", "true"));
    let p = path(&manager);
    t.manager = manager.qmp(&p);
    t.workers = std::mem::take(&mut t.workers)
        .into_iter()
        .map(|w| {
            let p = path(&w);
            w.qmp(&p)
        })
        .collect();
    t.vms().filter_map(|vm| vm.qmp.clone()).collect()
}

/// One run: builds the topology, launches its QEMUs paused, waits until all answer.
fn trial(
    m: &Machine,
    wiring: Wiring,
    n: usize,
    run: usize,
    segment: u64,
    timeout: Duration,
) -> Result<Sample> {
    let t0 = Instant::now();
    let mut topo = match wiring {
        Wiring::Sivshm => Topology::new(n, segment, &Idle)?,
        Wiring::Ivshmem => Topology::ivshmem(n, segment, &Idle)?,
        Wiring::None => Topology::bare(n, &Idle),
    };
    let prepare = t0.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().context("a directory for the QMP sockets")?;
    let sockets = with_qmp(&mut topo, dir.path());
    let expected: Vec<usize> = topo.vms().map(|vm| vm.devices.len()).collect();
    // Every command line is built before the clock starts.
    let mut cmds = Vec::new();
    for vm in topo.vms() {
        let (args, fds) = paused_args(m, vm)?;
        let stderr = dir.path().join(format!("{}.stderr", vm.name));
        let mut cmd = Command::new(&m.qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr)?);
        cmd.fd_mappings(fds)
            .context("passing chardev fds to QEMU")?;
        tie_to_parent(&mut cmd);
        cmds.push((vm.name.clone(), cmd, stderr));
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let mut qemus = Vec::with_capacity(cmds.len());
    for (name, mut cmd, stderr) in cmds {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", m.qemu.display()))?;
        qemus.push(Qemu {
            name,
            child,
            stderr,
        });
    }
    // One thread per QEMU once its QMP socket exists; it blocks in the handshake, which QEMU
    // answers from its main loop, after every device is realised.
    let mut waiters: Vec<Option<JoinHandle<Result<Instant>>>> =
        (0..qemus.len()).map(|_| None).collect();
    loop {
        crate::interrupt::check()?;
        for (i, w) in waiters.iter_mut().enumerate() {
            if w.is_none() && sockets[i].exists() {
                let (path, want) = (sockets[i].clone(), expected[i]);
                *w = Some(std::thread::spawn(move || ready(&path, want, deadline)));
            }
        }
        for q in &mut qemus {
            if let Some(status) = q.child.try_wait()? {
                bail!("QEMU {} exited ({status}): {}", q.name, q.stderr());
            }
        }
        if waiters
            .iter()
            .all(|w| w.as_ref().is_some_and(|h| h.is_finished()))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("not every QEMU answered within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut times = Vec::with_capacity(waiters.len());
    for (w, q) in waiters.into_iter().zip(&qemus) {
        let t = w
            .expect("every waiter was started")
            .join()
            .map_err(|_| anyhow::anyhow!("the QMP waiter of {} panicked", q.name))?
            .with_context(|| format!("QEMU {} ({})", q.name, q.stderr()))?;
        times.push(t.duration_since(start).as_secs_f64());
    }
    drop(qemus);
    drop(topo);
    Ok(Sample {
        wiring,
        workers: n,
        run,
        prepare,
        ready: times.iter().copied().fold(0.0, f64::max),
        manager: times[0],
    })
}

/// Connects to the QMP socket `path` (the handshake is `qmp_capabilities` answered), checks
/// that QEMU has `want` ivshmem-doorbell devices, and returns when that was known.
fn ready(path: &Path, want: usize, deadline: Instant) -> Result<Instant> {
    let mut mon = loop {
        // The socket exists from bind(); connecting is refused until listen().
        match Monitor::connect(path) {
            Ok(mon) => break mon,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let found = match mon.children("/machine/peripheral-anon") {
        Ok(c) => c.iter().filter(|(_, t)| t == "ivshmem-doorbell").count(),
        // A QEMU with no anonymous device may have no such container.
        Err(_) if want == 0 => 0,
        Err(e) => return Err(e),
    };
    let at = Instant::now();
    if found != want {
        bail!("QEMU has {found} ivshmem-doorbell device(s), not {want}");
    }
    Ok(at)
}

/// Every QEMU's fds are held here too (segments, sockets, eventfds): the soft limit is raised
/// to the hard one.
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let r = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: r.maximum,
            maximum: r.maximum,
        },
    );
}

#[cfg(test)]
mod tests;
