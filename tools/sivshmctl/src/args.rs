//! The command line: what a shell script writes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Exit codes a script can rely on.
pub mod exit {
    /// Done.
    pub const OK: i32 = 0;
    /// `wait`: no interrupt came within `--timeout`.
    pub const TIMEOUT: i32 = 1;
    /// Bad arguments (clap's own code for usage errors).
    pub const USAGE: i32 = 2;
    /// The device is not there or cannot be opened (no such node or PCI address,
    /// permissions, the driver not loaded).
    pub const NO_DEVICE: i32 = 3;
    /// The device refused the operation (a plain device asked to ring or wait, a vector or
    /// peer out of range, a range beyond the shared memory, the device unbound meanwhile).
    pub const DEVICE_ERROR: i32 = 4;
}

#[derive(Parser, Debug)]
#[command(
    name = "sivshmctl",
    version,
    about = "Inspect and drive sivshm devices (/dev/sivshmN)",
    after_help = "DEV is a node (/dev/sivshm0), its name (sivshm0), its index (0) or its PCI \
                  address (0000:00:04.0).\n\nExit codes: 0 ok, 1 timeout (wait), 2 usage, \
                  3 no such device or cannot open it, 4 the device refused the operation."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Every device, one per line: node, PCI address, size, peer id, vectors, memory type.
    List {
        /// As one JSON array of the objects `info --json` prints (schema "sivshmctl/1").
        #[arg(long)]
        json: bool,
    },
    /// One device, one key=value per line.
    Info {
        dev: String,
        /// As udev properties (SIVSHM_PCI=0000:00:04.0, ...) for a rule's IMPORT{program}.
        #[arg(long)]
        udev: bool,
        /// As one JSON object (schema "sivshmctl/1": schema, node, index, pci, size,
        /// doorbell, peer, vectors, memtype).
        #[arg(long, conflicts_with = "udev")]
        json: bool,
    },
    /// Ring VECTOR of peer PEER through DEV's doorbell.
    Ring { dev: String, peer: u32, vector: u32 },
    /// Wait for an interrupt on VECTOR (default 0) of DEV; prints how many came.
    /// Only interrupts after the wait began count.
    Wait {
        dev: String,
        #[arg(default_value_t = 0)]
        vector: u32,
        /// Give up after this many seconds (fractions allowed); exit code 1 then.
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<Duration>,
    },
    /// Print LEN bytes of DEV's shared memory from OFFSET in hex (decimal or 0x... numbers).
    Dump {
        dev: String,
        #[arg(value_parser = parse_number)]
        offset: u64,
        #[arg(value_parser = parse_number)]
        len: u64,
    },
}

/// A decimal or `0x` hexadecimal number.
pub fn parse_number(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a number (decimal, or hexadecimal with 0x)"))
}

/// Seconds, possibly fractional, not negative.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

/// What DEV names.
#[derive(Debug, PartialEq, Eq)]
pub enum DevSpec {
    Node(PathBuf),
    Pci(String),
}

/// Reads DEV: a PCI address (`dddd:bb:ss.f`), a bare index, a bare `sivshmN`, or a path.
pub fn dev_spec(dev: &str) -> DevSpec {
    let is_pci = {
        let b = dev.as_bytes();
        b.len() == 12
            && b[4] == b':'
            && b[7] == b':'
            && b[10] == b'.'
            && dev
                .chars()
                .enumerate()
                .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
    };
    if is_pci {
        DevSpec::Pci(dev.to_ascii_lowercase())
    } else if !dev.is_empty() && dev.chars().all(|c| c.is_ascii_digit()) {
        DevSpec::Node(PathBuf::from(format!("/dev/sivshm{dev}")))
    } else if !dev.contains('/') {
        DevSpec::Node(PathBuf::from("/dev").join(dev))
    } else {
        DevSpec::Node(PathBuf::from(dev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("sivshmctl").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(parse(&["list"]).unwrap(), Cmd::List { json: false });
        assert_eq!(
            parse(&["list", "--json"]).unwrap(),
            Cmd::List { json: true }
        );
        assert_eq!(
            parse(&["info", "0"]).unwrap(),
            Cmd::Info {
                dev: "0".into(),
                udev: false,
                json: false
            }
        );
        assert_eq!(
            parse(&["info", "--udev", "/dev/sivshm2"]).unwrap(),
            Cmd::Info {
                dev: "/dev/sivshm2".into(),
                udev: true,
                json: false
            }
        );
        assert_eq!(
            parse(&["info", "0", "--json"]).unwrap(),
            Cmd::Info {
                dev: "0".into(),
                udev: false,
                json: true
            }
        );
        assert_eq!(
            parse(&["ring", "sivshm1", "0", "3"]).unwrap(),
            Cmd::Ring {
                dev: "sivshm1".into(),
                peer: 0,
                vector: 3
            }
        );
        assert_eq!(
            parse(&["wait", "0"]).unwrap(),
            Cmd::Wait {
                dev: "0".into(),
                vector: 0,
                timeout: None
            }
        );
        assert_eq!(
            parse(&["wait", "0", "2", "--timeout", "1.5"]).unwrap(),
            Cmd::Wait {
                dev: "0".into(),
                vector: 2,
                timeout: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            parse(&["dump", "/dev/sivshm0", "0x1000", "64"]).unwrap(),
            Cmd::Dump {
                dev: "/dev/sivshm0".into(),
                offset: 4096,
                len: 64
            }
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors_with_exit_code_2() {
        for args in [
            &["ring", "0", "1"][..],
            &["ring", "0", "-1", "0"],
            &["wait", "0", "--timeout", "soon"],
            &["wait", "0", "--timeout", "-1"],
            &["dump", "0", "0xzz", "16"],
            &["dump", "0", "0"],
            &["info", "0", "--json", "--udev"],
            &["frobnicate"],
            &[],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{args:?}: {e}");
        }
        let e = parse(&["dump", "0", "0xzz", "16"]).unwrap_err().to_string();
        assert!(e.contains("\"0xzz\" is not a number"), "{e}");
    }

    #[test]
    fn dev_names_a_node_an_index_or_a_pci_address() {
        assert_eq!(dev_spec("0"), DevSpec::Node("/dev/sivshm0".into()));
        assert_eq!(dev_spec("12"), DevSpec::Node("/dev/sivshm12".into()));
        assert_eq!(dev_spec("sivshm3"), DevSpec::Node("/dev/sivshm3".into()));
        assert_eq!(
            dev_spec("/dev/sivshm3"),
            DevSpec::Node("/dev/sivshm3".into())
        );
        assert_eq!(dev_spec("./x"), DevSpec::Node("./x".into()));
        assert_eq!(
            dev_spec("0000:00:0A.0"),
            DevSpec::Pci("0000:00:0a.0".into())
        );
        assert_eq!(
            dev_spec("0000:00:0g.0"),
            DevSpec::Node("/dev/0000:00:0g.0".into())
        );
    }

    #[test]
    fn numbers_and_timeouts() {
        assert_eq!(parse_number("0x10"), Ok(16));
        assert_eq!(parse_number("0X10"), Ok(16));
        assert_eq!(parse_number("10"), Ok(10));
        assert!(parse_number("-1").is_err());
        assert!(parse_number("").is_err());
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        assert!(parse_timeout("inf").is_err());
        assert!(parse_timeout("nan").is_err());
    }
}
