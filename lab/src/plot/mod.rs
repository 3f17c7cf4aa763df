//! The benchmarks' plots, as SVG files next to their tables, drawn with `plotters` (SVG
//! backend only). Every function takes plain figures, the same the tables are made of, and
//! parses nothing. Here: the canvas, the axes and the labels every plot shares; one file per
//! benchmark's plot (`channel`, `startup`: wiring and realise, `storm`).

use std::ops::Range;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One line of a plot: its legend and its (x, y) points, in x order.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Line {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Line {
        Line {
            label: label.into(),
            points,
        }
    }
}

pub(crate) const WIDTH: u32 = 900;
pub(crate) const HEIGHT: u32 = 560;

/// The colour of the `i`-th line; the first (SIVSHM's, by convention) is red.
pub(crate) fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    C[i % C.len()]
}

/// The span of the positive values of `v`, widened a little on a log axis (and made non-empty).
pub(crate) fn log_span(v: impl Iterator<Item = f64>) -> Result<Range<f64>> {
    let (lo, hi) = v
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    anyhow::ensure!(hi > 0.0, "nothing positive to plot on a log scale");
    Ok(lo / 1.5..hi * 1.5)
}

/// The span of the values of `v` from 0, with some room above.
pub(crate) fn linear_span(v: impl Iterator<Item = f64>) -> Result<Range<f64>> {
    let hi = v.filter(|x| x.is_finite()).fold(0.0f64, f64::max);
    Ok(0.0..if hi > 0.0 { hi * 1.1 } else { 1.0 })
}

pub(crate) fn points(lines: &[Line]) -> impl Iterator<Item = &(f64, f64)> {
    lines.iter().flat_map(|l| &l.points)
}

/// An axis label: whole numbers up to 9999 as they are, larger ones in k or M, fractions
/// to three places, without trailing zeros.
pub(crate) fn number(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if v >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if v >= 1e4 {
        trim(format!("{:.2}", v / 1e3)) + "k"
    } else {
        trim(format!("{v:.3}"))
    }
}

pub(crate) fn bytes(v: f64) -> String {
    let b = v.round() as u64;
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// An axis of a panel: its caption, its labels.
pub(crate) struct Axis<'a> {
    pub desc: &'a str,
    pub label: fn(f64) -> String,
}

/// Draws `lines` on `area` with a legend; `x` and `y` are the coordinates (log or linear);
/// line `i` gets colour `colours[i]` (its own index where `colours` is shorter).
pub(crate) fn panel<DB, X, Y>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    (x, xa): (X, Axis),
    (y, ya): (Y, Axis),
    lines: &[Line],
    colours: &[usize],
    legend: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(xa.desc)
        .y_desc(ya.desc)
        .x_label_formatter(&|v| (xa.label)(*v))
        .y_label_formatter(&|v| (ya.label)(*v))
        .draw()
        .map_err(err)?;
    for (i, l) in lines.iter().enumerate() {
        let c = colour(colours.get(i).copied().unwrap_or(i));
        chart
            .draw_series(LineSeries::new(l.points.iter().copied(), c.stroke_width(2)).point_size(3))
            .map_err(err)?
            .label(l.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Opens an SVG of the usual size at `path`, creating its directory; `draw` fills it.
pub(crate) fn svg(
    path: &Path,
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow!("drawing {}: {e:?}", path.display()))?;
    draw(&root).with_context(|| format!("drawing {}", path.display()))?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}

mod channel;
mod startup;
mod storm;

pub use channel::throughput;
pub use startup::{realise, wiring};
pub use storm::{storm, Bar};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The file at `path`, checked to be an SVG holding every one of `labels`.
    pub(crate) fn check(path: &Path, labels: &[&str]) {
        let svg = std::fs::read_to_string(path).unwrap();
        let start = svg.trim_start();
        let start = start
            .strip_prefix("<?xml")
            .map_or(start, |s| s[s.find("?>").unwrap() + 2..].trim_start());
        assert!(start.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for l in labels {
            assert!(svg.contains(l), "no {l:?} in the plot");
        }
    }

    #[test]
    fn axis_labels_are_short() {
        let got: Vec<String> = [0.05, 1.0, 16.0, 1024.0, 65536.0, 1e6, 2.5e6]
            .into_iter()
            .map(number)
            .collect();
        assert_eq!(got, ["0.05", "1", "16", "1024", "65.54k", "1M", "2.5M"]);
        assert_eq!(bytes(65536.0), "64 KiB");
    }
}
