//! Batched commits ([`Reservation::commit_batched`], [`Channel::send_batched`]): what the
//! peer sees when, and that no wake-up is lost when the sender publishes once per batch;
//! stamps read in place ([`Message::read_u64`]).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::tests;
use super::*;

const SEC: Option<Duration> = Some(Duration::from_secs(5));

/// The two sides of a channel over `len` bytes, and a window on its memory.
fn open(len: usize, config: Config) -> (Channel, Channel, Window) {
    let p = tests::pair(len);
    let (m, w) = tests::open(&p, len, config);
    (m, w, Window::new(p.map, 0, len).unwrap())
}

fn batched(ch: &mut Channel, byte: u8, len: usize) {
    let mut r = ch.reserve(len, SEC).unwrap();
    r.write(0, &vec![byte; len]).unwrap();
    r.commit_batched().unwrap();
}

#[test]
fn a_batched_commit_is_seen_at_the_flush_the_next_commit_or_the_close() {
    let len = 1 << 16;
    let (mut m, mut w, win) = open(len, Config::default());
    let head = || win.u64(layout::head(0)).unwrap().load(SeqCst);
    batched(&mut m, 1, 40);
    batched(&mut m, 2, 40);
    assert_eq!(head(), 0, "not published yet");
    assert!(w.try_recv().unwrap().is_none(), "the peer sees nothing yet");
    m.flush().unwrap();
    assert_eq!(head(), 2 * 48);
    for b in [1, 2] {
        let msg = w.try_recv().unwrap().expect("seen after the flush");
        assert_eq!(msg.to_vec().unwrap(), [b; 40]);
        msg.release().unwrap();
    }
    // A plain commit publishes the batch before it with it.
    batched(&mut m, 3, 8);
    let mut r = m.reserve(8, SEC).unwrap();
    r.write(0, &[4; 8]).unwrap();
    r.commit().unwrap();
    assert_eq!(head(), 2 * 48 + 2 * 16);
    // A wait flushes first: a receiver never waits for what its sender holds back.
    batched(&mut m, 5, 8);
    assert!(m.try_recv().unwrap().is_none());
    assert!(matches!(m.recv(Some(Duration::ZERO)), Err(Error::TimedOut)));
    assert_eq!(head(), 2 * 48 + 3 * 16, "published by the wait");
    // Closing delivers what was committed.
    batched(&mut m, 6, 8);
    drop(m);
    assert_eq!(head(), 2 * 48 + 4 * 16, "published at the close");
    for b in [3, 4, 5, 6] {
        let msg = w.try_recv().unwrap().unwrap();
        assert_eq!(msg.to_vec().unwrap(), [b; 8]);
        msg.release().unwrap();
    }
}

#[test]
fn a_batch_of_a_sixteenth_of_the_ring_is_published_without_a_flush() {
    let len = 1 << 16;
    let (mut m, mut w, win) = open(len, Config::default());
    let head = || win.u64(layout::head(0)).unwrap().load(SeqCst);
    let ring = ((len - layout::HEADER_SIZE) - ((len - layout::HEADER_SIZE) / 8).max(4096)) & !63;
    let per = (ring / 16).div_ceil(48);
    for _ in 0..per - 1 {
        batched(&mut m, 7, 40);
    }
    assert_eq!(head(), 0, "less than a batch: held back");
    batched(&mut m, 7, 40);
    assert_eq!(head(), (per * 48) as u64, "a full batch is published");
    for _ in 0..per {
        w.try_recv().unwrap().unwrap().release().unwrap();
    }
    assert!(w.try_recv().unwrap().is_none());
}

/// The ping-pong of the lost-wake-up test, the sender committing in batches and flushing
/// every third message only: every sleep of the receiver must still end.
#[test]
fn batched_commits_never_lose_a_wake_up() {
    let (m, w, _) = open(4096 + 1024, tests::sleepy());
    tests::exchange_never_losing_a_wake_up(m, w, |r| r.commit_batched().unwrap(), |i| i % 3 == 2);
}

#[test]
fn send_batched_commits_as_a_batch_and_waits_for_room() {
    let len = 1 << 14;
    let (mut m, mut w, win) = open(len, Config::default());
    let head = || win.u64(layout::head(0)).unwrap().load(SeqCst);
    m.send_batched(&[1; 40], SEC).unwrap();
    assert_eq!(head(), 0, "held back until the flush");
    m.flush().unwrap();
    assert_eq!(head(), 48);
    assert_eq!(m.stats().sent, 1);
    // A reservation set aside is stale once send_batched used the room.
    let r = m.reserve(8, SEC).unwrap().set_aside();
    m.send_batched(&[2; 8], SEC).unwrap();
    assert!(m.resume_reservation(r).is_none());
    // Too large is the caller's error, and changes nothing.
    let max = m.max_message();
    assert!(matches!(
        m.send_batched(&vec![0; max + 1], SEC),
        Err(Error::TooLarge { .. })
    ));
    // A full ring: the call waits for room (flushing first), then sends.
    let sender = std::thread::spawn(move || {
        for i in 0..200u8 {
            m.send_batched(&[i; 500], SEC).unwrap();
        }
        m.flush().unwrap();
        m
    });
    let first = w.recv(SEC).unwrap();
    assert_eq!(first.to_vec().unwrap(), [1; 40]);
    first.release().unwrap();
    let second = w.recv(SEC).unwrap();
    assert_eq!(second.to_vec().unwrap(), [2; 8]);
    second.release().unwrap();
    for i in 0..200u8 {
        let msg = w.recv(SEC).unwrap();
        assert_eq!(msg.to_vec().unwrap(), [i; 500], "message {i}");
        msg.release().unwrap();
    }
    sender.join().unwrap();
}

#[test]
fn words_are_read_in_place_aligned_or_not_and_within_the_message() {
    let (mut m, mut w, _) = open(1 << 14, Config::default());
    let mut bytes = [0u8; 27];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    m.send(&bytes, SEC).unwrap();
    let msg = w.recv(SEC).unwrap();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    assert_eq!(msg.read_u64(0).unwrap(), word(0));
    assert_eq!(msg.read_u64(8).unwrap(), word(8));
    assert_eq!(msg.read_u64(3).unwrap(), word(3), "unaligned");
    assert_eq!(msg.read_u64(19).unwrap(), word(19), "the last word");
    assert!(matches!(
        msg.read_u64(20),
        Err(Error::TooLarge { len: 28, max: 27 })
    ));
    assert!(matches!(
        msg.read_u64(usize::MAX),
        Err(Error::TooLarge { .. })
    ));
}
