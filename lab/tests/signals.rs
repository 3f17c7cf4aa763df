//! `sivshm-lab` killed (a CI timeout's `SIGKILL`) or told to stop (`SIGTERM`, `SIGINT`)
//! while its guests run: no guest may outlive it. The real binary runs a real scenario whose
//! QEMU is a stand-in that records its pid and sleeps, spawned the way every guest is.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// A `sivshm-lab test` run whose two guests are up.
struct Run {
    host: Child,
    guests: Vec<u32>,
    dir: tempfile::TempDir,
}

/// Whether `pid` is a live stand-in: gone, a zombie, or another program means dead.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (comm, rest) = stat.rsplit_once(')').unwrap_or(("", ""));
    comm.ends_with("(sleep") && !rest.trim_start().starts_with('Z')
}

fn write_exe(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Run {
    /// Starts `sivshm-lab test --filter two-vm-plain` on the stand-in and waits until both
    /// of its guests run.
    fn start() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| -> PathBuf { dir.path().join(name) };
        write_exe(
            &p("qemu"),
            "#!/bin/sh\necho $$ >> \"$SIVSHM_STANDIN_PIDS\"\nexec sleep 300\n",
        );
        fs::write(p("bzImage"), "").unwrap();
        fs::write(p("initrd"), "").unwrap();
        let host = Command::new(env!("CARGO_BIN_EXE_sivshm-lab"))
            .arg("test")
            .arg("--qemu")
            .arg(p("qemu"))
            .arg("--kernel")
            .arg(p("bzImage"))
            .arg("--initrd")
            .arg(p("initrd"))
            .arg("--logdir")
            .arg(p("logs"))
            .arg("--cache")
            .arg(p("cache"))
            .args([
                "--accel",
                "tcg",
                "--timeout",
                "120",
                "--filter",
                "two-vm-plain",
            ])
            .env("SIVSHM_STANDIN_PIDS", p("pids"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(p("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut run = Run {
            host,
            guests: Vec::new(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            run.guests = fs::read_to_string(run.dir.path().join("pids"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if run.guests.len() == 2 && run.guests.iter().all(|&g| alive(g)) {
                return run;
            }
            if let Some(status) = run.host.try_wait().unwrap() {
                panic!("sivshm-lab exited ({status}) early:\n{}", run.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "the guests did not start:\n{}",
                run.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.host.id() as i32).unwrap();
        kill_process(pid, sig).unwrap();
    }

    /// The host's exit status, within `secs`.
    fn exit_within(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.host.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.host.kill();
                panic!("sivshm-lab still runs {secs} s after the signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every guest is gone within `secs` of the host.
    fn assert_guests_gone_within(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.guests.iter().any(|&g| alive(g)) {
            assert!(
                Instant::now() < deadline,
                "guests {:?} outlived sivshm-lab:\n{}",
                self.guests,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    /// Whatever a failed test left running.
    fn drop(&mut self) {
        let _ = self.host.kill();
        let _ = self.host.wait();
        for &g in &self.guests {
            if alive(g) {
                let _ = kill_process(Pid::from_raw(g as i32).unwrap(), Signal::KILL);
            }
        }
    }
}

#[test]
fn sigkill_takes_the_guests_with_it() {
    let mut run = Run::start();
    run.signal(Signal::KILL);
    assert_eq!(run.exit_within(5).signal(), Some(9));
    // Nothing ran in sivshm-lab after SIGKILL: the kernel killed the guests.
    run.assert_guests_gone_within(5);
}

#[test]
fn sigterm_stops_the_guests_and_fails_the_run() {
    let mut run = Run::start();
    run.signal(Signal::TERM);
    let status = run.exit_within(10);
    assert_eq!(status.code(), Some(128 + 15), "{status}:\n{}", run.stderr());
    // Killed and reaped before sivshm-lab exited.
    run.assert_guests_gone_within(0);
    assert!(
        run.stderr().contains("interrupted by SIGTERM"),
        "{}",
        run.stderr()
    );
}

#[test]
fn sigint_stops_the_guests_and_fails_the_run() {
    let mut run = Run::start();
    run.signal(Signal::INT);
    let status = run.exit_within(10);
    assert_eq!(status.code(), Some(128 + 2), "{status}:\n{}", run.stderr());
    run.assert_guests_gone_within(0);
}
