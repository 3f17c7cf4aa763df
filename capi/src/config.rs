//! A channel's configuration, set option by option.

use super::*;

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
