//! Devices added to and removed from a running QEMU over its QMP socket (the `qapi` crate's
//! typed commands and events; no JSON is written by hand): `sivshm-host hotplug` plugs a new
//! worker's channel into the user's running manager, and the lab's hotplug scenario does the
//! same to its test manager.
//!
//! Adding a channel is `chardev-add` of a unix socket chardev (QEMU connects at once to the
//! socket that sends the device's setup stream: `serve`'s, or the lab's), followed by
//! `device_add` of an `ivshmem-doorbell` on that chardev at the worker's PCI slot (on bus 0,
//! or behind a bridge that exists from boot). QEMU's ivshmem reads the whole stream while the
//! device is realised. Removing it is `device_del`, which on i440fx asks the guest's ACPI
//! hot-plug driver to eject the device; QEMU reports `DEVICE_DELETED` once the guest has let
//! it go, and only then is the chardev removed.
//!
//! Every refusal (an id that exists, a device that does not, a QEMU that is not running) is
//! found before anything is changed, and a step that fails undoes the steps before it, so the
//! running VM is left as it was.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use qapi::qmp;

use crate::pci::PciSlot;

/// A worker channel to plug into the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotDevice {
    /// QEMU's id of the device.
    pub id: String,
    /// QEMU's id of its chardev.
    pub chardev: String,
    /// The unix socket QEMU connects the device's chardev to.
    pub socket: PathBuf,
    pub slot: PciSlot,
    pub vectors: u16,
}

/// An id QEMU takes for a device or chardev (and the lab as a file name): 1 to 64 letters,
/// digits, `-`, `_` and `.`, starting with a letter.
pub fn check_id(id: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if id.is_empty()
        || id.len() > 64
        || !id.starts_with(|c: char| c.is_ascii_alphabetic())
        || !id.chars().all(ok)
    {
        bail!(
            "device id {id:?} must be 1 to 64 letters, digits, '-', '_' or '.', starting with \
             a letter"
        );
    }
    Ok(())
}

/// `chardev-add`: a unix socket client with id `id` on `socket`.
pub fn chardev_add(id: &str, socket: &Path) -> Result<qmp::chardev_add> {
    let path = socket
        .to_str()
        .with_context(|| format!("{} is not UTF-8", socket.display()))?;
    Ok(qmp::chardev_add {
        id: id.to_string(),
        backend: qmp::ChardevBackend::socket(
            qmp::ChardevSocket {
                base: qmp::ChardevCommon {
                    logappend: None,
                    logfile: None,
                },
                addr: qmp::SocketAddressLegacy::unix(
                    qmp::UnixSocketAddress {
                        path: path.to_string(),
                        abstract_: None,
                        tight: None,
                    }
                    .into(),
                ),
                server: Some(false),
                wait: None,
                nodelay: None,
                reconnect: None,
                telnet: None,
                tn3270: None,
                websocket: None,
                tls_creds: None,
                tls_authz: None,
            }
            .into(),
        ),
    })
}

/// `device_add`: the ivshmem-doorbell on the chardev, at the device's slot.
pub fn device_add(d: &HotDevice) -> qmp::device_add {
    let mut args = serde_json::Map::new();
    args.insert("chardev".into(), d.chardev.clone().into());
    args.insert("vectors".into(), u64::from(d.vectors).into());
    args.insert("addr".into(), format!("{:#x}.0", d.slot.slot).into());
    qmp::device_add {
        driver: "ivshmem-doorbell".into(),
        id: Some(d.id.clone()),
        bus: d.slot.bridge.map(crate::pci::bridge_id),
        arguments: args,
    }
}

/// How long a QEMU may take to greet a QMP client.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type Stream = qapi::Stream<BufReader<UnixStream>, UnixStream>;

/// A QMP connection to a running QEMU (the manager's, or a worker's).
pub struct Monitor {
    qmp: qapi::Qmp<Stream>,
    path: PathBuf,
    /// How messages name the VM: "the manager", "VM w0".
    who: String,
}

