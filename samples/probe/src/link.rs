//! Message links the probes run over: a byte stream (TCP between VMs, a pipe pair inside one
//! VM) with a length prefix per message, and the sivshm channel (`channel_link`).

use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The largest message a stream link accepts: a peer announcing more is broken or hostile.
pub const MAX_FRAME: usize = 64 << 20;

/// Whole messages, in order, both ways.
pub trait Link {
    /// Sends one message (blocks while the link is full).
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Sends one message of a one-way stream: a link may wake its peer for several at once
    /// (the channel flushes every `--flush-every` messages); the next [`Link::send`] wakes
    /// it for all. Blocks while the link is full.
    fn send_streamed(&mut self, msg: &[u8]) -> Result<()> {
        self.send(msg)
    }
    /// Receives the next message into `buf` (resized to it).
    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<()>;
    /// Receives the next message; a link that can read it in place returns the length and
    /// sequence number of a plain [`DATA`](crate::wire::DATA) message (no pattern) after
    /// checking its stamps where it lies, without copying its body: that is what a zero-copy
    /// consumer does. Anything else (and every message of a stream link, which must read all
    /// its bytes anyway) is copied into `buf`, and None returned.
    fn recv_data(&mut self, buf: &mut Vec<u8>) -> Result<Option<(usize, u64)>> {
        self.recv(buf)?;
        Ok(None)
    }
    /// Notifications this side has sent its peer so far (doorbells), if the link counts them.
    fn rings(&self) -> Option<u64> {
        None
    }
    /// The largest message this link carries.
    fn max_message(&self) -> usize {
        MAX_FRAME
    }
}

/// Messages over a byte stream: a little-endian `u32` length, then the message.
pub struct StreamLink<R, W> {
    reader: BufReader<R>,
    writer: W,
}

impl<R: Read, W: Write> StreamLink<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        StreamLink {
            reader: BufReader::with_capacity(256 << 10, reader),
            writer,
        }
    }
}

/// Writes the length prefix and the message with as few system calls as the stream allows
/// (one `writev` when it takes everything), so that with `TCP_NODELAY` a small message is
/// one segment, not two.
fn write_frame(w: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let len = u32::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?
        .to_le_bytes();
    let total = len.len() + msg.len();
    let mut done = 0;
    while done < total {
        let r = if done < len.len() {
            w.write_vectored(&[IoSlice::new(&len[done..]), IoSlice::new(msg)])
        } else {
            w.write(&msg[done - len.len()..])
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}

impl<R: Read, W: Write> Link for StreamLink<R, W> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX_FRAME {
            bail!(
                "message of {} bytes exceeds the stream limit of {MAX_FRAME}",
                msg.len()
            );
        }
        write_frame(&mut self.writer, msg).context("sending")
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let mut len = [0; 4];
        self.reader
            .read_exact(&mut len)
            .context("receiving (the peer closed the link or stopped answering)")?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            bail!("the peer announced a message of {len} bytes (at most {MAX_FRAME})");
        }
        buf.resize(len, 0);
        self.reader
            .read_exact(buf)
            .context("receiving a message's body")
    }
}

pub type TcpLink = StreamLink<TcpStream, TcpStream>;

fn tcp_link(stream: TcpStream, timeout: Duration) -> Result<TcpLink> {
    stream.set_nodelay(true)?;
    // A peer that stops answering is an error after the timeout, never a hang.
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let reader = stream.try_clone()?;
    Ok(StreamLink::new(reader, stream))
}

