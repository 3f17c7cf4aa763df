//! The layout both sides agree on inside one worker's segment: a header page, then data.
//!
//! The manager writes a round's data and its length and checksum, then publishes the round
//! number (release). The worker, seeing a new round (acquire), copies the data out, checks
//! it and publishes its result the same way. On a device with a doorbell each side rings the
//! other after publishing and sleeps on an eventfd while waiting; on a plain device they
//! poll. The peer is untrusted: lengths are checked against the segment before use.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sivshm::{Device, EventFd, Mapping};

pub const MAGIC: u64 = 0x4242_4d48_5356_4953; // "SIVSHMBB"
pub const VERSION: u32 = 1;
pub const DATA: usize = 4096;

pub const RUNNING: u32 = 1;
pub const DONE: u32 = 2;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_STATE: usize = 12;
const OFF_ROUND: usize = 16;
const OFF_LEN: usize = 24;
const OFF_SUM: usize = 32;
const OFF_RESULT_ROUND: usize = 40;
const OFF_RESULT_SUM: usize = 48;
/// Peer ids + 1 (0: not known yet), for the doorbell.
const OFF_MANAGER_ID: usize = 56;
const OFF_WORKER_ID: usize = 60;

/// Which side of the mailbox this is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Manager,
    Worker,
}

/// The doorbell of one side: its device (to ring the other side) and the eventfd that the
/// other side's rings signal.
pub struct Bell<'a> {
    dev: &'a Device,
    wake: EventFd,
    /// Interrupts received, for the report.
    wakeups: std::cell::Cell<u64>,
}

impl<'a> Bell<'a> {
    /// Binds an eventfd to vector 0 of `dev`, or `None` if it has no doorbell interrupts.
    pub fn new(dev: &'a Device) -> Result<Option<Self>> {
        if !dev.info().doorbell || dev.info().nr_vectors == 0 {
            return Ok(None);
        }
        let wake = dev
            .bind_eventfd(0)
            .context("binding an eventfd to vector 0")?;
        Ok(Some(Bell {
            dev,
            wake,
            wakeups: 0.into(),
        }))
    }

    pub fn wakeups(&self) -> u64 {
        self.wakeups.get()
    }
}

/// Typed access to the header of a mapped segment. Several mailboxes may share one bell: under
/// IVSHMEM the manager reaches every worker's window through one device.
pub struct Mailbox<'a> {
    m: &'a Mapping,
    side: Side,
    bell: Option<&'a Bell<'a>>,
}

impl<'a> Mailbox<'a> {
    pub fn new(m: &'a Mapping, side: Side, bell: Option<&'a Bell<'a>>) -> Result<Self> {
        if m.len() <= DATA {
            bail!("segment of {} bytes is too small for a mailbox", m.len());
        }
        Ok(Mailbox { m, side, bell })
    }

    pub fn bell(&self) -> Option<&'a Bell<'a>> {
        self.bell
    }

    fn own_id_slot(&self) -> usize {
        match self.side {
            Side::Manager => OFF_MANAGER_ID,
            Side::Worker => OFF_WORKER_ID,
        }
    }

    fn other_id_slot(&self) -> usize {
        match self.side {
            Side::Manager => OFF_WORKER_ID,
            Side::Worker => OFF_MANAGER_ID,
        }
    }

    /// Announces our peer id so that the other side can ring us.
    fn announce(&self) {
        if let Some(b) = self.bell {
            let id = b.dev.info().peer_id.map_or(0, |id| id + 1);
            self.u32(self.own_id_slot()).store(id, Ordering::Release);
        }
    }

    /// Rings the other side, once it has announced itself.
    fn ring(&self) -> Result<()> {
        let Some(b) = self.bell else {
            return Ok(());
        };
        match self.u32(self.other_id_slot()).load(Ordering::Acquire) {
            0 => Ok(()),
            id => b.dev.ring(id - 1, 0).context("ringing the other side"),
        }
    }

