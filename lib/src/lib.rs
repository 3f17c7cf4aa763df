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
//! eventfds are the one way to wait. When the device goes away (unbound from the driver), every
//! bound eventfd is signalled once more, and the next call on the [`Device`] fails with
//! `ENODEV`; its mappings are revoked. Touching a revoked mapping would raise `SIGBUS`; this
//! crate catches that for its own mappings (see [`Mapping`]), so the process lives on and
//! [`Mapping::is_revoked`] (or the channel's [`channel::Error::DeviceGone`]) tells.
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
mod revocation;
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
pub use mapping::Mapping;

/// Errors of this crate are the kernel's.
pub type Result<T> = std::result::Result<T, rustix::io::Errno>;
