//! The C programs on libsivshm, built with `-fsanitize=address,undefined` and run on the
//! host over a memfd and two eventfds (no VM): the API test (`samples/c/sivshm_capi_test.c`,
//! with a hostile peer and a removal), the C distribute manager against the C worker, and
//! each of them against a Rust end speaking sivshm-distribute's batch format through the
//! Rust channel. Skips, saying so, only if the C compiler cannot build with the sanitizers.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sivshm_lib::channel::{Channel, Config, Doorbell, Links, Role};
use sivshm_lib::{EventFd, Mapping};

const LEN: usize = 1 << 20;
const SANITIZERS: &str = "-fsanitize=address,undefined";

/// Whether `out` has a `SIVSHM-RESULT <program> key=value ...` line with every `key=value`
/// word of `want` (the programs' results as data: Documentation/host-and-tests.rst,
/// "Results as data"; the lab parses them in lab/src/console.rs).
fn has_result(out: &[u8], program: &str, want: &[&str]) -> bool {
    String::from_utf8_lossy(out).lines().any(|l| {
        let mut words = l.split_whitespace();
        if words.next() != Some("SIVSHM-RESULT") || words.next() != Some(program) {
            return false;
        }
        let words: Vec<_> = words.collect();
        want.iter().all(|kv| words.contains(kv))
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// target/<profile>, with libsivshm.a built from the sources as they are now (cargo builds
/// no staticlib for an integration test: this does, a no-op when it is up to date). The
/// profile is this test's; the directory is the target directory even where cargo keeps
/// its intermediate artifacts (this test among them) in a build directory elsewhere.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap().file_name().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join(profile);
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["build", "--quiet", "-p", "sivshm-capi"]);
    if profile == "release" {
        c.arg("--release");
    }
    assert!(c.status().unwrap().success(), "cargo build -p sivshm-capi");
    assert!(
        dir.join("libsivshm.a").exists(),
        "no libsivshm.a in {}",
        dir.display()
    );
    dir
}

/// The sanitizer-built programs, in a directory of their own; None if the compiler lacks
/// sanitizer support (the skip's reason printed).
fn programs() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let built = lib_dir();
            let lib = built.join("libsivshm.a");
            let out = built.join("capi-c-tests");
            std::fs::create_dir_all(&out).unwrap();
            let probe = out.join("probe.c");
            std::fs::write(&probe, "int main(void) { return 0; }\n").unwrap();
            let ok = Command::new(cc())
                .args([SANITIZERS, "-o"])
                .arg(out.join("probe"))
                .arg(&probe)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                println!(
                    "SKIPPED: {} cannot build with {SANITIZERS}: the C sanitizer tests did not run",
                    cc()
                );
                return None;
            }
            let c = root().join("samples/c");
            for name in [
                "sivshm_capi_test",
                "sivshm_distribute_manager",
                "sivshm_distribute_worker",
                "sivshm_capi_probe",
                "sivshm_capi_removal",
            ] {
                let o = Command::new(cc())
                    .args([SANITIZERS, "-fno-omit-frame-pointer", "-g", "-O1"])
                    .args(["-Wall", "-Wextra", "-Werror"])
                    .arg(format!("-I{}", root().join("capi/include").display()))
                    .arg("-o")
                    .arg(out.join(name))
                    .arg(c.join(format!("{name}.c")))
                    .arg(&lib)
                    .args(["-lpthread", "-ldl", "-lm"])
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "{name} does not build: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            Some(out)
        })
        .clone()
}

