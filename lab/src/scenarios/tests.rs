//! The scenarios' plans, checked without booting.

use super::stress_fuzz::{fuzz_command, stress_command, stress_vm};
use super::*;
use crate::layout::{Distribute, Topology};

fn run_of(vm: &Vm) -> &str {
    &vm.env.iter().find(|(k, _)| k == "SIVSHM_RUN").unwrap().1
}

#[test]
fn the_racing_scenarios_boot_two_vcpus_the_others_one() {
    // Unbind against faults, release and waiters; interrupts against the test.
    // (single-vm's second guest only checks its device's memory type.)
    for vm in single_vm::plan().unwrap().vms {
        let want = if vm.name == "hole" { 1 } else { 2 };
        assert_eq!(vm.cpus, want, "single-vm/{}", vm.name);
    }
    for vm in two_vm_doorbell::plan().unwrap().vms {
        assert_eq!(vm.cpus, 2, "two-vm-doorbell/{}", vm.name);
    }
    for vm in two_vm_plain::plan().unwrap().vms {
        assert_eq!(vm.cpus, 1, "two-vm-plain/{}", vm.name);
    }
    let roles = Distribute {
        peer_timeout_s: None,
        rounds: 1,
        bytes: 1,
    };
    for vm in Topology::new(2, 1 << 20, &roles).unwrap().vms() {
        assert_eq!(vm.cpus, 1, "distribute/{}", vm.name);
    }
}

#[test]
fn single_vm_runs_sivshmctl_on_a_plain_and_a_doorbell_device() {
    let plan = single_vm::plan().unwrap();
    let run = run_of(&plan.vms[0]);
    assert!(run.contains("&& sivshmctl_test.sh &&"), "{run}");
    // sivshmctl_test.sh reads the devices from SIVSHM_EXPECT: plain first, then doorbell.
    let expect = &plan.vms[0]
        .env
        .iter()
        .find(|(k, _)| k == "SIVSHM_EXPECT")
        .unwrap()
        .1;
    let devices: Vec<&str> = expect.split(';').collect();
    assert_eq!(devices.len(), 2, "{expect}");
    assert!(devices[0].contains(",none,0"), "{expect}");
    assert!(devices[1].ends_with(",2"), "{expect}");
}

#[test]
fn the_network_scenario_links_the_vms_and_checks_both_transports() {
    let t = network::plan().unwrap();
    assert_eq!(t.manager.nics.len(), 1);
    assert_eq!(t.workers[0].nics.len(), 1);
    let run = run_of(&t.manager);
    for want in [
        "--transport sivshm",
        "--transport tcp --connect 10.77.0.2:7777",
    ] {
        assert!(run.contains(want), "{run}");
    }
    // Every transport's data is checked byte by byte.
    assert_eq!(run.matches("--verify").count(), 3, "{run}");
}

