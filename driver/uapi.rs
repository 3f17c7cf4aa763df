// SPDX-License-Identifier: GPL-2.0

//! Rust mirror of `uapi/linux/sivshm.h`.
//!
//! The user-space crate (`lib/`) compiles this very file too, and its tests check every value,
//! size and offset here against the C header. So it names only `core`, the `zerocopy` derives
//! and `kernel::ioctl`, which the user-space crate provides under the same path.

use kernel::ioctl::{_IOW, _IOWR};
use zerocopy_derive::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `SIVSHM_IOCTL_TYPE`.
pub(crate) const IOCTL_TYPE: u32 = 0xB9;

/// `SIVSHM_INFO_F_DOORBELL`.
pub(crate) const INFO_F_DOORBELL: u32 = 1 << 0;
/// `SIVSHM_PEER_ID_NONE`.
pub(crate) const PEER_ID_NONE: u32 = 0xffff_ffff;
/// `SIVSHM_MAX_VECTORS`.
pub(crate) const MAX_VECTORS: u32 = 64;

/// `SIVSHM_MEM_TYPE_*`: values of `sivshm_info.mem_type`.
pub(crate) const MEM_TYPE_UNKNOWN: u32 = 0;
pub(crate) const MEM_TYPE_WB: u32 = 1;
pub(crate) const MEM_TYPE_WC: u32 = 2;
pub(crate) const MEM_TYPE_UC_MINUS: u32 = 3;
pub(crate) const MEM_TYPE_UC: u32 = 4;
pub(crate) const MEM_TYPE_WT: u32 = 5;
pub(crate) const MEM_TYPE_WP: u32 = 6;

/// `struct sivshm_info`.
#[repr(C)]
#[derive(
    Clone, Copy, Default, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub(crate) struct Info {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) shm_size: u64,
    pub(crate) peer_id: u32,
    pub(crate) nr_vectors: u16,
    pub(crate) pad0: u16,
    pub(crate) pci_domain: u32,
    pub(crate) pci_bus: u8,
    pub(crate) pci_slot: u8,
    pub(crate) pci_func: u8,
    pub(crate) pad1: u8,
    pub(crate) index: u32,
    pub(crate) mem_type: u32,
    pub(crate) reserved: [u32; 6],
}

/// `SIVSHM_INFO_ARGSZ_V1`.
pub(crate) const INFO_ARGSZ_V1: u32 = 36;
/// `SIVSHM_INFO_ARGSZ_V2`.
pub(crate) const INFO_ARGSZ_V2: u32 = 40;

/// `SIVSHM_IOCTL_GET_INFO`.
pub(crate) const IOCTL_GET_INFO: u32 = _IOWR::<Info>(IOCTL_TYPE, 0x00);

/// `struct sivshm_ring`.
#[repr(C)]
#[derive(
    Clone, Copy, Default, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub(crate) struct Ring {
    pub(crate) peer_id: u32,
    pub(crate) vector: u32,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

/// `SIVSHM_IOCTL_RING`.
pub(crate) const IOCTL_RING: u32 = _IOW::<Ring>(IOCTL_TYPE, 0x01);

/// `struct sivshm_eventfd`.
#[repr(C)]
#[derive(
    Clone, Copy, Default, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub(crate) struct Eventfd {
    pub(crate) fd: i32,
    pub(crate) vector: u32,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

/// `SIVSHM_IOCTL_BIND_EVENTFD`.
pub(crate) const IOCTL_BIND_EVENTFD: u32 = _IOW::<Eventfd>(IOCTL_TYPE, 0x02);

// The `IntoBytes` derives already refuse a struct with padding; the sizes are the header's.
const _: () = assert!(core::mem::size_of::<Info>() == 64);
const _: () = assert!(core::mem::size_of::<Ring>() == 16);
const _: () = assert!(core::mem::size_of::<Eventfd>() == 16);
const _: () = assert!(core::mem::offset_of!(Info, index) + 4 == INFO_ARGSZ_V1 as usize);
const _: () = assert!(core::mem::offset_of!(Info, mem_type) + 4 == INFO_ARGSZ_V2 as usize);
