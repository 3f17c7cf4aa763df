//! Tests of `topology_file.rs`: parsing, line numbers of errors, limits.

use super::*;

const GOOD: &str = r#"
name = "lab"
user = "libvirt-qemu"
group = "kvm"

[manager]
name = "mgr"

[[worker]]
name = "w0"
segment_mib = 4
vectors = 2

[[worker]]
name = "w1"
segment_mib = 1
"#;

fn err(text: &str) -> String {
    format!("{:#}", TopologyFile::parse(text).unwrap_err())
}

#[test]
fn a_good_file_is_read_with_defaults() {
    let t = TopologyFile::parse(GOOD).unwrap();
    assert_eq!(t.name, "lab");
    assert_eq!(t.runtime_dir, Path::new("/run/sivshm/lab"));
    assert_eq!(t.manager, "mgr");
    assert_eq!(
        t.user,
        Some(Owner {
            name: "libvirt-qemu".into(),
            line: 3
        })
    );
    assert_eq!(t.group.as_ref().unwrap().line, 4);
    assert_eq!(
        t.workers,
        [
            Worker {
                name: "w0".into(),
                segment_size: 4 << 20,
                vectors: 2,
                page_size: PageSize::Base,
                id: 1,
            },
            Worker {
                name: "w1".into(),
                segment_size: 1 << 20,
                vectors: 1,
                page_size: PageSize::Base,
                id: 2,
            }
        ]
    );
    assert_eq!(t.vm_names(), ["mgr", "w0", "w1"]);
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let dup = GOOD.replace("name = \"w1\"", "name = \"w0\"");
    assert_eq!(err(&dup), "line 15: worker name \"w0\" is given twice");
    let same_as_manager = GOOD.replace("name = \"w1\"", "name = \"mgr\"");
    assert_eq!(
        err(&same_as_manager),
        "line 15: worker name \"mgr\" is the manager's name too"
    );
    let three = GOOD.replace("segment_mib = 4", "segment_mib = 3");
    assert!(
        err(&three).starts_with("line 11: segment_mib = 3 is not a power of two"),
        "{}",
        err(&three)
    );
    let zero = GOOD.replace("segment_mib = 1", "segment_mib = 0");
    assert!(err(&zero).starts_with("line 16: segment_mib = 0 is not a power of two"));
    let vectors = GOOD.replace("vectors = 2", "vectors = 65");
    assert_eq!(err(&vectors), "line 12: vectors = 65 is not from 1 to 64");
    let unknown = GOOD.replace("vectors = 2", "vectorz = 2");
    let e = err(&unknown);
    assert!(
        e.starts_with("line 12: unknown field `vectorz`"),
        "unclear error: {e}"
    );
    let unknown_top = format!("colour = \"red\"\n{GOOD}");
    assert!(err(&unknown_top).starts_with("line 1: unknown field `colour`"));
    let bad_name = GOOD.replace("name = \"w1\"", "name = \"w 1\"");
    assert!(err(&bad_name).starts_with("line 15: a VM name \"w 1\" must be"));
    let slash = GOOD.replace("name = \"lab\"", "name = \"../etc\"");
    assert!(err(&slash).starts_with("line 2: the topology name \"../etc\" must be"));
    let wrong_type = GOOD.replace("segment_mib = 4", "segment_mib = \"4\"");
    assert!(
        err(&wrong_type).starts_with("line 11: invalid type"),
        "{}",
        err(&wrong_type)
    );
    let syntax = GOOD.replace("[manager]", "[manager");
    assert!(err(&syntax).starts_with("line 6: "), "{}", err(&syntax));
    let relative = format!("runtime_dir = \"run/x\"\n{GOOD}");
    assert_eq!(
        err(&relative),
        "line 1: runtime_dir \"run/x\" is not an absolute path"
    );
    let bad_user = GOOD.replace("\"libvirt-qemu\"", "\"a:b\"");
    assert_eq!(err(&bad_user), "line 3: user \"a:b\" is not a valid name");
}

