//! iceoryx2 services across VMs over sivshm channels, and to other hosts over zenoh.
//!
//! iceoryx2 0.10's link ([`iceoryx2_link::Link`]) extends a local iceoryx2 system across a
//! boundary through a backend; its tunnel backend ([`iceoryx2_link_tunnel::Tunnel`]) runs
//! over a *carrier*, the mechanism that announces services and moves bytes. This crate
//! provides the carrier over a sivshm channel ([`carrier::SivshmCarrier`]); iceoryx2's own
//! zenoh carrier (`iceoryx2-integrations-zenoh-link-carrier`) reaches other hosts. A gateway
//! ([`gateway`]) runs one link per worker, each on that worker's own channel (or on zenoh)
//! and restricted to that worker's [`grant::Grant`]; applications are plain iceoryx2
//! programs either way. Documentation/iceoryx2.rst tells the whole story.

pub mod carrier;
pub mod config;
pub mod event;
pub mod gateway;
pub mod grant;
pub mod granted;
pub mod listing;
pub mod options;
pub mod turn;
pub mod wake;
pub mod wire;

#[cfg(test)]
mod tests;
