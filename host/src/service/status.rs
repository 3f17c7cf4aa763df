//! What a running `serve` reports as data: `RUNTIME_DIR/status`, rewritten whole (a rename)
//! each time what it says changes, removed when serve stops; `sivshm-host status TOPOLOGY`
//! reads it. One line of `key=value` words for serve, then one per worker, then one per
//! device:
//!
//! ```text
//! serve topology=own pid=4242 workers=w0,w1 reloads=1 refused=0
//! worker name=w0 id=1 vectors=1 mib=2 pages=4K segment=memfd doorbells=made
//! device name=mgr.w0 vm=mgr peer=w0 own_id=0 peer_id=1 bdf=0000:00:04.0 clients=1 setups=1
//! ```
//!
//! The file exists once every socket listens (what systemd's `READY=1` says), `workers` and
//! `reloads`/`refused` change only when a reload is done, a worker's `segment` and `doorbells`
//! say where they came from (`segment`: `fd-store`, `reused` or `created` file, `memfd`;
//! `doorbells`: `fd-store` or `made`), `clients` counts the connections
//! open now and `setups` the setup streams sent whole since the device was added. Values hold
//! no white space. A status file whose serve no longer runs (killed) is never read: the
//! runtime directory's lock tells.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};

use super::runtime_dir::LOCK_FILE;
use super::topology_file::TopologyFile;

/// Name of the status file in the runtime directory.
pub const STATUS_FILE: &str = "status";

/// Serve's own line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serve {
    pub topology: String,
    pub pid: u32,
    pub workers: Vec<String>,
    /// Reloads applied, and refused.
    pub reloads: u64,
    pub refused: u64,
}

/// A worker's line: its channel, and where its segment and doorbells came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub name: String,
    pub id: u16,
    pub vectors: u16,
    pub mib: u64,
    /// `4K`, `2M`, `1G`.
    pub pages: String,
    /// `store::Origin::word`: `fd-store`, `reused`, `created`, `memfd`.
    pub segment: &'static str,
    /// `fd-store` or `made`.
    pub doorbells: &'static str,
}

/// A device's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `VM.PEER`, as serve's log names it.
    pub name: String,
    pub vm: String,
    pub peer: String,
    pub own_id: u16,
    pub peer_id: u16,
    pub bdf: String,
    /// Connections open now.
    pub clients: usize,
    /// Setup streams sent whole since the device was added.
    pub setups: u64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub serve: Serve,
    pub workers: Vec<Worker>,
    pub devices: Vec<Device>,
}

impl Status {
    /// The file's text.
    pub fn render(&self) -> String {
        let s = &self.serve;
        let mut out = format!(
            "serve topology={} pid={} workers={} reloads={} refused={}\n",
            s.topology,
            s.pid,
            s.workers.join(","),
            s.reloads,
            s.refused
        );
        for w in &self.workers {
            out += &format!(
                "worker name={} id={} vectors={} mib={} pages={} segment={} doorbells={}\n",
                w.name, w.id, w.vectors, w.mib, w.pages, w.segment, w.doorbells
            );
        }
        for d in &self.devices {
            out += &format!(
                "device name={} vm={} peer={} own_id={} peer_id={} bdf={} clients={} setups={}\n",
                d.name, d.vm, d.peer, d.own_id, d.peer_id, d.bdf, d.clients, d.setups
            );
        }
        out
    }

    /// Writes the file into `dir` whole: readers see the old text or the new one.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!(".{STATUS_FILE}.new"));
        let path = dir.join(STATUS_FILE);
        std::fs::write(&tmp, self.render())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes the file from `dir` (serve stops).
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(STATUS_FILE));
    }
}

/// The `key=value` words of one status line after its kind, in order.
pub fn fields(line: &str) -> Vec<(&str, &str)> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// The status of the serve of the topology file at `path`: an error if none runs.
pub fn read(path: &Path) -> Result<String> {
    let t = TopologyFile::load(path)?;
    read_dir(&t.name, &t.runtime_dir)
}

/// The status text in runtime directory `dir` of topology `name`, if a serve holds its lock.
pub fn read_dir(name: &str, dir: &Path) -> Result<String> {
    let not_served = || {
        format!(
            "topology {name} is not served (no serve runs in {})",
            dir.display()
        )
    };
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::open(&lock_path).with_context(not_served)?;
    match flock(&lock, FlockOperation::NonBlockingLockShared) {
        Err(rustix::io::Errno::WOULDBLOCK) => {}
        Ok(()) => bail!("{}", not_served()),
        Err(e) => return Err(e).with_context(|| format!("locking {}", lock_path.display())),
    }
    let status = dir.join(STATUS_FILE);
    match std::fs::read_to_string(&status) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("topology {name}: serve runs, but is not ready yet")
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", status.display())),
    }
}

