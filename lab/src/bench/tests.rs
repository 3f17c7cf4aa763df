//! Tests of the benchmarks' command lines and tables, with made-up figures (nothing timed).

use super::table::{parse_probe, size_name, table, Probe};
use super::*;

#[test]
fn figures_are_read_from_the_guest_line() {
    let f =
        parse("pingpong doorbell-between-vms: n=10 p50=812.5 us p99=1503.0 us min=1 us max=2 us")
            .unwrap();
    assert_eq!(f.name, "doorbell-between-vms");
    assert_eq!((f.p50, f.p99), (812.5, 1503.0));
    assert!(parse("storm: 3 rings").is_none());
}

#[test]
fn probe_lines_make_one_table_with_the_ratios() {
    let o = ProbeOptions {
        round_trips: 10,
        round_trip_size: 64,
        seconds: 1.0,
        sizes: vec![4096],
        segment_mib: 8,
        spin_us: None,
        spin_max_us: None,
        c_sizes: vec![],
        hugepages: None,
    };
    let lines = [
        "throughput sivshm: size=4096 messages=100 seconds=1.000 mib_s=400.00 msgs_s=102400 rings_per_msg=0.0100",
        "throughput tcp: size=4096 messages=10 seconds=1.000 mib_s=20.00 msgs_s=5120",
        "throughput memcpy: size=4096 messages=10 seconds=1.000 mib_s=500.00 msgs_s=128000",
        "latency sivshm: size=64 n=10 p50=100.0 us p99=300.0 us max=400.0 us rings_per_rt=1.500",
        "latency tcp: size=64 n=10 p50=1000.0 us p99=6000.0 us max=9000.0 us",
        "latency pipe: size=64 n=10 p50=50.0 us p99=60.0 us max=70.0 us",
        "serve tcp: 20 messages",
    ];
    let probes: Vec<Probe> = lines.iter().filter_map(|l| parse_probe(l)).collect();
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
    let o = ProbeOptions {
        round_trips: 10,
        round_trip_size: 64,
        seconds: 1.0,
        sizes: vec![1 << 20],
        segment_mib: 8,
        spin_us: None,
        spin_max_us: None,
        c_sizes: vec![],
        hugepages: None,
    };
    let lines = [
        "throughput sivshm: size=1048576 messages=600 seconds=1.000 mib_s=600.00 msgs_s=600 rings_per_msg=0.7060",
        "throughput tcp: size=1048576 messages=30 seconds=1.000 mib_s=30.00 msgs_s=30",
        "throughput memcpy: size=1048576 messages=800 seconds=1.000 mib_s=800.00 msgs_s=800",
        "throughput shm-copy: size=1048576 messages=750 seconds=1.000 mib_s=750.00 msgs_s=750",
        "latency sivshm: size=64 n=10 p50=8.0 us p99=300.0 us max=400.0 us rings_per_rt=0.500",
        "latency tcp: size=64 n=10 p50=1000.0 us p99=6000.0 us max=9000.0 us",
        "latency pipe: size=64 n=10 p50=50.0 us p99=60.0 us max=70.0 us",
    ];
    let probes: Vec<Probe> = lines.iter().filter_map(|l| parse_probe(l)).collect();
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
    let o = ProbeOptions {
        round_trips: 10,
        round_trip_size: 64,
        seconds: 1.0,
        sizes: vec![64, 1 << 20],
        segment_mib: 8,
        spin_us: None,
        spin_max_us: None,
        c_sizes: vec![],
        hugepages: None,
    };
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
        hugepages: None,
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
    assert_eq!(size_name(1 << 20), "1 MiB");
    assert_eq!(size_name(65536), "64 KiB");
    assert_eq!(size_name(64), "64 B");
}

#[test]
fn the_references_table_gives_each_ratio_against_its_target() {
    let o = ProbeOptions {
        round_trips: 10,
        round_trip_size: 64,
        seconds: 1.0,
        sizes: vec![64, 65536, 4096],
        segment_mib: 8,
        spin_us: None,
        spin_max_us: None,
        c_sizes: vec![],
        hugepages: None,
    };
    let lines = [
        "throughput sivshm: size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=400000",
        "throughput sivshm: size=4096 messages=1 seconds=1.000 mib_s=1.00 msgs_s=1000",
        "throughput rtrb: size=4096 messages=1 seconds=1.000 mib_s=1.00 msgs_s=2000",
        "throughput channel-local: size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=500000",
        "throughput rtrb: size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=1000000",
        "throughput shm-copy: size=64 messages=1 seconds=1.000 mib_s=1.00 msgs_s=8000000",
        "throughput sivshm: size=65536 messages=1 seconds=1.000 mib_s=1000.00 msgs_s=16000",
    ];
    let probes: Vec<Probe> = lines.iter().filter_map(|l| parse_probe(l)).collect();
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
    let o = ProbeOptions {
        round_trips: 10,
        round_trip_size: 64,
        seconds: 1.0,
        sizes: vec![64, 4096],
        segment_mib: 8,
        spin_us: None,
        spin_max_us: None,
        c_sizes: vec![],
        hugepages: None,
    };
    let lines = [
        "throughput memcpy: size=64 mib_s=50.00 msgs_s=819200",
        "throughput sivshm: size=64 mib_s=4.00 msgs_s=65536",
        "throughput sivshm: size=4096 mib_s=400.00 msgs_s=102400",
        "throughput rtrb: size=4096 mib_s=800.00 msgs_s=204800",
        "throughput rtrb: size=65536 mib_s=800.00 msgs_s=12800",
        "latency sivshm: size=64 n=10 p50=100.0 us p99=300.0 us",
    ];
    let probes: Vec<Probe> = lines.iter().filter_map(|l| parse_probe(l)).collect();
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
