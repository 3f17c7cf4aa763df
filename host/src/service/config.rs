//! What to give the user's VMs so that they connect to `serve`: QEMU arguments
//! (`sivshm-host qemu-args`) or libvirt elements (`sivshm-host libvirt-xml`), with the PCI
//! addresses the topology fixes (`devices`). Every VM also gets the harness's PCI bridges
//! (`qemu::bridge_device`): those its devices sit behind (a manager of more than 24 workers),
//! and bridge 0 in any case, whose reserved 64-bit window makes the firmware place every
//! shared memory BAR above 4 GiB, write-back (Documentation/memory-type.rst).

use anyhow::{bail, Result};

use super::devices::DeviceSpec;
use super::topology_file::TopologyFile;
use crate::pci::{
    bridge_bus, bridge_chassis, bridge_device, bridge_slot, bridges_for_write_back,
    BRIDGE_PREF64_RESERVE,
};

/// The devices of `vm`, or an error naming the VMs there are.
fn devices_of(t: &TopologyFile, vm: &str) -> Result<Vec<DeviceSpec>> {
    let d = t.devices_of(vm);
    if d.is_empty() {
        bail!(
            "topology {} has no VM {vm:?} (its VMs: {})",
            t.name,
            t.vm_names().join(", ")
        );
    }
    Ok(d)
}

/// A value in QEMU's option syntax: a comma is written twice.
fn qemu_value(s: &str) -> String {
    s.replace(',', ",,")
}

/// A word for a POSIX shell: as it is when it has nothing special, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The PCI bridges `vm` gets: bridge 0 up to the last one its devices sit behind, at least
/// bridge 0 (`qemu::bridges_for_write_back`).
fn bridges(devices: &[DeviceSpec]) -> std::ops::Range<u8> {
    0..bridges_for_write_back(devices.iter().map(|d| d.slot))
}

/// Arguments for `vm`, one line per device, shell-quoted: first a `-device pci-bridge` per
/// bridge (QEMU needs a bus before the devices on it; bridge 0 always, with its
/// `pref64-reserve` that puts the shared memory above 4 GiB), then
/// `-chardev`/`-device` per device, and for the manager of a file that names its `qmp`
/// socket, the `-qmp` that `sivshm-host hotplug` drives. The bridges' ids begin `sivshm-bridge.`, which no
/// device of the user should use; the VM must have no other PCI bridge on bus 0 at a slot
/// below 0x1c, or the guest numbers the buses differently (`DeviceSpec::bdf`).
pub fn qemu_args(t: &TopologyFile, vm: &str) -> Result<Vec<String>> {
    let devices = devices_of(t, vm)?;
    let mut out: Vec<String> = bridges(&devices)
        .map(|k| format!("-device {}", shell_word(&bridge_device(k))))
        .collect();
    out.extend(devices.iter().map(|d| {
        let id = format!("sivshm-{}", d.peer);
        let chardev = format!(
            "socket,id={id},path={}",
            qemu_value(&d.socket.to_string_lossy())
        );
        let device = format!(
            "ivshmem-doorbell,id={id},chardev={id},vectors={},{}",
            d.vectors,
            d.slot.qemu_props()
        );
        format!(
            "-chardev {} -device {}",
            shell_word(&chardev),
            shell_word(&device)
        )
    }));
    if let (true, Some(qmp)) = (vm == t.manager, &t.manager_qmp) {
        let arg = format!(
            "unix:{},server=on,wait=off",
            qemu_value(&qmp.to_string_lossy())
        );
        out.push(format!("-qmp {}", shell_word(&arg)));
    }
    Ok(out)
}

/// Text for an XML attribute or element.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A libvirt `<address>` of slot `slot` of guest bus `bus`.
fn pci_address(bus: u8, slot: u8) -> String {
    format!(
        "<address type='pci' domain='0x0000' bus='{bus:#04x}' slot='{slot:#04x}' \
         function='0x0'/>"
    )
}

/// libvirt's namespace of `<qemu:override>`, declared on `<domain>` as `xmlns:qemu`.
pub const LIBVIRT_QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// The comment line that starts the part of [`libvirt_xml`] for `<devices>`.
pub const LIBVIRT_DEVICES_PART: &str = "<!-- sivshm: the part for the domain's <devices> -->";

/// The comment line that starts the part of [`libvirt_xml`] for `<domain>` itself.
pub fn libvirt_override_part() -> String {
    format!(
        "<!-- sivshm: the part for <domain> itself, after </devices>; <domain> needs \
         xmlns:qemu='{LIBVIRT_QEMU_NS}'. It reserves the bridges' 64-bit window, which puts \
         the shared memory above 4 GiB, write-back (sivshm's Documentation/memory-type.rst) -->"
    )
}

