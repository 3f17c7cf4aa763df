//! The benchmark's driver: times round trips, streams, prints the figures.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use super::{
    check_common, parse_answer, rt_name, stream_name, Common, In, Out, Source, END, RESEND, STALL,
    WARM_UP,
};
use crate::job::node;

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
    let mut sent = t0;
    out.put(src.stamped(seq))?;
    out.wake()?;
    loop {
        // Lost on the way (zenoh drops under load): again; the round trip counts from the
        // first.
        if sent.elapsed() > RESEND {
            out.put(src.stamped(seq))?;
            out.wake()?;
            sent = Instant::now();
        }
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
    // The end of the phase: the server moves on to the next size. Repeated until answered.
    let mut ended = false;
    let mut end_sent = None::<Instant>;
    while !ended {
        if Instant::now() > deadline {
            bail!("the stream's end was not acknowledged in time");
        }
        if end_sent.is_none_or(|t| t.elapsed() > RESEND) {
            data.put(src.stamped(END))?;
            data.wake()?;
            end_sent = Some(Instant::now());
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
