//! Opening a device and describing it.

use std::fmt;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::{sys, uapi, EventFd, Mapping, Result};

/// A PCI address, `domain:bus:slot.function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

/// What `SIVSHM_IOCTL_GET_INFO` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Bytes of shared memory.
    pub shm_size: u64,
    /// Own peer id, on a device with a doorbell.
    pub peer_id: Option<u32>,
    /// The device has a doorbell register, a peer id and MSI-X vectors.
    pub doorbell: bool,
    /// MSI-X vectors: each can be bound to an eventfd and rung on peers.
    pub nr_vectors: u16,
    pub pci: PciAddress,
    /// N of `/dev/sivshmN`.
    pub index: u32,
    /// The memory type the shared memory got in this guest (`None`: the driver could not
    /// tell, or predates the field). Anything but write-back makes every access uncached on
    /// hosts that honour the guest's type (AMD, TDX; see `Documentation/memory-type.rst`).
    pub mem_type: Option<MemType>,
}

/// The memory type (x86 PAT cache mode) of a device's shared memory, `SIVSHM_MEM_TYPE_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    WriteBack,
    WriteCombining,
    UncachedMinus,
    Uncached,
    WriteThrough,
    WriteProtect,
}

impl MemType {
    /// The type of a `SIVSHM_MEM_TYPE_*` value; `None` for UNKNOWN or a value this crate does
    /// not know.
    pub fn from_uapi(v: u32) -> Option<Self> {
        Some(match v {
            uapi::MEM_TYPE_WB => MemType::WriteBack,
            uapi::MEM_TYPE_WC => MemType::WriteCombining,
            uapi::MEM_TYPE_UC_MINUS => MemType::UncachedMinus,
            uapi::MEM_TYPE_UC => MemType::Uncached,
            uapi::MEM_TYPE_WT => MemType::WriteThrough,
            uapi::MEM_TYPE_WP => MemType::WriteProtect,
            _ => return None,
        })
    }

    /// The name the kernel uses (`/sys/kernel/debug/x86/pat_memtype_list`).
    pub fn name(self) -> &'static str {
        match self {
            MemType::WriteBack => "write-back",
            MemType::WriteCombining => "write-combining",
            MemType::UncachedMinus => "uncached-minus",
            MemType::Uncached => "uncached",
            MemType::WriteThrough => "write-through",
            MemType::WriteProtect => "write-protected",
        }
    }
}

impl fmt::Display for MemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `Some(t)` as its name, `None` as "unknown".
pub fn mem_type_name(t: Option<MemType>) -> &'static str {
    t.map_or("unknown", MemType::name)
}

impl From<uapi::Info> for Info {
    fn from(i: uapi::Info) -> Self {
        Info {
            shm_size: i.shm_size,
            peer_id: (i.peer_id != uapi::PEER_ID_NONE).then_some(i.peer_id),
            doorbell: i.flags & uapi::INFO_F_DOORBELL != 0,
            nr_vectors: i.nr_vectors,
            pci: PciAddress {
                domain: i.pci_domain,
                bus: i.pci_bus,
                slot: i.pci_slot,
                function: i.pci_func,
            },
            index: i.index,
            mem_type: MemType::from_uapi(i.mem_type),
        }
    }
}

/// An open `/dev/sivshmN`.
pub struct Device {
    fd: OwnedFd,
    info: Info,
}

impl Device {
    /// Opens a device node read-write (ringing and binding need a file opened for writing) and
    /// queries it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))?;
        let fd = OwnedFd::from(file);
        let info = sys::get_info(&fd)?.into();
        Ok(Device { fd, info })
    }

    /// The device nodes present, in index order.
    pub fn list() -> Vec<PathBuf> {
        let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name.strip_prefix("sivshm")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// Opens the device at PCI address `pci`.
    pub fn find(pci: &str) -> Result<Self> {
        for path in Self::list() {
            if let Ok(dev) = Self::open(&path) {
                if dev.info.pci.to_string() == pci {
                    return Ok(dev);
                }
            }
        }
        Err(rustix::io::Errno::NODEV)
    }

    /// Another handle on the same open file (the same bindings, released when the last
    /// handle is dropped).
    pub fn try_clone(&self) -> Result<Self> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?;
        Ok(Device {
            fd,
            info: self.info.clone(),
        })
    }

    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Queries the device again (fails with `ENODEV` once it was unbound).
    pub fn refresh_info(&mut self) -> Result<&Info> {
        self.info = sys::get_info(&self.fd)?.into();
        Ok(&self.info)
    }

    /// Whether the device was removed (unbound from the driver, hot-unplugged): `GET_INFO`
    /// answers `ENODEV`. Any other answer (success, or another error) is "still there".
    pub fn is_gone(&self) -> bool {
        matches!(sys::get_info(&self.fd), Err(rustix::io::Errno::NODEV))
    }

    /// Rings `vector` of peer `peer_id` (this VM's own id rings itself).
    pub fn ring(&self, peer_id: u32, vector: u32) -> Result<()> {
        sys::ring(&self.fd, peer_id, vector)
    }

    /// Creates an eventfd that every interrupt on `vector` signals (+1 each), the way to wait
    /// for that vector: [`EventFd::wait`], or `poll`/`epoll` on it through [`AsFd`].
    ///
    /// The binding belongs to this `Device` (its open file): binding the vector again replaces
    /// it, [`Self::unbind_eventfd`] removes it, and dropping the `Device` releases it. While it
    /// exists, any other open file of the device gets `EBUSY` for this vector. When the device
    /// is unbound from the driver, the eventfd is signalled once more and released: the waiter
    /// wakes up, and its next call on this `Device` fails with `ENODEV`.
    pub fn bind_eventfd(&self, vector: u32) -> Result<EventFd> {
        let e = EventFd::new()?;
        sys::bind_eventfd(&self.fd, e.as_fd().as_raw_fd(), vector)?;
        Ok(e)
    }

    /// Removes this `Device`'s binding of `vector`; succeeds if there is none. The eventfd
    /// stays open but is no longer signalled.
    pub fn unbind_eventfd(&self, vector: u32) -> Result<()> {
        sys::bind_eventfd(&self.fd, -1, vector)
    }

    /// Maps the whole shared memory.
    pub fn map(&self) -> Result<Mapping> {
        let len = usize::try_from(self.info.shm_size).map_err(|_| rustix::io::Errno::NOMEM)?;
        Mapping::new(self.fd.as_fd(), 0, len)
    }

    /// Maps `len` bytes at `offset` (both multiples of the page size).
    pub fn map_range(&self, offset: u64, len: usize) -> Result<Mapping> {
        Mapping::new(self.fd.as_fd(), offset, len)
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
