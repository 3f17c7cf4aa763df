//! Starting the test guests' QEMUs and supervising them: each tied to this process's life,
//! waited for with a deadline, killed when the lab is told to stop (`interrupt`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use command_fds::CommandFdExt;

use super::{Machine, MemoryExpectation, Vm};

/// A guest that is running.
pub struct Running {
    pub name: String,
    child: Child,
    log: PathBuf,
    started: Instant,
    boot_id: String,
    wants_kmemleak: bool,
    memory: MemoryExpectation,
}

/// How a guest ended.
pub struct Finished {
    pub name: String,
    pub log: String,
    pub log_path: PathBuf,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// The id this boot was given; a log that does not show it is not this boot's.
    pub boot_id: String,
    pub wants_kmemleak: bool,
    pub memory: MemoryExpectation,
}

/// A value that differs between runs: the time in nanoseconds mixed with the process id.
pub fn unique_value() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// A value unique to this boot, so that a stale log can never pass for a new one.
fn boot_id(name: &str) -> String {
    format!("{name}-{:x}", unique_value())
}

impl Machine {
    pub fn spawn(&self, vm: &Vm, logdir: &Path) -> Result<Running> {
        let log = logdir.join(format!("{}.log", vm.name));
        // A previous run's log must not be read if this QEMU fails before writing one.
        match fs::remove_file(&log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", log.display()))
            }
            _ => {}
        }
        let id = boot_id(&vm.name);
        let (args, fds) = vm.args(self, &log, &id)?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(fs::File::create(
            logdir.join(format!("{}.qemu-stderr", vm.name)),
        )?);
        cmd.fd_mappings(fds)
            .context("passing chardev fds to QEMU")?;
        tie_to_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.qemu.display()))?;
        Ok(Running {
            name: vm.name.clone(),
            child,
            log,
            started: Instant::now(),
            boot_id: id,
            wants_kmemleak: vm.wants_kmemleak(),
            memory: vm.memory_expectation(),
        })
    }
}

/// Makes the child die with this process: a guest must not outlive a `sivshm-lab` that was
/// killed (a CI timeout, `SIGTERM`, `SIGKILL`), which `Drop` alone cannot cover. The death
/// signal follows the thread that forks, so guests are spawned from the main thread.
pub fn tie_to_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: The closure runs in the child between fork and exec and only makes two system
    // calls (prctl, getppid), which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl: then nobody would kill us.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other(
                    "sivshm-lab exited while starting QEMU",
                ));
            }
            Ok(())
        });
    }
}

impl Drop for Running {
    /// A guest abandoned on an error path must not outlive the run.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Whether QEMU has exited (the guest powered off or crashed).
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// The guest's serial log, written while it runs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits for the guest to power off, killing it at `deadline`, or at once when
    /// `sivshm-lab` is told to stop (`interrupt`): that is an error.
    pub fn wait(mut self, deadline: Instant) -> Result<Finished> {
        let mut timed_out = false;
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if let Err(e) = crate::interrupt::check() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(e.context(format!("guest {} killed", self.name)));
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = self.child.kill();
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = self.started.elapsed();
        let log = fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let stderr = self.log.with_extension("qemu-stderr");
        let err = fs::read_to_string(&stderr).unwrap_or_default();
        let log = if err.trim().is_empty() {
            log
        } else {
            format!("{log}\nqemu stderr:\n{err}")
        };
        Ok(Finished {
            name: std::mem::take(&mut self.name),
            log,
            log_path: std::mem::take(&mut self.log),
            boot_id: std::mem::take(&mut self.boot_id),
            wants_kmemleak: self.wants_kmemleak,
            memory: std::mem::take(&mut self.memory),
            timed_out,
            elapsed,
        })
    }
}

/// Runs guests side by side and waits for all of them.
pub fn run_all(m: &Machine, vms: &[Vm], logdir: &Path, timeout: Duration) -> Result<Vec<Finished>> {
    run_in_waves(m, vms, logdir, timeout, 0)
}

/// Like [`run_all`], but starts the guests `wave` at a time (0: all at once): the next wave
/// once every guest of the one before has reached its command (or stopped). They all end up
/// running side by side. Under TCG on a small host, dozens of guests booting at once starve
/// each other's vCPUs for so long that their clocks jump and their timeouts fire; booting in
/// waves keeps the number of kernels booting at once small.
pub fn run_in_waves(
    m: &Machine,
    vms: &[Vm],
    logdir: &Path,
    timeout: Duration,
    wave: usize,
) -> Result<Vec<Finished>> {
    let deadline = Instant::now() + timeout;
    let wave = if wave == 0 { vms.len().max(1) } else { wave };
    let mut running: Vec<Running> = Vec::new();
    let mut progress = crate::progress::Progress::new("guests finished", vms.len() as u64);
    for (k, group) in vms.chunks(wave).enumerate() {
        let first = running.len();
        for vm in group {
            running.push(m.spawn(vm, logdir)?);
        }
        if running.len() == vms.len() {
            break;
        }
        let booting = format!("wave {} of {}: booting", k + 1, vms.len().div_ceil(wave));
        for r in &mut running[first..] {
            while !r.exited()? && !log_has(r.log_path(), crate::console::COMMAND_STARTED.as_bytes())
            {
                crate::interrupt::check()?;
                if Instant::now() >= deadline {
                    bail!(
                        "guest {} did not reach its command before the timeout",
                        r.name
                    );
                }
                progress.set(0, &booting);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // Each guest is collected as it stops (its elapsed time is its own), until all have or
    // the time is up (`wait` then stops the rest).
    let mut running: Vec<Option<Running>> = running.into_iter().map(Some).collect();
    let mut finished: Vec<Option<Finished>> = running.iter().map(|_| None).collect();
    loop {
        for (slot, f) in running.iter_mut().zip(&mut finished) {
            if let Some(r) = slot {
                if r.exited()? {
                    *f = slot.take().map(|r| r.wait(deadline)).transpose()?;
                }
            }
        }
        let left: Vec<&str> = running.iter().flatten().map(|r| r.name.as_str()).collect();
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        let done = (vms.len() - left.len()) as u64;
        progress.set(done, &format!("running: {}", left.join(", ")));
        crate::interrupt::check()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    running
        .into_iter()
        .zip(finished)
        .map(|(r, f)| match f {
            Some(f) => Ok(f),
            None => r
                .context("a guest neither collected nor running")?
                .wait(deadline),
        })
        .collect()
}

/// Whether the file at `path` (a guest's serial log) contains `what`.
fn log_has(path: &Path, what: &[u8]) -> bool {
    fs::read(path).is_ok_and(|b| b.windows(what.len()).any(|w| w == what))
}
