//! `sivshm-host`: what users install and the systemd unit runs. It checks a topology file,
//! serves it to the user's own VMs, and prints the QEMU arguments or libvirt elements that
//! connect a VM to it, reports what a running serve does, and plugs a new worker's channel into the running manager. Only parses the command line (defined in `sivshm_host::cli`) and
//! dispatches to the library (`sivshm_host`); the test guests and benchmarks are the lab's
//! (`sivshm-lab`).

use anyhow::Result;
use clap::Parser;
use sivshm_host::cli::{Cli, Cmd, HotplugAction};
use sivshm_host::service;

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::CheckTopology { topology } => print_lines(service::cli::check(&topology)?),
        Cmd::Serve { topology } => {
            // The handlers stay until serve has removed its sockets.
            let stop = sivshm_host::stop::SignalPipe::new()?;
            let reload = sivshm_host::stop::SignalPipe::reload()?;
            service::serve::main(&topology, stop.fd(), reload.fd())
        }
        Cmd::Status {
            topology,
            device,
            worker,
            get,
        } => {
            let text = service::status::read(&topology)?;
            let select = match (&device, &worker) {
                (Some(d), _) => Some(("device", d.as_str())),
                (None, Some(w)) => Some(("worker", w.as_str())),
                (None, None) => None,
            };
            print_lines(service::status::query(&text, select, get.as_deref())?)
        }
        Cmd::Hotplug {
            action,
            topology,
            worker,
            into,
            qmp,
            timeout_s,
        } => {
            let (qmp, into) = (qmp.as_deref(), into.as_deref());
            let done = match action {
                HotplugAction::Add => service::hotplug::add(&topology, &worker, into, qmp)?,
                HotplugAction::Remove => service::hotplug::remove(
                    &topology,
                    &worker,
                    into,
                    qmp,
                    std::time::Duration::from_secs(timeout_s),
                )?,
            };
            print_lines(vec![done])
        }
        Cmd::QemuArgs { topology, vm } => print_lines(service::cli::qemu_args(&topology, &vm)?),
        Cmd::LibvirtXml { topology, vm, part } => {
            print_lines(service::cli::libvirt_xml(&topology, &vm, part)?)
        }
    }
}

fn print_lines(lines: Vec<String>) -> Result<()> {
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
