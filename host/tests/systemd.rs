//! `packaging/systemd/sivshm-host@.service`: checked by systemd's own `systemd-analyze
//! verify`, and the readiness it waits for (`Type=notify`) sent by the real binary once every
//! socket listens.

mod common;

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

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
    // systemctl reload sends serve SIGHUP.
    assert!(UNIT.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    // Room for every segment of the largest topology in the fd store.
    let max: usize = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("FileDescriptorStoreMax="))
        .expect("FileDescriptorStoreMax=")
        .parse()
        .unwrap();
    assert!(
        max >= sivshm_host::service::topology_file::MAX_WORKERS,
        "{max}"
    );
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
    let systemd = common::FakeSystemd::bind(&notify);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .arg("serve")
        .arg(&file)
        .env("NOTIFY_SOCKET", &notify)
        .stderr(fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    // Each segment goes to the fd store before READY=1.
    let stored = systemd.until_ready();
    let connected: Vec<bool> = ["mgr.w0", "w0.mgr", "mgr.w1", "w1.mgr"]
        .iter()
        .map(|n| UnixStream::connect(dir.path().join("run").join(format!("{n}.sock"))).is_ok())
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert_eq!(connected, [true; 4], "{log}");
    assert_eq!(
        common::names_of(&stored),
        common::fd_store_names(&file),
        "{log}"
    );
    let sizes: Vec<i64> = stored[..2]
        .iter()
        .map(|(_, fd)| rustix::fs::fstat(fd).unwrap().st_size)
        .collect();
    assert_eq!(sizes, [2 << 20, 1 << 20]);
    // The doorbells are eventfds (an anonymous inode: no size).
    assert!(stored[2..]
        .iter()
        .all(|(_, fd)| rustix::fs::fstat(fd).unwrap().st_size == 0));
    assert!(
        log.contains("segment it-w0: 2 MiB of 4K pages, created as a memfd, lost when serve stops")
            && log.contains("put in systemd's fd store as it-w0"),
        "{log}"
    );
}

#[test]
fn a_reload_tells_systemd_and_keeps_the_fd_store_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it.toml");
    fs::write(&file, common::topology(dir.path())).unwrap();
    let notify = dir.path().join("notify");
    let systemd = common::FakeSystemd::bind(&notify);
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .arg("serve")
        .arg(&file)
        .env("NOTIFY_SOCKET", &notify)
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    systemd.until_ready();
    let hup = || {
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    };
    // w1 goes, w2 comes: RELOADING=1, w2's segment into the store, w1's out, READY=1.
    let text = common::topology(dir.path()).replace("\"w1\"", "\"w2\"");
    fs::write(&file, text).unwrap();
    hup();
    let mut got = Vec::new();
    loop {
        let (msg, fd) = systemd.recv().expect("no READY=1 after the reload");
        // RELOADING=1 carries the time the reload began: checked, then left out.
        let msg = match msg.strip_prefix("RELOADING=1\nMONOTONIC_USEC=") {
            Some(usec) => {
                assert!(usec.parse::<u64>().unwrap() > 0, "{msg:?}");
                "RELOADING=1".to_string()
            }
            None => msg,
        };
        got.push((
            msg.clone(),
            fd.map(|f| rustix::fs::fstat(&f).unwrap().st_size),
        ));
        if msg == "READY=1" {
            break;
        }
    }
    let want = [
        ("RELOADING=1".to_string(), None),
        ("FDSTORE=1\nFDNAME=it-w2".into(), Some(1 << 20)),
        ("FDSTORE=1\nFDNAME=it-w2.manager.0".into(), Some(0)),
        ("FDSTORE=1\nFDNAME=it-w2.worker.0".into(), Some(0)),
        ("FDSTOREREMOVE=1\nFDNAME=it-w1".into(), None),
        ("FDSTOREREMOVE=1\nFDNAME=it-w1.manager.0".into(), None),
        ("FDSTOREREMOVE=1\nFDNAME=it-w1.worker.0".into(), None),
        ("READY=1".into(), None),
    ];
    assert_eq!(got, want, "{}", fs::read_to_string(&log).unwrap());
    // A refused reload is announced and ended all the same, with nothing in between.
    fs::write(&file, "name = \"it\"\n[manager\n").unwrap();
    hup();
    let (a, b) = (systemd.recv().unwrap().0, systemd.recv().unwrap().0);
    assert!(a.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{a:?}");
    assert_eq!(b, "READY=1");
    let _ = child.kill();
    let _ = child.wait();
}
