//! The two measurements over any link, and the echo peer that serves them. The messages they
//! exchange are `wire`'s.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::link::Link;
pub use crate::wire::{check, message, stamp, BYE, DATA, ECHO, FLAG_PATTERN, REPORT, SYNC};
use crate::wire::{put_u64, u32_at, u64_at, HEADER, MIN_SIZE};

/// What the peer saw since the previous [`SYNC`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub messages: u64,
    pub bytes: u64,
    /// Doorbells the peer rang (0 where the link does not count them).
    pub rings: u64,
}

impl Report {
    fn encode(&self) -> Vec<u8> {
        let mut m = message(REPORT, 0, self.messages, HEADER + 24);
        put_u64(&mut m, HEADER, self.bytes);
        put_u64(&mut m, HEADER + 8, self.rings);
        m
    }

    fn decode(m: &[u8]) -> Result<Self> {
        let messages = check(m, REPORT)?;
        ensure!(
            m.len() == HEADER + 24,
            "a report of {} bytes (expected {})",
            m.len(),
            HEADER + 24
        );
        Ok(Report {
            messages,
            bytes: u64_at(m, HEADER),
            rings: u64_at(m, HEADER + 8),
        })
    }
}

/// The peer's side: serves the driver until it says [`BYE`]. Returns what it received.
pub fn serve(link: &mut dyn Link) -> Result<u64> {
    let mut buf = Vec::new();
    let (mut messages, mut bytes, mut total) = (0u64, 0u64, 0u64);
    let mut next_data = 0u64;
    let mut rings_at_sync = link.rings().unwrap_or(0);
    loop {
        if let Some((len, seq)) = link.recv_data(&mut buf)? {
            ensure!(
                seq == next_data,
                "data message {seq} arrived where {next_data} was due (lost, duplicated or reordered)"
            );
            next_data += 1;
            messages += 1;
            bytes += len as u64;
            total += 1;
            continue;
        }
        ensure!(buf.len() >= 4, "a message of {} bytes", buf.len());
        match u32_at(&buf, 0) {
            ECHO => {
                check(&buf, ECHO)?;
                link.send(&buf)?;
            }
            DATA => {
                let seq = check(&buf, DATA)?;
                ensure!(
                    seq == next_data,
                    "data message {seq} arrived where {next_data} was due (lost, duplicated or reordered)"
                );
                next_data += 1;
            }
            SYNC => {
                // The sequence number says where the data numbering restarts.
                next_data = check(&buf, SYNC)?;
                let rings = link.rings().unwrap_or(0);
                let r = Report {
                    messages,
                    bytes,
                    rings: rings - rings_at_sync,
                };
                link.send(&r.encode())?;
                // The report's own doorbell belongs to neither phase.
                rings_at_sync = link.rings().unwrap_or(0);
                (messages, bytes) = (0, 0);
                continue;
            }
            BYE => {
                check(&buf, BYE)?;
                link.send(&message(BYE, 0, total, MIN_SIZE))?;
                return Ok(total);
            }
            other => bail!("a message tagged {other} (not a probe message)"),
        }
        messages += 1;
        bytes += buf.len() as u64;
        total += 1;
    }
}

/// Asks the peer what it received since the previous sync; data numbering restarts at 0.
fn sync(link: &mut dyn Link) -> Result<Report> {
    link.send(&message(SYNC, 0, 0, MIN_SIZE))?;
    let mut buf = Vec::new();
    link.recv(&mut buf)?;
    Report::decode(&buf).context("the peer's report")
}

/// Ends the session: the peer acknowledges.
pub fn bye(link: &mut dyn Link) -> Result<()> {
    link.send(&message(BYE, 0, 0, MIN_SIZE))?;
    let mut buf = Vec::new();
    link.recv(&mut buf)?;
    check(&buf, BYE).context("the peer's goodbye")?;
    Ok(())
}

fn check_size(link: &dyn Link, size: usize) -> Result<()> {
    ensure!(
        size >= MIN_SIZE,
        "message size {size} is below {MIN_SIZE} bytes (every probe message carries its stamps)"
    );
    ensure!(
        size <= link.max_message(),
        "message size {size} exceeds the link's largest message, {} bytes",
        link.max_message()
    );
    Ok(())
}

