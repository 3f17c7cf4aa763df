//! The driver side at scale: a manager with a device per worker, N of them, booted alone (the
//! workers' ends are wired but no worker boots). Inside, the guest lists every device, counts
//! nodes and MSI-X vectors, then unloads and loads the module again and times both, so that
//! probe time per device is measured apart from the boot. Each device's PCI address must be
//! the one the host gave it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::console::{self, ResultLine};
use crate::layout::{Layout, Roles, Topology};
use crate::qemu::{run_all, Machine};
use sivshm_host::pci::manager_slot;

/// What the manager runs: it reports as `SIVSHM-RESULT scale-*` lines (see [`SCRIPT`]).
struct ManagerAlone;

/// The guest side of the measurement: each device (`sivshmctl list`'s line as
/// `SIVSHM-RESULT scale-device node=...`), the nodes and vectors at boot, after `rmmod` and
/// after `insmod` again (`scale-count at=boot|rmmod|insmod nodes=N vectors=N`), and the
/// uptimes around both (`scale-times start=.. removed=.. probed=..`; /proc/uptime's 10 ms
/// steps).
// No double quote: the command travels on the kernel command line inside double quotes.
const SCRIPT: &str = "up() { cut -d' ' -f1 /proc/uptime; }; \
    count() { echo SIVSHM-RESULT scale-count at=$1 nodes=$(ls /dev | grep -c '^sivshm[0-9]') \
    vectors=$(grep -c sivshm /proc/interrupts); }; \
    sivshmctl list | sed 's/^/SIVSHM-RESULT scale-device node=/' && count boot \
    && a=$(up) && rmmod sivshm && b=$(up) && count rmmod \
    && insmod /lib/modules/sivshm.ko && c=$(up) && count insmod \
    && echo SIVSHM-RESULT scale-times start=$a removed=$b probed=$c";

impl Roles for ManagerAlone {
    // The addresses are not passed on: 128 of them would not fit the kernel command line.
    // The host checks the guest's list against them instead.
    fn manager(&self, _bdfs: &[String], _layout: &Layout) -> String {
        SCRIPT.to_string()
    }

    fn worker(&self, _index: usize, _layout: &Layout) -> String {
        "true".to_string()
    }
}

/// What the manager's guest reported.
#[derive(Debug, PartialEq)]
pub struct Figures {
    pub devices: usize,
    /// Nodes and vectors after boot, after rmmod, and after insmod again.
    pub at_boot: (usize, usize),
    pub after_rmmod: (usize, usize),
    pub after_insmod: (usize, usize),
    /// Boot-time probe (init's insmod), rmmod and insmod again, in seconds.
    pub boot_probe: f64,
    pub remove: f64,
    pub probe: f64,
}

/// Reads the `SIVSHM-RESULT scale-*` lines of a manager with `devices` devices and checks
/// that each device is at the address its worker index gives and that nodes and vectors
/// are all there.
pub fn figures(log: &str, devices: usize) -> Result<Figures> {
    let r = console::parse(log);
    let result = |program: &'static str, at: Option<&str>| {
        r.results_of(program)
            .filter(|l| at.is_none_or(|at| l.get("at") == Some(at)))
            .last()
            .with_context(|| {
                format!(
                    "the guest printed no SIVSHM-RESULT {program}{} line",
                    at.map_or(String::new(), |at| format!(" at={at}"))
                )
            })
    };
    let number = |l: &ResultLine, key: &str| -> Result<f64> {
        l.get(key)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no number {key}= in SIVSHM-RESULT {}", l.to_line()))
    };
    let count = |at: &str| -> Result<(usize, usize)> {
        let l = result("scale-count", Some(at))?;
        Ok((number(l, "nodes")? as usize, number(l, "vectors")? as usize))
    };
    let seen: BTreeSet<String> = r
        .results_of("scale-device")
        .filter_map(|l| l.get("pci"))
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = (0..devices)
        .map(|i| manager_slot(i).map(|s| s.bdf()))
        .collect::<Result<_>>()?;
    if seen != want {
        let missing: Vec<_> = want.difference(&seen).take(5).collect();
        let extra: Vec<_> = seen.difference(&want).take(5).collect();
        bail!(
            "the guest lists {} devices, {} expected; missing {missing:?}, unexpected {extra:?}",
            seen.len(),
            want.len()
        );
    }
    let times = result("scale-times", None)?;
    let f = Figures {
        devices,
        at_boot: count("boot")?,
        after_rmmod: count("rmmod")?,
        after_insmod: count("insmod")?,
        boot_probe: r.probed_uptime.context("no SIVSHM-PROBED line")?
            - r.booted_uptime.context("no SIVSHM-BOOTED uptime")?,
        remove: number(times, "removed")? - number(times, "start")?,
        probe: number(times, "probed")? - number(times, "removed")?,
    };
    for (what, got) in [("after boot", f.at_boot), ("after insmod", f.after_insmod)] {
        ensure!(
            got == (devices, devices),
            "{what}: {} nodes and {} vectors, {devices} of each expected",
            got.0,
            got.1
        );
    }
    ensure!(
        f.after_rmmod == (0, 0),
        "after rmmod: {:?} nodes and vectors left",
        f.after_rmmod
    );
    Ok(f)
}

