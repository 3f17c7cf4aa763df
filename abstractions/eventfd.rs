// SPDX-License-Identifier: GPL-2.0

//! A reference on an eventfd context: the kernel object behind an eventfd file descriptor, which
//! a driver signals to tell user space that something happened (as KVM's irqfd and VFIO's
//! interrupt triggers do). User space waits on its own descriptor with `read`, `poll` or `epoll`.
//!
//! C header: [`include/linux/eventfd.h`](srctree/include/linux/eventfd.h)

use core::ptr::NonNull;

use kernel::{bindings, error::from_err_ptr, prelude::*};

/// A reference on an eventfd context.
///
/// # Invariants
///
/// `ctx` is a valid eventfd context on which this value holds one reference.
pub(crate) struct EventFd {
    ctx: NonNull<bindings::eventfd_ctx>,
}

// SAFETY: An eventfd context is reference counted and may be signalled and put from any thread
// and context: `eventfd_signal_mask()` takes the context's own IRQ-safe lock.
unsafe impl Send for EventFd {}
// SAFETY: The only `&self` operation, `signal`, may run concurrently on several CPUs: the eventfd
// serialises it internally.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// Takes a reference on the eventfd behind file descriptor `fd` of the calling process:
    /// `EBADF` if `fd` is not open, `EINVAL` if it is not an eventfd.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: Any integer may be passed: `eventfd_ctx_fdget()` looks it up in the current
        // task's file table and returns an `ERR_PTR` if it is not an open eventfd.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fdget(fd) })?;
        // INVARIANT: On success `eventfd_ctx_fdget()` returns a context with a reference taken
        // for the caller, which `Drop` gives back.
        Ok(Self {
            ctx: NonNull::new(ctx).ok_or(EINVAL)?,
        })
    }

    /// Adds one to the counter and wakes its waiters. Callable in hard-IRQ context.
    pub(crate) fn signal(&self) {
        // SAFETY: By the type invariant `ctx` is a valid context; a mask of 0 adds no poll bits
        // to the `EPOLLIN` wake-up.
        unsafe { bindings::eventfd_signal_mask(self.ctx.as_ptr(), 0) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant this value holds one reference, given back exactly once
        // here. Putting the last reference only frees memory, so this may run under a spinlock.
        unsafe { bindings::eventfd_ctx_put(self.ctx.as_ptr()) };
    }
}