/// `sivshm-host status FILE [--worker NAME | --device NAME] [--get KEY]`: serve's line and
/// every other, or the line of `select` (`("worker", NAME)`, `("device", NAME)`) alone; with
/// `key`, that line's (serve's without `select`) value of it alone.
pub fn query(text: &str, select: Option<(&str, &str)>, key: Option<&str>) -> Result<Vec<String>> {
    let of_kind = |kind: &str| {
        let prefix = format!("{kind} ");
        text.lines()
            .filter(move |l| l.starts_with(&prefix))
            .collect::<Vec<_>>()
    };
    let lines: Vec<&str> = match select {
        None if key.is_none() => text.lines().collect(),
        None => of_kind("serve"),
        Some((kind, name)) => {
            let all = of_kind(kind);
            match all.iter().find(|l| fields(l).contains(&("name", name))) {
                Some(l) => vec![*l],
                None => {
                    let names: Vec<&str> = all
                        .iter()
                        .filter_map(|l| fields(l).into_iter().find(|f| f.0 == "name"))
                        .map(|f| f.1)
                        .collect();
                    bail!(
                        "serve has no {kind} {name:?} (its {kind}s: {})",
                        names.join(", ")
                    )
                }
            }
        }
    };
    let Some(key) = key else {
        return Ok(lines.into_iter().map(String::from).collect());
    };
    let line = lines.first().copied().unwrap_or_default();
    match fields(line).into_iter().find(|f| f.0 == key) {
        Some((_, v)) => Ok(vec![v.to_string()]),
        None => {
            let keys: Vec<&str> = fields(line).into_iter().map(|f| f.0).collect();
            bail!("no {key:?} in {line:?} (its keys: {})", keys.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Status {
        Status {
            serve: Serve {
                topology: "own".into(),
                pid: 42,
                workers: vec!["w0".into(), "w1".into()],
                reloads: 1,
                refused: 0,
            },
            workers: vec![Worker {
                name: "w0".into(),
                id: 1,
                vectors: 1,
                mib: 2,
                pages: "4K".into(),
                segment: "memfd",
                doorbells: "made",
            }],
            devices: vec![Device {
                name: "mgr.w0".into(),
                vm: "mgr".into(),
                peer: "w0".into(),
                own_id: 0,
                peer_id: 1,
                bdf: "0000:00:04.0".into(),
                clients: 1,
                setups: 2,
            }],
        }
    }

    #[test]
    fn lines_are_key_value_words() {
        let text = example().render();
        assert_eq!(
            text,
            "serve topology=own pid=42 workers=w0,w1 reloads=1 refused=0\n\
             worker name=w0 id=1 vectors=1 mib=2 pages=4K segment=memfd doorbells=made\n\
             device name=mgr.w0 vm=mgr peer=w0 own_id=0 peer_id=1 bdf=0000:00:04.0 clients=1 \
             setups=2\n"
        );
        assert_eq!(query(&text, None, None).unwrap().len(), 3);
        assert_eq!(query(&text, None, Some("workers")).unwrap(), ["w0,w1"]);
        assert_eq!(
            query(&text, Some(("device", "mgr.w0")), Some("setups")).unwrap(),
            ["2"]
        );
        assert_eq!(
            query(&text, Some(("worker", "w0")), Some("segment")).unwrap(),
            ["memfd"]
        );
        let e = query(&text, Some(("device", "mgr.w9")), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "serve has no device \"mgr.w9\" (its devices: mgr.w0)"
        );
        let e = query(&text, None, Some("nope")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no \"nope\" in \"serve topology=own"),
            "{e}"
        );
    }

    #[test]
    fn no_serve_no_status() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_dir("t", dir.path()).unwrap_err();
        assert!(e.to_string().starts_with("topology t is not served"), "{e}");
        // A lock file no process holds, and a status left by a killed serve: not served.
        std::fs::write(dir.path().join(LOCK_FILE), "1\n").unwrap();
        example().write(dir.path()).unwrap();
        let e = read_dir("t", dir.path()).unwrap_err();
        assert!(e.to_string().starts_with("topology t is not served"), "{e}");
        // Held: read.
        let held = File::open(dir.path().join(LOCK_FILE)).unwrap();
        flock(&held, FlockOperation::LockExclusive).unwrap();
        assert_eq!(read_dir("t", dir.path()).unwrap(), example().render());
        Status::remove(dir.path());
        let e = read_dir("t", dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "topology t: serve runs, but is not ready yet"
        );
    }
}
