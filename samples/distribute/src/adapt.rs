//! When a worker's segment should grow or shrink: the manager's view of its ring.
//!
//! The manager tells the policy about every batch it sends: whether the batch found the ring
//! full (it had to wait for the worker to make room) and how many bytes are in flight after
//! it (sent, not yet answered). Every [`WINDOW`] batches the policy judges:
//!
//! * **grow** (double, up to the maximum) when at least a quarter of the window's batches
//!   found the ring full: the worker is fed in bursts larger than the ring, and the manager
//!   waits where a larger ring would let it go on;
//! * **shrink** when for [`CALM`] windows in a row no batch found the ring full and at most
//!   an eighth of the ring was ever in flight: the segment is mostly idle, and the memory is
//!   better given back. It shrinks at once to eight times the most that was in flight
//!   meanwhile (a power of two, at most half the size, at least the minimum);
//! * otherwise keep it; after a resize it waits [`COOLDOWN`] windows, so that the new size is
//!   judged on what it does, not on the backlog of the old one.

/// Batches between two judgements.
pub const WINDOW: u32 = 16;
/// Quiet windows in a row before a shrink.
pub const CALM: u32 = 4;
/// Windows after a resize that are not judged.
pub const COOLDOWN: u32 = 1;

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Policy {
    min: usize,
    max: usize,
    size: usize,
    sends: u32,
    full: u32,
    peak: usize,
    /// The most in flight over the calm windows.
    calm_peak: usize,
    calm: u32,
    cooldown: u32,
}

impl Policy {
    /// Sizes from `min` to `max` bytes (powers of two apart from `start`), starting at `start`.
    pub fn new(min: usize, max: usize, start: usize) -> Self {
        Policy {
            min,
            max,
            size: start.clamp(min, max),
            sends: 0,
            full: 0,
            peak: 0,
            calm_peak: 0,
            calm: 0,
            cooldown: 0,
        }
    }

    /// One batch sent: whether it found the ring full, and the bytes in flight after it. The
    /// new segment size when the segment should be resized now.
    pub fn sent(&mut self, found_full: bool, in_flight: usize) -> Option<usize> {
        self.sends += 1;
        self.full += u32::from(found_full);
        self.peak = self.peak.max(in_flight);
        if self.sends < WINDOW {
            return None;
        }
        let (full, peak) = (self.full, self.peak);
        (self.sends, self.full, self.peak) = (0, 0, 0);
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return None;
        }
        let next = if full * 4 >= WINDOW {
            self.calm = 0;
            (self.size * 2).min(self.max)
        } else if full == 0 && peak <= self.size / 8 {
            self.calm += 1;
            self.calm_peak = self.calm_peak.max(peak);
            if self.calm < CALM {
                return None;
            }
            let fits = (self.calm_peak.max(1) * 8).next_power_of_two();
            fits.min(self.size / 2).max(self.min)
        } else {
            self.calm = 0;
            self.calm_peak = 0;
            return None;
        };
        if next == self.size {
            return None;
        }
        self.size = next;
        self.calm = 0;
        self.calm_peak = 0;
        self.cooldown = COOLDOWN;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(p: &mut Policy, full: u32, in_flight: usize) -> Option<usize> {
        (0..WINDOW)
            .map(|i| p.sent(i < full, in_flight))
            .last()
            .flatten()
    }

    #[test]
    fn a_ring_often_full_grows_up_to_the_maximum() {
        let mut p = Policy::new(64 << 10, 256 << 10, 64 << 10);
        assert_eq!(window(&mut p, 4, 60 << 10), Some(128 << 10));
        // Judged again only after the cooldown.
        for _ in 0..COOLDOWN {
            assert_eq!(window(&mut p, WINDOW, 120 << 10), None);
        }
        assert_eq!(window(&mut p, WINDOW, 120 << 10), Some(256 << 10));
        for _ in 0..COOLDOWN {
            window(&mut p, WINDOW, 250 << 10);
        }
        assert_eq!(window(&mut p, WINDOW, 250 << 10), None, "at the maximum");
        assert_eq!(p.size, 256 << 10);
    }

    #[test]
    fn a_mostly_idle_ring_shrinks_after_calm_windows_down_to_the_minimum() {
        let mut p = Policy::new(64 << 10, 4 << 20, 4 << 20);
        for _ in 0..CALM - 1 {
            assert_eq!(window(&mut p, 0, 20 << 10), None);
        }
        // Eight times the most in flight, a power of two.
        assert_eq!(window(&mut p, 0, 4 << 10), Some(256 << 10));
        for _ in 0..COOLDOWN {
            window(&mut p, 0, 0);
        }
        for _ in 0..CALM - 1 {
            assert_eq!(window(&mut p, 0, 30 << 10), None);
        }
        // At most half the size.
        assert_eq!(window(&mut p, 0, 30 << 10), Some(128 << 10));
        // A busy window between calm ones starts the count again.
        for _ in 0..COOLDOWN {
            window(&mut p, 0, 0);
        }
        for _ in 0..CALM - 1 {
            window(&mut p, 0, 1 << 10);
        }
        assert_eq!(window(&mut p, 1, 100 << 10), None);
        for _ in 0..CALM - 1 {
            assert_eq!(window(&mut p, 0, 1 << 10), None);
        }
        assert_eq!(window(&mut p, 0, 1 << 10), Some(64 << 10));
        for _ in 0..COOLDOWN + 2 * CALM {
            assert_eq!(window(&mut p, 0, 0), None, "at the minimum");
        }
    }

    #[test]
    fn a_ring_in_use_but_rarely_full_keeps_its_size() {
        let mut p = Policy::new(64 << 10, 1 << 20, 256 << 10);
        for _ in 0..20 {
            assert_eq!(window(&mut p, 3, 200 << 10), None);
            assert_eq!(window(&mut p, 0, 100 << 10), None);
        }
        assert_eq!(p.size, 256 << 10);
    }
}
