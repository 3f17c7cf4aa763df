// SPDX-License-Identifier: GPL-2.0

//! User mappings of device memory that their owner can revoke at any moment.
//!
//! [`IoMmap`] maps a fixed range of page frames of device memory (a PCI BAR, say: no
//! `struct page` behind it) into the processes that `mmap` a file of the device. Nothing is
//! mapped at `mmap` time: a fault handler inserts the page frames on first touch. That is what
//! makes revocation sound: [`IoMmap::revoke`] first makes every later fault map the stand-in
//! instead of the device, waits for the faults in flight, then zaps every page-table entry of
//! every process, all through one shared address space (see [`super::private_inode`]). After
//! `revoke` returns, no process can reach the device memory through this object any more, so
//! its owner may give the memory back.
//!
//! **No process dies of a revocation** (the pattern of DRM's unplug, `drm_dev_unplug()` and
//! TTM's `ttm_bo_vm_dummy_page()`): after `revoke`, a fault anywhere in a mapping inserts one
//! page of kernel memory that this object owns, the *stand-in*, instead of raising `SIGBUS`.
//! Every page of every mapping of this object then aliases that one page, so touching a range
//! of any size costs page tables for what is touched and nothing else: nothing is prefaulted.
//! The stand-in is never the zero page (a write fault on a shared PFN mapping makes its entry
//! writable) and never shared with another `IoMmap`: what a process writes into it after the
//! revocation can be read back only by the processes that shared this very memory before.
//! It starts filled with `0xff`, so that a reader that parses it finds every field at its
//! maximum: every magic number wrong, every length and index out of range (a user-space
//! protocol can rely on that to fail its checks, and then ask the API whether the device is
//! gone). It lives as long as this object, which outlives every file attached to it (see
//! [`IoMmap::attach`]), hence every vma, hence every page-table entry that points at it.
//!
//! Faults do not serialise on a lock: each runs in an SRCU read-side critical section, and
//! `revoke` waits for a grace period between setting its flag and zapping. A fault that saw the
//! flag clear has finished inserting before the zap starts; a fault that starts later sees the
//! flag set.

use kernel::{
    alloc::VVec,
    bindings,
    fs::File,
    mm::virt::{flags, VmaNew, VmaRef},
    new_mutex, new_srcu,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Acquire, AtomicFlag, Release},
        Mutex, Srcu,
    },
};

use super::private_inode::PrivateInode;

/// Pages inserted per fault (1 MiB with 4 KiB pages): a sequential pass over the memory takes
/// one fault per window instead of one per page, and a fault stays bounded work.
const FAULT_AROUND_PAGES: usize = 256;

/// Revocable user mappings of `pages` page frames of device memory starting at `first_pfn`.
///
/// # Invariants
///
/// - Until `revoked` is set and a grace period of `faults` has passed, the page frames are
///   device memory reserved for the owner of this value.
/// - `stand_in`'s page is freed only when this value is dropped.
/// - Every vma whose `vm_ops` is `IO_VM_OPS` and whose `vm_private_data` points to an `IoMmap`
///   belongs to a file that [`IoMmap::attach`] attached to it, and that `IoMmap` outlives the
///   file.
#[pin_data(PinnedDrop)]
pub(crate) struct IoMmap {
    space: PrivateInode,
    first_pfn: usize,
    pages: usize,
    revoked: AtomicFlag,
    #[pin]
    faults: Srcu,
    /// Held for the whole of [`Self::revoke`], so that a second caller returns only once the
    /// first has cleared the page tables.
    #[pin]
    revoking: Mutex<()>,
    /// The page that faults map once `revoked` is set (see the module's documentation).
    stand_in: StandIn,
}

/// The byte the stand-in page starts filled with.
pub(crate) const STAND_IN_BYTE: u8 = 0xff;

/// One page of kernel memory, filled with [`STAND_IN_BYTE`], and its page frame.
///
/// # Invariants
///
/// `pfn` is the frame of `_page`'s one page, which no other allocation shares; it stays
/// allocated as long as this value.
struct StandIn {
    _page: VVec<u8>,
    pfn: usize,
}

impl StandIn {
    fn new() -> Result<Self> {
        // vmalloc memory is mapped a whole page at a time from a page-aligned address, so one
        // page's worth is exactly one page frame, which no other allocation shares.
        let page = VVec::from_elem(STAND_IN_BYTE, PAGE_SIZE, GFP_KERNEL)?;
        // SAFETY: `page.as_ptr()` is the start of a live vmalloc allocation of one page.
        let pfn = unsafe { bindings::vmalloc_to_pfn(page.as_ptr().cast()) };
        if pfn == 0 {
            return Err(ENOMEM);
        }
        // INVARIANT: the one page of `page` and its frame; the vector is never resized.
        Ok(StandIn {
            _page: page,
            pfn: pfn as usize,
        })
    }
}

