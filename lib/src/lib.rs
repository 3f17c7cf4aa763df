//! User-space access to sivshm devices.
//!
//! A [`Device`] is an open `/dev/sivshmN`; [`Device::map`] gives a [`Mapping`] of its shared
//! memory. The memory is shared with other processes and other VMs that may write it at any
//! moment, so the mapping never hands out `&[u8]`/`&mut [u8]` (that would be undefined
//! behaviour under concurrent writes): data moves through volatile copies, and
//! synchronisation through atomics placed in the memory.
//!
//! To wait for a peer's doorbell, bind an eventfd to a vector ([`Device::bind_eventfd`]) and
//! wait on it: [`EventFd::wait`] with a timeout, or in your own `poll`/`epoll`/async loop
//! through [`std::os::fd::AsFd`]. The device node itself has no `read` and no `poll`: the
//! eventfds are the one way to wait.
//!
//! When the device goes away (hot-unplug, unbound from the driver), every bound eventfd is
//! signalled once more, every call on the [`Device`] fails with `ENODEV`
//! ([`Device::is_gone`] asks), and its mappings stay valid but no longer reach the device:
//! every page of them shows one page of the driver's, initially all `0xff` bytes (see
//! [`Mapping`]). Nothing faults, so the crate installs no signal handler; the channel tells
//! a removed device from a hostile peer by asking the device ([`channel::Presence`]) and
//! reports [`channel::Error::DeviceGone`]. [`model`] models such a device in one process for
//! tests.
//!
//! The ioctl numbers and structures come from `uapi/linux/sivshm.h`; this crate compiles the
//! driver's own mirror of it (`driver/uapi.rs`), and its tests check that mirror against the
//! header.

pub mod channel;
mod device;
mod eventfd;
#[cfg(test)]
mod header_check;
mod mapping;
pub mod model;
mod sys;

#[path = "../../driver/uapi.rs"]
#[allow(dead_code)]
mod uapi;

/// `driver/uapi.rs` is the driver's own file and takes the ioctl number helpers from the
/// kernel crate (`kernel::ioctl`); naming this crate `kernel` as well lets it find the same
/// helpers in [`ioctl`], so that both sides compute the numbers from one source.
extern crate self as kernel;

/// The `kernel::ioctl` helpers `driver/uapi.rs` uses, computed by rustix with the same
/// encoding as `asm-generic/ioctl.h`.
mod ioctl {
    #[allow(non_snake_case)]
    pub(crate) const fn _IOW<T>(ty: u32, nr: u32) -> u32 {
        rustix::ioctl::opcode::write::<T>(ty as u8, nr as u8) as u32
    }

    #[allow(non_snake_case)]
    pub(crate) const fn _IOWR<T>(ty: u32, nr: u32) -> u32 {
        rustix::ioctl::opcode::read_write::<T>(ty as u8, nr as u8) as u32
    }
}

pub use device::{mem_type_name, Device, Info, MemType, PciAddress};
pub use eventfd::EventFd;
pub use mapping::{Mapping, OutOfRange};

/// Errors of this crate are the kernel's.
pub type Result<T> = std::result::Result<T, rustix::io::Errno>;
