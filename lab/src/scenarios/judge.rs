//! Turning guests' serial logs into results: TAP lines, a clean run, a clean kernel log,
//! the shared memory's type, kmemleak.

use super::{CaseResult, Suite};
use crate::console::{self, Outcome};
use crate::qemu::Finished;

impl Suite<'_> {
    /// Turns guests' logs into results: every TAP line, plus per guest whether it ran to the
    /// end and whether its kernel log is free of splats.
    pub(super) fn judge(
        &self,
        scenario: &str,
        finished: &[Finished],
        tap: bool,
    ) -> Vec<CaseResult> {
        let mut out = Vec::new();
        for f in finished {
            let r = console::parse(&f.log);
            let prefix = format!("{scenario}/{}", f.name);
            let mut push = |name: String, passed: bool| {
                out.push(CaseResult { name, passed });
                passed
            };
            // Only a log that shows this boot's id is this boot's.
            let booted = r.booted && r.boot_id.as_deref() == Some(f.boot_id.as_str());
            let failed_tap = r.tap.iter().any(|t| t.outcome != Outcome::Pass);
            for t in &r.tap {
                push(format!("{prefix}/{}", t.name), t.outcome == Outcome::Pass);
            }
            // A TAP program's failures are reported one by one; anything else must exit 0.
            // A TAP program must also report every test it planned.
            let exited = !f.timed_out && (r.rc == Some(0) || (r.rc.is_some() && failed_tap));
            let planned = !tap || (r.plan.is_some() && r.plan == Some(r.tap.len()));
            let mut bad = !push(
                format!("{prefix}: booted, ran its command to success and powered off"),
                booted && exited && planned,
            );
            bad |= failed_tap;
            bad |= !push(
                format!("{prefix}: no oops, WARN, BUG or lockdep report"),
                // A guest that never booted proves nothing about its kernel log.
                booted && r.splats.is_empty(),
            );
            if f.memory.devices > 0 {
                let (ok, why) = memory_types_as_expected(&r, &f.memory);
                if !ok {
                    eprintln!("#   {prefix}: {why}");
                }
                bad |= !push(
                    format!(
                        "{prefix}: every sivshm device's memory is write-back (GET_INFO and \
                         pat_memtype_list agree){}",
                        if f.memory.in_hole {
                            ": no, it was placed in the uncached hole on purpose, and the \
                             driver says so and warns"
                        } else {
                            ""
                        }
                    ),
                    ok,
                );
            }
            if f.wants_kmemleak {
                let clean = r.kmemleak.as_ref().is_some_and(|l| l.is_empty());
                bad |= !push(
                    format!("{prefix}: kmemleak found no leak after the tests"),
                    clean,
                );
                for l in r.kmemleak.iter().flatten().take(20) {
                    eprintln!("#   kmemleak: {l}");
                }
            }
            if bad || self.verbose {
                eprintln!(
                    "# {prefix}: {} in {:.1} s, rc {:?}, {} of {:?} planned results, log {}",
                    if f.timed_out { "timed out" } else { "finished" },
                    f.elapsed.as_secs_f64(),
                    r.rc,
                    r.tap.len(),
                    r.plan,
                    f.log_path.display()
                );
                for s in &r.splats {
                    eprintln!("#   kernel: {s}");
                }
            }
            if bad {
                let lines: Vec<&str> = f.log.lines().collect();
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("#   | {line}");
                }
            }
        }
        out
    }
}

/// Whether the boot-time memory types of a guest's devices are what the scenario expects: one
/// line per device, driver and PAT agreeing, write-back except for the devices deliberately
/// placed in the uncached hole, which must be uncached-minus and warned about. Otherwise,
/// why not.
fn memory_types_as_expected(
    r: &console::Report,
    want: &crate::qemu::MemoryExpectation,
) -> (bool, String) {
    if r.mem_types.len() != want.devices {
        return (
            false,
            format!(
                "{} memory type line(s) for {} device(s)",
                r.mem_types.len(),
                want.devices
            ),
        );
    }
    for m in &r.mem_types {
        let hole = want.in_hole;
        let expected = if hole { "uncached-minus" } else { "write-back" };
        if m.driver != expected || m.pat != expected {
            return (
                false,
                format!(
                    "{} (BAR at {}): the driver says {}, the PAT {}; expected {expected}",
                    m.bdf, m.bar, m.driver, m.pat
                ),
            );
        }
        if hole != r.not_write_back_warnings.contains(&m.bdf) {
            return (
                false,
                format!(
                    "{}: the driver {} about its memory type",
                    m.bdf,
                    if hole { "did not warn" } else { "warned" }
                ),
            );
        }
    }
    (true, String::new())
}