impl IoMmap {
    /// Creates the mappings' state for `pages` page frames from `first_pfn`.
    ///
    /// # Safety
    ///
    /// The page frames are device memory (not RAM managed by the page allocator) that the caller
    /// has reserved and keeps reserved until [`Self::revoke`] has returned or this value is
    /// dropped.
    pub(crate) unsafe fn new(first_pfn: usize, pages: usize) -> impl PinInit<Self, Error> {
        // INVARIANT: The caller guarantees the reservation; no vma exists yet; the stand-in is
        // one fresh page that lives as long as this value.
        try_pin_init!(Self {
            space: PrivateInode::new()?,
            first_pfn,
            pages,
            revoked: AtomicFlag::new(false),
            faults <- new_srcu!(),
            revoking <- new_mutex!(()),
            stand_in: StandIn::new()?,
        })
    }

    /// Makes `file` one through which this memory can be mapped.
    ///
    /// # Safety
    ///
    /// - `file` is being opened (called from its `->open`).
    /// - `self` is kept alive until `file` has been released (for example by a reference the
    ///   file's private data holds).
    pub(crate) unsafe fn attach(&self, file: &File) {
        // SAFETY: The caller's guarantees are `share_with`'s.
        unsafe { self.space.share_with(file) };
    }

    /// Whether [`Self::revoke`] was called.
    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Acquire)
    }

    /// Sets up a new mapping from `->mmap` of a file attached to this object.
    ///
    /// Only shared mappings are accepted (`EINVAL` for `MAP_PRIVATE`, which would need
    /// copy-on-write of device memory), never executable ones (`EPERM`, the kernel's answer to
    /// `PROT_EXEC` on a `noexec` mount; `VM_MAYEXEC` is cleared too, so a later
    /// `mprotect(PROT_EXEC)` fails with `EACCES`), within the memory (`EINVAL`), and not once
    /// revoked (`ENODEV`). The mapping cannot be expanded by `mremap`, is not dumped, and is
    /// `VM_IO | VM_PFNMAP`, so `get_user_pages()` (and with it `/proc/PID/mem`, `process_vm_readv`
    /// and `O_DIRECT` I/O from the mapping) refuses it.
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        // MAYSHARE, not SHARED: the kernel clears VM_SHARED (keeping VM_MAYSHARE) for a shared
        // mapping of a file opened read-only.
        if vma.flags() & flags::MAYSHARE == 0 {
            return Err(EINVAL);
        }
        if vma.flags() & flags::EXEC != 0 {
            return Err(EPERM);
        }
        vma.try_clear_mayexec()?;
        let raw = vma.as_ptr();
        // SAFETY: A vma in `->mmap` has a file, on which it holds a reference, so the file lives
        // at least as long as this call; there is no `fdget_pos` region on it here.
        let file = unsafe { File::from_raw_file((*raw).vm_file) };
        // The fault handler finds `self` through the vma; that is sound only for files whose
        // mappings `revoke` reaches and that keep `self` alive (see `attach`).
        if !self.space.is_shared_with(file) {
            return Err(EINVAL);
        }
        // SAFETY: The vma is valid for the duration of `->mmap`, and `vm_pgoff` does not change
        // during it.
        let pgoff = unsafe { (*raw).vm_pgoff };
        let pages = (vma.end() - vma.start()) >> PAGE_SHIFT;
        match pgoff.checked_add(pages) {
            Some(end) if pages > 0 && end <= self.pages => {}
            _ => return Err(EINVAL),
        }
        if self.is_revoked() {
            return Err(ENODEV);
        }
        vma.set_io();
        vma.set_dontexpand();
        vma.set_dontdump();
        // SAFETY: The vma is being set up in `->mmap`, so no other thread can see it (`VmaNew`
        // is `!Sync`). `VM_PFNMAP` is valid with the flags it has: `VM_IO`, `VM_MAYSHARE` (so
        // it is not a copy-on-write mapping) and no `VM_MIXEDMAP` (`VmaNew` sets that only when
        // asked, and the fault handler refuses a vma that has it). `IO_VM_OPS` is a static
        // table. INVARIANT: `file` is attached to `self` (checked above), and `attach`'s caller
        // keeps `self` alive until the file, which the vma references, is released.
        unsafe {
            (*raw).__bindgen_anon_2.vm_flags |= bindings::VM_PFNMAP as bindings::vm_flags_t;
            (*raw).vm_ops = &IO_VM_OPS.0;
            (*raw).vm_private_data = core::ptr::from_ref(self).cast_mut().cast();
        }
        Ok(())
    }

    /// Ends all access to the device memory through this object: later `mmap` calls fail with
    /// `ENODEV`, later faults map the stand-in page, and every page-table entry that pointed at
    /// the device memory is removed before this returns, for every caller (a second caller
    /// waits for the first to finish). Idempotent. May sleep.
    pub(crate) fn revoke(&self) {
        let _revoking = self.revoking.lock();
        if self.is_revoked() {
            // The caller that set the flag cleared the page tables before it let go of the lock.
            return;
        }
        self.revoked.store(true, Release);
        // Every fault that saw `revoked` clear has left its read-side section, and so finished
        // inserting, once this returns; every later fault sees it set and maps the stand-in.
        self.faults.synchronize();
        self.space.unmap_all();
    }

    /// Serves a fault at page-aligned `addr` of a vma set up by [`Self::mmap`].
    fn fault(&self, vma: *mut bindings::vm_area_struct, addr: usize) -> bindings::vm_fault_t {
        let _guard = self.faults.read_lock();
        let revoked = self.is_revoked();
        // SAFETY: A fault in progress holds the mmap lock or the vma's lock for reading for the
        // whole call, which is what `VmaRef` needs.
        let vma_ref = unsafe { VmaRef::from_raw(vma) };
        let (start, end, vm_flags) = (vma_ref.start(), vma_ref.end(), vma_ref.flags());
        // SAFETY: As above: these fields are stable while the fault holds the lock.
        let (pgoff, prot) = unsafe { ((*vma).vm_pgoff, (*vma).vm_page_prot) };
        // `vmf_insert_pfn_prot()` BUG()s on a vma that is both PFNMAP and MIXEDMAP.
        if vm_flags & flags::MIXEDMAP != 0 {
            return SIGBUS;
        }
        let pfn_at = |at: usize| -> Option<usize> {
            let page = pgoff.checked_add((at - start) >> PAGE_SHIFT)?;
            match (page < self.pages, revoked) {
                (false, _) => None,
                (true, false) => Some(self.first_pfn + page),
                (true, true) => Some(self.stand_in.pfn),
            }
        };
        let insert = |at: usize, pfn: usize| -> bindings::vm_fault_t {
            // SAFETY: The vma is live (see above), has `VM_PFNMAP`, is not a copy-on-write
            // mapping and has no `VM_MIXEDMAP` (`Self::mmap`, checked above); `at` lies inside
            // it. `pfn` is either one of our device page frames, which are reserved device
            // memory while `revoked` is clear (type invariant; we saw it clear inside the
            // read-side section, and `revoke` waits for that section before it zaps this
            // entry), or the stand-in's frame, which lives until `self` is dropped, after every
            // vma of an attached file is gone (type invariant), and with it this entry. The
            // memory type is the one recorded for the frame (`vmf_insert_pfn_prot()` applies
            // it to `prot`): the BAR's reservation, or write-back for the stand-in's RAM.
            unsafe { bindings::vmf_insert_pfn_prot(vma, at, pfn, prot) }
        };
        // The faulting page must be mapped; the rest of the window is opportunistic.
        let Some(pfn) = pfn_at(addr) else {
            return SIGBUS;
        };
        let ret = insert(addr, pfn);
        if ret != NOPAGE {
            return ret;
        }
        let page = 1usize << PAGE_SHIFT;
        let window = FAULT_AROUND_PAGES * page;
        let first = core::cmp::max(start, addr & !(window - 1));
        let last = core::cmp::min(end, first.saturating_add(window));
        let mut at = first;
        while at < last {
            if at != addr {
                match pfn_at(at) {
                    Some(pfn) if insert(at, pfn) == NOPAGE => {}
                    _ => break,
                }
            }
            at += page;
        }
        NOPAGE
    }
}

