//! Property tests: whatever sequence of message sizes and whatever ring geometry, a producer
//! and a consumer on two threads over a memfd deliver every message intact and in order,
//! whether the producer publishes every commit or commits in batches.
//!
//! Failures are not persisted (`failure_persistence: None`): proptest prints the failing
//! case, and a case worth keeping becomes a plain test.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sivshm::channel::{Channel, Config, Links, Role};
use sivshm::Mapping;

fn links() -> (Links, Links) {
    Links::in_process_pair().unwrap()
}

fn content(seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (seq.wrapping_mul(31) ^ k) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_message_arrives_intact_and_in_order(
        pages in 3usize..8,
        reply in prop::sample::select(vec![256usize, 1024, 4096]),
        sizes in prop::collection::vec(0usize..3000, 1..300),
        batch in 1usize..8,
        commit in 0u8..3,
    ) {
        let len = pages * 4096;
        let fd = rustix::fs::memfd_create("prop", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len as u64).unwrap();
        let map = Arc::new(Mapping::new(fd.as_fd(), 0, len).unwrap());
        let (ml, wl) = links();
        let config = Config {
            reply_ring_bytes: Some(reply),
            peer_timeout: Duration::from_secs(20),
            ..Config::default()
        };
        let mut m = Channel::new(map.clone(), 0, len, Role::Manager, ml, config.clone()).unwrap();
        let mut w = Channel::new(map, 0, len, Role::Worker, wl, config).unwrap();
        let max = m.max_message();
        let sizes: Vec<usize> = sizes.into_iter().map(|s| s % (max + 1)).collect();
        let expect = sizes.clone();
        let t = Some(Duration::from_secs(20));
        let consumer = std::thread::spawn(move || {
            for (seq, &len) in expect.iter().enumerate() {
                let msg = w.recv(t).unwrap();
                assert_eq!(msg.to_vec().unwrap(), content(seq, len), "message {}", seq);
                msg.release().unwrap();
                // Replies through the small ring, which fills up too.
                w.send(&(seq as u32).to_le_bytes(), t).unwrap();
            }
        });
        let mut acked = 0usize;
        for (seq, &len) in sizes.iter().enumerate() {
            // Batched commits are published at the flush (or a wait) instead of at once;
            // `send_batched` reserves, writes and commits in one call.
            if commit == 2 {
                m.send_batched(&content(seq, len), t).unwrap();
            } else {
                let mut r = m.reserve(len, t).unwrap();
                r.write(0, &content(seq, len)).unwrap();
                if commit == 1 {
                    r.commit_batched().unwrap();
                } else {
                    r.commit().unwrap();
                }
            }
            if seq % batch == 0 {
                m.flush().unwrap();
            }
            while let Some(msg) = m.try_recv().unwrap() {
                let mut b = [0u8; 4];
                msg.read(0, &mut b).unwrap();
                prop_assert_eq!(u32::from_le_bytes(b) as usize, acked);
                msg.release().unwrap();
                acked += 1;
            }
        }
        m.flush().unwrap();
        while acked < sizes.len() {
            let msg = m.recv(t).unwrap();
            let mut b = [0u8; 4];
            msg.read(0, &mut b).unwrap();
            prop_assert_eq!(u32::from_le_bytes(b) as usize, acked);
            msg.release().unwrap();
            acked += 1;
        }
        consumer.join().unwrap();
    }
}