#[test]
fn huge_pages_for_the_file_or_a_worker() {
    let pages = |text: &str| -> Vec<PageSize> {
        TopologyFile::parse(text)
            .unwrap()
            .workers
            .iter()
            .map(|w| w.page_size)
            .collect()
    };
    let big = GOOD.replace("segment_mib = 1\n", "segment_mib = 2048\n");
    assert_eq!(pages(&big), [PageSize::Base, PageSize::Base]);
    // For the whole file (before [manager]), and a worker's own value overrides it.
    let all = big.replace("group = \"kvm\"", "group = \"kvm\"\nhugepages = \"2M\"");
    assert_eq!(pages(&all), [PageSize::Huge2M, PageSize::Huge2M]);
    let w1 = all.replace(
        "segment_mib = 2048",
        "segment_mib = 2048\nhugepages = \"1G\"",
    );
    assert_eq!(pages(&w1), [PageSize::Huge2M, PageSize::Huge1G]);
    let w0_base = all.replace("vectors = 2", "vectors = 2\nhugepages = \"4K\"");
    assert_eq!(pages(&w0_base), [PageSize::Base, PageSize::Huge2M]);
    let only_w0 = big.replace("vectors = 2", "vectors = 2\nhugepages = \"2M\"");
    assert_eq!(pages(&only_w0), [PageSize::Huge2M, PageSize::Base]);

    let bad = big.replace("vectors = 2", "vectors = 2\nhugepages = \"2MB\"");
    assert_eq!(
        err(&bad),
        "line 13: hugepages = \"2MB\" is not \"2M\" or \"1G\" (or \"4K\": no huge pages)"
    );
    let bad_top = big.replace("group = \"kvm\"", "group = \"kvm\"\nhugepages = \"huge\"");
    assert!(
        err(&bad_top).starts_with("line 5: hugepages = \"huge\" is not"),
        "{}",
        err(&bad_top)
    );
    let number = big.replace("vectors = 2", "vectors = 2\nhugepages = 2");
    assert!(
        err(&number).starts_with("line 13: invalid type"),
        "{}",
        err(&number)
    );
    // w0 has 4 MiB: a multiple of 2M pages, not of 1G ones; w1 (1 MiB) not even of 2M.
    let w0_1g = GOOD.replace("vectors = 2", "vectors = 2\nhugepages = \"1G\"");
    assert_eq!(
        err(&w0_1g),
        "line 11: segment_mib = 4 is not a multiple of its 1G pages (hugepages = \"1G\" on \
         line 13)"
    );
    let file_2m = GOOD.replace("group = \"kvm\"", "group = \"kvm\"\nhugepages = \"2M\"");
    assert_eq!(
        err(&file_2m),
        "line 17: segment_mib = 1 is not a multiple of its 2M pages (hugepages = \"2M\" on \
         line 5)"
    );
}

#[test]
fn missing_parts_are_named() {
    assert!(err("name = \"x\"\n").contains("missing field `manager`"));
    let no_workers = "name = \"x\"\n[manager]\nname = \"m\"\n";
    assert_eq!(
        err(no_workers),
        "line 2: no [[worker]]: a topology needs at least one worker"
    );
    let no_size = "name = \"x\"\n[manager]\nname = \"m\"\n[[worker]]\nname = \"w\"\n";
    let e = err(no_size);
    assert!(e.starts_with("line 4: missing field `segment_mib`"), "{e}");
}

