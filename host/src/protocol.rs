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
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

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
        let own = PeerVectors::new(1, 3).unwrap();
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

    /// Runs `f` on a thread of its own; a call that has not returned within `secs` fails the
    /// test instead of hanging it.
    fn within<T: Send + 'static>(
        secs: u64,
        what: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("{what} hangs (no return within {secs} s)"))
    }

    /// The test holds both ends of every fd of the largest streams at once.
    fn enough_fds() {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut r = getrlimit(Resource::Nofile);
        if r.current < r.maximum {
            r.current = r.maximum;
            let _ = setrlimit(Resource::Nofile, r);
        }
    }

    /// The stream of a VM with `peers` peers at `vectors` vectors each, prefilled with no
    /// reader (`cap` as in `prefill`), then read back in full the way QEMU does: every value,
    /// every fd where one belongs, and the fds are the peers' own eventfds.
    fn roundtrip(peers: usize, vectors: u16, cap: Option<usize>) -> Result<usize> {
        enough_fds();
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(0, vectors).unwrap();
        let others: Vec<_> = (1..=peers as u16)
            .map(|id| PeerVectors::new(id, vectors).unwrap())
            .collect();
        let refs: Vec<_> = others.iter().collect();
        let msgs = setup_messages(&own, shm.as_fd(), &refs).unwrap();
        let (_ours, theirs) = prefill(&msgs, cap)?;
        // Nothing more than the stream: the next read would block.
        rustix::fs::fcntl_setfl(&theirs, rustix::fs::OFlags::NONBLOCK).unwrap();
        for (i, m) in msgs.iter().enumerate() {
            let (v, fd) = recv(&theirs);
            assert_eq!(v, m.value, "message {i}");
            assert_eq!(fd.is_some(), m.fd.is_some(), "message {i}");
            // An fd received must be the very object sent: the memfd (same inode), or for
            // vector k of peer p, p's eventfd of vector k. Every eventfd shares one anonymous
            // inode, so for those a count written to the received fd must be read back from
            // the one sent.
            if let (Some(fd), Some(sent)) = (fd, m.fd) {
                let want = rustix::fs::fstat(sent).unwrap();
                let got = rustix::fs::fstat(&fd).unwrap();
                assert_eq!(
                    (got.st_dev, got.st_ino),
                    (want.st_dev, want.st_ino),
                    "message {i}"
                );
                let link = std::fs::read_link(format!("/proc/self/fd/{}", sent.as_raw_fd()));
                if link.is_ok_and(|l| l.to_string_lossy().contains("[eventfd]")) {
                    let count = i as u64 + 1;
                    rustix::io::write(&fd, &count.to_ne_bytes()).unwrap();
                    let mut back = [0u8; 8];
                    rustix::io::read(sent, &mut back).unwrap();
                    assert_eq!(
                        u64::from_ne_bytes(back),
                        count,
                        "message {i}: another eventfd"
                    );
                }
            }
        }
        assert_eq!(
            recv_message(&theirs).unwrap_err(),
            rustix::io::Errno::AGAIN,
            "more than the stream was queued"
        );
        Ok(msgs.len())
    }

    #[test]
    fn the_running_kernel_charges_a_message_within_budget() {
        // What fits a known buffer says what one queued message costs.
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let (ours, _theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&ours, 64 << 10).unwrap();
        let buffer = rustix::net::sockopt::socket_send_buffer_size(&ours).unwrap();
        let m = Message {
            value: 1,
            fd: Some(shm.as_fd()),
        };
        let mut fit = 0usize;
        while send_message(&ours, &m).is_ok() {
            fit += 1;
            assert!(fit < 100_000, "the buffer never fills");
        }
        // A send is taken while the charge is below the buffer: (fit - 1) messages cost less.
        let per_message = buffer / (fit - 1);
        eprintln!("{fit} messages fit a send buffer of {buffer} bytes: {per_message} bytes each");
        assert!(
            per_message <= MESSAGE_BUDGET,
            "a queued message costs about {per_message} bytes here, over the budget of \
             {MESSAGE_BUDGET}: raise MESSAGE_BUDGET"
        );
    }

    #[test]
    fn the_largest_stream_is_queued_whole_without_a_reader() {
        // MAX_PEERS peers at MAX_VECTORS vectors, and the own vectors.
        let n = within(60, "prefilled_socket", || {
            roundtrip(MAX_PEERS, MAX_VECTORS, None)
        });
        assert_eq!(n.unwrap(), 3 + (MAX_PEERS + 1) * usize::from(MAX_VECTORS));
    }

    #[test]
    fn streams_that_used_to_hang_are_queued_whole() {
        // 4 peers at 64 vectors overflowed the default buffer (278 messages) and hung.
        for (peers, vectors) in [(4, 64), (5, 64), (16, 64), (1, 1), (0, 64)] {
            let n = within(60, "prefilled_socket", move || {
                roundtrip(peers, vectors, None)
            });
            assert_eq!(n.unwrap(), 3 + (peers + 1) * usize::from(vectors));
        }
    }

    /// A stock kernel's net.core.wmem_max, all an unprivileged user can ask for.
    const STOCK_WMEM_MAX: usize = 212_992;

    #[test]
    fn an_unprivileged_user_queues_4_peers_at_64_vectors() {
        let n = within(60, "prefill", || roundtrip(4, 64, Some(STOCK_WMEM_MAX)));
        assert_eq!(n.unwrap(), 3 + 5 * 64);
    }

    #[test]
    fn a_stream_that_does_not_fit_is_an_error_not_a_hang() {
        // The largest stream, as a user who cannot raise the buffer beyond a stock kernel's.
        let err = within(60, "prefill", || {
            roundtrip(MAX_PEERS, MAX_VECTORS, Some(STOCK_WMEM_MAX)).map_err(|e| format!("{e:#}"))
        })
        .expect_err("2115 messages cannot fit 425984 bytes");
        eprintln!("{err}");
        assert!(
            err.contains("stream of 2115 messages (16920 bytes, 2113 fds) does not fit"),
            "unclear error: {err}"
        );
        assert!(err.contains("wmem_max"), "no way out named: {err}");
    }

    #[test]
    fn streams_beyond_the_limits_are_refused() {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(0, 1).unwrap();
        let many: Vec<_> = (1..=MAX_PEERS as u16 + 1)
            .map(|id| PeerVectors::new(id, 1).unwrap())
            .collect();
        let refs: Vec<_> = many.iter().collect();
        let err = setup_messages(&own, shm.as_fd(), &refs).unwrap_err();
        assert!(err.to_string().contains("at most 32 peers"), "{err}");
        assert!(setup_messages(&own, shm.as_fd(), &refs[..MAX_PEERS]).is_ok());
        let wide = PeerVectors::new(0, MAX_VECTORS + 1).unwrap();
        assert!(setup_messages(&wide, shm.as_fd(), &[]).is_err());
        let none = PeerVectors::new(0, 0).unwrap();
        assert!(setup_messages(&none, shm.as_fd(), &[]).is_err());
        // Every peer has the device's vector count, and each id comes once.
        let two = PeerVectors::new(1, 2).unwrap();
        assert!(setup_messages(&own, shm.as_fd(), &[&two]).is_err());
        let one = PeerVectors::new(1, 1).unwrap();
        let again = PeerVectors::new(1, 1).unwrap();
        assert!(setup_messages(&own, shm.as_fd(), &[&one, &again]).is_err());
    }

    #[test]
    fn own_id_among_peers_is_rejected() {
        let shm = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let own = PeerVectors::new(2, 1).unwrap();
        let dup = PeerVectors::new(2, 1).unwrap();
        assert!(setup_messages(&own, shm.as_fd(), &[&dup]).is_err());
    }
}
