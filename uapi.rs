// SPDX-License-Identifier: GPL-2.0

//! Rust mirror of `uapi/linux/sivshm.h`.
//!
//! Only `core` is used here so that the user-space crate's tests can compile
//! this very file and check every value and layout against the C header.

/// `SIVSHM_IOCTL_TYPE`.
pub(crate) const IOCTL_TYPE: u32 = 0xB9;
/// `SIVSHM_API_VERSION`.
pub(crate) const API_VERSION: u32 = 1;

/// `SIVSHM_IRQ_NONE`.
pub(crate) const IRQ_NONE: u8 = 0;
/// `SIVSHM_IRQ_INTX`.
pub(crate) const IRQ_INTX: u8 = 1;
/// `SIVSHM_IRQ_MSIX`.
pub(crate) const IRQ_MSIX: u8 = 2;

/// `SIVSHM_INFO_F_DOORBELL`.
pub(crate) const INFO_F_DOORBELL: u32 = 1 << 0;
/// `SIVSHM_PEER_ID_NONE`.
pub(crate) const PEER_ID_NONE: u32 = 0xffff_ffff;

/// `struct sivshm_info`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Info {
    pub(crate) argsz: u32,
    pub(crate) api_version: u32,
    pub(crate) shm_size: u64,
    pub(crate) peer_id: u32,
    pub(crate) flags: u32,
    pub(crate) nr_vectors: u16,
    pub(crate) irq_mode: u8,
    pub(crate) pad0: u8,
    pub(crate) pci_domain: u32,
    pub(crate) pci_bus: u8,
    pub(crate) pci_slot: u8,
    pub(crate) pci_func: u8,
    pub(crate) pad1: u8,
    pub(crate) index: u32,
    pub(crate) reserved: [u32; 6],
}

/// `SIVSHM_INFO_ARGSZ_V1`.
pub(crate) const INFO_ARGSZ_V1: u32 = 40;

/// `_IOC()` of `asm-generic/ioctl.h`, usable in `const` context without the kernel crate.
const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (IOCTL_TYPE << 8) | nr
}

/// `SIVSHM_IOCTL_GET_INFO`: `_IO(SIVSHM_IOCTL_TYPE, 0x00)`; sized by `argsz`.
pub(crate) const IOCTL_GET_INFO: u32 = ioc(0, 0x00, 0);

/// `SIVSHM_MAX_VECTORS`.
pub(crate) const MAX_VECTORS: u32 = 64;

/// `struct sivshm_ring`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Ring {
    pub(crate) peer_id: u32,
    pub(crate) vector: u32,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

/// `struct sivshm_eventfd`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Eventfd {
    pub(crate) fd: i32,
    pub(crate) vector: u32,
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
}

/// `_IOC_WRITE`.
const IOC_WRITE: u32 = 1;

/// `SIVSHM_IOCTL_RING`: `_IOW(SIVSHM_IOCTL_TYPE, 0x01, struct sivshm_ring)`.
pub(crate) const IOCTL_RING: u32 = ioc(IOC_WRITE, 0x01, core::mem::size_of::<Ring>() as u32);
/// `SIVSHM_IOCTL_BIND_EVENTFD`: `_IOW(SIVSHM_IOCTL_TYPE, 0x02, struct sivshm_eventfd)`.
pub(crate) const IOCTL_BIND_EVENTFD: u32 =
    ioc(IOC_WRITE, 0x02, core::mem::size_of::<Eventfd>() as u32);

const _: () = assert!(core::mem::size_of::<Info>() == 64);
/// Fails to compile if a struct has padding (they are copied to user space byte for byte):
/// every field must start where the previous one ends, and the last end with the struct.
macro_rules! assert_no_padding {
    ($t:ty { $($field:ident: $ft:ty),+ $(,)? }) => {
        const _: () = {
            let mut end = 0;
            $(
                assert!(core::mem::offset_of!($t, $field) == end);
                end += core::mem::size_of::<$ft>();
            )+
            assert!(end == core::mem::size_of::<$t>());
        };
    };
}

assert_no_padding!(Info {
    argsz: u32,
    api_version: u32,
    shm_size: u64,
    peer_id: u32,
    flags: u32,
    nr_vectors: u16,
    irq_mode: u8,
    pad0: u8,
    pci_domain: u32,
    pci_bus: u8,
    pci_slot: u8,
    pci_func: u8,
    pad1: u8,
    index: u32,
    reserved: [u32; 6],
});
assert_no_padding!(Ring {
    peer_id: u32,
    vector: u32,
    flags: u32,
    reserved: u32
});
assert_no_padding!(Eventfd {
    fd: i32,
    vector: u32,
    flags: u32,
    reserved: u32
});
const _: () = assert!(core::mem::size_of::<Ring>() == 16);
const _: () = assert!(core::mem::size_of::<Eventfd>() == 16);
const _: () = assert!(core::mem::offset_of!(Info, index) + 4 == INFO_ARGSZ_V1 as usize);