    /// Waits until `f` yields: on the eventfd with a doorbell, else by polling.
    fn wait_for<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let Some(b) = self.bell else {
            return wait(timeout, f);
        };
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            let left = end.checked_duration_since(Instant::now())?;
            // Rings are only sent after the state they announce is published, and the
            // eventfd keeps counting until it is read: no wake-up can be lost between the
            // check above and this wait. A wake-up meant for another mailbox on the same
            // bell only costs that one a check: it checks before it waits.
            match b.wake.wait(Some(left)) {
                Ok(0) | Err(_) if Instant::now() >= end => return f(),
                Ok(n) => b.wakeups.set(b.wakeups.get() + n),
                Err(_) => return None,
            }
        }
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        self.m
            .atomic_u64(off)
            .expect("header offsets are in range and aligned")
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        self.m
            .atomic_u32(off)
            .expect("header offsets are in range and aligned")
    }

    /// Room for data.
    pub fn capacity(&self) -> usize {
        self.m.len() - DATA
    }

    /// Manager: resets the header and opens the mailbox.
    pub fn open(&self) {
        for off in [
            OFF_ROUND,
            OFF_LEN,
            OFF_SUM,
            OFF_RESULT_ROUND,
            OFF_RESULT_SUM,
        ] {
            self.u64(off).store(0, Ordering::Relaxed);
        }
        self.u32(OFF_WORKER_ID).store(0, Ordering::Relaxed);
        self.announce();
        self.u32(OFF_VERSION).store(VERSION, Ordering::Relaxed);
        self.u32(OFF_STATE).store(RUNNING, Ordering::Relaxed);
        self.u64(OFF_MAGIC).store(MAGIC, Ordering::Release);
    }

    /// Manager: with a doorbell, waits until the worker announced itself, so that no ring
    /// goes out before the worker can receive it.
    pub fn wait_worker(&self, timeout: Duration) -> Result<()> {
        if self.bell.is_none() {
            return Ok(());
        }
        wait(timeout, || {
            (self.u32(OFF_WORKER_ID).load(Ordering::Acquire) != 0).then_some(())
        })
        .ok_or_else(|| anyhow::anyhow!("the worker did not show up within {timeout:?}"))
    }

    pub fn close(&self) -> Result<()> {
        self.u32(OFF_STATE).store(DONE, Ordering::Release);
        self.ring()
    }

    /// Manager: publishes `data` as round `round`.
    pub fn send(&self, round: u64, data: &[u8], sum: u64) -> Result<()> {
        if data.len() > self.capacity() {
            bail!("{} bytes do not fit in {}", data.len(), self.capacity());
        }
        self.m.write(DATA, data).expect("checked against capacity");
        self.u64(OFF_LEN)
            .store(data.len() as u64, Ordering::Relaxed);
        self.u64(OFF_SUM).store(sum, Ordering::Relaxed);
        self.u64(OFF_ROUND).store(round, Ordering::Release);
        self.ring()
    }

    /// Manager: waits for the worker's result of `round`.
    pub fn wait_result(&self, round: u64, timeout: Duration) -> Result<u64> {
        self.wait_for(timeout, || {
            (self.u64(OFF_RESULT_ROUND).load(Ordering::Acquire) == round)
                .then(|| self.u64(OFF_RESULT_SUM).load(Ordering::Relaxed))
        })
        .ok_or_else(|| anyhow::anyhow!("no result for round {round} within {timeout:?}"))
    }

    /// Worker: waits for the manager to open the mailbox, then announces itself.
    pub fn wait_open(&self, timeout: Duration) -> Result<()> {
        wait(timeout, || {
            (self.u64(OFF_MAGIC).load(Ordering::Acquire) == MAGIC
                && self.u32(OFF_VERSION).load(Ordering::Relaxed) == VERSION)
                .then_some(())
        })
        .ok_or_else(|| {
            anyhow::anyhow!("the manager did not open the mailbox within {timeout:?}")
        })?;
        self.announce();
        Ok(())
    }

    /// Worker: the next round after `last` with its data copied into `buf`, or `None` when
    /// the manager is done.
    pub fn receive(
        &self,
        last: u64,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<(u64, u64)>> {
        let got = self.wait_for(timeout, || {
            let round = self.u64(OFF_ROUND).load(Ordering::Acquire);
            if round > last {
                Some(Some(round))
            } else if self.u32(OFF_STATE).load(Ordering::Acquire) == DONE {
                Some(None)
            } else {
                None
            }
        });
        let Some(round) = got.ok_or_else(|| anyhow::anyhow!("no data within {timeout:?}"))? else {
            return Ok(None);
        };
        let len = self.u64(OFF_LEN).load(Ordering::Relaxed);
        let sum = self.u64(OFF_SUM).load(Ordering::Relaxed);
        let len = usize::try_from(len).ok().filter(|&l| l <= self.capacity());
        let Some(len) = len else {
            bail!("the manager announced a length beyond the segment");
        };
        buf.resize(len, 0);
        self.m.read(DATA, buf).expect("checked against capacity");
        Ok(Some((round, sum)))
    }

    /// Worker: publishes its result for `round`.
    pub fn reply(&self, round: u64, sum: u64) -> Result<()> {
        self.u64(OFF_RESULT_SUM).store(sum, Ordering::Relaxed);
        self.u64(OFF_RESULT_ROUND).store(round, Ordering::Release);
        self.ring()
    }
}

