//! Waiting for interrupts on an eventfd.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};

use crate::Result;

/// An eventfd bound to a vector by [`crate::Device::bind_eventfd`]: every interrupt on the
/// vector adds 1 to its counter. Non-blocking; put it in your own `poll`/`epoll`/async loop
/// through [`AsFd`], or wait on it here. A wake-up with no new state in the shared memory may
/// mean the device is gone: the next call on the `Device` says so (`ENODEV`).
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// An eventfd bound to nothing yet (for in-process peers and tests).
    pub fn new() -> Result<Self> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(EventFd { fd })
    }

    /// An eventfd the caller made (or one passed from another process), taken over and
    /// made non-blocking (the flag belongs to the open file, so duplicates of it see it too).
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        Ok(EventFd { fd })
    }

    /// Takes and returns the count of interrupts so far, 0 if there was none.
    pub fn take(&self) -> Result<u64> {
        let mut b = [0u8; 8];
        match rustix::io::read(&self.fd, &mut b) {
            Ok(8) => Ok(u64::from_ne_bytes(b)),
            Ok(_) => Err(rustix::io::Errno::IO),
            Err(rustix::io::Errno::AGAIN) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` (forever with `None`) for interrupts and takes their count;
    /// 0 means the time ran out.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<u64> {
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let ready = rustix::io::retry_on_intr(|| poll(&mut fds, ts.as_ref()))?;
        if ready == 0 {
            return Ok(0);
        }
        self.take()
    }

    /// Adds `n` to the counter, as an interrupt would (for tests and for waking a waiter).
    pub fn signal(&self, n: u64) -> Result<()> {
        rustix::io::write(&self.fd, &n.to_ne_bytes()).map(|_| ())
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_times_out_then_sees_signals() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.wait(Some(Duration::from_millis(10))).unwrap(), 0);
        e.signal(3).unwrap();
        assert_eq!(e.wait(Some(Duration::from_secs(1))).unwrap(), 3);
        assert_eq!(e.take().unwrap(), 0);
    }
}
