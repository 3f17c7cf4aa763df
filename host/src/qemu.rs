//! Building QEMU command lines for the test guests and running them with a deadline.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use command_fds::{CommandFdExt, FdMapping};

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

/// The i440fx machine's bus 0 has slots 0 to 31; QEMU's `pci-bridge` has 32, of which slot
/// 0 is left free (31 usable, as with the bridge's SHPC).
pub const BRIDGE_FIRST_SLOT: u8 = 1;
/// The slot of bus 0 that the first PCI bridge takes; bridge `k` takes `BRIDGE_SLOT + k`.
pub const BRIDGE_SLOT: u8 = 0x1c;
/// Bridges a guest can have (bus 0's slots `BRIDGE_SLOT` to 31).
pub const MAX_BRIDGES: u8 = 32 - BRIDGE_SLOT;

/// Where a device sits: a slot of bus 0, or a slot behind one of the guest's PCI bridges.
///
/// Bridge `k` is a `pci-bridge` with id [`bridge_id`]`(k)` and `chassis_nr=K+1` at bus 0's
/// slot `BRIDGE_SLOT + k` ([`bridge_slot`]). The firmware numbers the buses behind bridges
/// depth first in slot order, and no other bridge sits on bus 0 at a lower slot, so bridge
/// `k`'s bus is `k + 1` ([`bridge_bus`]): the address is the same on every boot and does not
/// depend on which devices are present (the bridges are always there, so a device
/// hot-plugged later gets the address it was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciSlot {
    pub bridge: Option<u8>,
    pub slot: u8,
}

impl PciSlot {
    /// Slot `slot` of bus 0.
    pub const fn root(slot: u8) -> Self {
        PciSlot { bridge: None, slot }
    }

    /// Slot `slot` behind bridge `bridge`.
    pub const fn behind(bridge: u8, slot: u8) -> Self {
        PciSlot {
            bridge: Some(bridge),
            slot,
        }
    }

    /// The guest's bus number.
    pub fn bus(&self) -> u8 {
        self.bridge.map_or(0, bridge_bus)
    }

    /// The guest's PCI address, as `lspci -D` and `SIVSHM_IOCTL_GET_INFO` give it.
    pub fn bdf(&self) -> String {
        format!("0000:{:02x}:{:02x}.0", self.bus(), self.slot)
    }

    /// QEMU's `-device` properties that place a device here.
    pub fn qemu_props(&self) -> String {
        match self.bridge {
            None => format!("addr={:#x}.0", self.slot),
            Some(b) => format!("bus={},addr={:#x}.0", bridge_id(b), self.slot),
        }
    }

    /// Checks that the slot exists: 0 to 31 on bus 0, 1 to 31 behind a bridge that exists.
    pub fn check(&self) -> Result<()> {
        match self.bridge {
            None if self.slot < 32 => Ok(()),
            Some(b) if b < MAX_BRIDGES && (BRIDGE_FIRST_SLOT..32).contains(&self.slot) => Ok(()),
            _ => bail!("no PCI slot {self}"),
        }
    }
}

impl std::fmt::Display for PciSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bridge {
            None => write!(f, "{:#x}", self.slot),
            Some(b) => write!(f, "{:#x} behind bridge {b}", self.slot),
        }
    }
}

/// QEMU's id of bridge `k`, which also names its bus (`bus=` of the devices behind it).
/// `qemu-args` adds the bridges to the user's own VMs: the `sivshm-` prefix keeps the id
/// apart from the user's devices, and the dot from the service's `sivshm-NAME` devices
/// (VM names have no dot).
pub fn bridge_id(k: u8) -> String {
    format!("sivshm-bridge.{k}")
}

/// The slot of bus 0 that bridge `k` takes.
pub const fn bridge_slot(k: u8) -> PciSlot {
    PciSlot::root(BRIDGE_SLOT + k)
}

/// The guest's number of the bus behind bridge `k`, given that the guest has no other
/// bridge on bus 0 at a lower slot (see [`PciSlot`]).
pub const fn bridge_bus(k: u8) -> u8 {
    k + 1
}

