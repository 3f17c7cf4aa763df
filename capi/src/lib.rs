//! The sivshm channel from C: `libsivshm.so` / `libsivshm.a` and `<sivshm/channel.h>`
//! (generated from this file by cbindgen; see Documentation/capi.rst).
//!
//! Every handle is opaque (a `Box` handed out as a pointer); no Rust type crosses the
//! boundary; every entry point runs under `catch_unwind` and reports a panic as
//! `SIVSHM_ERR_INTERNAL`. `unsafe` here is only what the C ABI forces: turning the caller's
//! pointers and file descriptors into references, each with its `// SAFETY:` argument.

#![deny(unsafe_op_in_unsafe_fn)]

mod status;

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

/// Opens a sivshm device node (e.g. "/dev/sivshm0") into *out.
/// Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_OS (open, GET_INFO), SIVSHM_ERR_DEVICE_GONE.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sivshm_device_open(
    path: *const c_char,
    out: *mut *mut sivshm_device,
) -> c_int {
    guarded(|| {
        need((!path.is_null()).then_some(()), "path")?;
        need((!out.is_null()).then_some(()), "out")?;
        // SAFETY: non-NULL and, by the contract, NUL-terminated and unchanged for the call.
        let path = unsafe { CStr::from_ptr(path) };
        let path = std::str::from_utf8(path.to_bytes())
            .map_err(|_| Failure::invalid("path is not UTF-8"))?;
        let dev = Device::open(path).map_err(|e| Failure::os(path, e))?;
        let h = Box::into_raw(Box::new(sivshm_device { dev }));
        // SAFETY: `out` is non-NULL and writable by the contract.
        unsafe { out.write(h) };
        ok()
    })
}

/// Opens the sivshm device at PCI address `pci` (as sysfs spells it, "0000:00:04.0") into
/// *out, looking through /dev/sivshm*. Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_NO_DEVICE.
///
/// # Safety
/// `pci` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sivshm_device_find(
    pci: *const c_char,
    out: *mut *mut sivshm_device,
) -> c_int {
    guarded(|| {
        need((!pci.is_null()).then_some(()), "pci")?;
        need((!out.is_null()).then_some(()), "out")?;
        // SAFETY: non-NULL and, by the contract, NUL-terminated and unchanged for the call.
        let pci = unsafe { CStr::from_ptr(pci) };
        let pci = std::str::from_utf8(pci.to_bytes())
            .map_err(|_| Failure::invalid("pci is not UTF-8"))?;
        let dev = Device::find(pci).map_err(|_| {
            Failure::new(SIVSHM_ERR_NO_DEVICE, format!("no sivshm device at {pci}"))
        })?;
        let h = Box::into_raw(Box::new(sivshm_device { dev }));
        // SAFETY: `out` is non-NULL and writable by the contract.
        unsafe { out.write(h) };
        ok()
    })
}

/// Closes a device (channels attached through it keep what they need). NULL is ignored.
///
/// # Safety
/// `dev` is NULL or from sivshm_device_open, not closed before.
#[no_mangle]
pub unsafe extern "C" fn sivshm_device_close(dev: *mut sivshm_device) {
    guarded(|| {
        if !dev.is_null() {
            // SAFETY: made by Box::into_raw in sivshm_device_open and not freed before.
            drop(unsafe { Box::from_raw(dev) });
        }
        ok()
    });
}

/// Bytes of the device's shared memory, or 0 for NULL.
///
/// # Safety
/// `dev` is NULL or an open device.
#[no_mangle]
pub unsafe extern "C" fn sivshm_device_shm_size(dev: *const sivshm_device) -> u64 {
    // SAFETY: NULL or a live handle by the contract; only read.
    match unsafe { dev.as_ref() } {
        Some(d) => d.dev.info().shm_size,
        None => 0,
    }
}

