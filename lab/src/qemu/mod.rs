//! The test guests' QEMU command lines: the machine, the guest's devices, NICs and bridges,
//! and the arguments and inherited fds they become. Starting and supervising the QEMUs is
//! [`supervise`]'s.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use command_fds::FdMapping;
use sivshm_host::pci::{
    bridge_device, bridge_device_in_hole, bridge_slot, bridges_for_write_back, bridges_used,
    PciSlot, MAX_BRIDGES,
};

mod supervise;
#[cfg(test)]
mod tests;
pub mod vsock;

pub use supervise::{run_all, run_in_waves, tie_to_parent, unique_value, Finished, Running};

/// How QEMU executes the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// What every guest boots.
#[derive(Clone, Debug)]
pub struct Machine {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
}

/// An ivshmem device in a guest.
pub enum Device {
    /// `ivshmem-plain` on a segment (see `segments`) of `size` bytes.
    Plain {
        slot: PciSlot,
        segment: File,
        size: u64,
    },
    /// `ivshmem-doorbell` whose setup stream is already queued on `chardev` (QEMU's end of a
    /// prefilled socket pair, see `protocol`).
    Doorbell {
        slot: PciSlot,
        chardev: OwnedFd,
        vectors: u16,
    },
    /// `ivshmem-doorbell` connected to a central server's socket (the IVSHMEM baseline).
    Server {
        slot: PciSlot,
        socket: PathBuf,
        vectors: u16,
    },
}

impl Device {
    pub fn slot(&self) -> PciSlot {
        match self {
            Device::Plain { slot, .. }
            | Device::Doorbell { slot, .. }
            | Device::Server { slot, .. } => *slot,
        }
    }

    /// The guest's PCI address of the device.
    pub fn bdf(&self) -> String {
        self.slot().bdf()
    }
}

/// A virtio-net NIC on one end of a point-to-point link (see `net`): QEMU's `-netdev stream`
/// on an inherited, already connected socket, so no host network and no file is involved.
pub struct Nic {
    pub slot: u8,
    pub mac: String,
    /// The guest's address on the link, `A.B.C.D/PREFIX`; guest/init assigns it to the
    /// interface with this MAC (`SIVSHM_NET`).
    pub addr: String,
    /// The link's MTU: advertised to the guest (`host_mtu`) and set by guest/init.
    pub mtu: u16,
    /// This end of the link's socket pair.
    pub socket: OwnedFd,
}

/// One guest: its devices and what its init runs.
pub struct Vm {
    pub name: String,
    pub devices: Vec<Device>,
    pub nics: Vec<Nic>,
    /// Passed as `NAME=value` on the kernel command line; init sees them as environment.
    pub env: Vec<(String, String)>,
    /// Virtual CPUs: 2 where races between fault, revoke, release and interrupts must really
    /// run in parallel.
    pub cpus: u8,
    /// PCI bridges on bus 0 (at least as many as the devices sit behind), present from boot
    /// so that devices can be hot-plugged behind them.
    pub bridges: u8,
    /// A QMP socket QEMU listens on, for `sivshm-lab` to drive the running guest.
    pub qmp: Option<PathBuf>,
    /// Leave the shared memory where the firmware's MTRRs say uncached (see
    /// [`Vm::in_uncached_hole`]); by default it is placed write-back.
    pub uncached_hole: bool,
    /// A virtio-vsock device served by a vhost-user backend (see `vsock`); the VM's RAM is
    /// then a shared memfd.
    pub vsock: Option<crate::qemu::vsock::VsockDevice>,
}

/// First fd number handed to QEMU for chardevs; above anything QEMU opens before parsing.
const FIRST_CHILD_FD: i32 = 10;

impl Vm {
    pub fn new(name: &str, run: &str) -> Self {
        Vm {
            name: name.to_string(),
            devices: Vec::new(),
            nics: Vec::new(),
            env: vec![("SIVSHM_RUN".into(), run.into())],
            cpus: 1,
            bridges: 0,
            qmp: None,
            uncached_hole: false,
            vsock: None,
        }
    }

    /// Gives the guest `n` PCI bridges from boot, whether or not devices sit behind them yet.
    pub fn bridges(mut self, n: u8) -> Self {
        self.bridges = n;
        self
    }

