// SPDX-License-Identifier: GPL-2.0

//! A private inode whose address space stands for "every user mapping of one object".
//!
//! The kernel's idiom for revoking the mappings of a device file (VFIO's `vfio_fs_inode_new`,
//! DRM's `drm_fs_inode_new`, `/dev/mem`'s `devmem_inode`): allocate an inode on a pseudo
//! filesystem that the module mounts internally, and make it the `f_mapping` of every file that
//! maps the object. Every vma of every such file, and every copy made by `fork` or `mremap`, is
//! then linked into that one address space, and a single `unmap_mapping_range()` zaps them all.
//!
//! The pseudo filesystem is mounted while at least one [`PrivateInode`] exists
//! (`simple_pin_fs`). It has no owner module: an owner would be pinned by the mount, and the
//! mount lives as long as the objects do, which would make `rmmod` impossible. Instead, the last
//! `PrivateInode` of the module is dropped before the module's code goes away (an inode is held
//! only by values of this type, and those only by the module's own data), and releasing an
//! internal mount shuts its superblock down synchronously.
//!
//! C header: [`include/linux/fs.h`](srctree/include/linux/fs.h)

use core::ptr::NonNull;

use kernel::{
    bindings,
    error::{from_err_ptr, to_result},
    fs::File,
    prelude::*,
    types::Opaque,
};

/// The superblock magic of the pseudo filesystem ("sivs"); seen only in `statfs` of an inode
/// nobody can open by path.
const MAGIC: c_ulong = 0x7369_7673;

unsafe extern "C" {
    /// `init_pseudo()` of `fs/libfs.c` (exported, but not in the kernel crate's bindings).
    fn init_pseudo(fc: *mut bindings::fs_context, magic: c_ulong) -> *mut c_void;
}

/// The filesystem type and its internal mount, shared by every [`PrivateInode`].
struct PseudoFs {
    fs_type: Opaque<bindings::file_system_type>,
    mount: Opaque<*mut bindings::vfsmount>,
    count: Opaque<c_int>,
}

// SAFETY: The fields are only accessed through `simple_pin_fs()` and `simple_release_fs()`, which
// serialise on the VFS's `pin_fs_lock`, and through `mount`'s value while a pin is held (see
// `PrivateInode::new`), during which nobody writes it. The VFS links superblocks into
// `fs_type.fs_supers` under its own `sb_lock`.
unsafe impl Sync for PseudoFs {}

static FS: PseudoFs = PseudoFs {
    fs_type: Opaque::new({
        let mut t: bindings::file_system_type = pin_init::zeroed();
        // Through the bytes: `CStrExt::as_char_ptr` is not `const`.
        t.name = c"sivshm_private_inodes".to_bytes_with_nul().as_ptr();
        t.init_fs_context = Some(init_fs_context);
        t.kill_sb = Some(bindings::kill_anon_super);
        t
    }),
    mount: Opaque::new(core::ptr::null_mut()),
    count: Opaque::new(0),
};

/// `init_fs_context` of the pseudo filesystem: a superblock with the default pseudo-fs
/// operations, no root directory entries and no way to be mounted from user space.
///
/// # Safety
///
/// Called by the VFS only, with a valid `fs_context` being set up for `FS.fs_type`.
unsafe extern "C" fn init_fs_context(fc: *mut bindings::fs_context) -> c_int {
    // SAFETY: `fc` is valid (function safety requirement); `init_pseudo()` allocates the
    // pseudo-fs context, attaches it to `fc` and returns it, or NULL if it cannot allocate.
    if unsafe { init_pseudo(fc, MAGIC) }.is_null() {
        return ENOMEM.to_errno();
    }
    0
}

/// An inode of the module's pseudo filesystem, used for its address space.
///
/// # Invariants
///
/// `inode` is a live inode of the pseudo filesystem on which this value holds one reference,
/// and this value holds one pin of the pseudo filesystem's mount.
pub(crate) struct PrivateInode {
    inode: NonNull<bindings::inode>,
}