/// Bridge `k`'s chassis number: QEMU's `chassis_nr`, libvirt's `chassisNr`. QEMU requires
/// every bridge to have a chassis number of its own, above 0.
pub fn bridge_chassis(k: u8) -> u16 {
    u16::from(k) + 1
}

/// The 64-bit prefetchable window each bridge asks the firmware for (QEMU's `pref64-reserve`,
/// read by SeaBIOS and OVMF from the bridge's resource-reserve capability), in GiB.
///
/// It is what makes the shared memory write-back (Documentation/memory-type.rst). Firmware
/// marks the 32-bit PCI hole uncached in the guest's MTRRs and write-back everything above
/// 4 GiB, and the guest's PAT type of BAR2 follows the MTRRs. SeaBIOS 1.16 places 64-bit BARs
/// in the 32-bit hole whenever everything fits there; a window larger than the hole (at most
/// about 2 GiB) does not, so SeaBIOS moves every 64-bit BAR of bus 0 and every bridge's
/// 64-bit window above 4 GiB, and devices behind a bridge, also those hot-plugged later, get
/// their BAR2 from its window. 12 GiB rather than just over 2: SeaBIOS puts the 64-bit area
/// at the top of the physical address space and, where QEMU reserves AMD's HyperTransport
/// hole (the 12 GiB below 1 TiB, with 40 physical address bits), moves it down by its own
/// size only once; an area of at least 12 GiB thus lies wholly below the hole, where the
/// guest kernel may still allocate BARs for hot-plugged devices.
pub const BRIDGE_PREF64_RESERVE_GIB: u64 = 12;

/// [`BRIDGE_PREF64_RESERVE_GIB`] in bytes (libvirt's `<qemu:property type='unsigned'>`).
pub const BRIDGE_PREF64_RESERVE: u64 = BRIDGE_PREF64_RESERVE_GIB << 30;

/// `-device` arguments of bridge `k`: with the 64-bit window that puts the shared memory
/// above 4 GiB ([`BRIDGE_PREF64_RESERVE_GIB`]).
pub fn bridge_device(k: u8) -> String {
    format!(
        "{},pref64-reserve={BRIDGE_PREF64_RESERVE_GIB}G",
        bridge_device_in_hole(k)
    )
}

/// `-device` arguments of bridge `k` without a reserved 64-bit window: the firmware then
/// leaves small 64-bit BARs in the uncached 32-bit PCI hole ([`Vm::in_uncached_hole`]).
pub fn bridge_device_in_hole(k: u8) -> String {
    format!(
        "pci-bridge,id={},chassis_nr={},addr={:#x}.0",
        bridge_id(k),
        bridge_chassis(k),
        bridge_slot(k).slot
    )
}

