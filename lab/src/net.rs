//! The network baseline: a point-to-point virtio-net link between the manager and each
//! worker, so that the same VMs can move the same data over TCP.
//!
//! A link is a `socketpair(AF_UNIX, SOCK_STREAM)`; each QEMU inherits one end as
//! `-netdev stream,addr.type=fd` and frames every Ethernet frame onto it. No bridge, no tap,
//! no user-mode networking, no socket file: the link exists before either VM starts (so
//! neither has to wait or reconnect for the other) and is gone when both QEMUs and
//! `sivshm-lab` have exited, however they exit.
//!
//! Addresses are fixed by the worker's index `i`: the link is `10.77.i.0/24`, the manager
//! is `.1` (MAC `52:54:00:77:ii:01`), the worker `.2` (`52:54:00:77:ii:02`). guest/init
//! finds each NIC by its MAC and assigns its address before the command runs.
//!
//! The MTU is [`MTU`] on both ends. The stream backend offers the guest no segmentation or
//! checksum offload, so at Ethernet's 1500 bytes a large TCP message is hundreds of frames,
//! each a trip through the emulated device; jumbo frames give TCP its best case here.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};

use crate::qemu::Nic;
use sivshm_host::pci::{BRIDGE_SLOT, FIRST_SLOT};

/// The worker's NIC, below its sivshm device (slot `FIRST_SLOT`).
pub const WORKER_NIC_SLOT: u8 = FIRST_SLOT - 1;
/// The manager's NIC to worker `i` sits at slot `LAST_SLOT - i`, its sivshm devices at
/// `FIRST_SLOT + i`: both fit on bus 0 for this many workers.
pub const MAX_LINKS: usize = (LAST_SLOT - FIRST_SLOT + 1) as usize / 2;
/// Below the PCI bridges' slots: every guest has bridge 0 (`sivshm_host::pci::bridges_for_write_back`).
const LAST_SLOT: u8 = BRIDGE_SLOT - 1;
/// Jumbo frames, within what QEMU's stream backend passes in one frame (`NET_BUFSIZE`,
/// 69632 bytes) and what virtio-net accepts (65535).
pub const MTU: u16 = 65520;

/// The manager's NIC slot for worker `index`.
pub fn manager_nic_slot(index: usize) -> Result<u8> {
    if index >= MAX_LINKS {
        bail!("at most {MAX_LINKS} workers can have a network link to the manager");
    }
    Ok(LAST_SLOT - index as u8)
}

/// The manager's address on worker `index`'s link.
pub fn manager_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, index as u8, 1)
}

/// Worker `index`'s address on its link.
pub fn worker_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, index as u8, 2)
}

fn mac(index: usize, host: u8) -> String {
    format!("52:54:00:77:{:02x}:{host:02x}", index as u8)
}

/// The link between the manager and worker `index`: (the manager's NIC, the worker's NIC).
pub fn link(index: usize) -> Result<(Nic, Nic)> {
    let slot = manager_nic_slot(index)?;
    let (m, w) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((
        Nic {
            slot,
            mac: mac(index, 1),
            addr: format!("{}/24", manager_addr(index)),
            mtu: MTU,
            socket: m,
        },
        Nic {
            slot: WORKER_NIC_SLOT,
            mac: mac(index, 2),
            addr: format!("{}/24", worker_addr(index)),
            mtu: MTU,
            socket: w,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_two_ends_are_connected_and_addressed_on_one_subnet() {
        let (m, w) = link(3).unwrap();
        assert_eq!(m.addr, "10.77.3.1/24");
        assert_eq!(w.addr, "10.77.3.2/24");
        assert_eq!(m.mac, "52:54:00:77:03:01");
        assert_eq!(w.mac, "52:54:00:77:03:02");
        let mut a = UnixStream::from(m.socket);
        let mut b = UnixStream::from(w.socket);
        a.write_all(b"frame").unwrap();
        let mut buf = [0; 5];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"frame");
    }

    #[test]
    fn nic_slots_never_meet_the_managers_sivshm_slots() {
        for i in 0..MAX_LINKS {
            let nic = manager_nic_slot(i).unwrap();
            for j in 0..MAX_LINKS {
                assert_ne!(
                    nic,
                    FIRST_SLOT + j as u8,
                    "worker {i}'s NIC on worker {j}'s device"
                );
            }
            assert_ne!(nic, WORKER_NIC_SLOT);
            assert!(nic < BRIDGE_SLOT, "worker {i}'s NIC on bridge 0's slot");
        }
        assert_eq!(MAX_LINKS, 12);
        assert!(manager_nic_slot(MAX_LINKS).is_err());
    }
}
