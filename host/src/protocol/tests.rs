//! Unit tests of `protocol`.

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
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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