/// A configuration with the defaults (see sivshm_option); free it with sivshm_config_free.
#[no_mangle]
pub extern "C" fn sivshm_config_new() -> *mut sivshm_config {
    let mut p = std::ptr::null_mut();
    guarded(|| {
        p = Box::into_raw(Box::new(sivshm_config {
            config: Config::default(),
            presence: None,
        }));
        ok()
    });
    p
}

/// Sets one option (a sivshm_option) to `value`.
/// Errors: SIVSHM_ERR_INVALID (NULL, unknown option, vector above 2^32-1).
///
/// # Safety
/// `cfg` is NULL or from sivshm_config_new, not freed.
#[no_mangle]
pub unsafe extern "C" fn sivshm_config_set(
    cfg: *mut sivshm_config,
    option: c_int,
    value: u64,
) -> c_int {
    guarded(|| {
        // SAFETY: NULL or a live handle used by this thread only, by the contract.
        let c = need(unsafe { cfg.as_mut() }, "cfg")?;
        let c = &mut c.config;
        let ms = Duration::from_millis(value);
        let us = Duration::from_micros(value);
        match option {
            0 => c.reply_ring_bytes = (value != 0).then(|| value.try_into().unwrap_or(usize::MAX)),
            1 => {
                c.vector = value
                    .try_into()
                    .map_err(|_| Failure::invalid("vector above 2^32-1"))?
            }
            2 => c.attach_timeout = ms,
            3 => c.peer_timeout = ms,
            4 => c.heartbeat = (value != 0).then_some(ms),
            5 => c.poll_interval = us,
            6 => c.check_interval = ms,
            7 => c.spin = us,
            8 => c.spin_max = us,
            o => return Err(Failure::invalid(format!("unknown option {o}"))),
        }
        ok()
    })
}

/// For sivshm_channel_attach_fd: the channel calls `gone(user)` whenever a check fails, a
/// wait wakes with nothing to show, or the peer looks absent; non-zero means the memory is
/// gone, and the channel then answers SIVSHM_ERR_DEVICE_GONE (instead of, say,
/// SIVSHM_ERR_CORRUPT). It is called only from inside calls on the channel, on the calling
/// thread. NULL `gone` removes the callback.
///
/// # Safety
/// `cfg` is NULL or a live configuration; `gone`, if not NULL, may be called with `user`
/// for as long as any channel attached with this configuration lives.
#[no_mangle]
pub unsafe extern "C" fn sivshm_config_set_presence(
    cfg: *mut sivshm_config,
    gone: sivshm_presence_fn,
    user: *mut c_void,
) -> c_int {
    guarded(|| {
        // SAFETY: NULL or a live handle used by this thread only, by the contract.
        let c = need(unsafe { cfg.as_mut() }, "cfg")?;
        c.presence = gone.map(|gone| {
            Arc::new(CallbackPresence {
                gone,
                user: user as usize,
            })
        });
        ok()
    })
}

/// Frees a configuration (channels made with it are not affected). NULL is ignored.
///
/// # Safety
/// `cfg` is NULL or from sivshm_config_new, not freed before.
#[no_mangle]
pub unsafe extern "C" fn sivshm_config_free(cfg: *mut sivshm_config) {
    guarded(|| {
        if !cfg.is_null() {
            // SAFETY: made by Box::into_raw in sivshm_config_new and not freed before.
            drop(unsafe { Box::from_raw(cfg) });
        }
        ok()
    });
}

