//! The PCI address plan of a sivshm guest: where every ivshmem device and every PCI bridge
//! sits, for the user's own VMs (`qemu-args`, `libvirt-xml`, `serve`) and for the lab's test
//! guests alike. The one place that decides addresses: a device's address is a function of
//! its index alone, the same on every boot, whether it was there at boot or hot-plugged.

use anyhow::{bail, Result};

/// The i440fx machine's bus 0 has slots 0 to 31; QEMU's `pci-bridge` has 32, of which slot
/// 0 is left free (31 usable, as with the bridge's SHPC).
pub const BRIDGE_FIRST_SLOT: u8 = 1;
/// The slot of bus 0 that the first PCI bridge takes; bridge `k` takes `BRIDGE_SLOT + k`.
pub const BRIDGE_SLOT: u8 = 0x1c;
/// Bridges a guest can have (bus 0's slots `BRIDGE_SLOT` to 31).
pub const MAX_BRIDGES: u8 = 32 - BRIDGE_SLOT;

/// Where a device sits: a slot of bus 0, or a slot behind one of the guest's PCI bridges.
///
/// Bridge `k` is a `pci-bridge` with id [`bridge_id`]`(k)` and `chassis_nr=K+1` at bus 0's
/// slot `BRIDGE_SLOT + k` ([`bridge_slot`]). The firmware numbers the buses behind bridges
/// depth first in slot order, and no other bridge sits on bus 0 at a lower slot, so bridge
/// `k`'s bus is `k + 1` ([`bridge_bus`]): the address is the same on every boot and does not
/// depend on which devices are present (the bridges are always there, so a device
/// hot-plugged later gets the address it was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciSlot {
    pub bridge: Option<u8>,
    pub slot: u8,
}

impl PciSlot {
    /// Slot `slot` of bus 0.
    pub const fn root(slot: u8) -> Self {
        PciSlot { bridge: None, slot }
    }

    /// Slot `slot` behind bridge `bridge`.
    pub const fn behind(bridge: u8, slot: u8) -> Self {
        PciSlot {
            bridge: Some(bridge),
            slot,
        }
    }

    /// The guest's bus number.
    pub fn bus(&self) -> u8 {
        self.bridge.map_or(0, bridge_bus)
    }

    /// The guest's PCI address, as `lspci -D` and `SIVSHM_IOCTL_GET_INFO` give it.
    pub fn bdf(&self) -> String {
        format!("0000:{:02x}:{:02x}.0", self.bus(), self.slot)
    }

    /// QEMU's `-device` properties that place a device here.
    pub fn qemu_props(&self) -> String {
        match self.bridge {
            None => format!("addr={:#x}.0", self.slot),
            Some(b) => format!("bus={},addr={:#x}.0", bridge_id(b), self.slot),
        }
    }

    /// Checks that the slot exists: 0 to 31 on bus 0, 1 to 31 behind a bridge that exists.
    pub fn check(&self) -> Result<()> {
        match self.bridge {
            None if self.slot < 32 => Ok(()),
            Some(b) if b < MAX_BRIDGES && (BRIDGE_FIRST_SLOT..32).contains(&self.slot) => Ok(()),
            _ => bail!("no PCI slot {self}"),
        }
    }
}

impl std::fmt::Display for PciSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bridge {
            None => write!(f, "{:#x}", self.slot),
            Some(b) => write!(f, "{:#x} behind bridge {b}", self.slot),
        }
    }
}

/// QEMU's id of bridge `k`, which also names its bus (`bus=` of the devices behind it).
/// `qemu-args` adds the bridges to the user's own VMs: the `sivshm-` prefix keeps the id
/// apart from the user's devices, and the dot from the service's `sivshm-NAME` devices
/// (VM names have no dot).
pub fn bridge_id(k: u8) -> String {
    format!("sivshm-bridge.{k}")
}

/// The slot of bus 0 that bridge `k` takes.
pub const fn bridge_slot(k: u8) -> PciSlot {
    PciSlot::root(BRIDGE_SLOT + k)
}

/// The guest's number of the bus behind bridge `k`, given that the guest has no other
/// bridge on bus 0 at a lower slot (see [`PciSlot`]).
pub const fn bridge_bus(k: u8) -> u8 {
    k + 1
}

