//! The runtime directory of a served topology: created with the permissions that let the
//! sockets' group reach them, and locked so that one `serve` at a time serves a topology.
//!
//! `RUNTIME_DIR/serve.lock` holds an exclusive `flock` for as long as `serve` runs, and its
//! pid. The kernel releases the lock however the process ends (`SIGKILL` included), so a
//! stale lock never blocks a restart; the file itself stays. `sivshm-host status` takes the
//! lock shared for a moment to learn whether a serve runs; a serve that starts meanwhile
//! waits for it (up to a quarter of a second) rather than take the reader for another serve.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};

use super::owner::Ids;

/// A locked runtime directory; the lock goes with the value.
pub struct RuntimeDir {
    _lock: File,
}

/// Name of the lock file.
pub const LOCK_FILE: &str = "serve.lock";

/// How long [`RuntimeDir::lock`] keeps trying a lock that is taken: `sivshm-host status`
/// (`status::read_dir`) takes it shared for the moment it reads, a serve for as long as it
/// runs.
const READER_GRACE: Duration = Duration::from_millis(250);

impl RuntimeDir {
    /// Creates `path` if needed and takes its lock for topology `name`. The directory is
    /// `0750 root:GROUP` when the sockets have a group, `0755` otherwise (the sockets' own
    /// `0660` keeps the others out). An existing directory must be ours and not writable by
    /// others; a lock held by another process is an error naming its pid.
    pub fn lock(path: &Path, name: &str, ids: Ids) -> Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                if !m.is_dir() {
                    bail!(
                        "runtime_dir {} exists and is not a directory",
                        path.display()
                    );
                }
                let me = rustix::process::geteuid().as_raw();
                if m.uid() != me {
                    bail!(
                        "runtime_dir {} belongs to uid {}, not to this process (uid {me})",
                        path.display(),
                        m.uid()
                    );
                }
                if m.mode() & 0o002 != 0 {
                    bail!(
                        "runtime_dir {} is writable by everyone: give serve a directory of its own",
                        path.display()
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(path)
                    .with_context(|| format!("creating runtime_dir {}", path.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("runtime_dir {}", path.display())),
        }
        let mode = if ids.gid.is_some() { 0o750 } else { 0o755 };
        std::os::unix::fs::chown(path, None, ids.gid)
            .with_context(|| format!("giving {} to gid {:?}", path.display(), ids.gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", path.display()))?;

        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        // A status reader holds the lock shared for the moment it reads: wait that out.
        let deadline = Instant::now() + READER_GRACE;
        let mut taken = flock(&lock, FlockOperation::NonBlockingLockExclusive);
        while taken == Err(rustix::io::Errno::WOULDBLOCK) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            taken = flock(&lock, FlockOperation::NonBlockingLockExclusive);
        }
        if let Err(e) = taken {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                bail!(
                    "topology {name} is already served (by pid {}, holding {}), or another \
                     topology with runtime_dir {}: its sockets are that serve's; stop it first, \
                     or give this topology a runtime_dir of its own; nothing was changed",
                    pid.trim(),
                    lock_path.display(),
                    path.display()
                );
            }
            return Err(e).with_context(|| format!("locking {}", lock_path.display()));
        }
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", std::process::id())?;
        Ok(RuntimeDir { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_at_a_time_and_it_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let rd = dir.path().join("a/b");
        let first = RuntimeDir::lock(&rd, "t", Ids::default()).unwrap();
        let mode = std::fs::metadata(&rd).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // flock locks belong to the open file: a second open in this process conflicts too.
        let e = RuntimeDir::lock(&rd, "t", Ids::default()).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "topology t is already served (by pid {}, holding {}), or another topology \
                 with runtime_dir {}: its sockets are that serve's; stop it first, or give this \
                 topology a runtime_dir of its own; nothing was changed",
                std::process::id(),
                rd.join(LOCK_FILE).display(),
                rd.display()
            )
        );
        drop(first);
        let _again = RuntimeDir::lock(&rd, "t", Ids::default()).unwrap();
    }

    /// `sivshm-host status` takes the lock shared for the moment it reads: a serve starting
    /// meanwhile waits for it instead of taking it for another serve (a flaky start seen in
    /// the tests, which poll the status while serve starts).
    #[test]
    fn a_status_reader_holding_the_lock_does_not_stop_a_start() {
        let dir = tempfile::tempdir().unwrap();
        let rd = dir.path().join("r");
        drop(RuntimeDir::lock(&rd, "t", Ids::default()).unwrap());
        let reader = File::open(rd.join(LOCK_FILE)).unwrap();
        flock(&reader, FlockOperation::NonBlockingLockShared).unwrap();
        let let_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(reader);
        });
        let started = RuntimeDir::lock(&rd, "t", Ids::default());
        let_go.join().unwrap();
        assert!(started.is_ok(), "{:#}", started.err().unwrap());
    }

    #[test]
    fn a_group_closes_the_directory_to_others() {
        let dir = tempfile::tempdir().unwrap();
        let rd = dir.path().join("g");
        let gid = rustix::process::getegid().as_raw();
        let _l = RuntimeDir::lock(
            &rd,
            "t",
            Ids {
                uid: None,
                gid: Some(gid),
            },
        )
        .unwrap();
        let m = std::fs::metadata(&rd).unwrap();
        assert_eq!((m.mode() & 0o7777, m.gid()), (0o750, gid));
    }

    #[test]
    fn shared_or_foreign_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = RuntimeDir::lock(&open, "t", Ids::default()).err().unwrap();
        assert!(e.to_string().contains("writable by everyone"), "{e}");
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = RuntimeDir::lock(&file, "t", Ids::default()).err().unwrap();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
