//! The two topologies of a data manager VM and N worker VMs.
//!
//! SIVSHM ([`Topology::new`]): worker i has segment i (a file of its own) and a doorbell
//! channel to the manager: an `ivshmem-doorbell` in worker i (peer id i + 1) and one in the
//! manager (peer id 0) at PCI slot `FIRST_SLOT + i`, on the same segment. A worker is never
//! given another worker's segment or eventfds, and nothing is wired at run time.
//!
//! IVSHMEM ([`Topology::ivshmem`]), the baseline: one region of N slots, served with every
//! peer's doorbells to every VM by a central `sivshm-lab ivshmem-server` that each QEMU
//! connects to while it starts; worker i uses slot i by convention.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use sivshm_host::huge_pool;
use sivshm_host::pci::{manager_slot, PciSlot, FIRST_SLOT, MAX_WORKERS};
use sivshm_host::segments::{self, PageSize};
use sivshm_host::service::store::SYSFS_HUGEPAGES;

use crate::pair::channel;
use crate::qemu::{run_in_waves, tie_to_parent, Device, Finished, Machine, Vm};

pub struct Topology {
    pub manager: Vm,
    pub workers: Vec<Vm>,
    /// Kept until the VMs are gone.
    _sockets: Vec<OwnedFd>,
    /// The IVSHMEM baseline's central server, stopped when the topology is dropped.
    _server: Option<CentralServer>,
}

/// How the manager reaches the workers' memory.
pub enum Layout {
    /// A device per worker, each its whole segment (SIVSHM).
    Segments,
    /// One device, worker i at `i * slot_size` (IVSHMEM).
    Region { workers: usize, slot_size: u64 },
}

/// What each VM runs, given the manager's device addresses (in worker order for SIVSHM, the
/// one region for IVSHMEM) and how they are laid out.
pub trait Roles {
    fn manager(&self, bdfs: &[String], layout: &Layout) -> String;
    fn worker(&self, index: usize, layout: &Layout) -> String;
}

/// Roles whose guests run `true`: they boot (or, paused, never run) and do nothing else.
pub struct Idle;

impl Roles for Idle {
    fn manager(&self, _: &[String], _: &Layout) -> String {
        "true".into()
    }
    fn worker(&self, _: usize, _: &Layout) -> String {
        "true".into()
    }
}

/// A running `sivshm-lab ivshmem-server`.
struct CentralServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl CentralServer {
    /// Starts the server on a fresh socket for a region of `size` bytes and waits until it
    /// listens.
    fn start(size: u64, vectors: u16) -> Result<(Self, PathBuf)> {
        let dir = tempfile::tempdir().context("a directory for the server's socket")?;
        let socket = dir.path().join("ivshmem.sock");
        // This very binary, through /proc/self/exe: it stays valid even if a rebuild has
        // replaced the file since we started.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("ivshmem-server")
            .arg("--socket")
            .arg(&socket)
            .arg("--size-mib")
            .arg((size >> 20).to_string())
            .arg("--vectors")
            .arg(vectors.to_string())
            .stdin(Stdio::null());
        tie_to_parent(&mut cmd);
        let mut child = cmd.spawn().context("starting the ivshmem server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(status) = child.try_wait()? {
                bail!("the ivshmem server exited ({status}) before listening");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the ivshmem server did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((CentralServer { child, _dir: dir }, socket))
    }
}

impl Drop for CentralServer {
    fn drop(&mut self) {
        // SIGTERM: the server removes its socket and exits.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let _ = self.child.wait();
    }
}

impl Topology {
    pub fn new(workers: usize, segment_size: u64, roles: &dyn Roles) -> Result<Self> {
        Self::with_pages(workers, segment_size, PageSize::Base, roles)
    }

