//! `sivshm-host serve` as a user runs it: the real binary on a topology file, and clients
//! that read the ivshmem protocol as QEMU does (8 bytes and at most one fd per message).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{connect, same_eventfd, spawn, topology, Serve};
use rustix::process::Signal;
use sivshm_host::service::status;

#[test]
fn serve_wires_each_device_and_rewires_a_restarted_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Serve::start(dir.path());
    let names = ["mgr.w0", "w0.mgr", "mgr.w1", "w1.mgr"];
    for n in names {
        let m = fs::metadata(s.socket(n)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660, "{n}");
        assert_eq!(m.uid(), rustix::process::geteuid().as_raw(), "{n}");
    }

    let mgr = connect(&s.socket("mgr.w0"), 2);
    assert_eq!((mgr.own, mgr.ids()), (0, vec![1, 1, 0, 0]));
    let w0 = connect(&s.socket("w0.mgr"), 2);
    assert_eq!((w0.own, w0.ids()), (1, vec![0, 0, 1, 1]));
    // The manager rings the worker's vector 1: the worker's own eventfd of vector 1 fires.
    for v in 0..2 {
        assert!(same_eventfd(&mgr.fds[v].1, &w0.fds[2 + v].1));
        assert!(same_eventfd(&w0.fds[v].1, &mgr.fds[2 + v].1));
    }
    assert!(!same_eventfd(&mgr.fds[0].1, &w0.fds[3].1));
    // One segment: what the manager writes, the worker reads.
    rustix::io::pwrite(&mgr.shm, b"sivshm", 4096).unwrap();
    let mut buf = [0u8; 6];
    rustix::io::pread(&w0.shm, &mut buf, 4096).unwrap();
    assert_eq!(&buf, b"sivshm");
    assert_eq!(rustix::fs::fstat(&w0.shm).unwrap().st_size, 2 << 20);
    let w1 = connect(&s.socket("w1.mgr"), 1);
    assert_eq!((w1.own, w1.ids()), (2, vec![0, 2]));
    let mut other = [0u8; 6];
    rustix::io::pread(&w1.shm, &mut other, 4096).unwrap();
    assert_eq!(other, [0; 6], "w1 sees w0's segment");
    mgr.nothing_more();
    w0.nothing_more();

    // Bad clients: one connects and closes, one sends garbage, one never reads.
    drop(UnixStream::connect(s.socket("mgr.w0")).unwrap());
    let mut chatty = UnixStream::connect(s.socket("w0.mgr")).unwrap();
    chatty.write_all(b"hello, serve").unwrap();
    let _mute = UnixStream::connect(s.socket("w1.mgr")).unwrap();
    // The chatty one got its setup when accepted, then was dropped, and the log says why.
    let chatty_dropped = |st: &str| {
        common::setups(st, "w0.mgr") == Some(2)
            && status::query(st, Some(("device", "w0.mgr")), Some("clients")).unwrap() == ["1"]
    };
    s.wait_for_status("the chatty client dropped", chatty_dropped);
    let log = s.log();
    assert!(
        log.contains("sent 12 byte(s), but clients must not send anything; dropped"),
        "{log}"
    );

    // The worker's QEMU restarts: it gets the same wiring, the manager nothing.
    drop(w0);
    s.wait_for_clients("w0.mgr", 0);
    let before = s.device("w0.mgr", "setups").unwrap();
    let again = connect(&s.socket("w0.mgr"), 2);
    assert_eq!((again.own, again.ids()), (1, vec![0, 0, 1, 1]));
    assert!(same_eventfd(&mgr.fds[1].1, &again.fds[3].1));
    assert!(same_eventfd(&again.fds[0].1, &mgr.fds[2].1));
    rustix::io::pread(&again.shm, &mut buf, 4096).unwrap();
    assert_eq!(&buf, b"sivshm");
    mgr.nothing_more();
    s.check_alive();
    // As serve reports it: w0's device set up once more.
    s.wait_for_setups("w0.mgr", before + 1);
    let log = s.log();
    assert!(log.contains("serve: w0.mgr: pid "), "{log}");
    assert!(
        log.contains(
            "connected: sent its setup (peer id 1, peer mgr id 0, 2 vector(s), 2 MiB, 7 messages)"
        ),
        "{log}"
    );

    // SIGTERM: exit 0, sockets gone, and a new serve starts on the same directory.
    s.signal(Signal::TERM);
    let st = s.exit_within(5);
    assert!(st.success(), "{st}:\n{}", s.log());
    for n in names {
        assert!(!s.socket(n).exists(), "{n} is left behind");
    }
    assert!(s.log().contains("stopped; sockets removed"));
}

#[test]
fn a_second_serve_of_the_same_topology_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Serve::start(dir.path());
    let err = dir.path().join("second.log");
    let mut second = spawn(&dir.path().join("it.toml"), &err);
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the second serve runs on");
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = fs::read_to_string(&err).unwrap();
    assert_eq!(st.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "topology it is already served (by pid {}",
            first.child.id()
        )),
        "{text}"
    );
    // The first still serves, its sockets untouched.
    first.check_alive();
    assert_eq!(connect(&first.socket("w1.mgr"), 1).own, 2);

    // Another topology on the same runtime directory, whose sockets would be the first's:
    // refused the same way, nothing of the first's touched.
    let other = dir.path().join("other.toml");
    fs::write(
        &other,
        topology(dir.path()).replace("name = \"it\"", "name = \"other\""),
    )
    .unwrap();
    let text = common::serve_refuses(&other);
    assert!(
        text.contains(&format!(
            "topology other is already served (by pid {}, holding {}), or another topology \
             with runtime_dir {}: its sockets are that serve's",
            first.child.id(),
            dir.path().join("run/serve.lock").display(),
            dir.path().join("run").display()
        )) && text.contains("nothing was changed"),
        "{text}"
    );
    first.check_alive();
    let again = connect(&first.socket("w0.mgr"), 2);
    assert_eq!(again.own, 1);
    assert!(!first.log().contains("removed stale socket"));
}

#[test]
fn after_sigkill_a_new_serve_replaces_the_stale_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Serve::start(dir.path());
    s.signal(Signal::KILL);
    s.exit_within(5);
    assert!(
        s.socket("mgr.w0").exists(),
        "a killed serve cannot clean up"
    );
    let mut again = Serve::start(dir.path());
    assert!(
        again.log().contains("removed stale socket"),
        "{}",
        again.log()
    );
    assert_eq!(connect(&again.socket("mgr.w0"), 2).own, 0);
    again.signal(Signal::INT);
    assert!(again.exit_within(5).success());
    assert!(!again.socket("mgr.w0").exists());
}

#[test]
fn a_bad_topology_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let text = topology(dir.path()).replace("segment_mib = 2", "segment_mib = 3");
    fs::write(&file, text).unwrap();
    let err = common::serve_refuses(&file);
    assert!(
        err.contains(&format!(
            "{}: line 9: segment_mib = 3 is not a power of two",
            file.display()
        )),
        "{err}"
    );
    assert!(
        !dir.path().join("run").exists(),
        "nothing is created for a bad file"
    );
}
