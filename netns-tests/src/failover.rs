//! The failover measurer shared by every system the failover benchmark compares (keepalived
//! now, the gateway cluster later): a prober in the client namespace that sends a UDP datagram
//! every millisecond to a VIP's echo service and records when each echo comes back, the
//! [`System`] plug-in point, and the measuring loop (kill the VIP's owner as a host dies, time
//! until the service answers again, revive, repeat).
//!
//! # What is measured
//!
//! The *failover time* of one kill is `first good response - kill instant`, where
//! - the *kill instant* is [`DeadHost::died`]: taken as soon as the dead node's links are down
//!   (see [`crate::host_death`]), when nothing can pass through the node any more;
//! - a *good response* is an echo that arrives on the prober's socket, comes from the target
//!   address and port, carries an intact payload of this prober, and answers a datagram whose
//!   send time is strictly after the kill instant. Echoes of datagrams sent before the kill (still
//!   in flight or queued somewhere) prove nothing about the new path and do not count;
//! - the *first* good response is the earliest arrival time among good responses.
//!
//! The prober sends every [`PROBE_INTERVAL`], so the measurement's resolution is about one
//! millisecond plus one round trip.
use crate::cluster_topology::NODES;
use crate::host_death::{self, DeadHost};
use crate::netns::Netns;
use crate::testbed::Testbed;
use crate::topology::{EXT_IF, INT_IF};
use anyhow::{bail, Context, Result};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the prober sends: the resolution of the measurement.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// Marks the prober's datagrams, so stray traffic cannot count as an answer.
const MAGIC: [u8; 4] = *b"FOv1";

/// Length of the prober's payload: magic, sequence number, send time.
pub const PAYLOAD_LEN: usize = 20;

/// Encodes datagram `seq` sent `sent` after the prober's epoch (big-endian, nanoseconds).
pub fn encode(seq: u64, sent: Duration) -> [u8; PAYLOAD_LEN] {
    let mut out = [0u8; PAYLOAD_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..12].copy_from_slice(&seq.to_be_bytes());
    out[12..].copy_from_slice(&(sent.as_nanos() as u64).to_be_bytes());
    out
}

