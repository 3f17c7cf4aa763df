//! A sivshm device modelled in one process, for tests of code that must survive a device's
//! removal (threads standing in for the VMs).
//!
//! A [`Segment`] is the shared memory and the doorbells between its peers, as the host sets
//! them up; each peer reaches it through a [`ModelDevice`] of its own, as each VM has its own
//! device. A model device answers as the driver does:
//!
//! * ringing a peer id above `0xffff` is `EINVAL` (the doorbell register has 16 bits for it);
//!   ringing an id nobody has is dropped, as the host drops it;
//! * after [`ModelDevice::remove`]: every mapping made through it has one page of `0xff`
//!   bytes, shared and writable, at every one of its pages (the driver's stand-in page: a
//!   process reads back what it wrote, and nothing of the segment); ringing and mapping are
//!   `ENODEV`, [`Presence::gone`] is true, and the device's eventfd is signalled once. The
//!   device is marked gone before its mappings change, as the driver answers `ENODEV` before
//!   it takes the memory away.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;

use crate::channel::{Doorbell, Links, Presence};
use crate::{EventFd, Mapping, Result};

/// A page of `0xff` bytes in a memfd: what the driver maps under a removed device's mappings.
pub(crate) fn stand_in_page() -> Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("sivshm-stand-in", rustix::fs::MemfdFlags::CLOEXEC)?;
    let page = rustix::param::page_size();
    rustix::fs::ftruncate(&fd, page as u64)?;
    let ones = vec![0xffu8; page];
    let mut done = 0;
    while done < page {
        done += rustix::io::pwrite(&fd, &ones[done..], done as u64)?;
    }
    Ok(fd)
}

/// Shared memory and the doorbells of the peers that map it.
pub struct Segment {
    memfd: OwnedFd,
    len: usize,
    /// Each peer's eventfd, by peer id.
    peers: Mutex<Vec<(u32, Arc<EventFd>)>>,
}

impl Segment {
    /// `len` bytes of zeroed shared memory.
    pub fn new(len: usize) -> Result<Arc<Segment>> {
        let memfd = rustix::fs::memfd_create("sivshm-segment", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&memfd, len as u64)?;
        Ok(Arc::new(Segment {
            memfd,
            len,
            peers: Mutex::new(Vec::new()),
        }))
    }

    /// The device through which peer `id` reaches this segment.
    pub fn device(self: &Arc<Self>, id: u32) -> Result<Arc<ModelDevice>> {
        let wake = Arc::new(EventFd::new()?);
        self.peers.lock().unwrap().push((id, wake.clone()));
        Ok(Arc::new(ModelDevice {
            segment: self.clone(),
            id,
            wake,
            gone: AtomicBool::new(false),
            page: stand_in_page()?,
            mappings: Mutex::new(Vec::new()),
        }))
    }
}

/// One peer's device on a [`Segment`]: see the module documentation.
pub struct ModelDevice {
    segment: Arc<Segment>,
    id: u32,
    /// Signalled by every ring of this peer, and once at removal.
    wake: Arc<EventFd>,
    gone: AtomicBool,
    page: OwnedFd,
    /// Every mapping made through this device, kept mapped as long as the device lives, so
    /// that a removal never maps over an address that was unmapped and used again meanwhile.
    mappings: Mutex<Vec<Arc<Mapping>>>,
}

impl ModelDevice {
    /// This peer's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The whole segment, mapped shared; `ENODEV` once removed.
    pub fn map(&self) -> Result<Arc<Mapping>> {
        let mut mappings = self.mappings.lock().unwrap();
        if self.gone() {
            return Err(Errno::NODEV);
        }
        let m = Arc::new(Mapping::new(
            self.segment.memfd.as_fd(),
            0,
            self.segment.len,
        )?);
        mappings.push(m.clone());
        Ok(m)
    }

    /// What a channel over this device rings, waits on and asks (as [`Links::on_device`]
    /// gives for a sivshm device).
    pub fn links(self: &Arc<Self>) -> Links {
        Links {
            doorbell: Some(self.clone()),
            wake: Some(self.wake.clone()),
            own_id: Some(self.id),
            presence: Some(self.clone()),
        }
    }

    /// Removes the device, as a hot-unplug or an unbind does (see the module documentation).
    pub fn remove(&self) -> Result<()> {
        let mappings = self.mappings.lock().unwrap();
        if self.gone.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // The driver releases the eventfd bindings: rings no longer reach this peer.
        self.segment
            .peers
            .lock()
            .unwrap()
            .retain(|(_, e)| !Arc::ptr_eq(e, &self.wake));
        for m in mappings.iter() {
            m.alias_every_page_to(self.page.as_fd())?;
        }
        self.wake.signal(1)
    }
}

impl Doorbell for ModelDevice {
    fn ring(&self, peer_id: u32) -> Result<()> {
        if self.gone() {
            return Err(Errno::NODEV);
        }
        if peer_id > 0xffff {
            return Err(Errno::INVAL);
        }
        let peers = self.segment.peers.lock().unwrap();
        match peers.iter().find(|(id, _)| *id == peer_id) {
            Some((_, e)) => e.signal(1),
            None => Ok(()),
        }
    }
}

impl Presence for ModelDevice {
    fn gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}
