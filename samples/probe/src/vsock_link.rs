//! Messages over vsock (`AF_VSOCK` stream sockets) between sibling VMs: the transport users
//! would pick instead of shared memory when both VMs have a virtio-vsock device whose host
//! backend forwards between them (`vhost-device-vsock` with QEMU's `vhost-user-vsock-pci`).
//! The same length-prefixed frames as TCP ([`StreamLink`]), written in chunks of at most
//! [`MAX_WRITE`] bytes (see there).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use crate::link::StreamLink;

/// The most one `write` hands the kernel. The guest's vsock driver sends what one `write`
/// gives it as packets of up to 64 KiB, and `vhost-device-vsock` (0.3.0) forwards a
/// sibling's packet whole into one receive buffer of the peer, 4 KiB in a Linux guest with
/// the packet's header inside, truncating the rest: with 4 KiB messages the stream lost
/// bytes (the peer read a length prefix where a message's tag belonged). Writes of at most
/// 4 KiB less a header's worth make packets that always fit.
pub const MAX_WRITE: usize = 4096 - 64;

/// A writer that hands its inner writer at most [`MAX_WRITE`] bytes a call (the frame
/// writer loops over short writes).
pub struct Chunked<W>(W);

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(&buf[..buf.len().min(MAX_WRITE)])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

pub type VsockLink = StreamLink<VsockStream, Chunked<VsockStream>>;

fn vsock_link(stream: VsockStream, timeout: Duration) -> Result<VsockLink> {
    // A peer that stops answering is an error after the timeout, never a hang.
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let reader = stream.try_clone()?;
    Ok(StreamLink::new(reader, Chunked(stream)))
}

/// Connects to port `port` of the VM with context id `cid`, retrying until `timeout`: the
/// peer VM boots alongside this one and may not listen yet. (Without a host-side vsock
/// transport in the guest, the kernel sends a connection to any context id through the
/// guest's virtio-vsock device, whose backend forwards it to the sibling.)
pub fn vsock_connect(cid: u32, port: u32, timeout: Duration) -> Result<VsockLink> {
    let deadline = Instant::now() + timeout;
    let addr = VsockAddr::new(cid, port);
    let stream = loop {
        match VsockStream::connect(&addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(e)
                    .with_context(|| format!("connecting to vsock {cid}:{port} for {timeout:?}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    vsock_link(stream, timeout)
}

/// Accepts one connection on vsock port `port` (any context id of this VM) within `timeout`.
pub fn vsock_accept(port: u32, timeout: Duration) -> Result<VsockLink> {
    let listener = VsockListener::bind(&VsockAddr::new(VMADDR_CID_ANY, port))
        .with_context(|| format!("listening on vsock port {port}"))?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("nobody connected on vsock port {port} within {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("accepting on vsock"),
        }
    };
    stream.set_nonblocking(false)?;
    vsock_link(stream, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every write reaches the inner writer in chunks of at most `MAX_WRITE`, in order.
    #[test]
    fn writes_are_cut_into_chunks_that_fit_a_receive_buffer() {
        let mut w = Chunked(Vec::new());
        let data: Vec<u8> = (0..3 * MAX_WRITE + 5).map(|i| i as u8).collect();
        assert_eq!(w.write(&data).unwrap(), MAX_WRITE);
        w.write_all(&data).unwrap();
        assert_eq!(&w.0[..MAX_WRITE], &data[..MAX_WRITE]);
        assert_eq!(&w.0[MAX_WRITE..], &data[..]);
    }
}
