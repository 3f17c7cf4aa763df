//! The doorbells of a worker's channel (its eventfds, one per vector on each side), kept in
//! systemd's fd store beside the segment so that a restarted serve hands a restarted QEMU
//! the very eventfds its running peer rings and waits on.
//!
//! A channel's eventfds are stored as `TOPOLOGY-WORKER.manager.V` (they interrupt the
//! manager's device) and `TOPOLOGY-WORKER.worker.V` (the worker's), V from 0. Segment names
//! have no `.` (topology and worker names are letters, digits, `-` and `_`), so no name of
//! one kind is ever a name of the other. Without systemd nothing can keep an eventfd: a
//! restarted serve makes new ones (`Documentation/own-vms.rst` says what that means).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};

use super::notify;
use super::store::{segment_name, Stored};
use super::topology_file::Worker;
use crate::protocol::PeerVectors;

/// The two sides of a channel's doorbells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Manager,
    Worker,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Manager => "manager",
            Side::Worker => "worker",
        }
    }
}

/// The fd store's name of vector `v`'s eventfd on `side` of worker `w`'s channel.
fn fd_name(topo: &str, w: &str, side: Side, v: u16) -> String {
    format!("{}.{}.{v}", segment_name(topo, w), side.name())
}

/// Every fd store name of worker `w`'s doorbells.
pub fn fd_names(topo: &str, w: &Worker) -> Vec<String> {
    [Side::Manager, Side::Worker]
        .into_iter()
        .flat_map(|side| (0..w.vectors).map(move |v| fd_name(topo, &w.name, side, v)))
        .collect()
}

/// Whether `fd` is an eventfd (`/proc/self/fd/N` reads `anon_inode:[eventfd]`).
fn is_eventfd(fd: &OwnedFd) -> bool {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::readlink(link, Vec::new()).is_ok_and(|t| t.as_bytes() == b"anon_inode:[eventfd]")
}

/// A channel's doorbells, and where they came from.
pub struct Doorbells {
    /// The eventfds that interrupt the manager's device, and the worker's.
    pub manager_side: PeerVectors,
    pub worker_side: PeerVectors,
    /// Taken back from systemd's fd store (else made now).
    pub from_store: bool,
    /// The same for the log.
    pub line: String,
}

/// The doorbells of worker `w`'s channel in topology `topo`: the manager's side (peer 0)
/// and the worker's (peer `w.id`). Taken from `stored` when systemd's fd store holds every
/// eventfd of the channel, else made anew (and put in the store through `notify`, if
/// systemd runs serve). Says where they came from, as data and for the log.
pub fn open(
    topo: &str,
    w: &Worker,
    stored: &mut Stored,
    notify: Option<&str>,
) -> Result<Doorbells> {
    let names = fd_names(topo, w);
    let held = names.iter().filter(|n| stored.fds.contains_key(*n)).count();
    let mut taken: Vec<OwnedFd> = Vec::new();
    if held > 0 {
        for n in &names {
            if let Some(fd) = stored.fds.remove(n) {
                taken.push(fd);
            }
        }
    }
    let why_new = if held == 0 {
        None
    } else if held != names.len() {
        Some(format!(
            "the fd store held {held} of its {} eventfds",
            names.len()
        ))
    } else if !taken.iter().all(is_eventfd) {
        Some("the fd store held something else than eventfds under their names".to_string())
    } else {
        let worker_side = taken.split_off(usize::from(w.vectors));
        let line = format!(
            "doorbells: {} eventfds taken back from systemd's fd store",
            names.len()
        );
        return Ok(Doorbells {
            manager_side: PeerVectors {
                id: 0,
                vectors: taken,
            },
            worker_side: PeerVectors {
                id: w.id,
                vectors: worker_side,
            },
            from_store: true,
            line,
        });
    };
    let manager_side = PeerVectors::new(0, w.vectors)?;
    let worker_side = PeerVectors::new(w.id, w.vectors)?;
    let mut line = match &why_new {
        Some(why) => format!("doorbells: made anew ({why})"),
        None => "doorbells: made anew".to_string(),
    };
    if let Some(target) = notify {
        if held > 0 {
            // The store keeps every fd of a name: the old ones go first.
            for name in &names {
                let _ = notify::unstore(target, name);
            }
        }
        let fds = manager_side.vectors.iter().chain(&worker_side.vectors);
        for (name, fd) in names.iter().zip(fds) {
            notify::store(target, name, &fd.as_fd())
                .with_context(|| format!("putting eventfd {name} in systemd's fd store"))?;
        }
        line += "; put in systemd's fd store";
    }
    Ok(Doorbells {
        manager_side,
        worker_side,
        from_store: false,
        line,
    })
}

