//! Serving the user's own VMs: a topology file ([`topology_file`]), the devices it implies
//! ([`devices`]), `sivshm-host serve` that hands each device's QEMU its setup stream
//! (`serve`), the lines to give QEMU or libvirt (`config`), and plugging a worker's channel
//! into the running manager (`hotplug`), and what a running serve reports (`status`).

pub mod cli;
pub mod config;
pub mod devices;
pub mod doorbells;
pub mod hotplug;
pub mod notify;
pub mod owner;
pub mod runtime_dir;
pub mod serve;
pub mod status;
pub mod store;
pub mod topology_file;
