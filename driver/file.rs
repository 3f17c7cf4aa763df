// SPDX-License-Identifier: GPL-2.0

//! An open `/dev/sivshmN`: `mmap` of the shared memory, the ioctls and `poll`.
//!
//! There is no `read`: the eventfds bound with `SIVSHM_IOCTL_BIND_EVENTFD` are the one way to
//! wait for an interrupt. `poll` of the node reports only the device's removal (see
//! `Documentation/uapi.rst`).

use core::mem::size_of;

use kernel::{
    fs::{file, File},
    mm::virt::VmaNew,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        poll::PollTable,
        Arc,
    },
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    abstractions::{
        eventfd::EventFd,
        io_mmap::IoMmap,
        misc_node::{MiscNode, NodeFile},
    },
    driver::{device::Shared, interrupts::FileId, uapi},
};

/// The misc device of a bound device, whose `open` finds the device's state.
pub(crate) type Node = MiscNode<OpenDevice>;

/// The next [`FileId`].
static NEXT_FILE_ID: Atomic<u64> = Atomic::new(1);

/// The private data of an open file.
pub(crate) struct OpenDevice {
    shared: Arc<Shared>,
    id: FileId,
    /// Opened for writing: may ring doorbells and bind eventfds.
    writable: bool,
}

impl Drop for OpenDevice {
    fn drop(&mut self) {
        self.shared.interrupts().release_owner(self.id);
    }
}

impl OpenDevice {
    /// `EBADF` for a file not opened for writing, as `write()` would answer.
    fn require_writable(&self) -> Result {
        if self.writable {
            Ok(())
        } else {
            Err(EBADF)
        }
    }

    fn get_info(&self, arg: usize) -> Result<isize> {
        self.shared.check_alive()?;
        let ptr = UserPtr::from_addr(arg);
        let argsz: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
        if argsz < uapi::INFO_ARGSZ_V1 {
            return Err(EINVAL);
        }
        let mut info = self.shared.info();
        info.argsz = size_of::<uapi::Info>() as u32;
        // An older caller gets the prefix it knows; a newer one learns our size from `argsz`.
        let len = core::cmp::min(argsz as usize, size_of::<uapi::Info>());
        UserSlice::new(ptr, len)
            .writer()
            .write_slice(&info.as_bytes()[..len])?;
        Ok(0)
    }

    fn ring(&self, arg: usize) -> Result<isize> {
        self.require_writable()?;
        self.shared.check_alive()?;
        let r: uapi::Ring = read_arg(arg)?;
        if r.flags != 0 || r.reserved != 0 {
            return Err(EINVAL);
        }
        self.shared.ring(r.peer_id, r.vector)?;
        Ok(0)
    }

    fn bind_eventfd(&self, arg: usize) -> Result<isize> {
        self.require_writable()?;
        self.shared.check_alive()?;
        let b: uapi::Eventfd = read_arg(arg)?;
        if b.flags != 0 || b.reserved != 0 {
            return Err(EINVAL);
        }
        let vectors = self.shared.nr_vectors();
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
        self.shared.interrupts().bind(vector, eventfd, self.id)?;
        Ok(0)
    }
}

/// Copies an ioctl's fixed-size argument from user space.
fn read_arg<T: FromBytes + IntoBytes>(arg: usize) -> Result<T> {
    let mut value = T::new_zeroed();
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .reader()
        .read_slice(value.as_mut_bytes())?;
    Ok(value)
}

impl NodeFile for OpenDevice {
    type Data = Arc<Shared>;

    fn open(file: &File, shared: &Arc<Shared>) -> Result<Self> {
        shared.check_alive()?;
        let writable = file.flags() & file::flags::O_ACCMODE != file::flags::O_RDONLY;
        let id = FileId(NEXT_FILE_ID.fetch_add(1, Relaxed));
        Ok(OpenDevice {
            shared: shared.clone(),
            id,
            writable,
        })
    }

    fn mappings(&self) -> Option<&Arc<IoMmap>> {
        Some(self.shared.mappings())
    }

    fn mmap(&self, _file: &File, vma: &VmaNew) -> Result {
        self.shared.mappings().mmap(vma)
    }

    fn ioctl(&self, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            uapi::IOCTL_GET_INFO => self.get_info(arg),
            uapi::IOCTL_RING => self.ring(arg),
            uapi::IOCTL_BIND_EVENTFD => self.bind_eventfd(arg),
            // Also after unbind: an unknown number is unknown whatever the device's state.
            _ => Err(ENOTTY),
        }
    }

    fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        self.shared.poll(file, table)
    }
}