/// Decodes the sequence number and send time from an echo. The echo service may put text
/// before the datagram (testsrv answers `backend-2: <datagram>`), so the payload is the echo's
/// last [`PAYLOAD_LEN`] bytes; anything else is `None`.
pub fn decode(echo: &[u8]) -> Option<(u64, Duration)> {
    let payload = echo.get(echo.len().checked_sub(PAYLOAD_LEN)?..)?;
    if payload[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_be_bytes(payload[4..12].try_into().ok()?);
    let nanos = u64::from_be_bytes(payload[12..].try_into().ok()?);
    Some((seq, Duration::from_nanos(nanos)))
}

/// What the prober has seen, times relative to its epoch: the send time of datagram `seq` is
/// `sent[seq]` (increasing), the arrival of its first echo `replies[seq]`.
#[derive(Clone, Debug, Default)]
pub struct ProbeLog {
    /// Send time of each datagram, by sequence number.
    pub sent: Vec<Duration>,
    /// Arrival time of each datagram's first good echo, by sequence number.
    pub replies: Vec<Option<Duration>>,
}

impl ProbeLog {
    /// Records datagram `seq` as sent at `at` (sequence numbers come in order).
    pub fn record_sent(&mut self, seq: u64, at: Duration) {
        debug_assert_eq!(seq as usize, self.sent.len());
        self.sent.push(at);
        self.replies.push(None);
    }

    /// Records an echo of datagram `seq` that claims send time `sent`, arrived at `at`;
    /// duplicates and echoes whose send time does not match the log are ignored.
    pub fn record_reply(&mut self, seq: u64, sent: Duration, at: Duration) {
        let i = seq as usize;
        if self.sent.get(i) == Some(&sent) && self.replies[i].is_none() {
            self.replies[i] = Some(at);
        }
    }

    /// The arrival time of the first good response after `after` (see the module's
    /// documentation): the earliest echo of a datagram sent strictly after `after`.
    pub fn first_reply_after(&self, after: Duration) -> Option<Duration> {
        let first = self.sent.partition_point(|&sent| sent <= after);
        self.replies[first..].iter().flatten().min().copied()
    }

    /// The share of the datagrams sent in `[from, to)` that were echoed, or `None` if none was
    /// sent then.
    pub fn answered_fraction(&self, from: Duration, to: Duration) -> Option<f64> {
        let start = self.sent.partition_point(|&sent| sent < from);
        let end = self.sent.partition_point(|&sent| sent < to);
        if start >= end {
            return None;
        }
        let answered = self.replies[start..end].iter().flatten().count();
        Some(answered as f64 / (end - start) as f64)
    }
}

impl ProbeLog {
    /// The longest outage among the datagrams sent in `[from, to)`: for each run of unanswered
    /// datagrams, the time from the send of its first to the send of the next answered one (or
    /// `to`, if none was answered by then). Measured between sends of lost datagrams, so a
    /// stall of the prober's own sender between two answered datagrams is no outage.
    pub fn longest_gap(&self, from: Duration, to: Duration) -> Duration {
        self.longest_outage(from, to)
            .map_or(Duration::ZERO, |(_, gap)| gap)
    }

    /// The longest outage as [`ProbeLog::longest_gap`] measures it, with when it began (the
    /// send of its first lost datagram); `None` when nothing was lost.
    pub fn longest_outage(&self, from: Duration, to: Duration) -> Option<(Duration, Duration)> {
        let start = self.sent.partition_point(|&sent| sent < from);
        let end = self.sent.partition_point(|&sent| sent < to);
        let (mut longest, mut lost_since) = (None, None);
        let mut note = |first: Duration, gap: Duration| {
            if longest.is_none_or(|(_, g)| gap > g) {
                longest = Some((first, gap));
            }
        };
        for i in start..end {
            match (self.replies[i], lost_since) {
                (None, None) => lost_since = Some(self.sent[i]),
                (Some(_), Some(first)) => {
                    note(first, self.sent[i] - first);
                    lost_since = None;
                }
                _ => {}
            }
        }
        if let Some(first) = lost_since {
            note(first, to.saturating_sub(first));
        }
        longest
    }
}

/// Counts of a finished prober.
#[derive(Clone, Copy, Debug)]
pub struct ProbeTotals {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams echoed.
    pub answered: u64,
}

/// A prober running in the client namespace until [`Prober::stop`] (or drop).
pub struct Prober {
    epoch: Instant,
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
    target: SocketAddrV4,
    source: SocketAddrV4,
}

impl Prober {
    /// Starts probing `target` from `src` (any port): a socket created in `client_ns`, one
    /// thread sending every [`PROBE_INTERVAL`], one receiving.
    pub fn start(client_ns: &Netns, src: Ipv4Addr, target: SocketAddrV4) -> Result<Self> {
        let socket = client_ns.run(move || {
            let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))
                .with_context(|| format!("bind the prober to {src}"))?;
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            Ok(socket)
        })?;
        let receiver = socket.try_clone()?;
        let source = match socket.local_addr()? {
            std::net::SocketAddr::V4(source) => source,
            other => bail!("the prober is bound to {other}, not an IPv4 address"),
        };
        let epoch = Instant::now();
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let send = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || send_loop(&socket, target, epoch, &log, &stop))
        };
        let receive = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || receive_loop(&receiver, target, epoch, &log, &stop))
        };
        Ok(Self {
            epoch,
            log,
            stop,
            threads: vec![send, receive],
            target,
            source,
        })
    }

    /// The target the prober sends to.
    pub fn target(&self) -> SocketAddrV4 {
        self.target
    }

    /// The address and port it sends from: its flow's client side in the gateways' tables.
    pub fn source(&self) -> SocketAddrV4 {
        self.source
    }

    fn since_epoch(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.epoch)
    }

    /// The failover time after a kill at `kill_instant`: from it to the first good response
    /// (see the module's documentation). Waits for that response until `kill_instant +
    /// within`, and fails if none came by then.
    pub fn failover_after(&self, kill_instant: Instant, within: Duration) -> Result<Duration> {
        let after = self.since_epoch(kill_instant);
        let deadline = kill_instant + within;
        loop {
            if let Some(reply) = self.log.lock().expect("probe log").first_reply_after(after) {
                return Ok(reply.saturating_sub(after));
            }
            if Instant::now() > deadline {
                bail!(
                    "no echo from {} for a datagram sent after the kill within {within:?}",
                    self.target
                );
            }
            self.check_threads()?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The longest outage seen by the datagrams sent between `from` and `to`
    /// ([`ProbeLog::longest_gap`]).
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        self.longest_outage(from, to)
            .map_or(Duration::ZERO, |(_, gap)| gap)
    }

    /// The longest outage between `from` and `to` with when it began
    /// ([`ProbeLog::longest_outage`]).
    pub fn longest_outage(&self, from: Instant, to: Instant) -> Option<(Instant, Duration)> {
        let (from, to) = (self.since_epoch(from), self.since_epoch(to));
        let outage = self.log.lock().expect("probe log").longest_outage(from, to);
        outage.map(|(began, gap)| (self.epoch + began, gap))
    }

    /// The share of the datagrams sent in the `window` that ended `grace` ago (one round
    /// trip's allowance) that were echoed; `None` if the prober has not run that long.
    pub fn answered_fraction(&self, window: Duration, grace: Duration) -> Option<f64> {
        let to = self.since_epoch(Instant::now()).checked_sub(grace)?;
        let from = to.checked_sub(window)?;
        self.log
            .lock()
            .expect("probe log")
            .answered_fraction(from, to)
    }

    /// Waits until the service is steady, the state a kill must start from: at least
    /// `min_fraction` of the datagrams sent in the last `window` (allowing 20 ms for the
    /// round trip) were echoed. Fails after `timeout`.
    pub fn wait_steady(
        &self,
        window: Duration,
        min_fraction: f64,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let fraction = self.answered_fraction(window, Duration::from_millis(20));
            if fraction.is_some_and(|f| f >= min_fraction) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not steady after {timeout:?}: {:.0}% of the datagrams of the last {window:?} echoed",
                    self.target,
                    fraction.unwrap_or(0.0) * 100.0
                );
            }
            self.check_threads()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fails if a prober thread has ended (a socket error), instead of waiting for echoes that
    /// cannot come.
    fn check_threads(&self) -> Result<()> {
        if self.threads.iter().any(JoinHandle::is_finished) {
            bail!("the prober of {} stopped (a socket error)", self.target);
        }
        Ok(())
    }

    /// Stops the prober and returns its counts, or the error that stopped a thread.
    pub fn stop(mut self) -> Result<ProbeTotals> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("prober thread panicked")?;
        }
        let log = self.log.lock().expect("probe log");
        Ok(ProbeTotals {
            sent: log.sent.len() as u64,
            answered: log.replies.iter().flatten().count() as u64,
        })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Sends one datagram per [`PROBE_INTERVAL`] on a fixed schedule; a late tick sends once and
