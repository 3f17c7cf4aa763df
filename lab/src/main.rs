//! `sivshm-lab`: sivshm's test and benchmark lab. It wires test guests with the product's
//! library (`sivshm_host`: segments, protocol, PCI address plan), boots them in QEMU and
//! reads their results: the in-guest kselftests, the demo, the benchmarks, the IVSHMEM
//! baseline.

mod accel;
mod bench;
mod cli;
mod commands;
mod compare;
mod console;
mod interrupt;
mod ivshmem_server;
mod layout;
mod net;
mod pair;
mod plot;
mod progress;
mod qemu;
mod realise;
mod replot;
mod run_file;
mod scale;
mod scenarios;
mod setup_socket;
mod spread;
mod wiring;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Cmd};

fn main() -> Result<()> {
    let cmd = Cli::parse().cmd;
    // Commands that boot guests stop them on SIGTERM or SIGINT; the central server handles
    // those itself, and the wiring bench has nothing to stop.
    let boots = matches!(
        cmd,
        Cmd::Test { .. }
            | Cmd::Bench { .. }
            | Cmd::Compare { .. }
            | Cmd::Demo { .. }
            | Cmd::Scale { .. }
            | Cmd::RealiseBench { .. }
    );
    if boots {
        interrupt::install()?;
    }
    let result = run(cmd);
    if let Some(sig) = interrupt::received() {
        if let Err(e) = &result {
            eprintln!("Error: {e:#}");
        }
        std::process::exit(interrupt::exit_code(sig));
    }
    result
}

/// Hands each command to its handler (`commands`).
fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Accel { guest } => commands::accel(&guest),
        Cmd::LocalBench {
            probe,
            runs,
            seconds,
            sizes,
        } => {
            for l in bench::local::run(&probe, runs, seconds, &sizes)? {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Results {
            log,
            json,
            program,
            pick,
            get,
        } => commands::results(&log, json, program.as_deref(), &pick, get.as_deref()),
        Cmd::WiringBench {
            workers,
            json,
            plot,
        } => commands::wiring_bench(&workers, json, plot.as_deref()),
        Cmd::RealiseBench {
            options,
            plot,
            json,
        } => commands::realise_bench(&options, plot.as_deref(), json.as_deref()),
        Cmd::Plot { from, svg, rst } => commands::plot(&from, svg.as_deref(), rst),
        Cmd::IvshmemServer {
            socket,
            size_mib,
            vectors,
        } => commands::ivshmem_server(&socket, size_mib, vectors),
        Cmd::Compare {
            guest,
            what,
            repeats,
            workers,
            rounds,
            segment_mib,
        } => commands::compare(&guest, what, repeats, &workers, rounds, segment_mib),
        Cmd::Scale {
            guest,
            workers,
            segment_mib,
        } => commands::scale(&guest, workers, segment_mib),
        Cmd::Bench {
            guest,
            what,
            exchanges,
            probe,
            plot,
            json,
        } => commands::bench(
            &guest,
            what,
            exchanges,
            &probe,
            plot.as_deref(),
            json.as_deref(),
        ),
        Cmd::Demo { guest, demo } => commands::demo(&guest, &demo),
        Cmd::Test {
            guest,
            filter,
            verbose,
            churn,
            fuzz_ops,
            fuzz_seconds,
            seed,
            cycles,
            storm_seconds,
            storm_plot,
        } => commands::test(
            &guest,
            &filter,
            verbose,
            churn,
            scenarios::Stress {
                fuzz_ops,
                fuzz_seconds,
                cycles,
                seed,
                storm_seconds,
                storm_plot,
            },
        ),
    }
}
