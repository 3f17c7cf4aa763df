//! The lab's process-wide state (the `sivshm_host` library has none).
//!
//! `SIGTERM` and `SIGINT` while guests run: the guests are killed and `sivshm-lab` exits
//! non-zero (128 + the signal, as a shell reports a death by that signal).
//!
//! The first signal is noted; every wait on a guest (`qemu::Running::wait`, the boot-time
//! poll of `compare`) sees it within one polling interval, kills its guest and fails, and the
//! error unwinds through the `Drop`s that kill the other guests and stop the central server.
//! Should that not finish within [`GRACE`], or on a second signal, the process exits at
//! once: every QEMU is spawned with `PR_SET_PDEATHSIG` (`qemu::tie_to_parent`), so the kernel
//! kills the guests then. `SIGKILL` takes that path directly.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

/// How long the orderly path may take before the process exits anyway.
pub const GRACE: Duration = Duration::from_secs(5);

/// The first signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Installs the handling; once per process, before the first guest starts.
pub fn install() -> Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).context("signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if RECEIVED
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    eprintln!("# {}: exiting at once", name(sig));
                    signal_hook::low_level::exit(exit_code(sig));
                }
                eprintln!("# {}: stopping the guests", name(sig));
                std::thread::spawn(move || {
                    std::thread::sleep(GRACE);
                    eprintln!("# the guests were not stopped within {GRACE:?}: exiting");
                    signal_hook::low_level::exit(exit_code(sig));
                });
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// An error once a signal was received: what every wait on a guest checks.
pub fn check() -> Result<()> {
    match received() {
        None => Ok(()),
        Some(sig) => anyhow::bail!("interrupted by {}", name(sig)),
    }
}

/// The exit code for a run ended by `sig`.
pub fn exit_code(sig: i32) -> i32 {
    128 + sig
}

fn name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "a signal",
    }
}
