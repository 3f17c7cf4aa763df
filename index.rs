// SPDX-License-Identifier: GPL-2.0

//! The N of `/dev/sivshmN`: the lowest free index, held for as long as a device is bound.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

/// Bit `i` set: `/dev/sivshm{i}` is taken.
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// The misc device's name must be `'static`, so the names are a fixed table.
const NAMES: [&CStr; 64] = [
    c"sivshm0",
    c"sivshm1",
    c"sivshm2",
    c"sivshm3",
    c"sivshm4",
    c"sivshm5",
    c"sivshm6",
    c"sivshm7",
    c"sivshm8",
    c"sivshm9",
    c"sivshm10",
    c"sivshm11",
    c"sivshm12",
    c"sivshm13",
    c"sivshm14",
    c"sivshm15",
    c"sivshm16",
    c"sivshm17",
    c"sivshm18",
    c"sivshm19",
    c"sivshm20",
    c"sivshm21",
    c"sivshm22",
    c"sivshm23",
    c"sivshm24",
    c"sivshm25",
    c"sivshm26",
    c"sivshm27",
    c"sivshm28",
    c"sivshm29",
    c"sivshm30",
    c"sivshm31",
    c"sivshm32",
    c"sivshm33",
    c"sivshm34",
    c"sivshm35",
    c"sivshm36",
    c"sivshm37",
    c"sivshm38",
    c"sivshm39",
    c"sivshm40",
    c"sivshm41",
    c"sivshm42",
    c"sivshm43",
    c"sivshm44",
    c"sivshm45",
    c"sivshm46",
    c"sivshm47",
    c"sivshm48",
    c"sivshm49",
    c"sivshm50",
    c"sivshm51",
    c"sivshm52",
    c"sivshm53",
    c"sivshm54",
    c"sivshm55",
    c"sivshm56",
    c"sivshm57",
    c"sivshm58",
    c"sivshm59",
    c"sivshm60",
    c"sivshm61",
    c"sivshm62",
    c"sivshm63",
];

/// A claimed device index; released on drop.
pub(crate) struct Index(u32);

impl Index {
    /// Claims the lowest free index, or fails with `ENOSPC` when all are bound.
    pub(crate) fn claim() -> Result<Self> {
        let mut taken = TAKEN.load(Ordering::Relaxed);
        loop {
            let free = (!taken).trailing_zeros();
            if free as usize >= NAMES.len() {
                return Err(ENOSPC);
            }
            match TAKEN.compare_exchange_weak(
                taken,
                taken | (1 << free),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(Self(free)),
                Err(now) => taken = now,
            }
        }
    }

    pub(crate) fn get(&self) -> u32 {
        self.0
    }

    pub(crate) fn name(&self) -> &'static CStr {
        NAMES[self.0 as usize]
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        TAKEN.fetch_and(!(1 << self.0), Ordering::AcqRel);
    }
}
