//! Waiting: for the peer, for data, for room; the waiting flags and the doorbell
//! (notification suppression, see the module documentation of `channel`).

use std::sync::atomic::{fence, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::peer::PeerState;
use super::{layout, Channel, Error};

#[derive(Clone, Copy)]
pub(super) enum Want {
    Data,
    Space(usize),
}

impl Channel {
    /// Looks at the peer: `Ok(true)` if it is attached and beating, `Ok(false)` if it has not
    /// attached yet (within the timeout); an error if it closed, stopped or broke the rules.
    pub fn check_peer(&mut self) -> Result<bool, Error> {
        self.live()?;
        if self.reformatted() {
            return Err(self.fail(Error::Reformatted));
        }
        match self.peer.look(&self.w, self.config.peer_timeout) {
            Ok(PeerState::Alive) => Ok(true),
            // The stand-in page of a removed device may read as an absent peer too.
            Ok(PeerState::Absent) if self.device_gone() => Err(self.fail(Error::DeviceGone)),
            Ok(PeerState::Absent) => Ok(false),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Waits up to `timeout` for the peer to attach. A device that goes away meanwhile is
    /// [`Error::DeviceGone`] within a look (5 ms): every look that does not find the peer
    /// asks whether the device is gone, since a removed device's stand-in page may read as
    /// an absent peer as well as a broken one.
    pub fn wait_for_peer(&mut self, timeout: Duration) -> Result<(), Error> {
        self.live()?;
        let deadline = deadline_after(timeout);
        self.peer.restart_clock();
        loop {
            match self.peer.look(&self.w, timeout) {
                Ok(PeerState::Alive) => return Ok(()),
                Ok(PeerState::Absent) | Err(Error::PeerClosed) => {}
                Err(e) => return Err(self.fail(e)),
            }
            if self.device_gone() {
                return Err(self.fail(Error::DeviceGone));
            }
            if passed(deadline) {
                return Err(self.fail(Error::PeerGone));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Before sleeping on [`Self::wake_fd`] (in epoll, with others): raises this side's
    /// waiting flags (for messages, and for room if a `try_` send found none) and looks again.
    /// `Ok(true)`: sleep; `Ok(false)`: something is ready already, do not.
    pub fn arm(&mut self) -> Result<bool, Error> {
        self.flush()?;
        let r = self.arm_flags(Want::Data, self.want_space);
        let ready = self.guard(r)?;
        if ready {
            self.disarm()?;
        }
        Ok(!ready)
    }

    /// After waking (or instead of sleeping): lowers the waiting flags and drains the eventfd.
    /// The eventfd may be shared with other channels (one region under IVSHMEM): whoever
    /// drains it must then look at all of them.
    pub fn disarm(&mut self) -> Result<(), Error> {
        self.live()?;
        let r = self.lower_flags();
        self.guard(r)?;
        let taken = match &self.links.wake {
            Some(e) => e.take(),
            None => Ok(0),
        };
        match taken {
            Ok(n) => self.stats.wakeups += u64::from(n > 0),
            Err(e) => return Err(self.fail(e.into())),
        }
        Ok(())
    }

    /// Raises the flags for `want` (and for room for `space`), then looks again; true if
    /// something is ready now.
    fn arm_flags(&mut self, want: Want, space: Option<usize>) -> Result<bool, Error> {
        let (data, room) = match want {
            Want::Data => (true, space),
            Want::Space(len) => (false, Some(len)),
        };
        if data {
            self.w
                .u32(layout::consumer_waiting(self.rx.ring()))?
                .store(1, SeqCst);
        }
        if room.is_some() {
            self.w
                .u32(layout::producer_waiting(self.tx.ring()))?
                .store(1, SeqCst);
        }
        fence(SeqCst);
        Ok((data && self.rx.has_data(&self.w)?)
            || match room {
                Some(len) => self.tx.fits(&self.w, len)?,
                None => false,
            })
    }

    pub(super) fn lower_flags(&mut self) -> Result<(), Error> {
        self.w
            .u32(layout::consumer_waiting(self.rx.ring()))?
            .store(0, SeqCst);
        self.w
            .u32(layout::producer_waiting(self.tx.ring()))?
            .store(0, SeqCst);
        Ok(())
    }

    /// Sleeps until `want` may be satisfied, the deadline passes or the peer is found gone,
    /// and sets how long the next wait polls from how long this one took: a short wait
    /// (within [`Config::spin_max`]) raises the poll to twice its length, and one quick
    /// answer (a message that was half written when this side began to wait) lowers it by
    /// an eighth only, so that it does not undo what the waits before showed; a long or
    /// failed wait brings it back to [`Config::spin`]. Never above `spin_max`, never
    /// below `spin`.
    pub(super) fn block(&mut self, want: Want, deadline: Option<Instant>) -> Result<(), Error> {
        let started = Instant::now();
        let r = self.wait_for(want, deadline);
        let (spin, max, prev) = (self.config.spin, self.config.spin_max, self.spin_next);
        self.spin_next = match started.elapsed() {
            w if r.is_ok() && w <= max => {
                w.saturating_mul(2).max(prev - prev / 8).min(max).max(spin)
            }
            _ => spin,
        };
        r
    }

    /// Polls for `want` for the spin budget, then sleeps. The poll only reads the ring (it
    /// raises no flag), so the wake-up protocol below is the same however long it lasts.
    fn wait_for(&mut self, want: Want, deadline: Option<Instant>) -> Result<(), Error> {
        self.flush()?;
        let spin = match self.config.spin.is_zero() {
            true => Duration::ZERO,
            false => self.spin_next.max(self.config.spin),
        };
        if !spin.is_zero() {
            let until = match (deadline_after(spin), deadline) {
                (Some(s), Some(d)) => Some(s.min(d)),
                (s, d) => s.or(d),
            };
            let mut polls = 0u32;
            while !passed(until) {
                if self.ready(want)? {
                    return Ok(());
                }
                // A few quick looks, then the CPU is offered between looks: a peer that
                // shares it (a loaded host, a guest with fewer CPUs than busy threads) runs
                // instead of waiting out this side's time slice.
                if polls < SPIN_POLLS || !self.config.spin_yield {
                    polls += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        loop {
            if let Err(e) = self.check_peer() {
                // A peer that committed its last messages and then left between the last
                // look and this one: they are delivered (released room is used) before its
                // leaving is reported.
                if matches!(e, Error::PeerClosed | Error::PeerGone) && self.ready(want)? {
                    return Ok(());
                }
                return Err(e);
            }
            let r = self.arm_flags(want, None);
            if self.guard(r)? {
                let r = self.lower_flags();
                return self.guard(r);
            }
            let mut nap = self.config.check_interval;
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    let r = self.lower_flags();
                    self.guard(r)?;
                    return Err(Error::TimedOut);
                }
                nap = nap.min(d - now);
            }
            let mut woken = false;
            match &self.links.wake {
                Some(e) => match e.wait(Some(nap)) {
                    Ok(n) => woken = n > 0,
                    Err(e) => return Err(self.fail(e.into())),
                },
                None => std::thread::sleep(nap.min(self.config.poll_interval)),
            }
            if woken {
                self.stats.wakeups += 1;
            }
            let r = self.lower_flags();
            self.guard(r)?;
            if self.ready(want)? {
                return Ok(());
            }
            // Woken with nothing to show: the peer's doorbell for something else (a shared
            // eventfd), or the device's last signal at its removal.
            if woken && self.device_gone() {
                return Err(self.fail(Error::DeviceGone));
            }
        }
    }

    /// Whether `want` can be satisfied now.
    fn ready(&mut self, want: Want) -> Result<bool, Error> {
        let ready = match want {
            Want::Data => self.rx.has_data(&self.w),
            Want::Space(len) => self.tx.fits(&self.w, len),
        };
        self.guard(ready)
    }

    /// Rings the peer if the flag at `flag` is raised, taking it down: one ring per sleep.
    /// The peer id rung is the one fixed when the peer attached (see `peer`). Called after a
    /// commit or a release, which stands whatever happens here: a failure is recorded (a
    /// fatal one answers the next call) and only [`Error::DeviceGone`] is returned.
    pub(super) fn notify_if_waiting(&mut self, flag: usize) -> Result<(), Error> {
        let f = self.w.u32(flag)?;
        if f.load(SeqCst) == 0 || f.swap(0, SeqCst) == 0 {
            return Ok(());
        }
        let Some(bell) = self.links.doorbell.clone() else {
            return Ok(());
        };
        let rung = match self.peer.ring_id(&self.w) {
            Ok(None) => return Ok(()),
            Ok(Some(id)) => bell.ring(id).map_err(Error::from),
            Err(e) => Err(e),
        };
        match rung.map_err(|e| self.fail(e)) {
            Ok(()) => {
                self.stats.rings += 1;
                Ok(())
            }
            Err(Error::DeviceGone) => Err(Error::DeviceGone),
            Err(_) => {
                // Not rung: leave the flag up, so that the next publish tries again (the
                // peer looks again within its check interval anyway).
                self.w.u32(flag)?.store(1, SeqCst);
                self.stats.ring_errors += 1;
                Ok(())
            }
        }
    }
}

/// The looks at the ring a waiting side makes back to back before it yields the CPU between
/// looks (see `wait_for`).
const SPIN_POLLS: u32 = 128;

/// When a wait of `timeout` from now ends; `None`: never (a timeout beyond what an
/// `Instant` can hold, such as `Duration::MAX`, is as good as forever).
pub(super) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Whether `deadline` has passed; never for `None`.
pub(super) fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}
