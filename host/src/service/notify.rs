//! Telling systemd about `serve`, as `sd_notify(3)` does: one datagram to `$NOTIFY_SOCKET`
//! (a path, or `@name` for an abstract address) per message. `READY=1` once every socket
//! listens (`Type=notify`); `FDSTORE=1` with each segment (`SCM_RIGHTS`) for systemd's file
//! descriptor store (`FileDescriptorStoreMax=`), which hands them back to the next start
//! (`store`). Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use rustix::net::{
    sendmsg_addr, socket_with, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};

/// `$NOTIFY_SOCKET`, if systemd set it.
pub fn socket() -> Option<String> {
    std::env::var_os("NOTIFY_SOCKET").map(|t| t.to_string_lossy().into_owned())
}

/// Sends `msg`, and `fd` with it if any, to notify socket `target`.
pub fn send(target: &str, msg: &str, fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddrUnix::new_abstract_name(name.as_bytes()),
        None => SocketAddrUnix::new(target),
    }
    .with_context(|| format!("NOTIFY_SOCKET={target}"))?;
    let sock = socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("notify socket")?;
    let fds;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if let Some(fd) = fd {
        fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    sendmsg_addr(
        &sock,
        &addr,
        &[IoSlice::new(msg.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )
    .with_context(|| format!("telling systemd (NOTIFY_SOCKET={target}) {msg:?}"))?;
    Ok(())
}

/// Sends `READY=1` if systemd asked for it.
pub fn ready() -> Result<()> {
    match socket() {
        Some(target) => send(&target, "READY=1", None),
        None => Ok(()),
    }
}

/// Puts `fd` in systemd's fd store as `name` (letters, digits, `-`, `_`: a valid `FDNAME`).
pub fn store(target: &str, name: &str, fd: &impl AsFd) -> Result<()> {
    send(
        target,
        &format!("FDSTORE=1\nFDNAME={name}"),
        Some(fd.as_fd()),
    )
}

/// Takes `name` out of systemd's fd store.
pub fn unstore(target: &str, name: &str) -> Result<()> {
    send(target, &format!("FDSTOREREMOVE=1\nFDNAME={name}"), None)
}