/// Round trips of one size: the nearest-rank percentiles, in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    pub size: usize,
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Doorbells rung by both sides per round trip, where the link counts them.
    pub rings_per_rt: Option<f64>,
}

/// The nearest-rank `p`th percentile of sorted `v`.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A measurement's figures as `key=value` words, for both of its lines.
fn words(values: &[(&str, String)]) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The result line of one measurement: `SIVSHM-RESULT probe kind=KIND transport=T k=v ...`
/// (Documentation/host-and-tests.rst, "Reading results"), what the lab reads.
fn result(kind: &str, transport: &str, values: &[(&str, String)]) -> String {
    format!(
        "SIVSHM-RESULT probe kind={kind} transport={transport} {}",
        words(values)
    )
}

/// The line for people: `KIND TRANSPORT: k=v ...`, the same figures.
fn line(kind: &str, transport: &str, values: &[(&str, String)]) -> String {
    format!("{kind} {transport}: {}", words(values))
}

impl Latency {
    /// The figures (times in microseconds).
    fn values(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("size", self.size.to_string()),
            ("n", self.n.to_string()),
            ("p50_us", format!("{:.1}", self.p50)),
            ("p99_us", format!("{:.1}", self.p99)),
            ("max_us", format!("{:.1}", self.max)),
        ];
        if let Some(r) = self.rings_per_rt {
            v.push(("rings_per_rt", format!("{r:.3}")));
        }
        v
    }

    /// The measurement as data.
    pub fn result(&self, transport: &str) -> String {
        result("latency", transport, &self.values())
    }

    pub fn line(&self, transport: &str) -> String {
        line("latency", transport, &self.values())
    }
}

/// `n` timed round trips of `size` bytes after `warmup` untimed ones; every echo is compared
/// with what was sent.
pub fn latency(
    link: &mut dyn Link,
    size: usize,
    n: usize,
    warmup: usize,
    verify: bool,
) -> Result<Latency> {
    check_size(link, size)?;
    ensure!(n > 0, "at least one round trip is needed");
    sync(link)?;
    let rings0 = link.rings();
    let flags = if verify { FLAG_PATTERN } else { 0 };
    let mut m = message(ECHO, flags, 0, size);
    let mut back = Vec::with_capacity(size);
    let mut times = Vec::with_capacity(n);
    for i in 0..warmup + n {
        stamp(&mut m, i as u64);
        let t0 = Instant::now();
        link.send(&m)?;
        link.recv(&mut back)?;
        let dt = t0.elapsed();
        if back != m {
            check(&back, ECHO).context("the echo")?;
            bail!("round trip {i}: the echo differs from what was sent");
        }
        if i >= warmup {
            times.push(dt.as_secs_f64() * 1e6);
        }
    }
    let ours = link.rings().zip(rings0).map(|(a, b)| a - b);
    let peer = sync(link)?;
    ensure!(
        peer.messages == (warmup + n) as u64,
        "the peer echoed {} messages, {} were sent",
        peer.messages,
        warmup + n
    );
    times.sort_by(f64::total_cmp);
    Ok(Latency {
        size,
        n,
        p50: percentile(&times, 50.0),
        p99: percentile(&times, 99.0),
        max: times[n - 1],
        rings_per_rt: ours.map(|r| (r + peer.rings) as f64 / (warmup + n) as f64),
    })
}

/// How long a throughput phase runs.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    Messages(u64),
    Time(Duration),
}

/// Whether a timed phase is over, without reading the clock for every message (a guest's
/// clock read may cost more than a small message): the clock is read every `every` calls,
/// and `every` doubles while a stretch takes under a millisecond, so a fast loop reads it
/// rarely and a slow one (one message per millisecond or more) at every message.
struct Clock {
    t0: Instant,
    /// The previous reading (none before the first: that stretch held no message).
    last: Option<Instant>,
    every: u64,
    left: u64,
}