    /// As [`Topology::new`], each segment of pages of `page` (a memfd of `MFD_HUGETLB` for
    /// huge pages: the pool must have them free, see `sivshm_host::huge_pool`).
    pub fn with_pages(
        workers: usize,
        segment_size: u64,
        page: PageSize,
        roles: &dyn Roles,
    ) -> Result<Self> {
        if workers == 0 {
            bail!("at least one worker is needed");
        }
        if workers > MAX_WORKERS {
            bail!("at most {MAX_WORKERS} workers fit on the manager's PCI bus and bridges");
        }
        let mut manager_devices = Vec::new();
        let mut worker_vms = Vec::new();
        let mut sockets = Vec::new();
        for i in 0..workers {
            let segment = segments::create_with(&format!("worker{i}"), segment_size, page)?;
            let slot = manager_slot(i)?;
            let ch = channel(
                &segment,
                (0, slot),
                (i as u16 + 1, PciSlot::root(FIRST_SLOT)),
                1,
            )?;
            manager_devices.push(ch.a);
            worker_vms.push(
                Vm::new(&format!("worker{i}"), &roles.worker(i, &Layout::Segments)).device(ch.b),
            );
            sockets.extend(ch._keep);
        }
        let bdfs: Vec<String> = manager_devices.iter().map(Device::bdf).collect();
        let mut manager = Vm::new("manager", &roles.manager(&bdfs, &Layout::Segments));
        for d in manager_devices {
            manager = manager.device(d);
        }
        Ok(Topology {
            manager,
            workers: worker_vms,
            _sockets: sockets,
            _server: None,
        })
    }

    /// The IVSHMEM baseline: one region of `workers` slots of `slot_size` bytes (rounded up
    /// to a power of two, as a BAR must be), every VM connected to one central server.
    pub fn ivshmem(workers: usize, slot_size: u64, roles: &dyn Roles) -> Result<Self> {
        if workers == 0 {
            bail!("at least one worker is needed");
        }
        if workers >= usize::from(u16::MAX) {
            bail!("the central server has 65536 peer ids for the manager and the workers");
        }
        if !slot_size.is_power_of_two() || slot_size < 1 << 20 {
            bail!("the segment size must be a power of two of at least 1 MiB");
        }
        let size = (workers as u64)
            .checked_mul(slot_size)
            .and_then(u64::checked_next_power_of_two)
            .context("the region is too large")?;
        let (server, socket) = CentralServer::start(size, 1)?;
        let device = || Device::Server {
            slot: PciSlot::root(FIRST_SLOT),
            socket: socket.clone(),
            vectors: 1,
        };
        let layout = Layout::Region { workers, slot_size };
        let bdf = device().bdf();
        let manager = Vm::new("manager", &roles.manager(&[bdf], &layout)).device(device());
        let workers = (0..workers)
            .map(|i| Vm::new(&format!("worker{i}"), &roles.worker(i, &layout)).device(device()))
            .collect();
        Ok(Topology {
            manager,
            workers,
            _sockets: Vec::new(),
            _server: Some(server),
        })
    }

    /// A manager and `workers` workers with no shared-memory device: the floor of boot time.
    pub fn bare(workers: usize, roles: &dyn Roles) -> Self {
        let layout = Layout::Segments;
        Topology {
            manager: Vm::new("manager", &roles.manager(&[], &layout)),
            workers: (0..workers)
                .map(|i| Vm::new(&format!("worker{i}"), &roles.worker(i, &layout)))
                .collect(),
            _sockets: Vec::new(),
            _server: None,
        }
    }

    /// Adds a virtio-net link between the manager and each worker (`net`): the same VMs can
    /// then also talk TCP, worker i at `net::worker_addr(i)`.
    pub fn network(self) -> Result<Self> {
        if self.workers.len() > crate::net::MAX_LINKS {
            bail!(
                "at most {} workers can have a network link to the manager",
                crate::net::MAX_LINKS
            );
        }
        let mut manager = self.manager;
        let mut workers = Vec::new();
        for (i, w) in self.workers.into_iter().enumerate() {
            let (m, n) = crate::net::link(i)?;
            manager = manager.net(m);
            workers.push(w.net(n));
        }
        Ok(Topology {
            manager,
            workers,
            ..self
        })
    }

