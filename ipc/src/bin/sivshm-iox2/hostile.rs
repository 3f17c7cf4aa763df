//! A hostile worker: in place of a gateway, it writes garbage over its sivshm segment and
//! rings the doorbell, again and again. The manager's gateway must drop this worker's link
//! and nothing else.
//!
//! It goes on until `--after-peer` seconds after it first saw the manager write into the
//! segment (a page it had scribbled on changed: the manager formatted or touched the
//! channel), or `--seconds` in all, whichever comes first: long enough for the manager's
//! gateway to meet the garbage, however late the manager boots, and no longer.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use sivshm::Device;

/// The first pages, watched for the manager's writes.
const WATCHED: usize = 4;

#[derive(Parser)]
pub struct Args {
    #[arg(long, default_value = "/dev/sivshm0")]
    device: String,
    /// Seconds at most.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds it goes on once it saw the manager write into the segment.
    #[arg(long, default_value_t = 5)]
    after_peer: u64,
}

pub fn run(a: &Args) -> Result<()> {
    let dev = Device::open(&a.device).with_context(|| format!("opening {}", a.device))?;
    let map = dev.map().context("mapping the segment")?;
    let info = dev.info().clone();
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut page = vec![0u8; 4096];
    let mut deadline = Instant::now() + Duration::from_secs(a.seconds);
    let (mut writes, mut rings) = (0u64, 0u64);
    // What we last wrote into the first pages (the channel's header and control blocks),
    // to see the manager write there.
    let mut wrote: Vec<Option<Vec<u8>>> = vec![None; WATCHED];
    let mut seen_peer = false;
    let mut check = vec![0u8; 4096];
    while Instant::now() < deadline {
        if !seen_peer {
            let touched = wrote.iter().enumerate().any(|(i, w)| {
                w.as_ref()
                    .is_some_and(|w| map.read(i * 4096, &mut check).is_ok() && check != *w)
            });
            if touched {
                seen_peer = true;
                deadline = deadline.min(Instant::now() + Duration::from_secs(a.after_peer));
            }
        }
        for b in page.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Mostly the first pages (the channel's header and control blocks), sometimes anywhere.
        let pages = (map.len() / 4096).max(1);
        let at = if writes % 4 == 0 {
            (x as usize) % pages
        } else {
            (x as usize) % pages.min(WATCHED)
        };
        if map.write(at * 4096, &page).is_ok() {
            writes += 1;
            if let Some(w) = wrote.get_mut(at) {
                *w = Some(page.clone());
            }
        }
        if info.doorbell && info.nr_vectors > 0 {
            for peer in 0..4u32 {
                if dev.ring(peer, 0).is_ok() {
                    rings += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "SIVSHM-RESULT iox2-hostile writes={writes} rings={rings} saw_manager={}",
        if seen_peer { "yes" } else { "no" }
    );
    Ok(())
}