impl Clock {
    fn new(t0: Instant) -> Self {
        Clock {
            t0,
            last: None,
            every: 1,
            left: 1,
        }
    }

    fn passed(&mut self, d: Duration) -> bool {
        self.left -= 1;
        if self.left > 0 {
            return false;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now - l < Duration::from_millis(1))
        {
            self.every = (self.every * 2).min(1 << 20);
        }
        self.last = Some(now);
        self.left = self.every;
        now - self.t0 >= d
    }

    /// Whether a phase of `amount` is over after `count` messages.
    fn reached(&mut self, amount: Amount, count: u64) -> bool {
        match amount {
            Amount::Messages(n) => count >= n,
            Amount::Time(d) => self.passed(d),
        }
    }
}

/// Messages of one size streamed one way.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub size: usize,
    pub messages: u64,
    pub seconds: f64,
    /// Doorbells rung by both sides per message, where the link counts them.
    pub rings_per_msg: Option<f64>,
}

impl Throughput {
    pub fn mib_s(&self) -> f64 {
        (self.messages * self.size as u64) as f64 / self.seconds / f64::from(1 << 20)
    }

    /// The figures.
    fn values(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("size", self.size.to_string()),
            ("messages", self.messages.to_string()),
            ("seconds", format!("{:.3}", self.seconds)),
            ("mib_s", format!("{:.2}", self.mib_s())),
            (
                "msgs_s",
                format!("{:.0}", self.messages as f64 / self.seconds),
            ),
        ];
        if let Some(r) = self.rings_per_msg {
            v.push(("rings_per_msg", format!("{r:.4}")));
        }
        v
    }

    /// The measurement as data.
    pub fn result(&self, transport: &str) -> String {
        result("throughput", transport, &self.values())
    }

    pub fn line(&self, transport: &str) -> String {
        line("throughput", transport, &self.values())
    }
}

/// Streams `size`-byte messages to the peer until `amount` is reached, then waits for the
/// peer's report: the time runs until the peer has received (and checked) everything.
pub fn throughput(
    link: &mut dyn Link,
    size: usize,
    amount: Amount,
    verify: bool,
) -> Result<Throughput> {
    check_size(link, size)?;
    sync(link)?;
    let rings0 = link.rings();
    let flags = if verify { FLAG_PATTERN } else { 0 };
    let mut m = message(DATA, flags, 0, size);
    let t0 = Instant::now();
    let mut clock = Clock::new(t0);
    let mut sent = 0u64;
    while !clock.reached(amount, sent) {
        stamp(&mut m, sent);
        link.send_streamed(&m)?;
        sent += 1;
    }
    let ours = link.rings().zip(rings0).map(|(a, b)| a - b);
    let peer = sync(link)?;
    let seconds = t0.elapsed().as_secs_f64();
    ensure!(
        peer.messages == sent && peer.bytes == sent * size as u64,
        "the peer received {} messages ({} bytes), {sent} of {size} bytes were sent",
        peer.messages,
        peer.bytes
    );
    Ok(Throughput {
        size,
        messages: sent,
        seconds,
        rings_per_msg: ours.map(|r| (r + peer.rings) as f64 / sent.max(1) as f64),
    })
}

