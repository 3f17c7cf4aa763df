//! The `sivshm-host` command line: what the binary (`src/bin/sivshm-host`) parses, and what
//! the man page and shell completions generator (`tools/gen-docs`, package
//! `sivshm-gen-docs`) builds `packaging/man/` and `packaging/completions/` from.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "sivshm-host", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Check a topology file (the TOML file `serve` reads) and print every VM's devices.
    CheckTopology { topology: PathBuf },
    /// Serve a topology file to the user's own VMs: every segment and eventfd made once, one
    /// unix socket per VM device, each QEMU that connects gets its device's setup at once.
    /// SIGHUP reloads the file: new workers are added, removed ones retired, the others
    /// untouched (a file that would change what running VMs have is refused, nothing
    /// changed). Runs until SIGTERM or SIGINT, then removes the sockets.
    Serve { topology: PathBuf },
    /// Print what the running serve of a topology file reports, as key=value words: its own
    /// line (topology, pid, workers, reloads), one line per worker (where its segment and
    /// doorbells came from) and one per device (clients connected now, setups sent). Fails while no serve runs or before it is ready, so that a script can
    /// wait on it.
    Status {
        topology: PathBuf,
        /// Only the line of this device (VM.PEER, as in serve's log: mgr.w0, w0.mgr).
        #[arg(long, conflicts_with = "worker")]
        device: Option<String>,
        /// Only the line of this worker (its segment and doorbells, and where they came from).
        #[arg(long)]
        worker: Option<String>,
        /// Only this key's value (of the line --device or --worker selects, else of serve's).
        #[arg(long)]
        get: Option<String>,
    },
    /// Plug a worker's channel into the running manager QEMU (add), or unplug it (remove),
    /// over the manager's QMP socket: the device qemu-args gives the manager for that worker.
    /// Add after serve has the worker (its file reloaded); remove before reloading without it.
    /// With --into VM, the worker's own device goes into (or out of) that worker VM instead:
    /// how a resized worker's new segment reaches its running VM.
    Hotplug {
        action: HotplugAction,
        topology: PathBuf,
        /// The worker whose channel is plugged or unplugged.
        #[arg(long)]
        worker: String,
        /// The running worker VM to plug the worker's own device into (default: the manager
        /// gets the manager's device for the worker).
        #[arg(long)]
        into: Option<String>,
        /// The QEMU's QMP socket (default: the file's [manager] qmp; needed with --into).
        #[arg(long)]
        qmp: Option<PathBuf>,
        /// How long remove waits for the guest to release the device.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Print the QEMU arguments (-chardev, -device) that connect VM to a served topology,
    /// one device per line, at fixed PCI addresses.
    QemuArgs { topology: PathBuf, vm: String },
    /// Print the libvirt elements that connect VM to a served topology: <controller>s and
    /// <shmem>s for <devices>, then a <qemu:override> for <domain> (the bridges' window that
    /// makes the shared memory write-back).
    LibvirtXml {
        topology: PathBuf,
        vm: String,
        /// Only this part, without its comment line: the elements for <devices>, or the
        /// <qemu:override> for <domain> (for scripts that put each in place).
        #[arg(long)]
        part: Option<LibvirtPart>,
    },
}

/// A part of what `libvirt-xml` prints.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibvirtPart {
    Devices,
    Domain,
}

/// What `hotplug` does.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotplugAction {
    Add,
    Remove,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("sivshm-host").chain(args.iter().copied()))
            .map(|c| c.cmd)
    }

    #[test]
    fn every_subcommand_parses() {
        assert_eq!(
            parse(&["serve", "t.toml"]).unwrap(),
            Cmd::Serve {
                topology: "t.toml".into()
            }
        );
        assert_eq!(
            parse(&["check-topology", "t.toml"]).unwrap(),
            Cmd::CheckTopology {
                topology: "t.toml".into()
            }
        );
        assert_eq!(
            parse(&["qemu-args", "t.toml", "vm0"]).unwrap(),
            Cmd::QemuArgs {
                topology: "t.toml".into(),
                vm: "vm0".into()
            }
        );
        assert_eq!(
            parse(&["libvirt-xml", "t.toml", "vm0"]).unwrap(),
            Cmd::LibvirtXml {
                topology: "t.toml".into(),
                vm: "vm0".into(),
                part: None
            }
        );
        assert_eq!(
            parse(&["hotplug", "add", "t.toml", "--worker", "w2"]).unwrap(),
            Cmd::Hotplug {
                action: HotplugAction::Add,
                topology: "t.toml".into(),
                worker: "w2".into(),
                into: None,
                qmp: None,
                timeout_s: 60
            }
        );
        assert_eq!(
            parse(&["status", "t.toml", "--device", "mgr.w0", "--get", "setups"]).unwrap(),
            Cmd::Status {
                topology: "t.toml".into(),
                device: Some("mgr.w0".into()),
                worker: None,
                get: Some("setups".into())
            }
        );
        assert!(parse(&["hotplug", "plug", "t.toml", "--worker", "w2"]).is_err());
        assert!(parse(&["hotplug", "remove", "t.toml"]).is_err());
        assert!(parse(&["serve"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
