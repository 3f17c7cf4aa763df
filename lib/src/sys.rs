//! The ioctl calls: with the mapping's (`mapping.rs`: `mmap`, `munmap`, the volatile copies and
//! the atomics placed in shared memory) the crate's only `unsafe`.

use std::os::fd::AsFd;

use rustix::ioctl::{ioctl, Setter, Updater};

use crate::uapi;

const GET_INFO: rustix::ioctl::Opcode = uapi::IOCTL_GET_INFO as rustix::ioctl::Opcode;
const RING: rustix::ioctl::Opcode = uapi::IOCTL_RING as rustix::ioctl::Opcode;
const BIND_EVENTFD: rustix::ioctl::Opcode = uapi::IOCTL_BIND_EVENTFD as rustix::ioctl::Opcode;

/// `SIVSHM_IOCTL_GET_INFO`.
pub(crate) fn get_info(fd: impl AsFd) -> rustix::io::Result<uapi::Info> {
    let mut info = uapi::Info {
        argsz: core::mem::size_of::<uapi::Info>() as u32,
        ..Default::default()
    };
    // SAFETY: GET_INFO reads `argsz` from and writes at most `argsz` bytes of a
    // `struct sivshm_info` to the pointer it is given; `Updater` passes a pointer to `info`,
    // a `repr(C)` mirror of that struct with `argsz` set to its full size.
    unsafe { ioctl(fd, Updater::<GET_INFO, uapi::Info>::new(&mut info))? };
    Ok(info)
}

/// `SIVSHM_IOCTL_RING`.
pub(crate) fn ring(fd: impl AsFd, peer_id: u32, vector: u32) -> rustix::io::Result<()> {
    let arg = uapi::Ring {
        peer_id,
        vector,
        ..Default::default()
    };
    // SAFETY: RING reads a `struct sivshm_ring`, which `uapi::Ring` mirrors (checked against
    // the header by the tests); `Setter` passes a pointer to it.
    unsafe { ioctl(fd, Setter::<RING, uapi::Ring>::new(arg)) }
}

/// `SIVSHM_IOCTL_BIND_EVENTFD`; `eventfd` -1 unbinds.
pub(crate) fn bind_eventfd(fd: impl AsFd, eventfd: i32, vector: u32) -> rustix::io::Result<()> {
    let arg = uapi::Eventfd {
        fd: eventfd,
        vector,
        ..Default::default()
    };
    // SAFETY: BIND_EVENTFD reads a `struct sivshm_eventfd`, which `uapi::Eventfd` mirrors;
    // `Setter` passes a pointer to it.
    unsafe { ioctl(fd, Setter::<BIND_EVENTFD, uapi::Eventfd>::new(arg)) }
}
