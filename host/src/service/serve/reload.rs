//! Reloading the topology file while serve runs (`SIGHUP`, `systemctl reload`): workers
//! added get their segments, eventfds and sockets; workers removed lose theirs; every other
//! device, its clients and its channel stay exactly as they were, so running VMs see nothing.
//!
//! A reload is checked whole before anything is changed, and refused with a message when it
//! would change what running VMs have: another topology name, runtime directory, owner or
//! manager; a kept worker of another size, vectors, pages or id (its channel's place); a
//! removed worker that a QEMU is still connected to. A file that does not parse is refused
//! the same way, its error naming the line. Making the new workers' parts undoes itself if
//! any step fails, so a refused or failed reload leaves the served topology as it was.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};

use super::{listener, remove_stale, segment_line, worker_of, Channel, Served, Server};
use crate::service::doorbells;
use crate::service::store::{self, Origin, Stored};
use crate::service::topology_file::{TopologyFile, Worker};

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// What of the file a reload cannot change, and why.
fn fixed(old: &TopologyFile, new: &TopologyFile) -> Result<()> {
    let restart = "stop serve (and every VM) to change it";
    if new.name != old.name {
        bail!(
            "the topology is named {:?}, not {:?}: {restart}",
            new.name,
            old.name
        );
    }
    if new.manager != old.manager {
        bail!(
            "the manager is named {:?}, not {:?}: its running VM's devices are the manager's \
             of this topology; {restart}",
            new.manager,
            old.manager
        );
    }
    if new.runtime_dir != old.runtime_dir {
        bail!(
            "runtime_dir is {}, not {}: {restart}",
            new.runtime_dir.display(),
            old.runtime_dir.display()
        );
    }
    let name =
        |o: &Option<crate::service::topology_file::Owner>| o.as_ref().map(|o| o.name.clone());
    if name(&new.user) != name(&old.user) || name(&new.group) != name(&old.group) {
        bail!("user or group changed: the sockets' owner stays as serve started; {restart}");
    }
    Ok(())
}

/// A kept worker must keep what its running VMs were given.
fn unchanged(old: &Worker, new: &Worker) -> Result<()> {
    let what = if new.segment_size != old.segment_size {
        format!(
            "its segment_mib from {} to {}",
            old.segment_size >> 20,
            new.segment_size >> 20
        )
    } else if new.vectors != old.vectors {
        format!("its vectors from {} to {}", old.vectors, new.vectors)
    } else if new.page_size != old.page_size {
        format!("its pages from {} to {}", old.page_size, new.page_size)
    } else if new.id != old.id {
        return Err(anyhow::anyhow!(
            "worker {:?} would move from id {} to id {}, and the manager's device for it \
             from {} to {}, which its running VMs would see: give it `id = {}` in the file \
             (ids need not be consecutive)",
            old.name,
            old.id,
            new.id,
            crate::pci::manager_slot(old.index())?.bdf(),
            crate::pci::manager_slot(new.index())?.bdf(),
            old.id
        ));
    } else {
        return Ok(());
    };
    bail!(
        "worker {:?} would change {what}, which its running VMs would see: remove it in one \
         reload and add it again in another",
        old.name
    )
}

