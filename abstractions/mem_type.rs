// SPDX-License-Identifier: GPL-2.0

//! The memory type (cache mode) that a live kernel mapping of memory got.
//!
//! A driver asks for a memory type (`memremap(MEMREMAP_WB)`, say); on x86 the PAT code may
//! grant another one: for memory that is not RAM, write-back is granted only where the MTRRs
//! say write-back too (`pat_x_mtrr_type()`), and uncached-minus otherwise. The kernel keeps the
//! granted type to itself (`memtype_reserve()`'s answer), but writes it into the page-table
//! entries of the mapping it makes, and user mappings of the same range later get the same
//! type (`pfnmap_setup_cachemode()`). [`of_kernel_mapping`] reads it back from there.
//!
//! C headers: [`arch/x86/include/asm/pgtable_types.h`](srctree/arch/x86/include/asm/pgtable_types.h),
//! [`arch/x86/include/asm/memtype.h`](srctree/arch/x86/include/asm/memtype.h)

use core::ptr::NonNull;

use kernel::{bindings, ffi::c_void};

/// A memory type, as the x86 PAT knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemType {
    WriteBack,
    WriteCombining,
    UncachedMinus,
    Uncached,
    WriteThrough,
    WriteProtect,
}

impl MemType {
    /// Every type, with the kernel's name for it.
    const ALL: [(MemType, bindings::page_cache_mode); 6] = [
        (
            MemType::WriteBack,
            bindings::page_cache_mode__PAGE_CACHE_MODE_WB,
        ),
        (
            MemType::WriteCombining,
            bindings::page_cache_mode__PAGE_CACHE_MODE_WC,
        ),
        (
            MemType::UncachedMinus,
            bindings::page_cache_mode__PAGE_CACHE_MODE_UC_MINUS,
        ),
        (
            MemType::Uncached,
            bindings::page_cache_mode__PAGE_CACHE_MODE_UC,
        ),
        (
            MemType::WriteThrough,
            bindings::page_cache_mode__PAGE_CACHE_MODE_WT,
        ),
        (
            MemType::WriteProtect,
            bindings::page_cache_mode__PAGE_CACHE_MODE_WP,
        ),
    ];

    /// The name `/sys/kernel/debug/x86/pat_memtype_list` uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MemType::WriteBack => "write-back",
            MemType::WriteCombining => "write-combining",
            MemType::UncachedMinus => "uncached-minus",
            MemType::Uncached => "uncached",
            MemType::WriteThrough => "write-through",
            MemType::WriteProtect => "write-protected",
        }
    }
}

/// Page-table bits that select the memory type of a 4 KiB entry: PWT (3), PCD (4), PAT (7).
const CACHE_BITS_4K: u64 = (1 << 3) | (1 << 4) | (1 << 7);
/// The PAT bit of a 2 MiB or 1 GiB entry, where bit 7 is PSE.
const PAT_BIT_LARGE: u64 = 1 << 12;

/// The memory type of the kernel mapping at `addr`, or `None` if the address is not mapped or
/// its entry's bits match no type (PAT disabled, an unexpected PAT layout).
///
/// # Safety
///
/// `addr` is inside a kernel mapping (from `memremap()`, `ioremap()` or the like) that stays
/// mapped for the duration of the call.
pub(crate) unsafe fn of_kernel_mapping(addr: NonNull<c_void>) -> Option<MemType> {
    // SAFETY: Reads a boolean the PAT code set at boot.
    if !unsafe { bindings::pat_enabled() } {
        // Without the PAT the entry's bits do not say the type; the MTRRs alone decide it.
        return None;
    }
    let mut level: kernel::ffi::c_uint = 0;
    let addr = addr.as_ptr() as kernel::ffi::c_ulong;
    // SAFETY: `lookup_address()` walks the kernel's page tables for any address and returns the
    // entry that maps it, or null; `level` is a valid place for its answer.
    let pte = unsafe { bindings::lookup_address(addr, &mut level) };
    if pte.is_null() {
        return None;
    }
    // SAFETY: `pte` points at the live entry (a PTE, or a PMD/PUD read through the same type)
    // of a mapping that the caller keeps mapped, so the page table that holds it is not freed
    // during this read.
    let val = unsafe { (*pte).pte } as u64;
    let mut bits = val & ((1 << 3) | (1 << 4));
    let pat = if level == bindings::pg_level_PG_LEVEL_4K {
        1 << 7
    } else {
        PAT_BIT_LARGE
    };
    if val & pat != 0 {
        bits |= 1 << 7;
    }
    MemType::ALL.into_iter().find_map(|(t, mode)| {
        // SAFETY: `cachemode2protval()` only reads the kernel's constant translation table.
        let want = unsafe { bindings::cachemode2protval(mode) } as u64 & CACHE_BITS_4K;
        (want == bits).then_some(t)
    })
}
