//! Stopping a server on `SIGTERM` and `SIGINT` (`serve`, and the lab's `ivshmem-server`),
//! which run until told to stop.
//!
//! This is process-wide state, so nothing in this library creates it on its own: a binary
//! that wants it makes a [`StopPipe`] (its `main` owns it), hands [`StopPipe::fd`] to the
//! server's poll loop, and dropping the value removes the handlers again.

use anyhow::Result;
use signal_hook::consts::{SIGINT, SIGTERM};

/// `SIGTERM` and `SIGINT` make [`StopPipe::fd`] readable, for the server's poll loop;
/// dropping it removes the handlers again.
pub struct StopPipe {
    read: std::os::fd::OwnedFd,
    handlers: Vec<signal_hook::SigId>,
}

impl StopPipe {
    pub fn new() -> Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut pipe = StopPipe {
            read,
            handlers: Vec::new(),
        };
        for sig in [SIGTERM, SIGINT] {
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

impl Drop for StopPipe {
    fn drop(&mut self) {
        for h in self.handlers.drain(..) {
            signal_hook::low_level::unregister(h);
        }
    }
}
