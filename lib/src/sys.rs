//! The ioctl calls, the crate's only `unsafe` besides the mapping's memory accesses.

use std::os::fd::AsFd;

use rustix::ioctl::{ioctl, opcode, Updater};

use crate::uapi;

const GET_INFO: rustix::ioctl::Opcode =
    opcode::none(uapi::IOCTL_TYPE as u8, (uapi::IOCTL_GET_INFO & 0xff) as u8);

const _: () = assert!(GET_INFO == uapi::IOCTL_GET_INFO);

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
