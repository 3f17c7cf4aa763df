// SPDX-License-Identifier: GPL-2.0

//! Every `unsafe` of the driver, for what the 7.3 kernel crate has no
//! abstraction for yet: the byte views of the ioctl structs, eventfd contexts,
//! finding a device from its misc registration, reserving BAR2 write-back,
//! mapping BAR2 into user space through a fault handler so that unbind can
//! revoke the mappings, and the IRQ handlers' borrow of the MSI-X vectors.
//!
//! Each item here is small and argues its own soundness; the rest of the
//! driver is safe Rust.

use core::ptr::NonNull;

use kernel::{
    bindings,
    device::Bound,
    fs::{File, Kiocb},
    irq,
    miscdevice::MiscDeviceRegistration,
    mm::virt::{VmaNew, VmaRef},
    page::PAGE_SHIFT,
    pci,
    prelude::*,
    sync::Arc,
    transmute::{AsBytes, FromBytes},
    types::ForeignOwnable,
};

use crate::{
    device::{Node, Shared},
    file::OpenDevice,
    interrupts::VectorIrq,
    uapi,
};

// SAFETY: `uapi::Info` is `repr(C)` with only integer fields and explicit padding fields whose
// sizes add up to the struct's size (asserted in `uapi.rs`), so it has no padding bytes and
// every byte of a value is initialised.
unsafe impl AsBytes for uapi::Info {}

// SAFETY: `uapi::Ring` is `repr(C)` with four `u32`s: no padding, and any bit pattern is a
// valid value.
unsafe impl FromBytes for uapi::Ring {}

// SAFETY: `uapi::Eventfd` is `repr(C)` with an `i32` and three `u32`s: no padding, and any bit
// pattern is a valid value.
unsafe impl FromBytes for uapi::Eventfd {}

/// A reference on an eventfd context, taken from a file descriptor of the caller.
///
/// # Invariants
///
/// `ctx` is a valid eventfd context on which this value holds one reference.
pub(crate) struct EventFd {
    ctx: NonNull<bindings::eventfd_ctx>,
}

// SAFETY: An eventfd context is reference counted and may be signalled and put from any
// context and thread (`eventfd_signal_mask()` takes its own IRQ-safe lock).
unsafe impl Send for EventFd {}
// SAFETY: `signal` may race with itself on other CPUs; the eventfd serialises internally.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// Looks `fd` up in the calling process: `EBADF` if it is not open, `EINVAL` if it is not
    /// an eventfd.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: Any integer may be passed; the function validates it against the current
        // task's file table and returns an `ERR_PTR` on failure.
        let ctx = kernel::error::from_err_ptr(unsafe { bindings::eventfd_ctx_fdget(fd) })?;
        // INVARIANT: On success `eventfd_ctx_fdget()` returns a context with a reference taken
        // for us.
        Ok(Self {
            ctx: NonNull::new(ctx).ok_or(EINVAL)?,
        })
    }

    /// Adds one to the counter and wakes its waiters; callable in hard-IRQ context.
    pub(crate) fn signal(&self) {
        // SAFETY: By the type invariant `ctx` is valid; a mask of 0 means "no extra poll bits".
        unsafe { bindings::eventfd_signal_mask(self.ctx.as_ptr(), 0) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold one reference, given back exactly once here.
        unsafe { bindings::eventfd_ctx_put(self.ctx.as_ptr()) };
    }
}

/// The interrupt handlers of one device, one per allocated vector.
pub(crate) type IrqRegistrations<'a> = KVec<Pin<KBox<irq::Registration<'a, VectorIrq>>>>;

