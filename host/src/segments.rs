//! Shared-memory segments on the host: a memfd, or a file on tmpfs or hugetlbfs that outlives
//! the process (`service::store` decides which), of normal or huge pages.
//!
//! A memfd has no name in any file system, so nothing is left behind when the host tool and
//! its QEMUs exit, however they exit (Ctrl-C included): the memory goes with the last fd.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{memfd_create, MemfdFlags};

/// The pages that back a segment: the kernel's base pages, or huge pages of 2 MiB or 1 GiB
/// (`MFD_HUGETLB`, or a file on a hugetlbfs mount of that page size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum PageSize {
    #[default]
    Base,
    Huge2M,
    Huge1G,
}

/// `statfs.f_type` as an `i64`, whatever its C type on this architecture.
#[allow(clippy::unnecessary_cast)]
fn fs_type(s: &rustix::fs::StatFs) -> i64 {
    s.f_type as i64
}

/// `statfs.f_type` of hugetlbfs (memfds of `MFD_HUGETLB` live there too).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// `statfs.f_type` of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

impl PageSize {
    /// The huge page sizes, smallest first.
    pub const HUGE: [PageSize; 2] = [PageSize::Huge2M, PageSize::Huge1G];

    /// Bytes of one page (base pages: 4 KiB).
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Base => 4096,
            PageSize::Huge2M => 2 << 20,
            PageSize::Huge1G => 1 << 30,
        }
    }

    /// As the topology file and the log write it: `4K`, `2M`, `1G`.
    pub fn name(self) -> &'static str {
        match self {
            PageSize::Base => "4K",
            PageSize::Huge2M => "2M",
            PageSize::Huge1G => "1G",
        }
    }

    /// The page size a topology file's `hugepages = "..."` names (`4K`: none).
    pub fn from_name(name: &str) -> Option<Self> {
        [PageSize::Base, PageSize::Huge2M, PageSize::Huge1G]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// The huge page size of `bytes`, if the kernel can have it here.
    pub fn huge_of_bytes(bytes: u64) -> Option<Self> {
        PageSize::HUGE.into_iter().find(|p| p.bytes() == bytes)
    }

    /// The directory of this page size under `/sys/kernel/mm/hugepages` (none for base pages).
    pub fn sysfs_dir(self) -> Option<String> {
        (self != PageSize::Base).then(|| format!("hugepages-{}kB", self.bytes() >> 10))
    }

    fn memfd_flags(self) -> MemfdFlags {
        match self {
            PageSize::Base => MemfdFlags::empty(),
            PageSize::Huge2M => MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB,
            PageSize::Huge1G => MemfdFlags::HUGETLB | MemfdFlags::HUGE_1GB,
        }
    }

    /// The pages that back the file or memfd `f`: huge pages of its hugetlbfs, else base pages
    /// (a tmpfs file is of base pages whatever `st_blksize` says of transparent huge pages).
    pub fn of(f: &impl AsFd) -> Result<Self> {
        let fs = rustix::fs::fstatfs(f).context("fstatfs")?;
        if fs_type(&fs) != HUGETLBFS_MAGIC {
            return Ok(PageSize::Base);
        }
        let blk = rustix::fs::fstat(f).context("fstat")?.st_blksize as u64;
        PageSize::huge_of_bytes(blk)
            .with_context(|| format!("huge pages of {blk} bytes are not supported"))
    }
}

impl std::fmt::Display for PageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `dir` is on tmpfs, where a segment file is memory as a memfd is.
pub fn on_tmpfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| fs_type(&s) == TMPFS_MAGIC)
}

/// Checks that segment `size` bytes suit a PCI BAR and pages of `page`.
pub fn check_size(size: u64, page: PageSize) -> Result<()> {
    if !size.is_power_of_two() || size < 4096 {
        bail!("segment size {size} is not a power of two of at least 4096 bytes");
    }
    if !size.is_multiple_of(page.bytes()) {
        bail!("segment size {size} is not a multiple of its {page} pages");
    }
    Ok(())
}

/// Creates memfd segment `name` of `size` bytes (a power of two, as a PCI BAR must be).
pub fn create(name: &str, size: u64) -> Result<File> {
    create_with(name, size, PageSize::Base)
}

/// Creates memfd segment `name` of `size` bytes of pages of `page`.
pub fn create_with(name: &str, size: u64, page: PageSize) -> Result<File> {
    check_size(size, page)?;
    let fd = memfd_create(
        format!("sivshm-{name}"),
        MemfdFlags::CLOEXEC | page.memfd_flags(),
    )
    .with_context(|| format!("creating segment {name} of {page} pages"))?;
    let f = File::from(fd);
    f.set_len(size)
        .with_context(|| format!("sizing segment {name} to {size} bytes"))?;
    Ok(f)
}

/// Huge pages of one size: what the kernel has, as `/sys/kernel/mm/hugepages/hugepages-*kB`
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugePages {
    /// `nr_hugepages`: the pool.
    pub total: u64,
    /// `free_hugepages` less `resv_hugepages` (free pages promised to mappings already).
    pub available: u64,
}

