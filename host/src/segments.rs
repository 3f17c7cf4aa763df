//! Shared-memory segments on the host: one memfd each, created before any VM starts.
//!
//! A memfd has no name in any file system, so nothing is left behind when the host tool and
//! its QEMUs exit, however they exit (Ctrl-C included): the memory goes with the last fd.

use std::fs::File;

use anyhow::{bail, Context, Result};
use rustix::fs::{memfd_create, MemfdFlags};

/// Creates segment `name` of `size` bytes (a power of two, as a PCI BAR must be).
pub fn create(name: &str, size: u64) -> Result<File> {
    if !size.is_power_of_two() || size < 4096 {
        bail!("segment size {size} is not a power of two of at least 4096 bytes");
    }
    let fd = memfd_create(format!("sivshm-{name}"), MemfdFlags::CLOEXEC)
        .with_context(|| format!("creating segment {name}"))?;
    let f = File::from(fd);
    f.set_len(size)
        .with_context(|| format!("sizing segment {name} to {size} bytes"))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_bar_sized() {
        assert!(create("a", 3 << 20).is_err());
        assert!(create("b", 2048).is_err());
        let f = create("c", 1 << 20).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    }
}