/// Requests one handler per vector of `vectors`, each delivering to `shared`.
///
/// The handlers borrow `vectors` for as long as the binding lives. `vectors` is the field
/// `Binding::vectors` of the pinned driver data, which is why the borrow may be stretched.
pub(crate) fn request_irqs<'a>(
    vectors: &pci::IrqVectorRegistration<'a>,
    shared: &Arc<Shared>,
    intx: bool,
) -> Result<IrqRegistrations<'a>> {
    // SAFETY: `vectors` points into the pinned `Binding` (it never moves) and `Binding`
    // declares `irqs`, which owns every registration made here, before `vectors`, so all of
    // them are dropped (and `free_irq()` has returned) before the vectors are freed. The
    // reference is only used to create those registrations.
    let vectors: &'a pci::IrqVectorRegistration<'a> = unsafe { &*core::ptr::from_ref(vectors) };
    let flags = if intx {
        irq::Flags::SHARED
    } else {
        irq::Flags::TRIGGER_NONE
    };
    let mut irqs = KVec::with_capacity(vectors.len(), GFP_KERNEL)?;
    for i in 0..vectors.len() {
        let request = vectors.index(i)?.into();
        let handler = VectorIrq::new(shared.clone(), i, intx);
        // SAFETY: The registration is boxed and kept in the returned vector until the binding
        // is dropped; it is never `mem::forget()`-ed.
        let registration = unsafe { irq::Registration::new(request, flags, c"sivshm", handler) };
        irqs.push(KBox::pin_init(registration, GFP_KERNEL)?, GFP_KERNEL)?;
    }
    Ok(irqs)
}

/// Returns the [`Node`] that embeds `misc`.
pub(crate) fn node_of(misc: &MiscDeviceRegistration<OpenDevice>) -> &Node {
    let misc: *const MiscDeviceRegistration<OpenDevice> = misc;
    // SAFETY: The only `MiscDeviceRegistration<OpenDevice>` ever created is the `misc` field of a
    // pinned `Node` (see `Node::new`), so stepping back by the field offset stays inside that
    // allocation and yields a valid, initialised `Node`. The `Node` outlives the returned
    // reference because the caller's `&MiscDeviceRegistration` borrows from it, and
    // `misc_open()` holds `misc_mtx` during `open`, so `misc_deregister()` (in `Node`'s drop)
    // cannot run meanwhile.
    unsafe { &*kernel::container_of!(misc, Node, misc) }
}

/// The shared-memory BAR, requested for this driver and reserved write-back cached.
///
/// The kernel never reads or writes the shared memory; the `memremap()` exists so that the
/// range's PAT memory type is write-back, which is what user-space mappings then inherit
/// (`vmf_insert_pfn_prot()` takes the reserved type of the range).
///
/// # Invariants
///
/// `kaddr` is the live `memremap()` of the whole BAR `bar` of `pdev`, and the BAR's region is
/// requested by this driver; both are released exactly once, in `Drop`.
pub(crate) struct ShmRegion<'a> {
    pdev: &'a pci::Device<Bound>,
    bar: i32,
    kaddr: NonNull<c_void>,
}

impl<'a> ShmRegion<'a> {
    pub(crate) fn new(pdev: &'a pci::Device<Bound>, bar: u32, name: &'static CStr) -> Result<Self> {
        let start = pdev.resource_start(bar)?;
        let len = pdev.resource_len(bar)?;
        if len == 0 {
            return Err(ENODEV);
        }
        let bar = i32::try_from(bar)?;
        let raw = pci_raw(pdev);
        // SAFETY: `raw` is a valid, bound `pci_dev`; `bar` was checked by `resource_len()`; `name`
        // is `'static`.
        let ret = unsafe { bindings::pci_request_region(raw, bar, name.as_char_ptr()) };
        if ret != 0 {
            return Err(EBUSY);
        }
        let len = usize::try_from(len)?;
        // SAFETY: `[start, start + len)` is the BAR we just requested, so nobody else maps it
        // with a conflicting memory type through the PCI core.
        let kaddr = unsafe { bindings::memremap(start, len, bindings::MEMREMAP_WB as c_ulong) };
        let Some(kaddr) = NonNull::new(kaddr) else {
            // SAFETY: We requested this region just above.
            unsafe { bindings::pci_release_region(raw, bar) };
            return Err(ENOMEM);
        };
        // INVARIANT: The region is requested and `kaddr` is its mapping.
        Ok(Self { pdev, bar, kaddr })
    }
}

