//! `sivshm-probe`: round-trip latency and one-way throughput between two VMs over a sivshm
//! channel, over TCP or over vsock, and the in-VM references they are measured against.
//!
//! One side drives (`latency`, `throughput`, or `suite` for both in one session); the other
//! runs `serve`, which echoes, counts and checks until the driver says goodbye:
//!
//! ```text
//! worker:  sivshm-probe serve --transport sivshm            (or: --transport tcp --listen 0.0.0.0:7777)
//! manager: sivshm-probe suite --transport sivshm --sizes 64,4096,65536,1048576
//!          sivshm-probe suite --transport tcp --connect 10.77.0.2:7777 ...
//!          sivshm-probe suite --transport vsock --vsock-cid 4 ...   (serve: --transport vsock)
//!          sivshm-probe latency --transport pipe      (the floor: two threads of this VM)
//!          sivshm-probe throughput --transport memcpy (the ceiling: plain copies in this VM)
//!          sivshm-probe throughput --transport shm-copy (the sender's copy into a ring alone)
//!          sivshm-probe throughput --transport channel-local (the channel between two threads)
//!          sivshm-probe throughput --transport rtrb  (an SPSC ring crate between two threads)
//! ```
//!
//! A streaming sender over the channel commits in batches and flushes (publishes them and
//! wakes the peer if it sleeps) once every `--flush-every` messages (64; 1: after each, as
//! `Channel::send` does).
//!
//! `--spin-us` and `--spin-max-us` set the channel's [`Config::spin`] and
//! [`Config::spin_max`] on the side that is given them (give both sides the same).
//!
//! Each measurement is a line for people, `latency TRANSPORT: size=.. n=.. p50_us=..
//! p99_us=.. max_us=.. [rings_per_rt=..]` or `throughput TRANSPORT: size=.. messages=..
//! seconds=.. mib_s=.. msgs_s=.. [rings_per_msg=..]`, and the same figures as data for the
//! lab: `SIVSHM-RESULT probe kind=latency|throughput transport=TRANSPORT size=.. ...`.
//! Every message is stamped with its sequence number at both ends; `--verify` also fills
//! and checks every byte. Any mismatch ends the probe with an error, never a figure.

mod link;
mod proto;
mod vsock_link;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sivshm::channel::{Channel, Config, Role};
use sivshm::Device;

use link::Link;
use proto::Amount;

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// A sivshm channel on a doorbell device, to another VM.
    Sivshm,
    /// TCP (TCP_NODELAY) to another VM.
    Tcp,
    /// vsock to a sibling VM (a virtio-vsock device whose host backend forwards between the
    /// VMs); the driver gives `--vsock-cid`, both sides `--vsock-port`.
    Vsock,
    /// Two pipes between two threads of this VM (the floor of a round trip).
    Pipe,
    /// Plain copies in this VM (the ceiling of throughput); throughput only.
    Memcpy,
    /// The sender's copy alone: copies into a shared mapping laid out as a channel's data
    /// ring (`--region-kib`), with the crate's volatile copy, in this VM; throughput only.
    ShmCopy,
    /// The same channel between two threads of this process over a memfd, eventfds for
    /// doorbells: what the channel's design costs without a VM boundary. Its ring is as
    /// large as shm-copy's region (`--region-kib`).
    ChannelLocal,
    /// The `rtrb` SPSC ring crate between two threads of this process, a ring of
    /// `--region-kib` bytes each way, every message's bytes copied in and its stamps read in
    /// place as over the channel: what an in-process ring costs.
    Rtrb,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Sivshm => "sivshm",
            Transport::Tcp => "tcp",
            Transport::Vsock => "vsock",
            Transport::Pipe => "pipe",
            Transport::Memcpy => "memcpy",
            Transport::ShmCopy => "shm-copy",
            Transport::ChannelLocal => "channel-local",
            Transport::Rtrb => "rtrb",
        }
    }
}