/// Boots the manager of `workers` workers alone and reports what its driver did.
pub fn manager_alone(
    m: &Machine,
    logdir: &Path,
    timeout: Duration,
    workers: usize,
    segment: u64,
) -> Result<Vec<String>> {
    let t = Topology::new(workers, segment, &ManagerAlone)?;
    let started = std::time::Instant::now();
    let finished = run_all(m, std::slice::from_ref(&t.manager), logdir, timeout)?;
    let f = &finished[0];
    let r = console::parse(&f.log);
    ensure!(
        !f.timed_out && r.rc == Some(0) && r.boot_id.as_deref() == Some(f.boot_id.as_str()),
        "the manager failed (rc {:?}, timed out {}); log {}",
        r.rc,
        f.timed_out,
        f.log_path.display()
    );
    ensure!(
        r.splats.is_empty(),
        "the manager's kernel log has splats: {:?}",
        r.splats
    );
    let x = figures(&f.log, workers).with_context(|| format!("log {}", f.log_path.display()))?;
    let per = |s: f64| s * 1000.0 / workers as f64;
    Ok(vec![
        format!(
            "manager alone with {workers} devices ({} MiB each, 1 vector each, {} bridge(s)), \
             {}: booted and measured in {:.1} s",
            segment >> 20,
            sivshm_host::pci::bridges_for(workers),
            m.accel.name(),
            started.elapsed().as_secs_f64()
        ),
        format!(
            "  nodes {} and MSI-X vectors {} after boot; {} and {} after rmmod; {} and {} after \
             insmod; every device at its worker's address",
            x.at_boot.0,
            x.at_boot.1,
            x.after_rmmod.0,
            x.after_rmmod.1,
            x.after_insmod.0,
            x.after_insmod.1
        ),
        format!(
            "  probe at boot {:.2} s ({:.1} ms a device); rmmod {:.2} s ({:.1} ms a device); \
             insmod {:.2} s ({:.1} ms a device)",
            x.boot_probe,
            per(x.boot_probe),
            x.remove,
            per(x.remove),
            x.probe,
            per(x.probe)
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(devs: &[String], counts: [&str; 3]) -> String {
        let mut s = String::from("SIVSHM-BOOTED 1.50 id=x\nSIVSHM-PROBED 2.50 devices=2\n");
        s += "SIVSHM-BEGIN\n";
        for (i, d) in devs.iter().enumerate() {
            s += &format!(
                "SIVSHM-RESULT scale-device node=/dev/sivshm{i} pci={d} size=1048576 peer=0 \
                 vectors=1 memtype=write-back\n"
            );
        }
        for (at, c) in ["boot", "rmmod", "insmod"].into_iter().zip(counts) {
            let (n, v) = c.split_once(' ').unwrap();
            s += &format!("SIVSHM-RESULT scale-count at={at} nodes={n} vectors={v}\n");
        }
        s += "SIVSHM-RESULT scale-times start=3.00 removed=3.20 probed=4.00\nSIVSHM-END rc=0\n";
        s
    }

    #[test]
    fn the_manager_of_128_workers_gets_its_command_on_the_kernel_command_line() {
        let t = Topology::new(128, 1 << 20, &ManagerAlone).unwrap();
        let m = Machine {
            qemu: "q".into(),
            kernel: "k".into(),
            initrd: "i".into(),
            accel: crate::qemu::Accel::Tcg,
            memory_mib: 256,
        };
        let (args, _) = t.manager.args(&m, Path::new("/tmp/m.log"), "id").unwrap();
        let line = args
            .iter()
            .skip_while(|a| *a != "-append")
            .nth(1)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            line.contains("scale-times start=$a removed=$b probed=$c"),
            "{line}"
        );
        // x86's COMMAND_LINE_SIZE.
        assert!(line.len() < 2048, "{}", line.len());
        assert!(t.workers.iter().all(|w| w.devices.len() == 1));
    }

    #[test]
    fn figures_are_read_and_every_address_checked() {
        let devs: Vec<String> = (0..26).map(|i| manager_slot(i).unwrap().bdf()).collect();
        let f = figures(&log(&devs, ["26 26", "0 0", "26 26"]), 26).unwrap();
        assert!((f.boot_probe - 1.0).abs() < 1e-9);
        assert!((f.remove - 0.2).abs() < 1e-9);
        assert!((f.probe - 0.8).abs() < 1e-9);
        // A device missing, one at an address nobody gave, too few vectors, a leftover node.
        let e = figures(&log(&devs[..25], ["25 25", "0 0", "25 25"]), 26).unwrap_err();
        assert!(e.to_string().contains("missing [\"0000:01:02.0\"]"), "{e}");
        let mut moved = devs.clone();
        moved[25] = "0000:00:1f.0".into();
        assert!(figures(&log(&moved, ["26 26", "0 0", "26 26"]), 26).is_err());
        let e = figures(&log(&devs, ["26 20", "0 0", "26 26"]), 26).unwrap_err();
        assert!(e.to_string().contains("20 vectors"), "{e}");
        assert!(figures(&log(&devs, ["26 26", "1 0", "26 26"]), 26).is_err());
        assert!(figures(&log(&devs, ["26 26", "0 0", "26 25"]), 26).is_err());
    }
}