impl Drop for ShmRegion<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants `kaddr` is a live `memremap()` and the region is ours.
        unsafe {
            bindings::memunmap(self.kaddr.as_ptr());
            bindings::pci_release_region(pci_raw(self.pdev), self.bar);
        }
    }
}

// SAFETY: `ShmRegion` only holds the addresses of a mapping nobody dereferences and a reference
// to a device; releasing them from another thread is fine.
unsafe impl Send for ShmRegion<'_> {}
// SAFETY: `ShmRegion` has no `&self` methods that touch its pointers.
unsafe impl Sync for ShmRegion<'_> {}

fn pci_raw(pdev: &pci::Device<Bound>) -> *mut bindings::pci_dev {
    // CAST: `pci::Device` is `repr(transparent)` over `Opaque<bindings::pci_dev>`.
    core::ptr::from_ref(pdev).cast_mut().cast()
}

/// The `address_space` through which user space maps an open `/dev/sivshmN`.
///
/// # Invariants
///
/// The driver keeps a `FileMapping` only while a file that has it as `f_mapping` is open (it is
/// added in `open` and removed in `release`); an open file pins its inode, so the
/// `address_space` is alive whenever a `FileMapping` is used.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileMapping(*mut bindings::address_space);

// SAFETY: An `address_space` may be used from any thread.
unsafe impl Send for FileMapping {}
// SAFETY: `unmap_mapping_range()` takes its own locks.
unsafe impl Sync for FileMapping {}

impl FileMapping {
    pub(crate) fn of(file: &File) -> Self {
        // SAFETY: `file` is a valid open file; `f_mapping` is set before `open` is called and
        // does not change for a character device.
        Self(unsafe { (*file.as_ptr()).f_mapping })
    }

    /// Removes every user page-table entry that maps this file.
    pub(crate) fn zap_all(self) {
        // SAFETY: By the type invariant the `address_space` is alive. `holelen == 0` means "to
        // the end"; `even_cows == 1` also drops private copies (there are none: only shared
        // mappings are allowed).
        unsafe { bindings::unmap_mapping_range(self.0, 0, 0, 1) };
    }
}

/// Whether a read must not block: the file is `O_NONBLOCK`.
pub(crate) fn kiocb_nonblock<T: ForeignOwnable>(kiocb: &Kiocb<'_, T>) -> bool {
    let raw = kiocb.as_raw();
    // SAFETY: `raw` is the valid kiocb of a read in progress; its `ki_filp` is the open file
    // being read, valid for the call.
    let file_flags = unsafe { (*(*raw).ki_filp).f_flags };
    file_flags & bindings::O_NONBLOCK != 0
}

/// Turns a new vma into a shared-memory mapping whose pages are inserted on fault.
///
/// Nothing is mapped here: `shm_fault()` inserts the PFNs under the device lock, so that
/// `Shared::revoke` can zap them all and no later fault can bring them back.
pub(crate) fn make_shm_vma(vma: &VmaNew) {
    vma.set_io();
    vma.set_dontexpand();
    vma.set_dontdump();
    let vma = vma.as_ptr();
    // SAFETY: The vma is undergoing initial setup (we are in `->mmap`) and is not shared yet.
    // `VM_PFNMAP` is what `vmf_insert_pfn_prot()` requires, and is valid together with the flags
    // already set (`VM_IO`, `VM_SHARED`, no `VM_MIXEDMAP`: the driver never sets it).
    // `SHM_VM_OPS` is a `'static` table.
    unsafe {
        (*vma).__bindgen_anon_2.vm_flags |= bindings::VM_PFNMAP as bindings::vm_flags_t;
        (*vma).vm_ops = &SHM_VM_OPS.0;
    }
}