#[derive(Args)]
struct Endpoint {
    #[arg(long, value_enum)]
    transport: Transport,
    /// sivshm: the device of the channel.
    #[arg(long, default_value = "/dev/sivshm0")]
    device: String,
    /// tcp, driver side: the peer's address.
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// tcp, serve side: where to listen.
    #[arg(long, default_value = "0.0.0.0:7777")]
    listen: SocketAddr,
    /// vsock, driver side: the peer VM's context id.
    #[arg(long)]
    vsock_cid: Option<u32>,
    /// vsock: the port the serve side listens on and the driver connects to.
    #[arg(long, default_value_t = 7778)]
    vsock_port: u32,
    /// Seconds to wait for the peer (to attach, connect or answer) before failing.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// sivshm: microseconds a waiting side polls before it sleeps (the channel's
    /// `Config::spin`; default its default).
    #[arg(long)]
    spin_us: Option<u64>,
    /// sivshm, channel-local: a streaming sender (throughput) flushes, waking the peer if it
    /// sleeps, once every this many messages (1: after every message, as `send` does).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    flush_every: u32,
    /// sivshm, channel-local: a streaming sender publishes every message at its commit
    /// (`Reservation::commit`) instead of committing in batches published at the flush
    /// (`Reservation::commit_batched`, the default): to compare the two.
    #[arg(long)]
    plain_commits: bool,
    /// sivshm: the longest poll, in microseconds, of a side whose recent waits were short
    /// (`Config::spin_max`; at most --spin-us: no adaptation; default the channel's).
    #[arg(long)]
    spin_max_us: Option<u64>,
}

/// A message size: every probe message carries its stamps, and a stream frame has a limit.
fn message_size(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(wire::MIN_SIZE..=link::MAX_FRAME).contains(&n) {
        return Err(format!(
            "{n} bytes: a message size must be between {} and {}",
            wire::MIN_SIZE,
            link::MAX_FRAME
        ));
    }
    Ok(n)
}

#[derive(Args)]
struct LatencyArgs {
    /// Message sizes of the round trips, in bytes (at least 24).
    #[arg(long, value_delimiter = ',', default_values_t = [64], value_parser = message_size)]
    latency_sizes: Vec<usize>,
    /// Timed round trips per size.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Untimed round trips before them.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
}

#[derive(Args)]
struct ThroughputArgs {
    /// Message sizes, in bytes (at least 24).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 4096, 65536, 1 << 20],
          value_parser = message_size)]
    sizes: Vec<usize>,
    /// Seconds to stream each size.
    #[arg(long, default_value_t = 2.0, conflicts_with = "messages")]
    seconds: f64,
    /// Stream exactly this many messages of each size instead.
    #[arg(long)]
    messages: Option<u64>,
    /// shm-copy: KiB of the ring the copies cycle through; channel-local and rtrb: KiB of
    /// their ring (7168: the data ring of an 8 MiB channel segment, roughly).
    #[arg(long, default_value_t = 7168)]
    region_kib: usize,
}

/// The ring of an in-process link (channel-local, rtrb) when no `--region-kib` is given.
const DEFAULT_RING: usize = 7168 << 10;

impl ThroughputArgs {
    /// `--region-kib` in bytes.
    fn region(&self) -> Result<usize> {
        self.region_kib
            .checked_mul(1024)
            .context("--region-kib is too large")
    }

