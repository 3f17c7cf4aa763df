//! Attaching a channel (to a device, or to memory and eventfds the caller wires), and closing it.

use super::*;

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
