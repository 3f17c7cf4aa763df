//! The sivshm channel from C: `libsivshm.so` / `libsivshm.a` and `<sivshm/channel.h>`
//! (generated from this file by cbindgen; see Documentation/capi.rst).
//!
//! Every handle is opaque (a `Box` handed out as a pointer); no Rust type crosses the
//! boundary; every entry point runs under `catch_unwind` and reports a panic as
//! `SIVSHM_ERR_INTERNAL`. `unsafe` here is only what the C ABI forces: turning the caller's
//! pointers and file descriptors into references, each with its `// SAFETY:` argument.

#![deny(unsafe_op_in_unsafe_fn)]

mod attach;
mod config;
mod device;
mod receive;
mod send;
mod status;
mod waiting;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use sivshm_lib::channel::{
    Channel, Config, Doorbell, Error, Links, Presence, Received, Reserved, Role,
};
use sivshm_lib::{Device, EventFd, Mapping};

pub use status::sivshm_status;
use status::*;

/// The C API's version: the major one changes only with an incompatible change (and the
/// SONAME with it, libsivshm.so.MAJOR); a minor one only adds.
pub const SIVSHM_CAPI_VERSION_MAJOR: u32 = 0;
pub const SIVSHM_CAPI_VERSION_MINOR: u32 = 1;
pub const SIVSHM_CAPI_VERSION_PATCH: u32 = 0;

/// Which end of a channel: the manager formats the segment, the worker attaches to it.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
pub enum sivshm_role {
    SIVSHM_MANAGER = 0,
    SIVSHM_WORKER = 1,
}

/// The settings of a sivshm_config (sivshm_config_set). Durations are in the unit named.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
pub enum sivshm_option {
    /// Bytes of the worker-to-manager ring; 0: an eighth of the window, at least 4 KiB.
    /// Only the manager's setting counts, when it formats.
    SIVSHM_OPT_REPLY_RING_BYTES = 0,
    /// The doorbell vector both sides ring and wait on (sivshm_channel_attach). Default 0.
    SIVSHM_OPT_VECTOR = 1,
    /// How long a worker waits for the manager to format the channel. Default 30000.
    SIVSHM_OPT_ATTACH_TIMEOUT_MS = 2,
    /// How long the peer's heartbeat may stand still before calls fail with
    /// SIVSHM_ERR_PEER_GONE. Default 10000.
    SIVSHM_OPT_PEER_TIMEOUT_MS = 3,
    /// How often this side's heartbeat thread beats; 0: no heartbeat thread (the peer then
    /// thinks this side gone after its timeout). Default 100.
    SIVSHM_OPT_HEARTBEAT_MS = 4,
    /// Without a doorbell, how often a waiting side looks. Default 200.
    SIVSHM_OPT_POLL_INTERVAL_US = 5,
    /// The longest sleep between two looks at the peer's liveness. Default 100.
    SIVSHM_OPT_CHECK_INTERVAL_MS = 6,
    /// How long a waiting side polls before it sleeps (0: sleep at once). Default 100.
    SIVSHM_OPT_SPIN_US = 7,
    /// The longest poll after short waits. Default 5000.
    SIVSHM_OPT_SPIN_MAX_US = 8,
}

/// The counters of sivshm_channel_stat, each since the channel was attached.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
pub enum sivshm_stat {
    /// Messages committed.
    SIVSHM_STAT_SENT = 0,
    /// Messages released.
    SIVSHM_STAT_RECEIVED = 1,
    /// Doorbells rung on the peer.
    SIVSHM_STAT_RINGS = 2,
    /// Sleeps ended by the peer's doorbell.
    SIVSHM_STAT_WAKEUPS = 3,
    /// Times the peer re-attached with a new generation.
    SIVSHM_STAT_PEER_RESTARTS = 4,
    /// Rings that failed.
    SIVSHM_STAT_RING_ERRORS = 5,
}

/// A callback that says whether the memory under a channel is gone (non-zero: gone); see
/// sivshm_config_set_presence.
#[allow(non_camel_case_types)]
pub type sivshm_presence_fn = Option<unsafe extern "C" fn(user: *mut c_void) -> c_int>;

/// An open sivshm device (/dev/sivshmN).
#[allow(non_camel_case_types)]
pub struct sivshm_device {
    dev: Device,
}

/// The settings of a channel, made by sivshm_config_new.
#[allow(non_camel_case_types)]
pub struct sivshm_config {
    config: Config,
    presence: Option<Arc<CallbackPresence>>,
}

/// One end of a channel.
#[allow(non_camel_case_types)]
pub struct sivshm_channel {
    ch: Channel,
    last_error: CString,
    /// A reservation, or a message, is out (at most one of each).
    reserving: bool,
    holding: bool,
}