// SAFETY: An inode reference may be used and dropped from any thread; `unmap_mapping_range()`
// and `iput()` take their own locks.
unsafe impl Send for PrivateInode {}
// SAFETY: The `&self` methods only read `inode` and call thread-safe VFS and mm functions.
unsafe impl Sync for PrivateInode {}

impl PrivateInode {
    /// Allocates an inode; mounts the pseudo filesystem if this is the first one.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: `FS`'s fields are valid for the life of the module and only ever passed to
        // `simple_pin_fs()`/`simple_release_fs()`, which serialise on `pin_fs_lock`.
        to_result(unsafe {
            bindings::simple_pin_fs(FS.fs_type.get(), FS.mount.get(), FS.count.get())
        })?;
        // SAFETY: We hold a pin, so `*FS.mount` is a live mount and nobody writes it until the
        // pin count drops to zero, which it cannot while we hold ours.
        let sb = unsafe { (**FS.mount.get()).mnt_sb };
        // SAFETY: `sb` is the live superblock of the pinned mount.
        let inode = from_err_ptr(unsafe { bindings::alloc_anon_inode(sb) })
            .and_then(|inode| NonNull::new(inode).ok_or(ENOMEM));
        match inode {
            // INVARIANT: `alloc_anon_inode()` returned a new inode with one reference for us,
            // and we hold the pin taken above.
            Ok(inode) => Ok(Self { inode }),
            Err(e) => {
                // SAFETY: Gives back the pin taken above.
                unsafe { bindings::simple_release_fs(FS.mount.get(), FS.count.get()) };
                Err(e)
            }
        }
    }

    fn mapping(&self) -> *mut bindings::address_space {
        // SAFETY: By the type invariant the inode is live; `i_mapping` is set when the inode is
        // allocated and never changes for an inode of a pseudo filesystem.
        unsafe { (*self.inode.as_ptr()).i_mapping }
    }

    /// Makes this inode's address space the one through which `file` is mapped.
    ///
    /// # Safety
    ///
    /// - `file` is being opened (called from its `->open`), so no other thread can see it yet.
    /// - `self` is kept alive until `file` has been released.
    pub(crate) unsafe fn share_with(&self, file: &File) {
        // SAFETY: No other thread can access `file` yet, so this write does not race (first
        // safety requirement). Every vma of `file` is created after `->open` and linked into
        // `f_mapping`, and `file` is not released before all of them are gone, so the address
        // space is alive whenever the mm core uses it (second safety requirement).
        unsafe { (*file.as_ptr()).f_mapping = self.mapping() };
    }

    /// Whether `file` maps through this inode's address space (see [`Self::share_with`]).
    pub(crate) fn is_shared_with(&self, file: &File) -> bool {
        // SAFETY: `file` is a live file; its `f_mapping` is written only while it is being
        // opened, before a `&File` to it can exist elsewhere.
        core::ptr::eq(unsafe { (*file.as_ptr()).f_mapping }, self.mapping())
    }

    /// Removes every page-table entry of every process that maps through this address space.
    pub(crate) fn unmap_all(&self) {
        // SAFETY: The address space is live (type invariant). `holelen == 0` means "to the
        // end"; `even_cows == 1` would also drop private copies, of which there are none for
        // shared mappings.
        unsafe { bindings::unmap_mapping_range(self.mapping(), 0, 0, 1) };
    }
}

impl Drop for PrivateInode {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold one reference on the inode and one pin of the
        // mount; both are given back exactly once, the inode first (it belongs to the mount's
        // superblock). Releasing the last pin of an internal mount shuts the superblock down
        // before returning.
        unsafe {
            bindings::iput(self.inode.as_ptr());
            bindings::simple_release_fs(FS.mount.get(), FS.count.get());
        }
    }
}
