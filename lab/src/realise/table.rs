//! The realise benchmark's figures: samples, their spread, and the table's lines.

use super::Wiring;
use crate::qemu::Accel;
pub use crate::spread::Spread;

/// One run of one wiring at one worker count.
/// In JSON its members are named as in the `SIVSHM-RESULT realise-bench` line.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    #[serde(rename = "mode")]
    pub wiring: Wiring,
    pub workers: usize,
    /// 1-based.
    pub run: usize,
    /// Seconds before the first launch: the topology's segments, sockets, server.
    #[serde(rename = "prepare_seconds")]
    pub prepare: f64,
    /// Seconds from the first launch until the last QEMU answered with its devices.
    #[serde(rename = "seconds")]
    pub ready: f64,
    /// Seconds from the first launch until the manager answered with its devices.
    #[serde(rename = "manager_seconds")]
    pub manager: f64,
}

impl Sample {
    /// The machine-readable line of this result.
    pub fn line(&self, accel: Accel) -> String {
        format!(
            "SIVSHM-RESULT realise-bench mode={} workers={} run={} seconds={:.6} \
             manager_seconds={:.6} prepare_seconds={:.6} qemus={} accel={}",
            self.wiring.key(),
            self.workers,
            self.run,
            self.ready,
            self.manager,
            self.prepare,
            self.workers + 1,
            accel.name()
        )
    }
}

/// A spread of seconds as a table cell, in milliseconds.
fn cell(s: &Spread) -> String {
    format!(
        "{:.1} ms ({:.1}-{:.1})",
        s.median * 1e3,
        s.min * 1e3,
        s.max * 1e3
    )
}

/// `wiring`'s median launch-to-ready seconds at each of `counts` that has samples, as the
/// table's rows give them: (N, seconds).
pub fn medians(wiring: Wiring, counts: &[usize], samples: &[Sample]) -> Vec<(f64, f64)> {
    counts
        .iter()
        .filter_map(|&n| {
            Spread::of(
                samples
                    .iter()
                    .filter(|s| s.wiring == wiring && s.workers == n)
                    .map(|s| s.ready),
            )
            .map(|s| (n as f64, s.median))
        })
        .collect()
}

/// The table's header for `wirings` (in table order).
pub fn header(wirings: &[Wiring]) -> String {
    let mut h = String::from("#       N");
    for w in wirings {
        h += &format!(" | {}: median (min-max)", w.title());
    }
    if wirings.contains(&Wiring::Sivshm) && wirings.contains(&Wiring::Ivshmem) {
        h += " | IVSHMEM/SIVSHM";
    }
    if wirings.contains(&Wiring::None) {
        for w in wirings.iter().filter(|&&w| w != Wiring::None) {
            h += &format!(" | {} - floor", w.key().to_uppercase());
        }
    }
    h
}

/// The table's row for `n` workers from that count's samples: launch to ready per wiring,
/// the ratio of the medians, and each wiring's median above the floor's.
pub fn row(n: usize, wirings: &[Wiring], samples: &[Sample]) -> String {
    let spread = |w: Wiring| {
        Spread::of(
            samples
                .iter()
                .filter(|s| s.wiring == w && s.workers == n)
                .map(|s| s.ready),
        )
    };
    let mut r = format!("{n:>9}");
    for &w in wirings {
        r += &format!(" | {}", spread(w).map_or("-".into(), |s| cell(&s)));
    }
    if wirings.contains(&Wiring::Sivshm) && wirings.contains(&Wiring::Ivshmem) {
        r += &match (spread(Wiring::Ivshmem), spread(Wiring::Sivshm)) {
            (Some(i), Some(s)) => format!(" | {:.2}", i.median / s.median),
            _ => " | -".into(),
        };
    }
    if wirings.contains(&Wiring::None) {
        let floor = spread(Wiring::None);
        for &w in wirings.iter().filter(|&&w| w != Wiring::None) {
            r += &match (spread(w), floor) {
                (Some(x), Some(f)) => format!(" | {:+.1} ms", (x.median - f.median) * 1e3),
                _ => " | -".into(),
            };
        }
    }
    r
}

/// The preparation line for `n` workers: what was done before the first launch.
pub(super) fn prepare_row(n: usize, wirings: &[Wiring], samples: &[Sample]) -> String {
    let mut r = format!("# prepare N={n}:");
    for &w in wirings {
        if let Some(s) = Spread::of(
            samples
                .iter()
                .filter(|s| s.wiring == w && s.workers == n)
                .map(|s| s.prepare),
        ) {
            r += &format!(" {} {}", w.key(), cell(&s));
        }
    }
    r
}
