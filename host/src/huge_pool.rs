//! Reserving huge pages for a run, and giving them back: what a test or a benchmark on a
//! host of its own does before it makes segments of huge pages. `serve` never reserves
//! pages itself (the host's administrator sizes the pool); it only checks
//! ([`crate::segments::check_huge_pages`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::segments::{huge_pages, PageSize};

/// Huge pages added to the pool by [`reserve`]; the pool goes back to its old size on drop
/// (pages still in use then stay until they are freed: the kernel makes them surplus).
#[derive(Debug)]
pub struct Reservation {
    nr_hugepages: PathBuf,
    /// The pool before, if this reservation raised it.
    raised_from: Option<u64>,
    /// Pages this reservation added to the pool.
    pub added: u64,
}

/// Makes sure `need` pages of `page` are free under `sysfs_root`
/// (`/sys/kernel/mm/hugepages` on a host), raising the pool by the shortfall if they are
/// not. Needs root to raise it; the error says how many pages are missing and why the pool
/// could not grow (not root, or the kernel found no contiguous memory for them).
pub fn reserve(sysfs_root: &Path, page: PageSize, need: u64) -> Result<Reservation> {
    let dir = sysfs_root.join(page.sysfs_dir().context("base pages need no reservation")?);
    let nr_hugepages = dir.join("nr_hugepages");
    let have = huge_pages(sysfs_root, page)?;
    if have.available >= need {
        return Ok(Reservation {
            nr_hugepages,
            raised_from: None,
            added: 0,
        });
    }
    let short = need - have.available;
    let target = have.total + short;
    std::fs::write(&nr_hugepages, format!("{target}\n")).with_context(|| {
        format!(
            "{need} huge pages of {page} are needed and {} are free; raising the pool to \
             {target} through {} failed (it needs root)",
            have.available,
            nr_hugepages.display()
        )
    })?;
    let r = Reservation {
        nr_hugepages,
        raised_from: Some(have.total),
        added: short,
    };
    let now = huge_pages(sysfs_root, page)?;
    if now.available < need {
        bail!(
            "{need} huge pages of {page} are needed; the kernel grew the pool only to {} \
             ({} free): not enough contiguous free memory",
            now.total,
            now.available
        );
    }
    Ok(r)
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(before) = self.raised_from {
            // Nothing to report to: a pool left larger is the host's previous state plus
            // free pages, which the administrator can see and shrink.
            let _ = std::fs::write(&self.nr_hugepages, format!("{before}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(root: &Path, total: u64, free: u64) {
        let d = root.join("hugepages-2048kB");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("nr_hugepages"), format!("{total}\n")).unwrap();
        std::fs::write(d.join("free_hugepages"), format!("{free}\n")).unwrap();
        std::fs::write(d.join("resv_hugepages"), "0\n").unwrap();
    }

    fn nr(root: &Path) -> String {
        std::fs::read_to_string(root.join("hugepages-2048kB/nr_hugepages")).unwrap()
    }

    #[test]
    fn enough_free_pages_change_nothing() {
        let root = tempfile::tempdir().unwrap();
        pool(root.path(), 10, 6);
        let r = reserve(root.path(), PageSize::Huge2M, 6).unwrap();
        assert_eq!(r.added, 0);
        drop(r);
        assert_eq!(nr(root.path()), "10\n");
    }

    #[test]
    fn a_pool_that_does_not_grow_is_an_error_and_is_put_back() {
        // A fake sysfs accepts the write but free_hugepages stays: as when the kernel finds
        // no contiguous memory.
        let root = tempfile::tempdir().unwrap();
        pool(root.path(), 4, 1);
        let e = reserve(root.path(), PageSize::Huge2M, 3).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("3 huge pages of 2M are needed"), "{msg}");
        assert!(msg.contains("contiguous"), "{msg}");
        assert_eq!(nr(root.path()), "4\n", "the pool is restored");
    }

    #[test]
    fn base_pages_and_missing_pools_are_errors() {
        let root = tempfile::tempdir().unwrap();
        assert!(reserve(root.path(), PageSize::Base, 1).is_err());
        let e = reserve(root.path(), PageSize::Huge1G, 1).unwrap_err();
        assert!(format!("{e:#}").contains("no huge pages of 1G"), "{e:#}");
    }
}
