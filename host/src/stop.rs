//! Signals a server waits for, as fds its poll loop reads: stopping on `SIGTERM` and
//! `SIGINT` ([`StopPipe`]: `serve`, and the lab's `ivshmem-server`), reloading on `SIGHUP`
//! ([`SignalPipe::reload`]: `serve`).
//!
//! This is process-wide state, so nothing in this library creates it on its own: a binary
//! that wants it makes a [`SignalPipe`] (its `main` owns it), hands [`SignalPipe::fd`] to the
//! server's poll loop, and dropping the value removes the handlers again.

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Each of its signals makes [`SignalPipe::fd`] readable (one byte per signal), for a poll
/// loop; dropping it removes the handlers again.
pub struct SignalPipe {
    read: std::os::fd::OwnedFd,
    handlers: Vec<signal_hook::SigId>,
}

/// `SIGTERM` and `SIGINT`.
pub type StopPipe = SignalPipe;

impl SignalPipe {
    /// `SIGTERM` and `SIGINT`: stop.
    pub fn new() -> Result<Self> {
        Self::of(&[SIGTERM, SIGINT])
    }

    /// `SIGHUP`: read the configuration again.
    pub fn reload() -> Result<Self> {
        Self::of(&[SIGHUP])
    }

    fn of(signals: &[i32]) -> Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut pipe = SignalPipe {
            read,
            handlers: Vec::new(),
        };
        for &sig in signals {
            pipe.handlers.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        Ok(pipe)
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for h in self.handlers.drain(..) {
            signal_hook::low_level::unregister(h);
        }
    }
}
