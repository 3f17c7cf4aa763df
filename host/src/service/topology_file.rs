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
//!
//! [[worker]]
//! name = "w0"
//! segment_mib = 4                  # a power of two
//! vectors = 2                      # optional, 1 to 64, default 1
//! hugepages = "1G"                 # optional: this worker's pages ("4K": none)
//! ```
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: Spanned<String>,
    segment_mib: Spanned<u64>,
    vectors: Option<Spanned<u16>>,
    hugepages: Option<Spanned<String>>,
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
            });
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
        let file = TopologyFile {
            user: owner(&raw.user, "user")?,
            group: owner(&raw.group, "group")?,
            name,
            runtime_dir,
            manager,
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
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "lab"
user = "libvirt-qemu"
group = "kvm"

[manager]
name = "mgr"

[[worker]]
name = "w0"
segment_mib = 4
vectors = 2

[[worker]]
name = "w1"
segment_mib = 1
"#;

    fn err(text: &str) -> String {
        format!("{:#}", TopologyFile::parse(text).unwrap_err())
    }

    #[test]
    fn a_good_file_is_read_with_defaults() {
        let t = TopologyFile::parse(GOOD).unwrap();
        assert_eq!(t.name, "lab");
        assert_eq!(t.runtime_dir, Path::new("/run/sivshm/lab"));
        assert_eq!(t.manager, "mgr");
        assert_eq!(
            t.user,
            Some(Owner {
                name: "libvirt-qemu".into(),
                line: 3
            })
        );
        assert_eq!(t.group.as_ref().unwrap().line, 4);
        assert_eq!(
            t.workers,
            [
                Worker {
                    name: "w0".into(),
                    segment_size: 4 << 20,
                    vectors: 2,
                    page_size: PageSize::Base,
                },
                Worker {
                    name: "w1".into(),
                    segment_size: 1 << 20,
                    vectors: 1,
                    page_size: PageSize::Base,
                }
            ]
        );
        assert_eq!(t.vm_names(), ["mgr", "w0", "w1"]);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let dup = GOOD.replace("name = \"w1\"", "name = \"w0\"");
        assert_eq!(err(&dup), "line 15: worker name \"w0\" is given twice");
        let same_as_manager = GOOD.replace("name = \"w1\"", "name = \"mgr\"");
        assert_eq!(
            err(&same_as_manager),
            "line 15: worker name \"mgr\" is the manager's name too"
        );
        let three = GOOD.replace("segment_mib = 4", "segment_mib = 3");
        assert!(
            err(&three).starts_with("line 11: segment_mib = 3 is not a power of two"),
            "{}",
            err(&three)
        );
        let zero = GOOD.replace("segment_mib = 1", "segment_mib = 0");
        assert!(err(&zero).starts_with("line 16: segment_mib = 0 is not a power of two"));
        let vectors = GOOD.replace("vectors = 2", "vectors = 65");
        assert_eq!(err(&vectors), "line 12: vectors = 65 is not from 1 to 64");
        let unknown = GOOD.replace("vectors = 2", "vectorz = 2");
        let e = err(&unknown);
        assert!(
            e.starts_with("line 12: unknown field `vectorz`"),
            "unclear error: {e}"
        );
        let unknown_top = format!("colour = \"red\"\n{GOOD}");
        assert!(err(&unknown_top).starts_with("line 1: unknown field `colour`"));
        let bad_name = GOOD.replace("name = \"w1\"", "name = \"w 1\"");
        assert!(err(&bad_name).starts_with("line 15: a VM name \"w 1\" must be"));
        let slash = GOOD.replace("name = \"lab\"", "name = \"../etc\"");
        assert!(err(&slash).starts_with("line 2: the topology name \"../etc\" must be"));
        let wrong_type = GOOD.replace("segment_mib = 4", "segment_mib = \"4\"");
        assert!(
            err(&wrong_type).starts_with("line 11: invalid type"),
            "{}",
            err(&wrong_type)
        );
        let syntax = GOOD.replace("[manager]", "[manager");
        assert!(err(&syntax).starts_with("line 6: "), "{}", err(&syntax));
        let relative = format!("runtime_dir = \"run/x\"\n{GOOD}");
        assert_eq!(
            err(&relative),
            "line 1: runtime_dir \"run/x\" is not an absolute path"
        );
        let bad_user = GOOD.replace("\"libvirt-qemu\"", "\"a:b\"");
        assert_eq!(err(&bad_user), "line 3: user \"a:b\" is not a valid name");
    }

    #[test]
    fn huge_pages_for_the_file_or_a_worker() {
        let pages = |text: &str| -> Vec<PageSize> {
            TopologyFile::parse(text)
                .unwrap()
                .workers
                .iter()
                .map(|w| w.page_size)
                .collect()
        };
        let big = GOOD.replace("segment_mib = 1\n", "segment_mib = 2048\n");
        assert_eq!(pages(&big), [PageSize::Base, PageSize::Base]);
        // For the whole file (before [manager]), and a worker's own value overrides it.
        let all = big.replace("group = \"kvm\"", "group = \"kvm\"\nhugepages = \"2M\"");
        assert_eq!(pages(&all), [PageSize::Huge2M, PageSize::Huge2M]);
        let w1 = all.replace(
            "segment_mib = 2048",
            "segment_mib = 2048\nhugepages = \"1G\"",
        );
        assert_eq!(pages(&w1), [PageSize::Huge2M, PageSize::Huge1G]);
        let w0_base = all.replace("vectors = 2", "vectors = 2\nhugepages = \"4K\"");
        assert_eq!(pages(&w0_base), [PageSize::Base, PageSize::Huge2M]);
        let only_w0 = big.replace("vectors = 2", "vectors = 2\nhugepages = \"2M\"");
        assert_eq!(pages(&only_w0), [PageSize::Huge2M, PageSize::Base]);

        let bad = big.replace("vectors = 2", "vectors = 2\nhugepages = \"2MB\"");
        assert_eq!(
            err(&bad),
            "line 13: hugepages = \"2MB\" is not \"2M\" or \"1G\" (or \"4K\": no huge pages)"
        );
        let bad_top = big.replace("group = \"kvm\"", "group = \"kvm\"\nhugepages = \"huge\"");
        assert!(
            err(&bad_top).starts_with("line 5: hugepages = \"huge\" is not"),
            "{}",
            err(&bad_top)
        );
        let number = big.replace("vectors = 2", "vectors = 2\nhugepages = 2");
        assert!(
            err(&number).starts_with("line 13: invalid type"),
            "{}",
            err(&number)
        );
        // w0 has 4 MiB: a multiple of 2M pages, not of 1G ones; w1 (1 MiB) not even of 2M.
        let w0_1g = GOOD.replace("vectors = 2", "vectors = 2\nhugepages = \"1G\"");
        assert_eq!(
            err(&w0_1g),
            "line 11: segment_mib = 4 is not a multiple of its 1G pages (hugepages = \"1G\" on \
             line 13)"
        );
        let file_2m = GOOD.replace("group = \"kvm\"", "group = \"kvm\"\nhugepages = \"2M\"");
        assert_eq!(
            err(&file_2m),
            "line 17: segment_mib = 1 is not a multiple of its 2M pages (hugepages = \"2M\" on \
             line 5)"
        );
    }

    #[test]
    fn missing_parts_are_named() {
        assert!(err("name = \"x\"\n").contains("missing field `manager`"));
        let no_workers = "name = \"x\"\n[manager]\nname = \"m\"\n";
        assert_eq!(
            err(no_workers),
            "line 2: no [[worker]]: a topology needs at least one worker"
        );
        let no_size = "name = \"x\"\n[manager]\nname = \"m\"\n[[worker]]\nname = \"w\"\n";
        let e = err(no_size);
        assert!(e.starts_with("line 4: missing field `segment_mib`"), "{e}");
    }

    #[test]
    fn up_to_max_workers_parse_and_one_more_is_an_error_at_its_line() {
        assert_eq!(MAX_WORKERS, 148);
        let t = TopologyFile::parse(&file_with_workers(128, "/r")).unwrap();
        assert_eq!(t.workers.len(), 128);
        assert_eq!(t.workers[127].name, "w127");
        assert_eq!(
            TopologyFile::parse(&file_with_workers(MAX_WORKERS, "/r"))
                .unwrap()
                .workers
                .len(),
            MAX_WORKERS
        );
        let line = 5 + 3 * MAX_WORKERS;
        assert_eq!(
            err(&file_with_workers(MAX_WORKERS + 1, "/r")),
            format!(
                "line {line}: too many workers: at most {MAX_WORKERS} fit on the manager's PCI \
                 bus and its 4 bridges"
            )
        );
    }

    #[test]
    fn socket_paths_must_fit_a_unix_address() {
        let long = format!("runtime_dir = \"/{}\"\n{GOOD}", "d".repeat(100));
        let e = err(&long);
        assert!(
            e.starts_with("line 1: the socket path /ddd") && e.contains("more than a unix socket"),
            "{e}"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(&p, GOOD.replace("vectors = 2", "vectors = 0")).unwrap();
        let e = format!("{:#}", TopologyFile::load(&p).unwrap_err());
        assert_eq!(
            e,
            format!("{}: line 12: vectors = 0 is not from 1 to 64", p.display())
        );
        let e = format!(
            "{:#}",
            TopologyFile::load(&dir.path().join("none")).unwrap_err()
        );
        assert!(e.contains("cannot read the topology file"), "{e}");
    }
}
