//! `packaging/systemd/sivshm-host@.service`: checked by systemd's own `systemd-analyze
//! verify`, and the readiness it waits for (`Type=notify`) sent by the real binary once every
//! socket listens.

mod common;

use std::fs;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const UNIT: &str = include_str!("../../packaging/systemd/sivshm-host@.service");

/// `systemd-analyze verify` on the unit as instance `it`, with `ExecStart`'s binary at
/// `exe`: (success and no warning, output).
fn verify(dir: &Path, unit: &str, exe: &str) -> (bool, String) {
    let file = dir.join("sivshm-host@it.service");
    fs::write(&file, unit.replace("/usr/local/bin/sivshm-host", exe)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze cannot run ({e}): is systemd installed?"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.trim().is_empty(), text)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_sivshm-host");
    let (ok, out) = verify(dir.path(), UNIT, exe);
    assert!(ok, "systemd-analyze verify:\n{out}");
    assert!(UNIT.contains("ExecStart=/usr/local/bin/sivshm-host serve /etc/sivshm/%i.toml"));
    assert!(UNIT.contains("Type=notify"));
    // The check does check: a key systemd does not know, or a missing binary, fails.
    let bogus = UNIT.replace("[Service]\n", "[Service]\nServeHarder=yes\n");
    let (ok, out) = verify(dir.path(), &bogus, exe);
    assert!(!ok, "an unknown key passed:\n{out}");
    let (ok, out) = verify(dir.path(), UNIT, "/nonexistent/sivshm-host");
    assert!(!ok, "a missing binary passed:\n{out}");
}

#[test]
fn serve_tells_systemd_it_is_ready_once_every_socket_listens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it.toml");
    fs::write(&file, common::topology(dir.path())).unwrap();
    let notify = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .arg("serve")
        .arg(&file)
        .env("NOTIFY_SOCKET", &notify)
        .stderr(fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let got = systemd.recv(&mut buf);
    let ready = got.as_ref().map(|&n| &buf[..n]);
    let connected: Vec<bool> = ["mgr.w0", "w0.mgr", "mgr.w1", "w1.mgr"]
        .iter()
        .map(|n| UnixStream::connect(dir.path().join("run").join(format!("{n}.sock"))).is_ok())
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert_eq!(ready.ok(), Some(&b"READY=1"[..]), "{got:?}\n{log}");
    assert_eq!(connected, [true; 4], "{log}");
}
