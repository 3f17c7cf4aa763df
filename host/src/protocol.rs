//! The ivshmem server protocol (QEMU `docs/specs/ivshmem-spec.rst`), written ahead of time.
//!
//! An `ivshmem-doorbell` device learns its shared memory, its own peer id and the peers'
//! eventfds from a chardev. QEMU reads that setup synchronously while realising the device,
//! so with a central server every VM's start waits on the server. Here the whole stream is
//! written into one end of a socket pair *before* QEMU starts; QEMU inherits the other end
//! and finds everything already queued: nothing central sits on the boot path.
//!
//! Every message is a little-endian `i64`, optionally carrying one fd (`SCM_RIGHTS`):
//! the protocol version (0), the VM's own id, `-1` with the shared-memory fd, then for each
//! peer its id once per vector with one eventfd each; the VM's own id comes last.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{bail, Context, Result};
use rustix::event::{eventfd, EventfdFlags};
use rustix::net::{
    sendmsg, socketpair, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
    SocketFlags, SocketType,
};

/// `IVSHMEM_PROTOCOL_VERSION`.
pub const PROTOCOL_VERSION: i64 = 0;

/// The eventfds that ring one peer, one per interrupt vector.
pub struct PeerVectors {
    pub id: u16,
    pub vectors: Vec<OwnedFd>,
}

impl PeerVectors {
    /// Creates `count` fresh eventfds for peer `id`.
    pub fn new(id: u16, count: u16) -> Result<Self> {
        let vectors = (0..count)
            .map(|_| eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK))
            .collect::<rustix::io::Result<Vec<_>>>()
            .context("eventfd")?;
        Ok(Self { id, vectors })
    }
}

/// One message of the stream.
#[derive(Debug)]
pub struct Message<'a> {
    pub value: i64,
    pub fd: Option<BorrowedFd<'a>>,
}

/// The messages a VM with id `own` must receive: `peers` are the other VMs it may ring
/// (their vectors' eventfds) and `own_vectors` the eventfds that interrupt it.
pub fn setup_messages<'a>(
    own: &'a PeerVectors,
    shm: BorrowedFd<'a>,
    peers: &[&'a PeerVectors],
) -> Result<Vec<Message<'a>>> {
    if peers.iter().any(|p| p.id == own.id) {
        bail!("peer id {} is both the VM's own and a peer's", own.id);
    }
    let mut msgs = vec![
        Message {
            value: PROTOCOL_VERSION,
            fd: None,
        },
        Message {
            value: own.id.into(),
            fd: None,
        },
        Message {
            value: -1,
            fd: Some(shm),
        },
    ];
    for p in peers.iter().copied().chain(std::iter::once(own)) {
        for v in &p.vectors {
            msgs.push(Message {
                value: p.id.into(),
                fd: Some(v.as_fd()),
            });
        }
    }
    Ok(msgs)
}

/// Writes `msgs` into a new socket pair and returns (our end, QEMU's end). Keep our end open
/// while the VM runs: QEMU treats a closed server as a disconnect.
pub fn prefilled_socket(msgs: &[Message<'_>]) -> Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    for m in msgs {
        send_message(&ours, m)?;
    }
    Ok((ours, theirs))
}

fn send_message(sock: &OwnedFd, m: &Message<'_>) -> Result<()> {
    let bytes = m.value.to_le_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = m.fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            bail!("no room for SCM_RIGHTS");
        }
    }
    // One fd per message, each on its own 8 bytes: a unix stream socket never merges data
    // carrying different control messages into one read, so QEMU gets each fd with its value.
    let sent = sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .context("sendmsg to the ivshmem chardev socket")?;
    if sent != bytes.len() {
        bail!("short write ({sent} bytes) on the ivshmem chardev socket");
    }
    Ok(())
}

/// Reads one message the way QEMU does: 8 bytes and at most one fd.
#[cfg(test)]
pub fn recv_message(sock: &OwnedFd) -> rustix::io::Result<(i64, Option<OwnedFd>)> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = [0u8; 8];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let r = recvmsg(sock, &mut iov, &mut control, RecvFlags::empty())?;
    assert_eq!(r.bytes, 8, "a message is 8 bytes");
    let mut fd = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            fd = fds.next();
            assert!(fds.next().is_none(), "more than one fd on a message");
        }
    }
    Ok((i64::from_le_bytes(buf), fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &OwnedFd) -> (i64, Option<OwnedFd>) {
        recv_message(sock).unwrap()
    }

    #[test]
    fn stream_is_version_id_shm_peers_then_own_last() {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(3, 2).unwrap();
        let peer = PeerVectors::new(0, 2).unwrap();
        let msgs = setup_messages(&own, shm.as_fd(), &[&peer]).unwrap();
        let (_ours, theirs) = prefilled_socket(&msgs).unwrap();
        let want = [
            (0, false),
            (3, false),
            (-1, true),
            (0, true),
            (0, true),
            (3, true),
            (3, true),
        ];
        for (value, has_fd) in want {
            let (v, fd) = recv(&theirs);
            assert_eq!((v, fd.is_some()), (value, has_fd));
        }
    }

    #[test]
    fn eventfds_arrive_in_order_and_ring_the_right_vector() {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(1, 1).unwrap();
        let peer = PeerVectors::new(0, 3).unwrap();
        let msgs = setup_messages(&own, shm.as_fd(), &[&peer]).unwrap();
        let (_ours, theirs) = prefilled_socket(&msgs).unwrap();
        for _ in 0..3 {
            recv(&theirs);
        }
        // Writing the received fd of vector 2 must wake the host's eventfd of vector 2 only.
        let received: Vec<_> = (0..3).map(|_| recv(&theirs).1.unwrap()).collect();
        rustix::io::write(&received[2], &1u64.to_ne_bytes()).unwrap();
        let mut buf = [0u8; 8];
        assert!(rustix::io::read(&peer.vectors[0], &mut buf).is_err());
        assert!(rustix::io::read(&peer.vectors[1], &mut buf).is_err());
        assert_eq!(rustix::io::read(&peer.vectors[2], &mut buf).unwrap(), 8);
        assert_eq!(u64::from_ne_bytes(buf), 1);
    }

    #[test]
    fn own_id_among_peers_is_rejected() {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(2, 1).unwrap();
        let dup = PeerVectors::new(2, 1).unwrap();
        assert!(setup_messages(&own, shm.as_fd(), &[&dup]).is_err());
    }
}
