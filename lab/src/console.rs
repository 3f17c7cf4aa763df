//! Reads a guest's serial log: the test command's TAP results and anything the kernel
//! reported that must fail a run (oops, WARN, BUG, lockdep, sleeping in atomic, leaks),
//! and the programs' machine-readable results (`SIVSHM-RESULT` lines).

use std::collections::BTreeMap;

/// One `ok`/`not ok` line of the guest command's TAP output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapResult {
    pub name: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

/// What a guest's serial log says.
#[derive(Debug, Default)]
pub struct Report {
    /// The init script ran (`SIVSHM-BOOTED`), with this boot id.
    pub booted: bool,
    pub boot_id: Option<String>,
    /// The guest's uptime at that line (`SIVSHM-BOOTED <uptime> id=...`), just before init
    /// loads the module.
    pub booted_uptime: Option<f64>,
    /// The TAP plan (`1..N`) of the command, if it printed one; a command that runs several
    /// TAP programs one after another (each numbering from 1) plans the sum of their plans.
    pub plan: Option<usize>,
    /// Exit code of the test command, if it finished.
    pub rc: Option<i32>,
    /// Top-level TAP results of the command.
    pub tap: Vec<TapResult>,
    /// Kernel log lines that must fail the run.
    pub splats: Vec<String>,
    /// The command's output (between the begin and end markers).
    pub output: Vec<String>,
    /// What a kmemleak scan after the command reported, if one ran.
    pub kmemleak: Option<Vec<String>>,
    /// The guest's uptime when `insmod` had probed every device (`SIVSHM-PROBED`).
    pub probed_uptime: Option<f64>,
    /// Each device's memory type at boot (`SIVSHM-MEMTYPE`).
    pub mem_types: Vec<MemTypeLine>,
    /// The driver's warnings that a device's memory is not write-back, by PCI address.
    pub not_write_back_warnings: Vec<String>,
    /// The programs' results (`SIVSHM-RESULT` lines), in the order they were printed.
    pub results: Vec<ResultLine>,
}

/// The prefix of a program's machine-readable result line:
/// `SIVSHM-RESULT <program> key=value key=value ...` (values without spaces). A program
/// prints one per result, besides its human output; the host reads them here and nowhere
/// else (Documentation/host-and-tests.rst, "Reading results").
pub const RESULT: &str = "SIVSHM-RESULT";

/// One `SIVSHM-RESULT <program> key=value ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLine {
    pub program: String,
    pub values: BTreeMap<String, String>,
}