    /// Lets QEMU listen for QMP on the unix socket `path`.
    pub fn qmp(mut self, path: &Path) -> Self {
        self.qmp = Some(path.to_path_buf());
        self
    }

    /// Leaves every device's shared memory (BAR2) where the firmware puts it without help: for
    /// segments that fit, in the 32-bit PCI hole, which the firmware's MTRRs mark uncached, so
    /// the guest's mapping is uncached-minus and the driver warns. No bridge is added beyond
    /// those asked for or sat behind, and bridges reserve no 64-bit window. For the test that
    /// the driver reports and warns; everything else is placed write-back
    /// ([`BRIDGE_PREF64_RESERVE_GIB`]).
    #[allow(
        dead_code,
        reason = "for the guest test of the driver's uncached warning"
    )]
    pub fn in_uncached_hole(mut self) -> Self {
        self.uncached_hole = true;
        self
    }

    /// The bridges QEMU gets: those asked for and those the devices sit behind, and bridge 0
    /// in any case unless the shared memory is to stay in the uncached hole.
    fn bridge_count(&self) -> u8 {
        let slots = self.devices.iter().map(Device::slot);
        let used = if self.uncached_hole {
            bridges_used(slots)
        } else {
            bridges_for_write_back(slots)
        };
        self.bridges.max(used).min(MAX_BRIDGES)
    }

    /// Boots with `n` virtual CPUs (the guest kernel's `CONFIG_NR_CPUS`, 2 as built from
    /// tinyconfig, caps how many it brings up). Under TCG each is a host thread of its own.
    pub fn smp(mut self, n: u8) -> Self {
        self.cpus = n.max(1);
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn device(mut self, d: Device) -> Self {
        self.devices.push(d);
        self
    }

    /// Adds a virtio-net NIC; guest/init brings it up with its address before the command.
    pub fn net(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// `SIVSHM_NET` for guest/init: `MAC=ADDR/PREFIX@MTU` per NIC, comma separated.
    fn net_env(&self) -> Option<(String, String)> {
        (!self.nics.is_empty()).then(|| {
            let v: Vec<String> = self
                .nics
                .iter()
                .map(|n| format!("{}={}@{}", n.mac, n.addr, n.mtu))
                .collect();
            ("SIVSHM_NET".to_string(), v.join(","))
        })
    }

    fn cmdline(&self, boot_id: &str) -> Result<String> {
        let mut s = format!("console=ttyS0 panic=-1 loglevel=7 SIVSHM_BOOT_ID={boot_id}");
        for (k, v) in self.env.iter().chain(self.net_env().as_ref()) {
            if v.contains('"') || k.contains('.') || k.contains(' ') {
                bail!("kernel command line parameter {k}={v:?} cannot be passed to init");
            }
            if v.contains(' ') {
                s += &format!(" {k}=\"{v}\"");
            } else {
                s += &format!(" {k}={v}");
            }
        }
        Ok(s)
    }

    /// QEMU's arguments and the fds the child must inherit.
    /// Whether the guest is asked for a kmemleak report after its command.
    pub fn wants_kmemleak(&self) -> bool {
        self.env.iter().any(|(k, _)| k == "SIVSHM_KMEMLEAK")
    }

    /// What the guest's sivshm devices must report as their memory type.
    pub fn memory_expectation(&self) -> MemoryExpectation {
        MemoryExpectation {
            devices: self.devices.len(),
            in_hole: self.uncached_hole,
        }
    }

    /// QEMU's arguments and the fds the child must inherit. `boot_id` identifies this boot
    /// in the serial log.
    pub fn args(
        &self,
        m: &Machine,
        log: &Path,
        boot_id: &str,
    ) -> Result<(Vec<OsString>, Vec<FdMapping>)> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-accel");
        push(m.accel.name());
        for s in [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ] {
            push(s);
        }
        push("-smp");
        push(&self.cpus.to_string());
        push("-m");
        push(&m.memory_mib.to_string());
        push("-serial");
        push(&format!("file:{}", log.display()));
        push("-append");
        push(&self.cmdline(boot_id)?);
        a.push("-kernel".into());
        a.push(m.kernel.clone().into());
        a.push("-initrd".into());
        a.push(m.initrd.clone().into());
        for k in 0..self.bridge_count() {
            a.push("-device".into());
            a.push(if self.uncached_hole {
                bridge_device_in_hole(k).into()
            } else {
                bridge_device(k).into()
            });
        }
        if let Some(q) = &self.qmp {
            let mut arg = OsString::from("unix:");
            arg.push(q);
            arg.push(",server=on,wait=off");
            a.push("-qmp".into());
            a.push(arg);
        }
        let mut fds = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            match d {
                Device::Plain {
                    slot,
                    segment,
                    size,
                } => {
                    // QEMU opens the inherited memfd again through /proc/self/fd.
                    let child_fd = FIRST_CHILD_FD + fds.len() as i32;
                    fds.push(FdMapping {
                        parent_fd: segment.try_clone()?.into(),
                        child_fd,
                    });
                    a.push("-object".into());
                    a.push(
                        format!(
                            "memory-backend-file,id=shm{i},size={size},share=on,\
                             mem-path=/proc/self/fd/{child_fd}"
                        )
                        .into(),
                    );
                    a.push("-device".into());
                    a.push(format!("ivshmem-plain,memdev=shm{i},{}", slot.qemu_props()).into());
                }
                Device::Doorbell {
                    slot,
                    chardev,
                    vectors,
                } => {
                    let child_fd = FIRST_CHILD_FD + fds.len() as i32;
                    fds.push(FdMapping {
                        parent_fd: chardev.try_clone()?,
                        child_fd,
                    });
                    a.push("-chardev".into());
                    a.push(format!("socket,id=db{i},fd={child_fd}").into());
                    a.extend(doorbell_device(i, *vectors, *slot));
                }
                Device::Server {
                    slot,
                    socket,
                    vectors,
                } => {
                    let mut chardev = OsString::from(format!("socket,id=db{i},path="));
                    chardev.push(socket);
                    a.push("-chardev".into());
                    a.push(chardev);
                    a.extend(doorbell_device(i, *vectors, *slot));
                }
            }
        }
        let mut slots: Vec<PciSlot> = Vec::new();
        let bridges = self.bridge_count();
        for k in 0..bridges {
            slots.push(bridge_slot(k));
        }
        let mut take = |s: PciSlot| {
            if slots.contains(&s) {
                bail!("{}: PCI slot {s} is taken twice", self.name);
            }
            slots.push(s);
            Ok(())
        };
        for d in &self.devices {
            let s = d.slot();
            s.check()?;
            take(s)?;
        }
        if let Some(v) = &self.vsock {
            take(PciSlot::root(v.slot))?;
            a.extend(v.qemu_args(m.memory_mib));
        }
        for (i, n) in self.nics.iter().enumerate() {
            take(PciSlot::root(n.slot))?;
            let child_fd = FIRST_CHILD_FD + fds.len() as i32;
            fds.push(FdMapping {
                parent_fd: n.socket.try_clone()?,
                child_fd,
            });
            // A connected stream socket: QEMU frames each Ethernet frame with its length.
            a.push("-netdev".into());
            a.push(format!("stream,id=net{i},server=off,addr.type=fd,addr.str={child_fd}").into());
            a.push("-device".into());
            a.push(
                format!(
                    "virtio-net-pci,netdev=net{i},mac={},host_mtu={},addr={:#x}.0",
                    n.mac, n.mtu, n.slot
                )
                .into(),
            );
        }
        Ok((a, fds))
    }
}

/// The `-device` arguments of the `ivshmem-doorbell` on chardev `db{i}`.
fn doorbell_device(i: usize, vectors: u16, slot: PciSlot) -> [OsString; 2] {
    [
        "-device".into(),
        format!(
            "ivshmem-doorbell,chardev=db{i},vectors={vectors},{}",
            slot.qemu_props()
        )
        .into(),
    ]
}

/// What a guest's sivshm devices must report as their memory type at boot (the
/// `SIVSHM-MEMTYPE` lines of guest/init).
#[derive(Clone, Debug, Default)]
pub struct MemoryExpectation {
    /// sivshm devices present at boot: as many lines must appear.
    pub devices: usize,
    /// The guest's devices were left in the firmware's uncached hole on purpose
    /// ([`Vm::in_uncached_hole`]): each must report uncached-minus, and the driver must warn.
    /// Otherwise each must be write-back, with no warning.
    pub in_hole: bool,
}
