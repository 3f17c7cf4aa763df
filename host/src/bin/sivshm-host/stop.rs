//! The product binary's process-wide state: `SIGTERM` and `SIGINT` for `serve`, which runs
//! until told to stop. The library installs no handler; it takes the read end of this pipe.

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
