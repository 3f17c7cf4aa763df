//! Choosing TCG or KVM. KVM is used only where a probe boot proves that it works here: on
//! nested hosts a bzImage can hang under KVM, so the probe has a short deadline.
//!
//! The verdict is cached in the cache directory under a key of everything it depends on:
//! QEMU's version and binary, the guest kernel image's contents and the host kernel. A
//! changed key means a new probe; within one key a verdict still expires:
//!
//! * a boot that reached init: "kvm", trusted for [`KVM_TTL`];
//! * a boot that failed before the deadline (QEMU refused KVM, the guest panicked): "tcg",
//!   trusted for [`TCG_TTL`], so that a kvm module loaded later is found within a day;
//! * a boot still running at the deadline proves nothing by itself, as a loaded machine is
//!   slow too: this run uses TCG and the next one probes again. Only after
//!   [`TIMEOUTS_FOR_A_HANG`] timeouts in a row (with no successful boot between) is KVM
//!   taken for hanging here, which is cached as "tcg" like a failure.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use crate::console;
use crate::qemu::{Accel, Machine, Vm};

/// How long a probe boot may take to reach init.
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a "kvm" verdict is trusted.
const KVM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a "tcg" verdict is trusted.
const TCG_TTL: Duration = Duration::from_secs(24 * 3600);
/// Probe timeouts in a row, each in a run of its own, that make a hang rather than load.
const TIMEOUTS_FOR_A_HANG: u32 = 3;

/// What one probe boot showed.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Reached init, which exited 0.
    Booted { secs: f64 },
    /// Ended before the deadline without that.
    Failed { why: String },
    /// Still running at the deadline: a hang, or a loaded machine.
    TimedOut,
}

/// A cached verdict.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    /// `None`: no verdict yet (timeouts that may have been load).
    accel: Option<Accel>,
    /// When it was made, in seconds since the epoch.
    at: u64,
    /// Probe timeouts in a row so far.
    timeouts: u32,
    why: String,
}

impl Record {
    fn format(&self) -> String {
        format!(
            "accel {}\nat {}\ntimeouts {}\nwhy {}\n",
            self.accel.map_or("none", Accel::name),
            self.at,
            self.timeouts,
            self.why
        )
    }

    /// `None` for anything but a complete record (a torn file, an older format).
    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
        let accel = match field("accel")? {
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            "none" => None,
            _ => return None,
        };
        let at = field("at")?.parse().ok()?;
        let timeouts = field("timeouts")?.parse().ok()?;
        let why = field("why")?.to_string();
        Some(Record {
            accel,
            at,
            timeouts,
            why,
        })
    }
}

/// The accelerator a cached record still stands for at `now` (seconds since the epoch).
fn cached_choice(r: &Record, now: u64) -> Option<Accel> {
    // A record from the future (the clock was set back) is not trusted either.
    let age = Duration::from_secs(now.checked_sub(r.at)?);
    match r.accel? {
        Accel::Kvm if age < KVM_TTL => Some(Accel::Kvm),
        Accel::Tcg if age < TCG_TTL => Some(Accel::Tcg),
        _ => None,
    }
}

/// What this run uses after a probe, and the record that replaces `previous`.
fn after_probe(outcome: &Outcome, previous: Option<&Record>, now: u64) -> (Accel, Record) {
    let record = |accel, timeouts, why| Record {
        accel,
        at: now,
        timeouts,
        why,
    };
    match outcome {
        Outcome::Booted { secs } => (
            Accel::Kvm,
            record(
                Some(Accel::Kvm),
                0,
                format!("a KVM boot reached init in {secs:.1} s"),
            ),
        ),
        Outcome::Failed { why } => (
            Accel::Tcg,
            record(Some(Accel::Tcg), 0, format!("a KVM boot failed: {why}")),
        ),
        Outcome::TimedOut => {
            let timeouts = previous.map_or(0, |p| p.timeouts).saturating_add(1);
            let limit = PROBE_TIMEOUT.as_secs();
            let r = if timeouts >= TIMEOUTS_FOR_A_HANG {
                record(
                    Some(Accel::Tcg),
                    timeouts,
                    format!(
                        "KVM boots did not reach init within {limit} s {timeouts} times in a \
                         row: KVM hangs here"
                    ),
                )
            } else {
                record(
                    None,
                    timeouts,
                    format!(
                        "a KVM boot did not reach init within {limit} s ({timeouts} time(s) in \
                         a row; {TIMEOUTS_FOR_A_HANG} make a hang, fewer may be load): TCG for \
                         this run, probing again next time"
                    ),
                )
            };
            (Accel::Tcg, r)
        }
    }
}

