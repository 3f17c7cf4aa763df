//! The channel's own work per message, without a second thread: one thread sends a batch of
//! messages on a channel over a memfd and then receives them on the other end, as many
//! times as asked. No waits, no cross-core traffic: what is left is the instructions of
//! `reserve`/`write`/`commit`/`flush` and `recv`/`read`/`release`, which
//! `valgrind --tool=callgrind` counts repeatably (divide by the messages printed).
//! MODE `send` (the default): `send` per message, two `read`s of 16 and 8 bytes; MODE
//! `streaming`: the streaming calls, `send_batched` per message and a `flush` per batch,
//! three `read_u64`s of the stamps.
//!
//! ```text
//! cargo run --release -p sivshm --example per_message -- [SIZE] [MESSAGES] [BATCH] [MODE]
//! ```

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sivshm::channel::{Channel, Config, Links, Role};
use sivshm::Mapping;

fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .map_or(d, |s| s.parse().expect("a number"))
    };
    let (size, total, batch) = (arg(1, 64), arg(2, 1_000_000), arg(3, 64));
    let streaming = match std::env::args().nth(4).as_deref() {
        None | Some("send") => false,
        Some("streaming") => true,
        Some(other) => panic!("MODE is send or streaming, not {other:?}"),
    };
    assert!(size >= 24, "SIZE is at least 24 (a probe message's stamps)");
    let len = 8 << 20;
    let fd = rustix::fs::memfd_create("per-message", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len as u64).unwrap();
    let map = Arc::new(Mapping::new(fd.as_fd(), 0, len).unwrap());
    let (lm, lw) = Links::in_process_pair().unwrap();
    let config = Config {
        heartbeat: None,
        ..Config::default()
    };
    let mut m = Channel::new(map.clone(), 0, len, Role::Manager, lm, config.clone()).unwrap();
    let mut w = Channel::new(map, 0, len, Role::Worker, lw, config).unwrap();
    let msg = vec![7u8; size];
    let (mut head, mut trailer) = ([0u8; 16], [0u8; 8]);
    let t0 = Instant::now();
    let mut done = 0;
    let timeout = Some(Duration::from_secs(5));
    while done < total {
        if streaming {
            for _ in 0..batch {
                m.send_batched(&msg, timeout).unwrap();
            }
            m.flush().unwrap();
            for _ in 0..batch {
                let r = w.recv(timeout).unwrap();
                let stamps = [r.read_u64(0), r.read_u64(8), r.read_u64(r.len() - 8)];
                std::hint::black_box(stamps.map(Result::unwrap));
                r.release().unwrap();
            }
        } else {
            for _ in 0..batch {
                m.send(&msg, timeout).unwrap();
            }
            for _ in 0..batch {
                let r = w.recv(timeout).unwrap();
                r.read(0, &mut head).unwrap();
                r.read(r.len() - 8, &mut trailer).unwrap();
                r.release().unwrap();
            }
        }
        done += batch;
    }
    let dt = t0.elapsed();
    println!(
        "{done} messages of {size} bytes, batches of {batch}: {:.1} ns per message",
        dt.as_nanos() as f64 / done as f64
    );
}