/// Attaches a channel over the device's whole segment, as `role` (a sivshm_role), with
/// `cfg` (NULL: defaults), into *out. The manager formats (or resumes what a previous
/// manager left); the worker waits up to the attach timeout for a manager.
/// Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_OS, SIVSHM_ERR_GEOMETRY, SIVSHM_ERR_VERSION,
/// SIVSHM_ERR_NOT_FORMATTED, SIVSHM_ERR_CORRUPT, SIVSHM_ERR_DEVICE_GONE.
///
/// # Safety
/// `dev` is a live device, `cfg` NULL or a live configuration, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_attach(
    dev: *const sivshm_device,
    role: c_int,
    cfg: *const sivshm_config,
    out: *mut *mut sivshm_channel,
) -> c_int {
    guarded(|| {
        // SAFETY: NULL or live handles by the contract; only read.
        let (dev, cfg) = unsafe { (dev.as_ref(), cfg.as_ref()) };
        let dev = need(dev, "dev")?;
        need((!out.is_null()).then_some(()), "out")?;
        let (config, _) = config_of(cfg);
        let ch = Channel::on_device(&dev.dev, self::role(role)?, config).map_err(Failure::from)?;
        // SAFETY: `out` is non-NULL and writable by the contract.
        unsafe { out.write(new_channel(ch)) };
        ok()
    })
}

/// A descriptor of the caller's, duplicated (close-on-exec), or None for -1.
///
/// # Safety
/// `fd` is -1 or open for the duration of the call.
unsafe fn dup_fd(fd: c_int, what: &str) -> Result<Option<OwnedFd>, Failure> {
    if fd == -1 {
        return Ok(None);
    }
    if fd < 0 {
        return Err(Failure::invalid(format!("{what} {fd} is not a descriptor")));
    }
    // SAFETY: the caller keeps `fd` open for the call; it is only duplicated here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_dupfd_cloexec(borrowed, 0)
        .map(Some)
        .map_err(|e| Failure::os(what, e))
}

/// Attaches a channel over memory the caller wired: `len` bytes at `offset` (a multiple
/// of the page size) of `shm_fd` (a memfd, a shared file, a device's mapping fd). `wake_fd`
/// is the eventfd the peer rings to wake this side (-1: this side polls); `ring_fd` the
/// eventfd this side writes to wake the peer (-1: the peer polls). All three are
/// duplicated: the caller keeps and closes its own. The eventfds are made non-blocking
/// (the flag is shared with their duplicates). A presence callback in `cfg`
/// (sivshm_config_set_presence) tells the channel when the memory is gone.
/// Errors: as sivshm_channel_attach.
///
/// # Safety
/// The descriptors are -1 (the eventfds) or open for the duration of the call; `cfg` NULL
/// or live, `out` writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sivshm_channel_attach_fd(
    shm_fd: c_int,
    offset: u64,
    len: usize,
    wake_fd: c_int,
    ring_fd: c_int,
    role: c_int,
    cfg: *const sivshm_config,
    out: *mut *mut sivshm_channel,
) -> c_int {
    guarded(|| {
        need((!out.is_null()).then_some(()), "out")?;
        let role = self::role(role)?;
        if shm_fd < 0 {
            return Err(Failure::invalid("shm_fd is not a descriptor"));
        }
        // SAFETY: by the contract, the descriptors are -1 or open for the call.
        let (shm, wake, ring) = unsafe {
            (
                dup_fd(shm_fd, "shm_fd")?,
                dup_fd(wake_fd, "wake_fd")?,
                dup_fd(ring_fd, "ring_fd")?,
            )
        };
        let shm = need(shm, "shm_fd")?;
        let map = Mapping::new(std::os::fd::AsFd::as_fd(&shm), offset, len)
            .map_err(|e| Failure::os("mmap of shm_fd", e))?;
        let eventfd = |fd: Option<OwnedFd>| {
            fd.map(|fd| EventFd::from_fd(fd).map(Arc::new))
                .transpose()
                .map_err(|e| Failure::os("eventfd", e))
        };
        // SAFETY: NULL or a live configuration by the contract; only read.
        let (config, presence) = config_of(unsafe { cfg.as_ref() });
        let links = Links {
            doorbell: eventfd(ring)?.map(|e| e as Arc<dyn Doorbell>),
            wake: eventfd(wake)?,
            own_id: Some(match role {
                Role::Manager => 0,
                Role::Worker => 1,
            }),
            presence: presence.map(|p| p as Arc<dyn Presence>),
        };
        let ch = Channel::new(Arc::new(map), 0, len, role, links, config).map_err(Failure::from)?;
        // SAFETY: `out` is non-NULL and writable by the contract.
        unsafe { out.write(new_channel(ch)) };
        ok()
    })
}

