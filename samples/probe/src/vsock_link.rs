//! Messages over vsock (`AF_VSOCK` stream sockets) between sibling VMs: the transport users
//! would pick instead of shared memory when both VMs have a virtio-vsock device whose host
//! backend forwards between them (`vhost-device-vsock` with QEMU's `vhost-user-vsock-pci`).
//! The same length-prefixed frames as TCP ([`StreamLink`]). Between sibling VMs through
//! `vhost-device-vsock` 0.3.0, streams of 4 KiB messages arrived garbled, with whole writes
//! as with every write cut below the peer's 4 KiB receive buffer (a version of this link
//! did that, to no avail); the benchmark streams vsock below 4 KiB only (`sivshm-lab`'s
//! `bench::VSOCK_MAX_SIZE`).

use std::time::Duration;

use anyhow::{Context, Result};
use vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use crate::link::{accept_within, connect_retrying, StreamLink};

pub type VsockLink = StreamLink<VsockStream, VsockStream>;

fn vsock_link(stream: VsockStream, timeout: Duration) -> Result<VsockLink> {
    // A peer that stops answering is an error after the timeout, never a hang.
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let reader = stream.try_clone()?;
    Ok(StreamLink::new(reader, stream))
}

/// Connects to port `port` of the VM with context id `cid`, retrying until `timeout`: the
/// peer VM boots alongside this one and may not listen yet. (Without a host-side vsock
/// transport in the guest, the kernel sends a connection to any context id through the
/// guest's virtio-vsock device, whose backend forwards it to the sibling.)
pub fn vsock_connect(cid: u32, port: u32, timeout: Duration) -> Result<VsockLink> {
    let addr = VsockAddr::new(cid, port);
    let to = format!("vsock {cid}:{port}");
    let stream = connect_retrying(&to, timeout, || VsockStream::connect(&addr))?;
    vsock_link(stream, timeout)
}

/// Accepts one connection on vsock port `port` (any context id of this VM) within `timeout`.
pub fn vsock_accept(port: u32, timeout: Duration) -> Result<VsockLink> {
    let listener = VsockListener::bind(&VsockAddr::new(VMADDR_CID_ANY, port))
        .with_context(|| format!("listening on vsock port {port}"))?;
    listener.set_nonblocking(true)?;
    let on = format!("vsock port {port}");
    let (stream, _) = accept_within(&on, timeout, || listener.accept())?;
    stream.set_nonblocking(false)?;
    vsock_link(stream, timeout)
}
