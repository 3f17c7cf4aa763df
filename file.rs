// SPDX-License-Identifier: GPL-2.0

//! An open `/dev/sivshmN`: mmap of the shared memory and the ioctls.

use core::mem::size_of;

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::{flags, VmaNew},
    page::PAGE_SHIFT,
    prelude::*,
    sync::Arc,
    transmute::AsBytes,
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    device::Shared,
    raw::{self, FileMapping},
    uapi,
};

/// The private data of an open file.
pub(crate) struct OpenDevice {
    shared: Arc<Shared>,
    mapping: FileMapping,
}

impl OpenDevice {
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    fn get_info(&self, arg: usize) -> Result<isize> {
        let ptr = UserPtr::from_addr(arg);
        let argsz: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
        if argsz < uapi::INFO_ARGSZ_V1 {
            return Err(EINVAL);
        }
        let mut info = self.shared.info()?;
        info.argsz = size_of::<uapi::Info>() as u32;
        // An older caller gets the prefix it knows; a newer one learns our size from `argsz`.
        let len = core::cmp::min(argsz as usize, size_of::<uapi::Info>());
        UserSlice::new(ptr, len)
            .writer()
            .write_slice(&info.as_bytes()[..len])?;
        Ok(0)
    }
}

impl Drop for OpenDevice {
    fn drop(&mut self) {
        self.shared.detach(self.mapping);
    }
}

#[vtable]
impl MiscDevice for OpenDevice {
    type Ptr = KBox<Self>;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let shared = raw::node_of(misc).shared.clone();
        let mapping = FileMapping::of(file);
        shared.attach(mapping)?;
        // From here on, dropping `dev` (also on allocation failure) undoes the attach.
        let dev = OpenDevice { shared, mapping };
        Ok(KBox::new(dev, GFP_KERNEL)?)
    }

    fn mmap(dev: &OpenDevice, _file: &File, vma: &VmaNew) -> Result {
        // A private writable mapping would need copy-on-write of device memory: refuse it.
        if vma.flags() & flags::SHARED == 0 {
            return Err(EINVAL);
        }
        let pages = (vma.end() - vma.start()) >> PAGE_SHIFT;
        dev.shared.check_mmap(raw::vma_pgoff(vma), pages)?;
        raw::make_shm_vma(vma);
        Ok(())
    }

    fn ioctl(dev: &OpenDevice, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            uapi::IOCTL_GET_INFO => dev.get_info(arg),
            _ => Err(ENOTTY),
        }
    }
}
