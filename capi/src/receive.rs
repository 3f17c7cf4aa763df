//! The receiving side: recv, read, release (or leave); receive in one call.

use super::*;

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

/// Stores the little-endian 64-bit word at `offset` of the message in `*out`, read in place
/// (one load where it is 8-byte aligned in the ring): for a message's stamps (a sequence
/// number, a length). The peer may change it while it is read: check it. Errors:
/// SIVSHM_ERR_INVALID, SIVSHM_ERR_TOO_LARGE (past the end), the fatal ones.
///
/// # Safety
/// `msg` is a live message (its channel live, both used by this thread only); `out` is
/// valid for a write of a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn sivshm_message_read_u64(
    msg: *mut sivshm_message,
    offset: usize,
    out: *mut u64,
) -> c_int {
    guarded(|| {
        // SAFETY: the contract above.
        let (m, h) = unsafe { message(msg)? };
        // SAFETY: `out` is valid for a write by the contract (NULL is refused).
        let out = need(unsafe { out.as_mut() }, "out")?;
        let aside = need(m.aside.take(), "an unfinished message")?;
        let Some(taken) = h.ch.resume_message(aside) else {
            return Err(failed(h, Failure::invalid("stale message")));
        };
        let word = taken.read_u64(offset);
        m.aside = Some(taken.set_aside());
        *out = word.map_err(|e| failed(h, e.into()))?;
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