/// Polls `f` until it yields, backing off from spinning to sleeping.
fn wait<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    let mut spins = 0u32;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        spins += 1;
        if spins < 1000 {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// FNV-1a, the checksum both sides compute.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The reproducible data of one round for one worker.
pub fn payload(worker: usize, round: u64, len: usize) -> Vec<u8> {
    let mut x = (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes()[..(len - v.len()).min(8)]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_per_worker_and_round_and_have_the_asked_length() {
        assert_eq!(payload(0, 1, 13).len(), 13);
        assert_ne!(payload(0, 1, 64), payload(1, 1, 64));
        assert_ne!(payload(0, 1, 64), payload(0, 2, 64));
        assert_eq!(payload(3, 9, 64), payload(3, 9, 64));
    }

    #[test]
    fn fnv1a_known_value() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

#[cfg(test)]
mod exchange_tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_worker_thread_verifies_every_round_sent_through_a_shared_mapping() {
        let fd = rustix::fs::memfd_create("seg", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 1 << 16).unwrap();
        let manager_map = Mapping::new(fd.as_fd(), 0, 1 << 16).unwrap();
        let worker_map = Mapping::new(fd.as_fd(), 0, 1 << 16).unwrap();
        let t = Duration::from_secs(10);
        let worker = std::thread::spawn(move || {
            let mb = Mailbox::new(&worker_map, Side::Worker, None).unwrap();
            mb.wait_open(t).unwrap();
            let (mut last, mut buf, mut n) = (0, Vec::new(), 0);
            while let Some((round, _)) = mb.receive(last, &mut buf, t).unwrap() {
                mb.reply(round, fnv1a(&buf)).unwrap();
                last = round;
                n += 1;
            }
            n
        });
        let mb = Mailbox::new(&manager_map, Side::Manager, None).unwrap();
        mb.open();
        for round in 1..=20 {
            let data = payload(0, round, 1000 + round as usize);
            let sum = fnv1a(&data);
            mb.send(round, &data, sum).unwrap();
            assert_eq!(mb.wait_result(round, t).unwrap(), sum);
        }
        mb.close().unwrap();
        assert_eq!(worker.join().unwrap(), 20);
        assert!(
            mb.send(21, &vec![0; 1 << 16], 0).is_err(),
            "oversized data is refused"
        );
    }
}
