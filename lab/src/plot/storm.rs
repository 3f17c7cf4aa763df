//! The hostile-peer storm's plot: the victim's CPU share per phase, as stacked bars.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::{colour, linear_span, number, svg, HEIGHT};

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
