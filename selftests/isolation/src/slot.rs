//! One worker's slot: the header the manager and that worker agree on, then the batch.
//!
//! Under SIVSHM a slot is a worker's whole segment (its own device); under IVSHMEM it is the
//! worker's window, by convention, of the one region every VM maps. The header is read and
//! written through atomics only; everything read from it is untrusted.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sivshm::Mapping;

pub const MAGIC: u64 = 0x3130_4f53_4956_4953; // "SIVISO01"
/// The batch starts one page into the slot.
pub const DATA: usize = 4096;

const OFF_MAGIC: usize = 0;
const OFF_PHASE: usize = 8;
const OFF_STATE: usize = 12;
const OFF_LEN: usize = 16;
const OFF_SUM: usize = 24;
const OFF_WORKER_ID: usize = 32;
const OFF_MANAGER_ID: usize = 36;

/// What the manager asks of a worker, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Phase {
    /// The batch is in the slot: check it.
    Batch = 1,
    /// (Honest worker) start counting interrupts: the attack is about to start.
    Watch = 2,
    /// (Rogue) attack now.
    Attack = 3,
    /// (Honest worker) the attack is over: judge.
    Check = 4,
}

/// What a worker reports, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum State {
    Ready = 1,
    Watching = 2,
    Attacked = 3,
    Checked = 4,
}

/// A slot's header and data inside a mapping.
pub struct Slot<'a> {
    m: &'a Mapping,
    base: usize,
    len: usize,
}

impl<'a> Slot<'a> {
    /// The slot of `len` bytes at `base` of `m`.
    pub fn new(m: &'a Mapping, base: usize, len: usize) -> Result<Self> {
        match base.checked_add(len) {
            Some(end) if end <= m.len() && len > DATA && base.is_multiple_of(8) => {
                Ok(Slot { m, base, len })
            }
            _ => bail!(
                "a slot of {len} bytes at {base} does not fit a mapping of {} bytes",
                m.len()
            ),
        }
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        self.m
            .atomic_u64(self.base + off)
            .expect("header offsets are inside the slot")
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        self.m
            .atomic_u32(self.base + off)
            .expect("header offsets are inside the slot")
    }

    /// Room for a batch.
    pub fn capacity(&self) -> usize {
        self.len - DATA
    }

    /// Manager: resets the header and puts `batch` in the slot, then announces it together
    /// with the manager's own peer id on the device that reaches this slot.
    pub fn publish(&self, batch: &[u8], manager_peer_id: Option<u32>) -> Result<()> {
        if batch.len() > self.capacity() {
            bail!("a batch of {} bytes does not fit", batch.len());
        }
        self.u32(OFF_STATE).store(0, Ordering::Relaxed);
        self.u32(OFF_WORKER_ID).store(0, Ordering::Relaxed);
        let id = manager_peer_id.map_or(0, |id| id.saturating_add(1));
        self.u32(OFF_MANAGER_ID).store(id, Ordering::Relaxed);
        self.m
            .write(self.base + DATA, batch)
            .expect("checked against capacity");
        self.u64(OFF_LEN)
            .store(batch.len() as u64, Ordering::Relaxed);
        self.u64(OFF_SUM).store(fnv1a(batch), Ordering::Relaxed);
        self.u64(OFF_MAGIC).store(MAGIC, Ordering::Relaxed);
        self.set_phase(Phase::Batch);
        Ok(())
    }

    pub fn set_phase(&self, p: Phase) {
        self.u32(OFF_PHASE).store(p as u32, Ordering::Release);
    }

    pub fn set_state(&self, s: State) {
        self.u32(OFF_STATE).store(s as u32, Ordering::Release);
    }

    /// Worker: announces its peer id (for the report; nobody needs it to ring).
    pub fn announce(&self, peer_id: Option<u32>) {
        let id = peer_id.map_or(0, |id| id.saturating_add(1));
        self.u32(OFF_WORKER_ID).store(id, Ordering::Relaxed);
    }

    /// The manager's peer id as it announced it, if it did.
    pub fn manager_id(&self) -> Option<u32> {
        self.u32(OFF_MANAGER_ID)
            .load(Ordering::Acquire)
            .checked_sub(1)
    }