/// skips the missed ones, so a stall never turns into a burst.
fn send_loop(
    socket: &UdpSocket,
    target: SocketAddrV4,
    epoch: Instant,
    log: &Mutex<ProbeLog>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut next = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        let sent = epoch.elapsed();
        // Logged before sending, so the echo always finds its datagram in the log.
        log.lock().expect("probe log").record_sent(seq, sent);
        match socket.send_to(&encode(seq, sent), target) {
            Ok(_) => {}
            // A dead path may bounce ICMP errors back; the datagram is simply lost.
            Err(e) if transient(&e) => {}
            Err(e) => return Err(e).context("prober send"),
        }
        seq += 1;
        next += PROBE_INTERVAL;
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
    Ok(())
}

/// Records every good echo (from `target`, with a valid payload) with its arrival time.
fn receive_loop(
    socket: &UdpSocket,
    target: SocketAddrV4,
    epoch: Instant,
    log: &Mutex<ProbeLog>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let at = epoch.elapsed();
                if from != SocketAddr::V4(target) {
                    continue;
                }
                if let Some((seq, sent)) = decode(&buf[..n]) {
                    log.lock().expect("probe log").record_reply(seq, sent, at);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if transient(&e) => {}
            Err(e) => return Err(e).context("prober receive"),
        }
    }
    Ok(())
}

/// Errors a UDP socket reports for ICMP errors of earlier datagrams while a path is broken.
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
    ) || e.raw_os_error() == Some(libc::EHOSTUNREACH)
}

/// A failover system on the cluster testbed, as the failover benchmark drives it. keepalived
/// implements it ([`crate::keepalived::KeepalivedSystem`]); the gateway cluster plugs in the
/// same way, so both are measured by the same loop ([`measure_failovers`]) and prober.
pub trait System {
    /// The name in result rows (`keepalived_fast` gives `failover_ms_median/keepalived_fast`).
    fn name(&self) -> String;

