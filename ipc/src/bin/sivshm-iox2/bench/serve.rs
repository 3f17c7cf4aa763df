//! The benchmark's server.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{answer, check_common, rt_name, stream_name, Common, In, Out, END, LINGER};
use crate::job::node;

/// The server: answers every round trip, then acknowledges every stream, in the driver's
/// order. A phase's ports stay until the next phase ended (its last answer must not go with
/// its port; the driver had it before it began the next phase): fewer services to list make
/// the gateways' looks cheaper.
pub fn serve(c: &Common) -> Result<()> {
    check_common(c)?;
    let n = node()?;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let mut prev = Phase {
        input: In::new(&n, &rt_name(&c.prefix, "ping"), 4)?,
        output: Out::new(&n, &rt_name(&c.prefix, "pong"), 4, 64)?,
        received: 0,
    };
    let mut done = false;
    while !done {
        if Instant::now() > deadline {
            bail!("the round trips did not end in time");
        }
        let mut answers = Vec::new();
        let woken = prev.input.next(|seq, _| {
            answers.push(seq);
            Ok(())
        })?;
        for seq in answers {
            prev.output.put(&answer(seq, 0, woken))?;
            prev.output.wake()?;
            done |= seq == END;
        }
    }
    for &size in &c.sizes {
        let mut this = Phase {
            input: In::new(&n, &stream_name(&c.prefix, size, "data"), c.window)?,
            output: Out::new(&n, &stream_name(&c.prefix, size, "ack"), 4, 64)?,
            received: 0,
        };
        let mut done = false;
        while !done {
            if Instant::now() > deadline {
                bail!("the stream of {size} B did not end in time");
            }
            prev.answer_ends()?;
            let mut highest = None;
            let received = &mut this.received;
            let woken = this.input.next(|seq, p| {
                if p.len() != size {
                    bail!("a sample of {} bytes in the stream of {size}", p.len());
                }
                if seq != 0 && seq != END {
                    *received += 1;
                }
                done |= seq == END;
                highest = highest.max(Some(seq));
                Ok(())
            })?;
            if let Some(h) = highest {
                this.output.put(&answer(h, this.received, woken))?;
                this.output.wake()?;
            }
        }
        prev = this;
    }
    // The last answer may be lost on the way (zenoh drops under load): answer the driver's
    // repeats a while.
    let linger = Instant::now() + LINGER;
    while Instant::now() < linger {
        prev.input.wait()?;
        prev.answer_ends()?;
    }
    Ok(())
}

/// A phase of the server: what it reads, what it answers on, and how many samples came.
struct Phase {
    input: In,
    output: Out,
    received: u64,
}

impl Phase {
    /// Answers the driver's repeats of the phase's end (its first answer was lost), without
    /// waiting.
    fn answer_ends(&self) -> Result<()> {
        let mut ends = 0;
        self.input.drain(|seq, _| {
            ends += usize::from(seq == END);
            Ok(())
        })?;
        for _ in 0..ends {
            self.output.put(&answer(END, self.received, true))?;
            self.output.wake()?;
        }
        Ok(())
    }
}
