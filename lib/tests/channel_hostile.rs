//! A hostile peer: while an honest manager and worker exchange messages, a third thread
//! writes random bytes at random places of their header, control lines and rings. The honest
//! sides must see each message intact (by its own checksum), detect a damaged one (the
//! checksum is the application's, as the channel does not checksum payloads), or get an
//! error from the channel; never a panic or a hang. A second channel in the same memory, not
//! attacked, must deliver everything intact: a corrupted channel kills only itself. The
//! channels ask a device that stays present whether it is gone: garbage is never a removal.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sivshm::channel::{Channel, Config, Error, Links, Role};
use sivshm::model::{ModelDevice, Segment};
use sivshm::Mapping;

const WINDOW: usize = 64 << 10;

/// In-process links whose channels ask `present` whether the device is gone: it never is,
/// so no garbage of the scribbler may be reported as a removal.
fn links(present: &Arc<ModelDevice>) -> (Links, Links) {
    let (mut m, mut w) = Links::in_process_pair().unwrap();
    m.presence = Some(present.clone());
    w.presence = Some(present.clone());
    (m, w)
}

fn checksum(seq: u64, data: &[u8]) -> u64 {
    data.iter().fold(seq ^ 0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A message: sequence number, checksum, then payload.
fn message(seq: u64) -> Vec<u8> {
    let len = (seq as usize * 97) % 2000;
    let payload: Vec<u8> = (0..len).map(|k| (seq as usize + k) as u8).collect();
    let mut v = seq.to_le_bytes().to_vec();
    v.extend_from_slice(&checksum(seq, &payload).to_le_bytes());
    v.extend_from_slice(&payload);
    v
}

/// Whether a received message is intact: long enough and its checksum right.
fn intact(bytes: &[u8]) -> bool {
    if bytes.len() < 16 {
        return false;
    }
    let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    checksum(seq, &bytes[16..]) == sum
}

#[derive(Debug, Default)]
struct Outcome {
    intact: u64,
    damaged: u64,
    errors: Vec<Error>,
    /// Times the attacked channel was opened again after a fatal error.
    reopened: u64,
}

impl Outcome {
    fn got(&mut self, bytes: &[u8]) {
        if intact(bytes) {
            self.intact += 1;
        } else {
            self.damaged += 1;
        }
    }
}

/// Receives until `stop`, every call bounded by a timeout. The channel is dropped by the
/// caller once both sides stopped (a side dropping it first would close it under the other).
fn honest_receiver(ch: &mut Channel, stop: Arc<AtomicBool>) -> Outcome {
    let mut out = Outcome::default();
    while !stop.load(Ordering::Relaxed) {
        let r = ch.recv(Some(Duration::from_millis(50))).and_then(|msg| {
            let bytes = msg.to_vec()?;
            out.got(&bytes);
            msg.release()
        });
        match r {
            Ok(()) | Err(Error::TimedOut) => {}
            Err(e) => out.errors.push(e),
        }
    }
    out
}

fn honest_sender(ch: &mut Channel, stop: Arc<AtomicBool>) -> Outcome {
    let mut out = Outcome::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        // Every other message through the streaming sender's call, flushed at once.
        let t = Some(Duration::from_millis(50));
        let sent = match seq % 2 {
            0 => ch.send(&message(seq), t),
            _ => ch.send_batched(&message(seq), t).and_then(|()| ch.flush()),
        };
        match sent {
            Ok(()) | Err(Error::TimedOut) => {}
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// Both sides of the attacked channel in one thread, with `try_` calls and short timeouts;
/// after a fatal error both are opened again (the manager formats anew if it must).
fn attacked_pair(
    open: impl Fn() -> Result<(Channel, Channel), Error>,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut seq = 0u64;
    'open: while !stop.load(Ordering::Relaxed) {
        let (mut m, mut w) = match open() {
            Ok(pair) => pair,
            Err(e) => {
                out.errors.push(e);
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            let step = (|| -> Result<(), Error> {
                m.try_send(&message(seq))?;
                if let Some(msg) = w.try_recv()? {
                    let bytes = msg.to_vec()?;
                    out.got(&bytes);
                    msg.release()?;
                    w.try_send(&bytes[..bytes.len().min(16)])?;
                }
                if let Some(msg) = m.try_recv()? {
                    msg.release()?;
                }
                if seq.is_multiple_of(64) {
                    w.recv(Some(Duration::from_millis(1)))
                        .map(drop)
                        .or_else(|e| match e {
                            Error::TimedOut => Ok(()),
                            e => Err(e),
                        })?;
                }
                Ok(())
            })();
            if let Err(e) = step {
                out.errors.push(e);
                if e.is_fatal() {
                    out.reopened += 1;
                    continue 'open;
                }
            }
        }
    }
    out
}

#[test]
fn a_scribbling_peer_gets_errors_never_a_panic_or_a_hang_and_spares_other_channels() {
    let len = 2 * WINDOW;
    let fd = rustix::fs::memfd_create("hostile", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len as u64).unwrap();
    let map = Arc::new(Mapping::new(fd.as_fd(), 0, len).unwrap());
    let config = Config {
        peer_timeout: Duration::from_millis(500),
        attach_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let present = Segment::new(4096).unwrap().device(0).unwrap();
    let open = |offset: usize| {
        let (ml, wl) = links(&present);
        let m = Channel::new(
            map.clone(),
            offset,
            WINDOW,
            Role::Manager,
            ml,
            config.clone(),
        )
        .unwrap();
        let w = Channel::new(
            map.clone(),
            offset,
            WINDOW,
            Role::Worker,
            wl,
            config.clone(),
        )
        .unwrap();
        (m, w)
    };
    let (spared_m, spared_w) = open(WINDOW);

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let finish = |name: &'static str| {
        let done = done_tx.clone();
        move |o: Outcome| {
            done.send(name).unwrap();
            o
        }
    };
    let attacked = {
        let (stop, fin) = (stop.clone(), finish("attacked pair"));
        let (map, config, present) = (map.clone(), config.clone(), present.clone());
        std::thread::spawn(move || {
            let open = || {
                let (ml, wl) = links(&present);
                let m = Channel::new(map.clone(), 0, WINDOW, Role::Manager, ml, config.clone())?;
                let w = Channel::new(map.clone(), 0, WINDOW, Role::Worker, wl, config.clone())?;
                Ok((m, w))
            };
            fin(attacked_pair(open, stop))
        })
    };
    let s_send = {
        let (stop, fin) = (stop.clone(), finish("spared sender"));
        std::thread::spawn(move || {
            let mut ch = spared_m;
            (fin(honest_sender(&mut ch, stop)), ch)
        })
    };
    let s_recv = {
        let (stop, fin) = (stop.clone(), finish("spared receiver"));
        std::thread::spawn(move || {
            let mut ch = spared_w;
            (fin(honest_receiver(&mut ch, stop)), ch)
        })
    };

    // Scribble over the first window: header and control lines more often than data.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let end = Instant::now() + Duration::from_secs(3);
    let mut writes = 0u64;
    while Instant::now() < end {
        let r = rnd();
        // Mostly the rings' records and the control lines; the header (whose damage ends
        // the channel at once) and the side blocks less often.
        let offset = match r % 32 {
            0 => (rnd() as usize) % 64,
            1..=3 => 64 + (rnd() as usize) % 192,
            4..=15 => 256 + (rnd() as usize) % 256,
            _ => 4096 + (rnd() as usize) % (WINDOW - 4096),
        };
        let bytes = rnd().to_le_bytes();
        let n = 1 + (r as usize >> 8) % 8;
        let n = n.min(WINDOW - offset);
        map.write(offset, &bytes[..n]).unwrap();
        writes += 1;
        if writes.is_multiple_of(64) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(done_tx);
    // Every thread ends within a bound: the honest sides never hang.
    let mut finished = Vec::new();
    for _ in 0..3 {
        match done_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(name) => finished.push(name),
            Err(_) => panic!("an honest side hung; only these finished: {finished:?}"),
        }
    }
    let attacked = attacked.join().unwrap();
    let (sent, _m) = s_send.join().unwrap();
    let (received, _w) = s_recv.join().unwrap();
    let spared = (sent, received);
    eprintln!("{writes} scribbles; attacked: {attacked:?}; spared: {spared:?}");

    assert!(
        spared.0.errors.is_empty() && spared.1.errors.is_empty(),
        "{spared:?}"
    );
    assert_eq!(spared.1.damaged, 0);
    assert!(spared.1.intact > 100, "{spared:?}");
    // The attack was noticed: as errors of the channel, or as damaged messages.
    assert!(attacked.reopened > 0, "{attacked:?}");
    assert!(
        !attacked.errors.contains(&Error::DeviceGone),
        "garbage on a present device taken for a removal: {attacked:?}"
    );
    assert!(
        attacked.intact > 0,
        "the attacked channel worked between attacks"
    );
}
