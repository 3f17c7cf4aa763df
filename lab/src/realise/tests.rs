//! Unit tests of `realise`.

use super::*;
use crate::run_file::RunFile;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    o: Options,
}

fn parse(args: &[&str]) -> Result<Options, clap::Error> {
    Cli::try_parse_from(std::iter::once("realise-bench").chain(args.iter().copied())).map(|c| c.o)
}

#[test]
fn the_defaults_are_every_count_to_64_three_runs_every_wiring_under_tcg() {
    let o = parse(&[]).unwrap();
    assert_eq!(o.workers, [1, 2, 4, 8, 16, 32, 64]);
    assert_eq!(o.runs, 3);
    assert_eq!(o.wirings(), Wiring::ALL);
    assert_eq!(o.accel().unwrap(), Accel::Tcg);
    o.check().unwrap();
}

#[test]
fn lists_are_comma_separated_and_bad_values_refused_before_anything_starts() {
    let o = parse(&[
        "--workers",
        "8,1",
        "--runs",
        "5",
        "--modes",
        "ivshmem,sivshm",
    ])
    .unwrap();
    assert_eq!(o.workers, [8, 1]);
    assert_eq!(o.runs, 5);
    // Table order, whatever the order asked.
    assert_eq!(o.wirings(), [Wiring::Sivshm, Wiring::Ivshmem]);
    o.check().unwrap();
    assert!(parse(&["--modes", "bogus"]).is_err());
    for bad in [
        &["--workers", "0"][..],
        &["--workers", &(MAX_WORKERS + 1).to_string()],
        &["--runs", "0"],
        &["--segment-mib", "3"],
        &["--accel", "hvf"],
    ] {
        assert!(parse(bad).unwrap().check().is_err(), "{bad:?}");
    }
}

fn sample(wiring: Wiring, run: usize, ready: f64) -> Sample {
    Sample {
        wiring,
        workers: 8,
        run,
        prepare: 0.001,
        ready,
        manager: ready / 2.0,
    }
}

#[test]
fn a_row_has_each_wirings_spread_the_ratio_and_the_cost_above_the_floor() {
    let samples = [
        sample(Wiring::Sivshm, 1, 0.100),
        sample(Wiring::Sivshm, 2, 0.120),
        sample(Wiring::Sivshm, 3, 0.110),
        sample(Wiring::Ivshmem, 1, 0.150),
        sample(Wiring::Ivshmem, 2, 0.165),
        sample(Wiring::Ivshmem, 3, 0.140),
        sample(Wiring::None, 1, 0.090),
        sample(Wiring::None, 2, 0.100),
        sample(Wiring::None, 3, 0.095),
    ];
    let r = row(8, &Wiring::ALL, &samples);
    assert_eq!(
        r,
        "        8 | 110.0 ms (100.0-120.0) | 150.0 ms (140.0-165.0) | 95.0 ms (90.0-100.0) \
         | 1.36 | +15.0 ms | +55.0 ms"
    );
    let h = header(&Wiring::ALL);
    assert_eq!(h.matches(" | ").count(), r.matches(" | ").count());
    assert!(h.contains("IVSHMEM/SIVSHM"), "{h}");
    // Without the floor or one of the two, the columns that need it are left out.
    let two = row(8, &[Wiring::Sivshm, Wiring::Ivshmem], &samples);
    assert!(two.ends_with("| 1.36"), "{two}");
    let one = row(8, &[Wiring::Sivshm], &samples);
    assert_eq!(one, "        8 | 110.0 ms (100.0-120.0)");
    // Another count's samples are not this row's.
    assert_eq!(row(4, &[Wiring::Sivshm], &samples), "        4 | -");
}

#[test]
fn the_result_line_is_one_line_of_key_value_pairs() {
    let l = sample(Wiring::Ivshmem, 2, 0.5).line(Accel::Tcg);
    assert_eq!(
        l,
        "SIVSHM-RESULT realise-bench mode=ivshmem workers=8 run=2 seconds=0.500000 \
         manager_seconds=0.250000 prepare_seconds=0.001000 qemus=9 accel=tcg"
    );
    // It is read as every program's result line is.
    let r = crate::console::parse(&l);
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].program, "realise-bench");
    assert_eq!(r.results[0].get("qemus"), Some("9"));
}

