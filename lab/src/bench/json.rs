//! The channel benchmark's run as data: what `bench --what channel --json FILE` writes
//! (schema [`SCHEMA`], Documentation/results-json.rst) and what its tables and plot are made
//! from, both in the run that measured and by `sivshm-lab plot --from FILE` later.

use serde::{Deserialize, Serialize};

use super::table::Probe;
use super::ProbeOptions;
use crate::run_file::RunFile;

/// The `schema` member: changes when a member is removed, renamed or changes its type or
/// meaning; members may be added without a change.
pub const SCHEMA: &str = "sivshm-lab/channel-bench/1";

/// `options.hugepages` in JSON: the page size's name (`"2M"`, `"1G"`), `null` for the
/// base pages.
pub mod page_size {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use sivshm_host::segments::PageSize;

    pub fn serialize<S: Serializer>(p: &Option<PageSize>, s: S) -> Result<S::Ok, S::Error> {
        p.map(PageSize::name).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PageSize>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|n| {
                PageSize::from_name(&n).ok_or_else(|| {
                    serde::de::Error::custom(format!("{n:?} is not a page size (4K, 2M, 1G)"))
                })
            })
            .transpose()
    }
}

/// The shared memory's type in one VM, as its init reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemType {
    pub vm: String,
    pub bdf: String,
    /// What the driver says (GET_INFO).
    pub driver: String,
    /// What the guest's PAT says.
    pub pat: String,
}

/// One run of the channel benchmark: how it was run, and every figure the guests printed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelRun {
    pub schema: String,
    /// The accelerator the guests ran on (`tcg`, `kvm`).
    pub accel: String,
    pub options: ProbeOptions,
    pub memory: Vec<MemType>,
    /// Every `latency`/`throughput` line of the guests, in the order they printed them.
    pub probes: Vec<Probe>,
}

impl ChannelRun {}

impl RunFile for ChannelRun {
    const SCHEMA: &'static str = SCHEMA;
    const WHAT: &'static str = "a channel benchmark run";

    fn schema(&self) -> &str {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> ChannelRun {
        let o = ProbeOptions {
            round_trips: 10,
            round_trip_size: 64,
            seconds: 1.0,
            sizes: vec![4096, 65536],
            segment_mib: 8,
            spin_us: None,
            spin_max_us: Some(0),
            vsock_backend: None,
            c_sizes: vec![65536],
            hugepages: Some(sivshm_host::segments::PageSize::Huge2M),
            window: 16,
        };
        let lines = [
            "SIVSHM-RESULT probe kind=throughput transport=sivshm size=4096 messages=100 seconds=1.000 mib_s=400.00 msgs_s=102400 rings_per_msg=0.0100",
            "SIVSHM-RESULT probe kind=throughput transport=sivshm size=65536 messages=100 seconds=1.000 mib_s=800.00 msgs_s=12800 rings_per_msg=0.0010",
            "SIVSHM-RESULT probe kind=throughput transport=tcp size=4096 messages=10 seconds=1.000 mib_s=20.00 msgs_s=5120",
            "SIVSHM-RESULT probe kind=throughput transport=tcp size=65536 messages=10 seconds=1.000 mib_s=20.00 msgs_s=320",
            "SIVSHM-RESULT probe kind=throughput transport=memcpy size=4096 messages=10 seconds=1.000 mib_s=500.00 msgs_s=128000",
            "SIVSHM-RESULT probe kind=throughput transport=memcpy size=65536 messages=10 seconds=1.000 mib_s=5000.00 msgs_s=80000",
            "SIVSHM-RESULT probe kind=throughput transport=sivshm-c size=65536 messages=100 seconds=1.000 mib_s=780.00 msgs_s=12480 rings_per_msg=0.0010",
            "SIVSHM-RESULT probe kind=latency transport=sivshm size=64 n=10 p50_us=100.0 p99_us=300.0 max_us=400.0 rings_per_rt=1.500",
            "SIVSHM-RESULT probe kind=latency transport=tcp size=64 n=10 p50_us=1000.0 p99_us=6000.0 max_us=9000.0",
            "SIVSHM-RESULT probe kind=latency transport=pipe size=64 n=10 p50_us=50.0 p99_us=60.0 max_us=70.0",
        ];
        ChannelRun {
            schema: SCHEMA.into(),
            accel: "tcg".into(),
            options: o,
            memory: vec![MemType {
                vm: "manager".into(),
                bdf: "0000:00:04.0".into(),
                driver: "write-back".into(),
                pat: "write-back".into(),
            }],
            probes: crate::bench::tests::probes(&lines),
        }
    }

    #[test]
    fn the_run_reads_back_whole_and_gives_the_same_tables_and_plot() {
        let run = run();
        let text = run.to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], "sivshm-lab/channel-bench/1");
        assert_eq!(v["accel"], "tcg");
        assert_eq!(v["options"]["sizes"], serde_json::json!([4096, 65536]));
        assert_eq!(v["options"]["c_sizes"], serde_json::json!([65536]));
        assert_eq!(v["options"]["spin_us"], serde_json::Value::Null);
        assert_eq!(v["options"]["hugepages"], "2M");
        assert_eq!(v["memory"][0]["pat"], "write-back");
        let p = &v["probes"][6];
        assert_eq!(
            (&p["kind"], &p["transport"]),
            (&"throughput".into(), &"sivshm-c".into())
        );
        assert_eq!(p["values"]["msgs_s"].as_f64(), Some(12480.0));
        let back = ChannelRun::from_json(&text).unwrap();
        assert_eq!(back.probes, run.probes);
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.svg"), dir.path().join("b.svg"));
        let (ta, tb) = (
            super::super::report(&run, Some(&a)).unwrap(),
            super::super::report(&back, Some(&b)).unwrap(),
        );
        assert_eq!(ta[..ta.len() - 2], tb[..tb.len() - 2]);
        assert!(
            ta.iter()
                .any(|l| l.contains("| 64 KiB | 12800 | 12480 | 0.975")),
            "{ta:?}"
        );
        assert!(ta[1].contains("manager: sivshm device 0000:00:04.0 is write-back"));
        assert_eq!(
            std::fs::read_to_string(&a).unwrap(),
            std::fs::read_to_string(&b).unwrap()
        );
        let e = ChannelRun::from_json(&text.replace("channel-bench/1", "channel-bench/9"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("channel-bench/9"), "{e}");
    }
}