/// The page offset `mmap()` was called with.
pub(crate) fn vma_pgoff(vma: &VmaNew) -> usize {
    // SAFETY: The vma is valid for the duration of `->mmap` and `vm_pgoff` is not changed
    // during it.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

struct VmOps(bindings::vm_operations_struct);

// SAFETY: The table is immutable and only holds function pointers.
unsafe impl Sync for VmOps {}

static SHM_VM_OPS: VmOps = VmOps({
    let mut ops: bindings::vm_operations_struct = pin_init::zeroed();
    ops.fault = Some(shm_fault);
    ops
});

/// Outcome of a shared-memory fault.
pub(crate) enum Fault {
    /// The PFNs are in place.
    Mapped,
    /// The device is gone or the address is outside the BAR.
    SigBus,
    /// `vmf_insert_pfn_prot()` failed with this code.
    Raw(bindings::vm_fault_t),
}

/// A page fault in a vma set up by [`make_shm_vma`].
///
/// # Invariants
///
/// `vmf` is the valid `vm_fault` of a fault in progress on such a vma.
pub(crate) struct PfnFault {
    vmf: *mut bindings::vm_fault,
}

impl PfnFault {
    fn vma(&self) -> *mut bindings::vm_area_struct {
        // SAFETY: By the type invariant `vmf` is valid.
        unsafe { (*self.vmf).__bindgen_anon_1.vma }
    }

    /// The faulting user address, page aligned.
    pub(crate) fn address(&self) -> usize {
        // SAFETY: By the type invariant `vmf` is valid.
        unsafe { (*self.vmf).__bindgen_anon_1.address }
    }

    fn vma_ref(&self) -> &VmaRef {
        // SAFETY: A fault in progress holds the mmap lock or the per-vma lock of its vma for
        // as long as `self` (which lives only inside `shm_fault`) exists.
        unsafe { VmaRef::from_raw(self.vma()) }
    }

    /// The user address range of the vma.
    pub(crate) fn vma_range(&self) -> (usize, usize) {
        (self.vma_ref().start(), self.vma_ref().end())
    }

    /// The page offset into the device memory that `addr` (inside the vma) maps.
    pub(crate) fn pgoff_of(&self, addr: usize) -> usize {
        // SAFETY: As in `vma_ref`; `vm_pgoff` is stable under those locks.
        let pgoff = unsafe { (*self.vma()).vm_pgoff };
        pgoff + ((addr - self.vma_ref().start()) >> PAGE_SHIFT)
    }

    /// Maps the page at `addr` (inside the vma) to `pfn`.
    pub(crate) fn insert(&self, addr: usize, pfn: usize) -> core::result::Result<(), Fault> {
        let vma = self.vma();
        // SAFETY: The vma is valid, has `VM_PFNMAP` and is not a COW mapping (`make_shm_vma`
        // and the `VM_SHARED` check in `OpenDevice::mmap`); `addr` is inside it; the caller
        // guarantees `pfn` is a page of the device's shared-memory BAR, which is reserved
        // (`ShmRegion`) while the fault can see the device alive.
        let ret = unsafe {
            bindings::vmf_insert_pfn_prot(vma, addr as c_ulong, pfn as c_ulong, (*vma).vm_page_prot)
        };
        if ret == bindings::vm_fault_reason_VM_FAULT_NOPAGE as bindings::vm_fault_t {
            Ok(())
        } else {
            Err(Fault::Raw(ret))
        }
    }
}

/// The `->fault` of shared-memory vmas.
///
/// # Safety
///
/// Called by the mm core only, with the `vm_fault` of a fault in progress on a vma whose
/// `vm_ops` is `SHM_VM_OPS`.
unsafe extern "C" fn shm_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // INVARIANT: The mm core calls `->fault` with the valid `vm_fault` of a fault on one of our
    // vmas (only `make_shm_vma` installs `SHM_VM_OPS`).
    let fault = PfnFault { vmf };
    // SAFETY: The vma's `vm_file` is the `/dev/sivshmN` file it was created from; the vma holds
    // a reference on it, so the file has not been released and its `private_data` is still the
    // `Pin<KBox<OpenDevice>>` that `open` stored there (it is freed only in `release`).
    let dev = unsafe {
        <Pin<KBox<OpenDevice>> as ForeignOwnable>::borrow((*(*fault.vma()).vm_file).private_data)
    };
    match dev.shared().fault(&fault) {
        Fault::Mapped => bindings::vm_fault_reason_VM_FAULT_NOPAGE as bindings::vm_fault_t,
        Fault::SigBus => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
        Fault::Raw(code) => code,
    }
}
