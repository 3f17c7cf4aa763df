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

/// A minimal domain around `libvirt-xml`'s output: its part for `<devices>` there, its part
/// for `<domain>` (the `<qemu:override>`) after `</devices>`, as the comments in it say.
fn domain(name: &str, xml: &str) -> String {
    let devices_at = xml
        .find("<!-- sivshm: the part for the domain's <devices> -->")
        .unwrap_or_else(|| panic!("no devices' part in:\n{xml}"));
    let domain_at = xml
        .find("<!-- sivshm: the part for <domain> itself")
        .unwrap_or_else(|| panic!("no domain's part in:\n{xml}"));
    assert!(devices_at < domain_at, "{xml}");
    let (devices, own) = (&xml[devices_at..domain_at], &xml[domain_at..]);
    assert!(
        own.contains("xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"),
        "{own}"
    );
    format!(
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n  \
         <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  \
         <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n  <devices>\n\
         {devices}  </devices>\n{own}</domain>\n"
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
        // Bridge 0 and its 64-bit window, for every VM.
        assert_eq!(xml.matches("<controller ").count(), 1, "{xml}");
        assert_eq!(xml.matches("name='pref64-reserve'").count(), 1, "{xml}");
        let (ok, out) = validate(dir.path(), &domain(vm, &xml));
        assert!(ok, "libvirt rejects the XML of {vm}:\n{out}\n{xml}");
    }
    // A manager of 40 workers: 24 devices on bus 0, 16 behind a pci-bridge controller.
    let big = dir.path().join("big.toml");
    fs::write(&big, common::topology_of(dir.path(), 40)).unwrap();
    let xml = host(&["libvirt-xml", big.to_str().unwrap(), "mgr"]);
    assert_eq!(xml.matches("<shmem ").count(), 40, "{xml}");
    assert_eq!(xml.matches("<controller ").count(), 1, "{xml}");
    assert_eq!(xml.matches("bus='0x01'").count(), 16, "{xml}");
    let (ok, out) = validate(dir.path(), &domain("mgr", &xml));
    assert!(
        ok,
        "libvirt rejects the XML of a manager of 40:\n{out}\n{xml}"
    );
    // The validator does check: a model libvirt does not know fails, and so does an
    // override property without its type.
    let bad = host(&["libvirt-xml", f, "w0"]).replace(" type='unsigned'", "");
    let (ok, out) = validate(dir.path(), &domain("w0", &bad));
    assert!(
        !ok,
        "virt-xml-validate accepted a property without a type:\n{out}"
    );
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

/// QEMU started paused (`-S`: no guest code runs) with `qemu-args`' output for `vm`, against
/// serve: what its monitor answers to `command`. QEMU reads each device's setup while
/// realising it, so every device QEMU shows has taken its whole stream.
fn qemu_monitor(serve: &Serve, vm: &str, command: &str) -> String {
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
        .write_all(format!("{command}\nquit\n").as_bytes())
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
    text
}

/// `info pci` of `vm`: an ivshmem device (1af4:1110) at each of `slots` of bus 0 and none
/// elsewhere.
fn qemu_lists(serve: &Serve, vm: &str, slots: &[u8]) {
    let text = qemu_monitor(serve, vm, "info pci");
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

/// A device in `info qtree`.
#[derive(Debug, PartialEq)]
struct TreeDevice {
    kind: String,
    id: String,
    /// The bus it sits on: `pci.0`, or the bridge's id.
    bus: String,
    /// `SLOT.FUNCTION`, in hex.
    addr: String,
}

/// The devices of `info qtree`: a device line (`dev: KIND, id "ID"`) is followed by its
/// properties, indented one step more (`addr = 1c.0`), then by its buses (`bus: NAME`) with
/// their devices indented further.
fn qtree_devices(tree: &str) -> Vec<TreeDevice> {
    let mut buses: Vec<(usize, String)> = Vec::new();
    let mut devices: Vec<(usize, TreeDevice)> = Vec::new();
    for line in tree.lines() {
        let text = line.trim_start();
        let indent = line.len() - text.len();
        if let Some(name) = text.strip_prefix("bus: ") {
            buses.retain(|(i, _)| *i < indent);
            buses.push((indent, name.to_string()));
        } else if let Some(dev) = text.strip_prefix("dev: ") {
            buses.retain(|(i, _)| *i < indent);
            let (kind, id) = dev.split_once(", id ").unwrap_or((dev, ""));
            devices.push((
                indent,
                TreeDevice {
                    kind: kind.to_string(),
                    id: id.trim_matches('"').to_string(),
                    bus: buses.last().map(|(_, b)| b.clone()).unwrap_or_default(),
                    addr: String::new(),
                },
            ));
        } else if let Some(addr) = text.strip_prefix("addr = ") {
            if let Some((at, d)) = devices.last_mut() {
                if *at + 2 == indent {
                    d.addr = addr.to_string();
                }
            }
        }
    }
    devices.into_iter().map(|(_, d)| d).collect()
}

#[test]
fn qemu_takes_the_args_and_its_setup_from_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path());
    qemu_lists(&serve, "mgr", &[4, 5]);
    qemu_lists(&serve, "w1", &[4]);
    for dev in ["mgr.w0", "mgr.w1", "w1.mgr"] {
        serve.wait_for_setups(dev, 1);
    }
    serve.check_alive();
}

/// Past 24 workers the manager's devices sit behind the bridge that `qemu-args` gives it.
/// Before the firmware numbers the buses, `info pci` lists nothing behind a bridge, so
/// QEMU's device tree is read instead.
#[test]
fn qemu_takes_the_bridge_and_the_devices_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start_with(dir.path(), &common::topology_of(dir.path(), 26));
    let tree = qemu_monitor(&serve, "mgr", "info qtree");
    let devices = qtree_devices(&tree);
    let bridge = TreeDevice {
        kind: "pci-bridge".into(),
        id: "sivshm-bridge.0".into(),
        bus: "pci.0".into(),
        addr: "1c.0".into(),
    };
    assert!(devices.contains(&bridge), "{tree}");
    assert_eq!(
        devices.iter().filter(|d| d.kind == "pci-bridge").count(),
        1,
        "{tree}"
    );
    let ivshmem: Vec<&TreeDevice> = devices
        .iter()
        .filter(|d| d.kind == "ivshmem-doorbell")
        .collect();
    assert_eq!(ivshmem.len(), 26, "{tree}");
    for i in 0..26 {
        let (bus, slot) = if i < 24 {
            ("pci.0", 4 + i)
        } else {
            ("sivshm-bridge.0", i - 23)
        };
        let want = TreeDevice {
            kind: "ivshmem-doorbell".into(),
            id: format!("sivshm-w{i}"),
            bus: bus.into(),
            addr: format!("{slot:02x}.0"),
        };
        assert!(ivshmem.contains(&&want), "no {want:?} in:\n{tree}");
    }
    for i in 0..26 {
        serve.wait_for_setups(&format!("mgr.w{i}"), 1);
    }
    serve.check_alive();
}
