// SPDX-License-Identifier: GPL-2.0

//! BAR0 of an ivshmem device: 256 bytes of 32-bit registers
//! (QEMU `docs/specs/ivshmem-spec.rst`).

use kernel::io::register;

register! {
    /// Own peer id; read-only. Meaningful only on `ivshmem-doorbell`.
    pub(crate) IV_POSITION(u32) @ 0x08 {
        31:0 peer;
    }
}

/// Size of the register BAR.
pub(crate) const BAR0_SIZE: usize = 0x100;
