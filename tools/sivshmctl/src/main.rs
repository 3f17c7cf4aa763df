//! `sivshmctl`: a guest command over the `sivshm` crate for people and shell scripts.
//!
//! ```text
//! sivshmctl list                          every device: node, PCI address, size, peer id, vectors
//! sivshmctl list --json                   the same as a JSON array (schema sivshmctl/1)
//! sivshmctl info DEV                      one device, key=value lines
//! sivshmctl info --json DEV               the same as one JSON object (schema sivshmctl/1)
//! sivshmctl info --udev DEV               the same as udev properties (SIVSHM_PCI=...)
//! sivshmctl ring DEV PEER VECTOR          ring a peer's vector
//! sivshmctl wait DEV [VECTOR] [--timeout S]   wait for an interrupt, print how many came
//! sivshmctl dump DEV OFFSET LEN           the shared memory in hex, as hexdump -C
//! ```
//!
//! Exit codes: 0 ok, 1 timeout (`wait`), 2 usage, 3 no such device or it cannot be opened,
//! 4 the device refused the operation ([`sivshmctl::args::exit`]). Errors go to stderr, one line each.

mod hexdump;

use std::io::Write;

use clap::Parser;
use serde::Serialize;
use sivshm::{mem_type_name, Device, Info};

use sivshmctl::args::{dev_spec, exit, Cli, Cmd, DevSpec};

/// Why a command failed, with its exit code.
struct Failure {
    code: i32,
    message: String,
}

fn fail(code: i32, message: String) -> Failure {
    Failure { code, message }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version print to stdout and succeed.
            std::process::exit(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let code = match run(cli.cmd) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("sivshmctl: {}", f.message);
            f.code
        }
    };
    std::process::exit(code);
}

/// Opens what DEV names.
fn open(dev: &str) -> Result<Device, Failure> {
    match dev_spec(dev) {
        DevSpec::Node(path) => Device::open(&path).map_err(|e| {
            fail(
                exit::NO_DEVICE,
                format!("cannot open {}: {e}", path.display()),
            )
        }),
        DevSpec::Pci(pci) => Device::find(&pci).map_err(|_| {
            fail(
                exit::NO_DEVICE,
                format!("no sivshm device at PCI address {pci}"),
            )
        }),
    }
}

fn node(i: &Info) -> String {
    format!("/dev/sivshm{}", i.index)
}

fn peer(i: &Info) -> String {
    i.peer_id.map_or("-".into(), |p| p.to_string())
}

/// The `list` line of a device.
fn list_line(i: &Info) -> String {
    format!(
        "{} pci={} size={} peer={} vectors={} memtype={}",
        node(i),
        i.pci,
        i.shm_size,
        peer(i),
        i.nr_vectors,
        mem_type_name(i.mem_type)
    )
}