    /// Starts the system on every node of the testbed and returns once it serves the VIPs.
    fn start(&mut self, bed: &Testbed) -> Result<()>;

    /// The index (into [`NODES`]) of the node that serves the external VIP now, or `None`
    /// when no single live node does (none yet, or several during a transition).
    fn owner_of_vip(&self, bed: &Testbed) -> Result<Option<usize>>;

    /// Brings a node killed by [`host_death::kill`] back as a rebooted host would come back:
    /// whatever state the system needs cleared, then [`DeadHost::revive`], then its software
    /// started again. Returns once the cluster has settled (the VIP has the owner it will keep
    /// while nothing fails), so the next kill does not race a takeover.
    fn restart_node(&mut self, bed: &Testbed, dead: DeadHost) -> Result<()>;
}

/// How one failover round went.
#[derive(Clone, Debug)]
pub struct Round {
    /// The node that was killed.
    pub killed: String,
    /// The measured failover time.
    pub failover: Duration,
}

/// Timing limits of [`measure_failovers`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long the service may take to become steady before a kill.
    pub steady_timeout: Duration,
    /// How long a failover may take before the round counts as failed.
    pub failover_within: Duration,
    /// Each kill waits a pseudo-random time below this first, so kills fall at random phases
    /// of the system's heartbeat (a kill just after a VRRP advert fails over a whole advert
    /// interval later than one just before it).
    pub jitter: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            steady_timeout: Duration::from_secs(30),
            failover_within: Duration::from_secs(15),
            jitter: Duration::from_secs(1),
        }
    }
}