/// Detaches (the peer sees SIVSHM_ERR_PEER_CLOSED) and frees the channel. NULL is ignored.
///
/// # Safety
/// `ch` is NULL or a live channel, not closed before, with no reservation or message out.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_close(ch: *mut sivshm_channel) {
    guarded(|| {
        if !ch.is_null() {
            // SAFETY: made by Box::into_raw when attached and not freed before.
            drop(unsafe { Box::from_raw(ch) });
        }
        ok()
    });
}

/// The message of the last failed call on this channel, "" before any. Valid until the
/// next call on the channel.
///
/// # Safety
/// `ch` is NULL or a live channel.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_last_error(ch: *const sivshm_channel) -> *const c_char {
    // SAFETY: NULL or a live handle by the contract; only read.
    match unsafe { ch.as_ref() } {
        Some(h) => h.last_error.as_ptr(),
        None => c"channel is NULL".as_ptr(),
    }
}

/// The largest message this side can send, 0 for NULL.
///
/// # Safety
/// `ch` is NULL or a live channel.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_max_message(ch: *const sivshm_channel) -> usize {
    // SAFETY: NULL or a live handle by the contract; only read.
    unsafe { ch.as_ref() }.map_or(0, |h| h.ch.max_message())
}

/// Reserves room for a message of `len` bytes into *out, waiting up to `timeout_ms` (-1: as
/// long as the peer lives; 0: SIVSHM_ERR_AGAIN at once if there is no room, and
/// sivshm_channel_arm then also waits for room). One reservation at a time per channel.
/// Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_BUSY, SIVSHM_ERR_TOO_LARGE, SIVSHM_ERR_AGAIN,
/// SIVSHM_ERR_TIMED_OUT, the peer's and the fatal ones.
///
/// # Safety
/// `ch` is a live channel not used by another thread meanwhile; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_reserve(
    ch: *mut sivshm_channel,
    len: usize,
    timeout_ms: c_int,
    out: *mut *mut sivshm_reservation,
) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        need((!out.is_null()).then_some(()), "out")?;
        if h.reserving {
            return Err(failed(
                h,
                Failure::new(SIVSHM_ERR_BUSY, "a reservation is out already"),
            ));
        }
        let aside = on_channel(h, |c| {
            Ok(match timeout_ms {
                0 => c.try_reserve(len)?.map(|r| r.set_aside()),
                t => Some(c.reserve(len, timeout(t))?.set_aside()),
            })
        })?;
        let aside = match aside {
            Some(a) => a,
            None => return Err(failed(h, Failure::new(SIVSHM_ERR_AGAIN, "no room now"))),
        };
        h.reserving = true;
        let r = Box::into_raw(Box::new(sivshm_reservation {
            ch,
            aside: Some(aside),
        }));
        // SAFETY: `out` is non-NULL and writable by the contract.
        unsafe { out.write(r) };
        ok()
    })
}

/// The reservation and its channel.
///
/// # Safety
/// `res` is NULL or a live reservation whose channel lives, both used by this thread only.
unsafe fn reservation<'a>(
    res: *mut sivshm_reservation,
) -> Result<(&'a mut sivshm_reservation, &'a mut sivshm_channel), Failure> {
    // SAFETY: NULL or live, by the contract.
    let r = need(unsafe { res.as_mut() }, "res")?;
    // SAFETY: a reservation's channel outlives it (the contract of sivshm_channel_close).
    let h = need(unsafe { r.ch.as_mut() }, "res's channel")?;
    Ok((r, h))
}

