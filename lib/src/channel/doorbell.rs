//! How a channel wakes its peer, and asks whether its device is still there.

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

/// Within one host or one VM (tests, in-process peers): the peer waits on this eventfd. An
/// id the driver refuses (above `0xffff`, `EINVAL`) is refused here too, so that tests meet
/// what a device answers.
impl Doorbell for EventFd {
    fn ring(&self, peer_id: u32) -> Result<()> {
        if peer_id > 0xffff {
            return Err(rustix::io::Errno::INVAL);
        }
        self.signal(1)
    }
}

/// Whether the device under a channel's memory is still there.
///
/// A removed device's memory does not fault: the driver puts one page of its own under every
/// page of the mapping (see [`crate::Mapping`]), which reads as garbage. So the channel asks
/// this whenever something it read fails a check, a wait wakes with nothing to show, or the
/// peer looks absent, and answers [`super::Error::DeviceGone`] instead of "the peer
/// corrupted the channel" when the device is gone.
pub trait Presence: Send + Sync {
    /// True once the device was removed.
    fn gone(&self) -> bool;
}

/// A sivshm device is gone when `GET_INFO` answers `ENODEV` ([`Device::is_gone`]).
impl Presence for Device {
    fn gone(&self) -> bool {
        self.is_gone()
    }
}
