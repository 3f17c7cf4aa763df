//! Workers added and removed while `sivshm-host serve` runs: the real binary, its topology
//! file edited and reloaded with `SIGHUP` (what `systemctl reload` sends through the unit's
//! `ExecReload`), and clients that read the ivshmem protocol as QEMU does.

mod common;

use std::fs;
use std::os::fd::AsFd;

use common::{connect, header, same_eventfd, worker, Serve};

/// Whether `a` and `b` are one segment: what is written to one is read from the other.
fn same_segment(a: &impl AsFd, b: &impl AsFd, mark: &[u8]) -> bool {
    rustix::io::pwrite(a, mark, 8192).unwrap();
    let mut buf = vec![0u8; mark.len()];
    rustix::io::pread(b, &mut buf, 8192).unwrap();
    buf == mark
}

#[test]
fn a_reload_adds_and_removes_workers_and_the_others_see_nothing() {
    // On tmpfs where there is one, so that the segments are files (`store`).
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let d = dir.path();
    let first = format!(
        "{}{}{}",
        header(d),
        worker("w0", 2, "vectors = 2\n"),
        worker("w1", 1, "")
    );
    let mut s = Serve::start_with(d, &first);
    let mgr = connect(&s.socket("mgr.w0"), 2);
    let w0 = connect(&s.socket("w0.mgr"), 2);
    assert!(same_segment(&mgr.shm, &w0.shm, b"before"));
    let w1_file = d.join("run/segments/w1.seg");
    let w1_had_file = w1_file.exists();

    // w1 goes, w2 and w3 come; w0 stays first, so it keeps id 1.
    let second = format!(
        "{}{}{}{}",
        header(d),
        worker("w0", 2, "vectors = 2\n"),
        worker("w2", 4, "vectors = 3\n"),
        worker("w3", 1, "")
    );
    let line = s.reload(&second, 1);
    assert!(
        line.contains("added w2, w3, removed w1; a manager and 3 worker(s)"),
        "{line}\n{}",
        s.log()
    );
    assert!(s
        .log()
        .contains("serve: worker w1 removed: its sockets are gone"));
    // w1's sockets and segment file are gone; the new workers' sockets are there.
    assert!(!s.socket("mgr.w1").exists() && !s.socket("w1.mgr").exists());
    assert!(!w1_file.exists(), "w1's segment file stayed");
    for n in ["mgr.w2", "w2.mgr", "mgr.w3", "w3.mgr"] {
        assert!(s.socket(n).exists(), "{n}");
    }
    // The new workers take the lowest free ids: w1's 2, then 3.
    let m2 = connect(&s.socket("mgr.w2"), 3);
    let w2 = connect(&s.socket("w2.mgr"), 3);
    assert_eq!((m2.own, m2.ids()), (0, vec![2, 2, 2, 0, 0, 0]));
    assert_eq!((w2.own, w2.ids()), (2, vec![0, 0, 0, 2, 2, 2]));
    for v in 0..3 {
        assert!(same_eventfd(&m2.fds[v].1, &w2.fds[3 + v].1));
    }
    assert_eq!(rustix::fs::fstat(&w2.shm).unwrap().st_size, 4 << 20);
    assert!(same_segment(&m2.shm, &w2.shm, b"w2"));
    assert!(!same_segment(&m2.shm, &w0.shm, b"not w0"));
    assert_eq!(connect(&s.socket("w3.mgr"), 1).own, 3);
    if w1_had_file {
        assert!(d.join("run/segments/w2.seg").exists());
    }

    // w0's running VMs saw nothing: no message, the same segment and doorbells.
    mgr.nothing_more();
    w0.nothing_more();
    assert!(same_segment(&mgr.shm, &w0.shm, b"after"));
    let again = connect(&s.socket("w0.mgr"), 2);
    assert_eq!(again.ids(), w0.ids());
    assert!(same_segment(&mgr.shm, &again.shm, b"again"));
    for v in 0..2 {
        assert!(same_eventfd(&mgr.fds[v].1, &again.fds[2 + v].1));
        assert!(same_eventfd(&again.fds[v].1, &mgr.fds[2 + v].1));
    }

    // Removing the rest but w0 (no one connected to w2 and w3 any more).
    drop((m2, w2));
    s.wait_for_clients("mgr.w2", 0);
    s.wait_for_clients("w2.mgr", 0);
    let third = format!("{}{}", header(d), worker("w0", 2, "vectors = 2\n"));
    let line = s.reload(&third, 2);
    assert!(line.contains("added none, removed w2, w3"), "{line}");
    mgr.nothing_more();
    // SIGTERM removes the sockets of the topology served now.
    s.signal(rustix::process::Signal::TERM);
    assert!(s.exit_within(5).success());
    let left: Vec<_> = fs::read_dir(d.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_reload_that_running_vms_would_notice_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = format!(
        "{}{}{}",
        header(d),
        worker("w0", 2, "vectors = 2\n"),
        worker("w1", 1, "")
    );
    let mut s = Serve::start_with(d, &good);
    // w1's VM is connected.
    let w1 = connect(&s.socket("w1.mgr"), 1);
    let mgr = connect(&s.socket("mgr.w0"), 2);
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("segment_mib = 1\n", "segment_mib = one\n"),
            "it.toml: line 13: string values must be quoted",
        ),
        (
            good.replace("[manager]\nname = \"mgr\"", "[manager]\nname = \"boss\""),
            "the manager is named \"boss\", not \"mgr\"",
        ),
        (
            format!("{}{}", header(d), worker("w0", 2, "vectors = 2\n")),
            "worker \"w1\" is removed from the file, but QEMUs are still connected to its \
             devices: w1.mgr (pid",
        ),
        (
            good.replace("segment_mib = 2\n", "segment_mib = 4\n"),
            "worker \"w0\" would change its segment_mib from 2 to 4",
        ),
        (
            good.replace("vectors = 2\n", "vectors = 1\n"),
            "worker \"w0\" would change its vectors from 2 to 1",
        ),
        (
            // w0 removed but w1 would take its id 1.
            format!("{}{}", header(d), worker("w1", 1, "")),
            "worker \"w1\" would move from id 2 to id 1, and the manager's device for it from \
             0000:00:05.0 to 0000:00:04.0, which its running VMs would see: give it `id = 2`",
        ),
        (
            good.replace("name = \"it\"", "name = \"other\""),
            "the topology is named \"other\", not \"it\"",
        ),
        (
            format!(
                "{}{}{}{}",
                header(d),
                worker("w0", 2, "vectors = 2\n"),
                worker("w1", 1, ""),
                worker("w2", 1, "id = 200\n")
            ),
            "it.toml: line 17: id = 200 is not from 1 to 148",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let line = s.reload(text, i + 1);
        assert!(
            line.starts_with("serve: reload refused: ") && line.contains(want),
            "case {i}: {line}"
        );
        assert!(line.ends_with("; nothing was changed"), "{line}");
    }
    // Nothing changed: every socket there, the connected clients sent nothing more, and a
    // new connection gets what it got before.
    for n in ["mgr.w0", "w0.mgr", "mgr.w1", "w1.mgr"] {
        assert!(s.socket(n).exists(), "{n}");
    }
    assert!(!s.socket("mgr.w2").exists());
    w1.nothing_more();
    mgr.nothing_more();
    let again = connect(&s.socket("w1.mgr"), 1);
    assert_eq!((again.own, again.ids()), (w1.own, w1.ids()));
    assert!(same_segment(&w1.shm, &again.shm, b"kept"));
    assert!(same_eventfd(&w1.fds[1].1, &again.fds[1].1));

    // w0 removed with w1 keeping its id: accepted once no one is connected to w0.
    drop(mgr);
    s.wait_for_clients("mgr.w0", 0);
    let kept = format!("{}{}", header(d), worker("w1", 1, "id = 2\n"));
    let line = s.reload(&kept, cases.len() + 1);
    assert!(line.contains("added none, removed w0"), "{line}");
    w1.nothing_more();
    assert_eq!(connect(&s.socket("w1.mgr"), 1).own, 2);
}
