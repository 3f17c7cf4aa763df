//! The C path in the channel benchmark: `sivshm_capi_probe` (samples/c, on libsivshm's C
//! API, static in the guest) streams over the same channel, in the same boot, after the Rust
//! `sivshm-probe`; its figures stand beside the Rust path's with their ratio (issue 26: the
//! C path within 5 % of the Rust one).

use anyhow::{Context, Result};

use super::table::{size_name, Probe};
use super::ProbeOptions;

/// The transport name of the C probe's lines (`throughput sivshm-c: ...`).
pub(super) const TRANSPORT: &str = "sivshm-c";

/// The least share of the Rust path's throughput the C path is to reach.
pub(super) const TARGET: f64 = 0.95;

/// The sizes, comma-separated.
fn sizes(o: &ProbeOptions) -> String {
    o.c_sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The manager's command, right after the Rust probe's, so that both stream as close in
/// time as they can one after the other (empty without C sizes). It drives the channel of
/// the manager's only device.
pub(super) fn manager(o: &ProbeOptions) -> String {
    if o.c_sizes.is_empty() {
        return String::new();
    }
    format!(
        " && sivshm_capi_probe throughput --sizes {} --seconds {}{} /dev/sivshm0",
        sizes(o),
        o.seconds,
        o.spin_args()
    )
}

/// The worker's command, after the Rust probe's `serve` (empty without C sizes).
pub(super) fn worker(o: &ProbeOptions) -> String {
    if o.c_sizes.is_empty() {
        return String::new();
    }
    format!(
        " && sivshm_capi_probe serve --timeout 900{} /dev/sivshm0",
        o.spin_args()
    )
}

/// The C path against the Rust path of the same run, per C size: messages/s of each, the
/// ratio and whether it meets [`TARGET`].
pub(super) fn table(probes: &[Probe], o: &ProbeOptions) -> Result<Vec<String>> {
    if o.c_sizes.is_empty() {
        return Ok(Vec::new());
    }
    let rate = |transport: &str, size: usize| -> Result<f64> {
        super::table::throughput_rate(probes, transport, size)
            .with_context(|| format!("no {transport} throughput at {size} bytes"))
    };
    let mut t = vec![
        "| message | Rust channel (sivshm-probe, msg/s) | C channel (libsivshm, msg/s) \
         | C / Rust |"
            .to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for &size in &o.c_sizes {
        let (rust, c) = (rate("sivshm", size)?, rate(TRANSPORT, size)?);
        let q = c / rust;
        let verdict = if q >= TARGET {
            "target met"
        } else {
            "below target"
        };
        t.push(format!(
            "| {} | {rust:.0} | {c:.0} | {q:.3} (>= {TARGET}) ({verdict}) |",
            size_name(size)
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Topology;

    fn options(c_sizes: Vec<usize>) -> ProbeOptions {
        ProbeOptions {
            round_trips: 10,
            round_trip_size: 64,
            seconds: 1.5,
            sizes: vec![64, 65536, 1 << 20],
            segment_mib: 8,
            spin_us: Some(50),
            spin_max_us: None,
            vsock_backend: None,
            c_sizes,
            hugepages: None,
            window: 32,
        }
    }

    #[test]
    fn the_c_probe_runs_on_the_same_channel_after_the_rust_one() {
        let o = options(vec![65536, 1 << 20]);
        let t = Topology::new(1, 8 << 20, &o).unwrap().network().unwrap();
        let (run, serve) = (&t.manager.env[0].1, &t.workers[0].env[0].1);
        let rust = run.find("suite --transport sivshm").unwrap();
        let c = run
            .find(
                "sivshm_capi_probe throughput --sizes 65536,1048576 --seconds 1.5 \
                 --spin-us 50 /dev/sivshm0",
            )
            .unwrap_or_else(|| panic!("{run}"));
        let pipe = run.find("--transport pipe").unwrap();
        assert!(
            rust < c && c < pipe,
            "the C path right after the Rust one: {run}"
        );
        let (rust, c, tcp) = (
            serve.find("serve --transport sivshm").unwrap(),
            serve
                .find("sivshm_capi_probe serve --timeout 900 --spin-us 50 /dev/sivshm0")
                .unwrap_or_else(|| panic!("{serve}")),
            serve.find("serve --transport tcp").unwrap(),
        );
        assert!(rust < c && c < tcp, "{serve}");
        let none = options(vec![]);
        let t = Topology::new(1, 8 << 20, &none).unwrap().network().unwrap();
        assert!(!t.manager.env[0].1.contains("capi"));
        assert!(!t.workers[0].env[0].1.contains("capi"));
    }

    #[test]
    fn the_table_gives_the_c_path_s_share_of_the_rust_path_against_the_target() {
        let o = options(vec![65536, 1 << 20]);
        let lines = [
            "SIVSHM-RESULT probe kind=throughput transport=sivshm size=65536 messages=1 seconds=1.000 mib_s=1.00 msgs_s=10000",
            "SIVSHM-RESULT probe kind=throughput transport=sivshm size=1048576 messages=1 seconds=1.000 mib_s=1.00 msgs_s=1000",
            "SIVSHM-RESULT probe kind=throughput transport=sivshm-c size=65536 messages=1 seconds=1.000 mib_s=1.00 msgs_s=9600",
            "SIVSHM-RESULT probe kind=throughput transport=sivshm-c size=1048576 messages=1 seconds=1.000 mib_s=1.00 msgs_s=900",
        ];
        let probes: Vec<Probe> = crate::bench::tests::probes(&lines);
        let t = table(&probes, &o).unwrap();
        assert_eq!(t.len(), 4, "{t:?}");
        assert_eq!(
            t[2],
            "| 64 KiB | 10000 | 9600 | 0.960 (>= 0.95) (target met) |"
        );
        assert_eq!(
            t[3],
            "| 1 MiB | 1000 | 900 | 0.900 (>= 0.95) (below target) |"
        );
        // A C figure missing is an error naming it.
        let e = table(&probes[..3], &o).unwrap_err().to_string();
        assert!(e.contains("no sivshm-c throughput at 1048576 bytes"), "{e}");
        assert!(table(&probes, &options(vec![])).unwrap().is_empty());
    }
}