/// Bridge `k`'s chassis number: QEMU's `chassis_nr`, libvirt's `chassisNr`. QEMU requires
/// every bridge to have a chassis number of its own, above 0.
pub fn bridge_chassis(k: u8) -> u16 {
    u16::from(k) + 1
}

/// The 64-bit prefetchable window each bridge asks the firmware for (QEMU's `pref64-reserve`,
/// read by SeaBIOS and OVMF from the bridge's resource-reserve capability), in GiB.
///
/// It is what makes the shared memory write-back (Documentation/memory-type.rst). Firmware
/// marks the 32-bit PCI hole uncached in the guest's MTRRs and write-back everything above
/// 4 GiB, and the guest's PAT type of BAR2 follows the MTRRs. SeaBIOS 1.16 places 64-bit BARs
/// in the 32-bit hole whenever everything fits there; a window larger than the hole (at most
/// about 2 GiB) does not, so SeaBIOS moves every 64-bit BAR of bus 0 and every bridge's
/// 64-bit window above 4 GiB, and devices behind a bridge, also those hot-plugged later, get
/// their BAR2 from its window. 12 GiB rather than just over 2: SeaBIOS puts the 64-bit area
/// at the top of the physical address space and, where QEMU reserves AMD's HyperTransport
/// hole (the 12 GiB below 1 TiB, with 40 physical address bits), moves it down by its own
/// size only once; an area of at least 12 GiB thus lies wholly below the hole, where the
/// guest kernel may still allocate BARs for hot-plugged devices.
pub const BRIDGE_PREF64_RESERVE_GIB: u64 = 12;

/// [`BRIDGE_PREF64_RESERVE_GIB`] in bytes (libvirt's `<qemu:property type='unsigned'>`).
pub const BRIDGE_PREF64_RESERVE: u64 = BRIDGE_PREF64_RESERVE_GIB << 30;

/// `-device` arguments of bridge `k`: with the 64-bit window that puts the shared memory
/// above 4 GiB ([`BRIDGE_PREF64_RESERVE_GIB`]).
pub fn bridge_device(k: u8) -> String {
    format!(
        "{},pref64-reserve={BRIDGE_PREF64_RESERVE_GIB}G",
        bridge_device_in_hole(k)
    )
}

/// `-device` arguments of bridge `k` without a reserved 64-bit window: the firmware then
/// leaves small 64-bit BARs in the uncached 32-bit PCI hole (the lab's `Vm::in_uncached_hole`).
pub fn bridge_device_in_hole(k: u8) -> String {
    format!(
        "pci-bridge,id={},chassis_nr={},addr={:#x}.0",
        bridge_id(k),
        bridge_chassis(k),
        bridge_slot(k).slot
    )
}

