//! Segments of huge pages: `serve` makes a worker's segment of 2 MiB pages when the topology
//! says `hugepages = "2M"`, QEMU's mapping of the fd it receives has 2 MiB pages, and serve
//! refuses to start without enough free huge pages. Reserving huge pages needs root: the
//! test reserves one of 2 MiB when none is free (`huge_pool::reserve`) and gives them back at the end, and is
//! skipped (with the reason printed) when the kernel refuses.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{connect, Serve};
use rustix::process::Signal;
use sivshm::Mapping;
use sivshm_host::huge_pool;
use sivshm_host::segments::PageSize;
use sivshm_host::service::store::SYSFS_HUGEPAGES;

fn read_num(p: &Path) -> u64 {
    fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

/// Worker `w0` of 2 MiB of 2 MiB pages, `w1` of 1 MiB of base pages.
fn huge_topology(dir: &Path) -> String {
    common::topology(dir).replace(
        "segment_mib = 2\nvectors = 2\n",
        "segment_mib = 2\nvectors = 2\nhugepages = \"2M\"\n",
    )
}

/// `KernelPageSize` of every mapping of this process whose path contains `name` (a memfd's
/// is `/memfd:sivshm-NAME (deleted)`, a file's its path), as `/proc/self/smaps` gives it.
fn kernel_page_sizes(name: &str) -> Vec<String> {
    let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
    let mut sizes = Vec::new();
    let mut ours = false;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            ours = l.contains(name);
        } else if let (true, Some(v)) = (ours, l.strip_prefix("KernelPageSize:")) {
            sizes.push(v.trim().to_string());
        }
    }
    sizes
}

/// Writes `text` through the manager's device of `w0` (unless `check_only`), reads it
/// through the worker's, and checks that both mappings, named `name` in smaps, are of 2 MiB
/// pages.
fn same_bytes_on_2m_pages(s: &Serve, name: &str, text: &[u8], check_only: bool) {
    let mgr = connect(&s.socket("mgr.w0"), 2);
    let w0 = connect(&s.socket("w0.mgr"), 2);
    assert_eq!(rustix::fs::fstat(&w0.shm).unwrap().st_size, 2 << 20);
    let a = Mapping::new(mgr.shm.as_fd(), 0, 2 << 20).unwrap();
    let b = Mapping::new(w0.shm.as_fd(), 0, 2 << 20).unwrap();
    assert_eq!(kernel_page_sizes(name), ["2048 kB", "2048 kB"]);
    if !check_only {
        a.write(1 << 20, text).unwrap();
    }
    let mut seen = vec![0u8; text.len()];
    b.read(1 << 20, &mut seen).unwrap();
    assert_eq!(seen, text);
}

/// A hugetlbfs of 2 MiB pages mounted for the test, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_segment_of_2m_pages_is_served_and_kept_on_hugetlbfs() {
    let _reserved = match huge_pool::reserve(Path::new(SYSFS_HUGEPAGES), PageSize::Huge2M, 1) {
        Ok(r) => r,
        Err(why) => {
            println!("skipped: {why:#}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = Serve::start_with(dir.path(), &huge_topology(dir.path()));
    let has_mount = fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    assert_eq!(s.worker_status("w0", "pages"), "2M");
    if !has_mount {
        // No hugetlbfs mount of 2M pages: a memfd of them.
        assert_eq!(s.worker_status("w0", "segment"), "memfd");
    }
    assert_eq!(s.worker_status("w1", "pages"), "4K");
    same_bytes_on_2m_pages(&s, "/memfd:sivshm-it-w0 ", b"on huge pages", false);
    s.signal(Signal::TERM);
    assert!(s.exit_within(5).success());
    drop(s);
    if has_mount {
        println!("the rest skipped: this host has a hugetlbfs mount already");
        return;
    }

    // With a hugetlbfs mount, the segment is a file there and a restarted serve reuses it.
    let mnt = dir.path().join("huge");
    fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
        .arg(&mnt)
        .status()
        .is_ok_and(|st| st.success());
    if !ok {
        println!("the rest skipped: cannot mount a hugetlbfs");
        return;
    }
    let _mount = Mount(mnt.clone());
    let seg = mnt.join("sivshm-it/w0.seg");
    let mut s = Serve::start_with(dir.path(), &huge_topology(dir.path()));
    assert_eq!(s.worker_status("w0", "segment"), "created");
    assert!(seg.exists(), "{}", s.log());
    same_bytes_on_2m_pages(&s, "/sivshm-it/w0.seg", b"kept on hugetlbfs", false);
    s.signal(Signal::TERM);
    assert!(s.exit_within(5).success());
    drop(s);
    let mut s = Serve::start_with(dir.path(), &huge_topology(dir.path()));
    assert_eq!(s.worker_status("w0", "segment"), "reused");
    same_bytes_on_2m_pages(&s, "/sivshm-it/w0.seg", b"kept on hugetlbfs", true);
    // The worker's pages change: the file of 2M pages is named, and nothing changes.
    let base = huge_topology(dir.path()).replace("hugepages = \"2M\"\n", "");
    fs::write(dir.path().join("base.toml"), base).unwrap();
    s.signal(Signal::TERM);
    assert!(s.exit_within(5).success());
    drop(s);
    let err = common::serve_refuses(&dir.path().join("base.toml"));
    assert!(
        err.contains(&format!(
            "segment it-w0: {} holds it with 2M pages, but the topology asks for 2 MiB of 4K \
             pages: to start it afresh (its contents are lost), remove {}",
            seg.display(),
            seg.display()
        )) && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), 2 << 20);
    fs::remove_file(&seg).unwrap();
}

#[test]
fn serve_refuses_without_enough_free_huge_pages() {
    let pool = Path::new("/sys/kernel/mm/hugepages/hugepages-1048576kB");
    if !pool.is_dir() || read_num(&pool.join("free_hugepages")) > 0 {
        println!("skipped: this host has free 1 GiB pages, or none at all");
        return;
    }
    // On tmpfs, where w1's segment would be a file: none is made.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let text = common::topology(dir.path()).replace(
        "segment_mib = 2\nvectors = 2\n",
        "segment_mib = 2048\nvectors = 2\nhugepages = \"1G\"\n",
    );
    fs::write(dir.path().join("it.toml"), text).unwrap();
    let err = common::serve_refuses(&dir.path().join("it.toml"));
    let nr = read_num(&pool.join("nr_hugepages"));
    assert!(
        err.contains(&format!(
            "1 segment(s) of 1G pages need 2 huge pages of 1G, but the host has 0 free (of {nr} \
             in the pool): reserve 2 more, as root: echo {} > {}/nr_hugepages",
            nr + 2,
            pool.display()
        )),
        "{err}"
    );
    assert!(dir.path().join("run").is_dir());
    assert!(
        !dir.path().join("run/segments").exists(),
        "a segment was made"
    );
}
