// SPDX-License-Identifier: GPL-2.0

//! A misc device whose open files reach the node's data, can be polled, and can map an
//! [`IoMmap`].
//!
//! In 7.3 the kernel crate's [`MiscDevice`] has no `poll`, and its `open` receives only the
//! [`MiscDeviceRegistration`], which carries no data of its own. A driver with one misc device
//! per bound device needs both: a way to find that device's state, and a way to tell a process
//! that sleeps in `poll`/`epoll` on the node that the device went away. [`MiscNode`] registers
//! the `struct miscdevice` itself, next to the data, with the kernel crate's own file
//! operations for `open`, `release`, `mmap` and the ioctls plus a `poll` of its own, and hands
//! the data to [`NodeFile::open`]. It also attaches the file to the [`IoMmap`] the opened file
//! names, keeping that alive for as long as the file: the one precondition of
//! [`IoMmap::attach`] that a driver could otherwise get wrong.

use core::marker::PhantomData;

use kernel::{
    bindings,
    error::to_result,
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    sync::{poll::PollTable, Arc},
    types::{ForeignOwnable, Opaque},
};

use super::io_mmap::IoMmap;

/// `EPOLLERR` and `EPOLLHUP` (`include/uapi/linux/eventpoll.h`; bindgen does not see them
/// through their `__force` casts).
pub(crate) const EPOLLERR: u32 = 0x008;
pub(crate) const EPOLLHUP: u32 = 0x010;

/// An open file of a [`MiscNode`].
pub(crate) trait NodeFile: Sized + Send + Sync + 'static {
    /// The node's data, which every `open` receives.
    type Data: Send + Sync;

    /// Opens `file` on the node whose data is `data`.
    fn open(file: &File, data: &Self::Data) -> Result<Self>;

    /// The memory that the file maps, if any: [`MiscNode`] attaches the file to it and keeps
    /// it alive until the file is released.
    fn mappings(&self) -> Option<&Arc<IoMmap>>;

    /// `->mmap`.
    fn mmap(&self, file: &File, vma: &VmaNew) -> Result;

    /// `->unlocked_ioctl` (and `->compat_ioctl`, for which the arguments are the same).
    fn ioctl(&self, file: &File, cmd: u32, arg: usize) -> Result<isize>;

    /// `->poll`: registers `table` with whatever wakes the file and answers the `EPOLL*` bits
    /// that hold now.
    fn poll(&self, file: &File, table: PollTable<'_>) -> u32;
}

/// The private data of an open file: the driver's value and the memory it is attached to.
///
/// Private to this module, so that the only `struct miscdevice` whose file operations are
/// `Opened<T>`'s is one that [`MiscNode::new`] registered.
struct Opened<T: NodeFile> {
    file: T,
    _mappings: Option<Arc<IoMmap>>,
}

#[vtable]
impl<T: NodeFile> MiscDevice for Opened<T> {
    type Ptr = KBox<Self>;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let raw = misc.as_raw().cast::<Opaque<bindings::miscdevice>>();
        // SAFETY: `Opened` is private to this module and only `MiscNode::new` registers a misc
        // device with its file operations, embedded as the `raw` field of a pinned
        // `MiscNode<T>`; `misc` is that field (the kernel crate's `open` hands us the
        // registered `struct miscdevice`), so stepping back to the node stays inside it. The
        // node outlives the reference: `misc_open()` holds `misc_mtx` during `->open`, so the
        // node's `misc_deregister()`, which takes the same lock, cannot finish meanwhile.
        let node = unsafe { &*kernel::container_of!(raw, MiscNode<T>, raw) };
        let inner = T::open(file, &node.data)?;
        let mappings = inner.mappings().cloned();
        // Accounted to the opener's memory cgroup: user space decides how many files exist.
        let opened = KBox::new(
            Opened {
                file: inner,
                _mappings: mappings,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        if let Some(m) = &opened._mappings {
            // SAFETY: We are in `->open` of `file`. The box we return becomes the file's
            // private data until `release`, and holds a reference on `m`.
            unsafe { m.attach(file) };
        }
        Ok(opened)
    }

    fn mmap(this: &Self, file: &File, vma: &VmaNew) -> Result {
        this.file.mmap(file, vma)
    }

    fn ioctl(this: &Self, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        this.file.ioctl(file, cmd, arg)
    }
}

/// The file operations of a [`MiscNode`]: the kernel crate's for `Opened<T>`, plus `poll`.
struct Fops<T>(PhantomData<T>);

impl<T: NodeFile> Fops<T> {
    const TABLE: bindings::file_operations = {
        let raw = MiscDeviceOptions { name: c"" }.into_raw::<Opened<T>>();
        // SAFETY: `into_raw()` points `fops` at the kernel crate's constant table for
        // `Opened<T>`, a `'static` value that constant evaluation can read.
        let mut fops = unsafe { *raw.fops };
        fops.poll = Some(poll::<T>);
        fops
    };