/// Waits until `system` has a single VIP owner and the prober's echoes are steady (99% of the
/// last 200 ms answered), and the owner did not change meanwhile; returns the owner.
pub fn wait_steady(
    bed: &Testbed,
    system: &dyn System,
    prober: &Prober,
    timeout: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let before = system.owner_of_vip(bed)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        prober.wait_steady(Duration::from_millis(200), 0.99, remaining)?;
        if let Some(owner) = before {
            if system.owner_of_vip(bed)? == Some(owner) {
                return Ok(owner);
            }
        }
        if Instant::now() > deadline {
            bail!("{}: no single VIP owner after {timeout:?}", system.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The measuring loop of the failover benchmark: `rounds` times waits a random part of
/// [`Limits::jitter`] and for steady service through `prober`, kills the VIP's owner as a host dies, measures the
/// failover time, and restarts the node. `system` must be started and the prober running
/// against a VIP it serves.
pub fn measure_failovers(
    bed: &Testbed,
    system: &mut dyn System,
    prober: &Prober,
    rounds: usize,
    limits: Limits,
) -> Result<Vec<Round>> {
    let mut measured = Vec::new();
    for round in 0..rounds {
        std::thread::sleep(pseudo_random_below(limits.jitter));
        let owner = wait_steady(bed, system, prober, limits.steady_timeout)
            .with_context(|| format!("{} round {round}: before the kill", system.name()))?;
        let node = NODES[owner];
        let dead = host_death::kill(bed, node, &[EXT_IF, INT_IF])?;
        let failover = prober
            .failover_after(dead.died, limits.failover_within)
            .with_context(|| format!("{} round {round}: after killing {node}", system.name()))?;
        eprintln!(
            "{} round {round}: killed {node}, failover {:.1} ms",
            system.name(),
            failover.as_secs_f64() * 1e3
        );
        measured.push(Round {
            killed: node.to_owned(),
            failover,
        });
        system
            .restart_node(bed, dead)
            .with_context(|| format!("{} round {round}: restart {node}", system.name()))?;
    }
    Ok(measured)
}

/// A duration in `[0, limit)` from the clock's nanoseconds: random enough to spread kills over
/// a heartbeat's phase, without a dependency.
fn pseudo_random_below(limit: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let limit = limit.as_nanos() as u64;
    if limit == 0 {
        return Duration::ZERO;
    }
    // Mix the nanoseconds so consecutive calls are not correlated with the loop's timing.
    let mixed = u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    Duration::from_nanos(mixed % limit)
}

/// Median and maximum of measured failover times, in milliseconds.
pub fn median_max_ms(rounds: &[Round]) -> Option<(f64, f64)> {
    let mut ms: Vec<f64> = rounds
        .iter()
        .map(|r| r.failover.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let median = if ms.len() % 2 == 1 {
        ms[ms.len() / 2]
    } else {
        (ms.get(ms.len() / 2)? + ms[ms.len() / 2 - 1]) / 2.0
    };
    Some((median, *ms.last()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn payload_round_trips_behind_a_prefix() {
        let payload = encode(42, Duration::from_nanos(123_456_789));
        assert_eq!(
            decode(&payload),
            Some((42, Duration::from_nanos(123_456_789)))
        );
        let mut echo = b"backend-2: ".to_vec();
        echo.extend_from_slice(&payload);
        assert_eq!(decode(&echo), Some((42, Duration::from_nanos(123_456_789))));
    }

    #[test]
    fn foreign_or_short_datagrams_do_not_decode() {
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(&[0u8; PAYLOAD_LEN]), None);
        let mut payload = encode(1, ms(1));
        payload[0] = b'X';
        assert_eq!(decode(&payload), None);
    }

    /// Datagrams every ms from 0 to 9 ms; those listed in `answered` echoed `rtt` later.
    fn log(answered: &[(u64, u64)]) -> ProbeLog {
        let mut log = ProbeLog::default();
        for seq in 0..10 {
            log.record_sent(seq, ms(seq));
        }
        for &(seq, at) in answered {
            log.record_reply(seq, ms(seq), ms(at));
        }
        log
    }

    #[test]
    fn first_reply_counts_only_datagrams_sent_after_the_instant() {
        // Datagram 2 (sent before the kill at 2.5 ms) is echoed late, at 7 ms: it does not
        // count. Datagram 6 is echoed at 8 ms and 5 at 9 ms: the earliest arrival wins.
        let log = log(&[(0, 1), (1, 2), (2, 7), (6, 8), (5, 9)]);
        let kill = Duration::from_micros(2500);
        assert_eq!(log.first_reply_after(kill), Some(ms(8)));
        // Sent exactly at the instant is not after it.
        assert_eq!(log.first_reply_after(ms(5)), Some(ms(8)));
        assert_eq!(log.first_reply_after(ms(6)), None);
        assert_eq!(log.first_reply_after(ms(20)), None);
    }

    #[test]
    fn duplicates_and_mismatched_replies_are_ignored() {
        let mut log = log(&[(3, 5)]);
        log.record_reply(3, ms(3), ms(4));
        assert_eq!(log.replies[3], Some(ms(5)));
        log.record_reply(4, ms(99), ms(6));
        log.record_reply(77, ms(77), ms(80));
        assert_eq!(log.replies[4], None);
    }

    #[test]
    fn answered_fraction_over_a_window() {
        let log = log(&[(0, 1), (1, 2), (2, 3), (3, 4)]);
        assert_eq!(log.answered_fraction(ms(0), ms(4)), Some(1.0));
        assert_eq!(log.answered_fraction(ms(2), ms(6)), Some(0.5));
        assert_eq!(log.answered_fraction(ms(20), ms(30)), None);
    }

    #[test]
    fn the_longest_gap_runs_from_the_first_lost_send_to_the_next_answered_one() {
        // Datagrams 0-9; 2, 3, 4 and 8 are lost.
        let log = log(&[(0, 1), (1, 2), (5, 6), (6, 7), (7, 8), (9, 10)]);
        assert_eq!(log.longest_gap(ms(0), ms(10)), ms(3));
        assert_eq!(log.longest_gap(ms(5), ms(10)), ms(1));
        // A window that ends inside an outage counts it up to its end.
        assert_eq!(log.longest_gap(ms(0), ms(4)), ms(2));
        assert_eq!(log.longest_gap(ms(5), ms(8)), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_below_its_limit() {
        assert_eq!(pseudo_random_below(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(pseudo_random_below(ms(3)) < ms(3));
        }
    }

    #[test]
    fn median_and_max() {
        let rounds: Vec<Round> = [30, 10, 20]
            .iter()
            .map(|&n| Round {
                killed: "gw1".into(),
                failover: ms(n),
            })
            .collect();
        assert_eq!(median_max_ms(&rounds), Some((20.0, 30.0)));
        assert_eq!(median_max_ms(&rounds[..2]), Some((20.0, 30.0)));
        assert_eq!(median_max_ms(&[]), None);
    }
}