/// libvirt's alias of the PCI controller with index `index` (its QEMU id): `pci.INDEX`.
fn controller_alias(index: u8) -> String {
    format!("pci.{index}")
}

/// Elements for `vm`'s libvirt domain, in two parts, each after its comment line. For
/// `<devices>` ([`LIBVIRT_DEVICES_PART`]): a `pci-bridge` `<controller>` per bridge (bridge 0
/// always, and those its devices sit behind), then a `<shmem>` per device. libvirt names a
/// bus in `<address bus=...>` by its controller's `index`; bridge *k* gets index *k + 1*, the
/// number the guest gives its bus. So the domain must not already have pci controllers with
/// those indices, nor another PCI bridge on bus 0 at a slot below 0x1c (`DeviceSpec::bdf`).
/// For `<domain>` itself ([`libvirt_override_part`]): a `<qemu:override>` that sets each
/// bridge's `pref64-reserve`, which libvirt 9.0's `<controller>` cannot express; libvirt
/// knows the bridge by its alias `pci.INDEX`.
pub fn libvirt_xml(t: &TopologyFile, vm: &str) -> Result<Vec<String>> {
    let mut out = vec![LIBVIRT_DEVICES_PART.to_string()];
    out.extend(libvirt_devices(t, vm)?);
    out.push(libvirt_override_part());
    out.extend(libvirt_domain(t, vm)?);
    Ok(out)
}

/// The part of [`libvirt_xml`] for `<domain>` itself, without its comment line.
pub fn libvirt_domain(t: &TopologyFile, vm: &str) -> Result<Vec<String>> {
    let devices = devices_of(t, vm)?;
    let mut out = vec!["<qemu:override>".to_string()];
    for k in bridges(&devices) {
        out.extend([
            format!(
                "  <qemu:device alias='{}'>",
                controller_alias(bridge_bus(k))
            ),
            "    <qemu:frontend>".into(),
            format!(
                "      <qemu:property name='pref64-reserve' type='unsigned' \
                 value='{BRIDGE_PREF64_RESERVE}'/>"
            ),
            "    </qemu:frontend>".into(),
            "  </qemu:device>".into(),
        ]);
    }
    out.push("</qemu:override>".into());
    Ok(out)
}

