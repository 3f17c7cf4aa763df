//! `sivshm-host qemu-args` and `libvirt-xml` as a user runs them: the XML validated by
//! libvirt's own schema tool, the arguments given to a real QEMU that connects to `serve`.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Serve;

/// `sivshm-host ARGS...`: stdout, or a panic with stderr.
fn host(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sivshm-host {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A minimal domain around `shmem` elements.
fn domain(name: &str, shmem: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  \
         <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n  <devices>\n\
         {shmem}  </devices>\n</domain>\n"
    )
}

/// `virt-xml-validate FILE domain`: (success, output).
fn validate(dir: &Path, xml: &str) -> (bool, String) {
    let file = dir.join("domain.xml");
    fs::write(&file, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&file)
        .arg("domain")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "virt-xml-validate cannot run ({e}): install Debian's libvirt-clients and \
                 libxml2-utils (scripts/setup.sh does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn libvirt_xml_validates_against_libvirts_schema() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it.toml");
    fs::write(&file, common::topology(dir.path())).unwrap();
    let f = file.to_str().unwrap();
    for (vm, devices) in [("mgr", 2), ("w0", 1), ("w1", 1)] {
        let xml = host(&["libvirt-xml", f, vm]);
        assert_eq!(xml.matches("<shmem ").count(), devices, "{xml}");
        let (ok, out) = validate(dir.path(), &domain(vm, &xml));
        assert!(ok, "libvirt rejects the XML of {vm}:\n{out}\n{xml}");
    }
    // The validator does check: a model libvirt does not know fails.
    let bad = host(&["libvirt-xml", f, "w0"]).replace("ivshmem-doorbell", "ivshmem-bell");
    let (ok, out) = validate(dir.path(), &domain("w0", &bad));
    assert!(!ok, "virt-xml-validate accepted an unknown model:\n{out}");
}

#[test]
fn an_unknown_vm_is_an_error_naming_the_vms() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it.toml");
    fs::write(&file, common::topology(dir.path())).unwrap();
    for cmd in ["qemu-args", "libvirt-xml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sivshm-host"))
            .args([cmd, file.to_str().unwrap(), "w9"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("topology it has no VM \"w9\" (its VMs: mgr, w0, w1)"),
            "{err}"
        );
    }
}

/// QEMU started paused (`-S`: no guest code runs) with `qemu-args`' output, against serve:
/// QEMU reads each device's setup while realising it, so a device that QEMU lists on its
/// PCI bus at the given slot has taken its whole stream.
fn qemu_lists(serve: &Serve, vm: &str, slots: &[u8]) {
    let file = serve.dir.join("it.toml");
    let args = host(&["qemu-args", file.to_str().unwrap(), vm]);
    assert!(
        !args.contains('\''),
        "the test's paths need no quoting: {args}"
    );
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-monitor",
            "stdio",
        ])
        .args(args.split_whitespace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"info pci\nquit\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("QEMU did not quit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "QEMU failed for {vm}:\n{text}");
    for slot in slots {
        let at = text
            .find(&format!("Bus  0, device {slot:3}, function 0:"))
            .unwrap_or_else(|| panic!("no device at slot {slot} of {vm}:\n{text}"));
        assert!(
            text[at..].lines().nth(1).unwrap().contains("1af4:1110"),
            "slot {slot} of {vm} is not an ivshmem device:\n{text}"
        );
    }
    assert_eq!(text.matches("1af4:1110").count(), slots.len(), "{text}");
}

#[test]
fn qemu_takes_the_args_and_its_setup_from_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path());
    qemu_lists(&serve, "mgr", &[4, 5]);
    qemu_lists(&serve, "w1", &[4]);
    serve.wait_for_log("w1.mgr: pid");
    let log = serve.log();
    for dev in ["mgr.w0", "mgr.w1", "w1.mgr"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("serve: {dev}: pid"))
                    && l.contains("connected: sent its setup")),
            "{dev}:\n{log}"
        );
    }
    serve.check_alive();
}
