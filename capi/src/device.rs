//! Opening a device node, and what it is.

use super::*;

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
