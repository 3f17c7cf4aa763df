//! The iceoryx2 benchmark's two ends (issue 28, item 5), plain iceoryx2 programs: `bench-drive`
//! times round trips and streams samples, `bench-serve` answers. Whether they meet in one VM
//! (the ceiling), across VMs through the sivshm gateways, or across the network through the
//! zenoh gateways is the gateways' business; the programs are the same for all three.
//!
//! Services, under the `--prefix` P: round trips on `P/rt/ping` and `P/rt/pong` (samples) with
//! `P/rt/ping-ev` and `P/rt/pong-ev` (events: the wake-ups); the stream of size S on
//! `P/sS/data` and `P/sS/ack` with `P/sS/data-ev` and `P/sS/ack-ev`. A sample's first 8
//! bytes are its sequence number (0: the handshake, [`END`]: the end of a phase). The stream
//! is flow-controlled: at most `--window` samples are unanswered (every buffer on the way
//! holds that many), the server acknowledges the highest number it received.
//!
//! Results: `SIVSHM-RESULT iox2-bench kind=latency transport=T size=64 n=.. p50_us=.. p99_us=..`
//! and `SIVSHM-RESULT iox2-bench kind=throughput transport=T size=S msgs=.. seconds=.. msgs_s=..
//! mib_s=.. lost=..`, printed by the driver.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::job::{listener, node, notifier};

/// The sequence number that ends a phase.
const END: u64 = u64::MAX;
/// The longest one wait for a wake-up lasts before the ports are looked at anyway.
const NAP: Duration = Duration::from_millis(20);
/// How often the handshake is repeated while the gateways discover the services.
const RESEND: Duration = Duration::from_millis(200);
/// A wake-up that found no sample looks again this many times, this far apart (see
/// [`In::next`]).
const OVERTAKEN_LOOKS: usize = 20;
const OVERTAKEN_PAUSE: Duration = Duration::from_micros(50);
/// How long a stream waits for answers once it stopped sending before it counts the rest lost.
const STALL: Duration = Duration::from_secs(2);
/// Round trips run before the timed ones.
const WARM_UP: u64 = 20;
/// Offset of the sender's source buffer from its allocation: a source and a destination
/// whose virtual addresses differ by a multiple of QEMU's software TLB size evict each other
/// under TCG (/work/shared/TOOLCHAIN.md); shared memory is mapped page-aligned, so a source
/// 320 bytes into a page never lines up with it.
const SOURCE_OFFSET: usize = 3 * 4096 + 320;

#[derive(Args, Clone)]
pub struct Common {
    /// The services' prefix (a grant of the gateways must admit PREFIX/**).
    #[arg(long)]
    prefix: String,
    /// Round trips of 64 B to time.
    #[arg(long, default_value_t = 1000)]
    round_trips: u64,
    /// Sizes of the streamed samples, in bytes (at least 16 each).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 4096, 65536, 1 << 20])]
    sizes: Vec<usize>,
    /// Samples in flight at most while streaming (every buffer holds that many).
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Args)]
pub struct DriveArgs {
    #[command(flatten)]
    common: Common,
    /// The path's name in the result lines (in-vm, sivshm, zenoh).
    #[arg(long)]
    transport: String,
    /// Seconds each size streams.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

type Bytes = [u8];
type Pub = Publisher<ipc::Service, Bytes, ()>;
type Sub = Subscriber<ipc::Service, Bytes, ()>;

fn service_name(s: &str) -> Result<ServiceName> {
    ServiceName::new(s).map_err(|e| anyhow!("service name {s:?}: {e:?}"))
}

/// The publish-subscribe service `s`, with room for `window` samples in every subscriber's
/// buffer; both ends (and the gateways' mirrors) ask for the same settings.
fn service(
    n: &Node<ipc::Service>,
    s: &str,
    window: usize,
) -> Result<iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Bytes, ()>>
{
    n.service_builder(&service_name(s)?)
        .publish_subscribe::<Bytes>()
        .max_publishers(2)
        .max_subscribers(2)
        .subscriber_max_buffer_size(window)
        .history_size(0)
        .open_or_create()
        .map_err(|e| anyhow!("service {s}: {e:?}"))
}

fn publisher(n: &Node<ipc::Service>, s: &str, window: usize, max: usize) -> Result<Pub> {
    service(n, s, window)?
        .publisher_builder()
        .initial_max_slice_len(max)
        .create()
        .map_err(|e| anyhow!("publisher on {s}: {e:?}"))
}

fn subscriber(n: &Node<ipc::Service>, s: &str, window: usize) -> Result<Sub> {
    service(n, s, window)?
        .subscriber_builder()
        .create()
        .map_err(|e| anyhow!("subscriber on {s}: {e:?}"))
}

/// One direction of a phase: samples, and the event that wakes their reader.
struct Out {
    data: Pub,
    wake: Notifier<ipc::Service>,
}

struct In {
    data: Sub,
    wake: Listener<ipc::Service>,
}

impl Out {
    fn new(n: &Node<ipc::Service>, s: &str, window: usize, max: usize) -> Result<Out> {
        Ok(Out {
            data: publisher(n, s, window, max)?,
            wake: notifier(n, &format!("{s}-ev"))?,
        })
    }

