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

/// An ivshmem device in a guest.
pub enum Device {
    /// `ivshmem-plain` on a segment (see `segments`) of `size` bytes.
    Plain { slot: u8, segment: File, size: u64 },
    /// `ivshmem-doorbell` whose setup stream is already queued on `chardev` (QEMU's end of a
    /// prefilled socket pair, see `protocol`).
    Doorbell {
        slot: u8,
        chardev: OwnedFd,
        vectors: u16,
    },
    /// `ivshmem-doorbell` connected to a central server's socket (the IVSHMEM baseline).
    Server {
        slot: u8,
        socket: PathBuf,
        vectors: u16,
    },
}

impl Device {
    pub fn slot(&self) -> u8 {
        match self {
            Device::Plain { slot, .. }
            | Device::Doorbell { slot, .. }
            | Device::Server { slot, .. } => *slot,
        }
    }

    /// The guest's PCI address of the device (bus 0 of the i440fx machine).
    pub fn bdf(&self) -> String {
        format!("0000:00:{:02x}.0", self.slot())
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
        }
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
                    a.push(format!("ivshmem-plain,memdev=shm{i},addr={slot:#x}.0").into());
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
                            "ivshmem-doorbell,chardev=db{i},vectors={vectors},addr={slot:#x}.0"
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
                            "ivshmem-doorbell,chardev=db{i},vectors={vectors},addr={slot:#x}.0"
                        )
                        .into(),
                    );
                }
            }
        }
        let mut slots: Vec<u8> = self.devices.iter().map(Device::slot).collect();
        for (i, n) in self.nics.iter().enumerate() {
            if slots.contains(&n.slot) {
                bail!("{}: PCI slot {:#x} is taken twice", self.name, n.slot);
            }
            slots.push(n.slot);
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
            timed_out,
            elapsed,
        })
    }
}

/// Runs guests side by side and waits for all of them.
pub fn run_all(m: &Machine, vms: &[Vm], logdir: &Path, timeout: Duration) -> Result<Vec<Finished>> {
    let deadline = Instant::now() + timeout;
    let running = vms
        .iter()
        .map(|vm| m.spawn(vm, logdir))
        .collect::<Result<Vec<_>>>()?;
    running.into_iter().map(|r| r.wait(deadline)).collect()
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
            slot: 4,
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
            slot: 5,
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
                slot: 4,
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
                "virtio-net-pci,netdev=net0,mac=52:54:00:77:00:01,host_mtu=65520,addr=0x1f.0"
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
                slot: crate::net::WORKER_NIC_SLOT,
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