/// `requested` is "tcg", "kvm" or "auto". Returns the choice and why.
pub fn choose(requested: &str, base: &Machine, cache_dir: &Path) -> Result<(Accel, String)> {
    let kvm_usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    choose_with(
        requested,
        cache_dir,
        kvm_usable,
        || probe_key(base),
        |dir| probe(base, dir),
        now(),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`choose`] with what it asks the system given: whether `/dev/kvm` opens, the cache key,
/// the probe (given the directory for its scratch files) and the time.
fn choose_with(
    requested: &str,
    cache_dir: &Path,
    kvm_usable: bool,
    key: impl FnOnce() -> Result<String>,
    probe: impl FnOnce(&Path) -> Result<Outcome>,
    now: u64,
) -> Result<(Accel, String)> {
    match requested {
        "tcg" => return Ok((Accel::Tcg, "requested".into())),
        "kvm" => return Ok((Accel::Kvm, "requested".into())),
        "auto" => {}
        other => anyhow::bail!("--accel must be auto, tcg or kvm, not {other:?}"),
    }
    if !kvm_usable {
        return Ok((Accel::Tcg, "no usable /dev/kvm".into()));
    }
    let cache = cache_dir.join(format!("accel-probe-{}", key()?));
    let previous = fs::read_to_string(&cache)
        .ok()
        .and_then(|t| Record::parse(&t));
    if let Some(r) = &previous {
        if let Some(accel) = cached_choice(r, now) {
            return Ok((accel, format!("cached probe: {}", r.why)));
        }
    }
    // The probe's scratch directory lives in the cache directory: make that first.
    fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating the cache directory {}", cache_dir.display()))?;
    let outcome = probe(cache_dir)?;
    let (accel, record) = after_probe(&outcome, previous.as_ref(), now);
    write_atomically(&cache, &record.format())?;
    Ok((accel, format!("probe: {}", record.why)))
}

/// Writes `text` to `path` so that a reader sees the old file or the new one, never a part.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What a verdict depends on, hashed: the record format, QEMU's version and binary, the
/// guest kernel's contents (a rebuilt image may keep its size and time), the host kernel.
fn probe_key(m: &Machine) -> Result<String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    "accel-probe v2".hash(&mut h);
    let version = std::process::Command::new(&m.qemu)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", m.qemu.display()))?;
    version.stdout.hash(&mut h);
    let qemu =
        fs::metadata(which(&m.qemu)).with_context(|| format!("reading {}", m.qemu.display()))?;
    (qemu.len(), qemu.modified()?).hash(&mut h);
    hash_contents(&m.kernel, &mut h)?;
    for f in ["/proc/sys/kernel/osrelease", "/proc/sys/kernel/version"] {
        fs::read_to_string(f).unwrap_or_default().hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

fn hash_contents(path: &Path, h: &mut impl Hasher) -> Result<()> {
    let mut f = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.write(&buf[..n]);
    }
}

/// `p` itself if it names a file, else where `PATH` finds it.
fn which(p: &Path) -> PathBuf {
    if p.components().count() > 1 {
        return p.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(p))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| p.to_path_buf())
}