    /// Publishes `bytes` (one copy into the loaned sample) without waking the reader.
    fn put(&self, bytes: &[u8]) -> Result<()> {
        let s = self
            .data
            .loan_slice_uninit(bytes.len())
            .map_err(|e| anyhow!("loan of {} bytes: {e:?}", bytes.len()))?;
        s.write_from_slice(bytes)
            .send()
            .map_err(|e| anyhow!("send: {e:?}"))?;
        Ok(())
    }

    fn wake(&self) -> Result<()> {
        self.wake.notify().map_err(|e| anyhow!("notify: {e:?}"))?;
        Ok(())
    }
}

impl In {
    fn new(n: &Node<ipc::Service>, s: &str, window: usize) -> Result<In> {
        Ok(In {
            data: subscriber(n, s, window)?,
            wake: listener(n, &format!("{s}-ev"))?,
        })
    }

    /// Waits for a wake-up (at most `NAP`); whether one came.
    fn wait(&self) -> Result<bool> {
        let n = self
            .wake
            .timed_wait(|_| {}, NAP)
            .map_err(|e| anyhow!("wait: {e:?}"))?;
        Ok(n > 0)
    }

    /// Waits for a wake-up, then hands every waiting sample to `f`; whether a wake-up came.
    /// An event can overtake its sample on the way (iceoryx2's link moves samples, then
    /// notifications: a sample published between the two passes follows its event), so a
    /// wake-up that finds nothing looks again for a little while before it sleeps.
    fn next(&self, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<bool> {
        let woken = self.wait()?;
        let mut n = self.drain(&mut f)?;
        for _ in 0..OVERTAKEN_LOOKS {
            if !woken || n > 0 {
                break;
            }
            std::thread::sleep(OVERTAKEN_PAUSE);
            n = self.drain(&mut f)?;
        }
        Ok(woken)
    }

    /// Hands the first 8 bytes (and the length) of every waiting sample to `f`; how many.
    fn drain(&self, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<usize> {
        let mut n = 0;
        while let Some(s) = self.data.receive().map_err(|e| anyhow!("receive: {e:?}"))? {
            n += 1;
            let p = s.payload();
            let seq = p
                .get(0..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .context("a sample shorter than its sequence number")?;
            f(seq, p)?;
        }
        Ok(n)
    }
}

/// A message of `size` bytes whose first 8 are `seq`, the rest a pattern, kept at
/// [`SOURCE_OFFSET`] into its buffer.
struct Source {
    buf: Vec<u8>,
    size: usize,
}

impl Source {
    fn new(size: usize) -> Source {
        let mut buf = vec![0u8; SOURCE_OFFSET + size];
        for (i, b) in buf[SOURCE_OFFSET..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31);
        }
        Source { buf, size }
    }

    fn stamped(&mut self, seq: u64) -> &[u8] {
        let m = &mut self.buf[SOURCE_OFFSET..SOURCE_OFFSET + self.size];
        m[0..8].copy_from_slice(&seq.to_le_bytes());
        m
    }
}

fn check_common(c: &Common) -> Result<()> {
    if let Some(s) = c.sizes.iter().find(|&&s| s < 16) {
        bail!("--sizes: {s} bytes is below the 16 a sample needs for its numbers");
    }
    if c.window == 0 {
        bail!("--window must be at least 1");
    }
    Ok(())
}

/// An answer: sequence number, samples received so far, and whether the answering side was
/// woken by an event.
fn answer(seq: u64, received: u64, woken: bool) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[0..8].copy_from_slice(&seq.to_le_bytes());
    a[8..16].copy_from_slice(&received.to_le_bytes());
    a[16] = u8::from(woken);
    a
}

fn parse_answer(a: &[u8]) -> Option<(u64, u64, bool)> {
    Some((
        u64::from_le_bytes(a.get(0..8)?.try_into().ok()?),
        u64::from_le_bytes(a.get(8..16)?.try_into().ok()?),
        *a.get(16)? != 0,
    ))
}

fn rt_name(p: &str, dir: &str) -> String {
    format!("{p}/rt/{dir}")
}

fn stream_name(p: &str, size: usize, dir: &str) -> String {
    format!("{p}/s{size}/{dir}")
}

/// The server: answers every round trip, then acknowledges every stream, in the driver's
/// order. A phase's ports stay until the next phase ended (its last answer must not go with
/// its port; the driver had it before it began the next phase): fewer services to list make
/// the gateways' looks cheaper.
pub fn serve(c: &Common) -> Result<()> {
    check_common(c)?;
    let n = node()?;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let mut prev;
    {
        let ping = In::new(&n, &rt_name(&c.prefix, "ping"), 4)?;
        let pong = Out::new(&n, &rt_name(&c.prefix, "pong"), 4, 64)?;
        let mut done = false;
        while !done {
            if Instant::now() > deadline {
                bail!("the round trips did not end in time");
            }
            let mut answers = Vec::new();
            let woken = ping.next(|seq, _| {
                answers.push(seq);
                Ok(())
            })?;
            for seq in answers {
                pong.put(&answer(seq, 0, woken))?;
                pong.wake()?;
                done |= seq == END;
            }
        }
        prev = (ping, pong);
    }
    for &size in &c.sizes {
        let data = In::new(&n, &stream_name(&c.prefix, size, "data"), c.window)?;
        let ack = Out::new(&n, &stream_name(&c.prefix, size, "ack"), 4, 64)?;
        let (mut received, mut done) = (0u64, false);
        while !done {
            if Instant::now() > deadline {
                bail!("the stream of {size} B did not end in time");
            }
            let mut highest = None;
            let woken = data.next(|seq, p| {
                if p.len() != size {
                    bail!("a sample of {} bytes in the stream of {size}", p.len());
                }
                if seq != 0 && seq != END {
                    received += 1;
                }
                done |= seq == END;
                highest = highest.max(Some(seq));
                Ok(())
            })?;
            if let Some(h) = highest {
                ack.put(&answer(h, received, woken))?;
                ack.wake()?;
            }
        }
        prev = (data, ack);
    }
    drop(prev);
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sends `seq` until an answer to it arrives that says both sides were woken by events (the
/// gateways have bridged all four services); then `WARM_UP` plain round trips.
fn handshake(out: &Out, back: &In, src: &mut Source, deadline: Instant) -> Result<()> {
    let mut last = None::<Instant>;
    loop {
        if Instant::now() > deadline {
            bail!("no answer to the handshake in time: are the gateways up?");
        }
        if last.is_none_or(|t| t.elapsed() > RESEND) {
            out.put(src.stamped(0))?;
            out.wake()?;
            last = Some(Instant::now());
        }
        let mut answered = false;
        let woken = back.next(|_, p| {
            if let Some((0, _, remote_woken)) = parse_answer(p) {
                answered |= remote_woken;
            }
            Ok(())
        })?;
        if answered && woken {
            return Ok(());
        }
    }
}

/// One round trip of `seq`: the time until its answer came back.
fn round_trip(out: &Out, back: &In, src: &mut Source, seq: u64, deadline: Instant) -> Result<f64> {
    let t0 = Instant::now();
    out.put(src.stamped(seq))?;
    out.wake()?;
    loop {
        let mut got = false;
        back.next(|s, _| {
            got |= s == seq;
            Ok(())
        })?;
        if got {
            return Ok(t0.elapsed().as_secs_f64() * 1e6);
        }
        if Instant::now() > deadline {
            bail!("round trip {seq}: no answer in time");
        }
    }
}

pub fn drive(a: &DriveArgs) -> Result<()> {
    let c = &a.common;
    check_common(c)?;
    let n = node()?;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let path = &a.transport;
    {
        let ping = Out::new(&n, &rt_name(&c.prefix, "ping"), 4, 64)?;
        let pong = In::new(&n, &rt_name(&c.prefix, "pong"), 4)?;
        let mut src = Source::new(64);
        handshake(&ping, &pong, &mut src, deadline)?;
        for seq in 1..=WARM_UP {
            round_trip(&ping, &pong, &mut src, seq, deadline)?;
        }
        let mut us = Vec::new();
        for seq in WARM_UP + 1..=WARM_UP + c.round_trips {
            us.push(round_trip(&ping, &pong, &mut src, seq, deadline)?);
        }
        round_trip(&ping, &pong, &mut src, END, deadline)?;
        us.sort_by(f64::total_cmp);
        if !us.is_empty() {
            println!(
                "SIVSHM-RESULT iox2-bench kind=latency transport={path} size=64 n={} p50_us={:.1} \
                 p99_us={:.1} mean_us={:.1}",
                us.len(),
                percentile(&us, 0.5),
                percentile(&us, 0.99),
                us.iter().sum::<f64>() / us.len() as f64
            );
        }
    }
    for &size in &c.sizes {
        let data = Out::new(&n, &stream_name(&c.prefix, size, "data"), c.window, size)?;
        let ack = In::new(&n, &stream_name(&c.prefix, size, "ack"), 4)?;
        let mut src = Source::new(size);
        handshake(&data, &ack, &mut src, deadline)?;
        let (sent, received, seconds) = stream(&data, &ack, &mut src, c, a.seconds, deadline)?;
        println!(
            "SIVSHM-RESULT iox2-bench kind=throughput transport={path} size={size} msgs={received} \
             seconds={seconds:.3} msgs_s={:.1} mib_s={:.2} lost={}",
            received as f64 / seconds,
            received as f64 * size as f64 / seconds / f64::from(1 << 20),
            sent - received
        );
    }
    Ok(())
}

/// Streams for `seconds` with at most `window` samples unanswered, then ends the phase:
/// (sent, received by the server, seconds until the last answer).
fn stream(
    data: &Out,
    ack: &In,
    src: &mut Source,
    c: &Common,
    seconds: f64,
    deadline: Instant,
) -> Result<(u64, u64, f64)> {
    let window = c.window as u64;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(seconds);
    let (mut sent, mut acked, mut received) = (0u64, 0u64, 0u64);
    let mut progress = t0;
    loop {
        let now = Instant::now();
        if now > deadline {
            bail!("the stream did not end in time");
        }
        let sending = now < until;
        if sending && sent - acked < window {
            while sent - acked < window {
                sent += 1;
                data.put(src.stamped(sent))?;
            }
            data.wake()?;
        }
        // Done when every sample is answered, or (the last ones lost on the way) when the
        // answers stopped coming.
        if !sending && (acked >= sent || now.duration_since(progress) > STALL) {
            break;
        }
        let before = acked;
        ack.next(|_, p| {
            if let Some((seq, r, _)) = parse_answer(p) {
                if seq != END && seq <= sent {
                    acked = acked.max(seq);
                    received = received.max(r);
                }
            }
            Ok(())
        })?;
        if acked > before {
            progress = Instant::now();
        }
    }
    let seconds = progress.duration_since(t0).as_secs_f64();
    // The end of the phase: the server moves on to the next size.
    data.put(src.stamped(END))?;
    data.wake()?;
    let mut ended = false;
    while !ended {
        if Instant::now() > deadline {
            bail!("the stream's end was not acknowledged in time");
        }
        ack.next(|_, p| {
            if let Some((END, r, _)) = parse_answer(p) {
                ended = true;
                received = received.max(r);
            }
            Ok(())
        })?;
    }
    Ok((sent, received, seconds))
}