/// Bytes of the reservation, 0 for NULL.
///
/// # Safety
/// `res` is NULL or a live reservation.
#[no_mangle]
pub unsafe extern "C" fn sivshm_reservation_len(res: *const sivshm_reservation) -> usize {
    // SAFETY: NULL or a live handle by the contract; only read.
    unsafe { res.as_ref() }
        .and_then(|r| r.aside.as_ref())
        .map_or(0, |a| a.len())
}

/// Copies `len` bytes from `buf` into the reservation at `offset`. This is the zero-copy
/// path: the bytes go straight into the shared ring; no pointer into shared memory is ever
/// handed out. Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_TOO_LARGE (past the end), the fatal
/// ones.
///
/// # Safety
/// `res` is a live reservation (its channel live, both used by this thread only); `buf` is
/// valid for `len` bytes (NULL if 0).
#[no_mangle]
pub unsafe extern "C" fn sivshm_reservation_write(
    res: *mut sivshm_reservation,
    offset: usize,
    buf: *const c_void,
    len: usize,
) -> c_int {
    guarded(|| {
        // SAFETY: the contract above.
        let (r, h) = unsafe { reservation(res)? };
        // SAFETY: `buf` is valid for `len` bytes by the contract.
        let data = unsafe { in_bytes(buf, len)? };
        let aside = need(r.aside.take(), "an unfinished reservation")?;
        let mut taken = match h.ch.resume_reservation(aside) {
            Some(t) => t,
            None => return Err(failed(h, Failure::invalid("stale reservation"))),
        };
        let wrote = taken.write(offset, data);
        r.aside = Some(taken.set_aside());
        wrote.map_err(|e| failed(h, e.into()))?;
        ok()
    })
}

/// Publishes the message and frees the reservation (whatever the result). The peer is
/// woken at the next sivshm_channel_flush (or any call that waits, or a send).
/// Errors: SIVSHM_ERR_INVALID, the fatal ones.
///
/// # Safety
/// `res` is a live reservation whose channel lives; it is freed here.
#[no_mangle]
pub unsafe extern "C" fn sivshm_reservation_commit(res: *mut sivshm_reservation) -> c_int {
    guarded(|| {
        // SAFETY: the contract above.
        let (r, h) = unsafe { reservation(res)? };
        let aside = r.aside.take();
        // SAFETY: made by Box::into_raw in sivshm_channel_reserve; `r` is not used again.
        drop(unsafe { Box::from_raw(res) });
        h.reserving = false;
        let aside = need(aside, "an unfinished reservation")?;
        match h.ch.resume_reservation(aside) {
            Some(t) => t.commit().map_err(|e| failed(h, e.into()))?,
            None => return Err(failed(h, Failure::invalid("stale reservation"))),
        }
        ok()
    })
}

/// Gives the room back and frees the reservation. NULL is ignored.
///
/// # Safety
/// `res` is NULL or a live reservation whose channel lives; it is freed here.
#[no_mangle]
pub unsafe extern "C" fn sivshm_reservation_cancel(res: *mut sivshm_reservation) {
    guarded(|| {
        if res.is_null() {
            return ok();
        }
        // SAFETY: the contract above.
        let (_, h) = unsafe { reservation(res)? };
        h.reserving = false;
        // SAFETY: made by Box::into_raw in sivshm_channel_reserve; not used again.
        drop(unsafe { Box::from_raw(res) });
        ok()
    });
}

/// Wakes the peer if it sleeps waiting for what was committed since the last flush.
/// Errors: SIVSHM_ERR_INVALID, the fatal ones.
///
/// # Safety
/// `ch` is a live channel used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_flush(ch: *mut sivshm_channel) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        on_channel(h, |c| c.flush())?;
        ok()
    })
}