const NOPAGE: bindings::vm_fault_t =
    bindings::vm_fault_reason_VM_FAULT_NOPAGE as bindings::vm_fault_t;
/// A fault outside the memory (beyond the BAR, which `mmap` refuses, so only a vma that was
/// changed under us) or on a vma with flags we never set.
const SIGBUS: bindings::vm_fault_t =
    bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;

#[pinned_drop]
impl PinnedDrop for IoMmap {
    fn drop(self: Pin<&mut Self>) {
        // No file is attached any more (`attach`'s contract), so there is no mapping left; this
        // keeps the contract of `new` even for an owner that never called `revoke`.
        self.revoke();
    }
}

struct VmOps(bindings::vm_operations_struct);

// SAFETY: The table is immutable and holds only function pointers.
unsafe impl Sync for VmOps {}

static IO_VM_OPS: VmOps = VmOps({
    let mut ops: bindings::vm_operations_struct = pin_init::zeroed();
    ops.fault = Some(io_fault);
    ops
});

/// The `->fault` of vmas set up by [`IoMmap::mmap`].
///
/// # Safety
///
/// Called by the mm core only, with the `vm_fault` of a fault in progress on a vma whose
/// `vm_ops` is `IO_VM_OPS`.
unsafe extern "C" fn io_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: `vmf` is valid for the fault (function safety requirement).
    let (vma, addr) = unsafe { ((*vmf).__bindgen_anon_1.vma, (*vmf).__bindgen_anon_1.address) };
    // SAFETY: Only `IoMmap::mmap` installs `IO_VM_OPS`, together with `vm_private_data`
    // pointing to the `IoMmap`, which outlives the vma's file and so the vma (type invariant).
    let this = unsafe { &*(*vma).vm_private_data.cast::<IoMmap>() };
    this.fault(vma, addr)
}
