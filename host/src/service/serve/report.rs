//! What serve reports as data: the status file (`crate::service::status`), rewritten when
//! what it says changed.

use super::Server;
use crate::service::status::{self, Status};

impl Server {
    /// Writes the status file if what it says changed: once every socket listens, then after
    /// each round of events. A failure is logged; serving goes on.
    pub(super) fn publish(&mut self) {
        let status = Status {
            serve: status::Serve {
                topology: self.topo.name.clone(),
                pid: std::process::id(),
                workers: self.topo.workers.iter().map(|w| w.name.clone()).collect(),
                reloads: self.reloads,
                refused: self.refused,
            },
            workers: self
                .topo
                .workers
                .iter()
                .filter_map(|w| {
                    let ch = self.channels.get(&w.name)?;
                    Some(status::Worker {
                        name: w.name.clone(),
                        id: w.id,
                        vectors: w.vectors,
                        mib: w.segment_size >> 20,
                        pages: w.page_size.name().to_string(),
                        segment: ch.segment.origin.word(),
                        doorbells: if ch.doorbells_from_store {
                            "fd-store"
                        } else {
                            "made"
                        },
                    })
                })
                .collect(),
            devices: (0..self.devices.len())
                .map(|d| {
                    let spec = &self.devices[d].spec;
                    status::Device {
                        name: self.name(d),
                        vm: spec.vm.clone(),
                        peer: spec.peer.clone(),
                        own_id: spec.own_id,
                        peer_id: spec.peer_id,
                        bdf: spec.bdf(),
                        clients: self.clients.iter().filter(|c| c.device == d).count(),
                        setups: self.devices[d].setups,
                    }
                })
                .collect(),
        };
        let text = status.render();
        if text == self.published {
            return;
        }
        match status.write(&self.topo.runtime_dir) {
            Ok(()) => self.published = text,
            Err(e) => (self.log)(format!("status not written: {e:#}")),
        }
    }
}