impl ResultLine {
    /// Parses what follows `SIVSHM-RESULT ` (None without a program name, or with a word
    /// that is not `key=value`).
    pub fn parse(rest: &str) -> Option<Self> {
        let mut words = rest.split_whitespace();
        let program = words.next()?.to_string();
        if program.contains('=') {
            return None;
        }
        let values = words
            .map(|w| {
                let (k, v) = w.split_once('=')?;
                (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
            })
            .collect::<Option<_>>()?;
        Some(ResultLine { program, values })
    }

    /// The value of `key`, if the line has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The line as `program k=v ...`, keys sorted.
    pub fn to_line(&self) -> String {
        let mut s = self.program.clone();
        for (k, v) in &self.values {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    /// The line as a JSON object: `{"program": ..., "k": "v", ...}` (values as strings).
    pub fn to_json(&self) -> String {
        let q = |s: &str| {
            let mut o = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' | '\\' => {
                        o.push('\\');
                        o.push(c);
                    }
                    c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        };
        let mut parts = vec![format!("{}: {}", q("program"), q(&self.program))];
        for (k, v) in &self.values {
            parts.push(format!("{}: {}", q(k), q(v)));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

impl Report {
    /// The results `program` printed, in order.
    pub fn results_of<'a>(&'a self, program: &'a str) -> impl Iterator<Item = &'a ResultLine> {
        self.results.iter().filter(move |r| r.program == program)
    }

    /// The last result `program` printed (a program prints its summary once).
    pub fn result(&self, program: &str) -> Option<&ResultLine> {
        self.results.iter().rfind(|r| r.program == program)
    }
}

/// One `SIVSHM-MEMTYPE bdf=... bar=... driver=... pat=...` line of guest/init: a device's
/// memory type as the driver reports it (`GET_INFO`) and as the PAT lists the BAR's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemTypeLine {
    pub bdf: String,
    pub bar: String,
    pub driver: String,
    pub pat: String,
}

impl MemTypeLine {
    fn parse(rest: &str) -> Option<Self> {
        let field = |k: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(MemTypeLine {
            bdf: field("bdf")?,
            bar: field("bar")?,
            driver: field("driver")?,
            pat: field("pat")?,
        })
    }
}

/// What the driver says at probe of a device whose memory is not write-back (driver/mod.rs).
const NOT_WRITE_BACK: &str = "not write-back";

/// The start of the line init prints once `insmod` has probed every device:
/// `SIVSHM-PROBED <uptime> ...`.
const PROBED: &str = "SIVSHM-PROBED ";

/// The whole lines a guest's console log at `path` gained since `offset` (which moves past
/// them), for a host that follows a running guest's requests; a line still being written
/// waits for the next call.
pub fn new_lines(path: &std::path::Path, offset: &mut usize) -> String {
    let log = std::fs::read(path).unwrap_or_default();
    let start = (*offset).min(log.len());
    let end = log[start..]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(start, |i| start + i + 1);
    *offset = end;
    String::from_utf8_lossy(&log[start..end]).into_owned()
}

/// Whether the guest has printed [`PROBED`] yet: the cheap look a poll of growing logs makes
/// (what [`parse`] reads as [`Report::probed_uptime`]).
pub fn probed(log: &str) -> bool {
    log.lines().any(|l| l.starts_with(PROBED))
}

/// The line the guest's init prints once the module is loaded and the VM's command starts.
pub const COMMAND_STARTED: &str = "SIVSHM-BEGIN";

/// Kernel messages that mean the kernel found a bug (in the driver or anywhere else).
const SPLAT_MARKERS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "kernel BUG",
    "Kernel panic",
    "general protection fault",
    "possible circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "sleeping function called from invalid context",
    "unreferenced object",
    "Call Trace:",
    "UBSAN:",
    "rust_panic",
];

pub fn parse(log: &str) -> Report {
    let mut r = Report::default();
    let mut inside = false;
    let mut leaks: Option<Vec<String>> = None;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if line == "SIVSHM-KMEMLEAK-BEGIN" {
            leaks = Some(Vec::new());
        } else if line == "SIVSHM-KMEMLEAK-END" {
            r.kmemleak = leaks.take();
        } else if let Some(l) = leaks.as_mut() {
            l.push(line.to_string());
        } else if line == "SIVSHM-KMEMLEAK-UNAVAILABLE" {
            r.kmemleak = Some(vec![line.to_string()]);
        } else if let Some(rest) = line.strip_prefix("SIVSHM-BOOTED") {
            r.booted = true;
            r.booted_uptime = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            r.boot_id = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("id="))
                .map(str::to_string);
        } else if let Some(rest) = line.strip_prefix(RESULT).and_then(|r| r.strip_prefix(' ')) {
            // A result counts wherever it is printed (a background program's too), and is
            // part of the command's output as well.
            r.results.extend(ResultLine::parse(rest));
            if inside {
                r.output.push(line.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("SIVSHM-MEMTYPE ") {
            r.mem_types.extend(MemTypeLine::parse(rest));
            // Also a result of init's, `memtype`, for scripts (`sivshm-lab results`).
            r.results
                .extend(ResultLine::parse(&format!("memtype {rest}")));
        } else if line.contains(NOT_WRITE_BACK) && line.contains("sivshm ") {
            // `sivshm 0000:00:04.0: shared memory at ... is uncached-minus, not write-back: ...`
            r.not_write_back_warnings.extend(
                line.split("sivshm ")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next())
                    .map(|b| b.trim_end_matches(':').to_string()),
            );
        } else if let Some(rest) = line.strip_prefix(PROBED) {
            r.probed_uptime = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if line == COMMAND_STARTED {
            inside = true;
        } else if let Some(rest) = line.strip_prefix("SIVSHM-END rc=") {
            inside = false;
            r.rc = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if SPLAT_MARKERS.iter().any(|m| line.contains(m)) {
            r.splats.push(line.to_string());
        } else if inside {
            if let Some(t) = parse_tap_line(line) {
                r.tap.push(t);
            } else if let Some(n) = line
                .strip_prefix("1..")
                .and_then(|n| n.parse::<usize>().ok())
            {
                r.plan = Some(r.plan.unwrap_or(0) + n);
            }
            r.output.push(line.to_string());
        }
    }
    if let Some(unfinished) = leaks {
        // The log ended inside the kmemleak report: the guest died during the scan.
        r.splats.push("the kmemleak report was cut off".to_string());
        r.splats.extend(unfinished);
    }
    r
}

/// Parses a top-level TAP test line (`ok 3 name`, `not ok 4 name`, `ok 5 name # SKIP why`).
fn parse_tap_line(line: &str) -> Option<TapResult> {
    let (failed, rest) = if let Some(rest) = line.strip_prefix("not ok ") {
        (true, rest)
    } else {
        (false, line.strip_prefix("ok ")?)
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    num.parse::<u32>().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, Some(d)),
        None => (rest, None),
    };
    let skip = directive.is_some_and(|d| d.to_ascii_uppercase().starts_with("SKIP"));
    let outcome = match (failed, skip) {
        (_, true) => Outcome::Skip,
        (true, false) => Outcome::Fail,
        (false, false) => Outcome::Pass,
    };
    Some(TapResult {
        name: name.trim().to_string(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_lines_hands_out_whole_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest.log");
        let mut offset = 0;
        assert_eq!(new_lines(&path, &mut offset), "", "no log yet");
        std::fs::write(&path, "one\ntw").unwrap();
        assert_eq!(new_lines(&path, &mut offset), "one\n");
        assert_eq!(
            new_lines(&path, &mut offset),
            "",
            "a line being written waits"
        );
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(new_lines(&path, &mut offset), "two\nthree\n");
        assert_eq!(offset, 14);
    }

    const LOG: &str = "Linux version 7.3.4\r\n\
SIVSHM-BOOTED 3.1\r\n\
SIVSHM-BEGIN\r\n\
TAP version 13\r\n\
1..3\r\n\
# Starting 3 tests\r\n\
ok 1 dev.a\r\n\
not ok 2 dev.b\r\n\
ok 3 dev.c # SKIP no doorbell\r\n\
# Totals: pass:1 fail:1\r\n\
SIVSHM-END rc=1\r\n\
reboot: Restarting system\r\n";

    #[test]
    fn results_and_exit_code() {
        let r = parse(LOG);
        assert!(r.booted);
        assert_eq!(r.rc, Some(1));
        let got: Vec<_> = r.tap.iter().map(|t| (t.name.as_str(), t.outcome)).collect();
        assert_eq!(
            got,
            [
                ("dev.a", Outcome::Pass),
                ("dev.b", Outcome::Fail),
                ("dev.c", Outcome::Skip)
            ]
        );
        assert!(r.splats.is_empty());
    }

    #[test]
    fn nested_and_comment_lines_are_not_results() {
        let r = parse("SIVSHM-BEGIN\n    ok 1 nested\n# ok 2 comment\nok x bad\nSIVSHM-END rc=0\n");
        assert!(r.tap.is_empty());
        assert_eq!(r.rc, Some(0));
    }

    #[test]
    fn kernel_splats_are_found_anywhere() {
        let log = "SIVSHM-BEGIN\n\
[ 5.1] WARNING: CPU: 0 PID: 1 at mm/memory.c:123 insert_pfn\n\
ok 1 x\n\
SIVSHM-END rc=0\n\
[ 6.0] ======================================================\n\
[ 6.0] WARNING: possible circular locking dependency detected\n\
unreferenced object 0xffff888003 (size 64):\n";
        let r = parse(log);
        assert_eq!(r.splats.len(), 3);
        assert_eq!(r.tap.len(), 1);
    }

    #[test]
    fn the_probed_mark_is_seen_at_a_line_start_only() {
        assert!(probed("x\nSIVSHM-PROBED 2.5 devices=1\n"));
        assert!(!probed("echo SIVSHM-PROBED 2.5\n"));
        assert_eq!(
            parse("SIVSHM-PROBED 2.5 devices=1\n").probed_uptime,
            Some(2.5)
        );
    }

    #[test]
    fn boot_id_and_plan_are_read() {
        let r = parse("SIVSHM-BOOTED 2.5 id=abc\nSIVSHM-BEGIN\n1..3\nok 1 a\nSIVSHM-END rc=1\n");
        assert_eq!(r.boot_id.as_deref(), Some("abc"));
        assert_eq!(r.booted_uptime, Some(2.5));
        assert_eq!(r.plan, Some(3));
        assert_eq!(r.tap.len(), 1);
    }

    #[test]
    fn plans_of_programs_run_one_after_another_add_up() {
        let r = parse("SIVSHM-BEGIN\n1..2\nok 1 a\nok 2 b\n1..1\nok 1 c\nSIVSHM-END rc=0\n");
        assert_eq!(r.plan, Some(3));
        assert_eq!(r.tap.len(), 3);
    }

    #[test]
    fn a_cut_off_kmemleak_report_is_a_splat() {
        let r = parse("SIVSHM-KMEMLEAK-BEGIN\nBUG: unable to handle page fault\n");
        assert!(r.splats.iter().any(|s| s.contains("cut off")));
        assert!(r.splats.iter().any(|s| s.contains("BUG:")));
    }

    #[test]
    fn kmemleak_report_is_collected() {
        let clean = parse("SIVSHM-END rc=0\nSIVSHM-KMEMLEAK-BEGIN\nSIVSHM-KMEMLEAK-END\n");
        assert_eq!(clean.kmemleak, Some(vec![]));
        let leak = parse(
            "SIVSHM-KMEMLEAK-BEGIN\nunreferenced object 0xffff8880 (size 64):\n  comm \"insmod\"\nSIVSHM-KMEMLEAK-END\n",
        );
        assert_eq!(leak.kmemleak.as_ref().map(Vec::len), Some(2));
        assert!(parse("SIVSHM-KMEMLEAK-UNAVAILABLE\n")
            .kmemleak
            .is_some_and(|l| !l.is_empty()));
        assert_eq!(parse("SIVSHM-END rc=0\n").kmemleak, None);
    }

    #[test]
    fn memory_types_and_warnings_are_read() {
        let r = parse(
            "SIVSHM-MEMTYPE bdf=0000:00:04.0 bar=0x000000c000000000 driver=write-back pat=write-back\n\
             [    1.2] sivshm 0000:00:05.0: shared memory at 0xfe400000 is uncached-minus, not write-back: on AMD\n\
             SIVSHM-MEMTYPE bdf=0000:00:05.0 bar=0x00000000fe400000 driver=uncached-minus pat=uncached-minus\n",
        );
        assert_eq!(r.mem_types.len(), 2);
        assert_eq!(
            r.mem_types[1],
            MemTypeLine {
                bdf: "0000:00:05.0".into(),
                bar: "0x00000000fe400000".into(),
                driver: "uncached-minus".into(),
                pat: "uncached-minus".into(),
            }
        );
        assert_eq!(r.not_write_back_warnings, ["0000:00:05.0"]);
        let wb: Vec<_> = r
            .results_of("memtype")
            .filter(|l| l.get("driver") == Some("write-back"))
            .map(|l| l.get("bdf").unwrap())
            .collect();
        assert_eq!(wb, ["0000:00:04.0"], "the lines are results of init's too");
        assert!(
            r.splats.is_empty(),
            "a memory type warning is not a kernel bug"
        );
    }

    #[test]
    fn result_lines_are_read() {
        let r = parse(
            "SIVSHM-BEGIN\r\n\
             manager: 120 of 120 batches verified\r\n\
             SIVSHM-RESULT distribute-manager-worker index=1 verified=60 status=ok\r\n\
             SIVSHM-RESULT distribute-manager verified=120 batches=120 restarts=1\r\n\
             SIVSHM-RESULT\r\n\
             SIVSHM-RESULT broken key=value word\r\n\
             SIVSHM-RESULTS x=1\r\n\
             ok 1 a\r\n\
             SIVSHM-END rc=0\r\n",
        );
        assert_eq!(r.results.len(), 2, "{:?}", r.results);
        let m = r
            .result("distribute-manager")
            .expect("the manager's result");
        assert_eq!(m.get("verified"), Some("120"));
        assert_eq!(m.get("restarts"), Some("1"));
        assert_eq!(m.get("missing"), None);
        let w: Vec<_> = r.results_of("distribute-manager-worker").collect();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].get("status"), Some("ok"));
        assert_eq!(
            w[0].to_line(),
            "distribute-manager-worker index=1 status=ok verified=60"
        );
        assert_eq!(
            m.to_json(),
            r#"{"program": "distribute-manager", "batches": "120", "restarts": "1", "verified": "120"}"#
        );
        // The results are output too; the TAP line still counts.
        assert!(r
            .output
            .iter()
            .any(|l| l.starts_with("SIVSHM-RESULT distribute-manager ")));
        assert_eq!(r.tap.len(), 1);
        assert_eq!(
            ResultLine::parse("a=1 b=2"),
            None,
            "a result names its program first"
        );
    }

    #[test]
    fn missing_end_means_no_exit_code() {
        let r = parse("SIVSHM-BOOTED 1\nSIVSHM-BEGIN\nok 1 a\n");
        assert_eq!(r.rc, None);
        assert!(r.booted);
    }
}
