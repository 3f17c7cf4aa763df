//! What each `sivshm-lab` command does, given its parsed arguments (`cli`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sivshm_host::pci::MAX_WORKERS;

use crate::cli::{BenchWhat, DemoArgs, GuestArgs, Measure, Mode};
use crate::run_file::RunFile;
use crate::{bench, compare, console, ivshmem_server, layout, realise, scale, scenarios, wiring};
use sivshm_host::segments::PageSize;

/// `accel`: the accelerator guests get here.
pub fn accel(guest: &GuestArgs) -> Result<()> {
    println!("{}", guest.machine()?.accel.name());
    Ok(())
}

/// `results`: a log's `SIVSHM-RESULT` lines as parsed (`console::parse`).
pub fn results(
    log: &Path,
    json: bool,
    program: Option<&str>,
    pick: &[String],
    get: Option<&str>,
) -> Result<()> {
    let pick = pick
        .iter()
        .map(|p| {
            p.split_once('=')
                .with_context(|| format!("--pick {p}: not KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let text = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    let r = console::parse(&String::from_utf8_lossy(&text));
    let lines: Vec<_> = r
        .results
        .iter()
        .filter(|l| program.is_none_or(|p| l.program == p))
        .filter(|l| pick.iter().all(|&(k, v)| l.get(k) == Some(v)))
        .collect();
    if let Some(key) = get {
        let v = lines
            .iter()
            .rev()
            .find_map(|l| l.get(key))
            .with_context(|| {
                format!(
                    "no SIVSHM-RESULT {} line{} with {key}= in {}",
                    program.unwrap_or("<any program>"),
                    if pick.is_empty() {
                        String::new()
                    } else {
                        format!(" with {pick:?}")
                    },
                    log.display()
                )
            })?;
        println!("{v}");
        return Ok(());
    }
    for l in lines {
        println!("{}", if json { l.to_json() } else { l.to_line() });
    }
    Ok(())
}

/// `wiring-bench`.
pub fn wiring_bench(workers: &[usize], json: bool, plot: Option<&Path>) -> Result<()> {
    anyhow::ensure!(
        !workers.is_empty() && workers.iter().all(|&n| (1..=65535).contains(&n)),
        "--workers must list counts from 1 to 65535"
    );
    let figures = wiring::measure(workers)?;
    if json {
        println!("{}", wiring::json(&figures));
    } else {
        for l in wiring::table(&figures) {
            println!("{l}");
        }
    }
    if let Some(path) = plot {
        wiring::plot(&figures, path)?;
    }
    Ok(())
}

/// `realise-bench`.
pub fn realise_bench(
    options: &realise::Options,
    plot: Option<&Path>,
    json: Option<&Path>,
) -> Result<()> {
    let samples = realise::bench(options, |l| println!("{l}"))?;
    let run = realise::json::RealiseRun::new(options, samples);
    if let Some(path) = json {
        run.write(path)?;
        println!("# json: {}", path.display());
    }
    if let Some(path) = plot {
        run.plot(path)?;
        println!("# plot: {}", path.display());
    }
    Ok(())
}

/// `plot --from`.
pub fn plot(from: &Path, svg: Option<&Path>, rst: bool) -> Result<()> {
    print_lines(crate::replot::from_file(from, svg, rst)?)
}

/// `compare`.
pub fn compare(
    guest: &GuestArgs,
    what: Measure,
    repeats: usize,
    workers: &[usize],
    rounds: u64,
    segment_mib: u64,
) -> Result<()> {
    anyhow::ensure!(repeats > 0, "--repeats must be at least 1");
    anyhow::ensure!(
        !workers.is_empty() && workers.iter().all(|&n| (1..=MAX_WORKERS).contains(&n)),
        "--workers must list counts from 1 to {}",
        MAX_WORKERS
    );
    let segment = layout::segment_bytes(segment_mib)?;
    let machine = guest.machine()?;
    let timeout = Duration::from_secs(guest.timeout);
    match what {
        Measure::Throughput => print_lines(compare::throughput(
            &machine,
            &guest.logdir,
            timeout,
            workers[0],
            segment,
            rounds,
            repeats,
        )?),
        Measure::Boot => {
            compare::boot_time(&machine, &guest.logdir, timeout, workers, repeats, |l| {
                println!("{l}")
            })
        }
    }
}

/// `scale`.
pub fn scale(guest: &GuestArgs, workers: usize, segment_mib: u64) -> Result<()> {
    anyhow::ensure!(
        (1..=MAX_WORKERS).contains(&workers),
        "--workers must be from 1 to {}",
        MAX_WORKERS
    );
    let segment = layout::segment_bytes(segment_mib)?;
    let machine = guest.machine()?;
    print_lines(scale::manager_alone(
        &machine,
        &guest.logdir,
        Duration::from_secs(guest.timeout),
        workers,
        segment,
    )?)
}

/// `ivshmem-server`: runs until SIGTERM or SIGINT.
pub fn ivshmem_server(socket: &Path, size_mib: u64, vectors: u16) -> Result<()> {
    ivshmem_server::main(
        socket,
        ivshmem_server::Config {
            size: size_mib
                .checked_mul(1 << 20)
                .context("--size-mib is too large")?,
            vectors,
            peer_sndbuf: ivshmem_server::PEER_SNDBUF,
        },
    )
}

/// `bench`.
pub fn bench(
    guest: &GuestArgs,
    what: BenchWhat,
    exchanges: u32,
    probe: &bench::ProbeOptions,
    plot: Option<&Path>,
    json: Option<&Path>,
) -> Result<()> {
    anyhow::ensure!(
        json.is_none() || what != BenchWhat::Pingpong,
        "--json writes the channel benchmark's run: pingpong has none"
    );
    let machine = guest.machine()?;
    let timeout = Duration::from_secs(guest.timeout);
    if what == BenchWhat::Iox2 {
        for l in bench::iox2::run(&machine, &guest.logdir, timeout, probe, json)? {
            println!("{l}");
        }
        return Ok(());
    }
    if what != BenchWhat::Channel {
        for l in bench::pingpong(&machine, &guest.logdir, timeout, exchanges)? {
            println!("{l}");
        }
    }
    if what != BenchWhat::Pingpong {
        for l in bench::channel_vs_network(&machine, &guest.logdir, timeout, probe, plot, json)? {
            println!("{l}");
        }
    }
    Ok(())
}

/// `demo`.
pub fn demo(guest: &GuestArgs, demo: &DemoArgs) -> Result<()> {
    let &DemoArgs {
        mode,
        workers,
        segment_mib,
        rounds,
        bytes,
        boot_wave,
        hugepages,
    } = demo;
    let segment = layout::segment_bytes(segment_mib)?;
    // A quarter of the segment: the channel keeps batches in flight.
    let bytes = bytes.unwrap_or(segment as usize / 4);
    anyhow::ensure!(
        bytes > 0 && bytes <= segment as usize / 4,
        "--bytes must be between 1 and a quarter of the segment (the channel keeps \
         several batches in flight)"
    );
    let roles = layout::Distribute {
        rounds,
        bytes,
        peer_timeout_s: (boot_wave > 0).then_some(guest.timeout),
    };
    let page = hugepages.unwrap_or_default();
    anyhow::ensure!(
        page == PageSize::Base || mode == Mode::Sivshm,
        "--hugepages is for --mode sivshm (the IVSHMEM baseline's region is the central \
         server's)"
    );
    let _pool = layout::reserve_pages(page, workers, segment)?;
    let machine = guest.machine()?;
    let topo = match mode {
        Mode::Sivshm => layout::Topology::with_pages(workers, segment, page, &roles)?,
        Mode::Ivshmem => layout::Topology::ivshmem(workers, segment, &roles)?,
    };
    eprintln!(
        "# booting a manager and {workers} worker(s), {segment_mib} MiB {} each, {} ({})",
        if mode == Mode::Sivshm {
            format!("segment of {page} pages")
        } else {
            "slot of one region".to_string()
        },
        if mode == Mode::Sivshm {
            "pre-wired doorbell channels"
        } else {
            "wired by the central ivshmem server"
        },
        machine.accel.name()
    );
    let finished = topo.run_in_waves(
        &machine,
        &guest.logdir,
        Duration::from_secs(guest.timeout),
        boot_wave,
    )?;
    let mut failed = Vec::new();
    for f in &finished {
        let r = console::parse(&f.log);
        let good = !f.timed_out
            && r.boot_id.as_deref() == Some(f.boot_id.as_str())
            && r.rc == Some(0)
            && r.splats.is_empty();
        if !good {
            failed.push(f.name.clone());
        }
        println!(
            "[{}] {} after {:.1} s{}",
            f.name,
            if good { "done" } else { "FAILED" },
            f.elapsed.as_secs_f64(),
            if good {
                String::new()
            } else {
                format!(" (log {})", f.log_path.display())
            }
        );
        for line in r.output.iter().chain(&r.splats) {
            println!("[{}]   {line}", f.name);
        }
    }
    let is_worker = |f: &&crate::qemu::Finished| f.name != "manager";
    let workers: Vec<_> = finished.iter().filter(is_worker).collect();
    println!(
        "{} lab-demo workers={} done={} failed={} last_worker_s={:.1} accel={}",
        console::RESULT,
        workers.len(),
        finished.len() - failed.len(),
        failed.len(),
        workers
            .iter()
            .map(|f| f.elapsed.as_secs_f64())
            .fold(0.0, f64::max),
        machine.accel.name()
    );
    anyhow::ensure!(failed.is_empty(), "the demo failed");
    Ok(())
}

/// `test`: the in-guest suite as TAP; exits 1 unless every result passed.
pub fn test(
    guest: &GuestArgs,
    filter: &str,
    verbose: bool,
    churn: u32,
    stress: scenarios::Stress,
) -> Result<()> {
    let machine = guest.machine()?;
    let start = Instant::now();
    let suite = scenarios::Suite {
        machine: &machine,
        logdir: &guest.logdir,
        timeout: Duration::from_secs(guest.timeout),
        verbose,
        churn,
        stress,
    };
    let results = suite.run(filter)?;
    let (mut pass, mut fail) = (0, 0);
    println!("TAP version 13");
    println!("1..{}", results.len());
    for (i, r) in results.iter().enumerate() {
        if r.passed {
            pass += 1;
            println!("ok {} {}", i + 1, r.name);
        } else {
            fail += 1;
            println!("not ok {} {}", i + 1, r.name);
        }
    }
    println!(
        "# guest tests: {pass} passed, {fail} failed in {:.0} s ({})",
        start.elapsed().as_secs_f64(),
        machine.accel.name()
    );
    // The same as data, for the scripts (`sivshm-lab results`); TAP readers skip it.
    println!(
        "{} lab-test passed={pass} failed={fail} seconds={:.0} accel={}",
        console::RESULT,
        start.elapsed().as_secs_f64(),
        machine.accel.name()
    );
    if fail > 0 || results.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn print_lines(lines: Vec<String>) -> Result<()> {
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
