//! Progress of long work (guest scenarios, guests booting and running, benchmark runs,
//! hot-plug requests): in a terminal a bar with the elapsed time and an estimate of what is
//! left (`indicatif`), redrawn in place; where nobody watches a terminal (stderr is not one,
//! `CI` is set, or `TERM` is unset or `dumb`) a plain `# progress ...` line on stderr when a
//! step ends, and at most every [`LINE_EVERY`] while one takes long, so that logs stay
//! readable. [`style`] is that decision, as a pure function.
//!
//! Bars of nested work (a scenario's guests under the suite's scenarios) stack, one line
//! each: every bar is drawn through one `MultiProgress` of this process.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Bars redrawn in place.
    Bar,
    /// Plain lines, now and then.
    Lines,
}

/// The style for a process whose stderr is a terminal or not, with the environment's `CI`
/// and `TERM`: bars only for a terminal that can redraw, outside CI. `CI` counts as set
/// unless empty, `0` or `false` (as CI services set it to `true` or `1`).
pub fn style(stderr_is_terminal: bool, ci: Option<&str>, term: Option<&str>) -> Style {
    let ci = ci.is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
    let dumb = term.is_none_or(|t| t.is_empty() || t == "dumb");
    if stderr_is_terminal && !ci && !dumb {
        Style::Bar
    } else {
        Style::Lines
    }
}

/// This process's style, decided once.
fn detected() -> Style {
    static STYLE: OnceLock<Style> = OnceLock::new();
    *STYLE.get_or_init(|| {
        style(
            std::io::stderr().is_terminal(),
            std::env::var("CI").ok().as_deref(),
            std::env::var("TERM").ok().as_deref(),
        )
    })
}

fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// How often a line is printed, in [`Style::Lines`], while no step ends.
pub const LINE_EVERY: Duration = Duration::from_secs(30);

/// The line [`Style::Lines`] prints: what, how far (`pos` of `total`; a total of 0 is
/// unknown), the time so far and, once a step has ended, the estimate of the rest at the
/// pace so far.
pub fn line(what: &str, pos: u64, total: u64, elapsed: Duration, msg: &str) -> String {
    let secs = elapsed.as_secs();
    let mut l = if total == 0 {
        format!("# progress: {what}: {pos} so far, {secs} s")
    } else {
        format!("# progress: {what}: {pos}/{total}, {secs} s")
    };
    if total > 0 && pos > 0 && pos < total {
        let left = elapsed.as_secs_f64() / pos as f64 * (total - pos) as f64;
        l += &format!(", about {:.0} s left", left);
    }
    if !msg.is_empty() {
        l += &format!(": {msg}");
    }
    l
}

/// The bar of work with a known number of steps, and the spinner of work without.
const BAR: &str = "{prefix} [{bar:24}] {pos}/{len} {elapsed}, about {eta} left {wide_msg}";
const SPINNER: &str = "{spinner} {prefix}: {pos} so far, {elapsed} {wide_msg}";

/// The progress of one piece of work of `total` steps (0: unknown, a spinner).
pub struct Progress {
    what: String,
    total: u64,
    pos: u64,
    msg: String,
    started: Instant,
    /// When the last line was printed ([`Style::Lines`]).
    printed: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(what: &str, total: u64) -> Progress {
        let bar = (detected() == Style::Bar).then(|| {
            let (bar, template) = if total == 0 {
                (ProgressBar::new_spinner(), SPINNER)
            } else {
                (ProgressBar::new(total), BAR)
            };
            let bar = bars().add(bar);
            if let Ok(s) = ProgressStyle::with_template(template) {
                bar.set_style(s.progress_chars("=> "));
            }
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        let now = Instant::now();
        Progress {
            what: what.to_string(),
            total,
            pos: 0,
            msg: String::new(),
            started: now,
            printed: now,
            bar,
        }
    }

    /// `pos` steps done; `msg` says what goes on now.
    pub fn set(&mut self, pos: u64, msg: &str) {
        let moved = pos != self.pos;
        self.pos = pos;
        if msg != self.msg {
            self.msg = msg.to_string();
            if let Some(b) = &self.bar {
                b.set_message(self.msg.clone());
            }
        }
        match &self.bar {
            Some(b) => b.set_position(pos),
            None if moved || self.printed.elapsed() >= LINE_EVERY => self.print(),
            None => {}
        }
    }

    fn print(&mut self) {
        self.printed = Instant::now();
        eprintln!(
            "{}",
            line(
                &self.what,
                self.pos,
                self.total,
                self.started.elapsed(),
                &self.msg
            )
        );
    }
}

impl Drop for Progress {
    /// A bar goes away; the last line says where the work ended.
    fn drop(&mut self) {
        match self.bar.take() {
            Some(b) => {
                b.finish_and_clear();
                bars().remove(&b);
            }
            None => self.print(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_only_in_a_terminal_that_redraws_outside_ci() {
        let term = Some("xterm-256color");
        assert_eq!(style(true, None, term), Style::Bar);
        assert_eq!(style(false, None, term), Style::Lines, "a pipe or a file");
        for ci in ["true", "1", "yes"] {
            assert_eq!(style(true, Some(ci), term), Style::Lines, "CI={ci}");
        }
        for not_ci in ["", "0", "false", "FALSE"] {
            assert_eq!(style(true, Some(not_ci), term), Style::Bar, "CI={not_ci}");
        }
        assert_eq!(style(true, None, Some("dumb")), Style::Lines);
        assert_eq!(style(true, None, None), Style::Lines);
        assert_eq!(style(true, None, Some("")), Style::Lines);
    }

    #[test]
    fn the_bar_and_spinner_templates_are_valid() {
        for t in [BAR, SPINNER] {
            ProgressStyle::with_template(t).unwrap();
        }
    }

    #[test]
    fn a_line_says_how_far_and_estimates_the_rest_at_the_pace_so_far() {
        let s = Duration::from_secs;
        assert_eq!(
            line("guest scenarios", 2, 8, s(60), "hotplug"),
            "# progress: guest scenarios: 2/8, 60 s, about 180 s left: hotplug"
        );
        assert_eq!(
            line("guests", 0, 3, s(5), ""),
            "# progress: guests: 0/3, 5 s"
        );
        assert_eq!(
            line("runs", 4, 4, s(9), "done"),
            "# progress: runs: 4/4, 9 s: done"
        );
        assert_eq!(
            line("hot-plug requests", 7, 0, s(70), "4 adds, 3 removes"),
            "# progress: hot-plug requests: 7 so far, 70 s: 4 adds, 3 removes"
        );
    }
}
