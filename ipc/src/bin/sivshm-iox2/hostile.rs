//! A hostile worker: in place of a gateway, it writes garbage over its sivshm segment and
//! rings the doorbell, again and again. The manager's gateway must drop this worker's link
//! and nothing else.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use sivshm::Device;

#[derive(Parser)]
pub struct Args {
    #[arg(long, default_value = "/dev/sivshm0")]
    device: String,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub fn run(a: &Args) -> Result<()> {
    let dev = Device::open(&a.device).with_context(|| format!("opening {}", a.device))?;
    let map = dev.map().context("mapping the segment")?;
    let info = dev.info().clone();
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut page = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let (mut writes, mut rings) = (0u64, 0u64);
    while Instant::now() < deadline {
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
            (x as usize) % pages.min(4)
        };
        if map.write(at * 4096, &page).is_ok() {
            writes += 1;
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
    println!("SIVSHM-RESULT iox2-hostile writes={writes} rings={rings}");
    Ok(())
}
