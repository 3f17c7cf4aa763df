//! The command lines QEMU gets (`Vm::args`).

use super::*;
use sivshm_host::pci::{BRIDGE_PREF64_RESERVE, BRIDGE_SLOT};

/// Two connected Unix stream sockets.
fn stream() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// A NIC as `net::link` makes one (built here, so that `qemu` does not import `net`).
fn nic(slot: u8, host: u8) -> Nic {
    let (socket, _) = stream();
    Nic {
        slot,
        mac: format!("52:54:00:77:00:{host:02x}"),
        addr: format!("10.77.0.{host}/24"),
        mtu: 65520,
        socket,
    }
}

fn machine() -> Machine {
    Machine {
        qemu: "qemu-system-x86_64".into(),
        kernel: "/k/bzImage".into(),
        initrd: "/k/initrd".into(),
        accel: Accel::Tcg,
        memory_mib: 256,
    }
}

fn joined(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn plain_device_is_a_shared_file_backend_at_its_slot() {
    let vm = Vm::new("a", "sivshm_test").device(Device::Plain {
        slot: PciSlot::root(4),
        segment: sivshm_host::segments::create("seg0", 4 << 20).unwrap(),
        size: 4 << 20,
    });
    let (args, fds) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
    let s = joined(&args);
    assert!(
        s.contains("memory-backend-file,id=shm0,size=4194304,share=on,mem-path=/proc/self/fd/10")
    );
    assert!(s.contains("ivshmem-plain,memdev=shm0,addr=0x4.0"));
    assert!(s.contains("-accel tcg"));
    assert!(s.contains("-smp 1"));
    assert!(s.contains("SIVSHM_RUN=sivshm_test"));
    assert_eq!(fds.len(), 1, "the segment's memfd is passed to QEMU");
    assert_eq!(vm.devices[0].bdf(), "0000:00:04.0");
}

#[test]
fn doorbell_chardev_fd_is_mapped_into_the_child() {
    let (_a, b) = stream();
    let vm = Vm::new("a", "true").device(Device::Doorbell {
        slot: PciSlot::root(5),
        chardev: b,
        vectors: 2,
    });
    let (args, fds) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
    let s = joined(&args);
    assert!(s.contains("-chardev socket,id=db0,fd=10"));
    assert!(s.contains("ivshmem-doorbell,chardev=db0,vectors=2,addr=0x5.0"));
    assert_eq!(fds.len(), 1);
    assert_eq!(fds[0].child_fd, 10);
}

#[test]
fn a_nic_is_a_stream_netdev_on_its_inherited_socket_and_init_learns_its_address() {
    let (m, w) = (nic(0x1b, 1), nic(3, 2));
    let vm = Vm::new("a", "true")
        .device(Device::Plain {
            slot: PciSlot::root(4),
            segment: sivshm_host::segments::create("seg0", 1 << 20).unwrap(),
            size: 1 << 20,
        })
        .net(m);
    let (args, fds) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
    let s = joined(&args);
    assert!(
        s.contains("-netdev stream,id=net0,server=off,addr.type=fd,addr.str=11"),
        "{s}"
    );
    assert!(
        s.contains("virtio-net-pci,netdev=net0,mac=52:54:00:77:00:01,host_mtu=65520,addr=0x1b.0"),
        "{s}"
    );
    assert!(
        s.contains("SIVSHM_NET=52:54:00:77:00:01=10.77.0.1/24@65520"),
        "{s}"
    );
    assert!(
        !s.contains("-netdev user") && !s.contains("-nic"),
        "no user-mode networking: {s}"
    );
    assert_eq!(fds.len(), 2);
    assert_eq!(fds[1].child_fd, 11);
    // A NIC on a device's slot is refused, not left to QEMU.
    let clash = Vm::new("b", "true")
        .device(Device::Plain {
            slot: PciSlot::root(3),
            segment: sivshm_host::segments::create("seg1", 1 << 20).unwrap(),
            size: 1 << 20,
        })
        .net(w);
    let e = clash
        .args(&machine(), Path::new("/tmp/b.log"), "id2")
        .unwrap_err();
    assert!(e.to_string().contains("taken twice"), "{e}");
}

#[test]
fn devices_behind_bridges_get_the_bridge_bus_and_its_number() {
    let (_a, b) = stream();
    let vm = Vm::new("m", "true")
        .device(Device::Doorbell {
            slot: PciSlot::behind(1, 31),
            chardev: b,
            vectors: 1,
        })
        .qmp(Path::new("/run/q.sock"));
    assert_eq!(vm.devices[0].bdf(), "0000:02:1f.0");
    let (args, _) = vm.args(&machine(), Path::new("/tmp/m.log"), "id1").unwrap();
    let s = joined(&args);
    // Both bridges exist (the device sits behind the second), each with its chassis.
    assert!(
        s.contains(
            "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,\
             pref64-reserve=12G -device"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "-device pci-bridge,id=sivshm-bridge.1,chassis_nr=2,addr=0x1d.0,\
             pref64-reserve=12G -qmp"
        ),
        "{s}"
    );
    assert!(!s.contains("id=sivshm-bridge.2"), "{s}");
    assert!(
        s.contains("ivshmem-doorbell,chardev=db0,vectors=1,bus=sivshm-bridge.1,addr=0x1f.0"),
        "{s}"
    );
    assert!(
        s.contains("-qmp unix:/run/q.sock,server=on,wait=off"),
        "{s}"
    );
    // Bridges asked for stay, even with nothing behind them (for hot-plug).
    let empty = Vm::new("e", "true").bridges(4);
    let (args, _) = empty
        .args(&machine(), Path::new("/tmp/e.log"), "id2")
        .unwrap();
    assert_eq!(joined(&args).matches("pci-bridge").count(), 4);
}

#[test]
fn slots_that_do_not_exist_or_are_taken_are_refused() {
    for bad in [
        PciSlot::root(32),
        PciSlot::behind(0, 0),
        PciSlot::behind(0, 32),
        PciSlot::behind(MAX_BRIDGES, 1),
    ] {
        assert!(bad.check().is_err(), "{bad}");
        let vm = Vm::new("a", "true").device(Device::Plain {
            slot: bad,
            segment: sivshm_host::segments::create("seg", 1 << 20).unwrap(),
            size: 1 << 20,
        });
        assert!(vm.args(&machine(), Path::new("/tmp/a.log"), "i").is_err());
    }
    // A device on a bridge's own slot of bus 0.
    let clash = Vm::new("a", "true").bridges(1).device(Device::Plain {
        slot: PciSlot::root(BRIDGE_SLOT),
        segment: sivshm_host::segments::create("seg", 1 << 20).unwrap(),
        size: 1 << 20,
    });
    let e = clash
        .args(&machine(), Path::new("/tmp/a.log"), "i")
        .unwrap_err();
    assert!(e.to_string().contains("taken twice"), "{e}");
    assert_eq!(PciSlot::behind(3, 1).bdf(), "0000:04:01.0");
    assert_eq!(PciSlot::root(4).bdf(), "0000:00:04.0");
}

#[test]
fn every_guest_gets_bridge_0_and_its_64_bit_window_for_write_back() {
    let vm = Vm::new("w", "true").device(Device::Plain {
        slot: PciSlot::root(4),
        segment: sivshm_host::segments::create("wb", 1 << 20).unwrap(),
        size: 1 << 20,
    });
    let s = joined(
        &vm.args(&machine(), Path::new("/tmp/w.log"), "id1")
            .unwrap()
            .0,
    );
    assert_eq!(s.matches("-device pci-bridge,").count(), 1, "{s}");
    assert!(
        s.contains(
            "-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0,\
             pref64-reserve=12G"
        ),
        "{s}"
    );
    // Even a guest without devices: a hot-plugged one gets its BAR from the window.
    let s = joined(
        &Vm::new("e", "true")
            .args(&machine(), Path::new("/tmp/e.log"), "id2")
            .unwrap()
            .0,
    );
    assert_eq!(s.matches("pref64-reserve=12G").count(), 1, "{s}");
    assert_eq!(
        bridge_device(3),
        format!("{},pref64-reserve=12G", bridge_device_in_hole(3))
    );
    assert_eq!(BRIDGE_PREF64_RESERVE, 12 << 30);
}

#[test]
fn in_the_uncached_hole_no_bridge_is_added_and_none_reserves_a_window() {
    let plain = |name: &str, slot| Device::Plain {
        slot,
        segment: sivshm_host::segments::create(name, 1 << 20).unwrap(),
        size: 1 << 20,
    };
    let vm = Vm::new("w", "true")
        .in_uncached_hole()
        .device(plain("h0", PciSlot::root(4)));
    let s = joined(
        &vm.args(&machine(), Path::new("/tmp/w.log"), "id1")
            .unwrap()
            .0,
    );
    assert!(!s.contains("pci-bridge"), "{s}");
    assert!(s.contains("ivshmem-plain,memdev=shm0,addr=0x4.0"), "{s}");
    // Behind a bridge: the bridge, without the window.
    let vm = Vm::new("m", "true")
        .in_uncached_hole()
        .device(plain("h1", PciSlot::behind(0, 1)));
    let s = joined(
        &vm.args(&machine(), Path::new("/tmp/m.log"), "id1")
            .unwrap()
            .0,
    );
    assert!(
        s.contains("-device pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0 -object"),
        "{s}"
    );
    assert!(!s.contains("pref64-reserve"), "{s}");
}

#[test]
fn smp_sets_the_vcpu_count() {
    let vm = Vm::new("a", "true").smp(2);
    let (args, _) = vm.args(&machine(), Path::new("/tmp/a.log"), "id1").unwrap();
    assert!(joined(&args).contains("-smp 2"));
}

// tie_to_parent and the signal handling are tested on the real binary: tests/signals.rs.

#[test]
fn values_with_spaces_are_quoted_and_dotted_names_refused() {
    let vm = Vm::new("a", "sivshm_test -v");
    let line = vm.cmdline("id1").unwrap();
    assert!(line.contains("SIVSHM_RUN=\"sivshm_test -v\""));
    assert!(line.contains("SIVSHM_BOOT_ID=id1"));
    let bad = Vm::new("a", "x").env("sivshm.x", "1");
    assert!(bad.cmdline("id1").is_err());
    let quote = Vm::new("a", "echo \"hi\"");
    assert!(quote.cmdline("id1").is_err());
}
