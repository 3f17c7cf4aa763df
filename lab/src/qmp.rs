//! Worker channels added to and removed from a running manager, over QEMU's QMP (the `qapi`
//! crate's typed commands and events; no JSON is written by hand).
//!
//! Adding a channel is `chardev-add` of a unix socket chardev, QEMU connecting to a socket
//! that `sivshm-lab` listens on and where it then queues the device's setup stream
//! ([`SetupSocket`]), followed by `device_add` of an `ivshmem-doorbell` on that chardev at the
//! worker's PCI slot (behind a bridge that exists from boot). QEMU's ivshmem reads the whole
//! stream while the device is realised, so the stream is queued before `device_add`.
//! Removing it is `device_del`, which on i440fx asks the guest's ACPI hot-plug driver to
//! eject the device; QEMU reports `DEVICE_DELETED` once the guest has let it go, and only
//! then is the chardev removed.
//!
//! Every refusal (a name that exists, a channel that does not, a manager that is not running)
//! is found before anything is changed, and a step that fails undoes the steps before it, so
//! the running topology is left as it was.

use std::io::BufReader;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use qapi::qmp;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use sivshm_host::pci::PciSlot;
use sivshm_host::protocol::{send_message, Message};

/// A worker channel to plug into the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotDevice {
    /// QEMU's id of the device, the worker's name.
    pub name: String,
    /// The unix socket QEMU connects the device's chardev to.
    pub socket: PathBuf,
    pub slot: PciSlot,
    pub vectors: u16,
}

/// The chardev's id: the device's name and a suffix no worker name has.
pub fn chardev_id(name: &str) -> String {
    format!("{name}.setup")
}

/// A worker name QEMU takes as an id and this tool as a file name: 1 to 64 letters, digits,
/// `-` and `_`, starting with a letter.
pub fn check_name(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty()
        || name.len() > 64
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(ok)
    {
        bail!(
            "worker name {name:?} must be 1 to 64 letters, digits, '-' or '_', starting with a \
             letter"
        );
    }
    Ok(())
}

