//! A restarted `serve` hands a restarted QEMU the same segment: taken back from systemd's
//! fd store (`LISTEN_FDS`), or from the files of the last start when systemd is not there.

mod common;

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use common::{connect, same_eventfd, topology, worker_status, FakeSystemd, Serve};
use rustix::process::Signal;

/// serve of `file` started as systemd starts a unit with an fd store: `fds` at 3, 4, ...,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`, and `LISTEN_PID` its own pid (the shell's `$$`, which
/// `exec` keeps).
fn spawn_with_fds(file: &Path, log: &Path, notify: &Path, fds: Vec<(String, OwnedFd)>) -> Child {
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    let names = names.join(":");
    let n = fds.len();
    let mappings = fds
        .into_iter()
        .enumerate()
        .map(|(i, (_, fd))| FdMapping {
            parent_fd: fd,
            child_fd: 3 + i as i32,
        })
        .collect();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" serve \"$1\"")
        .arg(env!("CARGO_BIN_EXE_sivshm-host"))
        .arg(file)
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names)
        .env("NOTIFY_SOCKET", notify)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap());
    cmd.fd_mappings(mappings).unwrap();
    cmd.spawn().unwrap()
}

fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "serve still runs after {secs} s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_serve_started_with_the_fd_store_reuses_its_segments() {
    // /tmp is no tmpfs here, and if it is, the files go: only the fd store keeps them.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it.toml");
    fs::write(&file, topology(dir.path())).unwrap();
    let systemd = FakeSystemd::bind(&dir.path().join("notify"));
    let log1 = dir.path().join("first.log");
    let mut first = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .arg("serve")
        .arg(&file)
        .env("NOTIFY_SOCKET", &systemd.path)
        .stderr(fs::File::create(&log1).unwrap())
        .spawn()
        .unwrap();
    let stored = systemd.until_ready();
    assert_eq!(common::names_of(&stored), common::fd_store_names(&file));
    let run = dir.path().join("run");
    let w0 = connect(&run.join("w0.mgr.sock"), 2);
    rustix::io::pwrite(&w0.shm, b"kept by systemd", 8192).unwrap();
    drop(w0);
    // The manager's QEMU, which runs on across the restart with the eventfds it was given.
    let running_mgr = connect(&run.join("mgr.w0.sock"), 2);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first.id() as i32).unwrap(),
        Signal::TERM,
    )
    .unwrap();
    assert!(wait_exit(&mut first, 5).success());
    let _ = fs::remove_dir_all(run.join("segments"));

    // A size the store does not hold: an error, and nothing changes.
    let bigger = dir.path().join("bigger.toml");
    fs::write(
        &bigger,
        topology(dir.path()).replace("segment_mib = 2", "segment_mib = 4"),
    )
    .unwrap();
    let dup = |v: &Vec<(String, OwnedFd)>| -> Vec<(String, OwnedFd)> {
        v.iter()
            .map(|(n, fd)| (n.clone(), fd.try_clone().unwrap()))
            .collect()
    };
    let log_bad = dir.path().join("bad.log");
    let mut bad = spawn_with_fds(&bigger, &log_bad, &systemd.path, dup(&stored));
    let st = wait_exit(&mut bad, 10);
    let text = fs::read_to_string(&log_bad).unwrap();
    assert_eq!(st.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "segment it-w0: the segment in systemd's fd store is 2097152 bytes of 4K pages, but \
             the topology asks for 4 MiB of 4K pages"
        ) && text.contains("nothing was changed"),
        "{text}"
    );

    // The unit starts again: serve takes the segments back and stores nothing anew.
    let log2 = dir.path().join("second.log");
    let mut second = spawn_with_fds(&file, &log2, &systemd.path, dup(&stored));
    assert!(systemd.until_ready().is_empty(), "stored again");
    // Ready: what serve reports says where everything came from.
    let status = sivshm_host::service::status::read_dir("it", &dir.path().join("run")).unwrap();
    for (w, key) in [("w0", "segment"), ("w1", "segment"), ("w0", "doorbells")] {
        assert_eq!(
            worker_status(&status, w, key),
            "fd-store",
            "{w} {key}:\n{status}"
        );
    }
    // The worker's QEMU restarts: its doorbells are the ones the running manager rings and
    // waits on (peer messages first, then its own, `vectors` each).
    let restarted_w0 = connect(&run.join("w0.mgr.sock"), 2);
    for v in 0..2 {
        assert!(
            same_eventfd(&running_mgr.fds[v].1, &restarted_w0.fds[2 + v].1),
            "the manager's ring of vector {v} reaches the restarted worker"
        );
        assert!(
            same_eventfd(&restarted_w0.fds[v].1, &running_mgr.fds[2 + v].1),
            "the restarted worker's ring of vector {v} reaches the manager"
        );
    }
    let w0 = connect(&run.join("w0.mgr.sock"), 2);
    let mut buf = [0u8; 15];
    rustix::io::pread(&w0.shm, &mut buf, 8192).unwrap();
    assert_eq!(&buf, b"kept by systemd");
    let mgr = connect(&run.join("mgr.w0.sock"), 2);
    rustix::io::pread(&mgr.shm, &mut buf, 8192).unwrap();
    assert_eq!(&buf, b"kept by systemd");
    let _ = second.kill();
    let _ = second.wait();
}

#[test]
fn without_systemd_a_restarted_serve_reuses_its_segment_files() {
    // The files need tmpfs, as /run is.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut s = Serve::start(dir.path());
    let segs = dir.path().join("run/segments");
    let w0_file = segs.join("w0.seg");
    assert_eq!(s.worker_status("w0", "segment"), "created");
    assert_eq!(
        fs::metadata(&segs).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let m = fs::metadata(&w0_file).unwrap();
    assert_eq!((m.mode() & 0o777, m.len()), (0o600, 2 << 20));
    let mgr = connect(&s.socket("mgr.w0"), 2);
    rustix::io::pwrite(&mgr.shm, b"kept in a file", 4096).unwrap();
    s.signal(Signal::TERM);
    assert!(s.exit_within(5).success());
    drop(mgr);

    // A size that does not match: an error, and the file stays as it is.
    let bigger = topology(dir.path()).replace("segment_mib = 2", "segment_mib = 4");
    fs::write(dir.path().join("bigger.toml"), &bigger).unwrap();
    let err = common::serve_refuses(&dir.path().join("bigger.toml"));
    assert!(
        err.contains(&format!(
            "segment it-w0: {} is 2097152 bytes of 4K pages, but the topology asks for 4 MiB of \
             4K pages: to start it afresh (its contents are lost), remove {}",
            w0_file.display(),
            w0_file.display()
        )) && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(fs::metadata(&w0_file).unwrap().len(), 2 << 20);

    let mut again = Serve::start(dir.path());
    assert_eq!(again.worker_status("w0", "segment"), "reused");
    let w0 = connect(&again.socket("w0.mgr"), 2);
    let mut buf = [0u8; 14];
    rustix::io::pread(&w0.shm, &mut buf, 4096).unwrap();
    assert_eq!(&buf, b"kept in a file");
    again.check_alive();
}
