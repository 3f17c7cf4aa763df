//! A window of a shared mapping: the bytes one channel owns, addressed from its start.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use super::Error;
use crate::Mapping;

/// `len` bytes at `base` of a mapping shared with the peer. Accesses are relative to `base`,
/// bounds-checked against the window (not only the mapping), and go through the mapping's
/// volatile copies and atomics: nothing here hands out a reference to shared bytes.
#[derive(Clone)]
pub(super) struct Window {
    map: Arc<Mapping>,
    base: usize,
    len: usize,
}

impl Window {
    pub(super) fn new(map: Arc<Mapping>, base: usize, len: usize) -> Result<Self, Error> {
        let end = base
            .checked_add(len)
            .ok_or(Error::Geometry("window overflows"))?;
        if end > map.len() {
            return Err(Error::Geometry("window ends beyond the mapping"));
        }
        if !base.is_multiple_of(64) {
            return Err(Error::Geometry(
                "window does not start on a 64-byte boundary",
            ));
        }
        Ok(Window { map, base, len })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn at(&self, offset: usize, len: usize) -> Result<usize, Error> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(Error::Corrupt("access outside the channel's window")),
        }
    }

    #[inline]
    pub(super) fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        let at = self.at(offset, buf.len())?;
        self.map
            .read(at, buf)
            .map_err(|_| Error::Corrupt("access outside the mapping"))
    }

    #[inline]
    pub(super) fn write(&self, offset: usize, buf: &[u8]) -> Result<(), Error> {
        let at = self.at(offset, buf.len())?;
        self.map
            .write(at, buf)
            .map_err(|_| Error::Corrupt("access outside the mapping"))
    }

    #[inline]
    pub(super) fn u32(&self, offset: usize) -> Result<&AtomicU32, Error> {
        let at = self.at(offset, 4)?;
        self.map
            .atomic_u32(at)
            .ok_or(Error::Corrupt("misaligned atomic"))
    }

    #[inline]
    pub(super) fn u64(&self, offset: usize) -> Result<&AtomicU64, Error> {
        let at = self.at(offset, 8)?;
        self.map
            .atomic_u64(at)
            .ok_or(Error::Corrupt("misaligned atomic"))
    }
}
