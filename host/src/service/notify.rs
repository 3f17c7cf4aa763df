//! Telling systemd that `serve` is ready (`Type=notify`): once every socket listens, one
//! datagram `READY=1` to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract address), as
//! `sd_notify(3)` sends it. Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use anyhow::{Context, Result};

/// Sends `READY=1` if systemd asked for it.
pub fn ready() -> Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let target = target.to_string_lossy().into_owned();
    let addr = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(&target),
    }
    .with_context(|| format!("NOTIFY_SOCKET={target}"))?;
    let sock = UnixDatagram::unbound().context("notify socket")?;
    sock.send_to_addr(b"READY=1", &addr)
        .with_context(|| format!("telling systemd (NOTIFY_SOCKET={target}) serve is ready"))?;
    Ok(())
}