#[test]
fn the_paused_line_is_the_harness_line_without_the_boot_and_with_s() {
    let m = Machine {
        qemu: "qemu-system-x86_64".into(),
        kernel: "/k/bzImage".into(),
        initrd: "/k/initrd".into(),
        accel: Accel::Tcg,
        memory_mib: 256,
    };
    let mut t = Topology::new(30, 1 << 20, &Idle).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sockets = with_qmp(&mut t, dir.path());
    assert_eq!(sockets.len(), 31);
    assert!(sockets[0].ends_with("manager.qmp"));
    let (args, fds) = paused_args(&m, &t.manager).unwrap();
    let s: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for gone in ["-kernel", "/k/bzImage", "-initrd", "-append", "-serial"] {
        assert!(!s.iter().any(|a| a == gone), "{gone} in {s:?}");
    }
    assert_eq!(s.last().map(String::as_str), Some("-S"));
    assert_eq!(fds.len(), 30);
    assert_eq!(
        s.iter()
            .filter(|a| a.starts_with("ivshmem-doorbell,"))
            .count(),
        30
    );
    // The 25th device on sits behind the first bridge, as in the harness.
    assert!(s
        .iter()
        .any(|a| a.starts_with("pci-bridge,id=sivshm-bridge.0")));
    assert!(s
        .iter()
        .any(|a| a.contains("bus=sivshm-bridge.0,addr=0x1.0")));
    assert!(s
        .iter()
        .any(|a| a.starts_with("unix:") && a.contains("manager.qmp")));
}

#[test]
fn the_plot_draws_the_rows_medians() {
    let samples = [
        sample(Wiring::Sivshm, 1, 0.100),
        sample(Wiring::Sivshm, 2, 0.120),
        sample(Wiring::Sivshm, 3, 0.110),
        sample(Wiring::None, 1, 0.090),
    ];
    assert_eq!(
        table::medians(Wiring::Sivshm, &[4, 8], &samples),
        vec![(8.0, 0.110)]
    );
    let o = parse(&["--workers", "4,8", "--modes", "sivshm,none"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("realise.svg");
    json::RealiseRun::new(&o, samples.to_vec())
        .plot(&path)
        .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("SIVSHM (pre-wired)") && svg.contains("no device (floor)"));
}

#[test]
fn the_json_reads_back_to_the_same_run_and_gives_the_bench_s_table() {
    let samples = vec![
        sample(Wiring::Sivshm, 1, 0.100),
        sample(Wiring::Sivshm, 2, 0.120),
        sample(Wiring::Ivshmem, 1, 0.300),
        sample(Wiring::Ivshmem, 2, 0.200),
    ];
    let o = parse(&["--workers", "8", "--modes", "ivshmem,sivshm", "--runs", "2"]).unwrap();
    let run = json::RealiseRun::new(&o, samples.clone());
    let text = run.to_json();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], "sivshm-lab/realise-bench/1");
    assert_eq!(v["modes"], serde_json::json!(["sivshm", "ivshmem"]));
    assert_eq!(v["workers"], serde_json::json!([8]));
    // Each sample's members are named as in its SIVSHM-RESULT line.
    let s0 = &v["samples"][0];
    assert_eq!(s0["mode"], "sivshm");
    assert_eq!(s0["seconds"].as_f64().unwrap(), samples[0].ready);
    assert_eq!(s0["manager_seconds"].as_f64().unwrap(), samples[0].manager);
    assert_eq!(s0["prepare_seconds"].as_f64().unwrap(), samples[0].prepare);
    let back = json::RealiseRun::from_json(&text).unwrap();
    assert_eq!(back, run);
    let t = back.table();
    assert_eq!(t[0], header(&[Wiring::Sivshm, Wiring::Ivshmem]));
    assert_eq!(t[1], row(8, &[Wiring::Sivshm, Wiring::Ivshmem], &samples));
    assert!(t[1].contains("| 2.27"), "{}", t[1]);
    assert!(t[2].starts_with("# prepare N=8:"), "{}", t[2]);
    // Another schema is refused, naming it.
    let other = text.replace("realise-bench/1", "realise-bench/2");
    let e = json::RealiseRun::from_json(&other).unwrap_err().to_string();
    assert!(e.contains("realise-bench/2"), "{e}");
}
