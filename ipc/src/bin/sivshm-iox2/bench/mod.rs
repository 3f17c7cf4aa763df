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

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::job::{listener, notifier};

mod drive;
mod serve;
pub use drive::{drive, DriveArgs};
pub use serve::serve;

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
/// How long the server answers repeats of the last phase's end after it.
const LINGER: Duration = Duration::from_secs(3);
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
        crate::job::send(&self.data, bytes)
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
