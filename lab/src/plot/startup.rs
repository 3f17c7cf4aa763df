//! The start-up benchmarks' plots: the wiring's protocol messages and the realise times.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::{linear_span, log_span, number, panel, points, svg, Axis, Line, HEIGHT};

/// The wiring benchmark: protocol messages sent to wire a manager and N workers, SIVSHM's
/// and the central server's, both axes log. `rows` are (N, SIVSHM's, the server's).
pub fn wiring(path: &Path, rows: &[(usize, u64, u64)]) -> Result<()> {
    let lines = [
        Line::new(
            "SIVSHM (pre-filled streams)",
            rows.iter().map(|r| (r.0 as f64, r.1 as f64)).collect(),
        ),
        Line::new(
            "IVSHMEM (central server)",
            rows.iter().map(|r| (r.0 as f64, r.2 as f64)).collect(),
        ),
    ];
    let xs = log_span(points(&lines).map(|p| p.0))?;
    let ys = log_span(points(&lines).map(|p| p.1))?;
    svg(path, HEIGHT, |root| {
        panel(
            root,
            "Wiring a manager and N workers: protocol messages",
            (
                xs.log_scale().base(2.0),
                Axis {
                    desc: "N (workers)",
                    label: number,
                },
            ),
            (
                ys.log_scale(),
                Axis {
                    desc: "messages",
                    label: number,
                },
            ),
            &lines,
            &[],
            SeriesLabelPosition::UpperLeft,
        )
    })
}

/// The realise benchmark: seconds from launch to every QEMU ready against N (log), one line
/// per wiring (the medians of the table).
pub fn realise(path: &Path, title: &str, lines: &[Line]) -> Result<()> {
    let xs = log_span(points(lines).map(|p| p.0))?;
    let ys = linear_span(points(lines).map(|p| p.1))?;
    svg(path, HEIGHT, |root| {
        panel(
            root,
            title,
            (
                xs.log_scale().base(2.0),
                Axis {
                    desc: "N (workers)",
                    label: number,
                },
            ),
            (
                ys,
                Axis {
                    desc: "seconds (median)",
                    label: number,
                },
            ),
            lines,
            &[],
            SeriesLabelPosition::UpperLeft,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::tests::check;

    #[test]
    fn the_wiring_plot_has_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wiring.svg");
        wiring(
            &path,
            &[(16, 160, 340), (64, 640, 4420), (256, 2560, 67000)],
        )
        .unwrap();
        check(
            &path,
            &["SIVSHM (pre-filled streams)", "IVSHMEM (central server)"],
        );
    }

    #[test]
    fn the_realise_plot_has_every_wiring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("realise.svg");
        let lines = [
            Line::new(
                "SIVSHM (pre-wired)",
                vec![(1.0, 0.10), (2.0, 0.12), (4.0, 0.2)],
            ),
            Line::new(
                "no device (floor)",
                vec![(1.0, 0.08), (2.0, 0.09), (4.0, 0.15)],
            ),
        ];
        realise(&path, "realise", &lines).unwrap();
        check(
            &path,
            &["SIVSHM (pre-wired)", "no device (floor)", "seconds"],
        );
    }
}