impl Server {
    /// Reads the topology file at `path` again and applies it ([`Server::reload`]); logs what
    /// changed, or why nothing did. Tells systemd (`RELOADING=1` with `MONOTONIC_USEC`, then
    /// `READY=1`) when it runs serve. Whether it was applied.
    pub fn reload_file(&mut self, path: &Path) -> bool {
        let tell = |msg: &str, target: &Option<String>| {
            if let Some(t) = target {
                let _ = crate::service::notify::send(t, msg, None);
            }
        };
        // What sd_notify(3) asks of a reload: the time it began, on CLOCK_MONOTONIC.
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
        tell(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"), &self.notify);
        let r = TopologyFile::load(path).and_then(|t| self.reload(t));
        let ok = r.is_ok();
        if ok {
            self.reloads += 1;
        } else {
            self.refused += 1;
        }
        let line = match r {
            Ok(r) => format!(
                "reloaded {}: added {}, removed {}; a manager and {} worker(s)",
                path.display(),
                list(&r.added),
                list(&r.removed),
                self.topo.workers.len()
            ),
            Err(e) => format!("reload refused: {e:#}; nothing was changed"),
        };
        (self.log)(line);
        tell("READY=1", &self.notify);
        ok
    }

    /// Serves `new` from now on: see the module comment. On an error nothing was changed.
    pub fn reload(&mut self, new: TopologyFile) -> Result<Reloaded> {
        fixed(&self.topo, &new)?;
        for w in &new.workers {
            if let Some(old) = self.topo.worker(&w.name) {
                unchanged(old, w)?;
            }
        }
        let removed: Vec<Worker> = self
            .topo
            .workers
            .iter()
            .filter(|w| new.worker(&w.name).is_none())
            .cloned()
            .collect();
        for w in &removed {
            let connected: Vec<String> = self
                .clients
                .iter()
                .filter(|c| worker_of(&self.devices[c.device].spec) == w.name)
                .map(|c| format!("{} ({})", self.name(c.device), c.who))
                .collect();
            if !connected.is_empty() {
                bail!(
                    "worker {:?} is removed from the file, but QEMUs are still connected to its \
                     devices: {}; stop its VM and unplug its device from the manager \
                     (sivshm-host hotplug remove) first",
                    w.name,
                    connected.join(", ")
                );
            }
        }
        let added: Vec<Worker> = new
            .workers
            .iter()
            .filter(|w| self.topo.worker(&w.name).is_none())
            .cloned()
            .collect();
        let mut made = self.make(&new, &added)?;

        // Nothing can fail from here on.
        let mut out = Reloaded::default();
        for w in &removed {
            // Its listeners close when the devices are rebuilt below.
            for d in self.devices.iter().filter(|d| worker_of(&d.spec) == w.name) {
                let _ = std::fs::remove_file(&d.spec.socket);
            }
            self.channels.remove(&w.name);
            let mut how = store::retire(&self.topo, &self.places, w, self.notify.as_deref());
            if let Some(d) = doorbells::retire(&self.topo.name, w, self.notify.as_deref()) {
                how += &format!("; {d}");
            }
            (self.log)(format!(
                "worker {} removed: its sockets are gone, its eventfds closed; its segment: {how}",
                w.name
            ));
            out.removed.push(w.name.clone());
        }
        for (w, line) in &made.lines {
            (self.log)(format!("worker {w} added: {line}"));
            out.added.push(w.clone());
        }
        self.channels.append(&mut made.channels);
        // The devices in the new file's order; clients follow their device (none is on a
        // removed worker's, whose listeners close here).
        let mut old: BTreeMap<_, _> = std::mem::take(&mut self.devices)
            .into_iter()
            .enumerate()
            .map(|(i, d)| (d.spec.socket.clone(), (i, d)))
            .collect();
        let mut renumber = BTreeMap::new();
        for spec in new.devices() {
            let served = match old.remove(&spec.socket) {
                Some((i, d)) => {
                    renumber.insert(i, self.devices.len());
                    Served { spec, ..d }
                }
                None => Served {
                    listener: made
                        .listeners
                        .remove(&spec.socket)
                        .expect("made for each added"),
                    spec,
                    setups: 0,
                },
            };
            self.devices.push(served);
        }
        for c in &mut self.clients {
            c.device = renumber[&c.device];
        }
        self.topo = new;
        Ok(out)
    }

    /// The segments, eventfds and sockets of workers `added` of `new`; what is made is undone
    /// if anything fails.
    fn make(&mut self, new: &TopologyFile, added: &[Worker]) -> Result<Made> {
        let mut made = Made::default();
        if added.is_empty() {
            return Ok(made);
        }
        let part = TopologyFile {
            workers: added.to_vec(),
            ..new.clone()
        };
        let segments = store::open_segments(&part, &self.places, &mut Stored::default())?;
        let result = (|| -> Result<()> {
            for (seg, w) in segments.iter().zip(added) {
                if let Origin::Created(p) = &seg.origin {
                    made.created.push(p.clone());
                }
                made.stored.push(seg.name.clone());
                let line = segment_line(seg, w, self.notify.as_deref())?;
                made.lines.push((w.name.clone(), line));
            }
            for d in part.devices() {
                remove_stale(&d.socket, &mut self.log)?;
                let l = listener(&d.socket, self.ids)?;
                made.listeners.insert(d.socket, l);
            }
            Ok(())
        })();
        if let Err(e) = result {
            made.undo(self.notify.as_deref());
            return Err(e);
        }
        for (seg, w) in segments.into_iter().zip(added) {
            made.stored.extend(doorbells::fd_names(&new.name, w));
            let notify = self.notify.as_deref();
            match Channel::new(&new.name, w, seg, &mut Stored::default(), notify) {
                Ok((ch, doorbells)) => {
                    if let Some((_, line)) = made.lines.iter_mut().find(|(n, _)| *n == w.name) {
                        *line += &format!("; {doorbells}");
                    }
                    made.channels.insert(w.name.clone(), ch);
                }
                Err(e) => {
                    made.undo(self.notify.as_deref());
                    return Err(e);
                }
            }
        }
        Ok(made)
    }
}

/// What a reload made for its new workers, before it is served.
#[derive(Default)]
struct Made {
    channels: BTreeMap<String, Channel>,
    listeners: BTreeMap<std::path::PathBuf, std::os::fd::OwnedFd>,
    /// Segment files made now, and names perhaps put in systemd's fd store.
    created: Vec<std::path::PathBuf>,
    stored: Vec<String>,
    /// Per worker, its segment's log line.
    lines: Vec<(String, String)>,
}

impl Made {
    fn undo(&mut self, notify: Option<&str>) {
        for p in std::mem::take(&mut self.listeners).into_keys() {
            let _ = std::fs::remove_file(p);
        }
        for p in &self.created {
            let _ = std::fs::remove_file(p);
        }
        if let Some(t) = notify {
            for n in &self.stored {
                let _ = crate::service::notify::unstore(t, n);
            }
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
