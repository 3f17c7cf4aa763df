//! The devices' listening sockets: bound, given to the topology's owner and only then opened
//! to connections; a stale socket of a serve that died is replaced, anything else refused.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::net::{
    bind, listen, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::service::owner::Ids;

/// Removes the socket a serve that died left at `path` (holding the lock, whatever socket is
/// there is such); anything else there is an error.
pub(super) fn remove_stale(path: &Path, log: &mut Box<dyn FnMut(String) + Send>) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            log(format!("removed stale socket {}", path.display()));
            Ok(())
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: refusing to replace it",
            path.display()
        ),
        Err(_) => Ok(()),
    }
}

/// A unix socket at `path`, `0660` and owned as `ids` say before it accepts anyone.
pub(super) fn listener(path: &Path, ids: Ids) -> Result<OwnedFd> {
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .context("socket")?;
    let addr = SocketAddrUnix::new(path).with_context(|| format!("{}", path.display()))?;
    bind(&fd, &addr).with_context(|| format!("binding {}", path.display()))?;
    let ready = (|| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .context("chmod 0660")?;
        std::os::unix::fs::chown(path, ids.uid, ids.gid)
            .with_context(|| format!("chown to uid {:?} gid {:?}", ids.uid, ids.gid))?;
        listen(&fd, 16).context("listen")
    })();
    if let Err(e) = ready {
        let _ = std::fs::remove_file(path);
        return Err(e.context(format!("{}", path.display())));
    }
    Ok(fd)
}
