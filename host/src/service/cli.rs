//! The subcommands over a topology file: what each prints, given the file's path.

use std::path::Path;

use anyhow::Result;

use super::config;
use super::topology_file::TopologyFile;
use crate::cli::LibvirtPart;

/// `sivshm-host qemu-args FILE VM`.
pub fn qemu_args(path: &Path, vm: &str) -> Result<Vec<String>> {
    config::qemu_args(&TopologyFile::load(path)?, vm)
}

/// `sivshm-host libvirt-xml FILE VM [--part devices|domain]`.
pub fn libvirt_xml(path: &Path, vm: &str, part: Option<LibvirtPart>) -> Result<Vec<String>> {
    let t = TopologyFile::load(path)?;
    match part {
        None => config::libvirt_xml(&t, vm),
        Some(LibvirtPart::Devices) => config::libvirt_devices(&t, vm),
        Some(LibvirtPart::Domain) => config::libvirt_domain(&t, vm),
    }
}

/// `sivshm-host check-topology FILE`: checks the file and prints every VM's devices.
pub fn check(path: &Path) -> Result<Vec<String>> {
    let t = TopologyFile::load(path)?;
    let mut out = vec![format!(
        "topology {}: a manager and {} worker(s), sockets in {}",
        t.name,
        t.workers.len(),
        t.runtime_dir.display()
    )];
    for vm in t.vm_names() {
        for d in t.devices_of(vm) {
            out.push(format!(
                "{vm}: {} peer id {} <-> {} (peer id {}), {} MiB of {} pages, {} vector(s), \
                 socket {}",
                d.bdf(),
                d.own_id,
                d.peer,
                d.peer_id,
                d.segment_size >> 20,
                t.workers[d.worker].page_size,
                d.vectors,
                d.socket.display()
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lists_every_device_of_every_vm() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(
            &p,
            "name = \"t\"\n[manager]\nname = \"m\"\n[[worker]]\nname = \"w\"\nsegment_mib = 2\n\
             [[worker]]\nname = \"h\"\nsegment_mib = 2\nhugepages = \"2M\"\n",
        )
        .unwrap();
        assert_eq!(
            check(&p).unwrap(),
            [
                "topology t: a manager and 2 worker(s), sockets in /run/sivshm/t",
                "m: 0000:00:04.0 peer id 0 <-> w (peer id 1), 2 MiB of 4K pages, 1 vector(s), socket \
                 /run/sivshm/t/m.w.sock",
                "m: 0000:00:05.0 peer id 0 <-> h (peer id 2), 2 MiB of 2M pages, 1 vector(s), socket \
                 /run/sivshm/t/m.h.sock",
                "w: 0000:00:04.0 peer id 1 <-> m (peer id 0), 2 MiB of 4K pages, 1 vector(s), socket \
                 /run/sivshm/t/w.m.sock",
                "h: 0000:00:04.0 peer id 2 <-> m (peer id 0), 2 MiB of 2M pages, 1 vector(s), socket \
                 /run/sivshm/t/h.m.sock",
            ]
        );
    }
}
