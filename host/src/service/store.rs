//! Where `serve` gets each segment so that a restarted `serve` hands a restarted QEMU the
//! same memory: taken back from systemd's file descriptor store, else a file of an earlier
//! start, else made anew.
//!
//! - **systemd's fd store** (`FileDescriptorStoreMax=` in the unit): after making its
//!   segments, serve sends each to `$NOTIFY_SOCKET` (`FDSTORE=1`, `FDNAME=TOPOLOGY-WORKER`,
//!   the fd by `SCM_RIGHTS`); a later start of the unit receives them as fds 3, 4, ...
//!   (`$LISTEN_FDS`, `$LISTEN_FDNAMES`, `$LISTEN_PID`: `sd_listen_fds(3)`), and serve takes
//!   them before it looks for anything else. Any segment, huge pages too.
//! - **Files**, without systemd: `RUNTIME_DIR/segments/WORKER.seg` when the runtime
//!   directory is on tmpfs (`/run` is), or `MOUNT/sivshm-TOPOLOGY/WORKER.seg` on a hugetlbfs
//!   mount of the segment's page size; the directory `0700`, the file `0600`, made with
//!   `O_EXCL` on the first start and opened again on later ones. They stay until removed
//!   (or the host reboots).
//! - **A memfd** otherwise (no tmpfs runtime directory, or huge pages without a hugetlbfs
//!   mount of their size): it lives as long as serve and the QEMUs that hold it (and the fd
//!   store, if any).
//!
//! A stored or existing segment of another size or page size than the topology says is an
//! error before anything is made: nothing is changed, and the message says what to remove.
//! The doorbells' eventfds go to the fd store beside their segment (`doorbells`); no file
//! system can keep an eventfd, so without systemd a restart makes new ones.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags};

use super::topology_file::{TopologyFile, Worker};
use crate::segments::{self, PageSize};

/// Where serve's huge page pools are described.
pub const SYSFS_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// What serve's host offers for keeping segments.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// `/sys/kernel/mm/hugepages`, or a test's stand-in.
    pub sysfs_root: PathBuf,
    /// Hugetlbfs mounts by page size (the first of each size in `/proc/mounts`).
    pub hugetlbfs: BTreeMap<PageSize, PathBuf>,
}

impl Places {
    /// This host's: its sysfs and the hugetlbfs mounts in `/proc/mounts`.
    pub fn host() -> Self {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        Places {
            sysfs_root: PathBuf::from(SYSFS_HUGEPAGES),
            hugetlbfs: hugetlbfs_mounts(&mounts),
        }
    }
}

/// The hugetlbfs mounts of `/proc/mounts` text, by page size (`pagesize=2M`, `1024M`; a
/// mount without the option has the default huge page size, taken as 2M).
pub fn hugetlbfs_mounts(mounts: &str) -> BTreeMap<PageSize, PathBuf> {
    let mut found = BTreeMap::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[2] != "hugetlbfs" || f[3].split(',').any(|o| o == "ro") {
            continue;
        }
        let size = f[3]
            .split(',')
            .find_map(|o| o.strip_prefix("pagesize="))
            .map_or(Some(2 << 20), parse_size);
        if let Some(page) = size.and_then(PageSize::huge_of_bytes) {
            // /proc/mounts escapes spaces and the like as \040: such mounts are skipped.
            if !f[1].contains('\\') {
                found.entry(page).or_insert_with(|| PathBuf::from(f[1]));
            }
        }
    }
    found
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok().map(|n| n << shift)
}

/// Segments systemd handed back (`sd_listen_fds`), by `FDNAME`.
#[derive(Debug, Default)]
pub struct Stored {
    pub fds: BTreeMap<String, OwnedFd>,
}

/// The first fd `sd_listen_fds(3)` passes.
const LISTEN_FDS_START: RawFd = 3;

impl Stored {
    /// Takes the fds systemd passed to this process (`$LISTEN_PID` is ours), and unsets the
    /// variables so that nothing else takes them. Call once, early, in the binary.
    pub fn take_from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok();
        let (pid, n, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
        for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(k);
        }
        let (Some(pid), Some(n)) = (pid, n) else {
            return Ok(Stored::default());
        };
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return Ok(Stored::default());
        }
        let n: usize = n
            .trim()
            .parse()
            .with_context(|| format!("LISTEN_FDS={n} is not a number"))?;
        let names: Vec<String> = names
            .map(|s| s.split(':').map(str::to_string).collect())
            .unwrap_or_default();
        // Each fd duplicated through a pidfd of this very process (`pidfd_getfd(2)`, as
        // close-on-exec), which needs no `unsafe` to own a raw fd and works for every kind
        // (segments, and eventfds, which cannot be opened again through /proc); the fd
        // systemd passed stays open, unused.
        let me = pidfd_open(getpid(), PidfdFlags::empty())
            .context("pidfd_open of serve itself, to take the fds systemd passed")?;
        let mut fds = BTreeMap::new();
        for i in 0..n {
            let raw = LISTEN_FDS_START + i as RawFd;
            let fd = pidfd_getfd(&me, raw, PidfdGetfdFlags::empty())
                .with_context(|| format!("LISTEN_FDS={n}: taking fd {raw}"))?;
            let name = names.get(i).cloned().unwrap_or_else(|| "unknown".into());
            fds.insert(name, fd);
        }
        Ok(Stored { fds })
    }
}

