//! A mapping of shared memory that another VM may write at any time.

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

use crate::Result;

/// A shared, read-write mapping. Every access is bounds-checked: a copy that would leave
/// the mapping returns [`OutOfRange`], an atomic that would returns `None`.
///
/// When the device is removed, the mapping stays valid: the driver puts one page of its own
/// under every page of it (initially all `0xff` bytes, then whatever this VM's processes
/// write into it), so accesses neither fault nor reach anything of the device or another
/// VM. Nothing here tells that it happened: what is read must be checked anyway (the peer
/// is not trusted either), and a failed check, an `ENODEV` from the device or the eventfd's
/// wake-up is how the owner learns of the removal (the channel turns these into
/// [`crate::channel::Error::DeviceGone`]).
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: The mapping is plain shared memory; it can be used and unmapped from any thread.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only allows volatile copies and atomic accesses, which are sound when
// other threads (or VMs) access the same memory concurrently.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes at `offset` of `fd` (any shareable file, e.g. a memfd in tests).
    pub fn new(fd: BorrowedFd<'_>, offset: u64, len: usize) -> Result<Self> {
        // SAFETY: A fresh mapping chosen by the kernel (no fixed address) cannot overlap
        // memory Rust already uses.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                offset,
            )?
        };
        let Some(ptr) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(rustix::io::Errno::NOMEM);
        };
        Ok(Mapping { ptr, len })
    }

    /// Maps `page` (a file of at least one page, offset 0) shared at every page of this
    /// mapping, so that all of them alias that one page: what the driver does to the mappings
    /// of a removed device (see [`crate::model`], which uses it to model a removal in tests).
    pub(crate) fn alias_every_page_to(&self, page: BorrowedFd<'_>) -> Result<()> {
        let step = rustix::param::page_size();
        let mut off = 0;
        while off < self.len {
            // SAFETY: `ptr + off` is a page of this mapping (the kernel rounded its length up
            // to whole pages, and `ptr` is page aligned); MAP_FIXED replaces that page in one
            // step for every thread with another shared, readable and writable page. Nothing
            // holds a Rust reference to plain bytes of the mapping (copies are volatile); the
            // `&AtomicU32`/`&AtomicU64` it hands out stay valid (they point to mapped memory
            // that may change at any time, which atomics allow), and nothing else of this
            // process lives in the range.
            unsafe {
                mmap(
                    self.ptr.as_ptr().add(off).cast(),
                    step,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED | MapFlags::FIXED,
                    page,
                    0,
                )?
            };
            off += step;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn range(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // SAFETY: `offset <= end <= self.len`, so the pointer stays inside the mapping.
        (end <= self.len).then(|| unsafe { self.ptr.as_ptr().add(offset) })
    }

    /// The start of `offset..offset + len` for a copy, or why there is none.
    #[inline]
    fn copy_range(&self, offset: usize, len: usize) -> std::result::Result<*mut u8, OutOfRange> {
        self.range(offset, len).ok_or(OutOfRange {
            offset,
            len,
            mapping: self.len,
        })
    }

    /// Copies `buf.len()` bytes at `offset` out of the shared memory.
    #[inline]
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> std::result::Result<(), OutOfRange> {
        let src = self.copy_range(offset, buf.len())?;
        // SAFETY: `src..src + len` is inside the mapping and read with volatile accesses only,
        // so concurrent writers cannot make it undefined behaviour, only return torn data,
        // which the caller's protocol must detect; `buf` is an exclusive slice, apart from it.
        unsafe { shared_copy::<false>(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `buf` into the shared memory at `offset`.
    #[inline]
    pub fn write(&self, offset: usize, buf: &[u8]) -> std::result::Result<(), OutOfRange> {
        let dst = self.copy_range(offset, buf.len())?;
        // SAFETY: As in `read`, with the roles swapped: `dst` is written with volatile
        // accesses only, `buf` is a shared borrow nobody writes during the copy.
        unsafe { shared_copy::<true>(buf.as_ptr(), dst, buf.len()) };
        Ok(())
    }

    /// The naturally aligned `u32` at `offset`, as an atomic shared with the peers.
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        let p = self.range(offset, 4)?;
        if !(p as usize).is_multiple_of(4) {
            return None;
        }
        // SAFETY: In range and aligned (checked above); an atomic may be modified concurrently
        // by other processes; the reference lives as long as `&self`, the mapping.
        Some(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    /// The naturally aligned `u64` at `offset`, as an atomic shared with the peers.
    #[inline]
    pub fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        let p = self.range(offset, 8)?;
        if !(p as usize).is_multiple_of(8) {
            return None;
        }
        // SAFETY: As in `atomic_u32`.
        Some(unsafe { AtomicU64::from_ptr(p.cast()) })
    }
}

/// A copy of `len` bytes at `offset` would leave a mapping of `mapping` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    pub offset: usize,
    pub len: usize,
    pub mapping: usize,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes at offset {:#x} leave the mapping of {:#x} bytes",
            self.len, self.offset, self.mapping
        )
    }
}

impl std::error::Error for OutOfRange {}

impl From<OutOfRange> for std::io::Error {
    fn from(e: OutOfRange) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// The widest volatile access the target always has: SSE2's 16 bytes on x86-64 (what the
/// C library's `memcpy` uses on a CPU without AVX), 8 bytes elsewhere.
#[cfg(target_arch = "x86_64")]
type Wide = core::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Wide = u64;

const WIDE: usize = core::mem::size_of::<Wide>();

/// Wide accesses per step of the main loop: under emulation (QEMU TCG) every guest
/// instruction costs, so the fewer loop instructions per byte the better; eight 16-byte
/// values still fit in the 16 vector registers without spilling.
const STEP: usize = 8;

/// Up to this many 8-byte words at an 8-aligned shared address are copied word by word.
const SMALL_WORDS: usize = 4;

/// Copies `len` bytes between shared memory and private memory: into the shared memory at
/// `dst` if `TO_SHARED`, else out of the shared memory at `src`.
///
/// Only the shared side needs volatile accesses (a peer may write it at any time: it can
/// tear the data, which the caller's protocol detects, but never make the copy undefined
/// behaviour); the private side is an ordinary Rust slice. So the copy aligns the *shared*
/// side and uses aligned volatile wide accesses there, and plain unaligned accesses on the
/// private side: every copy runs at full width whatever the two addresses' relative
/// alignment. (The channel's payloads follow an 8-byte record header, so half of them sit at
/// 8 modulo 16 from a 16-aligned buffer: a copy that needed both sides equally aligned fell
/// back to 8-byte words for them, twice the accesses.)
///
/// # Safety
///
/// `src` must be valid for `len` bytes of reads and `dst` for `len` bytes of writes; the
/// private side (`src` if `TO_SHARED`, else `dst`) must not be accessed by anyone else
/// during the copy (it comes from a Rust slice), and the two ranges must not overlap.
unsafe fn shared_copy<const TO_SHARED: bool>(src: *const u8, dst: *mut u8, len: usize) {
    let shared = if TO_SHARED {
        dst as usize
    } else {
        src as usize
    };
    // The channel's small accesses (a record's stamps, a message of a few words): whole
    // words at an 8-aligned shared address, without the general path's head and tail work.
    if len <= SMALL_WORDS * 8 && (shared | len).is_multiple_of(8) {
        let mut i = 0;
        while i < len {
            // SAFETY: `i + 8 <= len` (`len` is a multiple of 8), so the access is in the
            // caller's ranges, and `shared + i` is 8-aligned.
            unsafe { copy_word::<TO_SHARED, u64>(src.add(i), dst.add(i)) };
            i += 8;
        }
        return;
    }
    let head = (shared.wrapping_neg() % WIDE).min(len);
    // SAFETY: `head <= len`; the caller guarantees the ranges, and `shared` is the shared
    // side's address, whose alignment `copy_small` follows.
    unsafe { copy_small::<TO_SHARED>(src, dst, head, shared) };
    let mut i = head;
    while i + STEP * WIDE <= len {
        // SAFETY: `i + STEP * WIDE <= len`, so every access is in the ranges; the shared
        // side's `shared + i` is `WIDE`-aligned (the head loop made it so, and `i` grows by
        // multiples of `WIDE`), and the private side is accessed unaligned. `Wide` has no
        // invalid bit patterns. All loads come before the stores: the ranges do not overlap.
        unsafe {
            let (s, d) = (src.add(i).cast::<Wide>(), dst.add(i).cast::<Wide>());
            let v: [Wide; STEP] = core::array::from_fn(|k| load::<TO_SHARED>(s.add(k)));
            for (k, v) in v.into_iter().enumerate() {
                store::<TO_SHARED>(d.add(k), v);
            }
        }
        i += STEP * WIDE;
    }
    while i + WIDE <= len {
        // SAFETY: As above, one access.
        unsafe {
            let v = load::<TO_SHARED>(src.add(i).cast::<Wide>());
            store::<TO_SHARED>(dst.add(i).cast::<Wide>(), v);
        }
        i += WIDE;
    }
    // SAFETY: `i <= len`, the rest of the ranges.
    unsafe { copy_small::<TO_SHARED>(src.add(i), dst.add(i), len - i, shared + i) };
}

/// Copies fewer than `WIDE` bytes (the head before the shared side is aligned, or the tail
/// after the last wide access) in as few accesses as the shared side's alignment allows:
/// 8, 4, 2 and 1 bytes, each naturally aligned on the shared side (volatile there), unaligned
/// on the private side. A channel's record header and payload start 8-byte aligned, so its
/// small reads and writes are a word or two instead of a loop of bytes.
///
/// # Safety
///
/// As [`shared_copy`], for `len` bytes; `shared` is the address of the shared side's first
/// byte.
#[inline(always)]
unsafe fn copy_small<const TO_SHARED: bool>(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    shared: usize,
) {
    let mut i = 0;
    while i < len {
        let at = shared + i;
        let left = len - i;
        // SAFETY: `i + n <= len` for the `n` chosen, and `at` is `n`-aligned: the caller's
        // ranges, the shared side's alignment for a volatile access of `n` bytes.
        unsafe {
            if left >= 8 && at.is_multiple_of(8) {
                copy_word::<TO_SHARED, u64>(src.add(i), dst.add(i));
                i += 8;
            } else if left >= 4 && at.is_multiple_of(4) {
                copy_word::<TO_SHARED, u32>(src.add(i), dst.add(i));
                i += 4;
            } else if left >= 2 && at.is_multiple_of(2) {
                copy_word::<TO_SHARED, u16>(src.add(i), dst.add(i));
                i += 2;
            } else {
                copy_byte::<TO_SHARED>(src.add(i), dst.add(i));
                i += 1;
            }
        }
    }
}

/// Copies one `T` (an unsigned integer), volatile and aligned on the shared side, unaligned
/// on the private one.
///
/// # Safety
///
/// `src` is valid for reading a `T` and `dst` for writing one; the shared side is aligned.
#[inline(always)]
unsafe fn copy_word<const TO_SHARED: bool, T: Copy>(src: *const u8, dst: *mut u8) {
    let (s, d) = (src.cast::<T>(), dst.cast::<T>());
    // SAFETY: The caller's guarantees.
    unsafe {
        match TO_SHARED {
            true => d.write_volatile(s.read_unaligned()),
            false => d.write_unaligned(s.read_volatile()),
        }
    }
}

/// Loads one wide value: volatile and aligned from the shared side, plain and unaligned from
/// the private one.
///
/// # Safety
///
/// `p` is valid for reads of a `Wide`, and aligned to it if it is on the shared side.
#[inline(always)]
unsafe fn load<const TO_SHARED: bool>(p: *const Wide) -> Wide {
    // SAFETY: The caller's guarantees.
    unsafe {
        match TO_SHARED {
            true => p.read_unaligned(),
            false => p.read_volatile(),
        }
    }
}

/// Stores one wide value: volatile and aligned to the shared side, plain and unaligned to
/// the private one.
///
/// # Safety
///
/// `p` is valid for writes of a `Wide`, and aligned to it if it is on the shared side.
#[inline(always)]
unsafe fn store<const TO_SHARED: bool>(p: *mut Wide, v: Wide) {
    // SAFETY: The caller's guarantees.
    unsafe {
        match TO_SHARED {
            true => p.write_volatile(v),
            false => p.write_unaligned(v),
        }
    }
}

/// Copies one byte, volatile on the shared side.
///
/// # Safety
///
/// `src` is valid for a read and `dst` for a write of one byte.
#[inline(always)]
unsafe fn copy_byte<const TO_SHARED: bool>(src: *const u8, dst: *mut u8) {
    // SAFETY: The caller's guarantees; a byte is always aligned.
    unsafe {
        match TO_SHARED {
            true => dst.write_volatile(src.read()),
            false => dst.write(src.read_volatile()),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + len` is our mapping (of the device, or of the pages that stand
        // in for it), and nothing borrowed from it outlives `self` (accessors borrow `&self`).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    fn memfd(len: u64) -> std::os::fd::OwnedFd {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        fd
    }

    #[test]
    fn two_mappings_of_one_file_see_each_others_writes() {
        let fd = memfd(8192);
        let a = Mapping::new(fd.as_fd(), 0, 8192).unwrap();
        let b = Mapping::new(fd.as_fd(), 0, 8192).unwrap();
        a.write(4095, b"across a page").unwrap();
        let mut buf = [0u8; 13];
        b.read(4095, &mut buf).unwrap();
        assert_eq!(&buf, b"across a page");
        a.atomic_u64(16).unwrap().store(7, Ordering::Release);
        assert_eq!(b.atomic_u64(16).unwrap().load(Ordering::Acquire), 7);
    }

    #[test]
    fn copies_are_exact_at_every_alignment_and_length() {
        let fd = memfd(4096);
        let m = Mapping::new(fd.as_fd(), 0, 4096).unwrap();
        let data: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in 0..40 {
            for len in [
                0, 1, 7, 8, 15, 16, 24, 31, 32, 40, 63, 64, 65, 127, 128, 129, 300, 650,
            ] {
                for src in 0..3 {
                    m.write(off, &vec![0xee; len + 2]).unwrap();
                    m.write(off, &data[src..src + len]).unwrap();
                    let mut back = vec![0u8; len + 2];
                    m.read(off, &mut back).unwrap();
                    assert_eq!(&back[..len], &data[src..src + len], "off {off} len {len}");
                    assert_eq!(&back[len..], &[0xee, 0xee], "nothing written beyond");
                }
            }
        }
    }

    #[test]
    fn out_of_range_and_misaligned_accesses_are_refused() {
        let fd = memfd(4096);
        let m = Mapping::new(fd.as_fd(), 0, 4096).unwrap();
        let mut buf = [0u8; 2];
        assert_eq!(
            m.read(4095, &mut buf),
            Err(OutOfRange {
                offset: 4095,
                len: 2,
                mapping: 4096
            })
        );
        let e = m.write(usize::MAX, &buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "2 bytes at offset {:#x} leave the mapping of 0x1000 bytes",
                usize::MAX
            )
        );
        assert!(m.atomic_u32(4094).is_none());
        assert!(m.atomic_u32(2).is_none());
        assert!(m.atomic_u64(4).is_none());
        assert!(m.atomic_u64(4088).is_some());
        assert!(m.read(4094, &mut buf).is_ok());
    }

    #[test]
    fn aliasing_every_page_to_one_page_models_a_removed_device() {
        let fd = memfd(3 * 4096);
        let a = Mapping::new(fd.as_fd(), 0, 3 * 4096).unwrap();
        let other = memfd(4096);
        let c = Mapping::new(other.as_fd(), 0, 4096).unwrap();
        a.write(0, b"shared").unwrap();
        c.write(0, b"spared").unwrap();
        let page = crate::model::stand_in_page().unwrap();
        a.alias_every_page_to(page.as_fd()).unwrap();
        // Every byte reads 0xff, every index u64::MAX.
        let mut buf = [0u8; 6];
        a.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xff; 6]);
        assert_eq!(
            a.atomic_u64(8200).unwrap().load(Ordering::Acquire),
            u64::MAX
        );
        // Writable, and one page behind all: a write shows at the same offset of every page.
        a.write(100, b"mine").unwrap();
        for p in 0..3 {
            a.read(p * 4096 + 100, &mut buf[..4]).unwrap();
            assert_eq!(&buf[..4], b"mine", "page {p}");
        }
        // The file is untouched, and so is a mapping of another file.
        let b = Mapping::new(fd.as_fd(), 0, 3 * 4096).unwrap();
        b.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"shared");
        c.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"spared");
    }
}
