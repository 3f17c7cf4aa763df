//! The channel benchmark's plot: rates against message size, and the ratios below.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::{bytes, log_span, number, panel, points, svg, Axis, Line, HEIGHT};

/// The channel benchmark: messages per second against message size (bytes), both log, one
/// line per transport; below, `reference`'s rate over each other transport's at the sizes
/// both have (1 is parity).
pub fn throughput(path: &Path, title: &str, lines: &[Line], reference: &str) -> Result<()> {
    let ours = lines
        .iter()
        .find(|l| l.label == reference)
        .with_context(|| format!("no {reference} line to take ratios of"))?;
    let (ratios, colours): (Vec<Line>, Vec<usize>) = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.label != reference)
        .map(|(i, l)| {
            let points = ours
                .points
                .iter()
                .filter_map(|&(x, s)| {
                    let (_, r) = l.points.iter().find(|(rx, _)| *rx == x)?;
                    (*r > 0.0).then_some((x, s / r))
                })
                .collect();
            (Line::new(format!("{reference} / {}", l.label), points), i)
        })
        .filter(|(l, _)| !l.points.is_empty())
        .unzip();
    let xs = log_span(points(lines).map(|p| p.0))?;
    let ys = log_span(points(lines).map(|p| p.1))?;
    svg(path, HEIGHT * 2 - 80, |root| {
        let (top, bottom) = root.split_vertically(HEIGHT);
        panel(
            &top,
            title,
            (
                xs.clone().log_scale().base(2.0),
                Axis {
                    desc: "message size",
                    label: bytes,
                },
            ),
            (
                ys.log_scale(),
                Axis {
                    desc: "messages/s",
                    label: number,
                },
            ),
            lines,
            &[],
            SeriesLabelPosition::UpperRight,
        )?;
        if ratios.is_empty() {
            return Ok(());
        }
        // Parity (1) always shows.
        let rs = log_span(points(&ratios).map(|p| p.1).chain([0.8, 1.25]))?;
        panel(
            &bottom,
            &format!("{reference} against each reference (1: as fast)"),
            (
                xs.log_scale().base(2.0),
                Axis {
                    desc: "message size",
                    label: bytes,
                },
            ),
            (
                rs.log_scale(),
                Axis {
                    desc: "ratio of messages/s",
                    label: number,
                },
            ),
            &ratios,
            &colours,
            SeriesLabelPosition::LowerRight,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::tests::check;

    #[test]
    fn the_throughput_plot_has_every_transport_and_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/channel.svg");
        let sizes = [64.0, 4096.0, 65536.0, 1048576.0];
        let line =
            |name: &str, k: f64| Line::new(name, sizes.iter().map(|&s| (s, k * 1e8 / s)).collect());
        let lines = [
            line("sivshm", 1.0),
            line("tcp", 0.2),
            line("memcpy", 5.0),
            line("shm-copy", 1.5),
        ];
        throughput(&path, "channel", &lines, "sivshm").unwrap();
        check(
            &path,
            &[
                "sivshm",
                "tcp",
                "memcpy",
                "shm-copy",
                "sivshm / tcp",
                "sivshm / shm-copy",
                "1 MiB",
            ],
        );
        assert!(throughput(&path, "channel", &lines[1..], "sivshm").is_err());
    }
}
