//! Sliding-window acceptance of rising 64-bit numbers: each number is accepted at most once.
//!
//! The transport uses one window per sender over the envelope counter (anti-replay) and one per
//! sender over message ids (exactly-once delivery of messages that are resent).
//!
//! Counter layout: a sender starts its counter at `boot_counter << BOOT_SHIFT` and adds one per
//! datagram. The daemon passes the unix time in milliseconds at start as `boot_counter`, so a
//! restarted sender begins above everything it sent before unless it sent more than 2^20
//! (about a million) datagrams per millisecond of its previous uptime, far beyond what the ring
//! sends. 2^44 ms of boot time fit above the shift, which lasts until the year 2527. A wall
//! clock stepped backwards across a restart makes receivers drop the sender's datagrams as
//! replays until its counter passes the old one; they are counted as `replayed`.
//!
//! The window is [`WINDOW`] numbers wide: the sender spreads resends over several paths and sends
//! the fragments of a large message back to back, so arrivals can be far out of order; 1024 bits
//! (128 bytes per sender) absorb that at no real cost.
//!
//! A receiver that restarts has no window: it accepts the first number it sees from each sender
//! and everything above it. A datagram captured before the restart could thus be accepted once
//! if it reaches the new receiver before any live datagram of that sender does; the ring's
//! 64-bit token sequence rejects such a stale token.
/// Bits of the counter below the boot counter.
pub const BOOT_SHIFT: u32 = 20;
/// How many numbers below the highest one seen are still tracked.
pub const WINDOW: u64 = 1024;

const WORDS: usize = (WINDOW / 64) as usize;

/// Why a number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The number was accepted before.
    Duplicate,
    /// The number is older than the window; it cannot be told apart from a duplicate.
    TooOld,
}

/// The first counter of a sender that started at `boot_counter` (see the module doc).
pub fn first_counter(boot_counter: u64) -> u64 {
    boot_counter.saturating_mul(1 << BOOT_SHIFT)
}

/// Remembers which numbers near the highest accepted one were seen.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// Highest accepted number, `None` until the first one.
    top: Option<u64>,
    /// Bit `i` (word `i / 64`, bit `i % 64`) set = `top - i` accepted.
    seen: [u64; WORDS],
}

impl ReplayWindow {
    /// Tells whether `n` would be accepted, without recording it.
    pub fn check(&self, n: u64) -> Result<(), Refused> {
        let Some(top) = self.top else {
            return Ok(());
        };
        if n > top {
            return Ok(());
        }
        let age = top - n;
        if age >= WINDOW {
            return Err(Refused::TooOld);
        }
        if self.bit(age) {
            Err(Refused::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `n` if it is new; call only once the datagram is authenticated.
    pub fn accept(&mut self, n: u64) -> Result<(), Refused> {
        self.check(n)?;
        match self.top {
            Some(top) if n <= top => self.set(top - n),
            Some(top) => {
                self.shift(n - top);
                self.top = Some(n);
                self.set(0);
            }
            None => {
                self.top = Some(n);
                self.set(0);
            }
        }
        Ok(())
    }

    fn bit(&self, age: u64) -> bool {
        self.seen[(age / 64) as usize] & (1 << (age % 64)) != 0
    }

    fn set(&mut self, age: u64) {
        self.seen[(age / 64) as usize] |= 1 << (age % 64);
    }

    /// Ages every mark by `by`, forgetting those that leave the window.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        for i in (0..WORDS).rev() {
            let from = i.checked_sub(words);
            let high = from.map_or(0, |j| self.seen[j]);
            let carry = match from.and_then(|j| j.checked_sub(1)) {
                Some(k) if bits > 0 => self.seen[k] >> (64 - bits),
                _ => 0,
            };
            self.seen[i] = (high << bits) | carry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_numbers_are_accepted_once() {
        let mut w = ReplayWindow::default();
        for n in 100..3000 {
            assert_eq!(w.accept(n), Ok(()));
            assert_eq!(w.accept(n), Err(Refused::Duplicate));
        }
    }

    #[test]
    fn reordered_numbers_inside_the_window_are_accepted() {
        let mut w = ReplayWindow::default();
        w.accept(5000).unwrap();
        for n in (5000 - WINDOW + 1..5000).rev().step_by(7) {
            assert_eq!(w.accept(n), Ok(()), "{n}");
        }
        for n in (5000 - WINDOW + 1..5000).rev().step_by(7) {
            assert_eq!(w.accept(n), Err(Refused::Duplicate), "{n}");
        }
        assert_eq!(w.accept(4998), Ok(()));
        assert_eq!(w.check(5000 - WINDOW), Err(Refused::TooOld));
    }

    #[test]
    fn marks_survive_shifts_across_word_boundaries() {
        let mut w = ReplayWindow::default();
        let marked = [1000u64, 1001, 1063, 1064, 1065, 1127, 1200];
        for n in marked {
            w.accept(n).unwrap();
        }
        for step in [1u64, 3, 63, 64, 65, 129, 200] {
            let top = w.top.unwrap() + step;
            w.accept(top).unwrap();
            for n in marked {
                let expected = if top - n >= WINDOW {
                    Err(Refused::TooOld)
                } else {
                    Err(Refused::Duplicate)
                };
                assert_eq!(w.check(n), expected, "n={n} top={top}");
            }
            for n in [1002u64, 1066, 1199] {
                if top - n < WINDOW {
                    assert_eq!(w.check(n), Ok(()), "n={n} top={top}");
                }
            }
        }
    }

    #[test]
    fn too_old_is_refused() {
        let mut w = ReplayWindow::default();
        w.accept(10_000).unwrap();
        assert_eq!(w.accept(10_000 - WINDOW), Err(Refused::TooOld));
        assert_eq!(w.accept(0), Err(Refused::TooOld));
        w.accept(10_000 + 5 * WINDOW).unwrap();
        assert_eq!(w.accept(10_000), Err(Refused::TooOld));
    }

    #[test]
    fn restarted_sender_is_accepted_and_its_old_life_refused() {
        let boot1 = 1_700_000_000_000u64;
        let boot2 = boot1 + 2_500; // restarted 2.5 s later
        let mut w = ReplayWindow::default();
        let c1 = first_counter(boot1);
        for i in 0..100 {
            w.accept(c1 + i).unwrap();
        }
        let c2 = first_counter(boot2);
        assert!(c2 > c1 + 100);
        assert_eq!(w.accept(c2), Ok(()));
        assert_eq!(w.accept(c1 + 50), Err(Refused::TooOld));
        assert_eq!(w.accept(c2 + 1), Ok(()));
    }

    #[test]
    fn first_counter_saturates_instead_of_wrapping() {
        assert_eq!(first_counter(u64::MAX), u64::MAX);
        assert_eq!(first_counter(1), 1 << BOOT_SHIFT);
    }
}
