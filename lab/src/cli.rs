//! `sivshm-lab`'s command line: the subcommands and their arguments, and the machine every
//! guest command boots (`GuestArgs`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::qemu::{self, Machine};
use crate::{accel, bench, realise, scenarios};
use sivshm_host::segments::PageSize;

#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// What wiring a manager and N workers costs, without booting: SIVSHM's pre-filled
    /// streams against the central server's distribution. Prints figures.
    WiringBench {
        /// Worker counts, comma separated.
        #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256, 1024])]
        workers: Vec<usize>,
        /// The same figures as one JSON object (schema "sivshm-lab/wiring-bench/1").
        #[arg(long)]
        json: bool,
        /// Also draw the messages against N, both sides, as an SVG file here.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// What wiring costs on the boot path, apart from the guest's boot: a manager and N
    /// workers launched paused (-S, no kernel), from launch to every QEMU answering QMP with
    /// its ivshmem devices realised; pre-wired (SIVSHM), on the central server (IVSHMEM), and
    /// with no device (the floor). Prints a table and SIVSHM-RESULT lines.
    RealiseBench {
        #[command(flatten)]
        options: realise::Options,
        /// Also draw the table's medians (seconds against N, per wiring) as an SVG file here.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Also write every sample as JSON here (schema "sivshm-lab/realise-bench/1",
        /// Documentation/results-json.rst); `plot --from` makes the table and plot from it.
        #[arg(long, value_name = "FILE.json")]
        json: Option<PathBuf>,
    },
    /// The tables and plot of a benchmark run, made from the JSON it wrote (`bench --what
    /// channel --json`, `realise-bench --json`, `wiring-bench --json`): the file's schema
    /// says which. Prints the tables; draws the plot if --svg is given.
    Plot {
        /// The run's JSON file.
        #[arg(long, value_name = "FILE.json")]
        from: PathBuf,
        /// Draw the run's plot as an SVG file here.
        #[arg(long, value_name = "FILE.svg")]
        svg: Option<PathBuf>,
        /// Print the tables as reStructuredText grid tables (for Documentation/), not as
        /// the bench prints them (Markdown, for the README).
        #[arg(long)]
        rst: bool,
    },
    /// The IVSHMEM baseline's central server, as QEMU's contrib/ivshmem-server: VMs connect
    /// with `-chardev socket,path=SOCKET`; each gets the region and every other VM's
    /// doorbells. Runs until SIGTERM or SIGINT, then removes the socket.
    IvshmemServer {
        /// Unix socket to listen on; must not exist.
        #[arg(long)]
        socket: PathBuf,
        /// Size of the shared region in MiB (a power of two).
        #[arg(long)]
        size_mib: u64,
        /// Interrupt vectors per peer (1 to 64).
        #[arg(long, default_value_t = 1)]
        vectors: u16,
    },
    /// Print the results in a log (a guest's serial log, a program's output): its
    /// `SIVSHM-RESULT <program> key=value ...` lines as parsed, one `program key=value ...`
    /// line each (or one JSON object each). For scripts: they read results here, not prose.
    Results {
        /// The log to read.
        log: PathBuf,
        /// One JSON object a line: {"program": ..., "key": "value", ...}.
        #[arg(long)]
        json: bool,
        /// Only the results of this program.
        #[arg(long)]
        program: Option<String>,
        /// Only the results with this value (`index=1`); repeatable.
        #[arg(long, value_name = "KEY=VALUE")]
        pick: Vec<String>,
        /// Print only this key's value of the last result (of --program); fails if no
        /// result has it.
        #[arg(long)]
        get: Option<String>,
    },
    /// The in-process transports of sivshm-probe on this machine, no guest (channel-local,
    /// rtrb, shm-copy, memcpy), RUNS times each: the median and spread of each message rate
    /// and the channel's ratios to its references, from the probe's SIVSHM-RESULT lines.
    LocalBench {
        /// The sivshm-probe binary (cargo build --release -p sivshm-probe).
        #[arg(long, default_value = "target/release/sivshm-probe")]
        probe: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds each size streams.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Message sizes in bytes.
        #[arg(long, value_delimiter = ',', default_values_t = [64, 4096, 65536, 1 << 20])]
        sizes: Vec<usize>,
    },
    /// Print the accelerator (kvm or tcg) guests get here, as the other commands choose it
    /// (a cached probe boot with --accel auto); why on stderr. For users' own QEMU lines.
    Accel {
        #[command(flatten)]
        guest: GuestArgs,
    },
    /// Boot the test guests and run the kselftests in them.
    Test {
        #[command(flatten)]
        guest: GuestArgs,
        /// Run only the scenarios whose name contains this.
        #[arg(long, default_value = "")]
        filter: String,
        /// Print every guest's summary, not only failing ones.
        #[arg(long)]
        verbose: bool,
        /// Add/remove cycles in the hotplug scenario's churn (the benchmark runs 100).
        #[arg(long, default_value_t = 4)]
        churn: u32,
        /// stress-fuzz: operations of the fuzzer (the long run: 100000 or more).
        #[arg(long, default_value_t = scenarios::Stress::default().fuzz_ops)]
        fuzz_ops: u64,
        /// stress-fuzz: at most this many seconds of fuzzing in the guest.
        #[arg(long, default_value_t = scenarios::Stress::default().fuzz_seconds)]
        fuzz_seconds: u64,
        /// stress-fuzz: replay this seed (printed in the guest's log of every run).
        #[arg(long)]
        seed: Option<u64>,
        /// stress-lifecycle: unbind/bind cycles (the long run: 1000).
        #[arg(long, default_value_t = scenarios::Stress::default().cycles)]
        cycles: u64,
        /// stress-hostile-peer: seconds the hostile worker storms.
        #[arg(long, default_value_t = scenarios::Stress::default().storm_seconds)]
        storm_seconds: u64,
        /// stress-hostile-peer: also draw the storm's cost to the victim's CPU (quiet against
        /// storm, from the guest's hostile-storm result line) as an SVG file here.
        #[arg(long, value_name = "FILE.svg")]
        storm_plot: Option<PathBuf>,
    },
    /// pingpong: doorbell ping-pong between two VMs, next to an eventfd ping-pong inside one
    /// VM. channel: the sivshm channel against TCP over virtio-net between the same two VMs,
    /// with the in-VM memcpy ceiling and pipe floor. Prints figures.
    Bench {
        #[command(flatten)]
        guest: GuestArgs,
        /// Which benchmark (all: one after the other).
        #[arg(long, value_enum, default_value_t = BenchWhat::All)]
        what: BenchWhat,
        /// pingpong: round trips to time in each test.
        #[arg(long, default_value_t = 10000)]
        exchanges: u32,
        #[command(flatten)]
        probe: bench::ProbeOptions,
        /// channel: also draw the throughput table (messages/s against size per transport,
        /// and sivshm's ratio to each) as an SVG file here.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// channel: also write the run (options, memory types, every figure) as JSON here
        /// (schema "sivshm-lab/channel-bench/1", Documentation/results-json.rst); `plot
        /// --from` makes the tables and plot from it (not with --what pingpong).
        #[arg(long, value_name = "FILE.json")]
        json: Option<PathBuf>,
    },
    /// SIVSHM against IVSHMEM in one run: throughput of the distribution job, or boot time of
    /// a manager and N workers (with no device as the floor). Prints figures.
    Compare {
        #[command(flatten)]
        guest: GuestArgs,
        /// throughput or boot.
        #[arg(long, value_enum)]
        what: Measure,
        /// Runs per point (interleaved across the topologies).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// boot: worker counts, comma separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16])]
        workers: Vec<usize>,
        /// throughput: rounds per worker (each a quarter of the segment).
        #[arg(long, default_value_t = 64)]
        rounds: u64,
        /// throughput: segment (and batch) size in MiB, a power of two.
        #[arg(long, default_value_t = 4)]
        segment_mib: u64,
    },
    /// The driver at scale: a manager with a device per worker booted alone (the workers'
    /// ends wired, no worker booted): nodes, MSI-X vectors, every PCI address, and probe and
    /// remove time per device. Prints figures.
    Scale {
        #[command(flatten)]
        guest: GuestArgs,
        /// Worker channels (devices in the manager); past 24 they sit behind PCI bridges.
        #[arg(long, default_value_t = 128)]
        workers: usize,
        /// Size of each segment in MiB (a power of two).
        #[arg(long, default_value_t = 1)]
        segment_mib: u64,
    },
    /// Boot a data manager and N workers and move data from the manager to every worker:
    /// under SIVSHM each worker on its own segment, under IVSHMEM all in one region.
    Demo {
        #[command(flatten)]
        guest: GuestArgs,
        #[command(flatten)]
        demo: DemoArgs,
    },
}