/// The bridges a guest needs for devices at `slots`: bridge 0 up to the highest one they
/// sit behind.
pub fn bridges_used(slots: impl IntoIterator<Item = PciSlot>) -> u8 {
    slots
        .into_iter()
        .filter_map(|s| s.bridge)
        .map(|b| b.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// The bridges a guest gets for devices at `slots`: those they sit behind, and at least
/// bridge 0, whose 64-bit window moves every BAR2 of bus 0 above 4 GiB
/// ([`BRIDGE_PREF64_RESERVE_GIB`]).
pub fn bridges_for_write_back(slots: impl IntoIterator<Item = PciSlot>) -> u8 {
    bridges_used(slots).max(1)
}

/// First PCI slot used for sivshm devices (0-3 hold the i440fx chipset's devices).
pub const FIRST_SLOT: u8 = 4;
/// Workers whose manager device sits on bus 0 (slots `FIRST_SLOT` up to the bridges').
pub const ROOT_WORKERS: usize = (BRIDGE_SLOT - FIRST_SLOT) as usize;
/// Workers behind each of the manager's PCI bridges.
pub const PER_BRIDGE: usize = 32 - BRIDGE_FIRST_SLOT as usize;
/// Worker channels one manager takes: bus 0's, then every bridge's.
pub const MAX_WORKERS: usize = ROOT_WORKERS + MAX_BRIDGES as usize * PER_BRIDGE;

/// Where the manager's device for worker `i` sits: slot `FIRST_SLOT + i` of bus 0 for the
/// first `ROOT_WORKERS`, then slot 1 to 31 of bridge 0, bridge 1, and so on. A function of
/// the index alone, so a worker's address never depends on how many workers there are or on
/// whether the device was there at boot or hot-plugged.
pub fn manager_slot(i: usize) -> Result<PciSlot> {
    if i < ROOT_WORKERS {
        return Ok(PciSlot::root(FIRST_SLOT + i as u8));
    }
    let j = i - ROOT_WORKERS;
    if j >= MAX_BRIDGES as usize * PER_BRIDGE {
        bail!("at most {MAX_WORKERS} workers fit on the manager's PCI bus and bridges");
    }
    Ok(PciSlot::behind(
        (j / PER_BRIDGE) as u8,
        BRIDGE_FIRST_SLOT + (j % PER_BRIDGE) as u8,
    ))
}

/// The bridges the manager needs for `workers` worker channels.
pub fn bridges_for(workers: usize) -> u8 {
    workers
        .saturating_sub(ROOT_WORKERS)
        .div_ceil(PER_BRIDGE)
        .min(MAX_BRIDGES as usize) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_that_do_not_exist_are_refused_and_addresses_follow_the_bridges() {
        for bad in [
            PciSlot::root(32),
            PciSlot::behind(0, 0),
            PciSlot::behind(0, 32),
            PciSlot::behind(MAX_BRIDGES, 1),
        ] {
            assert!(bad.check().is_err(), "{bad}");
        }
        assert!(PciSlot::behind(MAX_BRIDGES - 1, 31).check().is_ok());
        assert_eq!(PciSlot::behind(3, 1).bdf(), "0000:04:01.0");
        assert_eq!(PciSlot::behind(1, 31).bdf(), "0000:02:1f.0");
        assert_eq!(PciSlot::root(4).bdf(), "0000:00:04.0");
        assert_eq!(
            PciSlot::behind(1, 31).qemu_props(),
            "bus=sivshm-bridge.1,addr=0x1f.0"
        );
        assert_eq!(PciSlot::root(5).qemu_props(), "addr=0x5.0");
    }

    #[test]
    fn bridge_0_and_its_64_bit_window_are_there_for_write_back() {
        assert_eq!(
            bridge_device(3),
            format!("{},pref64-reserve=12G", bridge_device_in_hole(3))
        );
        assert_eq!(
            bridge_device_in_hole(0),
            "pci-bridge,id=sivshm-bridge.0,chassis_nr=1,addr=0x1c.0"
        );
        assert_eq!(BRIDGE_PREF64_RESERVE, 12 << 30);
        assert_eq!(bridges_used([PciSlot::root(4)]), 0);
        assert_eq!(bridges_for_write_back([PciSlot::root(4)]), 1);
        assert_eq!(bridges_used([PciSlot::behind(2, 1)]), 3);
        assert_eq!(bridges_for_write_back([PciSlot::behind(2, 1)]), 3);
    }

    #[test]
    fn past_bus_0_the_managers_devices_go_behind_bridges_at_stable_addresses() {
        assert_eq!(ROOT_WORKERS, 24);
        const { assert!(MAX_WORKERS >= 128) };
        assert_eq!(manager_slot(23).unwrap().bdf(), "0000:00:1b.0");
        assert_eq!(manager_slot(24).unwrap().bdf(), "0000:01:01.0");
        assert_eq!(manager_slot(54).unwrap().bdf(), "0000:01:1f.0");
        assert_eq!(manager_slot(55).unwrap().bdf(), "0000:02:01.0");
        assert_eq!(manager_slot(127).unwrap().bdf(), "0000:04:0b.0");
        assert!(manager_slot(MAX_WORKERS - 1).is_ok());
        assert!(manager_slot(MAX_WORKERS).is_err());
        assert_eq!(
            (
                bridges_for(24),
                bridges_for(25),
                bridges_for(55),
                bridges_for(56)
            ),
            (0, 1, 1, 2)
        );
        // Every address differs, and none is a bridge's own slot.
        let mut all: Vec<PciSlot> = (0..MAX_WORKERS).map(|i| manager_slot(i).unwrap()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), MAX_WORKERS);
        for k in 0..MAX_BRIDGES {
            assert!(!all.contains(&bridge_slot(k)));
        }
    }
}
