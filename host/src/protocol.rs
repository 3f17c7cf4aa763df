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
//!
//! Nobody reads while the stream is written, so all of it must fit the socket's buffer at
//! once: [`prefilled_socket`] sizes the buffer to the stream and never blocks, so a stream
//! that still does not fit is an error naming its size, never a hang. [`setup_messages`]
//! refuses streams beyond [`MAX_PEERS`] peers and [`MAX_VECTORS`] vectors.

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

/// Interrupt vectors a peer may have: what the driver supports (QEMU allows more).
pub const MAX_VECTORS: u16 = 64;

/// Peers one stream may wire besides the VM itself: as many as the devices on one PCI bus,
/// more than any topology of this tool needs (a channel has one). At 64 vectors that is a
/// stream of 2115 messages and 2113 fds.
pub const MAX_PEERS: usize = 32;

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
            .with_context(|| format!("creating {count} eventfds for peer {id}"))?;
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
/// (their vectors' eventfds), `own` holds the eventfds that interrupt it. Every peer has
/// as many vectors as the VM itself (its device's `vectors`), 1 to [`MAX_VECTORS`], and
/// there are at most [`MAX_PEERS`] peers, each id once.
pub fn setup_messages<'a>(
    own: &'a PeerVectors,
    shm: BorrowedFd<'a>,
    peers: &[&'a PeerVectors],
) -> Result<Vec<Message<'a>>> {
    let vectors = own.vectors.len();
    if vectors == 0 || vectors > usize::from(MAX_VECTORS) {
        bail!("a device has 1 to {MAX_VECTORS} vectors, not {vectors}");
    }
    if peers.len() > MAX_PEERS {
        bail!(
            "a setup stream wires at most {MAX_PEERS} peers, not {}",
            peers.len()
        );
    }
    for (i, p) in peers.iter().enumerate() {
        if p.id == own.id {
            bail!("peer id {} is both the VM's own and a peer's", own.id);
        }
        if peers[..i].iter().any(|q| q.id == p.id) {
            bail!("peer id {} is given twice", p.id);
        }
        // QEMU refuses more eventfds for a peer than its own device has vectors.
        if p.vectors.len() != vectors {
            bail!(
                "peer {} has {} vectors, the device {vectors}",
                p.id,
                p.vectors.len()
            );
        }
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

/// What one queued message may cost the sender's send buffer. An `AF_UNIX` stream socket
/// charges every skb waiting in the *receiver's* queue to the *sender's* `sk_wmem_alloc`, and
/// accepts a send while that is below its `SO_SNDBUF`; each message is an skb of its own (one
/// with an fd is never merged with another). Measured: 768 bytes of truesize per message, fd
/// or not, on Linux 6.18 x86-64 (`the_running_kernel_charges_a_message_within_budget` checks
/// the running kernel). The rest is room for kernels with larger `sk_buff`s.
pub const MESSAGE_BUDGET: usize = 1024;

/// Added to every buffer: room for the kernel's rounding and minimum.
const BUFFER_SLACK: usize = 16 << 10;

/// The send buffer asked for a stream of `messages` messages. (Linux doubles what it is
/// asked for, for its own bookkeeping: more room still.)
pub fn buffer_for(messages: usize) -> usize {
    messages
        .saturating_mul(MESSAGE_BUDGET)
        .saturating_add(BUFFER_SLACK)
}

/// Writes `msgs` into a new socket pair and returns (our end, QEMU's end). Keep our end open
/// while the VM runs: QEMU treats a closed server as a disconnect.
///
/// The whole stream is queued before QEMU exists, so nobody reads while we write: the
/// buffers are sized to the stream first, and every send is non-blocking, so that a stream
/// that still does not fit is a clear error rather than a hang.
pub fn prefilled_socket(msgs: &[Message<'_>]) -> Result<(OwnedFd, OwnedFd)> {
    prefill(msgs, None)
}

/// [`prefilled_socket`]; `unprivileged_cap` (tests) asks for at most that buffer and never
/// forces one, as a user without `CAP_NET_ADMIN` whose `net.core.wmem_max` is the cap.
fn prefill(msgs: &[Message<'_>], unprivileged_cap: Option<usize>) -> Result<(OwnedFd, OwnedFd)> {
    use rustix::net::sockopt;
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    let want = buffer_for(msgs.len());
    // The kernel caps what it is asked for at net.core.wmem_max (rmem_max) unless the caller
    // has CAP_NET_ADMIN and forces it; try that first, then the capped size. What still does
    // not fit is caught by the non-blocking sends below.
    match unprivileged_cap {
        None => {
            if want > sockopt::socket_send_buffer_size(&ours).unwrap_or(0)
                && sockopt::set_socket_send_buffer_size_force(&ours, want).is_err()
            {
                let _ = sockopt::set_socket_send_buffer_size(&ours, want);
            }
            // AF_UNIX stream sockets do not count the receive buffer today; sized all the
            // same, so that nothing depends on that.
            if want > sockopt::socket_recv_buffer_size(&theirs).unwrap_or(0)
                && sockopt::set_socket_recv_buffer_size_force(&theirs, want).is_err()
            {
                let _ = sockopt::set_socket_recv_buffer_size(&theirs, want);
            }
        }
        Some(cap) => {
            sockopt::set_socket_send_buffer_size(&ours, want.min(cap)).context("SO_SNDBUF")?;
            sockopt::set_socket_recv_buffer_size(&theirs, want.min(cap)).context("SO_RCVBUF")?;
        }
    }
    queue_stream(&ours, msgs)?;
    Ok((ours, theirs))
}

/// Sends every message without blocking; a full buffer is an error that says what did not fit.
fn queue_stream(sock: &OwnedFd, msgs: &[Message<'_>]) -> Result<()> {
    let fds = msgs.iter().filter(|m| m.fd.is_some()).count();
    let what = || {
        format!(
            "the ivshmem setup stream of {} messages ({} bytes, {fds} fds)",
            msgs.len(),
            msgs.len() * 8
        )
    };
    for (i, m) in msgs.iter().enumerate() {
        match send_message(sock, m) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::AGAIN => bail!(
                "{} does not fit a socket send buffer of {} bytes (it filled after {i} \
                 messages; {} bytes were asked for, and without CAP_NET_ADMIN Linux caps that \
                 at net.core.wmem_max = {} bytes): \
                 raise net.core.wmem_max, run as root, or use fewer peers or vectors",
                what(),
                rustix::net::sockopt::socket_send_buffer_size(sock).unwrap_or(0),
                buffer_for(msgs.len()),
                std::fs::read_to_string("/proc/sys/net/core/wmem_max")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "?".into())
            ),
            Err(e) if e == rustix::io::Errno::TOOMANYREFS => bail!(
                "{} exceeds the fds this user may have in flight in unix sockets (RLIMIT_NOFILE, \
                 unless CAP_SYS_RESOURCE; it stopped after {i} messages): raise `ulimit -n`, \
                 run as root, or use fewer peers or vectors",
                what()
            ),
            Err(e) => return Err(e).with_context(|| format!("sending message {i} of {}", what())),
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
pub fn recv_message(sock: impl AsFd) -> rustix::io::Result<(i64, Option<OwnedFd>)> {
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
mod tests;
