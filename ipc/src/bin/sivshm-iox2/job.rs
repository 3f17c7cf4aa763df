//! The distribution job as plain iceoryx2 programs: the manager publishes batches on
//! `jobs/<worker>/in` and wakes the worker on `jobs/<worker>/ready`; the worker answers each
//! batch with its round and checksum on `jobs/<worker>/out` and wakes the manager on
//! `jobs/<worker>/done`: every service of a worker is under `jobs/<worker>/`. Neither knows whether the other is in this VM, in another VM over
//! sivshm, or on another host over zenoh.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use iceoryx2::port::event_id::EventId;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

#[derive(Args)]
pub struct ManagerArgs {
    /// The workers, by the name their services carry (jobs/NAME/...).
    #[arg(long = "worker", required = true)]
    workers: Vec<String>,
    #[arg(long, default_value_t = 16)]
    rounds: u32,
    /// Bytes per batch.
    #[arg(long, default_value_t = 64 << 10)]
    bytes: usize,
    /// Seconds the whole job may take.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    name: String,
    /// The last round: the worker exits once it answered it.
    #[arg(long, default_value_t = 16)]
    rounds: u32,
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

type Bytes = [u8];

pub fn node() -> Result<Node<ipc::Service>> {
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| anyhow!("iceoryx2 node: {e:?}"))
}

fn name(s: &str) -> Result<ServiceName> {
    ServiceName::new(s).map_err(|e| anyhow!("service name {s:?}: {e:?}"))
}

pub fn publisher(
    n: &Node<ipc::Service>,
    s: &str,
    max: usize,
) -> Result<Publisher<ipc::Service, Bytes, ()>> {
    n.service_builder(&name(s)?)
        .publish_subscribe::<Bytes>()
        .open_or_create()
        .map_err(|e| anyhow!("service {s}: {e:?}"))?
        .publisher_builder()
        .initial_max_slice_len(max)
        .create()
        .map_err(|e| anyhow!("publisher on {s}: {e:?}"))
}

pub fn subscriber(n: &Node<ipc::Service>, s: &str) -> Result<Subscriber<ipc::Service, Bytes, ()>> {
    n.service_builder(&name(s)?)
        .publish_subscribe::<Bytes>()
        .open_or_create()
        .map_err(|e| anyhow!("service {s}: {e:?}"))?
        .subscriber_builder()
        .create()
        .map_err(|e| anyhow!("subscriber on {s}: {e:?}"))
}

pub fn notifier(n: &Node<ipc::Service>, s: &str) -> Result<Notifier<ipc::Service>> {
    n.service_builder(&name(s)?)
        .event()
        .open_or_create()
        .map_err(|e| anyhow!("service {s}: {e:?}"))?
        .notifier_builder()
        .create()
        .map_err(|e| anyhow!("notifier on {s}: {e:?}"))
}

pub fn listener(n: &Node<ipc::Service>, s: &str) -> Result<Listener<ipc::Service>> {
    n.service_builder(&name(s)?)
        .event()
        .open_or_create()
        .map_err(|e| anyhow!("service {s}: {e:?}"))?
        .listener_builder()
        .create()
        .map_err(|e| anyhow!("listener on {s}: {e:?}"))
}

pub fn send(p: &Publisher<ipc::Service, Bytes, ()>, data: &[u8]) -> Result<()> {
    let s = p
        .loan_slice_uninit(data.len())
        .map_err(|e| anyhow!("loan of {} bytes: {e:?}", data.len()))?;
    s.write_from_slice(data)
        .send()
        .map_err(|e| anyhow!("send: {e:?}"))?;
    Ok(())
}

/// The batch of `round` for `worker`: its round, then bytes that depend on both.
fn batch(worker: &str, round: u32, bytes: usize) -> Vec<u8> {
    let seed = worker.bytes().fold(round.wrapping_mul(2654435761), |a, b| {
        a.rotate_left(5) ^ u32::from(b)
    });
    let mut out = round.to_le_bytes().to_vec();
    out.extend(
        (0..bytes.saturating_sub(4)).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed) as u8),
    );
    out
}

/// FNV-1a over the batch.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// An answer: round, checksum.
fn answer(round: u32, sum: u64) -> Vec<u8> {
    let mut a = u64::from(round).to_le_bytes().to_vec();
    a.extend(sum.to_le_bytes());
    a
}

fn parse_answer(a: &[u8]) -> Option<(u32, u64)> {
    let round = u32::try_from(u64::from_le_bytes(a.get(0..8)?.try_into().ok()?)).ok()?;
    Some((round, u64::from_le_bytes(a.get(8..16)?.try_into().ok()?)))
}

struct Lane {
    worker: String,
    input: Publisher<ipc::Service, Bytes, ()>,
    output: Subscriber<ipc::Service, Bytes, ()>,
    ready: Notifier<ipc::Service>,
    done: Listener<ipc::Service>,
    verified: u32,
    wrong: u32,
}

