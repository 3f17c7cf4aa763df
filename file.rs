// SPDX-License-Identifier: GPL-2.0

//! An open `/dev/sivshmN`: mmap of the shared memory, the ioctls, and `read()` of interrupt
//! counters.

use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{
    fs::{File, Kiocb},
    iov::IovIterDest,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::{flags, VmaNew},
    new_mutex,
    page::PAGE_SHIFT,
    prelude::*,
    sync::{Arc, Mutex},
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    device::Shared,
    raw::{self, EventFd, FileMapping},
    uapi,
};

/// Identifies the open file that bound an eventfd.
static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(1);

/// What an open file registered with its device; undone when it is dropped, which also
/// covers an `open` that fails after registering.
struct Attachment {
    shared: Arc<Shared>,
    mapping: FileMapping,
    id: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.shared.interrupts().release_owner(self.id);
        self.shared.detach(self.mapping);
    }
}

/// The private data of an open file.
#[pin_data]
pub(crate) struct OpenDevice {
    attachment: Attachment,
    /// The interrupt counters as of this file's previous `read()`.
    #[pin]
    seen: Mutex<KVec<u64>>,
}

impl OpenDevice {
    pub(crate) fn shared(&self) -> &Shared {
        &self.attachment.shared
    }

    fn get_info(&self, arg: usize) -> Result<isize> {
        let ptr = UserPtr::from_addr(arg);
        let argsz: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
        if argsz < uapi::INFO_ARGSZ_V1 {
            return Err(EINVAL);
        }
        let mut info = self.shared().info()?;
        info.argsz = size_of::<uapi::Info>() as u32;
        // An older caller gets the prefix it knows; a newer one learns our size from `argsz`.
        let len = core::cmp::min(argsz as usize, size_of::<uapi::Info>());
        UserSlice::new(ptr, len)
            .writer()
            .write_slice(&info.as_bytes()[..len])?;
        Ok(0)
    }

    fn ring(&self, arg: usize) -> Result<isize> {
        let r: uapi::Ring = read_arg(arg)?;
        if r.flags != 0 || r.reserved != 0 {
            return Err(EINVAL);
        }
        self.shared().ring(r.peer_id, r.vector)?;
        Ok(0)
    }

    fn bind_eventfd(&self, arg: usize) -> Result<isize> {
        let b: uapi::Eventfd = read_arg(arg)?;
        if b.flags != 0 || b.reserved != 0 {
            return Err(EINVAL);
        }
        let vectors = self.shared().nr_vectors();
        if vectors == 0 {
            return Err(EOPNOTSUPP);
        }
        let vector = b.vector as usize;
        if vector >= vectors {
            return Err(EINVAL);
        }
        let eventfd = match b.fd {
            -1 => None,
            fd => Some(EventFd::from_fd(fd)?),
        };
        self.shared()
            .interrupts()
            .bind(vector, eventfd, self.attachment.id)?;
        Ok(0)
    }
}

/// Copies an ioctl's fixed-size argument from user space.
fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .reader()
        .read()
}

#[vtable]
impl MiscDevice for OpenDevice {
    type Ptr = Pin<KBox<Self>>;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let shared = raw::node_of(misc).shared.clone();
        let mapping = FileMapping::of(file);
        shared.attach(mapping)?;
        let id = NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed);
        // From here on, dropping the attachment (also on a failure below) undoes the attach.
        let attachment = Attachment {
            shared,
            mapping,
            id,
        };
        // A new file's first `read()` reports interrupts from now on.
        let mut seen = KVec::from_elem(0u64, attachment.shared.nr_vectors(), GFP_KERNEL)?;
        attachment.shared.interrupts().counts(&mut seen);
        KBox::try_pin_init(
            try_pin_init!(OpenDevice {
                attachment,
                seen <- new_mutex!(seen),
            }),
            GFP_KERNEL,
        )
    }

    fn mmap(dev: Pin<&OpenDevice>, _file: &File, vma: &VmaNew) -> Result {
        // A private mapping would need copy-on-write of device memory: refuse it. (MAYSHARE,
        // not SHARED: the kernel clears SHARED for a shared mapping of a read-only file.)
        if vma.flags() & flags::MAYSHARE == 0 {
            return Err(EINVAL);
        }
        // Another VM writes this memory: never let it become executable here.
        vma.try_clear_mayexec()?;
        let pages = (vma.end() - vma.start()) >> PAGE_SHIFT;
        dev.shared().check_mmap(raw::vma_pgoff(vma), pages)?;
        raw::make_shm_vma(vma);
        Ok(())
    }

    fn ioctl(dev: Pin<&OpenDevice>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        dev.shared().check_alive()?;
        match cmd {
            uapi::IOCTL_GET_INFO => dev.get_info(arg),
            uapi::IOCTL_RING => dev.ring(arg),
            uapi::IOCTL_BIND_EVENTFD => dev.bind_eventfd(arg),
            _ => Err(ENOTTY),
        }
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let nonblock = raw::kiocb_nonblock(&kiocb);
        let dev = kiocb.file();
        dev.shared().check_alive()?;
        let vectors = dev.shared().nr_vectors();
        if vectors == 0 {
            return Err(EOPNOTSUPP);
        }
        let len = vectors * size_of::<u64>();
        if iov.len() < len {
            return Err(EINVAL);
        }
        let mut snapshot = KVec::from_elem(0u64, vectors, GFP_KERNEL)?;
        let mut now = KVec::from_elem(0u64, vectors, GFP_KERNEL)?;
        loop {
            // Sleep without holding `seen`: another reader of this file must not be stuck
            // behind us in an uninterruptible lock.
            for (snap, seen) in snapshot.iter_mut().zip(dev.seen.lock().iter()) {
                *snap = *seen;
            }
            dev.shared()
                .interrupts()
                .wait_for_change(&snapshot, &mut now, nonblock)?;
            let mut seen = dev.seen.lock();
            // Another reader of this file may have taken these interrupts meanwhile (or even
            // newer ones): then there is nothing for us yet.
            let stale = seen.iter().zip(now.iter()).any(|(seen, now)| seen > now);
            if stale || seen.iter().eq(now.iter()) {
                if nonblock {
                    return Err(EAGAIN);
                }
                continue;
            }
            let mut out = KVec::with_capacity(len, GFP_KERNEL)?;
            for (now, seen) in now.iter().zip(seen.iter()) {
                out.extend_from_slice(&(now - seen).to_ne_bytes(), GFP_KERNEL)?;
            }
            if iov.copy_to_iter(&out) != len {
                // Nothing is consumed: the same counts are reported by the next read.
                return Err(EFAULT);
            }
            for (seen, now) in seen.iter_mut().zip(now.iter()) {
                *seen = *now;
            }
            return Ok(len);
        }
    }
}
