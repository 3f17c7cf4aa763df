//! The gateway's configuration file (TOML).
//!
//! ```toml
//! # The manager VM: one entry per worker, each with the link that reaches it and its grant.
//! role = "manager"
//! [[worker]]
//! name = "w0"
//! via = "sivshm:/dev/sivshm0"          # a worker on this host: its own sivshm device
//!                                      # (or sivshm:0000:00:04.0, by PCI address)
//! grant = ["jobs/w0/**"]
//! [[worker]]
//! name = "w2"
//! via = "zenoh:tcp/192.168.77.2:7447"  # a worker on another host: zenoh over TCP
//! grant = ["jobs/w2/**"]
//! ```
//!
//! ```toml
//! # A worker VM: the one link to its manager (a worker trusts its manager: no grant).
//! role = "worker"
//! name = "w0"
//! via = "sivshm:/dev/sivshm0"          # or "zenoh:tcp/0.0.0.0:7447" to listen on
//! ```
//!
//! Which workers are local and which remote is the `via` line alone.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::grant::Grant;

/// How a gateway reaches the other side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// A sivshm device of this VM (the manager: one per worker), by path (`/dev/sivshm0`)
    /// or by PCI address (`0000:00:04.0`).
    Sivshm(PathBuf),
    /// A zenoh endpoint (`tcp/ADDR:PORT`): the manager connects to it, a worker listens on it.
    Zenoh(String),
}

impl std::str::FromStr for Via {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Via> {
        if let Some(dev) = s.strip_prefix("sivshm:") {
            if dev.is_empty() {
                bail!("{s:?}: sivshm: needs a device path (sivshm:/dev/sivshm0)");
            }
            return Ok(Via::Sivshm(PathBuf::from(dev)));
        }
        if let Some(endpoint) = s.strip_prefix("zenoh:") {
            let Some((proto, addr)) = endpoint.split_once('/') else {
                bail!("{s:?}: zenoh: needs an endpoint such as zenoh:tcp/192.168.77.2:7447");
            };
            if proto.is_empty() || addr.is_empty() {
                bail!("{s:?}: zenoh: needs an endpoint such as zenoh:tcp/192.168.77.2:7447");
            }
            return Ok(Via::Zenoh(endpoint.to_string()));
        }
        bail!("{s:?}: a link is sivshm:DEVICE or zenoh:ENDPOINT")
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Sivshm(p) => write!(f, "sivshm:{}", p.display()),
            Via::Zenoh(e) => write!(f, "zenoh:{e}"),
        }
    }
}

/// One worker as the manager's gateway serves it.
#[derive(Clone, Debug)]
pub struct Worker {
    pub name: String,
    pub via: Via,
    pub grant: Grant,
}

/// A gateway's configuration.
#[derive(Clone, Debug)]
pub enum Config {
    Manager { workers: Vec<Worker> },
    Worker { name: String, via: Via },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: String,
    via: String,
    grant: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    role: String,
    name: Option<String>,
    via: Option<String>,
    #[serde(default)]
    worker: Vec<RawWorker>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let raw: Raw = toml::from_str(text).context("gateway configuration")?;
        match raw.role.as_str() {
            "manager" => {
                if raw.name.is_some() || raw.via.is_some() {
                    bail!("a manager has no name or via of its own: each [[worker]] has them");
                }
                if raw.worker.is_empty() {
                    bail!("a manager's configuration needs at least one [[worker]]");
                }
                let mut workers: Vec<Worker> = Vec::new();
                for w in raw.worker {
                    if w.name.is_empty() {
                        bail!("a worker needs a name");
                    }
                    if workers.iter().any(|o| o.name == w.name) {
                        bail!("worker {:?} is listed twice", w.name);
                    }
                    let via: Via = w
                        .via
                        .parse()
                        .with_context(|| format!("worker {}", w.name))?;
                    if let Some(o) = workers.iter().find(|o| o.via == via) {
                        bail!("workers {} and {} share the link {via}", o.name, w.name);
                    }
                    let grant =
                        Grant::new(&w.grant).with_context(|| format!("worker {}", w.name))?;
                    workers.push(Worker {
                        name: w.name,
                        via,
                        grant,
                    });
                }
                Ok(Config::Manager { workers })
            }
            "worker" => {
                if !raw.worker.is_empty() {
                    bail!("a worker's configuration has no [[worker]] entries");
                }
                let name = raw
                    .name
                    .context("a worker's configuration needs name = ...")?;
                let via = raw
                    .via
                    .context("a worker's configuration needs via = ...")?;
                Ok(Config::Worker {
                    via: via.parse()?,
                    name,
                })
            }
            other => bail!("role {other:?}: a gateway is a \"manager\" or a \"worker\""),
        }
    }
}
