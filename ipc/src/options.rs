//! The gateway's choices of the user, which every link's turn follows.

use std::time::Duration;

/// Choices of the user.
#[derive(Clone, Debug)]
pub struct Options {
    /// The local iceoryx2 system's configuration.
    pub iceoryx2: iceoryx2::config::Config,
    /// The sivshm channels' configuration.
    pub channel: sivshm::channel::Config,
    /// How often a link looks for new and gone services while they change; the interval
    /// doubles with every look that finds no change, up to [`Self::discover_at_most`].
    pub discover_every: Duration,
    /// The longest interval between two looks for new and gone services.
    pub discover_at_most: Duration,
    /// A look runs the link's discovery only if the services changed (or a discovery
    /// failed), and at least this often in any case.
    pub discover_anyway: Duration,
    /// The longest a link sleeps after a turn that moved nothing, while it was busy lately
    /// (otherwise it sleeps until the next discovery, if nothing wakes it).
    pub idle_wait: Duration,
    /// How long after its last wake-up or move a link counts as busy.
    pub busy_for: Duration,
    /// How long the manager's side waits for a worker's gateway to attach.
    pub attach_timeout: Duration,
    /// How often a link looks at its peer's liveness.
    pub check_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iceoryx2: iceoryx2::config::Config::default(),
            channel: sivshm::channel::Config::default(),
            discover_every: Duration::from_millis(20),
            discover_at_most: Duration::from_secs(1),
            discover_anyway: Duration::from_secs(10),
            idle_wait: Duration::from_millis(1),
            busy_for: Duration::from_millis(100),
            attach_timeout: Duration::from_secs(120),
            check_every: Duration::from_millis(500),
        }
    }
}