impl Monitor {
    /// Connects to the manager's QMP socket `path` and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Self> {
        Self::connect_to(path, "the manager")
    }

    /// Connects to the QMP socket `path` of the VM that messages call `who` ("VM w0").
    pub fn connect_to(path: &Path, who: &str) -> Result<Self> {
        let s = UnixStream::connect(path).map_err(|e| {
            anyhow!(
                "{who} is not running: nothing answers on its QMP socket {} ({e})",
                path.display()
            )
        })?;
        // A QEMU that stops answering must not hang the caller.
        // QEMU greets a client at once, unless another client holds the socket (a QMP
        // socket serves one at a time): then it greets no one.
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let r = BufReader::new(s.try_clone()?);
        let mut qmp = qapi::Qmp::new(qapi::Stream::new(r, s.try_clone()?));
        qmp.handshake().map_err(|e| {
            let timed_out = matches!(&e, qapi::ExecuteError::Io(io) if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ));
            let why = if timed_out {
                format!(
                    "QEMU did not greet within {} s: another client holds its QMP socket \
                     (QEMU serves one at a time); close it and try again",
                    HANDSHAKE_TIMEOUT.as_secs()
                )
            } else {
                e.to_string()
            };
            anyhow!("QMP handshake on {}: {why}", path.display())
        })?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Monitor {
            qmp,
            path: path.to_path_buf(),
            who: who.to_string(),
        })
    }

    /// The first slot of bus 0 from `from` on that no device takes (`query-pci`): where a
    /// device goes that has no slot of its own in the VM (a resized worker's new segment in
    /// the worker's VM).
    pub fn free_root_slot(&mut self, from: u8) -> Result<PciSlot> {
        let buses = self.qmp.execute(&qmp::query_pci {}).context("query-pci")?;
        let used: Vec<i64> = buses
            .iter()
            .filter(|b| b.bus == 0)
            .flat_map(|b| b.devices.iter().map(|d| d.slot))
            .collect();
        (from..crate::pci::BRIDGE_SLOT)
            .find(|s| !used.contains(&i64::from(*s)))
            .map(PciSlot::root)
            .ok_or_else(|| {
                anyhow!(
                    "{} has no free PCI slot on bus 0 from {from:#x} to {:#x}; nothing was changed",
                    self.who,
                    crate::pci::BRIDGE_SLOT - 1
                )
            })
    }

    /// The ids of the devices added with an id (`-device id=` or `device_add`).
    pub fn devices(&mut self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .children("/machine/peripheral")?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        v.sort();
        Ok(v)
    }

    /// The QOM children of `path` (`qom-list`): each one's name and type, the type without
    /// `child<>` (`/machine/peripheral-anon` holds the devices added without an id).
    pub fn children(&mut self, path: &str) -> Result<Vec<(String, String)>> {
        let props = self
            .qmp
            .execute(&qmp::qom_list { path: path.into() })
            .with_context(|| format!("qom-list {path}"))?;
        Ok(props
            .into_iter()
            .filter_map(|p| {
                let t = p
                    .type_
                    .strip_prefix("child<")?
                    .strip_suffix('>')?
                    .to_string();
                Some((p.name, t))
            })
            .collect())
    }

    /// The ids of the chardevs.
    pub fn chardevs(&mut self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .qmp
            .execute(&qmp::query_chardev {})
            .context("query-chardev")?
            .into_iter()
            .map(|c| c.label)
            .collect();
        v.sort();
        Ok(v)
    }

    /// Adds worker channel `d`; `serve` makes the setup stream ready for QEMU's chardev once
    /// it is connected (the lab queues it; `sivshm-host serve` sends it by itself, and then
    /// `serve` does nothing). Refused, with nothing changed, when the id is taken or the
    /// device's bridge is not there.
    pub fn add(&mut self, d: &HotDevice, serve: impl FnOnce() -> Result<()>) -> Result<()> {
        check_id(&d.id)?;
        check_id(&d.chardev)?;
        d.slot.check()?;
        let devices = self.devices()?;
        if devices.contains(&d.id) {
            bail!(
                "{} already has a device {:?} (a worker channel of that name); nothing was \
                 changed",
                self.who,
                d.id
            );
        }
        if let Some(b) = d.slot.bridge.map(crate::pci::bridge_id) {
            if !devices.contains(&b) {
                bail!(
                    "{} has no PCI bridge {b:?} for the device at {}: it needs the bridges \
                     qemu-args gives it from boot; nothing was changed",
                    self.who,
                    d.slot
                );
            }
        }
        if self.chardevs()?.contains(&d.chardev) {
            bail!(
                "{} already has a chardev {:?}; nothing was changed",
                self.who,
                d.chardev
            );
        }
        self.qmp
            .execute(&chardev_add(&d.chardev, &d.socket)?)
            .with_context(|| format!("chardev-add of {:?} on {}", d.chardev, d.socket.display()))?;
        let added = serve().and_then(|()| {
            self.qmp
                .execute(&device_add(d))
                .map(drop)
                .with_context(|| format!("device_add of {:?} at {}", d.id, d.slot))
        });
        if let Err(e) = added {
            // Undo the chardev: the VM is left as it was.
            let _ = self.qmp.execute(&qmp::chardev_remove {
                id: d.chardev.clone(),
            });
            return Err(e);
        }
        Ok(())
    }

    /// Removes device `id`: `device_del`, then waits up to `timeout` for the guest to release
    /// it (`DEVICE_DELETED`), then removes its chardev `chardev`. Refused, with nothing
    /// changed, when the VM has no such device.
    pub fn remove(&mut self, id: &str, chardev: &str, timeout: Duration) -> Result<()> {
        check_id(id)?;
        if !self.devices()?.iter().any(|d| d == id) {
            bail!("{} has no device {id:?}; nothing was changed", self.who);
        }
        // Events of earlier commands are not this removal's.
        self.qmp.events().for_each(drop);
        self.qmp
            .execute(&qmp::device_del { id: id.into() })
            .with_context(|| format!("device_del of {id:?}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let gone = self.qmp.events().any(|e| {
                matches!(e, qmp::Event::DEVICE_DELETED { data, .. }
                    if data.device.as_deref() == Some(id))
            });
            if gone {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the guest did not release {id:?} within {} s (its ACPI hot-plug must \
                     eject the device; it stays asked to)",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
            // Reads what QEMU sent meanwhile, events included.
            self.qmp
                .nop()
                .with_context(|| format!("QMP on {}", self.path.display()))?;
        }
        self.qmp
            .execute(&qmp::chardev_remove { id: chardev.into() })
            .with_context(|| format!("chardev-remove of {chardev:?}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: serde::Serialize>(c: &T) -> serde_json::Value {
        serde_json::to_value(c).unwrap()
    }

    #[test]
    fn the_commands_carry_the_device_its_chardev_and_its_slot() {
        let d = HotDevice {
            id: "w24".into(),
            chardev: "w24.setup".into(),
            socket: "/run/x/w24.sock".into(),
            slot: PciSlot::behind(0, 1),
            vectors: 1,
        };
        assert_eq!(
            json(&device_add(&d)),
            serde_json::json!({
                "driver": "ivshmem-doorbell",
                "id": "w24",
                "bus": "sivshm-bridge.0",
                "chardev": "w24.setup",
                "vectors": 1,
                "addr": "0x1.0",
            })
        );
        let root = HotDevice {
            slot: PciSlot::root(5),
            ..d.clone()
        };
        let v = json(&device_add(&root));
        assert!(v.get("bus").is_none(), "{v}");
        assert_eq!(v["addr"], "0x5.0");
        assert_eq!(
            json(&chardev_add("w24.setup", &d.socket).unwrap()),
            serde_json::json!({
                "id": "w24.setup",
                "backend": {
                    "type": "socket",
                    "data": {
                        "addr": {"type": "unix", "data": {"path": "/run/x/w24.sock"}},
                        "server": false,
                    }
                }
            })
        );
    }

    #[test]
    fn ids_qemu_would_refuse_are_refused_first() {
        for bad in ["", "1w", "w 1", "-w", "w/1", &"w".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["w", "worker-7", "W_1", "w1.setup", "sivshm-w2"] {
            check_id(good).unwrap();
        }
    }

    #[test]
    fn a_qemu_that_is_not_running_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let e = Monitor::connect(&path).err().unwrap().to_string();
        assert!(e.contains("the manager is not running"), "{e}");
        // A socket whose listener is gone: refused, not a hang. (Should another test of this
        // binary fork between our bind and drop, its child holds the listener until it execs:
        // then the connection is accepted by nobody and the handshake fails instead, at once
        // when the child's exec closes it; a clear error all the same.)
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = Monitor::connect(&path).err().unwrap().to_string();
        assert!(
            e.contains("the manager is not running") || e.contains("QMP handshake on"),
            "{e}"
        );
    }
}