/// Sends `len` bytes from `buf` (reserve, write, commit, flush), waiting up to `timeout_ms`
/// for room (-1: as long as the peer lives; 0: SIVSHM_ERR_AGAIN if no room now).
/// Errors: as sivshm_channel_reserve.
///
/// # Safety
/// `ch` is a live channel used by this thread only; `buf` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_send(
    ch: *mut sivshm_channel,
    buf: *const c_void,
    len: usize,
    timeout_ms: c_int,
) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        // SAFETY: `buf` is valid for `len` bytes by the contract.
        let data = unsafe { in_bytes(buf, len)? };
        if h.reserving {
            return Err(failed(
                h,
                Failure::new(SIVSHM_ERR_BUSY, "a reservation is out"),
            ));
        }
        let sent = on_channel(h, |c| match timeout_ms {
            0 => c.try_send(data),
            t => c.send(data, timeout(t)).map(|()| true),
        })?;
        if !sent {
            return Err(failed(h, Failure::new(SIVSHM_ERR_AGAIN, "no room now")));
        }
        ok()
    })
}

/// The oldest message into *out, waiting up to `timeout_ms` (-1: as long as the peer lives;
/// 0: SIVSHM_ERR_AGAIN at once if there is none). One message at a time per channel.
/// Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_BUSY, SIVSHM_ERR_AGAIN, SIVSHM_ERR_TIMED_OUT,
/// SIVSHM_ERR_PEER_CLOSED, SIVSHM_ERR_PEER_GONE, the fatal ones.
///
/// # Safety
/// `ch` is a live channel used by this thread only; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_recv(
    ch: *mut sivshm_channel,
    timeout_ms: c_int,
    out: *mut *mut sivshm_message,
) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        need((!out.is_null()).then_some(()), "out")?;
        if h.holding {
            return Err(failed(
                h,
                Failure::new(SIVSHM_ERR_BUSY, "a message is out already"),
            ));
        }
        let aside = on_channel(h, |c| {
            Ok(match timeout_ms {
                0 => c.try_recv()?.map(|m| m.set_aside()),
                t => Some(c.recv(timeout(t))?.set_aside()),
            })
        })?;
        let Some(aside) = aside else {
            return Err(failed(h, Failure::new(SIVSHM_ERR_AGAIN, "no message now")));
        };
        h.holding = true;
        let m = Box::into_raw(Box::new(sivshm_message {
            ch,
            aside: Some(aside),
        }));
        // SAFETY: `out` is non-NULL and writable by the contract.
        unsafe { out.write(m) };
        ok()
    })
}

/// The message and its channel.
///
/// # Safety
/// `msg` is NULL or a live message whose channel lives, both used by this thread only.
unsafe fn message<'a>(
    msg: *mut sivshm_message,
) -> Result<(&'a mut sivshm_message, &'a mut sivshm_channel), Failure> {
    // SAFETY: NULL or live, by the contract.
    let m = need(unsafe { msg.as_mut() }, "msg")?;
    // SAFETY: a message's channel outlives it (the contract of sivshm_channel_close).
    let h = need(unsafe { m.ch.as_mut() }, "msg's channel")?;
    Ok((m, h))
}

/// Bytes of the message, 0 for NULL.
///
/// # Safety
/// `msg` is NULL or a live message.
#[no_mangle]
pub unsafe extern "C" fn sivshm_message_len(msg: *const sivshm_message) -> usize {
    // SAFETY: NULL or a live handle by the contract; only read.
    unsafe { msg.as_ref() }
        .and_then(|m| m.aside.as_ref())
        .map_or(0, |a| a.len())
}