/// How serve got a segment, for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Taken back from systemd's fd store.
    FdStore,
    /// A file of an earlier start, opened again.
    Reused(PathBuf),
    /// A file made now.
    Created(PathBuf),
    /// A memfd made now, and why it is no file.
    Memfd(String),
}

impl Origin {
    /// The origin as one word, for `status`: `fd-store`, `reused`, `created` (a file),
    /// `memfd`.
    pub fn word(&self) -> &'static str {
        match self {
            Origin::FdStore => "fd-store",
            Origin::Reused(_) => "reused",
            Origin::Created(_) => "created",
            Origin::Memfd(_) => "memfd",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::FdStore => write!(f, "taken back from systemd's fd store"),
            Origin::Reused(p) => write!(f, "reused from {}", p.display()),
            Origin::Created(p) => write!(f, "created as {}", p.display()),
            Origin::Memfd(why) => write!(f, "created as a memfd, lost when serve stops ({why})"),
        }
    }
}

/// One worker's segment and where it came from.
pub struct Segment {
    pub name: String,
    pub file: File,
    pub origin: Origin,
}

/// The segment name of `worker` of topology `topo`: `TOPOLOGY-WORKER` (also its `FDNAME`).
pub fn segment_name(topo: &str, worker: &str) -> String {
    format!("{topo}-{worker}")
}

/// Where worker segments of `page` pages are kept as files, or why they cannot be.
fn file_dir(
    t: &TopologyFile,
    places: &Places,
    page: PageSize,
) -> std::result::Result<PathBuf, String> {
    if page == PageSize::Base {
        if segments::on_tmpfs(&t.runtime_dir) {
            Ok(t.runtime_dir.join("segments"))
        } else {
            Err(format!(
                "runtime_dir {} is not on tmpfs, and a segment file there would be written \
                 to disk",
                t.runtime_dir.display()
            ))
        }
    } else {
        match places.hugetlbfs.get(&page) {
            Some(m) => Ok(m.join(format!("sivshm-{}", t.name))),
            None => Err(format!(
                "no hugetlbfs mount of {page} pages to keep it in, e.g. mount -t hugetlbfs -o \
                 pagesize={page} none /dev/hugepages{}",
                if page == PageSize::Huge2M { "" } else { "-1G" }
            )),
        }
    }
}

/// Where worker `w`'s segment is kept as a file, if it can be (not whether it is).
pub fn segment_file(t: &TopologyFile, places: &Places, w: &Worker) -> Option<PathBuf> {
    file_dir(t, places, w.page_size)
        .ok()
        .map(|d| d.join(format!("{}.seg", w.name)))
}

