// SPDX-License-Identifier: GPL-2.0

//! BAR0 of an ivshmem device: 256 bytes of 32-bit registers
//! (QEMU `docs/specs/ivshmem-spec.rst`).

use kernel::io::register;

register! {
    /// Bit 0 enables the INTx interrupt (unused with MSI-X).
    pub(crate) INTR_MASK(u32) @ 0x00 {
        31:0 mask;
    }

    /// Bit 0 is set by an INTx interrupt; reading clears it.
    pub(crate) INTR_STATUS(u32) @ 0x04 {
        31:0 status;
    }

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
