//! The topology file of `sivshm-host serve`, `qemu-args` and `libvirt-xml`: a TOML file that
//! names a data manager VM and its workers, with each worker's segment size and vectors, who
//! may connect to the sockets, and where they live.
//!
//! ```toml
//! name = "lab"                     # the topology; sockets in /run/sivshm/lab/ by default
//! runtime_dir = "/run/sivshm/lab"  # optional
//! user = "libvirt-qemu"            # optional: owner of the sockets (a name or a number)
//! group = "kvm"                    # optional: their group
//! hugepages = "2M"                 # optional: every segment of huge pages, "2M" or "1G"
//!
//! [manager]
//! name = "manager"
//! qmp = "/run/sivshm/lab/manager.qmp"  # optional: the manager QEMU's QMP socket (hotplug)
//!
//! [[worker]]
//! name = "w0"
//! segment_mib = 4                  # a power of two
//! vectors = 2                      # optional, 1 to 64, default 1
//! hugepages = "1G"                 # optional: this worker's pages ("4K": none)
//! id = 1                           # optional: its peer id, 1 to MAX_WORKERS
//! ```
//!
//! A worker's peer id fixes its channel's place: the manager's device for worker id *n*
//! sits at `pci::manager_slot(n - 1)`. Workers without an `id` take, in file order, the
//! lowest ids no other worker has, which is the file position plus one when no worker has
//! one; a reload that removes a worker keeps the others' places only if they keep their ids,
//! so such a file gives them explicitly (`serve` says which).
//!
//! Everything is checked on load, and every error names the file, the line and the problem.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::protocol::MAX_VECTORS;
use crate::segments::PageSize;

/// Workers a served topology takes: as many as the harness's manager, whose devices sit on
/// bus 0 and then behind PCI bridges (`topology::manager_slot`; `qemu-args` and
/// `libvirt-xml` give the manager those bridges).
pub const MAX_WORKERS: usize = crate::pci::MAX_WORKERS;

/// Where the sockets of topology NAME go unless the file says otherwise: `/run/sivshm/NAME`.
pub const DEFAULT_RUNTIME_ROOT: &str = "/run/sivshm";

/// Longest name of a topology or VM.
pub const MAX_NAME: usize = 32;

/// Largest segment: 1 TiB.
pub const MAX_SEGMENT_MIB: u64 = 1 << 20;

/// `sun_path` of `struct sockaddr_un` holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 107;

/// A topology file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyFile {
    pub name: String,
    pub runtime_dir: PathBuf,
    /// Owner of the sockets, as written (a name or a number), with its line.
    pub user: Option<Owner>,
    /// Group of the sockets, as written, with its line.
    pub group: Option<Owner>,
    pub manager: String,
    /// The manager QEMU's QMP socket, for `sivshm-host hotplug`.
    pub manager_qmp: Option<PathBuf>,
    pub workers: Vec<Worker>,
}

/// A user or group as the file gives it; resolved by whoever needs the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub line: usize,
}

/// One worker VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub name: String,
    /// Bytes: a power of two of at least 1 MiB.
    pub segment_size: u64,
    /// Interrupt vectors of the channel, on both sides.
    pub vectors: u16,
    /// The pages of the segment: the worker's `hugepages`, else the file's, else base pages.
    pub page_size: PageSize,
    /// Its peer id (1 to [`MAX_WORKERS`]); the manager is peer 0.
    pub id: u16,
}

impl Worker {
    /// The index of its channel in the manager's PCI plan (`pci::manager_slot`).
    pub fn index(&self) -> usize {
        usize::from(self.id) - 1
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    runtime_dir: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    hugepages: Option<Spanned<String>>,
    manager: Spanned<RawManager>,
    #[serde(default)]
    worker: Vec<Spanned<RawWorker>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManager {
    name: Spanned<String>,
    qmp: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: Spanned<String>,
    segment_mib: Spanned<u64>,
    vectors: Option<Spanned<u16>>,
    hugepages: Option<Spanned<String>>,
    id: Option<Spanned<u64>>,
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl TopologyFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read the topology file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Checks the text of a topology file; errors read `line N: problem`.
    pub fn parse(text: &str) -> Result<Self> {
        let at = |offset: usize, msg: String| anyhow!("line {}: {msg}", line_of(text, offset));
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => at(span.start, msg),
                None => anyhow!("{msg}"),
            }
        })?;

