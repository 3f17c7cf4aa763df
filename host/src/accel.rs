//! Choosing TCG or KVM. KVM is used only where a probe boot proves that it works here: on
//! nested hosts a bzImage can hang under KVM, so the probe has a short deadline. Its verdict is
//! cached per kernel build and QEMU binary: "kvm" for as long as those stay the same, "tcg"
//! for a day only, so that one slow or failed probe (a loaded machine, a kvm module loaded
//! later) does not decide forever.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::console;
use crate::qemu::{Accel, Machine, Vm};

const PROBE_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a "tcg" verdict is trusted.
const TCG_VERDICT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The accelerator a cached verdict still stands for, given how old it is.
fn cached_choice(verdict: &str, age: Duration) -> Option<Accel> {
    if verdict.starts_with("kvm") {
        Some(Accel::Kvm)
    } else if verdict.starts_with("tcg") && age < TCG_VERDICT_TTL {
        Some(Accel::Tcg)
    } else {
        None
    }
}

/// `requested` is "tcg", "kvm" or "auto". Returns the choice and why.
pub fn choose(requested: &str, base: &Machine, cache_dir: &Path) -> Result<(Accel, String)> {
    match requested {
        "tcg" => return Ok((Accel::Tcg, "requested".into())),
        "kvm" => return Ok((Accel::Kvm, "requested".into())),
        "auto" => {}
        other => anyhow::bail!("--accel must be auto, tcg or kvm, not {other:?}"),
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok((Accel::Tcg, "no usable /dev/kvm".into()));
    }
    let key = probe_key(base)?;
    let cache = cache_dir.join(format!("accel-probe-{key}"));
    if let Ok(verdict) = fs::read_to_string(&cache) {
        let age = fs::metadata(&cache)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or(Duration::MAX);
        if let Some(accel) = cached_choice(&verdict, age) {
            return Ok((accel, format!("cached probe: {}", verdict.trim())));
        }
    }
    // The probe's scratch directory lives in the cache directory: make that first.
    fs::create_dir_all(cache_dir)?;
    let verdict = probe(base, cache_dir)?;
    fs::write(&cache, &verdict)?;
    let accel = if verdict.starts_with("kvm") {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    Ok((accel, format!("probe: {}", verdict.trim())))
}

fn probe_key(m: &Machine) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [&m.kernel, &m.qemu] {
        let md = fs::metadata(p).or_else(|_| fs::metadata(which(p)))?;
        (md.len(), md.modified()?).hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

fn which(p: &Path) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(p))
                .find(|c| c.exists())
        })
        .unwrap_or_else(|| p.to_path_buf())
}

fn probe(base: &Machine, dir: &Path) -> Result<String> {
    let logdir = tempfile::tempdir_in(dir)?;
    let m = Machine {
        accel: Accel::Kvm,
        ..base.clone()
    };
    let start = Instant::now();
    let vm = Vm::new("kvm-probe", "true");
    let done = m.spawn(&vm, logdir.path())?.wait(start + PROBE_TIMEOUT)?;
    let r = console::parse(&done.log);
    Ok(if r.rc == Some(0) && !done.timed_out {
        format!(
            "kvm booted to init in {:.1} s\n",
            done.elapsed.as_secs_f64()
        )
    } else if done.timed_out {
        format!(
            "tcg: a KVM boot did not reach init within {} s\n",
            PROBE_TIMEOUT.as_secs()
        )
    } else {
        "tcg: a KVM boot failed\n".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kvm_verdict_stands_and_a_tcg_one_expires() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            cached_choice("kvm booted to init in 2.0 s\n", 1000 * hour),
            Some(Accel::Kvm)
        );
        assert_eq!(
            cached_choice("tcg: a KVM boot failed\n", hour),
            Some(Accel::Tcg)
        );
        assert_eq!(cached_choice("tcg: a KVM boot failed\n", 25 * hour), None);
        assert_eq!(
            cached_choice("", hour),
            None,
            "an empty or torn file is no verdict"
        );
    }

    #[test]
    fn explicit_requests_need_no_probe_and_bad_ones_are_refused() {
        let m = Machine {
            qemu: "/nonexistent/qemu".into(),
            kernel: "/nonexistent/bzImage".into(),
            initrd: "/nonexistent/initrd".into(),
            accel: Accel::Tcg,
            memory_mib: 64,
        };
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b/c");
        assert_eq!(choose("tcg", &m, &fresh).unwrap().0, Accel::Tcg);
        assert_eq!(choose("kvm", &m, &fresh).unwrap().0, Accel::Kvm);
        assert!(choose("fast", &m, &fresh).is_err());
    }
}
