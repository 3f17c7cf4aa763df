//! A rogue worker's application: it offers another worker's answer service (to pass answers
//! off as that worker's) and looks for any of that worker's services in its own VM. Through
//! the gateways neither may work: the manager's gateway refuses the offer, and never
//! announces the other worker's services to this one.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::Parser;
use iceoryx2::prelude::*;

use crate::job::{node, publisher, send};

#[derive(Parser)]
pub struct Args {
    /// The worker whose services it goes after.
    #[arg(long)]
    victim: String,
    /// Seconds it keeps trying.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

pub fn run(a: &Args) -> Result<()> {
    let n = node()?;
    let stolen = format!("jobs/{}/out", a.victim);
    let fake = publisher(&n, &stolen, 16)?;
    let prefix = format!("jobs/{}/", a.victim);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let (mut sent, mut seen) = (0u64, std::collections::BTreeSet::new());
    while Instant::now() < deadline {
        // A bogus answer to every round the victim may be on.
        let mut bogus = (sent % 64).to_le_bytes().to_vec();
        bogus.extend(0xdead_beef_u64.to_le_bytes());
        send(&fake, &bogus)?;
        sent += 1;
        ipc::Service::list(n.config(), |s| {
            let name = s.static_details.name().as_str().to_string();
            if name.starts_with(&prefix) && name != stolen {
                seen.insert(name);
            }
            CallbackProgression::Continue
        })
        .map_err(|e| anyhow!("listing services: {e:?}"))?;
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "SIVSHM-RESULT iox2-rogue victim={} sent={sent} seen_foreign={}",
        a.victim,
        seen.len()
    );
    for s in &seen {
        eprintln!("rogue: saw {s}");
    }
    Ok(())
}
