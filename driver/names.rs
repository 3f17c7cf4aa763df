// SPDX-License-Identifier: GPL-2.0

//! The N of `/dev/sivshmN`: the lowest free index, held for as long as a device is bound.

use kernel::{
    prelude::*,
    sync::atomic::{Atomic, Full, Relaxed},
};

/// Devices that can be bound at once: a manager with a channel per worker, behind PCI bridges.
pub(crate) const MAX_NODES: usize = 256;

/// Longest name, "sivshm255", and its NUL.
const NAME_LEN: usize = 10;

/// The misc device's name must be `'static`, so the names are a table built at compile time.
static NAMES: [[u8; NAME_LEN]; MAX_NODES] = {
    let mut names = [[0u8; NAME_LEN]; MAX_NODES];
    let mut i = 0;
    while i < MAX_NODES {
        let prefix = b"sivshm";
        let mut j = 0;
        while j < prefix.len() {
            names[i][j] = prefix[j];
            j += 1;
        }
        let digits = if i >= 100 {
            3
        } else if i >= 10 {
            2
        } else {
            1
        };
        let mut n = i;
        let mut d = digits;
        while d > 0 {
            names[i][prefix.len() + d - 1] = b'0' + (n % 10) as u8;
            n /= 10;
            d -= 1;
        }
        i += 1;
    }
    names
};

const WORDS: usize = MAX_NODES / 64;

/// Bit `i % 64` of word `i / 64` set: `/dev/sivshm{i}` is taken.
static TAKEN: [Atomic<u64>; WORDS] = [const { Atomic::new(0) }; WORDS];

/// A claimed node index; released on drop.
pub(crate) struct NodeName(usize);

impl NodeName {
    /// Claims the lowest free index, or fails with `ENOSPC` when all are taken.
    pub(crate) fn claim() -> Result<Self> {
        for (w, word) in TAKEN.iter().enumerate() {
            let mut taken = word.load(Relaxed);
            while taken != u64::MAX {
                let bit = (!taken).trailing_zeros() as usize;
                match word.cmpxchg(taken, taken | (1 << bit), Full) {
                    Ok(_) => return Ok(Self(w * 64 + bit)),
                    Err(now) => taken = now,
                }
            }
        }
        Err(ENOSPC)
    }

    /// N.
    pub(crate) fn index(&self) -> u32 {
        self.0 as u32
    }

    /// `sivshmN`.
    pub(crate) fn name(&self) -> &'static CStr {
        // Every entry holds a NUL (the table leaves the last bytes zero), so this cannot fail.
        CStr::from_bytes_until_nul(&NAMES[self.0]).unwrap_or(c"sivshm")
    }
}

impl Drop for NodeName {
    fn drop(&mut self) {
        let word = &TAKEN[self.0 / 64];
        let bit = 1u64 << (self.0 % 64);
        let mut taken = word.load(Relaxed);
        while let Err(now) = word.cmpxchg(taken, taken & !bit, Full) {
            taken = now;
        }
    }
}
