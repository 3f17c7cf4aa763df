//! A doorbell channel between two VMs: one segment both map, and for each side the
//! eventfds that interrupt it, handed to the other side as its peer's. Nothing else is
//! wired: neither side can ring any VM outside the channel.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::Result;

use sivshm_host::pci::PciSlot;
use sivshm_host::protocol::{prefilled_socket, setup_messages, PeerVectors};

use crate::qemu::Device;

/// The two ends, ready to attach, and what must stay open while the VMs run.
pub struct Channel {
    pub a: Device,
    pub b: Device,
    /// Our ends of the chardev sockets: QEMU sees a closed one as a disconnected server.
    pub _keep: Vec<OwnedFd>,
}

/// Wires `segment` (already sized) between peers `a_id` and `b_id` with `vectors` each; the
/// devices go to PCI slots `a_slot` and `b_slot` of their VMs.
pub fn channel(
    segment: &File,
    (a_id, a_slot): (u16, PciSlot),
    (b_id, b_slot): (u16, PciSlot),
    vectors: u16,
) -> Result<Channel> {
    let a = PeerVectors::new(a_id, vectors)?;
    let b = PeerVectors::new(b_id, vectors)?;
    let (a_keep, a_chardev) = prefilled_socket(&setup_messages(&a, segment.as_fd(), &[&b])?)?;
    let (b_keep, b_chardev) = prefilled_socket(&setup_messages(&b, segment.as_fd(), &[&a])?)?;
    // The eventfds now live in the queued messages (and, once they start, in the QEMUs).
    Ok(Channel {
        a: Device::Doorbell {
            slot: a_slot,
            chardev: a_chardev,
            vectors,
        },
        b: Device::Doorbell {
            slot: b_slot,
            chardev: b_chardev,
            vectors,
        },
        _keep: vec![a_keep, b_keep],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sivshm_host::protocol::recv_message;

    /// The (value, has fd) messages queued for a device.
    fn stream(d: &Device) -> Vec<(i64, bool)> {
        let Device::Doorbell { chardev, .. } = d else {
            panic!("not a doorbell device")
        };
        rustix::fs::fcntl_setfl(chardev, rustix::fs::OFlags::NONBLOCK).unwrap();
        std::iter::from_fn(|| recv_message(chardev).ok())
            .map(|(v, fd)| (v, fd.is_some()))
            .collect()
    }

    #[test]
    fn each_side_gets_only_the_other_sides_eventfds() {
        let seg = tempfile::tempfile().unwrap();
        seg.set_len(1 << 20).unwrap();
        let ch = channel(&seg, (0, PciSlot::root(4)), (7, PciSlot::root(4)), 2).unwrap();
        let a = stream(&ch.a);
        assert_eq!(a[..3], [(0, false), (0, false), (-1, true)], "{a:?}");
        assert_eq!(a[3..], [(7, true), (7, true), (0, true), (0, true)]);
        let b = stream(&ch.b);
        assert_eq!(b[..3], [(0, false), (7, false), (-1, true)], "{b:?}");
        assert_eq!(b[3..], [(0, true), (0, true), (7, true), (7, true)]);
    }
}
