//! Last man standing (docs/architecture.md, "Quorum"): whether a ring may take over the VIPs of
//! the members it lost.
//!
//! A ring that loses most of its members at once cannot tell their deaths from its own cut-off
//! (its datagrams lost, its host too slow for the timers): taking their VIPs could take them
//! from nodes that still serve them, and pull their clients' traffic to a node without their
//! connections. So, as corosync's `last_man_standing`, the size a ring has kept for a window is
//! its base; a ring without a strict majority of its base keeps its own VIPs but takes no other
//! until its size has held for the window itself (long enough for live nodes to have re-formed
//! without it and asked it to join). A ring of two losing one goes on at once (corosync's
//! `two_node`): either side's failover would wait otherwise, on the most common cluster.
use std::time::{Duration, Instant};

/// The ring's size and the base it is measured against.
#[derive(Clone, Copy, Debug)]
pub struct Quorum {
    /// The size the ring kept for a whole window before its last change.
    base: usize,
    /// The ring's size now, and since when.
    size: usize,
    since: Instant,
}

impl Quorum {
    /// A node that has just started: alone, and alone is its base (alone mode at a cold start
    /// serves every VIP).
    pub fn new(now: Instant) -> Self {
        Self {
            base: 1,
            size: 1,
            since: now,
        }
    }

    /// Records the ring's size at `now`.
    pub fn observe(&mut self, now: Instant, size: usize, window: Duration) {
        if size == self.size {
            return;
        }
        self.base = self.base_at(now, window);
        self.size = size;
        self.since = now;
    }

    /// Whether the ring may take the VIPs of members it lost.
    pub fn holds(&self, now: Instant, window: Duration) -> bool {
        let base = self.base_at(now, window);
        base <= 2 || self.size * 2 > base
    }

    fn base_at(&self, now: Instant, window: Duration) -> usize {
        if now >= self.since + window {
            self.size
        } else {
            self.base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(300);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_ring_that_loses_its_majority_at_once_waits_a_window() {
        let t0 = Instant::now();
        let mut q = Quorum::new(t0);
        assert!(q.holds(t0, WINDOW), "alone at a cold start");
        q.observe(ms(t0, 100), 3, WINDOW);
        assert!(q.holds(ms(t0, 100), WINDOW));
        // Two of three gone within the window after the third came: the base is still one.
        q.observe(ms(t0, 200), 1, WINDOW);
        assert!(q.holds(ms(t0, 200), WINDOW));
        // Settled at three, then two gone at once.
        q.observe(ms(t0, 1000), 3, WINDOW);
        q.observe(ms(t0, 2000), 1, WINDOW);
        assert!(!q.holds(ms(t0, 2000), WINDOW));
        assert!(!q.holds(ms(t0, 2299), WINDOW));
        assert!(
            q.holds(ms(t0, 2300), WINDOW),
            "alone for a window: the base is one"
        );
    }

    #[test]
    fn a_ring_losing_members_one_at_a_time_keeps_its_quorum() {
        let t0 = Instant::now();
        let mut q = Quorum::new(t0);
        q.observe(t0, 5, WINDOW);
        q.observe(ms(t0, 1000), 3, WINDOW);
        assert!(q.holds(ms(t0, 1000), WINDOW), "three of five");
        q.observe(ms(t0, 1500), 2, WINDOW);
        assert!(q.holds(ms(t0, 1500), WINDOW), "two of three");
        q.observe(ms(t0, 2000), 1, WINDOW);
        assert!(q.holds(ms(t0, 2000), WINDOW), "one of two");
        // Back to three, then two lost before three held a window: one is still the base.
        q.observe(ms(t0, 3000), 3, WINDOW);
        q.observe(ms(t0, 3100), 2, WINDOW);
        q.observe(ms(t0, 3200), 1, WINDOW);
        assert!(q.holds(ms(t0, 3200), WINDOW), "the base was one");
    }

    #[test]
    fn half_of_an_even_ring_is_no_majority() {
        let t0 = Instant::now();
        let mut q = Quorum::new(t0);
        q.observe(t0, 4, WINDOW);
        q.observe(ms(t0, 1000), 2, WINDOW);
        assert!(!q.holds(ms(t0, 1000), WINDOW));
        q.observe(ms(t0, 1100), 3, WINDOW);
        assert!(q.holds(ms(t0, 1100), WINDOW), "three of four");
    }
}
