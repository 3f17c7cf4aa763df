// SPDX-License-Identifier: GPL-2.0

//! BAR0 of an ivshmem device: 256 bytes of 32-bit registers (QEMU
//! `docs/specs/ivshmem-spec.rst`). The interrupt mask and status registers at 0x00 and 0x04
//! serve only the INTx line, which QEMU's ivshmem devices no longer have (since QEMU 4.0
//! their Interrupt Pin is 0 and interrupts come through MSI-X), so they are not declared.

use kernel::io::register;

register! {
    /// Own peer id; read-only. Meaningful only on `ivshmem-doorbell`.
    pub(crate) IV_POSITION(u32) @ 0x08 {
        31:0 peer;
    }

    /// Writing `peer << 16 | vector` interrupts `vector` of `peer`.
    pub(crate) DOORBELL(u32) @ 0x0c {
        31:16 peer;
        15:0 vector;
    }
}

/// Size of the register BAR.
pub(crate) const BAR0_SIZE: usize = 0x100;
