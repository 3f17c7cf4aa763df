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

use crate::hotplug::Monitor;
use crate::layout::{Layout, Roles, Topology};
use crate::qemu::{tie_to_parent, Accel, Machine, Vm};
use sivshm_host::pci::MAX_WORKERS;

/// How the manager and the workers are wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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

/// One run of one wiring at one worker count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub wiring: Wiring,
    pub workers: usize,
    /// 1-based.
    pub run: usize,
    /// Seconds before the first launch: the topology's segments, sockets, server.
    pub prepare: f64,
    /// Seconds from the first launch until the last QEMU answered with its devices.
    pub ready: f64,
    /// Seconds from the first launch until the manager answered with its devices.
    pub manager: f64,
}

impl Sample {
    /// The machine-readable line of this result.
    pub fn line(&self, accel: Accel) -> String {
        format!(
            "SIVSHM-RESULT bench=realise mode={} workers={} run={} seconds={:.6} \
             manager_seconds={:.6} prepare_seconds={:.6} qemus={} accel={}",
            self.wiring.key(),
            self.workers,
            self.run,
            self.ready,
            self.manager,
            self.prepare,
            self.workers + 1,
            accel.name()
        )
    }
}

/// Median, min and max of a non-empty set (the median of an even count is the mean of the
/// two middle values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let k = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[k]
        } else {
            (v[k - 1] + v[k]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }

    fn cell(&self) -> String {
        format!(
            "{:.1} ms ({:.1}-{:.1})",
            self.median * 1e3,
            self.min * 1e3,
            self.max * 1e3
        )
    }
}

/// The table's header for `wirings` (in table order).
pub fn header(wirings: &[Wiring]) -> String {
    let mut h = String::from("#       N");
    for w in wirings {
        h += &format!(" | {}: median (min-max)", w.title());
    }
    if wirings.contains(&Wiring::Sivshm) && wirings.contains(&Wiring::Ivshmem) {
        h += " | IVSHMEM/SIVSHM";
    }
    if wirings.contains(&Wiring::None) {
        for w in wirings.iter().filter(|&&w| w != Wiring::None) {
            h += &format!(" | {} - floor", w.key().to_uppercase());
        }
    }
    h
}

/// The table's row for `n` workers from that count's samples: launch to ready per wiring,
/// the ratio of the medians, and each wiring's median above the floor's.
pub fn row(n: usize, wirings: &[Wiring], samples: &[Sample]) -> String {
    let spread = |w: Wiring| {
        Spread::of(
            samples
                .iter()
                .filter(|s| s.wiring == w && s.workers == n)
                .map(|s| s.ready),
        )
    };
    let mut r = format!("{n:>9}");
    for &w in wirings {
        r += &format!(" | {}", spread(w).map_or("-".into(), |s| s.cell()));
    }
    if wirings.contains(&Wiring::Sivshm) && wirings.contains(&Wiring::Ivshmem) {
        r += &match (spread(Wiring::Ivshmem), spread(Wiring::Sivshm)) {
            (Some(i), Some(s)) => format!(" | {:.2}", i.median / s.median),
            _ => " | -".into(),
        };
    }
    if wirings.contains(&Wiring::None) {
        let floor = spread(Wiring::None);
        for &w in wirings.iter().filter(|&&w| w != Wiring::None) {
            r += &match (spread(w), floor) {
                (Some(x), Some(f)) => format!(" | {:+.1} ms", (x.median - f.median) * 1e3),
                _ => " | -".into(),
            };
        }
    }
    r
}

/// The preparation line for `n` workers: what was done before the first launch.
fn prepare_row(n: usize, wirings: &[Wiring], samples: &[Sample]) -> String {
    let mut r = format!("# prepare N={n}:");
    for &w in wirings {
        if let Some(s) = Spread::of(
            samples
                .iter()
                .filter(|s| s.wiring == w && s.workers == n)
                .map(|s| s.prepare),
        ) {
            r += &format!(" {} {}", w.key(), s.cell());
        }
    }
    r
}

