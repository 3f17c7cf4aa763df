//! Tests of the benchmarks' command lines and tables, with made-up figures (nothing timed).

use super::table::{parse_probe, size_name, table, Probe};
use super::*;

/// The channel benchmark's options with these throughput sizes (10 round trips of 64 B,
/// 1 s per size, an 8 MiB segment, the channel's spin).
fn options(sizes: Vec<usize>) -> ProbeOptions {
    ProbeOptions {
        round_trips: 10,
        round_trip_size: 64,
        seconds: 1.0,
        sizes,
        segment_mib: 8,
        spin_us: None,
        spin_max_us: None,
        vsock_backend: None,
        c_sizes: vec![],
        hugepages: None,
        window: 32,
    }
}

/// The probe figures of `lines` (a guest's log), as the benchmark reads them.
pub(super) fn probes(lines: &[&str]) -> Vec<Probe> {
    console::parse(&lines.join("\n"))
        .results_of(PROBE)
        .map(|l| parse_probe(l).unwrap())
        .collect()
}

#[test]
fn figures_are_read_from_the_guest_result_line() {
    let r = console::parse(
        "pingpong doorbell-between-vms: n=10 p50=812.5 us p99=1503.0 us min=1 us max=2 us\n\
         SIVSHM-RESULT doorbell-pingpong name=doorbell-between-vms n=10 p50_us=812.5 \
         p99_us=1503.0 min_us=1.0 max_us=2.0\n",
    );
    let lines: Vec<_> = r.results_of(PINGPONG).collect();
    assert_eq!(lines.len(), 1, "the prose line is not read");
    let f = parse(lines[0]).unwrap();
    assert_eq!(f.name, "doorbell-between-vms");
    assert_eq!((f.p50, f.p99), (812.5, 1503.0));
    let partial = console::parse("SIVSHM-RESULT doorbell-pingpong name=x p50_us=1.0\n");
    assert!(parse(&partial.results[0]).is_none(), "no p99");
}

#[test]
fn a_probe_line_with_a_word_that_is_not_a_number_is_refused() {
    let r = console::parse(
        "SIVSHM-RESULT probe kind=latency transport=tcp size=64 p50_us=fast\n\
         SIVSHM-RESULT probe kind=storm transport=tcp size=64\n\
         SIVSHM-RESULT probe kind=latency size=64\n",
    );
    assert!(r.results.iter().all(|l| parse_probe(l).is_none()));
}

#[test]
fn probe_lines_make_one_table_with_the_ratios() {
    let o = options(vec![4096]);
    let lines = [
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=4096 messages=100 seconds=1.000 mib_s=400.00 msgs_s=102400 rings_per_msg=0.0100",
        "SIVSHM-RESULT probe kind=throughput transport=tcp size=4096 messages=10 seconds=1.000 mib_s=20.00 msgs_s=5120",
        "SIVSHM-RESULT probe kind=throughput transport=memcpy size=4096 messages=10 seconds=1.000 mib_s=500.00 msgs_s=128000",
        "SIVSHM-RESULT probe kind=latency transport=sivshm size=64 n=10 p50_us=100.0 p99_us=300.0 max_us=400.0 rings_per_rt=1.500",
        "SIVSHM-RESULT probe kind=latency transport=tcp size=64 n=10 p50_us=1000.0 p99_us=6000.0 max_us=9000.0",
        "SIVSHM-RESULT probe kind=latency transport=pipe size=64 n=10 p50_us=50.0 p99_us=60.0 max_us=70.0",
        "SIVSHM-RESULT distribute-worker rounds=3",
    ];
    let probes: Vec<Probe> = probes(&lines);
    assert_eq!(probes.len(), 6);
    let t = table(&probes, &o).unwrap().join("\n");
    assert!(
        t.contains("| throughput, 4 KiB messages | 400.0 MiB/s (102400 msg/s) | 20.0 MiB/s"),
        "{t}"
    );
    assert!(t.contains("| 20.0x | 0.80 | 0.010 |"), "{t}");
    assert!(t.contains("| round trip p50, 64 B | 100 us | 1000 us | 50 us | TCP / sivshm 10.0x | 2.0x the floor | 1.50 per round trip |"), "{t}");
    assert!(t.contains("TCP / sivshm 20.0x"), "{t}");
    assert!(t.contains("| 0.010 | n/a | | |"), "no shm-copy line: {t}");
    // A missing figure is an error naming it, not a hole in the table.
    let e = table(&probes[1..], &o).unwrap_err().to_string();
    assert!(
        e.contains("no throughput figure for sivshm at 4096 bytes"),
        "{e}"
    );
}

