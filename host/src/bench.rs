//! Benchmarks that boot guests and print figures measured in one run (never pass/fail).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::channel::channel;
use crate::console;
use crate::qemu::{run_all, Machine, Vm};
use crate::segments;

/// One `pingpong NAME: n=.. p50=X us p99=Y us ...` line of the guest.
struct Figures {
    name: String,
    p50: f64,
    p99: f64,
}

fn parse(line: &str) -> Option<Figures> {
    let rest = line.strip_prefix("pingpong ")?;
    let (name, rest) = rest.split_once(": ")?;
    let get = |k: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse::<f64>().ok()))
    };
    Some(Figures {
        name: name.to_string(),
        p50: get("p50=")?,
        p99: get("p99=")?,
    })
}

/// Doorbell round trips between two VMs on one channel, and the eventfd floor in one VM.
pub fn pingpong(m: &Machine, logdir: &Path, timeout: Duration, n: u32) -> Result<Vec<String>> {
    let seg = segments::create("pingpong", 1 << 20)?;
    let ch = channel(&seg, (0, 4), (1, 4), 1)?;
    let a = Vm::new("pingpong-a", &format!("sivshm_doorbell pingpong-a {n}")).device(ch.a);
    let b = Vm::new("pingpong-b", &format!("sivshm_doorbell pingpong-b {n}")).device(ch.b);
    let finished = run_all(m, &[a, b], logdir, timeout)?;
    let mut out = vec![format!(
        "# {n} round trips, {} guests, 1 vCPU each, 2 host cores",
        m.accel.name()
    )];
    let mut figures = Vec::new();
    for f in &finished {
        let r = console::parse(&f.log);
        let this_boot = r.boot_id.as_deref() == Some(f.boot_id.as_str());
        if f.timed_out || !this_boot || r.rc != Some(0) || !r.splats.is_empty() {
            bail!(
                "{} failed (rc {:?}); log {}",
                f.name,
                r.rc,
                f.log_path.display()
            );
        }
        for line in &r.output {
            if let Some(fig) = parse(line) {
                out.push(line.clone());
                figures.push(fig);
            }
        }
    }
    let find = |name: &str| figures.iter().find(|f| f.name == name);
    match (find("doorbell-between-vms"), find("eventfd-within-one-vm")) {
        (Some(db), Some(floor)) => out.push(format!(
            "doorbell / in-VM eventfd: p50 {:.1}x, p99 {:.1}x",
            db.p50 / floor.p50,
            db.p99 / floor.p99
        )),
        _ => bail!("the guests did not print both figures"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_the_guest_line() {
        let f = parse(
            "pingpong doorbell-between-vms: n=10 p50=812.5 us p99=1503.0 us min=1 us max=2 us",
        )
        .unwrap();
        assert_eq!(f.name, "doorbell-between-vms");
        assert_eq!((f.p50, f.p99), (812.5, 1503.0));
        assert!(parse("storm: 3 rings").is_none());
    }
}