#[test]
fn up_to_max_workers_parse_and_one_more_is_an_error_at_its_line() {
    assert_eq!(MAX_WORKERS, 148);
    let t = TopologyFile::parse(&file_with_workers(128, "/r")).unwrap();
    assert_eq!(t.workers.len(), 128);
    assert_eq!(t.workers[127].name, "w127");
    assert_eq!(
        TopologyFile::parse(&file_with_workers(MAX_WORKERS, "/r"))
            .unwrap()
            .workers
            .len(),
        MAX_WORKERS
    );
    let line = 5 + 3 * MAX_WORKERS;
    assert_eq!(
        err(&file_with_workers(MAX_WORKERS + 1, "/r")),
        format!(
            "line {line}: too many workers: at most {MAX_WORKERS} fit on the manager's PCI \
             bus and its 4 bridges"
        )
    );
}

#[test]
fn socket_paths_must_fit_a_unix_address() {
    let long = format!("runtime_dir = \"/{}\"\n{GOOD}", "d".repeat(100));
    let e = err(&long);
    assert!(
        e.starts_with("line 1: the socket path /ddd") && e.contains("more than a unix socket"),
        "{e}"
    );
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.toml");
    std::fs::write(&p, GOOD.replace("vectors = 2", "vectors = 0")).unwrap();
    let e = format!("{:#}", TopologyFile::load(&p).unwrap_err());
    assert_eq!(
        e,
        format!("{}: line 12: vectors = 0 is not from 1 to 64", p.display())
    );
    let e = format!(
        "{:#}",
        TopologyFile::load(&dir.path().join("none")).unwrap_err()
    );
    assert!(e.contains("cannot read the topology file"), "{e}");
}

#[test]
fn ids_are_file_order_unless_given_and_given_ones_are_kept() {
    let t = TopologyFile::parse(GOOD).unwrap();
    assert_eq!((t.workers[0].id, t.workers[1].id), (1, 2));
    // w0 removed, w1 keeps id 2; a new worker takes the lowest free id, 1.
    let text = "name = \"t\"\n[manager]\nname = \"m\"\n\
                [[worker]]\nname = \"w1\"\nsegment_mib = 1\nid = 2\n\
                [[worker]]\nname = \"w2\"\nsegment_mib = 1\n\
                [[worker]]\nname = \"w3\"\nsegment_mib = 1\n";
    let t = TopologyFile::parse(text).unwrap();
    let ids: Vec<u16> = t.workers.iter().map(|w| w.id).collect();
    assert_eq!(ids, [2, 1, 3]);
    let m = t.devices_of("m");
    assert_eq!(
        m.iter()
            .map(|d| (d.peer.as_str(), d.bdf()))
            .collect::<Vec<_>>(),
        [
            ("w2", "0000:00:04.0".to_string()),
            ("w1", "0000:00:05.0".into()),
            ("w3", "0000:00:06.0".into())
        ]
    );
    assert_eq!(t.devices_of("w1")[0].own_id, 2);
    assert_eq!(t.worker("w3").unwrap().index(), 2);
    let twice = text.replace("name = \"w3\"\n", "name = \"w3\"\nid = 2\n");
    assert_eq!(
        err(&twice),
        "line 13: id = 2 is worker \"w1\"'s too (line 4)"
    );
    let zero = text.replace("id = 2", "id = 0");
    assert_eq!(
        err(&zero),
        "line 7: id = 0 is not from 1 to 148 (the manager is peer 0)"
    );
}

#[test]
fn the_manager_may_name_its_qmp_socket() {
    let t = TopologyFile::parse(GOOD).unwrap();
    assert_eq!(t.manager_qmp, None);
    let with = GOOD.replace("name = \"mgr\"\n", "name = \"mgr\"\nqmp = \"/run/m.qmp\"\n");
    let t = TopologyFile::parse(&with).unwrap();
    assert_eq!(t.manager_qmp.as_deref(), Some(Path::new("/run/m.qmp")));
    let rel = GOOD.replace("name = \"mgr\"\n", "name = \"mgr\"\nqmp = \"m.qmp\"\n");
    assert_eq!(
        err(&rel),
        "line 8: qmp \"m.qmp\" is not an absolute path of at most 107 bytes"
    );
}
