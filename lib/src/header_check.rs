//! Checks the Rust mirror (`driver/uapi.rs`, used by the driver and this crate) against the C
//! header, the single source of truth: a C program built from the header prints every
//! constant, size and offset, and each must equal the Rust value.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use crate::uapi::{self, Eventfd, Info, Ring};

const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/sivshm.h>
#define V(x) printf(#x " %llu\n", (unsigned long long)(x))
#define O(f) printf("offsetof_" #f " %zu\n", offsetof(struct sivshm_info, f))
#define OR(f) printf("ring_" #f " %zu\n", offsetof(struct sivshm_ring, f))
#define OE(f) printf("eventfd_" #f " %zu\n", offsetof(struct sivshm_eventfd, f))
int main(void)
{
	V(SIVSHM_IOCTL_TYPE); V(SIVSHM_INFO_F_DOORBELL); V(SIVSHM_PEER_ID_NONE);
	V(SIVSHM_MAX_VECTORS); V(SIVSHM_INFO_ARGSZ_V1); V(SIVSHM_INFO_ARGSZ_V2); V(SIVSHM_IOCTL_GET_INFO);
	V(SIVSHM_MEM_TYPE_UNKNOWN); V(SIVSHM_MEM_TYPE_WB); V(SIVSHM_MEM_TYPE_WC);
	V(SIVSHM_MEM_TYPE_UC_MINUS); V(SIVSHM_MEM_TYPE_UC); V(SIVSHM_MEM_TYPE_WT); V(SIVSHM_MEM_TYPE_WP);
	V(sizeof(struct sivshm_info));
	O(argsz); O(flags); O(shm_size); O(peer_id); O(nr_vectors); O(__pad0); O(pci_domain);
	O(pci_bus); O(pci_slot); O(pci_func); O(__pad1); O(index); O(mem_type); O(__reserved);
	V(sizeof(((struct sivshm_info *)0)->__reserved));
	V(SIVSHM_IOCTL_RING); V(SIVSHM_IOCTL_BIND_EVENTFD);
	V(sizeof(struct sivshm_ring)); V(sizeof(struct sivshm_eventfd));
	OR(peer_id); OR(vector); OR(flags); OR(__reserved);
	OE(fd); OE(vector); OE(flags); OE(__reserved);
	return 0;
}
"#;