    /// Waits until the manager asks for at least `p`.
    pub fn wait_phase(&self, p: Phase, timeout: Duration) -> Result<()> {
        wait(timeout, || {
            self.u64(OFF_MAGIC).load(Ordering::Acquire) == MAGIC
                && self.u32(OFF_PHASE).load(Ordering::Acquire) >= p as u32
        })
        .then_some(())
        .ok_or_else(|| anyhow::anyhow!("the manager did not ask for {p:?} within {timeout:?}"))
    }

    /// Waits until the worker reports at least `s`.
    pub fn wait_state(&self, s: State, timeout: Duration) -> Result<()> {
        wait(timeout, || {
            self.u32(OFF_STATE).load(Ordering::Acquire) >= s as u32
        })
        .then_some(())
        .ok_or_else(|| anyhow::anyhow!("the worker did not report {s:?} within {timeout:?}"))
    }

    /// The batch as it is now, if its announced length is sane, and whether it matches the
    /// checksum the manager published with it.
    pub fn batch(&self) -> Option<(Vec<u8>, bool)> {
        let len = usize::try_from(self.u64(OFF_LEN).load(Ordering::Acquire)).ok()?;
        if len > self.capacity() {
            return None;
        }
        let mut buf = vec![0; len];
        self.m.read(self.base + DATA, &mut buf).ok()?;
        let intact = fnv1a(&buf) == self.u64(OFF_SUM).load(Ordering::Relaxed);
        Some((buf, intact))
    }
}

/// Polls `f` every millisecond until it holds or `timeout` passes.
fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// FNV-1a.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The text a worker's batch starts with: what the rogue looks for in its memory.
pub fn marker(worker: usize) -> Vec<u8> {
    format!("SIVSHM-ISOLATION-BATCH-FOR-WORKER-{worker}:").into_bytes()
}

/// Worker `worker`'s batch of `len` bytes: its marker, then bytes derived from `nonce`.
pub fn batch(worker: usize, nonce: u64, len: usize) -> Vec<u8> {
    let mut v = marker(worker);
    let mut x = nonce ^ (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes()[..(len - v.len()).min(8)]);
    }
    v.truncate(len);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn memfd(len: usize) -> Mapping {
        let fd = rustix::fs::memfd_create("slot", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len as u64).unwrap();
        Mapping::new(fd.as_fd(), 0, len).unwrap()
    }

    #[test]
    fn a_published_batch_reads_back_intact_and_a_scribbled_one_does_not() {
        let m = memfd(1 << 16);
        let s = Slot::new(&m, 1 << 15, 1 << 15).unwrap();
        let b = batch(1, 42, 10_000);
        assert!(b.starts_with(&marker(1)));
        s.publish(&b, Some(7)).unwrap();
        assert_eq!(s.manager_id(), Some(7));
        assert_eq!(s.batch(), Some((b.clone(), true)));
        m.write((1 << 15) + DATA + 100, &[0xff; 8]).unwrap();
        assert!(!s.batch().unwrap().1);
    }

    #[test]
    fn slots_outside_the_mapping_and_lengths_beyond_the_slot_are_refused() {
        let m = memfd(1 << 16);
        assert!(Slot::new(&m, 1 << 15, (1 << 15) + 4096).is_err());
        assert!(Slot::new(&m, usize::MAX, 8192).is_err());
        let s = Slot::new(&m, 0, 8192).unwrap();
        assert!(s.publish(&[0; 8192], None).is_err());
        // A hostile length in the header is not trusted.
        m.atomic_u64(OFF_LEN)
            .unwrap()
            .store(u64::MAX, Ordering::Relaxed);
        assert_eq!(s.batch(), None);
    }

    #[test]
    fn batches_differ_by_worker_and_nonce() {
        assert_ne!(batch(0, 1, 256), batch(1, 1, 256));
        assert_ne!(batch(0, 1, 256), batch(0, 2, 256));
        assert_eq!(batch(0, 1, 256).len(), 256);
    }
}