    const fn table() -> &'static bindings::file_operations {
        &Self::TABLE
    }
}

/// `->poll` of a [`MiscNode`]'s files.
///
/// # Safety
///
/// Called by the VFS only, for a file of a [`MiscNode<T>`] between its `->open` and its
/// `->release`, with a `poll_table` that is valid (or null) for the call.
unsafe extern "C" fn poll<T: NodeFile>(
    file: *mut bindings::file,
    table: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: Between `->open` and `->release` the file's private data is the box that
    // `Opened::<T>::open` returned (the kernel crate's `open` stores it with `into_foreign()`
    // and takes it back only in `release`).
    let this = unsafe { <KBox<Opened<T>> as ForeignOwnable>::borrow((*file).private_data) };
    // SAFETY: The file is live for the call, and `->poll` runs outside any `fdget_pos` region.
    let file = unsafe { File::from_raw_file(file) };
    // SAFETY: The table is valid or null for the call (function safety requirement).
    let table = unsafe { PollTable::from_raw(table) };
    this.file.poll(file, table)
}

/// A registered misc device whose files are `T`s that reach `T::Data`.
///
/// # Invariants
///
/// `raw` is a `struct miscdevice` registered with `misc_register()` and [`Fops::<T>`]'s table
/// until `drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscNode<T: NodeFile> {
    #[pin]
    raw: Opaque<bindings::miscdevice>,
    data: T::Data,
}

impl<T: NodeFile> MiscNode<T> {
    /// Registers a misc device named `name` whose files are `T`s that receive `data`.
    pub(crate) fn new(name: &'static CStr, data: T::Data) -> impl PinInit<Self, Error> {
        // `data` is written before the device is registered: an `open` may arrive as soon as
        // `misc_register()` returns.
        try_pin_init!(Self {
            data,
            raw <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut misc = MiscDeviceOptions { name }.into_raw::<Opened<T>>();
                misc.fops = Fops::<T>::table();
                // SAFETY: The initialiser may write to `slot`.
                unsafe { slot.write(misc) };
                // SAFETY: `slot` holds a complete `struct miscdevice`, pinned, which `drop`
                // deregisters before its memory goes. INVARIANT: registered with our table.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
        })
    }

    /// The data.
    pub(crate) fn data(&self) -> &T::Data {
        &self.data
    }
}

#[pinned_drop]
impl<T: NodeFile> PinnedDrop for MiscNode<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `raw` is registered (type invariant); once this returns no `open` can start
        // or is in progress, so `data` may go (it is dropped after this).
        unsafe { bindings::misc_deregister(self.raw.get()) };
    }
}

// SAFETY: The `struct miscdevice` is only touched by `misc_register()`/`misc_deregister()`,
// which may run on any thread, and by the misc core under its own lock; `T::Data` is `Send`.
unsafe impl<T: NodeFile> Send for MiscNode<T> {}
// SAFETY: `&self` gives access to `T::Data`, which is `Sync`, and nothing else.
unsafe impl<T: NodeFile> Sync for MiscNode<T> {}