impl Lane {
    /// Drains the answers; true if `round` was answered (and verified or not).
    fn answered(&mut self, round: u32, bytes: usize) -> Result<bool> {
        let mut done = false;
        while let Some(s) = self
            .output
            .receive()
            .map_err(|e| anyhow!("receive: {e:?}"))?
        {
            let Some((r, sum)) = parse_answer(s.payload()) else {
                self.wrong += 1;
                continue;
            };
            if r != round {
                continue; // a repeated answer to the handshake
            }
            done = true;
            if r == 0 || sum == checksum(&batch(&self.worker, r, bytes)) {
                self.verified += u32::from(r > 0);
            } else {
                self.wrong += 1;
            }
        }
        Ok(done)
    }
}

pub fn manager(a: &ManagerArgs) -> Result<()> {
    let n = node()?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut lanes = Vec::new();
    for w in &a.workers {
        lanes.push(Lane {
            worker: w.clone(),
            input: publisher(&n, &format!("jobs/{w}/in"), a.bytes.max(16))?,
            output: subscriber(&n, &format!("jobs/{w}/out"))?,
            ready: notifier(&n, &format!("jobs/{w}/ready"))?,
            done: listener(&n, &format!("jobs/{w}/done"))?,
            verified: 0,
            wrong: 0,
        });
    }
    // The handshake: round 0 until every worker answered (the gateways bridge the services
    // as they discover them: until then a sample has nowhere to go).
    let mut wakeups = 0u64;
    for round in 0..=a.rounds {
        let mut pending: Vec<usize> = (0..lanes.len()).collect();
        let mut last_sent = None::<Instant>;
        while !pending.is_empty() {
            if Instant::now() > deadline {
                let who: Vec<&str> = pending.iter().map(|&i| lanes[i].worker.as_str()).collect();
                for l in &lanes {
                    report_manager(l, a.rounds, wakeups, "timeout");
                }
                bail!("round {round}: no answer from {who:?} in time");
            }
            let resend =
                round == 0 && last_sent.is_none_or(|t| t.elapsed() > Duration::from_millis(200));
            if last_sent.is_none() || resend {
                for &i in &pending {
                    let l = &lanes[i];
                    let data = match round {
                        0 => 0u32.to_le_bytes().to_vec(),
                        r => batch(&l.worker, r, a.bytes),
                    };
                    send(&l.input, &data)?;
                    l.ready
                        .notify_with_custom_event_id(EventId::new(round as usize))
                        .map_err(|e| anyhow!("notify: {e:?}"))?;
                }
                last_sent = Some(Instant::now());
            }
            // Woken by the first pending worker's answer (or after 50 ms: look at all).
            let first = &lanes[pending[0]];
            if first
                .done
                .timed_wait(|_| {}, Duration::from_millis(50))
                .map_err(|e| anyhow!("wait: {e:?}"))?
                > 0
            {
                wakeups += 1;
            }
            let mut still = Vec::new();
            for i in pending {
                if !lanes[i].answered(round, a.bytes)? {
                    still.push(i);
                }
            }
            pending = still;
        }
    }
    let mut ok = true;
    for l in &lanes {
        let good = l.verified == a.rounds && l.wrong == 0;
        ok &= good;
        report_manager(l, a.rounds, wakeups, if good { "ok" } else { "failed" });
    }
    if !ok {
        bail!("some batches were not verified");
    }
    Ok(())
}

fn report_manager(l: &Lane, rounds: u32, wakeups: u64, status: &str) {
    println!(
        "SIVSHM-RESULT iox2-job-manager worker={} rounds={rounds} verified={} wrong={} \
         wakeups={wakeups} woken={} status={status}",
        l.worker,
        l.verified,
        l.wrong,
        if wakeups > 0 { "yes" } else { "no" }
    );
}

pub fn worker(a: &WorkerArgs) -> Result<()> {
    let n = node()?;
    let w = &a.name;
    let input = subscriber(&n, &format!("jobs/{w}/in"))?;
    let output = publisher(&n, &format!("jobs/{w}/out"), 16)?;
    let ready = listener(&n, &format!("jobs/{w}/ready"))?;
    let done = notifier(&n, &format!("jobs/{w}/done"))?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let (mut answered, mut wakeups, mut last) = (0u32, 0u64, 0u32);
    while last < a.rounds {
        if Instant::now() > deadline {
            println!(
                "SIVSHM-RESULT iox2-job-worker worker={w} answered={answered} wakeups={wakeups} status=timeout"
            );
            bail!("the manager did not send every round in time");
        }
        if ready
            .timed_wait(|_| {}, Duration::from_millis(100))
            .map_err(|e| anyhow!("wait: {e:?}"))?
            > 0
        {
            wakeups += 1;
        }
        while let Some(s) = input.receive().map_err(|e| anyhow!("receive: {e:?}"))? {
            let data = s.payload();
            let Some(round) = data
                .get(0..4)
                .map(|r| u32::from_le_bytes(r.try_into().unwrap_or_default()))
            else {
                continue;
            };
            send(&output, &answer(round, checksum(data)))?;
            done.notify().map_err(|e| anyhow!("notify: {e:?}"))?;
            answered += u32::from(round > 0 && round > last);
            last = last.max(round);
        }
    }
    let woken = if wakeups > 0 { "yes" } else { "no" };
    println!(
        "SIVSHM-RESULT iox2-job-worker worker={w} answered={answered} wakeups={wakeups} \
         woken={woken} status=ok"
    );
    // Stay a little: the last answer is still on its way through the gateway.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}
