//! The new-connection storm (`--storm`): connections through one VIP opened at
//! [`RATE_PER_S`], each asked once at open and once more [`HOLD`] later before it closes,
//! while the VIP's owner, the home of every connection it opens, dies as a host dies. It
//! measures issue 11's item 6: a connection opened shortly before its home dies must survive on
//! the successor, which took it over from the copy stream (or rebuilt it).
use super::report::Clock;
use crate::client::{Storm, StormFailure};
use crate::cluster::Cluster;
use crate::cluster_topology::{EXTERNAL_VIPS, NODES};
use crate::host_death;
use crate::topology::{client_addrs, EXT_IF, INT_IF};
use anyhow::Result;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// New connections a second.
pub const RATE_PER_S: u64 = 300;
/// How long each connection stays open between its two requests.
pub const HOLD: Duration = Duration::from_secs(1);
/// How long the storm runs before the kill, and after it.
const AROUND_KILL: Duration = Duration::from_secs(3);

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

/// Runs the storm through the first external VIP, kills its owner mid-storm, brings it back
/// and waits until the cluster has settled.
pub fn run(cluster: &mut Cluster, clock: &Clock) -> Result<StormReport> {
    let vip = EXTERNAL_VIPS[0];
    let dst = Cluster::web(vip);
    let home = cluster.owner(vip)?;
    let storm = Storm::start(cluster.client(), &client_addrs(), dst, RATE_PER_S, HOLD);
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
    let outcome = storm.stop()?;
    dead.revive(&cluster.bed)?;
    cluster.start_daemon(home)?;
    cluster.wait_settled(Duration::from_secs(30))?;
    Ok(StormReport {
        vip,
        killed: home,
        died,
        opened: outcome.opened.len() as u64,
        failures: outcome.failures,
    })
}