/// Calls `connect` until it succeeds, every 100 ms for `timeout` (the peer VM boots alongside
/// this one and may not listen yet); its last error names `to`.
pub(crate) fn connect_retrying<S>(
    to: &str,
    timeout: Duration,
    mut connect: impl FnMut() -> io::Result<S>,
) -> Result<S> {
    let deadline = Instant::now() + timeout;
    loop {
        match connect() {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to {to} for {timeout:?}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Calls `accept` on a non-blocking listener until a connection comes, for `timeout`; `on`
/// names the listener in errors.
pub(crate) fn accept_within<S>(
    on: &str,
    timeout: Duration,
    mut accept: impl FnMut() -> io::Result<S>,
) -> Result<S> {
    let deadline = Instant::now() + timeout;
    loop {
        match accept() {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("nobody connected on {on} within {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("accepting on {on}")),
        }
    }
}

/// Connects to `addr`, retrying until `timeout`: the peer VM boots alongside this one and
/// may not listen yet.
pub fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<TcpLink> {
    let stream = connect_retrying(&addr.to_string(), timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
    })?;
    tcp_link(stream, timeout)
}

/// Accepts one connection on `addr` within `timeout`.
pub fn tcp_accept(addr: SocketAddr, timeout: Duration) -> Result<TcpLink> {
    let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    tcp_accept_on(&listener, timeout)
}

pub fn tcp_accept_on(listener: &TcpListener, timeout: Duration) -> Result<TcpLink> {
    listener.set_nonblocking(true)?;
    let on = listener
        .local_addr()
        .map_or_else(|_| "a TCP listener".into(), |a| a.to_string());
    let (stream, _) = accept_within(&on, timeout, || listener.accept())?;
    stream.set_nonblocking(false)?;
    tcp_link(stream, timeout)
}

pub type PipeLink = StreamLink<io::PipeReader, io::PipeWriter>;

/// Two connected links over two pipes, for two threads of one process.
pub fn pipe_pair() -> Result<(PipeLink, PipeLink)> {
    let (ar, aw) = io::pipe()?;
    let (br, bw) = io::pipe()?;
    Ok((StreamLink::new(ar, bw), StreamLink::new(br, aw)))
}

/// Messages over the `rtrb` SPSC ring of bytes, between two threads of one process: the
/// reference an in-process ring sets for the channel (`--transport rtrb`). Each message is a
/// little-endian `u32` length and its bytes, copied into the ring in one chunk and published
/// by one commit, as the channel publishes a record. The receiver reads a plain data
/// message's stamps in place and releases it, as the channel's does ([`Link::recv_data`]);
/// other messages are copied out. A side that finds the ring full or empty polls, yielding
/// the CPU between looks (there is no doorbell), and gives up after the timeout.
pub struct RtrbLink {
    tx: rtrb::Producer<u8>,
    rx: rtrb::Consumer<u8>,
    capacity: usize,
    timeout: Duration,
}

/// Two connected rtrb links, each direction a ring of `capacity` bytes.
pub fn rtrb_pair(capacity: usize, timeout: Duration) -> (RtrbLink, RtrbLink) {
    let (atx, brx) = rtrb::RingBuffer::new(capacity);
    let (btx, arx) = rtrb::RingBuffer::new(capacity);
    let link = |tx, rx| RtrbLink {
        tx,
        rx,
        capacity,
        timeout,
    };
    (link(atx, arx), link(btx, brx))
}

/// Polls `ready` until it is true: spinning a little, then yielding between looks; an error
/// after `timeout` or once the other end is gone.
fn poll_until(
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    abandoned: impl Fn() -> bool,
) -> Result<()> {
    let mut deadline = None;
    let mut spins = 0u32;
    while !ready() {
        if spins < 256 {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        if abandoned() {
            bail!("the rtrb peer is gone");
        }
        let d = *deadline.get_or_insert_with(|| Instant::now() + timeout);
        if Instant::now() >= d {
            bail!("the rtrb peer did not answer within {timeout:?}");
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Copies `src` to byte `at` of a chunk made of the slices `a` then `b`.
fn chunk_put(
    a: &mut [std::mem::MaybeUninit<u8>],
    b: &mut [std::mem::MaybeUninit<u8>],
    at: usize,
    src: &[u8],
) {
    let n = a.len().saturating_sub(at).min(src.len());
    if n > 0 {
        a[at..at + n].write_copy_of_slice(&src[..n]);
    }
    let rest = &src[n..];
    if !rest.is_empty() {
        let from = (at + n) - a.len();
        b[from..from + rest.len()].write_copy_of_slice(rest);
    }
}

/// Copies byte `at` on of a chunk made of the slices `a` then `b` into `dst`.
fn chunk_get(a: &[u8], b: &[u8], at: usize, dst: &mut [u8]) {
    let n = a.len().saturating_sub(at).min(dst.len());
    if n > 0 {
        dst[..n].copy_from_slice(&a[at..at + n]);
    }
    if n < dst.len() {
        let from = at + n - a.len();
        let rest = dst.len() - n;
        dst[n..].copy_from_slice(&b[from..from + rest]);
    }
}

impl RtrbLink {
    /// Waits for the next message; its length.
    fn next_len(&mut self) -> Result<usize> {
        let (timeout, rx) = (self.timeout, &mut self.rx);
        poll_until(timeout, || rx.slots() >= 4, || rx.is_abandoned())?;
        let chunk = self.rx.read_chunk(4)?;
        let (a, b) = chunk.as_slices();
        let mut len = [0u8; 4];
        chunk_get(a, b, 0, &mut len);
        // Dropped uncommitted: the length stays in the ring, with its message.
        Ok(u32::from_le_bytes(len) as usize)
    }

    /// Waits until the whole message of `len` bytes is in the ring.
    fn whole(&mut self, len: usize) -> Result<rtrb::chunks::ReadChunk<'_, u8>> {
        let (timeout, rx) = (self.timeout, &mut self.rx);
        poll_until(timeout, || rx.slots() >= 4 + len, || rx.is_abandoned())?;
        Ok(self.rx.read_chunk(4 + len)?)
    }
}

impl Link for RtrbLink {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > self.max_message() {
            bail!("message of {} bytes exceeds the ring's half", msg.len());
        }
        let need = 4 + msg.len();
        let (timeout, tx) = (self.timeout, &mut self.tx);
        poll_until(timeout, || tx.slots() >= need, || tx.is_abandoned())?;
        let mut chunk = self.tx.write_chunk_uninit(need)?;
        let (a, b) = chunk.as_mut_slices();
        chunk_put(a, b, 0, &(msg.len() as u32).to_le_bytes());
        chunk_put(a, b, 4, msg);
        // SAFETY: all `need` bytes were written just above.
        unsafe { chunk.commit_all() };
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let len = self.next_len()?;
        buf.resize(len, 0);
        let chunk = self.whole(len)?;
        let (a, b) = chunk.as_slices();
        chunk_get(a, b, 4, buf);
        chunk.commit_all();
        Ok(())
    }

    fn recv_data(&mut self, buf: &mut Vec<u8>) -> Result<Option<(usize, u64)>> {
        let len = self.next_len()?;
        let chunk = self.whole(len)?;
        let (a, b) = chunk.as_slices();
        if len >= crate::wire::MIN_SIZE {
            let (mut header, mut trailer) = ([0u8; crate::wire::HEADER], [0u8; 8]);
            chunk_get(a, b, 4, &mut header);
            chunk_get(a, b, 4 + len - 8, &mut trailer);
            let (tag, seq) = (
                crate::wire::u64_at(&header, 0),
                crate::wire::u64_at(&header, 8),
            );
            let end = u64::from_le_bytes(trailer);
            if let Some(seq) = crate::wire::plain_data_stamps(len, tag, seq, end)? {
                chunk.commit_all();
                return Ok(Some((len, seq)));
            }
        }
        buf.resize(len, 0);
        chunk_get(a, b, 4, buf);
        chunk.commit_all();
        Ok(None)
    }

    /// Half the ring, as the channel's largest message is half of its.
    fn max_message(&self) -> usize {
        self.capacity / 2 - 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_bounds_and_bytes() {
        let (mut a, mut b) = pipe_pair().unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let t = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for _ in 0..3 {
                b.recv(&mut buf).unwrap();
                got.push(buf.clone());
            }
            got
        });
        a.send(b"one").unwrap();
        a.send(&[]).unwrap();
        a.send(&big).unwrap();
        let got = t.join().unwrap();
        assert_eq!(got, [b"one".to_vec(), Vec::new(), big]);
    }

    #[test]
    fn an_oversized_announcement_is_an_error_not_an_allocation() {
        let (ar, mut aw) = io::pipe().unwrap();
        let (_br, bw) = io::pipe().unwrap();
        let mut link = StreamLink::new(ar, bw);
        aw.write_all(&(MAX_FRAME as u32 + 1).to_le_bytes()).unwrap();
        let err = link.recv(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("announced"), "{err:#}");
    }

    #[test]
    fn rtrb_messages_keep_their_bounds_and_bytes_across_the_wrap() {
        let (mut a, mut b) = rtrb_pair(1000, Duration::from_secs(10));
        let t = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for _ in 0..300 {
                b.recv(&mut buf).unwrap();
                got.push(buf.clone());
            }
            got
        });
        let sent: Vec<Vec<u8>> = (0..300u32)
            .map(|i| (0..(i * 7 % 490)).map(|k| (k ^ i) as u8).collect())
            .collect();
        for m in &sent {
            a.send(m).unwrap();
        }
        assert_eq!(t.join().unwrap(), sent);
        assert!(a.send(&[0; 600]).is_err(), "more than half the ring");
    }

    #[test]
    fn a_closed_peer_is_an_error() {
        let (mut a, b) = pipe_pair().unwrap();
        drop(b);
        assert!(a.recv(&mut Vec::new()).is_err());
    }

    #[test]
    fn tcp_connects_to_a_listener_that_comes_late() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut l = tcp_accept(addr, Duration::from_secs(10)).unwrap();
            let mut buf = Vec::new();
            l.recv(&mut buf).unwrap();
            l.send(&buf).unwrap();
        });
        let mut c = tcp_connect(addr, Duration::from_secs(10)).unwrap();
        c.send(b"ping").unwrap();
        let mut buf = Vec::new();
        c.recv(&mut buf).unwrap();
        assert_eq!(buf, b"ping");
        server.join().unwrap();
    }
}