/// Room for one message, reserved in the ring: write it, then commit or cancel it.
#[allow(non_camel_case_types)]
pub struct sivshm_reservation {
    ch: *mut sivshm_channel,
    aside: Option<Reserved>,
}

/// The oldest message of the ring, read in place: read it, then release it or leave it.
#[allow(non_camel_case_types)]
pub struct sivshm_message {
    ch: *mut sivshm_channel,
    aside: Option<Received>,
}

/// The caller's presence callback and its argument (kept as an address, so that the
/// channel's threads may hold it; only the caller's threads call it, from channel calls).
struct CallbackPresence {
    gone: unsafe extern "C" fn(*mut c_void) -> c_int,
    user: usize,
}

impl Presence for CallbackPresence {
    fn gone(&self) -> bool {
        // SAFETY: sivshm_config_set_presence's contract: the function is valid and may be
        // called with `user` as long as a channel made with the configuration lives.
        unsafe { (self.gone)(self.user as *mut c_void) != 0 }
    }
}

/// Runs an entry point's body: a panic becomes SIVSHM_ERR_INTERNAL, a failure its code
/// (its message kept for sivshm_last_error).
fn guarded(f: impl FnOnce() -> Result<c_int, Failure>) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Failure::new(
            SIVSHM_ERR_INTERNAL,
            "libsivshm panicked (a bug)",
        ))
    });
    match r {
        Ok(v) => v,
        Err(f) => {
            set_thread_last(&f.message);
            f.code as c_int
        }
    }
}

/// Runs `f` on a channel and keeps a failure's message on the handle too.
fn on_channel<T>(
    h: &mut sivshm_channel,
    f: impl FnOnce(&mut Channel) -> Result<T, Error>,
) -> Result<T, Failure> {
    f(&mut h.ch).map_err(|e| failed(h, e.into()))
}

fn failed(h: &mut sivshm_channel, f: Failure) -> Failure {
    h.last_error = c_message(&f.message);
    f
}

/// A C timeout in milliseconds: negative is forever (as long as the peer lives).
fn timeout(ms: c_int) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

fn ok() -> Result<c_int, Failure> {
    Ok(SIVSHM_OK as c_int)
}

/// `ptr` as a reference, or SIVSHM_ERR_INVALID naming `what`.
fn need<T>(r: Option<T>, what: &str) -> Result<T, Failure> {
    r.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// The caller's buffer of `len` bytes at `buf` (NULL allowed for 0 bytes).
///
/// # Safety
/// `buf` is NULL or valid for reads of `len` bytes for the duration of the call.
unsafe fn in_bytes<'a>(buf: *const c_void, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(Failure::invalid("buffer is NULL"));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` readable bytes there for the call.
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

/// The caller's buffer of `len` writable bytes at `buf` (NULL allowed for 0 bytes).
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes for the duration of the call, and
/// nothing else accesses it meanwhile.
unsafe fn out_bytes<'a>(buf: *mut c_void, len: usize) -> Result<&'a mut [u8], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(Failure::invalid("buffer is NULL"));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` writable bytes there, used by
    // nothing else, for the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

fn role(r: c_int) -> Result<Role, Failure> {
    match r {
        0 => Ok(Role::Manager),
        1 => Ok(Role::Worker),
        _ => Err(Failure::invalid(format!(
            "role {r} is not SIVSHM_MANAGER or SIVSHM_WORKER"
        ))),
    }
}

/// The configuration behind `cfg` (NULL: the defaults).
fn config_of(cfg: Option<&sivshm_config>) -> (Config, Option<Arc<CallbackPresence>>) {
    match cfg {
        Some(c) => (c.config.clone(), c.presence.clone()),
        None => (Config::default(), None),
    }
}

fn new_channel(ch: Channel) -> *mut sivshm_channel {
    Box::into_raw(Box::new(sivshm_channel {
        ch,
        last_error: CString::default(),
        reserving: false,
        holding: false,
    }))
}

/// The library's version at run time: MAJOR << 16 | MINOR << 8 | PATCH (compare with the
/// SIVSHM_CAPI_VERSION_* macros the program was built with).
#[no_mangle]
pub extern "C" fn sivshm_version() -> u32 {
    (SIVSHM_CAPI_VERSION_MAJOR << 16) | (SIVSHM_CAPI_VERSION_MINOR << 8) | SIVSHM_CAPI_VERSION_PATCH
}

/// The fixed text of an error code (a static string; unknown codes have one too).
#[no_mangle]
pub extern "C" fn sivshm_strerror(code: c_int) -> *const c_char {
    text(code).as_ptr()
}

/// The message of this thread's last failed call (details: which system call, which check),
/// or "" before any. Valid until this thread's next failing call.
#[no_mangle]
pub extern "C" fn sivshm_last_error() -> *const c_char {
    thread_last()
}

#[cfg(test)]
mod tests;