/// The huge pages of size `page` under `sysfs_root` (`/sys/kernel/mm/hugepages` on a host;
/// a parameter for the tests).
pub fn huge_pages(sysfs_root: &Path, page: PageSize) -> Result<HugePages> {
    let dir = sysfs_root.join(page.sysfs_dir().context("base pages are no huge pages")?);
    if !dir.is_dir() {
        bail!(
            "this kernel has no huge pages of {page} ({} does not exist)",
            dir.display()
        );
    }
    let read = |f: &str| -> Result<u64> {
        let p = dir.join(f);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: {text:?} is not a number", p.display()))
    };
    let free = read("free_hugepages")?;
    let resv = if dir.join("resv_hugepages").exists() {
        read("resv_hugepages")?
    } else {
        0
    };
    Ok(HugePages {
        total: read("nr_hugepages")?,
        available: free.saturating_sub(resv),
    })
}

/// Checks that the host has the huge pages for new segments of `(page size, bytes)`, all
/// together; the error names how many are needed, how many are free, and how to reserve
/// them.
pub fn check_huge_pages(sysfs_root: &Path, segments: &[(PageSize, u64)]) -> Result<()> {
    for page in PageSize::HUGE {
        let (count, need) = segments
            .iter()
            .filter(|(p, _)| *p == page)
            .fold((0, 0), |(n, pages), (_, size)| {
                (n + 1, pages + size.div_ceil(page.bytes()))
            });
        if need == 0 {
            continue;
        }
        let have = huge_pages(sysfs_root, page)?;
        if have.available < need {
            let dir = sysfs_root.join(page.sysfs_dir().unwrap_or_default());
            bail!(
                "{count} segment(s) of {page} pages need {need} huge pages of {page}, but the \
                 host has {} free (of {} in the pool): reserve {} more, as root: echo {} > {}",
                have.available,
                have.total,
                need - have.available,
                have.total + need - have.available,
                dir.join("nr_hugepages").display()
            );
        }
    }
    Ok(())
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
        assert_eq!(PageSize::of(&f).unwrap(), PageSize::Base);
        let e = create_with("d", 1 << 20, PageSize::Huge2M).unwrap_err();
        assert_eq!(
            e.to_string(),
            "segment size 1048576 is not a multiple of its 2M pages"
        );
    }

    #[test]
    fn page_sizes_by_name() {
        assert_eq!(PageSize::from_name("2M"), Some(PageSize::Huge2M));
        assert_eq!(PageSize::from_name("1G"), Some(PageSize::Huge1G));
        assert_eq!(PageSize::from_name("4K"), Some(PageSize::Base));
        assert_eq!(PageSize::from_name("2m"), None);
        assert_eq!(PageSize::Huge1G.sysfs_dir().unwrap(), "hugepages-1048576kB");
        assert_eq!(PageSize::Huge2M.sysfs_dir().unwrap(), "hugepages-2048kB");
    }

    fn fake_sysfs(pages: &[(PageSize, u64, u64, u64)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for &(p, nr, free, resv) in pages {
            let d = root.path().join(p.sysfs_dir().unwrap());
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("nr_hugepages"), format!("{nr}\n")).unwrap();
            std::fs::write(d.join("free_hugepages"), format!("{free}\n")).unwrap();
            std::fs::write(d.join("resv_hugepages"), format!("{resv}\n")).unwrap();
        }
        root
    }

    #[test]
    fn free_huge_pages_are_counted_for_all_segments_together() {
        let sys = fake_sysfs(&[(PageSize::Huge2M, 10, 8, 2), (PageSize::Huge1G, 1, 1, 0)]);
        let root = sys.path();
        // 6 of 2M available: 8 MiB + 4 MiB fit, 8 + 8 MiB do not.
        let fits = [(PageSize::Huge2M, 8 << 20), (PageSize::Huge2M, 4 << 20)];
        check_huge_pages(root, &fits).unwrap();
        let base = [(PageSize::Base, 1 << 40)];
        check_huge_pages(root, &base).unwrap();
        let short = [
            (PageSize::Huge2M, 8 << 20),
            (PageSize::Huge2M, 8 << 20),
            (PageSize::Base, 1 << 20),
        ];
        let e = check_huge_pages(root, &short).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "2 segment(s) of 2M pages need 8 huge pages of 2M, but the host has 6 free (of \
                 10 in the pool): reserve 2 more, as root: echo 12 > {}/hugepages-2048kB/nr_hugepages",
                root.display()
            )
        );
        check_huge_pages(root, &[(PageSize::Huge1G, 1 << 30)]).unwrap();
        let e = check_huge_pages(root, &[(PageSize::Huge1G, 2 << 30)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "1 segment(s) of 1G pages need 2 huge pages of 1G, but the host has 1 free"
            ),
            "{e}"
        );
        let none = fake_sysfs(&[(PageSize::Huge2M, 0, 0, 0)]);
        let e = check_huge_pages(none.path(), &[(PageSize::Huge1G, 1 << 30)])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("this kernel has no huge pages of 1G"), "{e}");
    }
}