    fn amount(&self) -> Result<Amount> {
        match self.messages {
            Some(0) => bail!("--messages must be at least 1"),
            Some(n) => Ok(Amount::Messages(n)),
            None => {
                ensure!(
                    self.seconds.is_finite() && self.seconds > 0.0 && self.seconds <= 3600.0,
                    "--seconds must be above 0 and at most 3600"
                );
                Ok(Amount::Time(Duration::from_secs_f64(self.seconds)))
            }
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Round trips (ping-pong) against a `serve` peer, or between two threads (pipe).
    Latency {
        #[command(flatten)]
        end: Endpoint,
        #[command(flatten)]
        lat: LatencyArgs,
        /// Fill and check every byte of every message.
        #[arg(long)]
        verify: bool,
    },
    /// One-way streaming to a `serve` peer (or to a thread, pipe; or plain copies, memcpy).
    Throughput {
        #[command(flatten)]
        end: Endpoint,
        #[command(flatten)]
        thr: ThroughputArgs,
        #[arg(long)]
        verify: bool,
    },
    /// Latency, then throughput, in one session with the peer.
    Suite {
        #[command(flatten)]
        end: Endpoint,
        #[command(flatten)]
        lat: LatencyArgs,
        #[command(flatten)]
        thr: ThroughputArgs,
        #[arg(long)]
        verify: bool,
    },
    /// The peer of a driver on another VM: echo, count and check until it says goodbye.
    Serve {
        #[command(flatten)]
        end: Endpoint,
    },
}

/// A sivshm channel as a probe link.
struct ChannelLink {
    ch: Channel,
    timeout: Duration,
    /// Streamed messages committed per flush (`--flush-every`).
    flush_every: u32,
    /// Streamed messages committed since the last flush.
    unflushed: u32,
    /// Streamed messages are published at their commit (`--plain-commits`).
    plain: bool,
}

impl ChannelLink {
    fn new(ch: Channel, timeout: Duration, flush_every: u32) -> Self {
        ChannelLink {
            ch,
            timeout,
            flush_every: flush_every.max(1),
            unflushed: 0,
            plain: false,
        }
    }

    fn plain_commits(self, plain: bool) -> Self {
        ChannelLink { plain, ..self }
    }
}

impl Link for ChannelLink {
    /// Reserve, write, commit in a batch (`commit_batched`: the peer sees the messages at the
    /// flush, or once a sixteenth of the ring is committed); a flush (which publishes them and
    /// wakes the peer if it sleeps) every `flush_every` messages. A reservation that has to
    /// wait flushes first, and so does the next [`Link::send`]: a sleeping peer never misses
    /// what was committed.
    fn send_streamed(&mut self, msg: &[u8]) -> Result<()> {
        match self.plain {
            true => {
                let mut r = self
                    .ch
                    .reserve(msg.len(), Some(self.timeout))
                    .context("reserving on the channel")?;
                r.write(0, msg)?;
                r.commit()?
            }
            false => self
                .ch
                .send_batched(msg, Some(self.timeout))
                .context("sending on the channel")?,
        }
        self.unflushed += 1;
        if self.unflushed >= self.flush_every {
            self.unflushed = 0;
            self.ch.flush().context("flushing the channel")?;
        }
        Ok(())
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.unflushed = 0;
        self.ch
            .send(msg, Some(self.timeout))
            .context("sending on the channel")
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let m = self
            .ch
            .recv(Some(self.timeout))
            .context("receiving on the channel")?;
        buf.resize(m.len(), 0);
        m.read(0, buf)?;
        m.release()?;
        Ok(())
    }

    fn recv_data(&mut self, buf: &mut Vec<u8>) -> Result<Option<(usize, u64)>> {
        let m = self
            .ch
            .recv(Some(self.timeout))
            .context("receiving on the channel")?;
        let len = m.len();
        if len >= wire::MIN_SIZE {
            // The stamps read in place, a word each.
            let (tag, seq, end) = (m.read_u64(0)?, m.read_u64(8)?, m.read_u64(len - 8)?);
            if let Some(seq) = wire::plain_data_stamps(len, tag, seq, end)? {
                m.release()?;
                return Ok(Some((len, seq)));
            }
        }
        buf.resize(len, 0);
        m.read(0, buf)?;
        m.release()?;
        Ok(None)
    }

    fn rings(&self) -> Option<u64> {
        Some(self.ch.stats().rings)
    }

    fn max_message(&self) -> usize {
        self.ch.max_message()
    }
}

/// The channel's configuration: the defaults, but the probe's timeout and spin options.
fn channel_config(end: &Endpoint) -> Config {
    let d = Config::default();
    Config {
        attach_timeout: Duration::from_secs(end.timeout),
        spin: end.spin_us.map_or(d.spin, Duration::from_micros),
        spin_max: end.spin_max_us.map_or(d.spin_max, Duration::from_micros),
        ..d
    }
}

fn channel_link(end: &Endpoint, role: Role) -> Result<ChannelLink> {
    let timeout = Duration::from_secs(end.timeout);
    let dev = Device::open(&end.device).with_context(|| format!("opening {}", end.device))?;
    ensure!(
        dev.info().doorbell,
        "{} is an ivshmem-plain device: the probe needs a doorbell channel",
        end.device
    );
    let config = channel_config(end);
    let mut ch = Channel::on_device(&dev, role, config)
        .with_context(|| format!("opening a channel on {}", end.device))?;
    ch.wait_for_peer(timeout)
        .context("waiting for the peer to attach")?;
    Ok(ChannelLink::new(ch, timeout, end.flush_every).plain_commits(end.plain_commits))
}

/// A driver's link, and the thread serving its other end if that is in this process (pipe).
type Driven = (Box<dyn Link>, Option<std::thread::JoinHandle<()>>);

/// Both ends of a channel over a memfd whose ring 0 (the driver's) has `ring` bytes, each
/// end ringing the other's eventfd: two VMs' segment and doorbells, inside one process.
fn local_channel_pair(end: &Endpoint, ring: usize) -> Result<(ChannelLink, ChannelLink)> {
    use std::os::fd::AsFd;
    use std::sync::Arc;
    const REPLY: usize = 64 << 10;
    let len = ring
        .checked_add(4096 + REPLY)
        .context("--region-kib is too large")?;
    let fd = rustix::fs::memfd_create("sivshm-probe", rustix::fs::MemfdFlags::CLOEXEC)
        .context("creating a memfd")?;
    rustix::fs::ftruncate(&fd, len as u64).context("sizing the memfd")?;
    let map = Arc::new(sivshm::Mapping::new(fd.as_fd(), 0, len).context("mapping the memfd")?);
    let (lm, lw) = sivshm::channel::Links::in_process_pair()?;
    let config = Config {
        reply_ring_bytes: Some(REPLY),
        ..channel_config(end)
    };
    let timeout = Duration::from_secs(end.timeout);
    let m = Channel::new(map.clone(), 0, len, Role::Manager, lm, config.clone())?;
    let w = Channel::new(map, 0, len, Role::Worker, lw, config)?;
    Ok((
        ChannelLink::new(m, timeout, end.flush_every).plain_commits(end.plain_commits),
        ChannelLink::new(w, timeout, end.flush_every),
    ))
}

/// Runs `serve` on `link` in a thread of this process.
fn serve_in_thread<L: Link + Send + 'static>(mut link: L) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Err(e) = proto::serve(&mut link) {
            eprintln!("sivshm-probe: the in-process peer failed: {e:#}");
        }
    })
}

