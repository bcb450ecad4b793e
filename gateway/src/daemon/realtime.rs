//! Real-time scheduling of the two threads whose timing the ring depends on, as corosync runs
//! its token ring: a thread that wakes for the token preempts every ordinary thread of the
//! host at once, instead of waiting milliseconds for a CPU on a busy machine. Their work per
//! wake-up is bounded (`Shell::measure`), and the kernel's real-time throttling caps it anyway.
//! The daemon's memory is locked too, so no page the ring touches waits for swap. Both follow
//! `[node] realtime` (on by default).
use tracing::warn;

/// The ring's thread (`SCHED_RR`).
pub const RING_PRIORITY: libc::c_int = 10;

/// The stall watch's thread, above the ring's: it does nothing but note the time, so a gap
/// in its wake-ups means that no real-time thread of this process could run (stopped,
/// descheduled by the hypervisor, or a CPU held in the kernel), not that ordinary threads
/// crowded it out or that the ring's own thread was busy.
pub const WATCH_PRIORITY: libc::c_int = RING_PRIORITY + 1;

/// Locks the daemon's memory, present and future, as each page is first touched (so large
/// reservations cost nothing until used); without the privilege it runs unlocked, and says so.
pub fn lock_memory() {
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } != 0 {
        warn!(
            "running with memory that may be swapped out: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Puts the calling thread under `SCHED_RR` at `priority`; without the privilege it runs on
/// as an ordinary thread, and says so.
pub fn raise(priority: libc::c_int, thread: &str) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads the sched_param we own; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } != 0 {
        warn!(
            thread,
            "running without real-time priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
