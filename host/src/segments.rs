//! Shared-memory segments on the host: one tmpfs file each, created before any VM starts.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

/// A directory of segments, removed when dropped.
pub struct Segments {
    dir: TempDir,
}

impl Segments {
    /// Creates the directory on tmpfs (`/dev/shm`) when there is one, so segments are RAM.
    pub fn new() -> Result<Self> {
        let base = Path::new("/dev/shm");
        let dir = if base.is_dir() {
            tempfile::Builder::new().prefix("sivshm-").tempdir_in(base)
        } else {
            tempfile::Builder::new().prefix("sivshm-").tempdir()
        }
        .context("creating the segment directory")?;
        Ok(Self { dir })
    }

    /// Creates segment `name` of `size` bytes (a power of two, as a PCI BAR must be).
    pub fn create(&self, name: &str, size: u64) -> Result<(PathBuf, File)> {
        if !size.is_power_of_two() || size < 4096 {
            bail!("segment size {size} is not a power of two of at least 4096 bytes");
        }
        let path = self.dir.path().join(name);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.set_len(size)?;
        Ok((path, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_bar_sized() {
        let s = Segments::new().unwrap();
        assert!(s.create("a", 3 << 20).is_err());
        assert!(s.create("b", 2048).is_err());
        let (p, f) = s.create("c", 1 << 20).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        assert!(p.exists());
        assert!(
            s.create("c", 1 << 20).is_err(),
            "an existing segment is never reused"
        );
    }
}