fn sanitized(cmd: &mut Command) -> &mut Command {
    cmd.env("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

fn finish(what: &str, child: Child) -> Output {
    let o = ended(what, child);
    assert!(o.status.success(), "{what}: {}", o.status);
    o
}

/// A child's end, successful or not, but never a crash or a sanitizer's report.
fn ended(what: &str, child: Child) -> Output {
    let o = child.wait_with_output().unwrap();
    let text = format!(
        "{what}: {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{text}");
    assert!(
        o.status.code().is_some(),
        "{what} was killed by a signal: {text}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("Sanitizer"),
        "{text}"
    );
    o
}

/// A segment and the two doorbells between a manager and a worker, inherited by children
/// (no close-on-exec), and the `--fd` argument of each side.
struct Wires {
    shm: OwnedFd,
    to_manager: OwnedFd,
    to_worker: OwnedFd,
}

impl Wires {
    fn new() -> Wires {
        let shm = rustix::fs::memfd_create("capi-pair", rustix::fs::MemfdFlags::empty()).unwrap();
        rustix::fs::ftruncate(&shm, LEN as u64).unwrap();
        let e = || rustix::event::eventfd(0, rustix::event::EventfdFlags::empty()).unwrap();
        Wires {
            shm,
            to_manager: e(),
            to_worker: e(),
        }
    }

    fn arg(&self, role: Role) -> String {
        let (wake, ring) = match role {
            Role::Manager => (&self.to_manager, &self.to_worker),
            Role::Worker => (&self.to_worker, &self.to_manager),
        };
        format!(
            "{}:{LEN}:{}:{}",
            self.shm.as_raw_fd(),
            wake.as_raw_fd(),
            ring.as_raw_fd()
        )
    }

    /// This process's end, through the Rust channel.
    fn channel(&self, role: Role) -> Channel {
        let dup = |fd: &OwnedFd| {
            Arc::new(EventFd::from_fd(rustix::io::fcntl_dupfd_cloexec(fd, 0).unwrap()).unwrap())
        };
        let (wake, ring) = match role {
            Role::Manager => (dup(&self.to_manager), dup(&self.to_worker)),
            Role::Worker => (dup(&self.to_worker), dup(&self.to_manager)),
        };
        let links = Links {
            doorbell: Some(ring as Arc<dyn Doorbell>),
            wake: Some(wake),
            own_id: Some(u32::from(role == Role::Worker)),
            presence: None,
        };
        let map = Arc::new(Mapping::new(self.shm.as_fd(), 0, LEN).unwrap());
        let config = Config {
            attach_timeout: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(30),
            ..Config::default()
        };
        Channel::new(map, 0, LEN, role, links, config).unwrap()
    }
}

/// sivshm-distribute's batch format, the very file the sample compiles, for the Rust end.
#[path = "../../samples/distribute/src/batches.rs"]
#[allow(dead_code)] // the test uses the writing half and the checksum
mod batches;

/// The little-endian u64 at byte `at` of a message.
fn word(m: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(m[at..at + 8].try_into().unwrap())
}

const ROUNDS: u64 = 20;
const BYTES: usize = 100_000;

fn c_program(dir: &Path, name: &str) -> Command {
    let mut c = Command::new(dir.join(name));
    sanitized(&mut c);
    c
}

/// The C worker on the channel `w` wires, as a parent that passed it the descriptors runs it.
fn spawn_c_worker(dir: &Path, w: &Wires) -> Child {
    c_program(dir, "sivshm_distribute_worker")
        .args(["--timeout", "60", "--fd", &w.arg(Role::Worker)])
        .spawn()
        .unwrap()
}

/// The C manager serving one worker per channel of `workers`, ROUNDS batches of BYTES each.
fn spawn_c_manager(dir: &Path, workers: &[&Wires]) -> Child {
    let mut cmd = c_program(dir, "sivshm_distribute_manager");
    cmd.args([
        "--rounds",
        &ROUNDS.to_string(),
        "--bytes",
        &BYTES.to_string(),
    ])
    .args(["--timeout", "60"]);
    for w in workers {
        cmd.args(["--fd", &w.arg(Role::Manager)]);
    }
    cmd.spawn().unwrap()
}

#[test]
fn the_c_api_test_passes_under_asan_and_ubsan_with_a_hostile_peer_and_a_removal() {
    let Some(dir) = programs() else { return };
    let child = c_program(&dir, "sivshm_capi_test").spawn().unwrap();
    let o = finish("sivshm_capi_test", child);
    assert!(
        has_result(&o.stdout, "capi-test", &["failed=0"]),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn c_manager_and_c_worker_verify_every_batch() {
    let Some(dir) = programs() else { return };
    let w = Wires::new();
    let worker = spawn_c_worker(&dir, &w);
    let manager = spawn_c_manager(&dir, &[&w]);
    let m = finish("c manager", manager);
    let wo = finish("c worker", worker);
    assert!(has_result(
        &m.stdout,
        "distribute-manager",
        &["impl=c", "verified=20", "batches=20", "failed=0"]
    ));
    assert!(has_result(
        &wo.stdout,
        "distribute-worker",
        &["impl=c", "rounds=20", "first_round=1", "mismatched=0"]
    ));
}

#[test]
fn a_c_worker_answers_a_rust_manager_in_sivshm_distribute_s_format() {
    let Some(dir) = programs() else { return };
    let w = Wires::new();
    let worker = spawn_c_worker(&dir, &w);
    let mut ch = w.channel(Role::Manager);
    let t = Some(Duration::from_secs(60));
    for round in 1..=ROUNDS {
        let data = batches::payload(0, round, BYTES);
        let sum = batches::fnv1a(&data);
        let mut r = ch.reserve(batches::BATCH_HEADER + BYTES, t).unwrap();
        r.write(0, &batches::batch_header(round, sum)).unwrap();
        r.write(batches::BATCH_HEADER, &data).unwrap();
        r.commit().unwrap();
        ch.flush().unwrap();
        let a = ch.recv(t).unwrap().to_vec().unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!((word(&a, 0), word(&a, 8)), (round, sum));
        ch.recv(t).unwrap().release().unwrap();
    }
    ch.send(&batches::done(ROUNDS), t).unwrap();
    let o = finish("c worker", worker);
    assert!(has_result(
        &o.stdout,
        "distribute-worker",
        &["impl=c", "rounds=20", "first_round=1", "mismatched=0"]
    ));
    drop(ch);
}

#[test]
fn a_rust_worker_answers_a_c_manager_in_sivshm_distribute_s_format() {
    let Some(dir) = programs() else { return };
    let w = Wires::new();
    let manager = spawn_c_manager(&dir, &[&w]);
    let mut ch = w.channel(Role::Worker);
    let t = Some(Duration::from_secs(60));
    let mut last = 0;
    loop {
        let msg = ch.recv(t).unwrap();
        let m = msg.to_vec().unwrap();
        match u32::from_le_bytes(m[..4].try_into().unwrap()) {
            1 => {
                let (round, sum) = (word(&m, 8), word(&m, 16));
                let data = &m[batches::BATCH_HEADER..];
                assert_eq!(data, batches::payload(0, round, BYTES), "the C payload");
                assert_eq!(batches::fnv1a(data), sum, "the C checksum");
                assert_eq!(round, last + 1);
                ch.send(&batches::ack(round, sum), t).unwrap();
                ch.recv(t).unwrap().release().unwrap();
                last = round;
            }
            2 => {
                assert_eq!((m.len(), word(&m, 8)), (16, ROUNDS));
                ch.recv(t).unwrap().release().unwrap();
                break;
            }
            k => panic!("kind {k}"),
        }
    }
    let o = finish("c manager", manager);
    assert!(has_result(
        &o.stdout,
        "distribute-manager",
        &["impl=c", "verified=20", "batches=20", "failed=0"]
    ));
}

#[test]
fn a_c_manager_serves_its_honest_worker_on_while_a_hostile_one_scribbles() {
    let Some(dir) = programs() else { return };
    let (honest, hostile) = (Wires::new(), Wires::new());
    let worker = spawn_c_worker(&dir, &honest);
    let manager = spawn_c_manager(&dir, &[&honest, &hostile]);
    // The hostile worker attaches, takes the first batch, then writes what no honest peer
    // writes: its ring's head far ahead, garbage over the rest, and rings the manager.
    let mut ch = hostile.channel(Role::Worker);
    let first = ch.recv(Some(Duration::from_secs(60))).unwrap().len();
    assert_eq!(first, batches::BATCH_HEADER + BYTES);
    let map = Mapping::new(hostile.shm.as_fd(), 0, LEN).unwrap();
    // Ring 1 (the worker's) head: 0x200 in layout version 2.
    map.write(0x200, &(1u64 << 40).to_le_bytes()).unwrap();
    map.write(0x1000, &vec![0x5a; LEN - 0x1000]).unwrap();
    rustix::io::write(&hostile.to_manager, &1u64.to_ne_bytes()).unwrap();
    let m = ended("c manager", manager);
    let out = String::from_utf8_lossy(&m.stdout);
    assert_eq!(
        m.status.code(),
        Some(1),
        "a failed worker fails the run: {out}"
    );
    assert!(
        has_result(
            &m.stdout,
            "distribute-manager-worker",
            &["index=1", "verified=0", "status=failed"]
        ),
        "{out}"
    );
    assert!(
        has_result(
            &m.stdout,
            "distribute-manager",
            &["verified=20", "batches=40", "failed=1"]
        ),
        "{out}"
    );
    let wo = finish("honest c worker", worker);
    assert!(has_result(
        &wo.stdout,
        "distribute-worker",
        &["impl=c", "rounds=20", "first_round=1", "mismatched=0"]
    ));
    drop(ch);
}

/// A message of sivshm-probe's wire (samples/probe/src/wire.rs): tag, no flags, `seq` in
/// the header and the trailer.
fn probe_message(tag: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size];
    m[..4].copy_from_slice(&tag.to_le_bytes());
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    m[size - 8..].copy_from_slice(&seq.to_le_bytes());
    m
}

#[test]
fn the_c_probe_streams_every_size_to_the_c_peer_and_reports_each() {
    let Some(dir) = programs() else { return };
    let w = Wires::new();
    let serve = c_program(&dir, "sivshm_capi_probe")
        .args(["serve", "--timeout", "60", "--fd", &w.arg(Role::Worker)])
        .spawn()
        .unwrap();
    let drive = c_program(&dir, "sivshm_capi_probe")
        .args([
            "throughput",
            "--sizes",
            "24,4096,65536",
            "--messages",
            "300",
        ])
        .args(["--flush-every", "7", "--timeout", "60"])
        .args(["--fd", &w.arg(Role::Manager)])
        .spawn()
        .unwrap();
    let d = finish("c probe throughput", drive);
    finish("c probe serve", serve);
    let out = String::from_utf8_lossy(&d.stdout);
    for size in [24, 4096, 65536] {
        assert!(
            out.contains(&format!(
                "SIVSHM-RESULT probe kind=throughput transport=sivshm-c size={size} messages=300 \
                 seconds="
            )),
            "{out}"
        );
    }
    // One line for people and one result line per size.
    assert_eq!(out.lines().count(), 6, "{out}");
}

#[test]
fn the_c_probe_peer_refuses_a_lost_message_instead_of_counting_it() {
    let Some(dir) = programs() else { return };
    let w = Wires::new();
    let serve = c_program(&dir, "sivshm_capi_probe")
        .args(["serve", "--timeout", "60", "--fd", &w.arg(Role::Worker)])
        .spawn()
        .unwrap();
    let mut ch = w.channel(Role::Manager);
    let t = Some(Duration::from_secs(60));
    ch.wait_for_peer(Duration::from_secs(60)).unwrap();
    ch.send(&probe_message(3, 0, 24), t).unwrap();
    let report = ch.recv(t).unwrap().to_vec().unwrap();
    assert_eq!((report.len(), word(&report, 0) as u32), (40, 5));
    ch.send(&probe_message(2, 0, 4096), t).unwrap();
    ch.send(&probe_message(2, 2, 4096), t).unwrap();
    let o = ended("c probe serve", serve);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("data message 2 (trailer 2) where 1 was due"),
        "{err}"
    );
    drop(ch);
}