/// The in-VM ceiling: copies of `size` bytes from one buffer to another, as the same
/// [`Amount`] of messages would take.
pub fn memcpy(size: usize, amount: Amount) -> Result<Throughput> {
    ensure!(size > 0, "message size must be above 0");
    let src = message(DATA, FLAG_PATTERN, 1, size.max(MIN_SIZE));
    let mut dst = vec![0u8; src.len()];
    let t0 = Instant::now();
    let mut clock = Clock::new(t0);
    let mut copies = 0u64;
    while !clock.reached(amount, copies) {
        dst[..size].copy_from_slice(std::hint::black_box(&src[..size]));
        std::hint::black_box(&mut dst);
        copies += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    ensure!(dst[..size] == src[..size], "memcpy copied something else");
    Ok(Throughput {
        size,
        messages: copies,
        seconds,
        rings_per_msg: None,
    })
}

/// Where a channel's data ring starts in its window: after the channel's 4 KiB header.
const RING_OFFSET: usize = 4096;
/// A channel record's header before its payload (the payload is padded to 8 bytes).
const RECORD_HEADER: usize = 8;

/// The sender's copy alone: `size`-byte messages copied with [`sivshm::Mapping::write`] (the
/// copy [`sivshm::channel::Reservation::write`] makes) into a shared mapping of a memfd laid
/// out as a channel's data ring of `region` bytes: records of an 8-byte header and the payload
/// padded to 8 bytes one after the other from 4 KiB in, starting again at the ring's start
/// when one does not fit before its end. So every copy lands where, and at the alignment, a
/// channel's would, cycling through an area as large, with none of the channel's work (no
/// indices, no peer, no doorbell): against [`memcpy`] it measures the volatile copy into a
/// ring-sized area, against the channel what the channel costs beyond it.
pub fn shm_copy(size: usize, amount: Amount, region: usize) -> Result<Throughput> {
    use std::os::fd::AsFd;
    ensure!(size > 0, "message size must be above 0");
    let record = RECORD_HEADER + size.next_multiple_of(8);
    ensure!(
        record <= region,
        "a {size}-byte message takes {record} bytes of ring: more than the {region}-byte region"
    );
    let fd = rustix::fs::memfd_create("sivshm-probe", rustix::fs::MemfdFlags::CLOEXEC)
        .context("creating a memfd")?;
    let len = RING_OFFSET + region;
    rustix::fs::ftruncate(&fd, len as u64).context("sizing the memfd")?;
    let map = sivshm::Mapping::new(fd.as_fd(), 0, len).context("mapping the memfd")?;
    let src = message(DATA, FLAG_PATTERN, 1, size.max(MIN_SIZE));
    let t0 = Instant::now();
    let mut clock = Clock::new(t0);
    let (mut copies, mut off, mut last) = (0u64, 0usize, 0usize);
    while !clock.reached(amount, copies) {
        if off + record > region {
            off = 0;
        }
        last = RING_OFFSET + off + RECORD_HEADER;
        map.write(last, std::hint::black_box(&src[..size]))
            .context("a copy outside the mapping")?;
        off += record;
        copies += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let mut back = vec![0u8; size];
    map.read(last, &mut back)
        .context("a read outside the mapping")?;
    ensure!(
        copies == 0 || back == src[..size],
        "shm-copy copied something else"
    );
    Ok(Throughput {
        size,
        messages: copies,
        seconds,
        rings_per_msg: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::pipe_pair;

    #[test]
    fn stamps_and_patterns_round_trip_and_damage_is_caught() {
        for size in [24, 25, 32, 100, 4096] {
            let mut m = message(DATA, FLAG_PATTERN, 7, size);
            assert_eq!(m.len(), size);
            assert_eq!(check(&m, DATA).unwrap(), 7);
            stamp(&mut m, 8);
            assert_eq!(check(&m, DATA).unwrap(), 8);
            assert!(check(&m, ECHO).is_err(), "wrong tag accepted");
            let mut torn = m.clone();
            put_u64(&mut torn, size - 8, 9);
            assert!(
                check(&torn, DATA).is_err(),
                "torn message accepted ({size})"
            );
            if size > 32 {
                let mut bad = m.clone();
                bad[HEADER + 1] ^= 0x40;
                let e = check(&bad, DATA).unwrap_err().to_string();
                assert!(e.contains("corrupt at byte 17"), "{e}");
            }
        }
        assert!(check(&[0; 8], DATA).is_err());
    }

    #[test]
    fn a_timed_phase_ends_on_time_however_slow_its_messages() {
        for nap in [Duration::ZERO, Duration::from_millis(3)] {
            let t0 = Instant::now();
            let mut c = Clock::new(t0);
            let mut n = 0u64;
            while !c.passed(Duration::from_millis(60)) {
                std::thread::sleep(nap);
                n += 1;
            }
            assert!(n > 0);
            // Slow iterations are checked one by one: no overshoot of several of them.
            if !nap.is_zero() {
                assert_eq!(c.every, 1, "{n} iterations");
            }
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 1.0);
    }

    #[test]
    fn latency_and_throughput_over_a_pipe_pair_check_everything() {
        let (mut a, mut b) = pipe_pair().unwrap();
        let peer = std::thread::spawn(move || serve(&mut b));
        let l = latency(&mut a, 64, 50, 5, true).unwrap();
        assert_eq!((l.size, l.n), (64, 50));
        assert!(l.p50 <= l.p99 && l.p99 <= l.max);
        assert!(l.rings_per_rt.is_none(), "a pipe counts no doorbells");
        for size in [24, 4096, 1 << 20] {
            let t = throughput(&mut a, size, Amount::Messages(20), true).unwrap();
            assert_eq!(t.messages, 20);
            assert!(t.result("pipe").starts_with(&format!(
                "SIVSHM-RESULT probe kind=throughput transport=pipe size={size} "
            )));
        }
        let t = throughput(&mut a, 64, Amount::Time(Duration::from_millis(50)), false).unwrap();
        assert!(t.messages > 0);
        bye(&mut a).unwrap();
        // Warm-up and timed echoes, then 20 messages of each size, then the timed phase.
        assert_eq!(peer.join().unwrap().unwrap(), 55 + 60 + t.messages);
    }

    #[test]
    fn shm_copy_cycles_through_its_region_like_a_ring() {
        // Five 1 MiB records do not fit in 4 MiB: the copies wrap, and every one is exact.
        let t = shm_copy(1 << 20, Amount::Messages(11), 4 << 20).unwrap();
        assert_eq!((t.size, t.messages), (1 << 20, 11));
        assert!(t.result("shm-copy").starts_with(
            "SIVSHM-RESULT probe kind=throughput transport=shm-copy size=1048576 messages=11 "
        ));
        for size in [1, 24, 4097] {
            assert_eq!(
                shm_copy(size, Amount::Messages(3), 8192).unwrap().messages,
                3
            );
        }
        let t = shm_copy(64, Amount::Time(Duration::from_millis(20)), 1 << 20).unwrap();
        assert!(t.messages > 0);
        let e = shm_copy(8192, Amount::Messages(1), 8192)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than the 8192-byte region"), "{e}");
    }

    #[test]
    fn bad_sizes_are_refused_with_the_reason() {
        let (mut a, _b) = pipe_pair().unwrap();
        let e = latency(&mut a, 8, 1, 0, false).unwrap_err().to_string();
        assert!(e.contains("below 24 bytes"), "{e}");
        let e = throughput(&mut a, 128 << 20, Amount::Messages(1), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exceeds the link's largest message"), "{e}");
    }

    /// A peer that corrupts what it echoes, or loses data, is reported, not measured.
    #[test]
    fn a_lying_peer_fails_the_probe() {
        let (mut a, mut b) = pipe_pair().unwrap();
        let liar = std::thread::spawn(move || {
            let mut buf = Vec::new();
            // Answers the sync, then echoes the first message with one bit flipped.
            b.recv(&mut buf).unwrap();
            let r = Report {
                messages: 0,
                bytes: 0,
                rings: 0,
            };
            b.send(&r.encode()).unwrap();
            b.recv(&mut buf).unwrap();
            let n = buf.len();
            buf[n / 2] ^= 1;
            b.send(&buf).unwrap();
        });
        let e = latency(&mut a, 64, 1, 0, true).unwrap_err();
        assert!(format!("{e:#}").contains("corrupt"), "{e:#}");
        liar.join().unwrap();

        let (mut a, mut b) = pipe_pair().unwrap();
        let peer = std::thread::spawn(move || serve(&mut b));
        // Skip a sequence number: the peer must refuse the gap.
        sync(&mut a).unwrap();
        a.send(&message(DATA, 0, 0, 64)).unwrap();
        a.send(&message(DATA, 0, 2, 64)).unwrap();
        let e = peer.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("arrived where 1 was due"), "{e}");
    }
}