/// The part of [`libvirt_xml`] for the domain's `<devices>`, without its comment line.
pub fn libvirt_devices(t: &TopologyFile, vm: &str) -> Result<Vec<String>> {
    let devices = devices_of(t, vm)?;
    let mut out = Vec::new();
    for k in bridges(&devices) {
        out.extend([
            format!(
                "<controller type='pci' index='{}' model='pci-bridge'>",
                bridge_bus(k)
            ),
            "  <model name='pci-bridge'/>".into(),
            format!("  <target chassisNr='{}'/>", bridge_chassis(k)),
            format!("  {}", pci_address(0, bridge_slot(k).slot)),
            "</controller>".into(),
        ]);
    }
    for d in &devices {
        out.extend([
            format!(
                "<shmem name='{}'>",
                xml_escape(&format!("sivshm-{}-{}-{}", t.name, d.vm, d.peer))
            ),
            // No <size>: libvirt (9.0) refuses one for ivshmem-doorbell ("does not support
            // size setting"), whose memory is the fd the server sends; its schema allows it,
            // so only starting a domain shows it (scripts/check-libvirt.sh).
            "  <model type='ivshmem-doorbell'/>".into(),
            format!(
                "  <server path='{}'/>",
                xml_escape(&d.socket.to_string_lossy())
            ),
            format!("  <msi vectors='{}' ioeventfd='on'/>", d.vectors),
            format!("  {}", pci_address(d.slot.bus(), d.slot.slot)),
            "</shmem>".into(),
        ]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(dir: &str) -> TopologyFile {
        TopologyFile::parse(&format!(
            "name = \"lab\"\nruntime_dir = \"{dir}\"\n[manager]\nname = \"m\"\n\
             [[worker]]\nname = \"w0\"\nsegment_mib = 4\nvectors = 2\n\
             [[worker]]\nname = \"w1\"\nsegment_mib = 16\n"
        ))
        .unwrap()
    }

    #[test]
    fn qemu_args_put_the_manager_device_of_worker_i_at_slot_4_plus_i() {
        let t = topo("/run/sivshm/lab");
        assert_eq!(
            qemu_args(&t, "m").unwrap(),
            [
                "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,pref64-reserve=12G",
                "-chardev socket,id=sivshm-w0,path=/run/sivshm/lab/m.w0.sock -device \
                 ivshmem-doorbell,id=sivshm-w0,chardev=sivshm-w0,vectors=2,addr=0x4.0",
                "-chardev socket,id=sivshm-w1,path=/run/sivshm/lab/m.w1.sock -device \
                 ivshmem-doorbell,id=sivshm-w1,chardev=sivshm-w1,vectors=1,addr=0x5.0",
            ]
        );
        assert_eq!(
            qemu_args(&t, "w1").unwrap(),
            [
                "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,pref64-reserve=12G",
                "-chardev socket,id=sivshm-m,path=/run/sivshm/lab/w1.m.sock -device \
                 ivshmem-doorbell,id=sivshm-m,chardev=sivshm-m,vectors=1,addr=0x4.0",
            ]
        );
        let mut q = t.clone();
        q.manager_qmp = Some("/run/sivshm/lab/m.qmp".into());
        let a = qemu_args(&q, "m").unwrap();
        assert_eq!(
            a.last().unwrap(),
            "-qmp unix:/run/sivshm/lab/m.qmp,server=on,wait=off"
        );
        assert_eq!(qemu_args(&q, "w1").unwrap(), qemu_args(&t, "w1").unwrap());
        let e = qemu_args(&t, "w2").unwrap_err().to_string();
        assert_eq!(e, "topology lab has no VM \"w2\" (its VMs: m, w0, w1)");
    }

    #[test]
    fn odd_paths_are_quoted_for_qemu_and_the_shell() {
        let t = topo("/srv/my vms,it's");
        let a = &qemu_args(&t, "w0").unwrap()[1];
        assert_eq!(
            a,
            "-chardev 'socket,id=sivshm-m,path=/srv/my vms,,it'\\''s/w0.m.sock' -device \
             ivshmem-doorbell,id=sivshm-m,chardev=sivshm-m,vectors=2,addr=0x4.0"
        );
        let x = libvirt_xml(&t, "w0").unwrap().join("\n");
        assert!(
            x.contains("<server path='/srv/my vms,it&apos;s/w0.m.sock'/>"),
            "{x}"
        );
    }

    #[test]
    fn libvirt_xml_is_its_two_parts_each_after_its_comment() {
        let t = topo("/run/sivshm/lab");
        let devices = libvirt_devices(&t, "m").unwrap();
        let domain = libvirt_domain(&t, "m").unwrap();
        let mut whole = vec![LIBVIRT_DEVICES_PART.to_string()];
        whole.extend(devices.iter().cloned());
        whole.push(libvirt_override_part());
        whole.extend(domain.iter().cloned());
        assert_eq!(libvirt_xml(&t, "m").unwrap(), whole);
        assert!(!devices.iter().chain(&domain).any(|l| l.starts_with("<!--")));
        assert_eq!(domain[0], "<qemu:override>");
    }

    #[test]
    fn libvirt_xml_has_model_server_msi_and_address_and_no_size() {
        let t = topo("/run/sivshm/lab");
        let x = libvirt_xml(&t, "m").unwrap();
        // The devices' part: bridge 0's controller (5 lines), then the <shmem>s.
        assert_eq!(x[0], LIBVIRT_DEVICES_PART);
        assert_eq!(x[1], "<controller type='pci' index='1' model='pci-bridge'>");
        assert_eq!(
            x[12..18],
            [
                "<shmem name='sivshm-lab-m-w1'>",
                "  <model type='ivshmem-doorbell'/>",
                "  <server path='/run/sivshm/lab/m.w1.sock'/>",
                "  <msi vectors='1' ioeventfd='on'/>",
                "  <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>",
                "</shmem>",
            ]
        );
        // The domain's part: bridge 0's 64-bit window, through libvirt's alias of index 1.
        assert!(x.iter().all(|l| !l.contains("<size")), "{x:?}");
        assert_eq!(x[18], libvirt_override_part());
        assert_eq!(
            x[19..],
            [
                "<qemu:override>",
                "  <qemu:device alias='pci.1'>",
                "    <qemu:frontend>",
                "      <qemu:property name='pref64-reserve' type='unsigned' \
                 value='12884901888'/>",
                "    </qemu:frontend>",
                "  </qemu:device>",
                "</qemu:override>",
            ]
        );
        assert!(libvirt_xml(&t, "x").is_err());
    }

    fn big(workers: usize) -> TopologyFile {
        TopologyFile::parse(&crate::service::topology_file::file_with_workers(
            workers, "/r",
        ))
        .unwrap()
    }

    #[test]
    fn qemu_args_of_a_manager_past_24_workers_add_its_bridge_first() {
        let a = qemu_args(&big(30), "m").unwrap();
        assert_eq!(a.len(), 1 + 30);
        assert_eq!(
            a[0],
            "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,pref64-reserve=12G"
        );
        assert_eq!(a.iter().filter(|l| l.contains("pci-bridge")).count(), 1);
        assert!(a[24].ends_with("vectors=1,addr=0x1b.0"), "{}", a[24]);
        assert_eq!(
            a[25],
            "-chardev socket,id=sivshm-w24,path=/r/m.w24.sock -device \
             ivshmem-doorbell,id=sivshm-w24,chardev=sivshm-w24,vectors=1,\
             bus=sivshm-bridge.0,addr=0x1.0"
        );
        assert!(
            a[30].ends_with("bus=sivshm-bridge.0,addr=0x6.0"),
            "{}",
            a[30]
        );
        // 128 workers: four bridges.
        let a = qemu_args(&big(128), "m").unwrap();
        assert_eq!(a.iter().filter(|l| l.contains("pci-bridge")).count(), 4);
        assert!(a[3].ends_with("id=sivshm-bridge.3,chassis_nr=4,addr=0x1f.0,pref64-reserve=12G"));
        assert!(a[4 + 127].ends_with("bus=sivshm-bridge.3,addr=0xb.0"));
        // The most workers, 148: four bridges, each with the 64-bit window.
        let a = qemu_args(&big(148), "m").unwrap();
        assert_eq!(a.len(), 4 + 148);
        assert_eq!(
            a.iter()
                .filter(|l| l.contains("pref64-reserve=12G"))
                .count(),
            4
        );
        assert!(a[4 + 147].ends_with("bus=sivshm-bridge.3,addr=0x1f.0"));
        // A worker has one device on bus 0 and bridge 0, for its window alone.
        assert_eq!(
            qemu_args(&big(30), "w29").unwrap(),
            [
                "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,pref64-reserve=12G",
                "-chardev socket,id=sivshm-m,path=/r/w29.m.sock -device \
                 ivshmem-doorbell,id=sivshm-m,chardev=sivshm-m,vectors=1,addr=0x4.0",
            ]
        );
        // 24 workers fit on bus 0: bridge 0 all the same, and only it.
        let a = qemu_args(&big(24), "m").unwrap();
        assert_eq!(a.iter().filter(|l| l.contains("pci-bridge")).count(), 1);
        assert!(a[0].contains("id=sivshm-bridge.0,"));
    }

    #[test]
    fn libvirt_xml_of_a_manager_past_24_workers_adds_its_bridge_controller_first() {
        let x = libvirt_xml(&big(30), "m").unwrap();
        assert_eq!(x[0], LIBVIRT_DEVICES_PART);
        let x = &x[1..];
        assert_eq!(
            x[..5],
            [
                "<controller type='pci' index='1' model='pci-bridge'>",
                "  <model name='pci-bridge'/>",
                "  <target chassisNr='1'/>",
                "  <address type='pci' domain='0x0000' bus='0x00' slot='0x1c' function='0x0'/>",
                "</controller>",
            ]
        );
        assert_eq!(x.iter().filter(|l| l.starts_with("<controller")).count(), 1);
        // Six lines per <shmem>: worker 24's is the 25th after the controller.
        let w24 = &x[5 + 6 * 24..5 + 6 * 25];
        assert_eq!(w24[0], "<shmem name='sivshm-big-m-w24'>");
        assert_eq!(
            w24[4],
            "  <address type='pci' domain='0x0000' bus='0x01' slot='0x01' function='0x0'/>"
        );
        assert!(x[5 + 6 * 23 + 4].contains("bus='0x00' slot='0x1b'"));
        let x = libvirt_xml(&big(128), "m").unwrap();
        assert!(x.contains(&"<controller type='pci' index='4' model='pci-bridge'>".to_string()));
        // Each of the four bridges gets its window, by libvirt's alias of its controller.
        for alias in ["pci.1", "pci.2", "pci.3", "pci.4"] {
            assert!(
                x.contains(&format!("  <qemu:device alias='{alias}'>")),
                "{alias}: {x:?}"
            );
        }
        assert_eq!(
            x.iter()
                .filter(|l| l.contains("name='pref64-reserve' type='unsigned' value='12884901888'"))
                .count(),
            4
        );
        assert!(x.contains(
            &"  <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x0'/>"
                .to_string()
        ));
        assert!(x.contains(
            &"  <address type='pci' domain='0x0000' bus='0x04' slot='0x0b' function='0x0'/>"
                .to_string()
        ));
        // A worker: bridge 0's controller and window, its device on bus 0.
        let w = libvirt_xml(&big(30), "w29").unwrap();
        assert_eq!(w.len(), 1 + 5 + 6 + 1 + 7);
        assert_eq!(w.iter().filter(|l| l.starts_with("<controller")).count(), 1);
        assert!(w[10].contains("bus='0x00' slot='0x04'"), "{w:?}");
        assert!(w.contains(&"  <qemu:device alias='pci.1'>".to_string()));
    }
}