/// Copies `len` bytes of the message at `offset` into `buf`, straight from the shared ring
/// (no pointer into shared memory is handed out). The peer may change them while they are
/// read: check what you read. Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_TOO_LARGE (past the
/// end), the fatal ones.
///
/// # Safety
/// `msg` is a live message (its channel live, both used by this thread only); `buf` is
/// valid for writes of `len` bytes (NULL if 0).
#[no_mangle]
pub unsafe extern "C" fn sivshm_message_read(
    msg: *mut sivshm_message,
    offset: usize,
    buf: *mut c_void,
    len: usize,
) -> c_int {
    guarded(|| {
        // SAFETY: the contract above.
        let (m, h) = unsafe { message(msg)? };
        // SAFETY: `buf` is valid for writes of `len` bytes by the contract.
        let out = unsafe { out_bytes(buf, len)? };
        let aside = need(m.aside.take(), "an unfinished message")?;
        let Some(taken) = h.ch.resume_message(aside) else {
            return Err(failed(h, Failure::invalid("stale message")));
        };
        let read = taken.read(offset, out);
        m.aside = Some(taken.set_aside());
        read.map_err(|e| failed(h, e.into()))?;
        ok()
    })
}

/// Gives the message's room back to the sender (waking it if it waits) and frees the
/// message (whatever the result). Errors: SIVSHM_ERR_INVALID, the fatal ones.
///
/// # Safety
/// `msg` is a live message whose channel lives; it is freed here.
#[no_mangle]
pub unsafe extern "C" fn sivshm_message_release(msg: *mut sivshm_message) -> c_int {
    guarded(|| {
        // SAFETY: the contract above.
        let (m, h) = unsafe { message(msg)? };
        let aside = m.aside.take();
        // SAFETY: made by Box::into_raw in sivshm_channel_recv; `m` is not used again.
        drop(unsafe { Box::from_raw(msg) });
        h.holding = false;
        let aside = need(aside, "an unfinished message")?;
        match h.ch.resume_message(aside) {
            Some(t) => t.release().map_err(|e| failed(h, e.into()))?,
            None => return Err(failed(h, Failure::invalid("stale message"))),
        }
        ok()
    })
}

/// Frees the message handle and leaves the message in the ring: the next receive returns
/// it again. NULL is ignored.
///
/// # Safety
/// `msg` is NULL or a live message whose channel lives; it is freed here.
#[no_mangle]
pub unsafe extern "C" fn sivshm_message_leave(msg: *mut sivshm_message) {
    guarded(|| {
        if msg.is_null() {
            return ok();
        }
        // SAFETY: the contract above.
        let (_, h) = unsafe { message(msg)? };
        h.holding = false;
        // SAFETY: made by Box::into_raw in sivshm_channel_recv; not used again.
        drop(unsafe { Box::from_raw(msg) });
        ok()
    });
}

/// Receives the oldest message into `buf` (up to `cap` bytes) and releases it, waiting up
/// to `timeout_ms` as sivshm_channel_recv; *len_out is set to the message's length. A
/// message longer than `cap` stays in the ring: SIVSHM_ERR_TOO_LARGE, *len_out says how
/// much room it needs. Errors: as sivshm_channel_recv, SIVSHM_ERR_TOO_LARGE.
///
/// # Safety
/// `ch` is a live channel used by this thread only; `buf` valid for writes of `cap` bytes;
/// `len_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_receive(
    ch: *mut sivshm_channel,
    buf: *mut c_void,
    cap: usize,
    len_out: *mut usize,
    timeout_ms: c_int,
) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        // SAFETY: `buf` is valid for writes of `cap` bytes by the contract.
        let out = unsafe { out_bytes(buf, cap)? };
        if h.holding {
            return Err(failed(h, Failure::new(SIVSHM_ERR_BUSY, "a message is out")));
        }
        let got = on_channel(h, |c| {
            let m = match timeout_ms {
                0 => match c.try_recv()? {
                    Some(m) => m,
                    None => return Ok(None),
                },
                t => c.recv(timeout(t))?,
            };
            let len = m.len();
            if len > out.len() {
                return Ok(Some((len, false)));
            }
            m.read(0, &mut out[..len])?;
            m.release()?;
            Ok(Some((len, true)))
        })?;
        let Some((len, fits)) = got else {
            return Err(failed(h, Failure::new(SIVSHM_ERR_AGAIN, "no message now")));
        };
        if !len_out.is_null() {
            // SAFETY: non-NULL and writable by the contract.
            unsafe { len_out.write(len) };
        }
        if !fits {
            let m = format!("a message of {len} bytes does not fit {cap}");
            return Err(failed(h, Failure::new(SIVSHM_ERR_TOO_LARGE, m)));
        }
        ok()
    })
}

