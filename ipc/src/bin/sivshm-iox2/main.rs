//! `sivshm-iox2`: the iceoryx2 gateway of a VM, and the guest programs of the lab's iceoryx2
//! scenarios (a job manager and worker that are plain iceoryx2 programs, a rogue worker and
//! a hostile one).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sivshm_iceoryx2::config::{Config, Via, Worker};
use sivshm_iceoryx2::gateway::{self, Event};
use sivshm_iceoryx2::grant::Grant;

mod bench;
mod hostile;
mod job;
mod rogue;

#[derive(Parser)]
#[command(about = "iceoryx2 services across VMs over sivshm, and to other hosts over zenoh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway of this VM until killed.
    Gateway {
        /// The configuration file (Documentation/iceoryx2.rst); or the options below.
        #[arg(long, conflicts_with_all = ["worker", "manager_via"])]
        config: Option<PathBuf>,
        /// A manager's worker: NAME@VIA@PATTERN[,PATTERN...] (repeat per worker).
        #[arg(long = "worker", value_name = "NAME@VIA@GRANT")]
        worker: Vec<String>,
        /// A worker's link to its manager: NAME@VIA.
        #[arg(long = "to-manager", value_name = "NAME@VIA")]
        manager_via: Option<String>,
        /// Also report refusals and failed links as SIVSHM-RESULT lines (the lab's guests).
        #[arg(long)]
        results: bool,
        /// The subscriber buffer (samples) of the services the gateway creates as mirrors of
        /// the peer's; default iceoryx2's (2). Applications that ask for a larger buffer of a
        /// service the peer offers need a gateway with at least that.
        #[arg(long, value_name = "N")]
        mirror_buffer: Option<usize>,
    },
    /// The job's manager: batches to each worker, answers verified.
    JobManager(job::ManagerArgs),
    /// The job's worker: answers each batch with its checksum.
    JobWorker(job::WorkerArgs),
    /// A worker that tries to see and publish another worker's services.
    Rogue(rogue::Args),
    /// Writes garbage into a sivshm channel's memory and rings its doorbell.
    Hostile(hostile::Args),
    /// The benchmark's driver: times round trips and streams, prints the figures.
    BenchDrive(bench::DriveArgs),
    /// The benchmark's server: answers the driver.
    BenchServe(bench::Common),
}

fn config(
    file: Option<PathBuf>,
    workers: Vec<String>,
    manager_via: Option<String>,
) -> Result<Config> {
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        return Config::parse(&text).with_context(|| format!("in {}", f.display()));
    }
    match (workers.is_empty(), manager_via) {
        (false, None) => {
            let mut out = Vec::new();
            for w in workers {
                let mut parts = w.splitn(3, '@');
                let (Some(name), Some(via), Some(grant)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    bail!("--worker {w:?}: NAME@VIA@PATTERN[,PATTERN...]");
                };
                let patterns: Vec<&str> = grant.split(',').collect();
                out.push(Worker {
                    name: name.to_string(),
                    via: via.parse()?,
                    grant: Grant::new(&patterns)?,
                });
            }
            Ok(Config::Manager { workers: out })
        }
        (true, Some(m)) => {
            let Some((name, via)) = m.split_once('@') else {
                bail!("--to-manager {m:?}: NAME@VIA");
            };
            let via: Via = via.parse()?;
            Ok(Config::Worker {
                name: name.to_string(),
                via,
            })
        }
        _ => bail!("give --config FILE, or --worker ... (a manager), or --to-manager (a worker)"),
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Gateway {
            config: file,
            worker,
            manager_via,
            results,
            mirror_buffer,
        } => {
            let config = config(file, worker, manager_via)?;
            let stop = AtomicBool::new(false);
            let log = move |e: Event| {
                eprintln!("sivshm-iox2 gateway: {e}");
                if results {
                    match &e {
                        Event::Refused { worker, service, .. } => println!(
                            "SIVSHM-RESULT iox2-gateway event=refused worker={worker} service={service}"
                        ),
                        Event::Failed { worker, .. } => {
                            println!("SIVSHM-RESULT iox2-gateway event=failed worker={worker}")
                        }
                        Event::Up { worker, .. } => {
                            println!("SIVSHM-RESULT iox2-gateway event=up worker={worker}")
                        }
                        Event::Error { .. } => {}
                    }
                }
            };
            let mut options = gateway::Options::default();
            if let Some(n) = mirror_buffer {
                if n == 0 {
                    bail!("--mirror-buffer must be at least 1");
                }
                options
                    .iceoryx2
                    .defaults
                    .publish_subscribe
                    .subscriber_max_buffer_size = n;
            }
            gateway::run(&config, &options, &stop, &log)
        }
        Command::JobManager(a) => job::manager(&a),
        Command::JobWorker(a) => job::worker(&a),
        Command::Rogue(a) => rogue::run(&a),
        Command::Hostile(a) => hostile::run(&a),
        Command::BenchDrive(a) => bench::drive(&a),
        Command::BenchServe(a) => bench::serve(&a),
    }
}
