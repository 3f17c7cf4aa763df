// SPDX-License-Identifier: GPL-2.0

//! A memory BAR of a PCI device, reserved for the driver and mapped write-back, whose user
//! mappings ([`IoMmap`]) are revoked before the reservation is released.
//!
//! The kernel itself never touches the BAR's memory through this type: the `memremap()` exists
//! to record write-back as the range's memory type in the PAT, which user mappings then inherit
//! (the PAT may downgrade it where the MTRRs say otherwise; [`MappableBar::mem_type`] tells
//! what was granted).

use core::ptr::NonNull;

use kernel::{
    bindings,
    device::Bound,
    page::{PAGE_SHIFT, PAGE_SIZE},
    pci,
    prelude::*,
    sync::Arc,
};

use super::{
    io_mmap::IoMmap,
    mem_type::{self, MemType},
};

/// A requested, write-back mapped memory BAR and the user mappings of it.
///
/// # Invariants
///
/// - Region `bar` of `pdev` is requested by this value and `kaddr` is the live `memremap()` of
///   the whole BAR; both are released exactly once, in `Drop`.
/// - `mappings` covers exactly the BAR's page frames, and is revoked in `Drop` before the
///   region is released.
pub(crate) struct MappableBar<'a> {
    pdev: &'a pci::Device<Bound>,
    bar: i32,
    kaddr: NonNull<c_void>,
    mappings: Arc<IoMmap>,
}

impl<'a> MappableBar<'a> {
    /// Requests BAR `bar` of `pdev` under `name` and maps it write-back. The BAR must be a
    /// whole number of pages at a page-aligned address (`EINVAL`): a partial page would expose
    /// whatever follows it to user space.
    pub(crate) fn new(pdev: &'a pci::Device<Bound>, bar: u32, name: &'static CStr) -> Result<Self> {
        let start = pdev.resource_start(bar)?;
        let len = pdev.resource_len(bar)?;
        let page = PAGE_SIZE as u64;
        if len == 0 || start % page != 0 || len % page != 0 {
            return Err(EINVAL);
        }
        let first_pfn = usize::try_from(start >> PAGE_SHIFT)?;
        let pages = usize::try_from(len >> PAGE_SHIFT)?;
        let size = usize::try_from(len)?;
        let bar = i32::try_from(bar)?;
        let raw = pci_raw(pdev);
        // SAFETY: `raw` is a valid, bound `pci_dev`; `bar` is a BAR index that
        // `resource_len()` accepted; `name` is `'static`.
        if unsafe { bindings::pci_request_region(raw, bar, name.as_char_ptr()) } != 0 {
            return Err(EBUSY);
        }
        // SAFETY: `[start, start + size)` is the BAR we just requested, so no other driver maps
        // it with a conflicting memory type.
        let kaddr = unsafe { bindings::memremap(start, size, bindings::MEMREMAP_WB as c_ulong) };
        let Some(kaddr) = NonNull::new(kaddr) else {
            // SAFETY: We requested this region just above.
            unsafe { bindings::pci_release_region(raw, bar) };
            return Err(ENOMEM);
        };
        // SAFETY: The page frames are the BAR's, device memory that we requested above and
        // release only in `Drop`, after revoking `mappings` (type invariant).
        let mappings = Arc::pin_init(unsafe { IoMmap::new(first_pfn, pages) }, GFP_KERNEL);
        let mappings = match mappings {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: Undoes the two steps above, in reverse order.
                unsafe {
                    bindings::memunmap(kaddr.as_ptr());
                    bindings::pci_release_region(raw, bar);
                }
                return Err(e);
            }
        };
        // INVARIANT: The region is requested, `kaddr` maps it and `mappings` covers it.
        Ok(Self {
            pdev,
            bar,
            kaddr,
            mappings,
        })
    }

    /// The user mappings of the BAR; open files keep a reference.
    pub(crate) fn mappings(&self) -> &Arc<IoMmap> {
        &self.mappings
    }

    /// The memory type the BAR got, which user mappings get too: write-back was asked for, but
    /// the PAT grants it only where the MTRRs agree (see [`mem_type`]). `None` where the PAT
    /// is disabled.
    pub(crate) fn mem_type(&self) -> Option<MemType> {
        // SAFETY: `kaddr` is the live `memremap()` of the whole BAR (type invariant), unmapped
        // only in `Drop`, which cannot run during this borrow.
        unsafe { mem_type::of_kernel_mapping(self.kaddr) }
    }
}

impl Drop for MappableBar<'_> {
    fn drop(&mut self) {
        // No process can reach the BAR once this returns.
        self.mappings.revoke();
        // SAFETY: By the type invariants `kaddr` is a live `memremap()` and the region is ours;
        // nothing maps the BAR any more.
        unsafe {
            bindings::memunmap(self.kaddr.as_ptr());
            bindings::pci_release_region(pci_raw(self.pdev), self.bar);
        }
    }
}

// SAFETY: `MappableBar` holds the address of a mapping that nobody dereferences, a reference to
// a device and an `Arc` of a `Send + Sync` type; releasing them from another thread is fine.
unsafe impl Send for MappableBar<'_> {}
// SAFETY: The only `&self` method hands out the `Arc`, which is `Sync`.
unsafe impl Sync for MappableBar<'_> {}

/// Number of entries in the MSI-X table of `pdev`, or `None` if it has no MSI-X capability.
pub(crate) fn msix_table_size(pdev: &pci::Device<Bound>) -> Option<u32> {
    // SAFETY: `pci_raw` gives a valid `pci_dev`; the function only reads its config space.
    let n = unsafe { bindings::pci_msix_vec_count(pci_raw(pdev)) };
    u32::try_from(n).ok().filter(|&n| n > 0)
}

fn pci_raw(pdev: &pci::Device<Bound>) -> *mut bindings::pci_dev {
    // CAST: `pci::Device` is `repr(transparent)` over `Opaque<bindings::pci_dev>`, which is
    // `repr(transparent)` over the C struct.
    core::ptr::from_ref(pdev).cast_mut().cast()
}