/// Boots the guest kernel under KVM with `true` as its command.
fn probe(base: &Machine, dir: &Path) -> Result<Outcome> {
    let logdir = tempfile::tempdir_in(dir)
        .with_context(|| format!("a scratch directory in {}", dir.display()))?;
    let m = Machine {
        accel: Accel::Kvm,
        ..base.clone()
    };
    let start = Instant::now();
    let vm = Vm::new("kvm-probe", "true");
    let done = m.spawn(&vm, logdir.path())?.wait(start + PROBE_TIMEOUT)?;
    if done.timed_out {
        return Ok(Outcome::TimedOut);
    }
    let r = console::parse(&done.log);
    if r.rc == Some(0) && r.boot_id.as_deref() == Some(done.boot_id.as_str()) {
        return Ok(Outcome::Booted {
            secs: done.elapsed.as_secs_f64(),
        });
    }
    let last = done
        .log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output");
    Ok(Outcome::Failed {
        why: format!(
            "exited after {:.1} s, init's rc {:?}; last line: {}",
            done.elapsed.as_secs_f64(),
            r.rc,
            last.chars().take(160).collect::<String>()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    const NOW: u64 = 1_800_000_000;

    fn rec(accel: Option<Accel>, age: u64, timeouts: u32) -> Record {
        Record {
            accel,
            at: NOW - age,
            timeouts,
            why: "test".into(),
        }
    }

    #[test]
    fn verdicts_expire_kvm_after_a_week_tcg_after_a_day_none_at_once() {
        let kvm = Some(Accel::Kvm);
        let tcg = Some(Accel::Tcg);
        assert_eq!(cached_choice(&rec(kvm, 6 * DAY, 0), NOW), kvm);
        assert_eq!(cached_choice(&rec(kvm, 8 * DAY, 0), NOW), None);
        assert_eq!(cached_choice(&rec(tcg, HOUR, 0), NOW), tcg);
        assert_eq!(cached_choice(&rec(tcg, 25 * HOUR, 0), NOW), None);
        assert_eq!(
            cached_choice(&rec(None, 0, 2), NOW),
            None,
            "timeouts are no verdict"
        );
        let future = Record {
            at: NOW + HOUR,
            ..rec(kvm, 0, 0)
        };
        assert_eq!(cached_choice(&future, NOW), None);
    }

    #[test]
    fn a_timeout_is_not_cached_as_tcg_until_it_repeats() {
        // One slow boot: TCG now, but no verdict.
        let (a, r1) = after_probe(&Outcome::TimedOut, None, NOW);
        assert_eq!((a, r1.accel, r1.timeouts), (Accel::Tcg, None, 1));
        let (_, r2) = after_probe(&Outcome::TimedOut, Some(&r1), NOW);
        assert_eq!((r2.accel, r2.timeouts), (None, 2));
        // The third in a row is a hang.
        let (_, r3) = after_probe(&Outcome::TimedOut, Some(&r2), NOW);
        assert_eq!((r3.accel, r3.timeouts), (Some(Accel::Tcg), 3));
        // When that verdict expires, one more timeout confirms it.
        let (_, r4) = after_probe(&Outcome::TimedOut, Some(&r3), NOW + DAY);
        assert_eq!((r4.accel, r4.timeouts), (Some(Accel::Tcg), 4));
        // A boot in between resets the count.
        let (a, ok) = after_probe(&Outcome::Booted { secs: 2.0 }, Some(&r2), NOW);
        assert_eq!(
            (a, ok.accel, ok.timeouts),
            (Accel::Kvm, Some(Accel::Kvm), 0)
        );
        let (_, again) = after_probe(&Outcome::TimedOut, Some(&ok), NOW);
        assert_eq!((again.accel, again.timeouts), (None, 1));
    }

    #[test]
    fn a_failed_boot_is_a_tcg_verdict() {
        let failed = Outcome::Failed {
            why: "Kernel panic".into(),
        };
        let (a, r) = after_probe(&failed, Some(&rec(None, 0, 2)), NOW);
        assert_eq!(
            (a, r.accel, r.timeouts, r.at),
            (Accel::Tcg, Some(Accel::Tcg), 0, NOW)
        );
        assert!(r.why.contains("Kernel panic"), "{}", r.why);
    }

    #[test]
    fn records_read_back_and_anything_else_is_none() {
        for r in [
            rec(Some(Accel::Kvm), 0, 0),
            rec(Some(Accel::Tcg), 5, 3),
            rec(None, 9, 1),
        ] {
            assert_eq!(Record::parse(&r.format()), Some(r));
        }
        // The first format's verdicts, empty and torn files.
        for bad in [
            "tcg: a KVM boot did not reach init within 25 s\n",
            "kvm booted to init in 2.0 s\n",
            "",
            "accel kvm\nat 12",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    fn no_probe(_: &Path) -> Result<Outcome> {
        panic!("probed although the verdict is known")
    }

    fn key() -> Result<String> {
        Ok("k".into())
    }

    #[test]
    fn a_fresh_cache_directory_is_made_before_the_probe_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b/c");
        // The probe makes its scratch directory inside, as the real one does.
        let probe = |d: &Path| {
            tempfile::tempdir_in(d)?;
            Ok(Outcome::Booted { secs: 1.5 })
        };
        let (a, why) = choose_with("auto", &fresh, true, key, probe, NOW).unwrap();
        assert_eq!(a, Accel::Kvm, "{why}");
        // The verdict stands on the next run, with no probe.
        let (a, why) = choose_with("auto", &fresh, true, key, no_probe, NOW + HOUR).unwrap();
        assert_eq!(a, Accel::Kvm);
        assert!(why.starts_with("cached probe"), "{why}");
        // Another QEMU or kernel is another key: probed again.
        let other = || Ok("other".to_string());
        let failed = |_: &Path| {
            Ok(Outcome::Failed {
                why: "no KVM".into(),
            })
        };
        let (a, _) = choose_with("auto", &fresh, true, other, failed, NOW).unwrap();
        assert_eq!(a, Accel::Tcg);
        let (a, _) = choose_with("auto", &fresh, true, key, no_probe, NOW).unwrap();
        assert_eq!(a, Accel::Kvm, "one key's verdict does not touch another's");
    }

    #[test]
    fn timeouts_probe_again_until_they_make_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mut probes = 0;
        for run in 0..TIMEOUTS_FOR_A_HANG {
            let slow = |_: &Path| {
                probes += 1;
                Ok(Outcome::TimedOut)
            };
            let (a, why) = choose_with("auto", dir.path(), true, key, slow, NOW).unwrap();
            assert_eq!(a, Accel::Tcg, "run {run}: {why}");
        }
        assert_eq!(probes, TIMEOUTS_FOR_A_HANG, "every timeout is probed again");
        let (a, why) = choose_with("auto", dir.path(), true, key, no_probe, NOW).unwrap();
        assert_eq!(a, Accel::Tcg);
        assert!(why.contains("KVM hangs here"), "{why}");
    }

    #[test]
    fn no_kvm_and_explicit_requests_need_no_probe_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b/c");
        let no_key = || -> Result<String> { panic!("no key is needed") };
        let (a, _) = choose_with("auto", &fresh, false, no_key, no_probe, NOW).unwrap();
        assert_eq!(a, Accel::Tcg);
        let (a, _) = choose_with("tcg", &fresh, true, no_key, no_probe, NOW).unwrap();
        assert_eq!(a, Accel::Tcg);
        let (a, _) = choose_with("kvm", &fresh, true, no_key, no_probe, NOW).unwrap();
        assert_eq!(a, Accel::Kvm);
        assert!(choose_with("fast", &fresh, true, no_key, no_probe, NOW).is_err());
        assert!(!fresh.exists(), "nothing is written without a probe");
    }

    #[test]
    fn the_key_follows_the_kernel_image_contents() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        let m = Machine {
            // Any program that prints a version.
            qemu: "sh".into(),
            kernel: kernel.clone(),
            initrd: "/nonexistent/initrd".into(),
            accel: Accel::Tcg,
            memory_mib: 64,
        };
        fs::write(&kernel, "one").unwrap();
        let a = probe_key(&m).unwrap();
        assert_eq!(probe_key(&m).unwrap(), a);
        // Same size, other contents.
        fs::write(&kernel, "two").unwrap();
        assert_ne!(probe_key(&m).unwrap(), a);
    }
}
