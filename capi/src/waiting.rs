//! The caller's own event loop (wake fd, arm, disarm), the peer's liveness and the statistics.

use super::*;

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