/// What `demo` boots and moves.
#[derive(Args)]
pub struct DemoArgs {
    /// sivshm: a segment and a pre-wired doorbell channel per worker; ivshmem: the
    /// baseline, one region and a central server wiring every VM to every VM.
    #[arg(long, value_enum, default_value_t = Mode::Sivshm)]
    pub mode: Mode,
    /// Number of worker VMs.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Size of each worker's segment in MiB (a power of two).
    #[arg(long, default_value_t = 4)]
    pub segment_mib: u64,
    /// Batches sent to every worker.
    #[arg(long, default_value_t = 64)]
    pub rounds: u64,
    /// Bytes per batch (default and most: a quarter of the segment).
    #[arg(long)]
    pub bytes: Option<usize>,
    /// Boot the VMs N at a time (the next N once the last have reached their command);
    /// 0 boots all at once. Dozens of TCG guests booting at once on a small host starve
    /// each other until their clocks jump.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub boot_wave: usize,
    /// Back each worker's segment with huge pages of this size (2M or 1G): a memfd of
    /// MFD_HUGETLB; the pool is raised for the run if it has too few free pages (root), and
    /// put back afterwards.
    #[arg(long, value_name = "2M|1G", value_parser = crate::layout::parse_huge_pages)]
    pub hugepages: Option<PageSize>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Measure {
    Throughput,
    Boot,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchWhat {
    Pingpong,
    Channel,
    /// iceoryx2 over the sivshm gateways against zenoh/TCP and the in-VM ceiling (not in
    /// `all`).
    Iox2,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Sivshm,
    Ivshmem,
}

#[derive(Args)]
pub struct GuestArgs {
    /// Guest kernel (bzImage) built with the project's config fragment.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Guest initramfs (scripts/build-initramfs.sh).
    #[arg(long)]
    pub initrd: PathBuf,
    /// auto (KVM only if a probe boot works here), tcg or kvm.
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory_mib: u32,
    /// Where serial logs go (kept after the run).
    #[arg(long, default_value = "build/logs")]
    pub logdir: PathBuf,
    /// Seconds a scenario may take before its guests are killed.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Where the accelerator probe's verdict is cached.
    #[arg(long, env = "SIVSHM_CACHE", default_value = "build/cache")]
    pub cache: PathBuf,
}

impl GuestArgs {
    pub fn machine(&self) -> Result<Machine> {
        for p in [&self.kernel, &self.initrd] {
            anyhow::ensure!(p.is_file(), "{} does not exist", p.display());
        }
        std::fs::create_dir_all(&self.logdir)
            .with_context(|| format!("creating {}", self.logdir.display()))?;
        let base = Machine {
            qemu: self.qemu.clone(),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            accel: qemu::Accel::Tcg,
            memory_mib: self.memory_mib,
        };
        let (accel, why) = accel::choose(&self.accel, &base, &self.cache)?;
        eprintln!("# accelerator: {} ({why})", accel.name());
        Ok(Machine { accel, ..base })
    }
}
