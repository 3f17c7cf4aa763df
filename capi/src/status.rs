//! Error codes, their texts, and what the C API remembers of the last failure. No `unsafe`
//! here: the entry points in `lib.rs` turn caller pointers into references and call this.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};

use sivshm_lib::channel::Error;

/// What every function of the C API returns: `SIVSHM_OK` (0), a negative error code, or
/// for some functions a documented non-negative answer. Codes never change meaning; new
/// ones may be added in a minor version, so treat an unknown negative code as an error.
#[repr(C)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sivshm_status {
    /// Success.
    SIVSHM_OK = 0,
    /// A NULL pointer, an unknown option or role, a bad offset: the caller's mistake.
    SIVSHM_ERR_INVALID = -1,
    /// A system call failed (open, mmap, eventfd); the last-error message names it.
    SIVSHM_ERR_OS = -2,
    /// The window or the configuration cannot hold a channel.
    SIVSHM_ERR_GEOMETRY = -3,
    /// A message larger than the ring can ever hold, or a read or write past a message's end,
    /// or (sivshm_channel_receive) a buffer too small for the message.
    SIVSHM_ERR_TOO_LARGE = -4,
    /// The peer or the header speaks another version of the channel. Fatal.
    SIVSHM_ERR_VERSION = -5,
    /// No manager formatted the channel within the attach timeout.
    SIVSHM_ERR_NOT_FORMATTED = -6,
    /// The peer wrote what no honest peer writes. Fatal: close the channel.
    SIVSHM_ERR_CORRUPT = -7,
    /// The manager formatted the channel anew under this side. Fatal: attach again.
    SIVSHM_ERR_REFORMATTED = -8,
    /// The peer detached on purpose.
    SIVSHM_ERR_PEER_CLOSED = -9,
    /// The peer's heartbeat stood still for longer than the peer timeout.
    SIVSHM_ERR_PEER_GONE = -10,
    /// Nothing happened before the call's timeout.
    SIVSHM_ERR_TIMED_OUT = -11,
    /// The device was removed (hot-unplug, driver unbound), or the memory given to
    /// sivshm_channel_attach_fd went away as its presence callback says. Fatal.
    SIVSHM_ERR_DEVICE_GONE = -12,
    /// A call with timeout 0 found no room or no message now.
    SIVSHM_ERR_AGAIN = -13,
    /// The channel already has a reservation (or a message) out: commit, cancel, release
    /// or leave it first.
    SIVSHM_ERR_BUSY = -14,
    /// A bug in the library (a Rust panic, caught at the boundary). The handle may be left
    /// in any state: close it.
    SIVSHM_ERR_INTERNAL = -15,
    /// sivshm_device_find found no sivshm device at that PCI address.
    SIVSHM_ERR_NO_DEVICE = -16,
}

pub use sivshm_status::*;

/// A failed call: its code and the message kept for `sivshm_*last_error`.
pub(crate) struct Failure {
    pub code: sivshm_status,
    pub message: String,
}

impl Failure {
    pub fn new(code: sivshm_status, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(SIVSHM_ERR_INVALID, message)
    }

    pub fn os(what: &str, e: rustix::io::Errno) -> Self {
        match e {
            rustix::io::Errno::NODEV => {
                Failure::new(SIVSHM_ERR_DEVICE_GONE, format!("{what}: {e}"))
            }
            e => Failure::new(SIVSHM_ERR_OS, format!("{what}: {e}")),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Os(rustix::io::Errno::NODEV) | Error::DeviceGone => SIVSHM_ERR_DEVICE_GONE,
            Error::Os(_) => SIVSHM_ERR_OS,
            Error::Geometry(_) => SIVSHM_ERR_GEOMETRY,
            Error::TooLarge { .. } => SIVSHM_ERR_TOO_LARGE,
            Error::Version { .. } => SIVSHM_ERR_VERSION,
            Error::NotFormatted => SIVSHM_ERR_NOT_FORMATTED,
            Error::Corrupt(_) => SIVSHM_ERR_CORRUPT,
            Error::Reformatted => SIVSHM_ERR_REFORMATTED,
            Error::PeerClosed => SIVSHM_ERR_PEER_CLOSED,
            Error::PeerGone => SIVSHM_ERR_PEER_GONE,
            Error::TimedOut => SIVSHM_ERR_TIMED_OUT,
        };
        Failure::new(code, e.to_string())
    }
}

/// The fixed text of a code.
pub(crate) fn text(code: c_int) -> &'static CStr {
    match code {
        0 => c"success",
        -1 => c"invalid argument",
        -2 => c"a system call failed",
        -3 => c"the window or the configuration cannot hold a channel",
        -4 => c"too large for the ring, the message or the buffer",
        -5 => c"the peer speaks another channel version",
        -6 => c"no manager has set up the channel",
        -7 => c"the peer corrupted the channel",
        -8 => c"the manager set the channel up anew",
        -9 => c"the peer closed the channel",
        -10 => c"the peer stopped (no heartbeat within the timeout)",
        -11 => c"timed out",
        -12 => c"the device was removed",
        -13 => c"nothing ready now",
        -14 => c"a reservation or message of this channel is still out",
        -15 => c"internal error in libsivshm",
        -16 => c"no sivshm device at that address",
        _ => c"unknown sivshm error code",
    }
}

/// A message as a C string (interior NULs would cut it: they are replaced).
pub(crate) fn c_message(m: &str) -> CString {
    CString::new(m.replace('\0', "?")).unwrap_or_default()
}

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `m` as this thread's last error message.
pub(crate) fn set_thread_last(m: &str) {
    LAST.with(|l| *l.borrow_mut() = c_message(m));
}

/// This thread's last error message, valid until this thread's next failing call.
pub(crate) fn thread_last() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}