    /// The manager, then the workers.
    pub fn vms(&self) -> impl Iterator<Item = &Vm> {
        std::iter::once(&self.manager).chain(&self.workers)
    }

    /// Boots every VM at once and waits for all of them.
    pub fn run(self, m: &Machine, logdir: &Path, timeout: Duration) -> Result<Vec<Finished>> {
        self.run_in_waves(m, logdir, timeout, 0)
    }

    /// Runs the manager and the workers, booting them `wave` at a time (0: all at once; see
    /// [`crate::qemu::run_in_waves`]).
    pub fn run_in_waves(
        self,
        m: &Machine,
        logdir: &Path,
        timeout: Duration,
        wave: usize,
    ) -> Result<Vec<Finished>> {
        let mut vms = vec![self.manager];
        vms.extend(self.workers);
        run_in_waves(m, &vms, logdir, timeout, wave)
    }
}

/// The `sivshm-distribute` sample in every VM.
pub struct Distribute {
    pub rounds: u64,
    pub bytes: usize,
    /// Seconds the manager waits for a worker's heartbeat, or for a worker that has not
    /// attached yet (None: the sample's default). Workers booted in waves come late.
    pub peer_timeout_s: Option<u64>,
}

impl Roles for Distribute {
    fn manager(&self, bdfs: &[String], layout: &Layout) -> String {
        let devices = match layout {
            Layout::Segments => format!("--workers {}", bdfs.join(",")),
            Layout::Region { workers, slot_size } => {
                format!(
                    "--region {} --count {workers} --slot-size {slot_size}",
                    bdfs[0]
                )
            }
        };
        let patience = self
            .peer_timeout_s
            .map_or(String::new(), |s| format!(" --peer-timeout {s}"));
        format!(
            "sivshm-distribute manager {devices} --rounds {} --bytes {}{patience}",
            self.rounds, self.bytes
        )
    }