/// Lets go of the segment of worker `w`, removed from topology `t`: its file goes (the memory
/// stays as long as a QEMU maps it), and so does its fd in systemd's fd store (`notify`).
/// Says what it did, for the log.
pub fn retire(t: &TopologyFile, places: &Places, w: &Worker, notify: Option<&str>) -> String {
    let mut done = Vec::new();
    if let Some(p) = segment_file(t, places, w) {
        match std::fs::remove_file(&p) {
            Ok(()) => done.push(format!("removed {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => done.push(format!("could not remove {} ({e})", p.display())),
        }
    }
    if let Some(target) = notify {
        let name = segment_name(&t.name, &w.name);
        match super::notify::unstore(target, &name) {
            Ok(()) => done.push(format!("taken out of systemd's fd store ({name})")),
            Err(e) => done.push(format!(
                "could not take {name} out of systemd's fd store ({e:#})"
            )),
        }
    }
    if done.is_empty() {
        "a memfd, freed once no QEMU holds it".into()
    } else {
        format!("{}; freed once no QEMU holds it", done.join(", "))
    }
}

enum Plan {
    Stored(OwnedFd),
    Reuse(PathBuf, File),
    CreateFile(PathBuf),
    Memfd(String),
}

/// Every worker's segment of `t`: from `stored`, from files of an earlier start, or new.
/// Everything is checked before anything is made (sizes, page sizes, free huge pages).
/// Stored fds that are no segment of `t` are left in `stored`.
pub fn open_segments(
    t: &TopologyFile,
    places: &Places,
    stored: &mut Stored,
) -> Result<Vec<Segment>> {
    let me = rustix::process::geteuid().as_raw();
    let mut plans = Vec::new();
    for w in &t.workers {
        let name = segment_name(&t.name, &w.name);
        let want = format!("{} MiB of {} pages", w.segment_size >> 20, w.page_size);
        let mismatch = |f: &File, what: &str, remedy: &str| -> Result<()> {
            let size = f
                .metadata()
                .with_context(|| format!("fstat of {what}"))?
                .len();
            let page = PageSize::of(f)?;
            if size != w.segment_size || page != w.page_size {
                bail!(
                    "segment {name}: {what} is {size} bytes of {page} pages, but the topology \
                     asks for {want}: {remedy}, or give the worker its old size and pages; \
                     nothing was changed"
                );
            }
            Ok(())
        };
        if let Some(fd) = stored.fds.remove(&name) {
            let f = File::from(fd);
            mismatch(
                &f,
                "the segment in systemd's fd store",
                "to start it afresh (its contents are lost), stop the unit (systemctl stop \
                 empties its fd store) and remove its file, if any",
            )?;
            plans.push(Plan::Stored(f.into()));
            continue;
        }
        // A file of this worker in the place of another page size: its pages changed.
        let all_pages = [PageSize::Base, PageSize::Huge2M, PageSize::Huge1G];
        for other in all_pages.into_iter().filter(|&p| p != w.page_size) {
            if let Ok(dir) = file_dir(t, places, other) {
                let p = dir.join(format!("{}.seg", w.name));
                if p.exists() {
                    bail!(
                        "segment {name}: {} holds it with {other} pages, but the topology asks \
                         for {want}: to start it afresh (its contents are lost), remove {}, or \
                         give the worker its old pages; nothing was changed",
                        p.display(),
                        p.display()
                    );
                }
            }
        }
        let plan = match file_dir(t, places, w.page_size) {
            Err(why) => Plan::Memfd(why),
            Ok(dir) => {
                let path = dir.join(format!("{}.seg", w.name));
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc_o_nofollow())
                    .open(&path)
                {
                    Ok(f) => {
                        let m = f.metadata()?;
                        if !m.is_file() || m.uid() != me || m.mode() & 0o077 != 0 {
                            bail!(
                                "segment {name}: {} is not a file of uid {me} and mode 0600: \
                                 refusing to use it",
                                path.display()
                            );
                        }
                        let remedy = format!(
                            "to start it afresh (its contents are lost), remove {}",
                            path.display()
                        );
                        mismatch(&f, &path.display().to_string(), &remedy)?;
                        Plan::Reuse(path, f)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Plan::CreateFile(path),
                    Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
                }
            }
        };
        plans.push(plan);
    }
    let new_huge: Vec<(PageSize, u64)> = t
        .workers
        .iter()
        .zip(&plans)
        .filter(|(w, p)| {
            w.page_size != PageSize::Base && matches!(p, Plan::CreateFile(_) | Plan::Memfd(_))
        })
        .map(|(w, _)| (w.page_size, w.segment_size))
        .collect();
    segments::check_huge_pages(&places.sysfs_root, &new_huge)?;

    let mut out = Vec::new();
    for (w, plan) in t.workers.iter().zip(plans) {
        let name = segment_name(&t.name, &w.name);
        let (file, origin) = match plan {
            Plan::Stored(fd) => (File::from(fd), Origin::FdStore),
            Plan::Reuse(path, f) => (f, Origin::Reused(path)),
            Plan::Memfd(why) => (
                segments::create_with(&name, w.segment_size, w.page_size)?,
                Origin::Memfd(why),
            ),
            Plan::CreateFile(path) => (create_file(&path, w.segment_size)?, Origin::Created(path)),
        };
        out.push(Segment { name, file, origin });
    }
    Ok(out)
}

/// Puts `seg` in systemd's fd store (`FDNAME` its name) through notify socket `target`.
pub fn keep_in_fdstore(target: &str, seg: &Segment) -> Result<()> {
    super::notify::store(target, &seg.name, &seg.file)
        .with_context(|| format!("putting segment {} in systemd's fd store", seg.name))
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Makes segment file `path` of `size` bytes: its directory `0700` if new, the file `0600`
/// with `O_EXCL`. A failure removes the file again.
fn create_file(path: &Path, size: u64) -> Result<File> {
    let dir = path.parent().context("a segment file has a directory")?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    if let Err(e) = f.set_len(size) {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("sizing {} to {size} bytes", path.display()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugetlbfs_mounts_by_page_size() {
        let m = "sysfs /sys sysfs rw 0 0\n\
                 hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
                 none /mnt/huge1g hugetlbfs rw,relatime,pagesize=1024M 0 0\n\
                 none /mnt/other2m hugetlbfs rw,pagesize=2M 0 0\n\
                 none /mnt/ro hugetlbfs ro,pagesize=1G 0 0\n";
        let found = hugetlbfs_mounts(m);
        assert_eq!(found.len(), 2);
        assert_eq!(found[&PageSize::Huge2M], Path::new("/dev/hugepages"));
        assert_eq!(found[&PageSize::Huge1G], Path::new("/mnt/huge1g"));
        let default = hugetlbfs_mounts("none /h hugetlbfs rw 0 0\n");
        assert_eq!(default[&PageSize::Huge2M], Path::new("/h"));
    }
}
