//! Surviving the revocation of a shared mapping.
//!
//! When a sivshm device goes away (hot-unplug, the driver unbound) the driver revokes every
//! mapping of its memory: the pages are zapped and the next access raises `SIGBUS`. A manager
//! that serves many workers must not die because one worker's device was removed. So every
//! [`Mapping`](crate::Mapping) registers its address range here, and a `SIGBUS` handler
//! (installed once per process, the first time a mapping is made) that finds the faulting
//! address in a registered range replaces the whole range with private anonymous memory
//! (`mmap(MAP_FIXED)`, atomic for the other threads) and marks it revoked. The faulting access
//! is then repeated by the CPU on that memory and succeeds. The owner of the mapping asks
//! [`Mapping::is_revoked`](crate::Mapping::is_revoked) and reports the device gone; whatever it read from the replacement (zeros)
//! it checks anyway, as it checks everything read from shared memory. Compositors protect
//! themselves from clients that truncate their shared-memory pools the same way.
//!
//! A `SIGBUS` at any other address is not ours: it goes to the handler installed before this
//! one, or, if that was the default (or "ignore"), the default is put back and the handler
//! returns, so that the access faults again and the process ends as it would have without
//! this crate.
//!
//! Everything the handler touches is async-signal-safe: atomics in a fixed table (no lock,
//! no allocation), `mmap`, `sigaction`, and `errno`, which it saves and restores.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use rustix::io::Errno;

/// Mappings one process can have registered at once.
const SLOTS: usize = 4096;

/// A slot's state.
const FREE: u8 = 0;
/// Being filled in or emptied; the handler skips it.
const BUSY: u8 = 1;
/// Registered and shared.
const LIVE: u8 = 2;
/// The handler is replacing the range right now.
const REPLACING: u8 = 3;
/// Revoked: the range is private anonymous memory now.
const REVOKED: u8 = 4;

struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        state: AtomicU8::new(FREE),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
    }
}; SLOTS];

/// The `SIGBUS` action that was installed before ours, set once before ours is installed.
static PREVIOUS: OnceLock<Result<libc::sigaction, Errno>> = OnceLock::new();

/// A registered range. Its owner keeps the range mapped until it calls
/// [`Guard::unregister`], and unmaps it only after that: the handler must never replace
/// memory that someone else has mapped at the same address since.
pub(crate) struct Guard {
    slot: usize,
}

/// Registers `len` bytes at `start` (a mapping of shared memory that may be revoked).
pub(crate) fn register(start: *mut u8, len: usize) -> Result<Guard, Errno> {
    install()?;
    for (i, s) in TABLE.iter().enumerate() {
        if s.state
            .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            s.start.store(start as usize, Ordering::Relaxed);
            s.len.store(len, Ordering::Relaxed);
            // Release: the handler that sees LIVE sees the range too.
            s.state.store(LIVE, Ordering::Release);
            return Ok(Guard { slot: i });
        }
    }
    // Thousands of mappings: a leak in the caller, most likely.
    Err(Errno::MFILE)
}

impl Guard {
    /// Whether the range was revoked (and is private memory now).
    pub(crate) fn is_revoked(&self) -> bool {
        matches!(
            TABLE[self.slot].state.load(Ordering::Acquire),
            REPLACING | REVOKED
        )
    }

    /// Forgets the range. Nothing may access it any more (its owner is being dropped), so no
    /// handler can be looking at this slot for a fault in it.
    pub(crate) fn unregister(self) {
        let s = &TABLE[self.slot];
        s.state.store(BUSY, Ordering::Relaxed);
        s.start.store(0, Ordering::Relaxed);
        s.len.store(0, Ordering::Relaxed);
        s.state.store(FREE, Ordering::Release);
    }
}

/// Installs the handler, once per process.
fn install() -> Result<(), Errno> {
    let previous = PREVIOUS.get_or_init(|| {
        // SAFETY: `sigaction` is plain data, for which all zeroes is a valid value (an empty
        // mask, no flags, SIG_DFL); it is filled in by the call below before being used.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        // SA_ONSTACK: a thread with an alternate signal stack handles it there.
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        // SAFETY: `new` is a valid action whose handler is async-signal-safe (see the module
        // comment), and `old` is valid for writes. Reading the old action and installing the
        // new one is one call, so no SIGBUS is lost between the two.
        let r = unsafe {
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGBUS, &new, &mut old)
        };
        if r == 0 {
            Ok(old)
        } else {
            Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL))
        }
    });
    previous.map(|_| ())
}

/// The `SIGBUS` handler: replaces a revoked range, or passes the signal on.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: `__errno_location` is the calling thread's errno; restored before returning so
    // that the interrupted code does not see what the handler's calls left there.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: with SA_SIGINFO the kernel passes a valid `siginfo_t`; for SIGBUS `si_addr` is
    // the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    if !replace(addr) {
        pass_on(sig, info, ctx);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Replaces the registered range that holds `addr` with anonymous memory; false if no
/// registered range holds it (or it cannot be replaced).
fn replace(addr: usize) -> bool {
    for s in &TABLE {
        let state = s.state.load(Ordering::Acquire);
        if !matches!(state, LIVE | REPLACING | REVOKED) {
            continue;
        }
        let (start, len) = (
            s.start.load(Ordering::Relaxed),
            s.len.load(Ordering::Relaxed),
        );
        if addr < start || addr - start >= len {
            continue;
        }
        if state != LIVE
            || s.state
                .compare_exchange(LIVE, REPLACING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            // Another thread replaces it (or has): the access faulted before that finished.
            // Returning repeats it, on the replacement or into this handler again.
            return true;
        }
        // SAFETY: `start..start + len` is the registered mapping, which its `Mapping` keeps
        // mapped while registered and which holds no Rust references (only volatile and
        // atomic accesses); putting private zero pages at the same place keeps every pointer
        // into it valid. `MAP_FIXED` replaces the range in one step for all threads.
        let r = unsafe {
            rustix::mm::mmap_anonymous(
                start as *mut libc::c_void,
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED,
            )
        };
        if r.is_err() {
            s.state.store(LIVE, Ordering::Release);
            return false;
        }
        s.state.store(REVOKED, Ordering::Release);
        return true;
    }
    false
}

/// Hands a `SIGBUS` that is not ours to the action installed before ours.
fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(Ok(old)) = PREVIOUS.get() else {
        return;
    };
    let handler = old.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: `old` is the action the process had; once it is back, returning repeats the
        // access, which faults again and gets the default (a synchronous SIGBUS cannot be
        // ignored: the kernel then delivers it with the default action).
        unsafe { libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut()) };
    } else if old.sa_flags & libc::SA_SIGINFO != 0 {
        type SigInfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
        // SAFETY: with SA_SIGINFO, `sa_sigaction` is a three-argument handler, called with
        // the arguments the kernel gave ours.
        let f: SigInfoHandler = unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO, `sa_handler` (the same field) takes the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}