    fn worker(&self, index: usize, layout: &Layout) -> String {
        // Either way a worker VM has one device: under SIVSHM its own segment and channel,
        // under IVSHMEM the whole region, of which slot `index` is its by convention.
        match layout {
            Layout::Segments => "sivshm-distribute worker --only-device".to_string(),
            Layout::Region { slot_size, .. } => format!(
                "sivshm-distribute worker --only-device --slot {index} --slot-size {slot_size}"
            ),
        }
    }
}

/// A `--segment-mib` argument in bytes: a power of two that fits in a u64.
/// Makes sure the huge page pool has `workers` segments of `segment` bytes of `page` free
/// (raising it for the run, as root, if not: [`huge_pool::reserve`]); nothing for base
/// pages. Keep the answer until the VMs are gone.
pub fn reserve_pages(
    page: PageSize,
    workers: usize,
    segment: u64,
) -> Result<Option<huge_pool::Reservation>> {
    segments::check_size(segment, page)?;
    if page == PageSize::Base {
        return Ok(None);
    }
    let need = workers as u64 * (segment / page.bytes());
    huge_pool::reserve(Path::new(SYSFS_HUGEPAGES), page, need).map(Some)
}

/// `--hugepages`: a huge page size by name.
pub fn parse_huge_pages(s: &str) -> Result<PageSize, String> {
    match PageSize::from_name(s) {
        Some(p) if p != PageSize::Base => Ok(p),
        _ => Err(format!("{s:?}: huge pages are 2M or 1G")),
    }
}

pub fn segment_bytes(mib: u64) -> anyhow::Result<u64> {
    use anyhow::Context;
    mib.checked_mul(1 << 20)
        .filter(|s| s.is_power_of_two())
        .context("--segment-mib must be a power of two")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_one_channel_and_the_manager_one_per_worker() {
        let t = Topology::new(
            3,
            1 << 20,
            &Distribute {
                peer_timeout_s: None,
                rounds: 1,
                bytes: 10,
            },
        )
        .unwrap();
        assert_eq!(t.manager.devices.len(), 3);
        let slots: Vec<PciSlot> = t.manager.devices.iter().map(Device::slot).collect();
        assert_eq!(slots, [4, 5, 6].map(PciSlot::root));
        for w in &t.workers {
            assert_eq!(w.devices.len(), 1, "a worker must see exactly one device");
            assert_eq!(w.devices[0].slot(), PciSlot::root(FIRST_SLOT));
        }
        let run = &t.manager.env[0].1;
        assert!(
            run.contains("--workers 0000:00:04.0,0000:00:05.0,0000:00:06.0"),
            "{run}"
        );
    }

    #[test]
    fn network_links_each_worker_to_the_manager_beside_its_channel() {
        let roles = Distribute {
            peer_timeout_s: None,
            rounds: 1,
            bytes: 1,
        };
        let t = Topology::new(2, 1 << 20, &roles)
            .unwrap()
            .network()
            .unwrap();
        assert_eq!(t.manager.nics.len(), 2);
        let mut slots: Vec<PciSlot> = t.manager.devices.iter().map(Device::slot).collect();
        slots.extend(t.manager.nics.iter().map(|n| PciSlot::root(n.slot)));
        let before = slots.len();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), before, "two devices share a slot: {slots:?}");
        for (i, w) in t.workers.iter().enumerate() {
            assert_eq!(w.nics.len(), 1);
            assert_eq!(w.nics[0].addr, format!("{}/24", crate::net::worker_addr(i)));
            assert_ne!(PciSlot::root(w.nics[0].slot), w.devices[0].slot());
        }
        let many = Topology::new(crate::net::MAX_LINKS + 1, 1 << 20, &roles).unwrap();
        assert!(many.network().is_err());
    }

    #[test]
    fn past_bus_0_the_managers_devices_go_behind_bridges() {
        let roles = Distribute {
            peer_timeout_s: None,
            rounds: 1,
            bytes: 1,
        };
        let t = Topology::new(128, 1 << 20, &roles).unwrap();
        let (args, _) = t
            .manager
            .args(
                &crate::qemu::Machine {
                    qemu: "q".into(),
                    kernel: "k".into(),
                    initrd: "i".into(),
                    accel: crate::qemu::Accel::Tcg,
                    memory_mib: 256,
                },
                Path::new("/tmp/m.log"),
                "id",
            )
            .unwrap();
        let s: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(s.iter().filter(|a| a.starts_with("pci-bridge")).count(), 4);
        // The manager learns each worker's address, in worker order.
        let run = &t.manager.env[0].1;
        assert!(run.contains(",0000:01:01.0,"), "{run}");
        assert!(run.contains(",0000:04:0b.0 "), "{run}");
    }

    #[test]
    fn bad_ivshmem_configurations_are_refused_before_any_server_starts() {
        let roles = Distribute {
            peer_timeout_s: None,
            rounds: 1,
            bytes: 1,
        };
        assert!(Topology::ivshmem(0, 1 << 20, &roles).is_err());
        assert!(Topology::ivshmem(70_000, 1 << 20, &roles).is_err());
        assert!(Topology::ivshmem(2, 3 << 20, &roles).is_err());
        assert!(Topology::ivshmem(2, 4096, &roles).is_err());
    }

    #[test]
    fn bad_configurations_are_refused() {
        let roles = Distribute {
            peer_timeout_s: None,
            rounds: 1,
            bytes: 1,
        };
        assert!(Topology::new(0, 1 << 20, &roles).is_err());
        assert!(Topology::new(MAX_WORKERS + 1, 1 << 20, &roles).is_err());
        assert!(Topology::new(2, 3 << 20, &roles).is_err());
    }
}