/// What `info` says of a device: (key, value).
fn info_fields(i: &Info) -> [(&'static str, String); 8] {
    [
        ("node", node(i)),
        ("index", i.index.to_string()),
        ("pci", i.pci.to_string()),
        ("size", i.shm_size.to_string()),
        ("doorbell", if i.doorbell { "yes" } else { "no" }.into()),
        ("peer", peer(i)),
        ("vectors", i.nr_vectors.to_string()),
        ("memtype", mem_type_name(i.mem_type).into()),
    ]
}

/// The `info` lines of a device: `key=value`.
fn info_lines(i: &Info) -> Vec<String> {
    info_fields(i)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The `info --udev` lines: the same as udev properties, `SIVSHM_PCI=0000:00:04.0`, which
/// the udev rule (`packaging/udev/60-sivshm.rules`) imports to name the node by its PCI
/// address. No value holds a space or a quote.
fn udev_lines(i: &Info) -> Vec<String> {
    info_fields(i)
        .iter()
        .map(|(k, v)| format!("SIVSHM_{}={v}", k.to_ascii_uppercase()))
        .collect()
}

/// The `schema` field of `list --json` and `info --json` (Documentation/sivshmctl.rst). A
/// reader checks it; it changes when a field is removed, renamed or changes its type or
/// meaning. Fields may be added without a change.
const JSON_SCHEMA: &str = "sivshmctl/1";

/// What `info --json` prints of a device, and `list --json` of each: the `info` fields with
/// JSON types (numbers, a boolean, `null` for no peer id).
#[derive(Serialize, Debug)]
struct DeviceJson {
    schema: &'static str,
    node: String,
    index: u32,
    pci: String,
    size: u64,
    doorbell: bool,
    peer: Option<u32>,
    vectors: u16,
    memtype: &'static str,
}

fn device_json(i: &Info) -> DeviceJson {
    DeviceJson {
        schema: JSON_SCHEMA,
        node: node(i),
        index: i.index,
        pci: i.pci.to_string(),
        size: i.shm_size,
        doorbell: i.doorbell,
        peer: i.peer_id,
        vectors: i.nr_vectors,
        memtype: mem_type_name(i.mem_type),
    }
}

/// The `info --json` line: one object.
fn info_json(i: &Info) -> String {
    serde_json::to_string(&device_json(i)).expect("plain fields serialize")
}

/// The `list --json` line: an array of `info --json` objects, `[]` without devices.
fn list_json(devices: &[DeviceJson]) -> String {
    serde_json::to_string(devices).expect("plain fields serialize")
}

fn run(cmd: Cmd) -> Result<i32, Failure> {
    let refused = |what: String| move |e| fail(exit::DEVICE_ERROR, format!("{what}: {e}"));
    match cmd {
        Cmd::List { json } => {
            let mut code = exit::OK;
            let mut devices = Vec::new();
            for path in Device::list() {
                match Device::open(&path) {
                    Ok(d) if json => devices.push(device_json(d.info())),
                    Ok(d) => println!("{}", list_line(d.info())),
                    Err(e) => {
                        eprintln!("sivshmctl: cannot open {}: {e}", path.display());
                        code = exit::NO_DEVICE;
                    }
                }
            }
            if json {
                println!("{}", list_json(&devices));
            }
            Ok(code)
        }
        Cmd::Info {
            dev, json: true, ..
        } => {
            let d = open(&dev)?;
            println!("{}", info_json(d.info()));
            Ok(exit::OK)
        }
        Cmd::Info { dev, udev, .. } => {
            let d = open(&dev)?;
            let lines = if udev { udev_lines } else { info_lines };
            for l in lines(d.info()) {
                println!("{l}");
            }
            Ok(exit::OK)
        }
        Cmd::Ring { dev, peer, vector } => {
            let d = open(&dev)?;
            d.ring(peer, vector).map_err(refused(format!(
                "ringing vector {vector} of peer {peer} on {dev}"
            )))?;
            Ok(exit::OK)
        }
        Cmd::Wait {
            dev,
            vector,
            timeout,
        } => {
            let d = open(&dev)?;
            let e = d
                .bind_eventfd(vector)
                .map_err(refused(format!("binding vector {vector} of {dev}")))?;
            let n = e
                .wait(timeout)
                .map_err(refused(format!("waiting on vector {vector} of {dev}")))?;
            if n == 0 {
                let t = timeout.unwrap_or_default();
                return Err(fail(
                    exit::TIMEOUT,
                    format!("no interrupt on vector {vector} of {dev} within {t:?}"),
                ));
            }
            // The device may have gone away: unbinding signals the eventfd once more.
            let mut d = d;
            d.refresh_info()
                .map_err(refused(format!("{dev} after the wake-up")))?;
            println!("interrupts={n}");
            Ok(exit::OK)
        }
        Cmd::Dump { dev, offset, len } => {
            let d = open(&dev)?;
            let size = d.info().shm_size;
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(fail(
                    exit::DEVICE_ERROR,
                    format!("{len} bytes at {offset:#x} go beyond the {size} bytes of {dev}"),
                ));
            }
            let m = d.map().map_err(refused(format!("mapping {dev}")))?;
            let mut buf = vec![0u8; len as usize];
            m.read(offset as usize, &mut buf)
                .map_err(|e| fail(exit::DEVICE_ERROR, format!("reading {dev}: {e}")))?;
            let mut out = std::io::stdout().lock();
            for l in hexdump::lines(offset, &buf) {
                if writeln!(out, "{l}").is_err() {
                    break; // stdout closed (| head): nothing more to say.
                }
            }
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sivshm::{MemType, PciAddress};

    fn info(peer_id: Option<u32>) -> Info {
        Info {
            shm_size: 4 << 20,
            peer_id,
            doorbell: peer_id.is_some(),
            nr_vectors: if peer_id.is_some() { 2 } else { 0 },
            pci: PciAddress {
                domain: 0,
                bus: 0,
                slot: 5,
                function: 0,
            },
            index: 1,
            mem_type: peer_id.map(|_| MemType::WriteBack),
        }
    }

    #[test]
    fn list_and_info_lines() {
        assert_eq!(
            list_line(&info(Some(3))),
            "/dev/sivshm1 pci=0000:00:05.0 size=4194304 peer=3 vectors=2 memtype=write-back"
        );
        assert_eq!(
            list_line(&info(None)),
            "/dev/sivshm1 pci=0000:00:05.0 size=4194304 peer=- vectors=0 memtype=unknown"
        );
        assert_eq!(
            info_lines(&info(Some(3))),
            [
                "node=/dev/sivshm1",
                "index=1",
                "pci=0000:00:05.0",
                "size=4194304",
                "doorbell=yes",
                "peer=3",
                "vectors=2",
                "memtype=write-back"
            ]
        );
        assert_eq!(
            udev_lines(&info(None)),
            [
                "SIVSHM_NODE=/dev/sivshm1",
                "SIVSHM_INDEX=1",
                "SIVSHM_PCI=0000:00:05.0",
                "SIVSHM_SIZE=4194304",
                "SIVSHM_DOORBELL=no",
                "SIVSHM_PEER=-",
                "SIVSHM_VECTORS=0",
                "SIVSHM_MEMTYPE=unknown"
            ]
        );
    }

    #[test]
    fn info_and_list_json_parse_back() {
        use serde_json::{json, Value};
        let with_peer: Value = serde_json::from_str(&info_json(&info(Some(3)))).unwrap();
        assert_eq!(
            with_peer,
            json!({
                "schema": "sivshmctl/1",
                "node": "/dev/sivshm1",
                "index": 1,
                "pci": "0000:00:05.0",
                "size": 4194304,
                "doorbell": true,
                "peer": 3,
                "vectors": 2,
                "memtype": "write-back"
            })
        );
        let plain: Value = serde_json::from_str(&info_json(&info(None))).unwrap();
        assert_eq!(plain["peer"], Value::Null);
        assert_eq!(plain["doorbell"], false);
        assert_eq!(plain["memtype"], "unknown");
        // One line: a script reads it with a line-based tool as well.
        assert!(!info_json(&info(None)).contains('\n'));

        // list: an array of the info objects, in order; none is [].
        let list: Value = serde_json::from_str(&list_json(&[
            device_json(&info(Some(3))),
            device_json(&info(None)),
        ]))
        .unwrap();
        assert_eq!(list, json!([with_peer, plain]));
        assert_eq!(list_json(&[]), "[]");
        // The JSON says what the text says.
        let text = info_lines(&info(Some(3)));
        for (k, v) in with_peer.as_object().unwrap() {
            if k == "schema" {
                continue;
            }
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
                v => v.to_string(),
            };
            assert!(
                text.contains(&format!("{k}={v}")),
                "{k}={v} not in {text:?}"
            );
        }
    }

    #[test]
    fn a_missing_device_is_exit_code_3() {
        let f = open("/nonexistent/sivshm9").err().unwrap();
        assert_eq!(f.code, exit::NO_DEVICE);
        assert!(
            f.message.starts_with("cannot open /nonexistent/sivshm9: "),
            "{}",
            f.message
        );
        let f = open("0000:00:1f.7").err().unwrap();
        assert_eq!(
            (f.code, f.message.as_str()),
            (
                exit::NO_DEVICE,
                "no sivshm device at PCI address 0000:00:1f.7"
            )
        );
    }
}
