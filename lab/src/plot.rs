//! The benchmarks' plots, as SVG files next to their tables, drawn with `plotters` (SVG
//! backend only). Every function takes plain figures, the same the tables are made of, and
//! parses nothing.

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

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;

/// The colour of the `i`-th line; the first (SIVSHM's, by convention) is red.
fn colour(i: usize) -> RGBColor {
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
fn log_span(v: impl Iterator<Item = f64>) -> Result<Range<f64>> {
    let (lo, hi) = v
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    anyhow::ensure!(hi > 0.0, "nothing positive to plot on a log scale");
    Ok(lo / 1.5..hi * 1.5)
}

/// The span of the values of `v` from 0, with some room above.
fn linear_span(v: impl Iterator<Item = f64>) -> Result<Range<f64>> {
    let hi = v.filter(|x| x.is_finite()).fold(0.0f64, f64::max);
    Ok(0.0..if hi > 0.0 { hi * 1.1 } else { 1.0 })
}

fn points(lines: &[Line]) -> impl Iterator<Item = &(f64, f64)> {
    lines.iter().flat_map(|l| &l.points)
}

/// An axis label: whole numbers up to 9999 as they are, larger ones in k or M, fractions
/// to three places, without trailing zeros.
fn number(v: f64) -> String {
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

fn bytes(v: f64) -> String {
    let b = v.round() as u64;
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// An axis of a panel: its caption, its labels.
struct Axis<'a> {
    desc: &'a str,
    label: fn(f64) -> String,
}

/// Draws `lines` on `area` with a legend; `x` and `y` are the coordinates (log or linear);
/// line `i` gets colour `colours[i]` (its own index where `colours` is shorter).
fn panel<DB, X, Y>(
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
fn svg(
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

/// One bar of a bar chart: its label and its parts, stacked from the bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub parts: Vec<(&'static str, f64)>,
}

impl Bar {
    pub fn new(label: impl Into<String>, parts: Vec<(&'static str, f64)>) -> Bar {
        Bar {
            label: label.into(),
            parts,
        }
    }
}

/// The hostile-peer storm: the victim's CPU share (percent) per phase, as stacked bars; a
/// part's colour is its name's, the same in every bar, with one legend entry per name.
pub fn storm(path: &Path, title: &str, bars: &[Bar]) -> Result<()> {
    anyhow::ensure!(!bars.is_empty(), "no bars to draw");
    let top = linear_span(
        bars.iter()
            .map(|b| b.parts.iter().map(|p| p.1).sum::<f64>()),
    )?;
    let mut names: Vec<&str> = Vec::new();
    for p in bars.iter().flat_map(|b| &b.parts) {
        if !names.contains(&p.0) {
            names.push(p.0);
        }
    }
    let n = bars.len();
    svg(path, HEIGHT, |root| {
        let err = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("drawing the plot: {e:?}");
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                    bars[i as usize].label.clone()
                } else {
                    String::new()
                }
            })
            .y_desc("victim CPU busy (% of all vCPUs)")
            .y_label_formatter(&|v| number(*v))
            .draw()
            .map_err(err)?;
        for (k, name) in names.iter().enumerate() {
            let c = colour(k);
            let rects: Vec<_> = bars
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let at = b.parts.iter().position(|p| p.0 == *name)?;
                    let below: f64 = b.parts[..at].iter().map(|p| p.1).sum();
                    let x = i as f64;
                    Some(Rectangle::new(
                        [(x - 0.3, below), (x + 0.3, below + b.parts[at].1)],
                        c.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file at `path`, checked to be an SVG holding every one of `labels`.
    fn check(path: &Path, labels: &[&str]) {
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

    #[test]
    fn axis_labels_are_short() {
        let got: Vec<String> = [0.05, 1.0, 16.0, 1024.0, 65536.0, 1e6, 2.5e6]
            .into_iter()
            .map(number)
            .collect();
        assert_eq!(got, ["0.05", "1", "16", "1024", "65.54k", "1M", "2.5M"]);
        assert_eq!(bytes(65536.0), "64 KiB");
    }

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
