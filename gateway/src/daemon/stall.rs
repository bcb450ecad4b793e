//! Noticing that this process did not run: a thread that wakes every few milliseconds and
//! records the longest gap between its wake-ups. It runs at a real-time priority above the
//! ring's (`realtime::WATCH_PRIORITY`), so a stopped (SIGSTOP) process or one the machine did
//! not run (a descheduled virtual CPU) shows a gap as long as the stall, while a host busy
//! with ordinary work, or the ring's thread busy with its own, does not.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How often the watch thread wakes.
const BEAT: Duration = Duration::from_millis(5);

/// The watch; dropping it stops its thread.
pub struct StallWatch {
    beats: Arc<Beats>,
    thread: Option<JoinHandle<()>>,
}

struct Beats {
    /// Longest gap between wake-ups since the last [`StallWatch::take`], in microseconds.
    longest_us: AtomicU64,
    stop: AtomicBool,
}

impl StallWatch {
    /// Starts the watch thread, at real-time priority if `realtime` (as the ring's thread).
    pub fn start(realtime: bool) -> std::io::Result<Self> {
        let beats = Arc::new(Beats {
            longest_us: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let beat = beats.clone();
        let thread = std::thread::Builder::new()
            .name("stall-watch".into())
            .spawn(move || {
                if realtime {
                    super::realtime::raise(super::realtime::WATCH_PRIORITY, "stall-watch");
                }
                let mut last = Instant::now();
                while !beat.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(BEAT);
                    let now = Instant::now();
                    let gap = now.duration_since(last).as_micros() as u64;
                    beat.longest_us.fetch_max(gap, Ordering::Relaxed);
                    last = now;
                }
            })?;
        Ok(Self {
            beats,
            thread: Some(thread),
        })
    }

    /// The longest time the process did not run since the last call (a few milliseconds
    /// when nothing stalled it).
    pub fn take(&self) -> Duration {
        Duration::from_micros(self.beats.longest_us.swap(0, Ordering::Relaxed))
    }
}

/// The longest delay seen over the last one to two [`RecentDelay::WINDOW`]s: two windows
/// whose maxima are kept, the older dropped as a new one starts.
#[derive(Debug)]
pub struct RecentDelay {
    started: Instant,
    current: Duration,
    previous: Duration,
}

impl RecentDelay {
    const WINDOW: Duration = Duration::from_secs(30);

    /// Nothing recorded yet; the first window starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            current: Duration::ZERO,
            previous: Duration::ZERO,
        }
    }

    /// Records a delay seen at `now`; returns the longest recent one.
    pub fn record(&mut self, now: Instant, delay: Duration) -> Duration {
        let age = now.saturating_duration_since(self.started);
        if age >= Self::WINDOW {
            self.previous = if age >= Self::WINDOW * 2 {
                Duration::ZERO
            } else {
                self.current
            };
            self.current = Duration::ZERO;
            self.started = now;
        }
        self.current = self.current.max(delay);
        self.current.max(self.previous)
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.beats.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_delay_is_forgotten_after_two_windows() {
        let t0 = Instant::now();
        let mut recent = RecentDelay::new(t0);
        let ms = Duration::from_millis;
        assert_eq!(recent.record(t0, ms(40)), ms(40));
        assert_eq!(recent.record(t0 + ms(100), ms(3)), ms(40));
        let later = t0 + RecentDelay::WINDOW;
        assert_eq!(recent.record(later, ms(3)), ms(40), "kept one more window");
        assert_eq!(recent.record(later + RecentDelay::WINDOW, ms(5)), ms(5));
        assert_eq!(recent.record(later + RecentDelay::WINDOW * 4, ms(2)), ms(2));
    }

    #[test]
    fn a_quiet_process_shows_short_gaps() {
        let watch = StallWatch::start(true).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let gap = watch.take();
        assert!(gap >= BEAT && gap < Duration::from_millis(40), "{gap:?}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(watch.take() < Duration::from_millis(40), "taken resets");
    }
}
