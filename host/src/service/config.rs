//! What to give the user's VMs so that they connect to `serve`: QEMU arguments
//! (`sivshm-host qemu-args`) or libvirt `<shmem>` elements (`sivshm-host libvirt-xml`), with
//! the PCI addresses the topology fixes (`devices`).

use anyhow::{bail, Result};

use super::devices::DeviceSpec;
use super::topology_file::TopologyFile;

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

/// `-chardev`/`-device` arguments for `vm`, one device per line, shell-quoted.
pub fn qemu_args(t: &TopologyFile, vm: &str) -> Result<Vec<String>> {
    Ok(devices_of(t, vm)?
        .iter()
        .map(|d| {
            let id = format!("sivshm-{}", d.peer);
            let chardev = format!(
                "socket,id={id},path={}",
                qemu_value(&d.socket.to_string_lossy())
            );
            let device = format!(
                "ivshmem-doorbell,id={id},chardev={id},vectors={},addr={:#x}.0",
                d.vectors, d.slot
            );
            format!(
                "-chardev {} -device {}",
                shell_word(&chardev),
                shell_word(&device)
            )
        })
        .collect())
}

/// Text for an XML attribute or element.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// `<shmem>` elements for `vm`'s libvirt domain (inside `<devices>`).
pub fn libvirt_xml(t: &TopologyFile, vm: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in devices_of(t, vm)? {
        out.extend([
            format!(
                "<shmem name='{}'>",
                xml_escape(&format!("sivshm-{}-{}-{}", t.name, d.vm, d.peer))
            ),
            "  <model type='ivshmem-doorbell'/>".into(),
            format!("  <size unit='M'>{}</size>", d.segment_size >> 20),
            format!(
                "  <server path='{}'/>",
                xml_escape(&d.socket.to_string_lossy())
            ),
            format!("  <msi vectors='{}' ioeventfd='on'/>", d.vectors),
            format!(
                "  <address type='pci' domain='0x0000' bus='0x00' slot='{:#04x}' \
                 function='0x0'/>",
                d.slot
            ),
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
                "-chardev socket,id=sivshm-w0,path=/run/sivshm/lab/m.w0.sock -device \
                 ivshmem-doorbell,id=sivshm-w0,chardev=sivshm-w0,vectors=2,addr=0x4.0",
                "-chardev socket,id=sivshm-w1,path=/run/sivshm/lab/m.w1.sock -device \
                 ivshmem-doorbell,id=sivshm-w1,chardev=sivshm-w1,vectors=1,addr=0x5.0",
            ]
        );
        assert_eq!(
            qemu_args(&t, "w1").unwrap(),
            [
                "-chardev socket,id=sivshm-m,path=/run/sivshm/lab/w1.m.sock -device \
              ivshmem-doorbell,id=sivshm-m,chardev=sivshm-m,vectors=1,addr=0x4.0"
            ]
        );
        let e = qemu_args(&t, "w2").unwrap_err().to_string();
        assert_eq!(e, "topology lab has no VM \"w2\" (its VMs: m, w0, w1)");
    }

    #[test]
    fn odd_paths_are_quoted_for_qemu_and_the_shell() {
        let t = topo("/srv/my vms,it's");
        let a = &qemu_args(&t, "w0").unwrap()[0];
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
    fn libvirt_xml_has_model_size_server_msi_and_address() {
        let t = topo("/run/sivshm/lab");
        assert_eq!(
            libvirt_xml(&t, "m").unwrap()[7..],
            [
                "<shmem name='sivshm-lab-m-w1'>",
                "  <model type='ivshmem-doorbell'/>",
                "  <size unit='M'>16</size>",
                "  <server path='/run/sivshm/lab/m.w1.sock'/>",
                "  <msi vectors='1' ioeventfd='on'/>",
                "  <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>",
                "</shmem>",
            ]
        );
        assert!(libvirt_xml(&t, "x").is_err());
    }
}
