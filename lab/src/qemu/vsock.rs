//! vsock between sibling VMs, the transport the channel benchmark compares with besides TCP:
//! one `vhost-device-vsock` process (the vhost-user backend from crates.io, installed by
//! `scripts/bench.sh`) serves a virtio-vsock device per VM and forwards connections between
//! them (its "sibling VM communication": devices of one group reach each other by context
//! id). QEMU connects each VM's `vhost-user-vsock-pci` device to the backend's socket; the
//! backend reads and writes the guest's virtqueues and buffers in the guest's RAM directly,
//! so each VM's RAM must be a shared memfd (see [`VsockDevice::qemu_args`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::tie_to_parent;

/// The vsock device's slot on bus 0: below the worker's NIC (`net::WORKER_NIC_SLOT`) and
/// sivshm devices, above the machine's own (slot 1) and free since `-nodefaults` drops the
/// display (slot 2).
pub const SLOT: u8 = sivshm_host::pci::FIRST_SLOT - 2;

/// The context id of sibling `index` (0: the manager): the first ids above the host's (2).
pub fn cid(index: usize) -> u32 {
    3 + index as u32
}

/// A VM's virtio-vsock device, served by a [`Backend`].
#[derive(Clone, Debug)]
pub struct VsockDevice {
    /// The backend's vhost-user socket for this VM.
    pub socket: PathBuf,
    /// The device's slot on bus 0.
    pub slot: u8,
}

impl VsockDevice {
    /// QEMU's arguments for the device: the VM's RAM as one shared memfd (the backend maps
    /// it to reach the virtqueues), the vhost-user chardev and the device.
    pub fn qemu_args(&self, memory_mib: u32) -> Vec<OsString> {
        let mut chardev = OsString::from("socket,id=vsock0,path=");
        chardev.push(&self.socket);
        vec![
            "-object".into(),
            format!("memory-backend-memfd,id=ram0,size={memory_mib}M,share=on").into(),
            "-machine".into(),
            "memory-backend=ram0".into(),
            "-chardev".into(),
            chardev,
            "-device".into(),
            format!(
                "vhost-user-vsock-pci,chardev=vsock0,addr={:#x}.0",
                self.slot
            )
            .into(),
        ]
    }
}

/// A running `vhost-device-vsock` serving `n` sibling VMs, stopped when dropped.
pub struct Backend {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Backend {
    /// Starts `binary` for VMs of context ids `cid(0)..cid(n)`, all in one group, and waits
    /// until every vhost-user socket exists; the devices to give the VMs, in order, at
    /// `slot`.
    pub fn start(binary: &Path, n: usize, slot: u8) -> Result<(Self, Vec<VsockDevice>)> {
        let dir = tempfile::tempdir().context("a directory for the vsock backend's sockets")?;
        let mut cmd = Command::new(binary);
        let mut devices = Vec::new();
        for i in 0..n {
            let socket = dir.path().join(format!("vhost{i}.sock"));
            // The backend's own socket for host-side connections to this VM (unused here).
            let uds = dir.path().join(format!("vm{i}.vsock"));
            let mut vm = OsString::from(format!("guest-cid={},socket=", cid(i)));
            vm.push(&socket);
            vm.push(",uds-path=");
            vm.push(&uds);
            vm.push(",groups=sivshm-bench");
            cmd.arg("--vm").arg(vm);
            devices.push(VsockDevice { socket, slot });
        }
        cmd.stdin(Stdio::null());
        tie_to_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !devices.iter().all(|d| d.socket.exists()) {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited ({status}) before listening", binary.display());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not create its sockets within 10 s",
                    binary.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((Backend { child, _dir: dir }, devices))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_shares_the_vms_ram_and_sits_at_its_slot() {
        let d = VsockDevice {
            socket: "/tmp/x/vhost0.sock".into(),
            slot: 7,
        };
        let a: Vec<String> = d
            .qemu_args(256)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a,
            [
                "-object",
                "memory-backend-memfd,id=ram0,size=256M,share=on",
                "-machine",
                "memory-backend=ram0",
                "-chardev",
                "socket,id=vsock0,path=/tmp/x/vhost0.sock",
                "-device",
                "vhost-user-vsock-pci,chardev=vsock0,addr=0x7.0",
            ]
        );
        assert_eq!((cid(0), cid(1)), (3, 4));
    }

    #[test]
    fn a_backend_that_exits_at_once_is_an_error_naming_it() {
        let e = Backend::start(Path::new("/bin/false"), 2, 7)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/bin/false exited"), "{e}");
    }
}