/// Runs the benchmark; every line (results, then each count's table row) goes to `emit` as
/// soon as it is known, progress to stderr.
pub fn bench(o: &Options, mut emit: impl FnMut(String)) -> Result<()> {
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
    for &n in &o.workers {
        let mut samples = Vec::new();
        for run in 0..o.runs {
            // Rotate the order so that no wiring always runs first.
            for k in 0..wirings.len() {
                let wiring = wirings[(k + run) % wirings.len()];
                crate::interrupt::check()?;
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
    }
    // The whole table once more, in one piece, with the preparation apart.
    emit(header(&wirings));
    for r in rows.iter().filter(|r| !r.starts_with('#')) {
        emit(r.clone());
    }
    for r in rows.iter().filter(|r| r.starts_with('#')) {
        emit(r.clone());
    }
    Ok(())
}

/// Roles for guests that never run.
struct Paused;

impl Roles for Paused {
    fn manager(&self, _: &[String], _: &Layout) -> String {
        "true".into()
    }
    fn worker(&self, _: usize, _: &Layout) -> String {
        "true".into()
    }
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
        Wiring::Sivshm => Topology::new(n, segment, &Paused)?,
        Wiring::Ivshmem => Topology::ivshmem(n, segment, &Paused)?,
        Wiring::None => Topology::bare(n, &Paused),
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
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("realise-bench").chain(args.iter().copied()))
            .map(|c| c.o)
    }

    #[test]
    fn the_defaults_are_every_count_to_64_three_runs_every_wiring_under_tcg() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.workers, [1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(o.runs, 3);
        assert_eq!(o.wirings(), Wiring::ALL);
        assert_eq!(o.accel().unwrap(), Accel::Tcg);
        o.check().unwrap();
    }

    #[test]
    fn lists_are_comma_separated_and_bad_values_refused_before_anything_starts() {
        let o = parse(&[
            "--workers",
            "8,1",
            "--runs",
            "5",
            "--modes",
            "ivshmem,sivshm",
        ])
        .unwrap();
        assert_eq!(o.workers, [8, 1]);
        assert_eq!(o.runs, 5);
        // Table order, whatever the order asked.
        assert_eq!(o.wirings(), [Wiring::Sivshm, Wiring::Ivshmem]);
        o.check().unwrap();
        assert!(parse(&["--modes", "bogus"]).is_err());
        for bad in [
            &["--workers", "0"][..],
            &["--workers", &(MAX_WORKERS + 1).to_string()],
            &["--runs", "0"],
            &["--segment-mib", "3"],
            &["--accel", "hvf"],
        ] {
            assert!(parse(bad).unwrap().check().is_err(), "{bad:?}");
        }
    }

    fn sample(wiring: Wiring, run: usize, ready: f64) -> Sample {
        Sample {
            wiring,
            workers: 8,
            run,
            prepare: 0.001,
            ready,
            manager: ready / 2.0,
        }
    }

    #[test]
    fn spread_is_median_min_max() {
        let s = Spread::of([0.3, 0.1, 0.2]).unwrap();
        assert_eq!((s.median, s.min, s.max), (0.2, 0.1, 0.3));
        let even = Spread::of([4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn a_row_has_each_wirings_spread_the_ratio_and_the_cost_above_the_floor() {
        let samples = [
            sample(Wiring::Sivshm, 1, 0.100),
            sample(Wiring::Sivshm, 2, 0.120),
            sample(Wiring::Sivshm, 3, 0.110),
            sample(Wiring::Ivshmem, 1, 0.150),
            sample(Wiring::Ivshmem, 2, 0.165),
            sample(Wiring::Ivshmem, 3, 0.140),
            sample(Wiring::None, 1, 0.090),
            sample(Wiring::None, 2, 0.100),
            sample(Wiring::None, 3, 0.095),
        ];
        let r = row(8, &Wiring::ALL, &samples);
        assert_eq!(
            r,
            "        8 | 110.0 ms (100.0-120.0) | 150.0 ms (140.0-165.0) | 95.0 ms (90.0-100.0) \
             | 1.36 | +15.0 ms | +55.0 ms"
        );
        let h = header(&Wiring::ALL);
        assert_eq!(h.matches(" | ").count(), r.matches(" | ").count());
        assert!(h.contains("IVSHMEM/SIVSHM"), "{h}");
        // Without the floor or one of the two, the columns that need it are left out.
        let two = row(8, &[Wiring::Sivshm, Wiring::Ivshmem], &samples);
        assert!(two.ends_with("| 1.36"), "{two}");
        let one = row(8, &[Wiring::Sivshm], &samples);
        assert_eq!(one, "        8 | 110.0 ms (100.0-120.0)");
        // Another count's samples are not this row's.
        assert_eq!(row(4, &[Wiring::Sivshm], &samples), "        4 | -");
    }

    #[test]
    fn the_result_line_is_one_line_of_key_value_pairs() {
        let l = sample(Wiring::Ivshmem, 2, 0.5).line(Accel::Tcg);
        assert_eq!(
            l,
            "SIVSHM-RESULT bench=realise mode=ivshmem workers=8 run=2 seconds=0.500000 \
             manager_seconds=0.250000 prepare_seconds=0.001000 qemus=9 accel=tcg"
        );
    }

    #[test]
    fn the_paused_line_is_the_harness_line_without_the_boot_and_with_s() {
        let m = Machine {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/k/bzImage".into(),
            initrd: "/k/initrd".into(),
            accel: Accel::Tcg,
            memory_mib: 256,
        };
        let mut t = Topology::new(30, 1 << 20, &Paused).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sockets = with_qmp(&mut t, dir.path());
        assert_eq!(sockets.len(), 31);
        assert!(sockets[0].ends_with("manager.qmp"));
        let (args, fds) = paused_args(&m, &t.manager).unwrap();
        let s: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for gone in ["-kernel", "/k/bzImage", "-initrd", "-append", "-serial"] {
            assert!(!s.iter().any(|a| a == gone), "{gone} in {s:?}");
        }
        assert_eq!(s.last().map(String::as_str), Some("-S"));
        assert_eq!(fds.len(), 30);
        assert_eq!(
            s.iter()
                .filter(|a| a.starts_with("ivshmem-doorbell,"))
                .count(),
            30
        );
        // The 25th device on sits behind the first bridge, as in the harness.
        assert!(s
            .iter()
            .any(|a| a.starts_with("pci-bridge,id=sivshm-bridge.0")));
        assert!(s
            .iter()
            .any(|a| a.contains("bus=sivshm-bridge.0,addr=0x1.0")));
        assert!(s
            .iter()
            .any(|a| a.starts_with("unix:") && a.contains("manager.qmp")));
    }
}
