//! Checks of what guest programs reported as data: their `SIVSHM-RESULT` lines, read by
//! `console::parse` (the one place that parses them), never their prose.

use super::CaseResult;
use crate::console::{self, ResultLine};
use crate::qemu::Finished;

/// What one `SIVSHM-RESULT` line must say: the last line of `program` whose values include
/// every `pick` pair (say `index=1`) must have every `want` pair.
pub(super) struct Expect {
    /// The VM whose log is read (`manager`, `worker1`).
    pub vm: String,
    pub program: &'static str,
    pub pick: Vec<(&'static str, String)>,
    pub want: Vec<(&'static str, String)>,
    /// The result's name after `<scenario>/<vm>: `.
    pub what: String,
}

/// `key=value` pairs from `[("key", value)]`.
pub(super) fn pairs<V: ToString>(p: &[(&'static str, V)]) -> Vec<(&'static str, String)> {
    p.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Whether `line` has every pair of `pairs`.
fn has(line: &ResultLine, pairs: &[(&str, String)]) -> bool {
    pairs.iter().all(|(k, v)| line.get(k) == Some(v.as_str()))
}

/// Why `r`'s results do not meet `e` (None: they do).
pub(super) fn unmet(r: &console::Report, e: &Expect) -> Option<String> {
    let line = r.results_of(e.program).filter(|l| has(l, &e.pick)).last();
    match line {
        None => Some(format!(
            "no SIVSHM-RESULT {} line with {:?}; its results: {:?}",
            e.program,
            e.pick,
            r.results
                .iter()
                .map(ResultLine::to_line)
                .collect::<Vec<_>>()
        )),
        Some(l) if !has(l, &e.want) => {
            Some(format!("SIVSHM-RESULT {} wanted {:?}", l.to_line(), e.want))
        }
        Some(_) => None,
    }
}

/// One result per expectation, named `<scenario>/<vm>: <what>`; a VM that is not among
/// `finished` fails its expectations.
pub(super) fn check(scenario: &str, finished: &[Finished], expect: &[Expect]) -> Vec<CaseResult> {
    expect
        .iter()
        .map(|e| {
            let why = match finished.iter().find(|f| f.name == e.vm) {
                None => Some(format!("no VM {}", e.vm)),
                Some(f) => unmet(&console::parse(&f.log), e)
                    .map(|w| format!("{w} (log {})", f.log_path.display())),
            };
            let name = format!("{scenario}/{}: {}", e.vm, e.what);
            if let Some(why) = &why {
                eprintln!("# {name}: {why}");
            }
            CaseResult {
                name,
                passed: why.is_none(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picked_line_must_have_every_wanted_value() {
        let r = console::parse(
            "SIVSHM-RESULT distribute-manager-worker impl=c index=0 verified=16 status=ok code=0\n\
             SIVSHM-RESULT distribute-manager-worker impl=c index=1 verified=3 status=failed code=-5\n",
        );
        let e = |pick: &[(&'static str, &str)], want: &[(&'static str, &str)]| Expect {
            vm: "manager".into(),
            program: "distribute-manager-worker",
            pick: pairs(pick),
            want: pairs(want),
            what: String::new(),
        };
        let ok = |pick, want| unmet(&r, &e(pick, want));
        assert_eq!(
            ok(&[("index", "0")], &[("verified", "16"), ("status", "ok")]),
            None
        );
        assert_eq!(ok(&[("index", "1")], &[("status", "failed")]), None);
        assert!(ok(&[("index", "1")], &[("status", "ok")]).is_some());
        assert!(ok(&[("index", "2")], &[]).is_some());
        assert!(ok(&[("index", "0")], &[("missing", "1")]).is_some());
    }
}
