//! What can go wrong on a channel.

use std::fmt;

/// An error of a [`super::Channel`]. `Corrupt`, `Version`, `Reformatted` and `DeviceGone` end
/// the channel (every later call returns the same error; open it again, or for `DeviceGone`
/// drop it); the others leave it usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A system call failed (mapping, eventfd, ringing the peer).
    Os(rustix::io::Errno),
    /// The window or the configuration cannot hold a channel.
    Geometry(&'static str),
    /// A message longer than the ring can ever hold.
    TooLarge { len: usize, max: usize },
    /// The header, or the peer, speaks another version of the channel.
    Version { ours: u32, theirs: u32 },
    /// No manager formatted the window within the attach timeout.
    NotFormatted,
    /// The peer wrote something no honest peer writes; this channel is dead.
    Corrupt(&'static str),
    /// The manager formatted the channel anew under this side (open it again).
    Reformatted,
    /// The peer detached on purpose.
    PeerClosed,
    /// The peer's heartbeat stood still (or it never attached) for longer than the timeout.
    PeerGone,
    /// Nothing happened before the caller's timeout.
    TimedOut,
    /// The device was removed (hot-unplug, driver unbound): the memory is no longer shared
    /// and the peer is unreachable. Messages in flight are lost.
    DeviceGone,
}

impl Error {
    /// Whether the channel is finished after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Corrupt(_) | Error::Version { .. } | Error::Reformatted | Error::DeviceGone
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(e) => write!(f, "{e}"),
            Error::Geometry(what) => write!(f, "cannot lay out a channel: {what}"),
            Error::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes is larger than the ring allows ({max} bytes)"
            ),
            Error::Version { ours, theirs } => write!(
                f,
                "channel version {theirs} found, this library speaks version {ours}"
            ),
            Error::NotFormatted => write!(f, "no manager has set up the channel"),
            Error::Corrupt(what) => write!(f, "the peer corrupted the channel: {what}"),
            Error::Reformatted => write!(f, "the manager set the channel up anew"),
            Error::PeerClosed => write!(f, "the peer closed the channel"),
            Error::PeerGone => write!(f, "the peer stopped (no heartbeat within the timeout)"),
            Error::TimedOut => write!(f, "timed out"),
            Error::DeviceGone => write!(f, "the device was removed"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Os(e)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Os(errno) => errno.into(),
            other => std::io::Error::other(other),
        }
    }
}
