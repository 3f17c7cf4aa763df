//! How a channel wakes its peer.

use crate::{Device, EventFd, Result};

/// Wakes the peer of a channel. The peer publishes the id to ring it at; what that id may
/// reach is up to the device (under SIVSHM, nobody but the peer).
pub trait Doorbell: Send + Sync {
    fn ring(&self, peer_id: u32) -> Result<()>;
}

/// Rings a vector of the peer through a sivshm device.
pub struct DeviceDoorbell {
    device: Device,
    vector: u32,
}

impl DeviceDoorbell {
    pub fn new(device: &Device, vector: u32) -> Result<Self> {
        Ok(DeviceDoorbell {
            device: device.try_clone()?,
            vector,
        })
    }
}

impl Doorbell for DeviceDoorbell {
    fn ring(&self, peer_id: u32) -> Result<()> {
        self.device.ring(peer_id, self.vector)
    }
}

/// Within one host or one VM (tests, in-process peers): the peer waits on this eventfd.
impl Doorbell for EventFd {
    fn ring(&self, _peer_id: u32) -> Result<()> {
        self.signal(1)
    }
}