/// The driver's link to its peer; `ring`: the bytes of an in-process ring.
fn connect(end: &Endpoint, ring: usize) -> Result<Driven> {
    let timeout = Duration::from_secs(end.timeout);
    Ok(match end.transport {
        Transport::Sivshm => (Box::new(channel_link(end, Role::Manager)?), None),
        Transport::Tcp => {
            let addr = end
                .connect
                .context("--transport tcp needs --connect ADDR:PORT (the peer's)")?;
            (Box::new(link::tcp_connect(addr, timeout)?), None)
        }
        Transport::Vsock => {
            let cid = end
                .vsock_cid
                .context("--transport vsock needs --vsock-cid CID (the peer VM's)")?;
            let l = vsock_link::vsock_connect(cid, end.vsock_port, timeout)?;
            (Box::new(l), None)
        }
        Transport::Pipe => {
            let (a, mut b) = link::pipe_pair()?;
            let t = std::thread::spawn(move || {
                if let Err(e) = proto::serve(&mut b) {
                    eprintln!("sivshm-probe: the pipe peer failed: {e:#}");
                }
            });
            (Box::new(a), Some(t))
        }
        Transport::ChannelLocal => {
            let (m, w) = local_channel_pair(end, ring)?;
            (Box::new(m), Some(serve_in_thread(w)))
        }
        Transport::Rtrb => {
            let (a, b) = link::rtrb_pair(ring, timeout);
            (Box::new(a), Some(serve_in_thread(b)))
        }
        Transport::Memcpy | Transport::ShmCopy => bail!(
            "{} has no peer: it measures throughput only",
            end.transport.name()
        ),
    })
}

