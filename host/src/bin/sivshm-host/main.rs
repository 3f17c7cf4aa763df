//! `sivshm-host`: what users install and the systemd unit runs. It checks a topology file,
//! serves it to the user's own VMs, and prints the QEMU arguments or libvirt elements that
//! connect a VM to it. Only parses the command line and dispatches to the library
//! (`sivshm_host`); the test guests and benchmarks are the lab's (`sivshm-lab`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sivshm_host::service;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a topology file (the TOML file `serve` reads) and print every VM's devices.
    CheckTopology { topology: PathBuf },
    /// Serve a topology file to the user's own VMs: every segment and eventfd made once, one
    /// unix socket per VM device, each QEMU that connects gets its device's setup at once.
    /// Runs until SIGTERM or SIGINT, then removes the sockets.
    Serve { topology: PathBuf },
    /// Print the QEMU arguments (-chardev, -device) that connect VM to a served topology,
    /// one device per line, at fixed PCI addresses.
    QemuArgs { topology: PathBuf, vm: String },
    /// Print the libvirt elements that connect VM to a served topology: <controller>s and
    /// <shmem>s for <devices>, then a <qemu:override> for <domain> (the bridges' window that
    /// makes the shared memory write-back).
    LibvirtXml { topology: PathBuf, vm: String },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::CheckTopology { topology } => print_lines(service::cli::check(&topology)?),
        Cmd::Serve { topology } => {
            // The handlers stay until serve has removed its sockets.
            let stop = sivshm_host::stop::StopPipe::new()?;
            service::serve::main(&topology, stop.fd())
        }
        Cmd::QemuArgs { topology, vm } => print_lines(service::cli::qemu_args(&topology, &vm)?),
        Cmd::LibvirtXml { topology, vm } => print_lines(service::cli::libvirt_xml(&topology, &vm)?),
    }
}

fn print_lines(lines: Vec<String>) -> Result<()> {
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
