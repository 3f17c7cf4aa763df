//! `sivshm-host hotplug`: a worker added by a reload of `serve` plugged into a running
//! manager QEMU over its QMP socket, and the faults around it. The manager is a real QEMU
//! started from what `qemu-args` prints, held paused (`-S`: no guest is needed to realise a
//! device, and none runs); that a guest then uses the device is `scripts/check-own-vms.sh`'s.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{header, worker, Serve};
use sivshm_host::hotplug::Monitor;

/// A QEMU killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The manager `mgr` of the file at `file`, as a user starts it with `qemu-args`, paused.
fn manager(file: &Path, log: &Path) -> Qemu {
    vm(file, "mgr", &[], log)
}

/// VM `name` of the file at `file`, as a user starts it with `qemu-args` (and `more`), paused.
fn vm(file: &Path, name: &str, more: &[&str], log: &Path) -> Qemu {
    let out = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .args(["qemu-args"])
        .arg(file)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let args = String::from_utf8(out.stdout).unwrap();
    let child = Command::new("qemu-system-x86_64")
        .args(["-M", "pc", "-accel", "tcg", "-m", "64", "-S", "-nodefaults"])
        .args(["-no-user-config", "-display", "none"])
        .args(args.split_whitespace())
        .args(more)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("qemu-system-x86_64 cannot run ({e}): scripts/setup.sh"));
    Qemu(child)
}