fn run_latency(link: &mut dyn Link, t: Transport, lat: &LatencyArgs, verify: bool) -> Result<()> {
    for &size in &lat.latency_sizes {
        let l = proto::latency(link, size, lat.count, lat.warmup, verify)
            .with_context(|| format!("{} round trips of {size} bytes", t.name()))?;
        println!("{}", l.line(t.name()));
        println!("{}", l.result(t.name()));
    }
    Ok(())
}

fn run_throughput(
    link: &mut dyn Link,
    t: Transport,
    thr: &ThroughputArgs,
    verify: bool,
) -> Result<()> {
    let amount = thr.amount()?;
    for &size in &thr.sizes {
        let r = proto::throughput(link, size, amount, verify)
            .with_context(|| format!("{} streaming {size}-byte messages", t.name()))?;
        println!("{}", r.line(t.name()));
        println!("{}", r.result(t.name()));
    }
    Ok(())
}

/// Runs `phases` against the driver's peer, then says goodbye.
fn drive(
    end: &Endpoint,
    ring: usize,
    phases: impl FnOnce(&mut dyn Link) -> Result<()>,
) -> Result<()> {
    let (mut link, thread) = connect(end, ring)?;
    phases(link.as_mut())?;
    proto::bye(link.as_mut())?;
    if let Some(t) = thread {
        t.join()
            .map_err(|_| anyhow::anyhow!("the in-process peer panicked"))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Latency { end, lat, verify } => {
            let t = end.transport;
            drive(&end, DEFAULT_RING, |l| run_latency(l, t, &lat, verify))
        }
        Cmd::Throughput { end, thr, verify } => {
            let t = end.transport;
            if t == Transport::Memcpy || t == Transport::ShmCopy {
                let amount = thr.amount()?;
                let region = thr.region()?;
                for &size in &thr.sizes {
                    let r = match t {
                        Transport::Memcpy => proto::memcpy(size, amount)?,
                        _ => proto::shm_copy(size, amount, region)?,
                    };
                    println!("{}", r.line(t.name()));
                    println!("{}", r.result(t.name()));
                }
                return Ok(());
            }
            drive(&end, thr.region()?, |l| run_throughput(l, t, &thr, verify))
        }
        Cmd::Suite {
            end,
            lat,
            thr,
            verify,
        } => {
            let t = end.transport;
            drive(&end, thr.region()?, |l| {
                run_latency(l, t, &lat, verify)?;
                run_throughput(l, t, &thr, verify)
            })
        }
        Cmd::Serve { end } => {
            let timeout = Duration::from_secs(end.timeout);
            let mut link: Box<dyn Link> = match end.transport {
                Transport::Sivshm => Box::new(channel_link(&end, Role::Worker)?),
                Transport::Tcp => Box::new(link::tcp_accept(end.listen, timeout)?),
                Transport::Vsock => Box::new(vsock_link::vsock_accept(end.vsock_port, timeout)?),
                t => bail!("{} runs inside one process: nothing to serve", t.name()),
            };
            let n = proto::serve(link.as_mut())?;
            println!("serve {}: {n} messages", end.transport.name());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Arc;

    use sivshm::channel::Links;
    use sivshm::{EventFd, Mapping};

    /// Both ends of a channel over a memfd, eventfds for doorbells: what two VMs get from a
    /// segment and a doorbell channel.
    fn channel_pair(len: usize) -> (ChannelLink, ChannelLink) {
        let fd = rustix::fs::memfd_create("probe", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len as u64).unwrap();
        let map = Arc::new(Mapping::new(fd.as_fd(), 0, len).unwrap());
        let (to_m, to_w) = (
            Arc::new(EventFd::new().unwrap()),
            Arc::new(EventFd::new().unwrap()),
        );
        let links = |bell: &Arc<EventFd>, wake: &Arc<EventFd>, id| Links {
            doorbell: Some(bell.clone()),
            wake: Some(wake.clone()),
            own_id: Some(id),
            presence: None,
        };
        let timeout = Duration::from_secs(20);
        let open = |role, links| {
            let ch = Channel::new(map.clone(), 0, len, role, links, Config::default()).unwrap();
            ChannelLink::new(ch, timeout, 64)
        };
        let m = open(Role::Manager, links(&to_w, &to_m, 0));
        let w = open(Role::Worker, links(&to_m, &to_w, 1));
        (m, w)
    }

    #[test]
    fn spin_options_reach_the_channel_config() {
        let end = |args: &[&str]| {
            let mut argv = vec!["sivshm-probe", "serve", "--transport", "sivshm"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).unwrap().cmd {
                Cmd::Serve { end } => channel_config(&end),
                _ => unreachable!(),
            }
        };
        let d = Config::default();
        let c = end(&[]);
        assert_eq!((c.spin, c.spin_max), (d.spin, d.spin_max));
        let c = end(&["--spin-us", "5000", "--spin-max-us", "0"]);
        assert_eq!(
            (c.spin, c.spin_max),
            (Duration::from_millis(5), Duration::ZERO)
        );
        let Cmd::Throughput { end, thr, .. } = Cli::try_parse_from([
            "sivshm-probe",
            "throughput",
            "--transport",
            "shm-copy",
            "--region-kib",
            "1024",
        ])
        .unwrap()
        .cmd
        else {
            unreachable!()
        };
        assert!(end.transport == Transport::ShmCopy && thr.region_kib == 1024);
    }

    /// The in-process references stream checked messages of every size through a ring of
    /// the size asked, and print the line the host parses.
    #[test]
    fn channel_local_and_rtrb_stream_checked_messages() {
        for (name, extra) in [
            ("channel-local", None),
            ("channel-local", Some("--plain-commits")),
            ("rtrb", None),
        ] {
            let mut argv = vec!["sivshm-probe", "throughput", "--transport", name];
            argv.extend(extra);
            let Cmd::Throughput { end, .. } = Cli::try_parse_from(argv).unwrap().cmd else {
                unreachable!()
            };
            assert_eq!(end.plain_commits, extra.is_some());
            let (mut link, thread) = connect(&end, 1 << 20).unwrap();
            for size in [24, 64, 4096, 65536, (512 << 10) - 8] {
                let t =
                    proto::throughput(link.as_mut(), size, Amount::Messages(300), true).unwrap();
                assert_eq!(t.messages, 300);
                let line = t.result(end.transport.name());
                assert!(
                    line.starts_with(&format!(
                        "SIVSHM-RESULT probe kind=throughput transport={name} size={size} \
                         messages=300 "
                    )),
                    "{line}"
                );
            }
            let e = proto::throughput(link.as_mut(), 1 << 20, Amount::Messages(1), false);
            assert!(e.unwrap_err().to_string().contains("largest message"));
            proto::bye(link.as_mut()).unwrap();
            thread.unwrap().join().unwrap();
        }
    }

    #[test]
    fn the_probes_run_over_a_channel_and_count_its_doorbells() {
        let (mut m, mut w) = channel_pair(4 << 20);
        let peer = std::thread::spawn(move || proto::serve(&mut w));
        let l = proto::latency(&mut m, 4096, 30, 3, true).unwrap();
        eprintln!("{}", l.line("sivshm"));
        assert_eq!(l.n, 30);
        assert!(
            l.result("sivshm").contains(" rings_per_rt="),
            "{}",
            l.result("sivshm")
        );
        for size in [24, 65536, 1 << 20] {
            let t = proto::throughput(&mut m, size, Amount::Messages(40), true).unwrap();
            eprintln!("{}", t.line("sivshm"));
            assert_eq!(t.messages, 40);
            assert!(t.rings_per_msg.is_some());
        }
        // Larger than the ring: a clear error before anything is sent.
        let e = proto::throughput(&mut m, 8 << 20, Amount::Messages(1), false).unwrap_err();
        assert!(e.to_string().contains("largest message"), "{e}");
        proto::bye(&mut m).unwrap();
        assert_eq!(peer.join().unwrap().unwrap(), 33 + 120);
    }
}
