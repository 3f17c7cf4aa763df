//! stress-hostile-peer: a worker that storms the doorbell and scribbles over its segment,
//! next to an honest one.

use anyhow::{Context, Result};

use super::{Ran, Stress, Suite};
use crate::layout::{Layout, Roles, Topology};

/// A manager, an honest worker 0 and a hostile worker 1 that storms the doorbell and scribbles
/// over its segment (see `selftests/sivshm_hostile.c`).
struct HostilePeer {
    storm_seconds: u64,
}

impl Roles for HostilePeer {
    fn manager(&self, bdfs: &[String], _layout: &Layout) -> String {
        // Worker i is peer i + 1 on its channel (layout.rs): the hostile one is peer 2.
        format!(
            "sivshm_hostile victim --honest {} --hostile {} --peer 2 --quiet 2 --storm 2 \
             --rounds 16 --bytes 262144",
            bdfs[0], bdfs[1]
        )
    }

    fn worker(&self, index: usize, _layout: &Layout) -> String {
        if index == 0 {
            "sivshm-distribute worker --only-device --timeout 120".to_string()
        } else {
            format!(
                "sivshm_hostile storm --device /dev/sivshm0 --seconds {} --wait-start 120",
                self.storm_seconds
            )
        }
    }
}

pub(super) fn plan(b: &Stress) -> Result<Topology> {
    let roles = HostilePeer {
        storm_seconds: b.storm_seconds,
    };
    Topology::new(2, 2 << 20, &roles)
}

pub(super) fn run(s: &Suite<'_>) -> Result<Ran> {
    let finished = plan(&s.stress)?.run(s.machine, s.logdir, s.timeout)?;
    if let Some(path) = &s.stress.storm_plot {
        let manager = finished
            .iter()
            .find(|f| f.name == "manager")
            .context("no manager among the finished guests")?;
        let report = crate::console::parse(&manager.log);
        let line = report
            .results_of(STORM)
            .last()
            .with_context(|| format!("the manager printed no {STORM} result line"))?;
        let cost = StormCost::from_line(line)?;
        let title = format!(
            "What a {} s doorbell storm costs the victim's CPU ({})",
            s.stress.storm_seconds,
            s.machine.accel.name()
        );
        crate::plot::storm(path, &title, &cost.phases())?;
        println!("# storm plot: {}", path.display());
    }
    Ok(Ran::plain(finished))
}

/// The program name of the victim's figures (`selftests/sivshm_hostile.c`).
const STORM: &str = "hostile-storm";

/// The victim's CPU while quiet and during the storm, in percent of all its vCPUs.
#[derive(Debug, PartialEq)]
struct StormCost {
    quiet_busy: f64,
    storm_busy: f64,
    hardirq: f64,
    softirq: f64,
    system: f64,
    quiet_irqs_s: f64,
    storm_irqs_s: f64,
}

impl StormCost {
    fn from_line(l: &crate::console::ResultLine) -> Result<Self> {
        let get = |k: &str| -> Result<f64> {
            l.get(k)
                .with_context(|| format!("{STORM}: no {k}"))?
                .parse()
                .with_context(|| format!("{STORM}: {k} is not a number"))
        };
        Ok(StormCost {
            quiet_busy: get("quiet_busy_pct")?,
            storm_busy: get("storm_busy_pct")?,
            hardirq: get("storm_hardirq_pct")?,
            softirq: get("storm_softirq_pct")?,
            system: get("storm_system_pct")?,
            quiet_irqs_s: get("quiet_irqs_s")?,
            storm_irqs_s: get("storm_irqs_s")?,
        })
    }

    /// The two bars: each phase's label and its busy share split into hard IRQ, soft IRQ,
    /// system and the rest (the quiet phase is not split: the guest measures only its total).
    fn phases(&self) -> Vec<crate::plot::Bar> {
        let rest = (self.storm_busy - self.hardirq - self.softirq - self.system).max(0.0);
        vec![
            crate::plot::Bar::new(
                format!("quiet ({:.0} interrupts/s)", self.quiet_irqs_s),
                vec![("busy", self.quiet_busy)],
            ),
            crate::plot::Bar::new(
                format!("storm ({:.0} interrupts/s)", self.storm_irqs_s),
                vec![
                    ("hard IRQ", self.hardirq),
                    ("soft IRQ", self.softirq),
                    ("system", self.system),
                    ("busy", rest),
                ],
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_victim_s_line_gives_both_bars_and_a_plot() {
        let r = crate::console::parse(
            "SIVSHM-RESULT hostile-storm quiet_busy_pct=2.0 quiet_irqs_s=0 storm_busy_pct=40.0 \
             storm_hardirq_pct=10.0 storm_softirq_pct=5.0 storm_system_pct=20.0 \
             storm_irqs_s=9000 waiter_wakeups_s=3000\n",
        );
        let cost = StormCost::from_line(r.results_of(STORM).next().unwrap()).unwrap();
        let bars = cost.phases();
        assert_eq!(bars[1].parts.iter().map(|p| p.1).sum::<f64>(), 40.0);
        assert_eq!(bars[1].parts[3], ("busy", 5.0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storm.svg");
        crate::plot::storm(&path, "t", &bars).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("storm (9000 interrupts/s)") && svg.contains("hard IRQ"));
        let partial = crate::console::parse("SIVSHM-RESULT hostile-storm quiet_busy_pct=2.0\n");
        let e = StormCost::from_line(partial.results_of(STORM).next().unwrap()).unwrap_err();
        assert!(e.to_string().contains("no storm_busy_pct"), "{e}");
    }
}