        let name =
            check_name(&raw.name, "the topology name").map_err(|m| at(raw.name.span().start, m))?;
        let manager = check_name(&raw.manager.get_ref().name, "a VM name")
            .map_err(|m| at(raw.manager.get_ref().name.span().start, m))?;
        if raw.worker.is_empty() {
            return Err(at(
                raw.manager.span().start,
                "no [[worker]]: a topology needs at least one worker".into(),
            ));
        }
        let pages = |h: &Option<Spanned<String>>| -> Result<Option<PageSize>> {
            let Some(h) = h else { return Ok(None) };
            PageSize::from_name(h.get_ref()).map(Some).ok_or_else(|| {
                at(
                    h.span().start,
                    format!(
                        "hugepages = {:?} is not \"2M\" or \"1G\" (or \"4K\": no huge pages)",
                        h.get_ref()
                    ),
                )
            })
        };
        let file_pages = pages(&raw.hugepages)?;
        let mut workers = Vec::new();
        for (i, w) in raw.worker.iter().enumerate() {
            let w_at = w.span().start;
            if i == MAX_WORKERS {
                return Err(at(
                    w_at,
                    format!(
                        "too many workers: at most {MAX_WORKERS} fit on the manager's PCI bus \
                         and its {} bridges",
                        crate::pci::MAX_BRIDGES
                    ),
                ));
            }
            let w = w.get_ref();
            let name = check_name(&w.name, "a VM name").map_err(|m| at(w.name.span().start, m))?;
            if name == manager {
                return Err(at(
                    w.name.span().start,
                    format!("worker name {name:?} is the manager's name too"),
                ));
            }
            if workers.iter().any(|o: &Worker| o.name == name) {
                return Err(at(
                    w.name.span().start,
                    format!("worker name {name:?} is given twice"),
                ));
            }
            let mib = *w.segment_mib.get_ref();
            if !mib.is_power_of_two() || mib > MAX_SEGMENT_MIB {
                return Err(at(
                    w.segment_mib.span().start,
                    format!(
                        "segment_mib = {mib} is not a power of two from 1 to {MAX_SEGMENT_MIB} \
                         (a PCI BAR's size must be one)"
                    ),
                ));
            }
            let vectors = w.vectors.as_ref().map_or(1, |v| *v.get_ref());
            if vectors == 0 || vectors > MAX_VECTORS {
                let span = w.vectors.as_ref().map_or(w_at, |v| v.span().start);
                return Err(at(
                    span,
                    format!("vectors = {vectors} is not from 1 to {MAX_VECTORS}"),
                ));
            }
            let page_size = pages(&w.hugepages)?.or(file_pages).unwrap_or_default();
            let segment_size = mib << 20;
            if !segment_size.is_multiple_of(page_size.bytes()) {
                let from = match (&w.hugepages, &raw.hugepages) {
                    (Some(h), _) | (None, Some(h)) => format!(
                        " (hugepages = \"{page_size}\" on line {})",
                        line_of(text, h.span().start)
                    ),
                    (None, None) => String::new(),
                };
                return Err(at(
                    w.segment_mib.span().start,
                    format!("segment_mib = {mib} is not a multiple of its {page_size} pages{from}"),
                ));
            }
            workers.push(Worker {
                name,
                segment_size,
                vectors,
                page_size,
                id: 0,
            });
        }
        // Explicit ids first, each at most once; then the others, lowest free first.
        let mut taken: Vec<Option<usize>> = vec![None; MAX_WORKERS + 1];
        for (i, w) in raw.worker.iter().enumerate() {
            let Some(id) = &w.get_ref().id else { continue };
            let n = *id.get_ref();
            if n == 0 || n > MAX_WORKERS as u64 {
                return Err(at(
                    id.span().start,
                    format!("id = {n} is not from 1 to {MAX_WORKERS} (the manager is peer 0)"),
                ));
            }
            if let Some(other) = taken[n as usize] {
                return Err(at(
                    id.span().start,
                    format!(
                        "id = {n} is worker {:?}'s too (line {})",
                        workers[other].name,
                        line_of(text, raw.worker[other].span().start)
                    ),
                ));
            }
            taken[n as usize] = Some(i);
            workers[i].id = n as u16;
        }
        let mut free = (1..=MAX_WORKERS).filter(|&n| taken[n].is_none());
        for w in workers.iter_mut().filter(|w| w.id == 0) {
            // At most MAX_WORKERS workers, so an id is left for each.
            w.id = free.next().expect("at most MAX_WORKERS workers") as u16;
        }

