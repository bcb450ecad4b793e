//! The new-connection storm (`--storm`): connections through one VIP opened at
//! [`RATE_PER_S`], each asked once at open and once more [`HOLD`] later before it closes,
//! while the VIP's owner, the home of every connection it opens, dies as a host dies. It
//! measures issue 11's item 6: a connection opened shortly before its home dies must survive on
//! the successor, which took it over from the copy stream (or rebuilt it).
use super::report::Clock;
use crate::client::KeepAlive;
use crate::cluster::Cluster;
use crate::cluster_topology::{EXTERNAL_VIPS, NODES};
use crate::host_death;
use crate::topology::{client_addrs, EXT_IF, INT_IF};
use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// New connections a second.
pub const RATE_PER_S: u64 = 300;
/// How long each connection stays open between its two requests.
pub const HOLD: Duration = Duration::from_secs(1);
/// How long the storm runs before the kill, and after it.
const AROUND_KILL: Duration = Duration::from_secs(3);
/// Stack of a connection's thread: it only connects, asks twice and sleeps.
const STACK: usize = 128 * 1024;

/// A storm connection that failed.
#[derive(Clone, Debug)]
pub struct StormFailure {
    /// When it was opened.
    pub opened: Instant,
    /// The client address.
    pub src: Ipv4Addr,
    /// At open (connect or first request) or at close (the second request).
    pub phase: &'static str,
    /// What went wrong.
    pub error: String,
}

/// What the storm saw.
#[derive(Clone, Debug)]
pub struct StormReport {
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The node killed (the VIP's owner, home of its new connections).
    pub killed: usize,
    /// When its links went down.
    pub died: Instant,
    /// Connections opened.
    pub opened: u64,
    /// The ones that failed.
    pub failures: Vec<StormFailure>,
}

impl StormReport {
    /// Failed connections per 1,000.
    pub fn failed_per_1000(&self) -> f64 {
        per_1000(self.failures.len() as u64, self.opened)
    }
}

/// `part` per 1,000 of `whole` (0 of nothing).
pub fn per_1000(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 1000.0 / whole as f64
    }
}

/// One storm connection: open and ask, hold, ask again, close.
fn hold_one(src: Ipv4Addr, dst: SocketAddrV4) -> Result<(), (&'static str, String)> {
    let mut conn = KeepAlive::connect(src, dst).map_err(|e| ("open", format!("{e:#}")))?;
    let backend = conn.get().map_err(|e| ("open", format!("{e:#}")))?;
    std::thread::sleep(HOLD);
    match conn.get() {
        Ok(body) if body == backend => Ok(()),
        Ok(body) => Err(("close", format!("answered by {body}, opened on {backend}"))),
        Err(e) => Err(("close", format!("{e:#}"))),
    }
}

/// Runs the storm through the first external VIP, kills its owner mid-storm, brings it back
/// and waits until the cluster has settled.
pub fn run(cluster: &mut Cluster, clock: &Clock) -> Result<StormReport> {
    let vip = EXTERNAL_VIPS[0];
    let dst = Cluster::web(vip);
    let home = cluster.owner(vip)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let stopping = stop.clone();
    // The spawner runs in the client namespace; the threads it starts share it.
    let spawner = cluster.client().spawn(move || {
        let started = Instant::now();
        let srcs = client_addrs();
        let mut opened = 0u64;
        while !stopping.load(Ordering::Relaxed) {
            let due = started + Duration::from_micros(opened * 1_000_000 / RATE_PER_S);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let src = srcs[opened as usize % srcs.len()];
            let tx = tx.clone();
            std::thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || {
                    let at = Instant::now();
                    let _ = tx.send((at, src, hold_one(src, dst)));
                })
                .context("starting a storm connection")?;
            opened += 1;
        }
        Ok(opened)
    });
    println!(
        "{} storm: {RATE_PER_S} new connections/s to {dst}, each held {HOLD:?}; {} is home",
        clock.stamp(Instant::now()),
        NODES[home]
    );
    std::thread::sleep(AROUND_KILL);
    let dead = host_death::kill(&cluster.bed, NODES[home], &[EXT_IF, INT_IF])?;
    let died = dead.died;
    println!(
        "{} storm: {} killed as a host dies",
        clock.stamp(died),
        NODES[home]
    );
    cluster.kill_daemon(home)?;
    std::thread::sleep(AROUND_KILL);
    stop.store(true, Ordering::Relaxed);
    let opened = spawner.join().expect("storm spawner panicked")?;
    // Every connection's thread sends once; the channel ends when the last one has.
    let failures = rx
        .iter()
        .filter_map(|(opened, src, outcome)| {
            outcome.err().map(|(phase, error)| StormFailure {
                opened,
                src,
                phase,
                error,
            })
        })
        .collect();
    dead.revive(&cluster.bed)?;
    cluster.start_daemon(home)?;
    cluster.wait_settled(Duration::from_secs(30))?;
    Ok(StormReport {
        vip,
        killed: home,
        died,
        opened,
        failures,
    })
}
