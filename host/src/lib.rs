//! `sivshm_host`: the host side of sivshm that users install. It serves a topology file's
//! segments and doorbell wiring to the user's own QEMU VMs (`service`), speaks QEMU's
//! ivshmem protocol (`protocol`), makes the shared-memory segments (`segments`) and decides
//! where every device and PCI bridge sits in a guest (`pci`).
//!
//! The `sivshm-host` binary (`src/bin/sivshm-host`) is a thin command line (`cli`) over this
//! library; it alone installs signal handlers. The test and benchmark lab (`lab/`, package
//! `sivshm-lab`) builds on the library; nothing here depends on the lab.

pub mod cli;
pub mod pci;
pub mod protocol;
pub mod segments;
pub mod service;
