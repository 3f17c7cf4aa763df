//! `sivshm_host`: the host side of sivshm that users install. It serves a topology file's
//! segments and doorbell wiring to the user's own QEMU VMs (`service`), speaks QEMU's
//! ivshmem protocol (`protocol`), makes the shared-memory segments (`segments`; `huge_pool` reserves huge pages for a
//! run on a host of its own) and decides
//! where every device and PCI bridge sits in a guest (`pci`).
//!
//! The `sivshm-host` binary (`src/bin/sivshm-host`) is a thin command line (`cli`) over this
//! library. The library installs no signal handler of its own accord: [`stop::StopPipe`]
//! does, only when a binary creates one, and removes them when it is dropped. The test and
//! benchmark lab (`lab/`, package
//! `sivshm-lab`) builds on the library; nothing here depends on the lab.

pub mod cli;
pub mod huge_pool;
pub mod pci;
pub mod protocol;
pub mod segments;
pub mod service;
pub mod stop;