/// Takes worker `w`'s doorbells out of systemd's fd store (`notify`), when it leaves the
/// topology. Says what it did, for the log.
pub fn retire(topo: &str, w: &Worker, notify: Option<&str>) -> Option<String> {
    let target = notify?;
    let names = fd_names(topo, w);
    let failed: Vec<&String> = names
        .iter()
        .filter(|n| notify::unstore(target, n).is_err())
        .collect();
    Some(if failed.is_empty() {
        format!(
            "its {} eventfds taken out of systemd's fd store",
            names.len()
        )
    } else {
        format!(
            "could not take {} of its eventfds out of systemd's fd store ({})",
            failed.len(),
            failed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::PageSize;
    use rustix::event::{eventfd, EventfdFlags};

    fn worker(vectors: u16) -> Worker {
        Worker {
            name: "w0".into(),
            segment_size: 1 << 20,
            vectors,
            page_size: PageSize::Base,
            id: 3,
        }
    }

    fn efd() -> OwnedFd {
        eventfd(0, EventfdFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn names_never_collide_with_segment_names() {
        let names = fd_names("it", &worker(2));
        assert_eq!(
            names,
            [
                "it-w0.manager.0",
                "it-w0.manager.1",
                "it-w0.worker.0",
                "it-w0.worker.1"
            ]
        );
        assert!(names.iter().all(|n| n.contains('.') && !n.contains(':')));
    }

    #[test]
    fn a_complete_set_is_taken_back_in_order() {
        let w = worker(2);
        let mut stored = Stored::default();
        let fds: Vec<OwnedFd> = (0..4).map(|_| efd()).collect();
        let dups: Vec<OwnedFd> = fds.iter().map(|f| f.try_clone().unwrap()).collect();
        for (n, fd) in fd_names("it", &w).into_iter().zip(dups) {
            stored.fds.insert(n, fd);
        }
        stored.fds.insert("it-w1".into(), efd());
        let d = open("it", &w, &mut stored, None).unwrap();
        assert!(d.from_store, "{}", d.line);
        let (m, wk) = (d.manager_side, d.worker_side);
        assert_eq!((m.id, wk.id), (0, 3));
        // Vector 1 of the worker's side is the fourth stored eventfd: one object.
        rustix::io::write(&fds[3], &7u64.to_ne_bytes()).unwrap();
        let mut b = [0u8; 8];
        rustix::io::read(&wk.vectors[1], &mut b).unwrap();
        assert_eq!(u64::from_ne_bytes(b), 7);
        assert_eq!(stored.fds.len(), 1, "another's fd is left for the caller");
    }

    #[test]
    fn an_incomplete_or_foreign_set_is_made_anew() {
        let w = worker(2);
        let mut stored = Stored::default();
        stored.fds.insert("it-w0.manager.0".into(), efd());
        let d = open("it", &w, &mut stored, None).unwrap();
        assert!(!d.from_store);
        assert!(
            d.line.contains("made anew (the fd store held 1 of its 4"),
            "{}",
            d.line
        );
        let (m, wk) = (d.manager_side, d.worker_side);
        assert_eq!((m.vectors.len(), wk.vectors.len()), (2, 2));
        assert!(
            stored.fds.is_empty(),
            "the partial set is not left to be served"
        );

        let mut stored = Stored::default();
        let file = tempfile::tempfile().unwrap();
        for (i, n) in fd_names("it", &w).into_iter().enumerate() {
            let fd = if i == 2 {
                OwnedFd::from(file.try_clone().unwrap())
            } else {
                efd()
            };
            stored.fds.insert(n, fd);
        }
        let d = open("it", &w, &mut stored, None).unwrap();
        assert!(!d.from_store);
        assert!(
            d.line.contains("something else than eventfds"),
            "{}",
            d.line
        );
    }
}