#[test]
fn the_shm_copy_line_adds_its_cell_and_ratios() {
    let o = options(vec![1 << 20]);
    let lines = [
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=1048576 messages=600 seconds=1.000 mib_s=600.00 msgs_s=600 rings_per_msg=0.7060",
        "SIVSHM-RESULT probe kind=throughput transport=tcp size=1048576 messages=30 seconds=1.000 mib_s=30.00 msgs_s=30",
        "SIVSHM-RESULT probe kind=throughput transport=memcpy size=1048576 messages=800 seconds=1.000 mib_s=800.00 msgs_s=800",
        "SIVSHM-RESULT probe kind=throughput transport=shm-copy size=1048576 messages=750 seconds=1.000 mib_s=750.00 msgs_s=750",
        "SIVSHM-RESULT probe kind=latency transport=sivshm size=64 n=10 p50_us=8.0 p99_us=300.0 max_us=400.0 rings_per_rt=0.500",
        "SIVSHM-RESULT probe kind=latency transport=tcp size=64 n=10 p50_us=1000.0 p99_us=6000.0 max_us=9000.0",
        "SIVSHM-RESULT probe kind=latency transport=pipe size=64 n=10 p50_us=50.0 p99_us=60.0 max_us=70.0",
    ];
    let probes: Vec<Probe> = probes(&lines);
    let p = &probes[3];
    assert_eq!(
        (p.kind.as_str(), p.transport.as_str()),
        ("throughput", "shm-copy")
    );
    assert_eq!(p.values["mib_s"], 750.0);
    let t = table(&probes, &o).unwrap().join("\n");
    assert!(
        t.contains("| 20.0x | 0.75 | 0.706 | 750.0 MiB/s (750 msg/s) | 0.80 | 0.94 |"),
        "{t}"
    );
}

#[test]
fn the_bench_vms_get_the_channel_and_the_link() {
    let o = options(vec![64, 1 << 20]);
    let t = Topology::new(1, 8 << 20, &o).unwrap().network().unwrap();
    let run = &t.manager.env[0].1;
    assert!(run.contains("--connect 10.77.0.2:7777"), "{run}");
    assert!(run.contains("--sizes 64,1048576 --seconds 1"), "{run}");
    assert!(
        run.contains("throughput --transport shm-copy --region-kib 7168 --sizes"),
        "{run}"
    );
    assert!(!run.contains("--spin"), "{run}");
    let spun = ProbeOptions {
        spin_us: Some(5000),
        spin_max_us: Some(0),
        vsock_backend: None,
        ..o.clone()
    };
    let t = Topology::new(1, 8 << 20, &spun).unwrap().network().unwrap();
    let (run, serve) = (&t.manager.env[0].1, &t.workers[0].env[0].1);
    assert!(
        run.contains("suite --transport sivshm --spin-us 5000 --spin-max-us 0 --latency"),
        "{run}"
    );
    assert!(
        serve.contains("serve --transport sivshm --spin-us 5000 --spin-max-us 0 &&"),
        "{serve}"
    );
    assert_eq!((t.manager.devices.len(), t.manager.nics.len()), (1, 1));
    assert_eq!(
        (t.workers[0].devices.len(), t.workers[0].nics.len()),
        (1, 1)
    );
    assert!(!run.contains("vsock") && !serve.contains("vsock"), "{run}");
    assert!(
        run.contains("suite --transport channel-local --region-kib 7168"),
        "the in-VM channel's round trip too: {run}"
    );
    let with_vsock = ProbeOptions {
        vsock_backend: Some("/x/vhost-device-vsock".into()),
        ..o.clone()
    };
    let t = Topology::new(1, 8 << 20, &with_vsock)
        .unwrap()
        .network()
        .unwrap();
    let (run, serve) = (&t.manager.env[0].1, &t.workers[0].env[0].1);
    assert!(
        run.ends_with(
            "&& sivshm-probe suite --transport vsock --vsock-cid 4 --latency-sizes 64 \
             --count 10 --sizes 64 --seconds 1"
        ),
        "vsock streams the sizes below 4 KiB only: {run}"
    );
    let large_only = ProbeOptions {
        sizes: vec![1 << 20],
        ..with_vsock.clone()
    };
    let t = Topology::new(1, 8 << 20, &large_only).unwrap();
    let run = &t.manager.env[0].1;
    assert!(
        run.ends_with(
            "&& sivshm-probe latency --transport vsock --vsock-cid 4 --latency-sizes 64 --count 10"
        ),
        "{run}"
    );
    assert!(
        serve.ends_with("&& sivshm-probe serve --transport vsock"),
        "{serve}"
    );
    assert_eq!(size_name(1 << 20), "1 MiB");
    assert_eq!(size_name(65536), "64 KiB");
    assert_eq!(size_name(64), "64 B");
}

