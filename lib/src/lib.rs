//! User-space access to sivshm devices.
//!
//! A [`Device`] is an open `/dev/sivshmN`; [`Device::map`] gives a [`Mapping`] of its shared
//! memory. The memory is shared with other processes and other VMs that may write it at any
//! moment, so the mapping never hands out `&[u8]`/`&mut [u8]` (that would be undefined
//! behaviour under concurrent writes): data moves through volatile copies, and
//! synchronisation through atomics placed in the memory.
//!
//! The ioctl numbers and structures come from `uapi/linux/sivshm.h`; this crate compiles the
//! driver's own mirror of it (`uapi.rs`), and its tests check that mirror against the header.

mod device;
mod eventfd;
#[cfg(test)]
mod header_check;
mod mapping;
mod sys;

#[path = "../../uapi.rs"]
#[allow(dead_code)]
mod uapi;

pub use device::{Device, Info, IrqMode, PciAddress};
pub use eventfd::EventFd;
pub use mapping::Mapping;

/// Errors of this crate are the kernel's.
pub type Result<T> = std::result::Result<T, rustix::io::Errno>;