/// The bridges a guest needs for devices at `slots`: bridge 0 up to the highest one they
/// sit behind.
pub fn bridges_used(slots: impl IntoIterator<Item = PciSlot>) -> u8 {
    slots
        .into_iter()
        .filter_map(|s| s.bridge)
        .map(|b| b.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// The bridges a guest gets for devices at `slots`: those they sit behind, and at least
/// bridge 0, whose 64-bit window moves every BAR2 of bus 0 above 4 GiB
/// ([`BRIDGE_PREF64_RESERVE_GIB`]).
pub fn bridges_for_write_back(slots: impl IntoIterator<Item = PciSlot>) -> u8 {
    bridges_used(slots).max(1)
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
    /// A QMP socket QEMU listens on, for `sivshm-host` to drive the running guest.
    pub qmp: Option<PathBuf>,
    /// Leave the shared memory where the firmware's MTRRs say uncached (see
    /// [`Vm::in_uncached_hole`]); by default it is placed write-back.
    pub uncached_hole: bool,
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
                    a.push("-device".into());
                    a.push(
                        format!(
                            "ivshmem-doorbell,chardev=db{i},vectors={vectors},{}",
                            slot.qemu_props()
                        )
                        .into(),
                    );
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
                    a.push("-device".into());
                    a.push(
                        format!(
                            "ivshmem-doorbell,chardev=db{i},vectors={vectors},{}",
                            slot.qemu_props()
                        )
                        .into(),
                    );
                }
            }
        }
        let mut slots: Vec<PciSlot> = Vec::new();
        let bridges = self.bridge_count();
        for k in 0..bridges {
            slots.push(bridge_slot(k));
        }
        for d in &self.devices {
            let s = d.slot();
            s.check()?;
            if slots.contains(&s) {
                bail!("{}: PCI slot {s} is taken twice", self.name);
            }
            slots.push(s);
        }
        for (i, n) in self.nics.iter().enumerate() {
            let s = PciSlot::root(n.slot);
            if slots.contains(&s) {
                bail!("{}: PCI slot {s} is taken twice", self.name);
            }
            slots.push(s);
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

/// A guest that is running.
pub struct Running {
    pub name: String,
    child: Child,
    log: PathBuf,
    started: Instant,
    boot_id: String,
    wants_kmemleak: bool,
    memory: MemoryExpectation,
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

/// How a guest ended.
pub struct Finished {
    pub name: String,
    pub log: String,
    pub log_path: PathBuf,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// The id this boot was given; a log that does not show it is not this boot's.
    pub boot_id: String,
    pub wants_kmemleak: bool,
    pub memory: MemoryExpectation,
}

/// A value that differs between runs: the time in nanoseconds mixed with the process id.
pub fn unique_value() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// A value unique to this boot, so that a stale log can never pass for a new one.
fn boot_id(name: &str) -> String {
    format!("{name}-{:x}", unique_value())
}

impl Machine {
    pub fn spawn(&self, vm: &Vm, logdir: &Path) -> Result<Running> {
        let log = logdir.join(format!("{}.log", vm.name));
        // A previous run's log must not be read if this QEMU fails before writing one.
        match fs::remove_file(&log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", log.display()))
            }
            _ => {}
        }
        let id = boot_id(&vm.name);
        let (args, fds) = vm.args(self, &log, &id)?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(fs::File::create(
            logdir.join(format!("{}.qemu-stderr", vm.name)),
        )?);
        cmd.fd_mappings(fds)
            .context("passing chardev fds to QEMU")?;
        tie_to_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.qemu.display()))?;
        Ok(Running {
            name: vm.name.clone(),
            child,
            log,
            started: Instant::now(),
            boot_id: id,
            wants_kmemleak: vm.wants_kmemleak(),
            memory: vm.memory_expectation(),
        })
    }
}

/// Makes the child die with this process: a guest must not outlive a `sivshm-host` that was
/// killed (a CI timeout, `SIGTERM`, `SIGKILL`), which `Drop` alone cannot cover. The death
/// signal follows the thread that forks, so guests are spawned from the main thread.
pub fn tie_to_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: The closure runs in the child between fork and exec and only makes two system
    // calls (prctl, getppid), which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl: then nobody would kill us.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other(
                    "sivshm-host exited while starting QEMU",
                ));
            }
            Ok(())
        });
    }
}

impl Drop for Running {
    /// A guest abandoned on an error path must not outlive the run.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Whether QEMU has exited (the guest powered off or crashed).
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// The guest's serial log, written while it runs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits for the guest to power off, killing it at `deadline`, or at once when
    /// `sivshm-host` is told to stop (`interrupt`): that is an error.
    pub fn wait(mut self, deadline: Instant) -> Result<Finished> {
        let mut timed_out = false;
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if let Err(e) = crate::interrupt::check() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(e.context(format!("guest {} killed", self.name)));
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = self.child.kill();
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = self.started.elapsed();
        let log = fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let stderr = self.log.with_extension("qemu-stderr");
        let err = fs::read_to_string(&stderr).unwrap_or_default();
        let log = if err.trim().is_empty() {
            log
        } else {
            format!("{log}\nqemu stderr:\n{err}")
        };
        Ok(Finished {
            name: std::mem::take(&mut self.name),
            log,
            log_path: std::mem::take(&mut self.log),
            boot_id: std::mem::take(&mut self.boot_id),
            wants_kmemleak: self.wants_kmemleak,
            memory: std::mem::take(&mut self.memory),
            timed_out,
            elapsed,
        })
    }
}