/// The eventfd the peer's doorbell signals, for the caller's poll/epoll loop (readable:
/// call sivshm_channel_disarm, then look at the channel), or -1 without one (a device
/// without doorbell: poll the channel). Owned by the channel: do not close or read it.
///
/// # Safety
/// `ch` is NULL or a live channel.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_wake_fd(ch: *const sivshm_channel) -> c_int {
    // SAFETY: NULL or a live handle by the contract; only read.
    match unsafe { ch.as_ref() } {
        Some(h) => h.ch.wake_fd().map_or(-1, |f| f.as_raw_fd()),
        None => SIVSHM_ERR_INVALID as c_int,
    }
}

/// Before sleeping on the wake fd: raises this side's waiting flags (for a message, and
/// for room if a timeout-0 reserve or send found none) and looks again. Returns 1: sleep
/// now; 0: something is ready, do not sleep. Errors: SIVSHM_ERR_INVALID, the fatal ones.
///
/// # Safety
/// `ch` is a live channel used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_arm(ch: *mut sivshm_channel) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        Ok(c_int::from(on_channel(h, |c| c.arm())?))
    })
}

/// After waking (or instead of sleeping): lowers the waiting flags and drains the wake fd.
/// Errors: SIVSHM_ERR_INVALID, SIVSHM_ERR_OS, the fatal ones.
///
/// # Safety
/// `ch` is a live channel used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_disarm(ch: *mut sivshm_channel) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        on_channel(h, |c| c.disarm())?;
        ok()
    })
}

/// Looks at the peer: 1 if it is attached and beating, 0 if it has not attached yet.
/// Errors: SIVSHM_ERR_PEER_CLOSED, SIVSHM_ERR_PEER_GONE, the fatal ones.
///
/// # Safety
/// `ch` is a live channel used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_check_peer(ch: *mut sivshm_channel) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        Ok(c_int::from(on_channel(h, |c| c.check_peer())?))
    })
}

/// Waits up to `timeout_ms` (negative: about 24 days) for the peer to attach.
/// Errors: SIVSHM_ERR_PEER_GONE (not within the time), the fatal ones.
///
/// # Safety
/// `ch` is a live channel used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_wait_for_peer(
    ch: *mut sivshm_channel,
    timeout_ms: c_int,
) -> c_int {
    guarded(|| {
        // SAFETY: a live handle used by this thread only, by the contract.
        let h = need(unsafe { ch.as_mut() }, "ch")?;
        let t = timeout(timeout_ms).unwrap_or(Duration::from_millis(c_int::MAX as u64));
        on_channel(h, |c| c.wait_for_peer(t))?;
        ok()
    })
}

/// One counter (a sivshm_stat) into *out. Errors: SIVSHM_ERR_INVALID.
///
/// # Safety
/// `ch` is a live channel; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_stat(
    ch: *const sivshm_channel,
    which: c_int,
    out: *mut u64,
) -> c_int {
    guarded(|| {
        // SAFETY: NULL or a live handle by the contract; only read.
        let h = need(unsafe { ch.as_ref() }, "ch")?;
        need((!out.is_null()).then_some(()), "out")?;
        let s = h.ch.stats();
        let v = match which {
            0 => s.sent,
            1 => s.received,
            2 => s.rings,
            3 => s.wakeups,
            4 => s.peer_restarts,
            5 => s.ring_errors,
            w => return Err(Failure::invalid(format!("unknown counter {w}"))),
        };
        // SAFETY: non-NULL and writable by the contract.
        unsafe { out.write(v) };
        ok()
    })
}

#[cfg(test)]
mod tests;
