//! What it costs to wire a manager and N workers, without booting anything: SIVSHM's
//! pre-filled channel streams against the central server's distribution, both measured for
//! real (the server is the one `ivshmem-server` runs, its clients read everything the way
//! QEMU does).

use std::os::fd::OwnedFd;
use std::time::Instant;

use anyhow::{Context, Result};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use sivshm_host::pci::PciSlot;

use crate::ivshmem_server::{Config, Server, PEER_SNDBUF};
use crate::pair::channel;
use sivshm_host::protocol::recv_message;
use sivshm_host::segments;

/// Work done to wire one topology.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// File descriptors created (segments, eventfds, sockets).
    pub fds_created: u64,
    /// Protocol messages sent.
    pub messages: u64,
    /// File descriptors passed along with them.
    pub fds_sent: u64,
}

/// SIVSHM: a segment and a channel per worker, every stream queued before any VM starts.
fn sivshm(workers: usize) -> Result<(Cost, f64)> {
    let start = Instant::now();
    let mut keep = Vec::with_capacity(workers);
    let mut cost = Cost::default();
    for i in 0..workers {
        let seg = segments::create(&format!("w{i}"), 1 << 20)?;
        let ch = channel(&seg, (0, PciSlot::root(4)), (1, PciSlot::root(4)), 1)?;
        // A segment, two eventfds, two socket pairs.
        cost.fds_created += 1 + 2 + 4;
        // Each side: version, id, the segment, the peer's vector, its own vector.
        cost.messages += 2 * 5;
        cost.fds_sent += 2 * 3;
        keep.push((seg, ch));
    }
    let secs = start.elapsed().as_secs_f64();
    drop(keep);
    Ok((cost, secs))
}

/// IVSHMEM: the manager and the workers connect to one server in turn; each reads
/// everything it is sent (and closes the fds, as a client that has used them would hold them).
fn ivshmem(workers: usize) -> Result<(Cost, f64)> {
    let start = Instant::now();
    let mut server = Server::new(
        Config {
            size: 1 << 20,
            vectors: 1,
            peer_sndbuf: PEER_SNDBUF,
        },
        Box::new(|_| {}),
    )?;
    let mut cost = Cost {
        fds_created: 1,
        ..Cost::default()
    };
    let mut clients: Vec<OwnedFd> = Vec::with_capacity(workers + 1);
    for _ in 0..=workers {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .context("socketpair")?;
        // A connection and the newcomer's eventfd.
        cost.fds_created += 2 + 1;
        server.accept(ours);
        clients.push(theirs);
        for c in &clients {
            while let Ok((_, fd)) = recv_message(c) {
                cost.messages += 1;
                cost.fds_sent += u64::from(fd.is_some());
            }
        }
    }
    anyhow::ensure!(
        server.peer_ids().len() == workers + 1,
        "the server dropped peers while wiring {workers} workers"
    );
    let secs = start.elapsed().as_secs_f64();
    drop(clients);
    Ok((cost, secs))
}

/// The `schema` field of `wiring-bench --json`: changes when a member is removed, renamed or
/// changes its type or meaning; members may be added without a change.
pub const JSON_SCHEMA: &str = "sivshm-lab/wiring-bench/1";

/// One worker count's figures: what each side's wiring cost and how long it took.
#[derive(Debug)]
pub struct Row {
    pub workers: usize,
    pub sivshm: Cost,
    pub sivshm_secs: f64,
    pub ivshmem: Cost,
    pub ivshmem_secs: f64,
}

impl Row {
    /// The central server's messages per SIVSHM message.
    pub fn message_ratio(&self) -> f64 {
        self.ivshmem.messages as f64 / self.sivshm.messages as f64
    }
}

/// The measurements: RLIMIT_NOFILE before it was raised (soft, hard), and a row for each
/// worker count.
pub struct Figures {
    pub nofile: (Option<u64>, Option<u64>),
    pub rows: Vec<Row>,
}

/// Wires each worker count both ways.
pub fn measure(counts: &[usize]) -> Result<Figures> {
    // Both sides hold every fd of a topology at once.
    let (soft, hard) = rlimit_nofile();
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        },
    );
    let mut rows = Vec::with_capacity(counts.len());
    for &n in counts {
        let (s, st) = sivshm(n).with_context(|| format!("SIVSHM wiring of {n} workers"))?;
        let (i, it) = ivshmem(n).with_context(|| format!("IVSHMEM wiring of {n} workers"))?;
        rows.push(Row {
            workers: n,
            sivshm: s,
            sivshm_secs: st,
            ivshmem: i,
            ivshmem_secs: it,
        });
    }
    Ok(Figures {
        nofile: (soft, hard),
        rows,
    })
}

/// The table `wiring-bench` prints.
pub fn table(f: &Figures) -> Vec<String> {
    let (soft, hard) = f.nofile;
    let mut out = vec![
        format!(
            "# wiring a manager and N workers, 1 vector per peer, no VM booted (RLIMIT_NOFILE \
             {soft:?} raised to {hard:?})"
        ),
        "#       N | SIVSHM: time, fds made, messages, fds sent | IVSHMEM server: time, \
         fds made, messages, fds sent | messages IVSHMEM/SIVSHM"
            .into(),
    ];
    for r in &f.rows {
        let (s, i) = (&r.sivshm, &r.ivshmem);
        out.push(format!(
            "{:>9} | {:.1} ms, {}, {}, {} | {:.1} ms, {}, {}, {} | {:.1}",
            r.workers,
            r.sivshm_secs * 1e3,
            s.fds_created,
            s.messages,
            s.fds_sent,
            r.ivshmem_secs * 1e3,
            i.fds_created,
            i.messages,
            i.fds_sent,
            r.message_ratio()
        ));
    }
    out
}

