//! Where the lab's hot-plugged devices get their setup stream: a socket of its own per
//! device ([`SetupSocket`]), since the lab wires its test guests without `serve`. The QMP
//! side (adding and removing the device) is the host library's `sivshm_host::hotplug`.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use sivshm_host::protocol::{send_message, Message};

/// The chardev id the lab gives a hot-plugged device `name`: the name and a suffix no
/// worker name has.
pub fn chardev_id(name: &str) -> String {
    format!("{name}.setup")
}

/// Where QEMU's chardev of a hot-plugged device connects, and what it is sent there: the
/// device's setup stream, the same on every connection (a channel added again gets the same
/// segment and eventfds).
pub struct SetupSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The connection of the device plugged now; QEMU sees a closed one as a lost server.
    current: Option<OwnedFd>,
}

impl SetupSocket {
    pub fn bind(path: &Path) -> Result<Self> {
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        Ok(SetupSocket {
            listener,
            path: path.to_path_buf(),
            current: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts QEMU's connection (within `timeout`) and queues `msgs` on it.
    pub fn serve(&mut self, msgs: &[Message<'_>], timeout: Duration) -> Result<()> {
        let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
        let t = Timespec::try_from(timeout).context("timeout")?;
        if poll(&mut fds, Some(&t))? == 0 {
            bail!(
                "QEMU did not connect to {} within {} s",
                self.path.display(),
                timeout.as_secs()
            );
        }
        let (conn, _) = self.listener.accept()?;
        let fd: OwnedFd = conn.into();
        // The stream is a few hundred bytes; a fresh socket takes it whole.
        for m in msgs {
            send_message(&fd, m)
                .with_context(|| format!("sending the setup stream on {}", self.path.display()))?;
        }
        self.current = Some(fd);
        Ok(())
    }
}

impl AsFd for SetupSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_setup_socket_queues_the_stream_for_the_connecting_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SetupSocket::bind(&dir.path().join("s.sock")).unwrap();
        let e = s.serve(&[], Duration::from_millis(50)).unwrap_err();
        assert!(e.to_string().contains("did not connect"), "{e}");
        let client = UnixStream::connect(s.path()).unwrap();
        let shm = tempfile::tempfile().unwrap();
        let msgs = [
            Message { value: 0, fd: None },
            Message {
                value: -1,
                fd: Some(shm.as_fd()),
            },
        ];
        s.serve(&msgs, Duration::from_secs(5)).unwrap();
        let c: OwnedFd = client.into();
        let (v0, f0) = sivshm_host::protocol::recv_message(&c).unwrap();
        let (v1, f1) = sivshm_host::protocol::recv_message(&c).unwrap();
        assert_eq!((v0, f0.is_some(), v1, f1.is_some()), (0, false, -1, true));
    }
}