/// `chardev-add`: a unix socket client on `socket`.
pub fn chardev_add(name: &str, socket: &Path) -> Result<qmp::chardev_add> {
    let path = socket
        .to_str()
        .with_context(|| format!("{} is not UTF-8", socket.display()))?;
    Ok(qmp::chardev_add {
        id: chardev_id(name),
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
    args.insert("chardev".into(), chardev_id(&d.name).into());
    args.insert("vectors".into(), u64::from(d.vectors).into());
    args.insert("addr".into(), format!("{:#x}.0", d.slot.slot).into());
    qmp::device_add {
        driver: "ivshmem-doorbell".into(),
        id: Some(d.name.clone()),
        bus: d.slot.bridge.map(sivshm_host::pci::bridge_id),
        arguments: args,
    }
}

type Stream = qapi::Stream<BufReader<UnixStream>, UnixStream>;

/// A QMP connection to a running manager's QEMU.
pub struct Monitor {
    qmp: qapi::Qmp<Stream>,
    path: PathBuf,
}

impl Monitor {
    /// Connects to the QMP socket `path` and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Self> {
        let s = UnixStream::connect(path).map_err(|e| {
            anyhow!(
                "the manager is not running: nothing answers on its QMP socket {} ({e})",
                path.display()
            )
        })?;
        // A QEMU that stops answering must not hang sivshm-lab.
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = BufReader::new(s.try_clone()?);
        let mut qmp = qapi::Qmp::new(qapi::Stream::new(r, s));
        qmp.handshake()
            .with_context(|| format!("QMP handshake on {}", path.display()))?;
        Ok(Monitor {
            qmp,
            path: path.to_path_buf(),
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

    /// Adds worker channel `d`; `serve` queues the device's setup stream once QEMU has
    /// connected the chardev. Refused, with nothing changed, when the name is taken.
    pub fn add(&mut self, d: &HotDevice, serve: impl FnOnce() -> Result<()>) -> Result<()> {
        check_name(&d.name)?;
        d.slot.check()?;
        if self.devices()?.contains(&d.name) {
            bail!(
                "the manager already has a worker channel named {:?}; nothing was changed",
                d.name
            );
        }
        if self.chardevs()?.contains(&chardev_id(&d.name)) {
            bail!(
                "the manager already has a chardev {:?}; nothing was changed",
                chardev_id(&d.name)
            );
        }
        self.qmp
            .execute(&chardev_add(&d.name, &d.socket)?)
            .with_context(|| format!("chardev-add for {:?}", d.name))?;
        let added = serve().and_then(|()| {
            self.qmp
                .execute(&device_add(d))
                .map(drop)
                .with_context(|| format!("device_add of {:?} at {}", d.name, d.slot))
        });
        if let Err(e) = added {
            // Undo the chardev: the topology is left as it was.
            let _ = self.qmp.execute(&qmp::chardev_remove {
                id: chardev_id(&d.name),
            });
            return Err(e);
        }
        Ok(())
    }

    /// Removes worker channel `name`: `device_del`, then waits up to `timeout` for the guest
    /// to release it (`DEVICE_DELETED`), then removes its chardev. Refused, with nothing
    /// changed, when the manager has no such channel.
    pub fn remove(&mut self, name: &str, timeout: Duration) -> Result<()> {
        check_name(name)?;
        if !self.devices()?.iter().any(|d| d == name) {
            bail!("the manager has no worker channel named {name:?}; nothing was changed");
        }
        // Events of earlier commands are not this removal's.
        self.qmp.events().for_each(drop);
        self.qmp
            .execute(&qmp::device_del { id: name.into() })
            .with_context(|| format!("device_del of {name:?}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let gone = self.qmp.events().any(|e| {
                matches!(e, qmp::Event::DEVICE_DELETED { data, .. }
                    if data.device.as_deref() == Some(name))
            });
            if gone {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the guest did not release {name:?} within {} s (its ACPI hot-plug must \
                     eject the device)",
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
            .execute(&qmp::chardev_remove {
                id: chardev_id(name),
            })
            .with_context(|| format!("chardev-remove of {:?}", chardev_id(name)))?;
        Ok(())
    }
}

/// Where QEMU's chardev of a hot-plugged device connects, and what it is sent there: the
/// device's setup stream, the same on every connection (a channel added again gets the same
/// segment and eventfds).
pub struct SetupSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The connection of the device plugged now; QEMU sees a closed one as a lost server.
    current: Option<OwnedFd>,
}

impl SetupSocket {
    pub fn bind(path: &Path) -> Result<Self> {
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        Ok(SetupSocket {
            listener,
            path: path.to_path_buf(),
            current: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts QEMU's connection (within `timeout`) and queues `msgs` on it.
    pub fn serve(&mut self, msgs: &[Message<'_>], timeout: Duration) -> Result<()> {
        let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
        let t = Timespec::try_from(timeout).context("timeout")?;
        if poll(&mut fds, Some(&t))? == 0 {
            bail!(
                "QEMU did not connect to {} within {} s",
                self.path.display(),
                timeout.as_secs()
            );
        }
        let (conn, _) = self.listener.accept()?;
        let fd: OwnedFd = conn.into();
        // The stream is a few hundred bytes; a fresh socket takes it whole.
        for m in msgs {
            send_message(&fd, m)
                .with_context(|| format!("sending the setup stream on {}", self.path.display()))?;
        }
        self.current = Some(fd);
        Ok(())
    }
}

impl AsFd for SetupSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
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
            name: "w24".into(),
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
            json(&chardev_add("w24", &d.socket).unwrap()),
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
    fn names_qemu_would_refuse_are_refused_first() {
        for bad in ["", "1w", "w.1", "w 1", "-w", &"w".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["w", "worker-7", "W_1"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn a_manager_that_is_not_running_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let e = Monitor::connect(&path).err().unwrap().to_string();
        assert!(e.contains("the manager is not running"), "{e}");
        // A socket whose listener is gone: refused, not a hang. (Should another test of this
        // binary fork between our bind and drop, its child holds the listener until it execs:
        // then the connection is accepted by nobody and the handshake fails instead, at once
        // when the child's exec closes it; a clear error all the same.)
        drop(UnixListener::bind(&path).unwrap());
        let e = Monitor::connect(&path).err().unwrap().to_string();
        assert!(
            e.contains("the manager is not running") || e.contains("QMP handshake on"),
            "{e}"
        );
    }

    #[test]
    fn the_setup_socket_queues_the_stream_for_the_connecting_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SetupSocket::bind(&dir.path().join("s.sock")).unwrap();
        let e = s.serve(&[], Duration::from_millis(50)).unwrap_err();
        assert!(e.to_string().contains("did not connect"), "{e}");
        let client = UnixStream::connect(s.path()).unwrap();
        let shm = tempfile::tempfile().unwrap();
        let msgs = [
            Message { value: 0, fd: None },
            Message {
                value: -1,
                fd: Some(shm.as_fd()),
            },
        ];
        s.serve(&msgs, Duration::from_secs(5)).unwrap();
        let c: OwnedFd = client.into();
        let (v0, f0) = sivshm_host::protocol::recv_message(&c).unwrap();
        let (v1, f1) = sivshm_host::protocol::recv_message(&c).unwrap();
        assert_eq!((v0, f0.is_some(), v1, f1.is_some()), (0, false, -1, true));
    }
}