#[test]
fn the_hotplug_scenario_plugs_behind_a_bridge_and_runs_the_guest_side_in_order() {
    let p = hotplug::plan(7).unwrap();
    assert_eq!(p.hot.slot.bdf(), "0000:01:01.0");
    assert_eq!(p.manager.bridges, 1);
    assert!(p.manager.qmp.is_some());
    assert!(p.manager.wants_kmemleak());
    let run = run_of(&p.manager);
    let order = [
        "--workers 0000:00:04.0,0000:01:01.0 --late",
        "sivshm_hotplug -t appears",
        "wait_out SIVSHM-RESULT.distribute-manager-progress.impl=rust.index=1.verified=16",
        "echo SIVSHM-HOT''PLUG del 0000:01:01.0",
        "wait_out SIVSHM-RESULT.distribute-manager-event.impl=rust.index=1.event=removed",
        "sivshm_hotplug -t appears",
        "sivshm_hotplug -t unplug_with_live_users",
        "sivshm_hotplug -t churn",
        "touch /tmp/stop",
        "rmmod sivshm",
    ];
    // Each step after the one before (`appears` comes twice).
    let mut from = 0;
    for w in order {
        let at = run[from..]
            .find(w)
            .unwrap_or_else(|| panic!("{w} after {from}: {run}"));
        from += at + w.len();
    }
    let env = |k: &str| {
        p.manager
            .env
            .iter()
            .find(|(n, _)| n == k)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(env("SIVSHM_CHURN"), "7");
    assert_eq!(env("SIVSHM_HOTPLUG_BDF"), "0000:01:01.0");
    // The hot channel's worker has one device, its end of the same channel.
    assert_eq!(p.late.devices.len(), 1);
    assert_eq!(p.cold.devices.len(), 1);
    assert_eq!(p.manager.devices.len(), 1);
}

#[test]
fn the_guest_kernel_is_smp() {
    // Two vCPUs race only in an SMP kernel (its NR_CPUS, 2 in tinyconfig, caps them).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel/sivshm-guest.config");
    let config = std::fs::read_to_string(path).unwrap();
    assert!(config.lines().any(|l| l.trim() == "CONFIG_SMP=y"));
}

#[test]
fn guests_that_unload_the_module_are_scanned_for_leaks_after() {
    let b = Stress::default();
    for (scenario, plan) in [
        (
            "stress-fuzz",
            stress_vm("fuzz", &stress_command(&b)).unwrap(),
        ),
        ("single-vm", single_vm::plan().unwrap()),
        ("two-vm-plain", two_vm_plain::plan().unwrap()),
        ("two-vm-doorbell", two_vm_doorbell::plan().unwrap()),
    ] {
        for vm in &plan.vms {
            assert!(vm.wants_kmemleak(), "{scenario}/{}", vm.name);
            // rmmod last, so that the scan covers the unload too.
            assert!(
                run_of(vm).contains("&& rmmod sivshm"),
                "{scenario}/{}: {}",
                vm.name,
                run_of(vm)
            );
        }
    }
}

#[test]
fn the_stress_scenarios_race_on_two_vcpus_within_the_ci_budget() {
    let b = Stress::default();
    for vm in stress_vm("fuzz", &stress_command(&b)).unwrap().vms {
        assert_eq!(vm.cpus, 2);
        let run = run_of(&vm);
        // Concurrent unbind, rebind, rmmod and insmod: the point of the scenario.
        assert!(run.contains("--chaos"), "{run}");
        assert!(run.contains(&format!("--lifecycle {}", b.cycles)), "{run}");
    }
    // A few thousand operations and tens of cycles in CI; the long run is stress.sh's.
    assert!((1000..=10_000).contains(&b.fuzz_ops));
    assert!(b.fuzz_seconds <= 40);
    assert!((10..=100).contains(&b.cycles));
    let seeded = Stress {
        seed: Some(42),
        ..b.clone()
    };
    assert!(fuzz_command(&seeded).ends_with("--seed 42"));
}

#[test]
fn the_hostile_peer_is_worker_1_next_to_an_honest_worker_0() {
    let t = stress_hostile_peer::plan(&Stress::default()).unwrap();
    let manager = run_of(&t.manager);
    assert!(manager.starts_with("sivshm_hostile victim"), "{manager}");
    assert!(manager.contains("--peer 2"), "{manager}");
    assert!(run_of(&t.workers[0]).starts_with("sivshm-distribute worker"));
    assert!(run_of(&t.workers[1]).starts_with("sivshm_hostile storm"));
}

#[test]
fn the_iceoryx2_scenarios_grant_each_worker_its_own_services_only() {
    for t in [
        iox2_pubsub::plan().unwrap(),
        iox2_isolation::plan().unwrap(),
    ] {
        let run = run_of(&t.manager);
        for i in 0..t.workers.len() {
            assert!(run.contains(&format!("'w{i}@sivshm:")), "{run}");
            assert!(run.contains(&format!("@jobs/w{i}/**'")), "{run}");
        }
        // The kernel command line cannot pass a double quote to init.
        for vm in t.vms() {
            assert!(!run_of(vm).contains('"'), "{}", run_of(vm));
        }
    }
    let t = iox2_remote::plan().unwrap();
    let run = run_of(&t.manager);
    assert!(run.contains("'w0@sivshm:"), "{run}");
    assert!(
        run.contains("'w1@zenoh:tcp/10.77.1.2:7447@jobs/w1/**'"),
        "{run}"
    );
    assert!(run_of(&t.workers[1]).contains("--to-manager w1@zenoh:tcp/0.0.0.0:7447"));
    assert_eq!(t.workers[1].nics.len(), 1);
    let t = iox2_isolation::plan().unwrap();
    assert!(run_of(&t.workers[1]).contains("rogue --victim w0"));
    assert!(run_of(&t.workers[2]).starts_with("sivshm-iox2 hostile"));
    assert!(!run_of(&t.workers[2]).contains("gateway"));
}
