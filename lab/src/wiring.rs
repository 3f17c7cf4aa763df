//! What it costs to wire a manager and N workers, without booting anything: SIVSHM's
//! pre-filled channel streams against the central server's distribution, both measured for
//! real (the server is the one `ivshmem-server` runs, its clients read everything the way
//! QEMU does).

use std::os::fd::OwnedFd;
use std::time::Instant;

use anyhow::{Context, Result};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use sivshm_host::pci::PciSlot;

use crate::ivshmem_server::{Config, Server, PEER_SNDBUF};
use crate::pair::channel;
use sivshm_host::protocol::recv_message;
use sivshm_host::segments;

/// Work done to wire one topology.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// File descriptors created (segments, eventfds, sockets).
    pub fds_created: u64,
    /// Protocol messages sent.
    pub messages: u64,
    /// File descriptors passed along with them.
    pub fds_sent: u64,
}

/// SIVSHM: a segment and a channel per worker, every stream queued before any VM starts.
fn sivshm(workers: usize) -> Result<(Cost, f64)> {
    let start = Instant::now();
    let mut keep = Vec::with_capacity(workers);
    let mut cost = Cost::default();
    for i in 0..workers {
        let seg = segments::create(&format!("w{i}"), 1 << 20)?;
        let ch = channel(&seg, (0, PciSlot::root(4)), (1, PciSlot::root(4)), 1)?;
        // A segment, two eventfds, two socket pairs.
        cost.fds_created += 1 + 2 + 4;
        // Each side: version, id, the segment, the peer's vector, its own vector.
        cost.messages += 2 * 5;
        cost.fds_sent += 2 * 3;
        keep.push((seg, ch));
    }
    let secs = start.elapsed().as_secs_f64();
    drop(keep);
    Ok((cost, secs))
}

/// IVSHMEM: the manager and the workers connect to one server in turn; each reads
/// everything it is sent (and closes the fds, as a client that has used them would hold them).
fn ivshmem(workers: usize) -> Result<(Cost, f64)> {
    let start = Instant::now();
    let mut server = Server::new(
        Config {
            size: 1 << 20,
            vectors: 1,
            peer_sndbuf: PEER_SNDBUF,
        },
        Box::new(|_| {}),
    )?;
    let mut cost = Cost {
        fds_created: 1,
        ..Cost::default()
    };
    let mut clients: Vec<OwnedFd> = Vec::with_capacity(workers + 1);
    for _ in 0..=workers {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .context("socketpair")?;
        // A connection and the newcomer's eventfd.
        cost.fds_created += 2 + 1;
        server.accept(ours);
        clients.push(theirs);
        for c in &clients {
            while let Ok((_, fd)) = recv_message(c) {
                cost.messages += 1;
                cost.fds_sent += u64::from(fd.is_some());
            }
        }
    }
    anyhow::ensure!(
        server.peer_ids().len() == workers + 1,
        "the server dropped peers while wiring {workers} workers"
    );
    let secs = start.elapsed().as_secs_f64();
    drop(clients);
    Ok((cost, secs))
}

/// Prints the table for each worker count.
pub fn bench(counts: &[usize]) -> Result<Vec<String>> {
    // Both sides hold every fd of a topology at once.
    let (soft, hard) = rlimit_nofile();
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        },
    );
    let mut out = vec![
        format!(
            "# wiring a manager and N workers, 1 vector per peer, no VM booted (RLIMIT_NOFILE \
             {soft:?} raised to {hard:?})"
        ),
        "#       N | SIVSHM: time, fds made, messages, fds sent | IVSHMEM server: time, \
         fds made, messages, fds sent | messages IVSHMEM/SIVSHM"
            .into(),
    ];
    for &n in counts {
        let (s, st) = sivshm(n).with_context(|| format!("SIVSHM wiring of {n} workers"))?;
        let (i, it) = ivshmem(n).with_context(|| format!("IVSHMEM wiring of {n} workers"))?;
        out.push(format!(
            "{n:>9} | {:.1} ms, {}, {}, {} | {:.1} ms, {}, {}, {} | {:.1}",
            st * 1e3,
            s.fds_created,
            s.messages,
            s.fds_sent,
            it * 1e3,
            i.fds_created,
            i.messages,
            i.fds_sent,
            i.messages as f64 / s.messages as f64
        ));
    }
    Ok(out)
}

fn rlimit_nofile() -> (Option<u64>, Option<u64>) {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (r.current, r.maximum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_messages_grow_with_the_square_and_sivshms_linearly() {
        let (s4, _) = sivshm(4).unwrap();
        let (s8, _) = sivshm(8).unwrap();
        assert_eq!(s8.messages, 2 * s4.messages);
        let (i4, _) = ivshmem(4).unwrap();
        // 5 peers: each gets 3 setup messages, its own vector, and one per other peer.
        assert_eq!(i4.messages, 5 * 3 + 5 + 5 * 4);
        assert_eq!(i4.fds_sent, 5 + 5 + 5 * 4);
        let (i8, _) = ivshmem(8).unwrap();
        assert_eq!(i8.messages, 9 * 3 + 9 + 9 * 8);
    }
}
