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

/// What one queued message costs a unix socket's send buffer: its 8 bytes live in an skb of
/// their own (a message with an fd is never merged with another), whose truesize on x86-64 is
/// well under this, plus the attached file reference. Generous on purpose: too small a buffer
/// is an error below, too large costs nothing until used.
const BYTES_PER_QUEUED_MESSAGE: usize = 2048;

/// Writes `msgs` into a new socket pair and returns (our end, QEMU's end). Keep our end open
/// while the VM runs: QEMU treats a closed server as a disconnect.
///
/// The whole stream is queued before QEMU exists, so nobody reads while we write: the send
/// buffer is sized to the stream first, and every send is non-blocking, so that a stream that
/// still does not fit is a clear error rather than a hang.
pub fn prefilled_socket(msgs: &[Message<'_>]) -> Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    let want = msgs.len().saturating_mul(BYTES_PER_QUEUED_MESSAGE);
    if want > rustix::net::sockopt::socket_send_buffer_size(&ours).unwrap_or(0) {
        // Beyond net.core.wmem_max only with CAP_NET_ADMIN; try that first, then the capped
        // size. What is left over is caught by the non-blocking sends.
        if rustix::net::sockopt::set_socket_send_buffer_size_force(&ours, want).is_err() {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&ours, want);
        }
    }
    queue_stream(&ours, msgs)?;
    Ok((ours, theirs))
}

/// Sends every message without blocking; a full buffer is an error that says what did not fit.
fn queue_stream(sock: &OwnedFd, msgs: &[Message<'_>]) -> Result<()> {
    for (i, m) in msgs.iter().enumerate() {
        match send_message(sock, m) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::AGAIN => bail!(
                "the ivshmem setup stream of {} messages does not fit a socket buffer of {} \
                 bytes (it filled after {i} messages): raise net.core.wmem_max, run as root, \
                 or use fewer peers or vectors",
                msgs.len(),
                rustix::net::sockopt::socket_send_buffer_size(sock).unwrap_or(0)
            ),
            Err(e) => return Err(e).context("sendmsg to the ivshmem chardev socket"),
        }
    }
    Ok(())
}

/// Sends one message without blocking (`EAGAIN` when the socket is full).
pub fn send_message(sock: &OwnedFd, m: &Message<'_>) -> rustix::io::Result<()> {
    let bytes = m.value.to_le_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = m.fd {
        fds = [fd];
        // The buffer is sized for exactly one fd, so this cannot fail.
        let pushed = control.push(SendAncillaryMessage::ScmRights(&fds));
        debug_assert!(pushed);
    }
    // One fd per message, each on its own 8 bytes: a unix stream socket never merges data
    // carrying different control messages into one read, so QEMU gets each fd with its value.
    let sent = sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    // A stream socket takes 8 bytes whole or not at all once there is room for the skb.
    if sent != bytes.len() {
        return Err(rustix::io::Errno::AGAIN);
    }
    Ok(())
}

/// Reads one message the way QEMU does: 8 bytes and at most one fd. A short read (the end of
/// the stream) is `EPIPE`, more than one fd `EPROTO`.
pub fn recv_message(sock: &OwnedFd) -> rustix::io::Result<(i64, Option<OwnedFd>)> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = [0u8; 8];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let r = recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fd = None;
    let mut extra = false;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            fd = fds.next();
            extra |= fds.next().is_some();
        }
    }
    if r.bytes != 8 {
        return Err(rustix::io::Errno::PIPE);
    }
    if extra {
        return Err(rustix::io::Errno::PROTO);
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

    /// The stream of a VM with `peers` peers at `vectors` vectors each, read back in full.
    fn roundtrip(peers: u16, vectors: u16) -> Result<usize> {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(0, vectors).unwrap();
        let others: Vec<_> = (1..=peers)
            .map(|id| PeerVectors::new(id, vectors).unwrap())
            .collect();
        let refs: Vec<_> = others.iter().collect();
        let msgs = setup_messages(&own, shm.as_fd(), &refs).unwrap();
        let (_ours, theirs) = prefilled_socket(&msgs)?;
        for (i, m) in msgs.iter().enumerate() {
            let (v, fd) = recv(&theirs);
            assert_eq!(v, m.value, "message {i}");
            assert_eq!(fd.is_some(), m.fd.is_some(), "message {i}");
        }
        Ok(msgs.len())
    }

    #[test]
    fn a_large_stream_is_queued_whole_without_a_reader() {
        // 4 peers at 64 vectors (and the own 64): the case that used to hang.
        let run = std::thread::spawn(|| roundtrip(4, 64));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !run.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "prefilled_socket hangs"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(run.join().unwrap().unwrap(), 3 + 5 * 64);
    }

    #[test]
    fn a_stream_that_does_not_fit_is_an_error_not_a_hang() {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(0, 64).unwrap();
        let peer = PeerVectors::new(1, 64).unwrap();
        let msgs = setup_messages(&own, shm.as_fd(), &[&peer]).unwrap();
        let (ours, _theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        // The smallest buffer the kernel allows holds a handful of messages, not 131.
        rustix::net::sockopt::set_socket_send_buffer_size(&ours, 1).unwrap();
        let err = std::thread::scope(|scope| {
            let run = scope.spawn(|| queue_stream(&ours, &msgs).map_err(|e| format!("{e:#}")));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !run.is_finished() {
                assert!(std::time::Instant::now() < deadline, "queue_stream hangs");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            run.join().unwrap().expect_err("131 messages cannot fit")
        });
        assert!(
            err.contains("131 messages does not fit"),
            "unclear error: {err}"
        );
    }

    #[test]
    fn own_id_among_peers_is_rejected() {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(2, 1).unwrap();
        let dup = PeerVectors::new(2, 1).unwrap();
        assert!(setup_messages(&own, shm.as_fd(), &[&dup]).is_err());
    }
}