fn header_values() -> HashMap<String, u64> {
    let dir = tempfile_dir();
    let src = dir.join("probe.c");
    let bin = dir.join("probe");
    std::fs::write(&src, PROBE).unwrap();
    let uapi = Path::new(env!("CARGO_MANIFEST_DIR")).join("../uapi");
    let ok = Command::new("cc")
        .arg("-I")
        .arg(&uapi)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .status()
        .expect("a C compiler (cc) is needed to check the header");
    assert!(ok.success(), "uapi/linux/sivshm.h does not compile");
    let out = Command::new(&bin).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sivshm-header-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every value of the header and the Rust mirror's counterpart.
fn mirror_values() -> Vec<(&'static str, u64)> {
    vec![
        ("SIVSHM_IOCTL_TYPE", uapi::IOCTL_TYPE.into()),
        ("SIVSHM_INFO_F_DOORBELL", uapi::INFO_F_DOORBELL.into()),
        ("SIVSHM_PEER_ID_NONE", uapi::PEER_ID_NONE.into()),
        ("SIVSHM_MAX_VECTORS", uapi::MAX_VECTORS.into()),
        ("SIVSHM_INFO_ARGSZ_V1", uapi::INFO_ARGSZ_V1.into()),
        ("SIVSHM_INFO_ARGSZ_V2", uapi::INFO_ARGSZ_V2.into()),
        ("SIVSHM_MEM_TYPE_UNKNOWN", uapi::MEM_TYPE_UNKNOWN.into()),
        ("SIVSHM_MEM_TYPE_WB", uapi::MEM_TYPE_WB.into()),
        ("SIVSHM_MEM_TYPE_WC", uapi::MEM_TYPE_WC.into()),
        ("SIVSHM_MEM_TYPE_UC_MINUS", uapi::MEM_TYPE_UC_MINUS.into()),
        ("SIVSHM_MEM_TYPE_UC", uapi::MEM_TYPE_UC.into()),
        ("SIVSHM_MEM_TYPE_WT", uapi::MEM_TYPE_WT.into()),
        ("SIVSHM_MEM_TYPE_WP", uapi::MEM_TYPE_WP.into()),
        ("SIVSHM_IOCTL_GET_INFO", uapi::IOCTL_GET_INFO.into()),
        ("sizeof(struct sivshm_info)", size_of::<Info>() as u64),
        ("offsetof_argsz", offset_of!(Info, argsz) as u64),
        ("offsetof_flags", offset_of!(Info, flags) as u64),
        ("offsetof_shm_size", offset_of!(Info, shm_size) as u64),
        ("offsetof_peer_id", offset_of!(Info, peer_id) as u64),
        ("offsetof_nr_vectors", offset_of!(Info, nr_vectors) as u64),
        ("offsetof___pad0", offset_of!(Info, pad0) as u64),
        ("offsetof_pci_domain", offset_of!(Info, pci_domain) as u64),
        ("offsetof_pci_bus", offset_of!(Info, pci_bus) as u64),
        ("offsetof_pci_slot", offset_of!(Info, pci_slot) as u64),
        ("offsetof_pci_func", offset_of!(Info, pci_func) as u64),
        ("offsetof___pad1", offset_of!(Info, pad1) as u64),
        ("offsetof_index", offset_of!(Info, index) as u64),
        ("offsetof_mem_type", offset_of!(Info, mem_type) as u64),
        ("offsetof___reserved", offset_of!(Info, reserved) as u64),
        (
            "sizeof(((struct sivshm_info *)0)->__reserved)",
            size_of::<[u32; 6]>() as u64,
        ),
        ("SIVSHM_IOCTL_RING", uapi::IOCTL_RING.into()),
        ("SIVSHM_IOCTL_BIND_EVENTFD", uapi::IOCTL_BIND_EVENTFD.into()),
        ("sizeof(struct sivshm_ring)", size_of::<Ring>() as u64),
        ("sizeof(struct sivshm_eventfd)", size_of::<Eventfd>() as u64),
        ("ring_peer_id", offset_of!(Ring, peer_id) as u64),
        ("ring_vector", offset_of!(Ring, vector) as u64),
        ("ring_flags", offset_of!(Ring, flags) as u64),
        ("ring___reserved", offset_of!(Ring, reserved) as u64),
        ("eventfd_fd", offset_of!(Eventfd, fd) as u64),
        ("eventfd_vector", offset_of!(Eventfd, vector) as u64),
        ("eventfd_flags", offset_of!(Eventfd, flags) as u64),
        ("eventfd___reserved", offset_of!(Eventfd, reserved) as u64),
    ]
}

#[test]
fn rust_mirror_matches_the_c_header() {
    let h = header_values();
    let want = mirror_values();
    // The reserved array's type in the mirror is the one checked above.
    let _: [u32; 6] = Info::default().reserved;
    for (name, value) in &want {
        assert_eq!(
            h.get(*name),
            Some(value),
            "{name}: header vs driver/uapi.rs"
        );
    }
    assert_eq!(
        h.len(),
        want.len(),
        "the probe printed values this test does not check"
    );
}

/// A constant added to the header must be added to the probe and checked above.
#[test]
fn every_constant_of_the_header_is_checked() {
    let header = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../uapi/linux/sivshm.h"),
    )
    .unwrap();
    let checked: Vec<&str> = mirror_values().iter().map(|(name, _)| *name).collect();
    let defined: Vec<&str> = header
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("#define"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("SIVSHM_"))
        .collect();
    assert!(
        defined.contains(&"SIVSHM_IOCTL_GET_INFO"),
        "the header's #defines were not parsed"
    );
    for name in defined {
        assert!(
            checked.contains(&name),
            "{name} is not checked against driver/uapi.rs"
        );
    }
}