/// What `wiring-bench --json` prints: the table's figures as one JSON object, on one line
/// (schema [`JSON_SCHEMA`], Documentation/host-and-tests.rst). Times are in seconds, not
/// rounded; an RLIMIT_NOFILE without limit is `null`.
pub fn json(f: &Figures) -> String {
    let cost = |c: &Cost, secs: f64| {
        serde_json::json!({
            "secs": secs,
            "fds_created": c.fds_created,
            "messages": c.messages,
            "fds_sent": c.fds_sent,
        })
    };
    let rows: Vec<_> = f
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "workers": r.workers,
                "sivshm": cost(&r.sivshm, r.sivshm_secs),
                "ivshmem": cost(&r.ivshmem, r.ivshmem_secs),
                "message_ratio": r.message_ratio(),
            })
        })
        .collect();
    serde_json::json!({
        "schema": JSON_SCHEMA,
        "vectors_per_peer": 1,
        "rlimit_nofile": { "soft": f.nofile.0, "hard": f.nofile.1 },
        "rows": rows,
    })
    .to_string()
}

/// A `wiring-bench --json` output read back (for `sivshm-lab plot --from`).
pub fn from_json(text: &str) -> Result<Figures> {
    let v: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    anyhow::ensure!(
        v["schema"] == JSON_SCHEMA,
        "schema {}, not {JSON_SCHEMA:?}",
        v["schema"]
    );
    let u = |v: &serde_json::Value, k: &str| {
        v[k].as_u64()
            .with_context(|| format!("{k} is not a whole number: {}", v[k]))
    };
    let side = |v: &serde_json::Value| -> Result<(Cost, f64)> {
        Ok((
            Cost {
                fds_created: u(v, "fds_created")?,
                messages: u(v, "messages")?,
                fds_sent: u(v, "fds_sent")?,
            },
            v["secs"].as_f64().context("secs is not a number")?,
        ))
    };
    let rows = v["rows"]
        .as_array()
        .context("no rows")?
        .iter()
        .map(|r| {
            let (sivshm, sivshm_secs) = side(&r["sivshm"]).context("sivshm")?;
            let (ivshmem, ivshmem_secs) = side(&r["ivshmem"]).context("ivshmem")?;
            Ok(Row {
                workers: usize::try_from(u(r, "workers")?)?,
                sivshm,
                sivshm_secs,
                ivshmem,
                ivshmem_secs,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let limit = &v["rlimit_nofile"];
    Ok(Figures {
        nofile: (limit["soft"].as_u64(), limit["hard"].as_u64()),
        rows,
    })
}

/// What `wiring-bench --plot` draws: the table's messages against N, both sides.
pub fn plot(f: &Figures, path: &std::path::Path) -> Result<()> {
    let rows: Vec<_> = f
        .rows
        .iter()
        .map(|r| (r.workers, r.sivshm.messages, r.ivshmem.messages))
        .collect();
    crate::plot::wiring(path, &rows)
}

fn rlimit_nofile() -> (Option<u64>, Option<u64>) {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (r.current, r.maximum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_messages_grow_with_the_square_and_sivshms_linearly() {
        let (s4, _) = sivshm(4).unwrap();
        let (s8, _) = sivshm(8).unwrap();
        assert_eq!(s8.messages, 2 * s4.messages);
        let (i4, _) = ivshmem(4).unwrap();
        // 5 peers: each gets 3 setup messages, its own vector, and one per other peer.
        assert_eq!(i4.messages, 5 * 3 + 5 + 5 * 4);
        assert_eq!(i4.fds_sent, 5 + 5 + 5 * 4);
        let (i8, _) = ivshmem(8).unwrap();
        assert_eq!(i8.messages, 9 * 3 + 9 + 9 * 8);
    }

    #[test]
    fn the_json_says_what_the_table_says() {
        let f = measure(&[2, 4]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json(&f)).unwrap();
        assert_eq!(v["schema"], "sivshm-lab/wiring-bench/1");
        assert_eq!(v["vectors_per_peer"], 1);
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let table = table(&f);
        assert_eq!(table.len(), 2 + 2);
        for ((row, r), line) in rows.iter().zip(&f.rows).zip(&table[2..]) {
            assert_eq!(row["workers"], r.workers);
            for (side, c, secs) in [
                ("sivshm", &r.sivshm, r.sivshm_secs),
                ("ivshmem", &r.ivshmem, r.ivshmem_secs),
            ] {
                assert_eq!(row[side]["fds_created"], c.fds_created);
                assert_eq!(row[side]["messages"], c.messages);
                assert_eq!(row[side]["fds_sent"], c.fds_sent);
                assert_eq!(row[side]["secs"].as_f64().unwrap(), secs);
                assert!(line.contains(&format!(
                    "{}, {}, {}",
                    c.fds_created, c.messages, c.fds_sent
                )));
            }
            assert_eq!(row["message_ratio"].as_f64().unwrap(), r.message_ratio());
        }
        // The figures of 4 workers, as the test above counts them.
        assert_eq!(rows[1]["ivshmem"]["messages"], 5 * 3 + 5 + 5 * 4);
        assert_eq!(rows[1]["sivshm"]["messages"], 4 * 2 * 5);
    }
}