/// A QMP connection once QEMU listens.
fn monitor(qmp: &Path, qemu: &mut Qemu, log: &Path) -> Monitor {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(m) = Monitor::connect(qmp) {
            return m;
        }
        if let Some(st) = qemu.0.try_wait().unwrap() {
            panic!(
                "QEMU exited ({st}): {}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "QEMU's QMP socket never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// QEMU's devices and chardevs with an id. (QEMU serves one QMP client at a time: the test's
/// connects, looks and goes.)
fn state(qmp: &Path, q: &mut Qemu, log: &Path) -> (Vec<String>, Vec<String>) {
    let mut m = monitor(qmp, q, log);
    (m.devices().unwrap(), m.chardevs().unwrap())
}

/// `sivshm-host hotplug ACTION FILE --worker W [MORE]`: (success, stdout, stderr).
fn hotplug(action: &str, file: &Path, w: &str, more: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .args(["hotplug", action])
        .arg(file)
        .args(["--worker", w])
        .args(more)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refused(r: (bool, String, String), want: &str) {
    assert!(!r.0, "not refused: {}", r.1);
    assert!(
        r.2.contains(want) && r.2.contains("nothing was changed"),
        "{want:?} not in: {}",
        r.2
    );
}

#[test]
fn a_worker_added_by_a_reload_is_plugged_into_the_running_manager() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let qmp: PathBuf = d.join("mgr.qmp");
    let head = header(d).replace(
        "name = \"mgr\"\n",
        &format!("name = \"mgr\"\nqmp = \"{}\"\n", qmp.display()),
    );
    let one = format!("{head}{}", worker("w0", 1, ""));
    let mut s = Serve::start_with(d, &one);
    let file = d.join("it.toml");
    let qlog = d.join("qemu.log");
    let mut q = manager(&file, &qlog);
    let booted = state(&qmp, &mut q, &qlog);
    s.wait_for_setups("mgr.w0", 1);
    assert!(booted.0.contains(&"sivshm-w0".to_string()), "{booted:?}");

    // Not in the file yet; in the file but serve not reloaded.
    refused(
        hotplug("add", &file, "w1", &[]),
        "topology it has no worker \"w1\" (its workers: w0)",
    );
    let two = format!("{one}{}", worker("w1", 2, "vectors = 2\n"));
    std::fs::write(&file, &two).unwrap();
    refused(
        hotplug("add", &file, "w1", &[]),
        &format!(
            "serve has no socket {} for worker \"w1\": start serve, or reload it",
            s.socket("mgr.w1").display()
        ),
    );
    assert_eq!(state(&qmp, &mut q, &qlog), booted);

    // The file renames the manager (which a reload refuses): said so, not "reload it".
    std::fs::write(
        &file,
        two.replace("[manager]\nname = \"mgr\"", "[manager]\nname = \"boss\""),
    )
    .unwrap();
    refused(
        hotplug("add", &file, "w0", &[]),
        "serve's manager of topology it is named \"mgr\", not \"boss\": the file renames it, \
         which serve does not take while it runs (a reload is refused); stop serve and every VM \
         to rename it",
    );
    std::fs::write(&file, &two).unwrap();
    assert_eq!(state(&qmp, &mut q, &qlog), booted);

    // Reloaded: plugged, and QEMU got its setup from serve on the manager's socket for w1.
    let line = s.reload(&two, 1);
    assert!(line.contains("added w1, removed none"), "{line}");
    let (ok, out, err) = hotplug("add", &file, "w1", &[]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "worker w1's channel plugged into manager mgr: device sivshm-w1 at 0000:00:05.0 \
         (worker peer id 2)"
    );
    s.wait_for_setups("mgr.w1", 1);
    assert_eq!(s.device("mgr.w1", "peer_id"), Some(2));
    assert_eq!(s.device("mgr.w1", "clients"), Some(1));
    let plugged = state(&qmp, &mut q, &qlog);
    assert!(plugged.0.contains(&"sivshm-w1".to_string()), "{plugged:?}");
    assert!(plugged.1.contains(&"sivshm-w1".to_string()), "{plugged:?}");

    // Faults: each refused, nothing changed in QEMU or serve.
    refused(
        hotplug("add", &file, "w1", &[]),
        "the manager already has a device \"sivshm-w1\"",
    );
    refused(
        hotplug("add", &file, "w0", &[]),
        "the manager already has a device \"sivshm-w0\"",
    );
    let gone = d.join("nobody.qmp");
    let r = hotplug("add", &file, "w1", &["--qmp", gone.to_str().unwrap()]);
    assert!(
        !r.0 && r
            .2
            .contains("the manager is not running: nothing answers on its QMP socket"),
        "{}",
        r.2
    );
    // A QMP socket another client holds: a clear error, not a hang.
    let holder = monitor(&qmp, &mut q, &qlog);
    let r = hotplug("add", &file, "w1", &[]);
    drop(holder);
    assert!(
        !r.0 && r.2.contains("another client holds its QMP socket"),
        "{}",
        r.2
    );
    // w2 in the file and served, never plugged; w3 behind a bridge the manager lacks.
    let four = format!(
        "{two}{}{}",
        worker("w2", 1, ""),
        worker("w3", 1, "id = 60\n")
    );
    let line = s.reload(&four, 2);
    assert!(line.contains("added w2, w3"), "{line}");
    refused(
        hotplug("remove", &file, "w2", &[]),
        "the manager has no device \"sivshm-w2\"",
    );
    refused(
        hotplug("add", &file, "w3", &[]),
        "the manager has no PCI bridge \"sivshm-bridge.1\" for the device at 0x5 behind bridge 1",
    );
    assert_eq!(state(&qmp, &mut q, &qlog), plugged);
    // The manager's QEMU holds w1's channel: a reload without w1 is refused (w2 keeps
    // its id).
    let line = s.reload(
        &format!(
            "{one}{}{}",
            worker("w2", 1, "id = 3\n"),
            worker("w3", 1, "id = 60\n")
        ),
        3,
    );
    assert!(
        line.contains("worker \"w1\" is removed from the file, but QEMUs are still connected to its devices: mgr.w1 (pid"),
        "{line}"
    );
    s.check_alive();
    assert!(s.socket("mgr.w1").exists());
}

/// A worker's segment resized while its VMs run: a reload adds the new segment as a worker of
/// its own (`w0b`, 4 MiB where `w0` has 1), its channel is plugged into the manager and, with
/// `--into w0`, into the worker's running VM (its own device, at the first free slot), while
/// the old one stays served: a reload cannot retire `w0` while a QEMU holds it.
#[test]
fn a_resized_worker_s_new_segment_is_plugged_into_the_manager_and_the_worker_vm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let qmp: PathBuf = d.join("mgr.qmp");
    let wqmp: PathBuf = d.join("w0.qmp");
    let head = header(d).replace(
        "name = \"mgr\"\n",
        &format!("name = \"mgr\"\nqmp = \"{}\"\n", qmp.display()),
    );
    let one = format!("{head}{}", worker("w0", 1, ""));
    let mut s = Serve::start_with(d, &one);
    let file = d.join("it.toml");
    let (qlog, wlog) = (d.join("qemu.log"), d.join("w0.log"));
    let mut q = manager(&file, &qlog);
    let wq_arg = format!("unix:{},server=on,wait=off", wqmp.display());
    let mut wq = vm(&file, "w0", &["-qmp", &wq_arg], &wlog);
    let wpid = wq.0.id();
    let before = state(&wqmp, &mut wq, &wlog);
    assert_eq!(before.0, ["sivshm-bridge.0", "sivshm-mgr"], "{before:?}");
    let _ = state(&qmp, &mut q, &qlog);
    s.wait_for_clients("w0.mgr", 1);

    let two = format!("{one}{}", worker("w0b", 4, ""));
    let line = s.reload(&two, 1);
    assert!(line.contains("added w0b, removed none"), "{line}");
    let (ok, _, err) = hotplug("add", &file, "w0b", &[]);
    assert!(ok, "{err}");
    // Into the worker's VM: its QMP socket must be given.
    refused(
        hotplug("add", &file, "w0b", &["--into", "w0"]),
        "no QMP socket for VM \"w0\": give --qmp PATH",
    );
    let wq_path = wqmp.to_str().unwrap();
    let (ok, out, err) = hotplug("add", &file, "w0b", &["--into", "w0", "--qmp", wq_path]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "worker w0b's own device plugged into VM w0: device sivshm-w0b at 0000:00:05.0 (its \
         peer, manager mgr, is id 0)"
    );
    s.wait_for_clients("w0b.mgr", 1);
    assert!(
        s.log().contains(&format!("serve: w0b.mgr: pid {wpid} uid")),
        "{}",
        s.log()
    );
    assert!(s
        .log()
        .contains("(peer id 2, peer mgr id 0, 1 vector(s), 4 MiB, 5 messages)"));
    let plugged = state(&wqmp, &mut wq, &wlog);
    assert_eq!(
        plugged.0,
        ["sivshm-bridge.0", "sivshm-mgr", "sivshm-w0b"],
        "{plugged:?}"
    );

    // Faults: the same device again; a worker VM that is not running.
    refused(
        hotplug("add", &file, "w0b", &["--into", "w0", "--qmp", wq_path]),
        "VM w0 already has a device \"sivshm-w0b\"",
    );
    let gone = d.join("nobody.qmp");
    let r = hotplug(
        "add",
        &file,
        "w0b",
        &["--into", "w0", "--qmp", gone.to_str().unwrap()],
    );
    assert!(
        !r.0 && r
            .2
            .contains("VM w0 is not running: nothing answers on its QMP socket"),
        "{}",
        r.2
    );
    assert_eq!(state(&wqmp, &mut wq, &wlog), plugged);
    // The old segment stays served while its QEMUs hold it: retiring it is refused.
    let line = s.reload(&format!("{head}{}", worker("w0b", 4, "id = 2\n")), 2);
    // Both QEMUs hold it, in the order they connected.
    assert!(
        line.contains(
            "worker \"w0\" is removed from the file, but QEMUs are still connected to its \
             devices: "
        ) && line.contains("mgr.w0 (pid")
            && line.contains(&format!("w0.mgr (pid {wpid} ")),
        "{line}"
    );
    s.check_alive();
    assert!(s.socket("mgr.w0").exists() && s.socket("w0.mgr").exists());
}
