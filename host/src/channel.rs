//! A doorbell channel between two VMs: one segment both map, and for each side the
//! eventfds that interrupt it, handed to the other side as its peer's. Nothing else is
//! wired: neither side can ring any VM outside the channel.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::Result;

use crate::protocol::{prefilled_socket, setup_messages, PeerVectors};
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
    (a_id, a_slot): (u16, u8),
    (b_id, b_slot): (u16, u8),
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
