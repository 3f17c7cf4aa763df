//! Moves between segments (memfds, each with doorbells of its own, as a new device has):
//! no message lost or repeated, order kept in both directions, and a hostile mark refused.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::super::tests::{pair, Pair};
use super::*;
use crate::channel::Config;

const SEC: Option<Duration> = Some(Duration::from_secs(10));

fn config() -> Config {
    Config {
        attach_timeout: Duration::from_secs(10),
        peer_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

fn open(p: &Pair, role: Role) -> Channel {
    let links = match role {
        Role::Manager => p.manager_links.clone(),
        Role::Worker => p.worker_links.clone(),
    };
    Channel::new(p.map.clone(), 0, p.map.len(), role, links, config()).unwrap()
}

/// A manager's new segments, handed to the worker's opener as a hot-plugged device appears
/// in its VM: the worker takes the next one and attaches.
fn opener(new: mpsc::Receiver<Arc<Pair>>) -> Opener {
    Box::new(move |_to| {
        let p = new
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| Error::NotFormatted)?;
        Ok(open(&p, Role::Worker))
    })
}

fn never() -> Opener {
    Box::new(|_| Err(Error::NotFormatted))
}

fn seq(m: &Incoming<'_>) -> u64 {
    let mut b = [0; 8];
    m.read(0, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// The manager streams `n` numbered messages of `len` bytes (at least 8), moving to a
/// segment of `sizes[i]` bytes after message `at[i]`; the worker answers every `echo`-th
/// with its number. Both check that what they read is 0, 1, 2, ... without a gap or a
/// repeat, across every move.
fn stream_with_moves(n: u64, len: usize, echo: u64, moves: &[(u64, usize)]) {
    let first = Arc::new(pair(64 << 10));
    let (to_worker, plugged) = mpsc::channel();
    let mut m = Movable::new(open(&first, Role::Manager), never());
    let w = Movable::new(open(&first, Role::Worker), opener(plugged));
    let worker = std::thread::spawn(move || {
        let mut w = w;
        for i in 0..n {
            let mut msg = w.recv(SEC).unwrap();
            assert_eq!(seq(&msg), i, "worker: lost or repeated");
            assert_eq!(msg.len(), len);
            if i % echo == 0 {
                msg.reply(&i.to_le_bytes(), SEC).unwrap();
            }
            msg.release().unwrap();
        }
        w.flush().unwrap();
        w.moves()
    });
    let mut payload = vec![0u8; len];
    let answers = std::cell::Cell::new(0);
    let check = |msg: Incoming<'_>| {
        assert_eq!(seq(&msg), answers.get() * echo, "manager: lost or repeated");
        msg.release().unwrap();
        answers.set(answers.get() + 1);
    };
    let mut keep = Vec::new();
    let mut moves = moves.iter().peekable();
    for i in 0..n {
        while let Some((_, size)) = moves.next_if(|(at, _)| *at == i) {
            // One move at a time: the previous one is drained first (the worker's answers
            // on the old channel read, its mark seen).
            while m.draining() {
                match m.try_recv().unwrap() {
                    Some(msg) => check(msg),
                    None => std::thread::yield_now(),
                }
            }
            let p = Arc::new(pair(*size));
            let new = open(&p, Role::Manager);
            to_worker.send(p.clone()).unwrap();
            m.move_to(new).unwrap();
            keep.push(p);
        }
        payload[..8].copy_from_slice(&i.to_le_bytes());
        m.send(&payload, SEC).unwrap();
        while let Some(msg) = m.try_recv().unwrap() {
            check(msg);
        }
    }
    while answers.get() < n.div_ceil(echo) {
        check(m.recv(SEC).unwrap());
    }
    let worker_moves = worker.join().unwrap();
    assert_eq!(m.moves(), keep.len() as u64);
    assert_eq!(worker_moves, m.moves(), "the worker followed every move");
    assert!(m.try_recv().unwrap().is_none());
}

#[test]
fn a_stream_moved_to_larger_and_smaller_segments_loses_and_repeats_nothing() {
    stream_with_moves(
        20_000,
        200,
        7,
        &[
            (100, 256 << 10),
            (5_000, 16 << 10),
            (5_001, 16 << 10),
            (12_000, 1 << 20),
        ],
    );
}

#[test]
fn a_move_before_anything_was_sent_and_after_everything_works() {
    stream_with_moves(10, 64, 1, &[(0, 32 << 10)]);
    stream_with_moves(10, 64, 1, &[(9, 32 << 10)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn any_moves_under_any_load_keep_every_message_once_and_in_order(
        len in 8usize..1500,
        echo in 1u64..20,
        mut moves in proptest::collection::vec((0u64..3000, 0usize..4), 0..6),
    ) {
        let sizes = [16 << 10, 24 << 10, 128 << 10, 512 << 10];
        moves.sort();
        let moves: Vec<_> = moves.into_iter().map(|(at, s)| (at, sizes[s])).collect();
        stream_with_moves(3000, len, echo, &moves);
    }
}

#[test]
fn a_worker_asleep_on_the_old_channel_follows_the_move() {
    let first = Arc::new(pair(32 << 10));
    let (to_worker, plugged) = mpsc::channel();
    let mut m = Movable::new(open(&first, Role::Manager), never());
    let w = Movable::new(open(&first, Role::Worker), opener(plugged));
    let worker = std::thread::spawn(move || {
        let mut w = w;
        let got = seq(&w.recv(None).unwrap());
        (got, w.moves(), w.draining())
    });
    std::thread::sleep(Duration::from_millis(50));
    let p = Arc::new(pair(64 << 10));
    let new = open(&p, Role::Manager);
    to_worker.send(p.clone()).unwrap();
    m.move_to(new).unwrap();
    m.send(&7u64.to_le_bytes(), SEC).unwrap();
    assert_eq!(worker.join().unwrap(), (7, 1, false));
}

#[test]
fn moves_the_protocol_does_not_allow_are_refused() {
    let (a, b) = (Arc::new(pair(32 << 10)), Arc::new(pair(32 << 10)));
    let mut m = Movable::new(open(&a, Role::Manager), never());
    let mut w = Movable::new(open(&a, Role::Worker), never());
    let to_b = open(&b, Role::Manager);
    let e = w.move_to(open(&b, Role::Worker)).unwrap_err();
    assert_eq!(
        e,
        Error::Geometry("only the manager moves a channel; the worker follows")
    );
    let again = open(&a, Role::Manager);
    assert!(again.resumed());
    let e = m.move_to(again).unwrap_err();
    assert_eq!(e, Error::Geometry("a channel cannot move to itself"));
    m.move_to(to_b).unwrap();
    let e = m.move_to(open(&Arc::new(pair(32 << 10)), Role::Manager));
    assert_eq!(
        e.unwrap_err(),
        Error::Geometry("the previous move is still under way: receive until it is drained")
    );
    assert_eq!(m.moves(), 1);
}

#[test]
fn a_mark_naming_another_channel_is_the_peer_s_corruption() {
    // The manager marks the old channel with a nonce, the worker's opener finds a channel
    // of another: refused, not followed.
    let (a, b) = (Arc::new(pair(32 << 10)), Arc::new(pair(32 << 10)));
    let m = open(&a, Role::Manager);
    let mut w = Movable::new(
        open(&a, Role::Worker),
        Box::new({
            let b = b.clone();
            move |_| Ok(open(&b, Role::Worker))
        }),
    );
    let other = open(&b, Role::Manager);
    let hostile = other.format_nonce() ^ 1;
    m.w.u64(layout::side_block(Role::Manager) + side::MOVED_TO)
        .unwrap()
        .store(hostile, SeqCst);
    let e = w.try_recv().err().unwrap();
    assert_eq!(e, Error::Corrupt("the peer moved to another channel"));
    // Dead for good: the next call says the same, nothing is followed.
    assert_eq!(w.try_send(b"x").unwrap_err(), e);
    assert_eq!(w.moves(), 0);

    // The worker's mark, on the channel the manager moved away from, names another channel
    // than the manager moved to.
    let (a, b) = (Arc::new(pair(32 << 10)), Arc::new(pair(32 << 10)));
    let mut m = Movable::new(open(&a, Role::Manager), never());
    let w = open(&a, Role::Worker);
    m.move_to(open(&b, Role::Manager)).unwrap();
    w.w.u64(layout::side_block(Role::Worker) + side::MOVED_TO)
        .unwrap()
        .store(12345, SeqCst);
    let e = m.try_recv().err().unwrap();
    assert_eq!(e, Error::Corrupt("the peer moved to another channel"));
}

#[test]
fn a_peer_writing_after_its_mark_loses_only_its_own_messages() {
    // A hostile worker marks the old channel, then writes more into it: the manager reads
    // what is there when it drains and then the new channel, and neither hangs nor breaks.
    let (a, b) = (Arc::new(pair(32 << 10)), Arc::new(pair(32 << 10)));
    let mut m = Movable::new(open(&a, Role::Manager), never());
    let mut w_old = open(&a, Role::Worker);
    let new = open(&b, Role::Manager);
    let nonce = new.format_nonce();
    m.move_to(new).unwrap();
    let mut w_new = open(&b, Role::Worker);
    w_old.send(&1u64.to_le_bytes(), SEC).unwrap();
    w_old
        .w
        .u64(layout::side_block(Role::Worker) + side::MOVED_TO)
        .unwrap()
        .store(nonce, SeqCst);
    w_new.send(&3u64.to_le_bytes(), SEC).unwrap();
    let msg = m.recv(SEC).unwrap();
    assert_eq!(seq(&msg), 1);
    msg.release().unwrap();
    // Written after the mark: the manager may or may not have drained it; it never blocks.
    w_old.send(&2u64.to_le_bytes(), SEC).unwrap();
    let mut seen = Vec::new();
    while seen.last() != Some(&3) {
        let msg = m.recv(SEC).unwrap();
        seen.push(seq(&msg));
        msg.release().unwrap();
    }
    assert!(seen == [3] || seen == [2, 3], "{seen:?}");
    assert!(!m.draining());
    // The hostile writes into the old ring are not read any more.
    w_old.send(&4u64.to_le_bytes(), SEC).unwrap();
    assert!(m.try_recv().unwrap().is_none());
}

#[test]
fn a_removed_old_device_is_device_gone_not_a_mark() {
    use crate::model::{ModelDevice, Segment};
    let len = 32 << 10;
    let seg = Segment::new(len).unwrap();
    let (md, wd) = (seg.device(0).unwrap(), seg.device(1).unwrap());
    let open = |d: &Arc<ModelDevice>, role| {
        Channel::new(d.map().unwrap(), 0, len, role, d.links(), config()).unwrap()
    };
    let m = open(&md, Role::Manager);
    let mut w = Movable::new(open(&wd, Role::Worker), never());
    wd.remove().unwrap();
    // Every page reads 0xff now: a mark, were it not asked whether the device is gone.
    assert_eq!(w.try_recv().err(), Some(Error::DeviceGone));
    drop(m);
}
