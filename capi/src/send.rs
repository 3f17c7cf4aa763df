//! The sending side: reserve, write, commit (or cancel), flush; send in one call.

use super::*;

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
    // SAFETY: the caller's contract, passed on.
    unsafe { send_as(ch, buf, len, timeout_ms, Commit::Flushed) }
}

/// Sends `len` bytes from `buf` as one message of a batch (reserve, write and commit in one
/// call, without a flush): the peer sees it at this side's next sivshm_channel_flush() (or
/// any call that waits, or once a sixteenth of the ring is committed), and is woken then.
/// The streaming sender's call for small messages: one flush per batch of them. Waits up to
/// `timeout_ms` for room (-1: as long as the peer lives; 0: SIVSHM_ERR_AGAIN if no room
/// now). Errors: as sivshm_channel_reserve.
///
/// # Safety
/// `ch` is a live channel used by this thread only; `buf` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sivshm_channel_send_batched(
    ch: *mut sivshm_channel,
    buf: *const c_void,
    len: usize,
    timeout_ms: c_int,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { send_as(ch, buf, len, timeout_ms, Commit::Batched) }
}

/// How [`send_as`] commits: published and flushed (`send`), or as one of a batch.
enum Commit {
    Flushed,
    Batched,
}

/// `sivshm_channel_send` and `sivshm_channel_send_batched`.
///
/// # Safety
/// As theirs: `ch` is a live channel used by this thread only; `buf` valid for `len` bytes.
unsafe fn send_as(
    ch: *mut sivshm_channel,
    buf: *const c_void,
    len: usize,
    timeout_ms: c_int,
    commit: Commit,
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
        let sent = on_channel(h, |c| match (timeout_ms, &commit) {
            (0, Commit::Flushed) => c.try_send(data),
            (0, Commit::Batched) => c.try_send_batched(data),
            (t, Commit::Flushed) => c.send(data, timeout(t)).map(|()| true),
            (t, Commit::Batched) => c.send_batched(data, timeout(t)).map(|()| true),
        })?;
        if !sent {
            return Err(failed(h, Failure::new(SIVSHM_ERR_AGAIN, "no room now")));
        }
        ok()
    })
}