/// Runs guests side by side and waits for all of them.
pub fn run_all(m: &Machine, vms: &[Vm], logdir: &Path, timeout: Duration) -> Result<Vec<Finished>> {
    run_in_waves(m, vms, logdir, timeout, 0)
}

/// Like [`run_all`], but starts the guests `wave` at a time (0: all at once): the next wave
/// once every guest of the one before has reached its command (or stopped). They all end up
/// running side by side. Under TCG on a small host, dozens of guests booting at once starve
/// each other's vCPUs for so long that their clocks jump and their timeouts fire; booting in
/// waves keeps the number of kernels booting at once small.
pub fn run_in_waves(
    m: &Machine,
    vms: &[Vm],
    logdir: &Path,
    timeout: Duration,
    wave: usize,
) -> Result<Vec<Finished>> {
    let deadline = Instant::now() + timeout;
    let wave = if wave == 0 { vms.len().max(1) } else { wave };
    let mut running: Vec<Running> = Vec::new();
    for group in vms.chunks(wave) {
        let first = running.len();
        for vm in group {
            running.push(m.spawn(vm, logdir)?);
        }
        if running.len() == vms.len() {
            break;
        }
        for r in &mut running[first..] {
            while !r.exited()? && !log_has(r.log_path(), crate::console::COMMAND_STARTED.as_bytes())
            {
                crate::interrupt::check()?;
                if Instant::now() >= deadline {
                    bail!(
                        "guest {} did not reach its command before the timeout",
                        r.name
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    running.into_iter().map(|r| r.wait(deadline)).collect()
}

/// Whether the file at `path` (a guest's serial log) contains `what`.
fn log_has(path: &Path, what: &[u8]) -> bool {
    fs::read(path).is_ok_and(|b| b.windows(what.len()).any(|w| w == what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/k/bzImage".into(),
            initrd: "/k/initrd".into(),
            accel: Accel::Tcg,
            memory_mib: 256,
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn plain_device_is_a_shared_file_backend_at_its_slot() {
        let vm = Vm::new("a", "sivshm_test").device(Device::Plain {
            slot: PciSlot::root(4),
            segment: crate::segments::create("seg0", 4 << 20).unwrap(),
            size: 4 << 20,
        });
        let (args, fds) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
        let s = joined(&args);
        assert!(s.contains(
            "memory-backend-file,id=shm0,size=4194304,share=on,mem-path=/proc/self/fd/10"
        ));
        assert!(s.contains("ivshmem-plain,memdev=shm0,addr=0x4.0"));
        assert!(s.contains("-accel tcg"));
        assert!(s.contains("-smp 1"));
        assert!(s.contains("SIVSHM_RUN=sivshm_test"));
        assert_eq!(fds.len(), 1, "the segment's memfd is passed to QEMU");
        assert_eq!(vm.devices[0].bdf(), "0000:00:04.0");
    }

    #[test]
    fn doorbell_chardev_fd_is_mapped_into_the_child() {
        let (_a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let vm = Vm::new("a", "true").device(Device::Doorbell {
            slot: PciSlot::root(5),
            chardev: b,
            vectors: 2,
        });
        let (args, fds) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
        let s = joined(&args);
        assert!(s.contains("-chardev socket,id=db0,fd=10"));
        assert!(s.contains("ivshmem-doorbell,chardev=db0,vectors=2,addr=0x5.0"));
        assert_eq!(fds.len(), 1);
        assert_eq!(fds[0].child_fd, 10);
    }

    #[test]
    fn a_nic_is_a_stream_netdev_on_its_inherited_socket_and_init_learns_its_address() {
        let (m, w) = crate::net::link(0).unwrap();
        let vm = Vm::new("a", "true")
            .device(Device::Plain {
                slot: PciSlot::root(4),
                segment: crate::segments::create("seg0", 1 << 20).unwrap(),
                size: 1 << 20,
            })
            .net(m);
        let (args, fds) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
        let s = joined(&args);
        assert!(
            s.contains("-netdev stream,id=net0,server=off,addr.type=fd,addr.str=11"),
            "{s}"
        );
        assert!(
            s.contains(
                "virtio-net-pci,netdev=net0,mac=52:54:00:77:00:01,host_mtu=65520,addr=0x1b.0"
            ),
            "{s}"
        );
        assert!(
            s.contains("SIVSHM_NET=52:54:00:77:00:01=10.77.0.1/24@65520"),
            "{s}"
        );
        assert!(
            !s.contains("-netdev user") && !s.contains("-nic"),
            "no user-mode networking: {s}"
        );
        assert_eq!(fds.len(), 2);
        assert_eq!(fds[1].child_fd, 11);
        // A NIC on a device's slot is refused, not left to QEMU.
        let clash = Vm::new("b", "true")
            .device(Device::Plain {
                slot: PciSlot::root(crate::net::WORKER_NIC_SLOT),
                segment: crate::segments::create("seg1", 1 << 20).unwrap(),
                size: 1 << 20,
            })
            .net(w);
        let e = clash
            .args(&machine(), Path::new("/tmp/b.log"), "id2")
            .unwrap_err();
        assert!(e.to_string().contains("taken twice"), "{e}");
    }

    #[test]
    fn devices_behind_bridges_get_the_bridge_bus_and_its_number() {
        let (_a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let vm = Vm::new("m", "true")
            .device(Device::Doorbell {
                slot: PciSlot::behind(1, 31),
                chardev: b,
                vectors: 1,
            })
            .qmp(Path::new("/run/q.sock"));
        assert_eq!(vm.devices[0].bdf(), "0000:02:1f.0");
        let (args, _) = vm.args(&machine(), Path::new("/tmp/m.log"), "id1").unwrap();
        let s = joined(&args);
        // Both bridges exist (the device sits behind the second), each with its chassis.
        assert!(
            s.contains(
                "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,\
                 pref64-reserve=12G -device"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "-device pci-bridge,id=sivshm-bridge.1,chassis_nr=2,addr=0x1d.0,\
                 pref64-reserve=12G -qmp"
            ),
            "{s}"
        );
        assert!(!s.contains("id=sivshm-bridge.2"), "{s}");
        assert!(
            s.contains("ivshmem-doorbell,chardev=db0,vectors=1,bus=sivshm-bridge.1,addr=0x1f.0"),
            "{s}"
        );
        assert!(
            s.contains("-qmp unix:/run/q.sock,server=on,wait=off"),
            "{s}"
        );
        // Bridges asked for stay, even with nothing behind them (for hot-plug).
        let empty = Vm::new("e", "true").bridges(4);
        let (args, _) = empty
            .args(&machine(), Path::new("/tmp/e.log"), "id2")
            .unwrap();
        assert_eq!(joined(&args).matches("pci-bridge").count(), 4);
    }

    #[test]
    fn slots_that_do_not_exist_or_are_taken_are_refused() {
        for bad in [
            PciSlot::root(32),
            PciSlot::behind(0, 0),
            PciSlot::behind(0, 32),
            PciSlot::behind(MAX_BRIDGES, 1),
        ] {
            assert!(bad.check().is_err(), "{bad}");
            let vm = Vm::new("a", "true").device(Device::Plain {
                slot: bad,
                segment: crate::segments::create("seg", 1 << 20).unwrap(),
                size: 1 << 20,
            });
            assert!(vm.args(&machine(), Path::new("/tmp/a.log"), "i").is_err());
        }
        // A device on a bridge's own slot of bus 0.
        let clash = Vm::new("a", "true").bridges(1).device(Device::Plain {
            slot: PciSlot::root(BRIDGE_SLOT),
            segment: crate::segments::create("seg", 1 << 20).unwrap(),
            size: 1 << 20,
        });
        let e = clash
            .args(&machine(), Path::new("/tmp/a.log"), "i")
            .unwrap_err();
        assert!(e.to_string().contains("taken twice"), "{e}");
        assert_eq!(PciSlot::behind(3, 1).bdf(), "0000:04:01.0");
        assert_eq!(PciSlot::root(4).bdf(), "0000:00:04.0");
    }

    #[test]
    fn every_guest_gets_bridge_0_and_its_64_bit_window_for_write_back() {
        let vm = Vm::new("w", "true").device(Device::Plain {
            slot: PciSlot::root(4),
            segment: crate::segments::create("wb", 1 << 20).unwrap(),
            size: 1 << 20,
        });
        let s = joined(
            &vm.args(&machine(), Path::new("/tmp/w.log"), "id1")
                .unwrap()
                .0,
        );
        assert_eq!(s.matches("-device pci-bridge,").count(), 1, "{s}");
        assert!(
            s.contains(
                "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,\
                 pref64-reserve=12G"
            ),
            "{s}"
        );
        // Even a guest without devices: a hot-plugged one gets its BAR from the window.
        let s = joined(
            &Vm::new("e", "true")
                .args(&machine(), Path::new("/tmp/e.log"), "id2")
                .unwrap()
                .0,
        );
        assert_eq!(s.matches("pref64-reserve=12G").count(), 1, "{s}");
        assert_eq!(
            bridge_device(3),
            format!("{},pref64-reserve=12G", bridge_device_in_hole(3))
        );
        assert_eq!(BRIDGE_PREF64_RESERVE, 12 << 30);
    }

    #[test]
    fn in_the_uncached_hole_no_bridge_is_added_and_none_reserves_a_window() {
        let plain = |name: &str, slot| Device::Plain {
            slot,
            segment: crate::segments::create(name, 1 << 20).unwrap(),
            size: 1 << 20,
        };
        let vm = Vm::new("w", "true")
            .in_uncached_hole()
            .device(plain("h0", PciSlot::root(4)));
        let s = joined(
            &vm.args(&machine(), Path::new("/tmp/w.log"), "id1")
                .unwrap()
                .0,
        );
        assert!(!s.contains("pci-bridge"), "{s}");
        assert!(s.contains("ivshmem-plain,memdev=shm0,addr=0x4.0"), "{s}");
        // Behind a bridge: the bridge, without the window.
        let vm = Vm::new("m", "true")
            .in_uncached_hole()
            .device(plain("h1", PciSlot::behind(0, 1)));
        let s = joined(
            &vm.args(&machine(), Path::new("/tmp/m.log"), "id1")
                .unwrap()
                .0,
        );
        assert!(
            s.contains("-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0 -object"),
            "{s}"
        );
        assert!(!s.contains("pref64-reserve"), "{s}");
    }

    #[test]
    fn smp_sets_the_vcpu_count() {
        let vm = Vm::new("a", "true").smp(2);
        let (args, _) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
        assert!(joined(&args).contains("-smp 2"));
    }

    // tie_to_parent and the signal handling are tested on the real binary: tests/signals.rs.

    #[test]
    fn values_with_spaces_are_quoted_and_dotted_names_refused() {
        let vm = Vm::new("a", "sivshm_test -v");
        let line = vm.cmdline("id1").unwrap();
        assert!(line.contains("SIVSHM_RUN=\"sivshm_test -v\""));
        assert!(line.contains("SIVSHM_BOOT_ID=id1"));
        let bad = Vm::new("a", "x").env("sivshm.x", "1");
        assert!(bad.cmdline("id1").is_err());
        let quote = Vm::new("a", "echo \"hi\"");
        assert!(quote.cmdline("id1").is_err());
    }
}