        let (runtime_dir, dir_at) = match &raw.runtime_dir {
            Some(d) => {
                let p = PathBuf::from(d.get_ref());
                if !p.is_absolute() {
                    return Err(at(
                        d.span().start,
                        format!("runtime_dir {:?} is not an absolute path", d.get_ref()),
                    ));
                }
                (p, d.span().start)
            }
            None => (
                Path::new(DEFAULT_RUNTIME_ROOT).join(&name),
                raw.name.span().start,
            ),
        };
        let owner = |o: &Option<Spanned<String>>, what: &str| -> Result<Option<Owner>> {
            let Some(o) = o else { return Ok(None) };
            let v = o.get_ref();
            if v.is_empty() || v.contains(':') || v.chars().any(char::is_whitespace) {
                return Err(at(
                    o.span().start,
                    format!("{what} {v:?} is not a valid name"),
                ));
            }
            Ok(Some(Owner {
                name: v.clone(),
                line: line_of(text, o.span().start),
            }))
        };
        let manager_qmp = match &raw.manager.get_ref().qmp {
            Some(q) => {
                let p = PathBuf::from(q.get_ref());
                if !p.is_absolute() || p.as_os_str().len() > MAX_SOCKET_PATH {
                    return Err(at(
                        q.span().start,
                        format!(
                            "qmp {:?} is not an absolute path of at most {MAX_SOCKET_PATH} bytes",
                            q.get_ref()
                        ),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        let file = TopologyFile {
            user: owner(&raw.user, "user")?,
            group: owner(&raw.group, "group")?,
            name,
            runtime_dir,
            manager,
            manager_qmp,
            workers,
        };
        // Every socket path must fit a sockaddr_un.
        for d in file.devices() {
            let len = d.socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(at(
                    dir_at,
                    format!(
                        "the socket path {} is {len} bytes, more than a unix socket address \
                         holds ({MAX_SOCKET_PATH}): use a shorter runtime_dir or shorter names",
                        d.socket.display()
                    ),
                ));
            }
        }
        Ok(file)
    }

    /// The worker named `name`.
    pub fn worker(&self, name: &str) -> Option<&Worker> {
        self.workers.iter().find(|w| w.name == name)
    }

    /// Every VM's name, the manager first.
    pub fn vm_names(&self) -> Vec<&str> {
        std::iter::once(self.manager.as_str())
            .chain(self.workers.iter().map(|w| w.name.as_str()))
            .collect()
    }
}

/// A topology or VM name: 1 to [`MAX_NAME`] letters, digits, `-` and `_`, as it becomes part
/// of file names.
fn check_name(name: &Spanned<String>, what: &str) -> std::result::Result<String, String> {
    let n = name.get_ref();
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if n.is_empty() || n.len() > MAX_NAME || !n.chars().all(ok_char) {
        return Err(format!(
            "{what} {n:?} must be 1 to {MAX_NAME} letters, digits, '-' or '_'"
        ));
    }
    Ok(n.clone())
}

/// For tests: a topology `big` of manager `m` and `n` workers `w0`, `w1`, ... of 1 MiB.
/// Lines 1-4 are the header, then three lines per worker: worker *i* starts at 5 + 3 *i*.
#[cfg(test)]
pub(crate) fn file_with_workers(n: usize, runtime_dir: &str) -> String {
    let mut text =
        format!("name = \"big\"\nruntime_dir = \"{runtime_dir}\"\n[manager]\nname = \"m\"\n");
    for i in 0..n {
        text += &format!("[[worker]]\nname = \"w{i}\"\nsegment_mib = 1\n");
    }
    text
}

#[cfg(test)]
#[path = "topology_file_tests.rs"]
mod tests;