#[test]
fn the_references_table_gives_each_ratio_against_its_target() {
    let o = options(vec![64, 65536, 4096]);
    let lines = [
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=400000",
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=4096 messages=1 seconds=1.000 mib_s=1.00 msgs_s=1000",
        "SIVSHM-RESULT probe kind=throughput transport=rtrb size=4096 messages=1 seconds=1.000 mib_s=1.00 msgs_s=2000",
        "SIVSHM-RESULT probe kind=throughput transport=channel-local size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=500000",
        "SIVSHM-RESULT probe kind=throughput transport=rtrb size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=1000000",
        "SIVSHM-RESULT probe kind=throughput transport=shm-copy size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=8000000",
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=65536 messages=1 seconds=1.000 mib_s=1000.00 msgs_s=16000",
    ];
    let probes: Vec<Probe> = probes(&lines);
    let t = super::table::references(&probes, &o).unwrap();
    assert_eq!(t.len(), 5, "{t:?}");
    // No target against rtrb at 4 KiB: the bare ratio.
    assert_eq!(
        t[4],
        "| 4 KiB | 1000 | n/a | 2000 | n/a | n/a | 0.50 | n/a |"
    );
    assert_eq!(
        t[2],
        "| 64 B | 400000 | 500000 | 1000000 | 8000000 | 0.80 (>= 0.9) (below target) \
         | 0.40 (>= 0.5) (below target) | 0.05 (>= 0.5) (below target) |"
    );
    // A run without the references (an older guest) still gives its row.
    assert_eq!(
        t[3],
        "| 64 KiB | 16000 | n/a | n/a | n/a | n/a | n/a | n/a |"
    );
    // No sivshm figure at a size is an error, not a row of n/a.
    assert!(super::table::references(&probes[3..6], &o).is_err());
}

#[test]
fn the_plot_lines_are_the_throughput_figures_per_transport_sivshm_first() {
    let o = options(vec![64, 4096]);
    let lines = [
        "SIVSHM-RESULT probe kind=throughput transport=memcpy size=64 mib_s=50.00 msgs_s=819200",
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=64 mib_s=4.00 msgs_s=65536",
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=4096 mib_s=400.00 msgs_s=102400",
        "SIVSHM-RESULT probe kind=throughput transport=rtrb size=4096 mib_s=800.00 msgs_s=204800",
        "SIVSHM-RESULT probe kind=throughput transport=rtrb size=65536 mib_s=800.00 msgs_s=12800",
        "SIVSHM-RESULT probe kind=latency transport=sivshm size=64 n=10 p50_us=100.0 p99_us=300.0",
    ];
    let probes: Vec<Probe> = probes(&lines);
    let got = super::table::throughput_lines(&probes, &o);
    let want = [
        ("sivshm", vec![(64.0, 65536.0), (4096.0, 102400.0)]),
        ("memcpy", vec![(64.0, 819200.0)]),
        ("rtrb", vec![(4096.0, 204800.0)]),
    ];
    assert_eq!(got.len(), want.len());
    for (l, (name, points)) in got.iter().zip(want) {
        assert_eq!((l.label.as_str(), &l.points), (name, &points));
    }
}

#[test]
fn the_alternatives_table_gives_the_lead_over_vsock_and_tcp_and_the_round_trip_target() {
    let o = options(vec![64, 4096]);
    let lines = [
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=64 msgs_s=400000",
        "SIVSHM-RESULT probe kind=throughput transport=vsock size=64 msgs_s=8000",
        "SIVSHM-RESULT probe kind=throughput transport=tcp size=64 msgs_s=2000",
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=4096 msgs_s=1000",
        "SIVSHM-RESULT probe kind=throughput transport=tcp size=4096 msgs_s=2000",
        "SIVSHM-RESULT probe kind=latency transport=sivshm size=64 n=10 p50_us=3.0 p99_us=9.0",
        "SIVSHM-RESULT probe kind=latency transport=channel-local size=64 n=10 p50_us=1.0 p99_us=9.0",
        "SIVSHM-RESULT probe kind=latency transport=tcp size=64 n=10 p50_us=1500.0 p99_us=9.0",
    ];
    let probes: Vec<Probe> = probes(&lines);
    let t = super::table::alternatives(&probes, &o).unwrap();
    assert_eq!(
        t[2],
        "| 64 B | 400000 | 8000 | 2000 | 50.0x (ahead) | 200.0x (ahead) |"
    );
    // No vsock figure (a run without its backend): n/a; behind is said, not hidden.
    assert_eq!(t[3], "| 4 KiB | 1000 | n/a | 2000 | n/a | 0.5x (behind) |");
    assert_eq!(
        t[7],
        "| 64 B | 3.0 us | 1.0 us | n/a | 1500.0 us | 3.00 (<= 2) (above target) | n/a | 500x |"
    );
    let met = [
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=64 msgs_s=1",
        "SIVSHM-RESULT probe kind=throughput transport=sivshm size=4096 msgs_s=1",
        "SIVSHM-RESULT probe kind=latency transport=sivshm size=64 p50_us=2.0",
        "SIVSHM-RESULT probe kind=latency transport=channel-local size=64 p50_us=1.0",
    ];
    let met: Vec<Probe> = super::tests::probes(&met);
    let t = super::table::alternatives(&met, &o).unwrap();
    assert!(t[7].contains("| 2.00 (<= 2) (target met) |"), "{t:?}");
    // No sivshm round trip is an error, not a row of n/a.
    assert!(super::table::alternatives(&met[..2], &o).is_err());
}
