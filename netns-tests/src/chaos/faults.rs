//! The faults of a chaos run, drawn from its seed, and how each is done to the cluster. Every
//! fault undoes itself before it returns (the dead come back, the stopped resume, links come
//! up, rules go), so the next one starts from a whole cluster once it has settled
//! ([`settle`]); the same seed draws the same faults, nodes and durations, which is what makes a
//! failing run replayable.
use super::report::Clock;
use crate::cluster::{all_vips, Cluster, CLUSTER_PORT};
use crate::cluster_topology::{EXTERNAL_VIPS, NODES};
use crate::hog::{self, CpuHog};
use crate::host_death::{self, DeadHost};
use crate::topology::{EXT_IF, INT_IF};
use anyhow::{Context, Result};
/// The ring simulator's generator (splitmix64): small, reproducible, no dependency.
pub use gateway::cluster::sim::Rng;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long the cluster may take to converge after a step of a fault.
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);
/// How long the cluster may take to settle after a fault ([`settle`]).
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// The CPU a hog shares with a daemon (as `cluster_cpu_hog`).
const HOG_CPU: usize = 1;
/// Busy threads of a hog.
const HOG_THREADS: usize = 4;
/// The share of the cluster protocol's datagrams a lossy network drops, in percent.
const LOSS_PERCENT: u32 = 20;

/// Draws a duration in `[low, high]`, to the millisecond.
pub fn between(rng: &mut Rng, low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + Duration::from_millis(rng.below(span + 1))
}

/// Draws one of `items` (not empty).
pub fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// kill -9 of a host (links down, every process killed), then it comes back.
    HostDeath,
    /// A host dies, then the node that took its VIP, then the first comes back while the
    /// second is still dead, then the second.
    TwoDeaths,
    /// SIGSTOP of a daemon for 1-3 s, then SIGCONT.
    Pause,
    /// A node's links down for 1-3 s, then up.
    LinksDown,
    /// 20 % loss of the cluster protocol on every node for 3-8 s.
    Loss,
    /// `gateway stop --keep-datapath`, then the daemon starts again on its pins.
    Restart,
    /// `gateway vip move` of an external VIP to another node.
    VipMove,
    /// `gateway reload` of a harmlessly changed configuration (the UDP idle timeout).
    Reload,
    /// Busy threads share one CPU with every thread of a daemon for 3-8 s.
    CpuHog,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 9] = [
        Kind::HostDeath,
        Kind::TwoDeaths,
        Kind::Pause,
        Kind::LinksDown,
        Kind::Loss,
        Kind::Restart,
        Kind::VipMove,
        Kind::Reload,
        Kind::CpuHog,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::HostDeath => "host death",
            Kind::TwoDeaths => "two deaths",
            Kind::Pause => "SIGSTOP",
            Kind::LinksDown => "links down",
            Kind::Loss => "20% loss",
            Kind::Restart => "restart --keep-datapath",
            Kind::VipMove => "vip move",
            Kind::Reload => "reload",
            Kind::CpuHog => "CPU hog",
        }
    }
}

/// Draws the kinds in rounds, each a seeded permutation of every kind: a run long enough for
/// one round (about 90 s) does every kind once, whatever the seed.
pub struct Picker {
    round: Vec<Kind>,
}

impl Picker {
    /// No round drawn yet.
    pub fn new() -> Self {
        Self { round: Vec::new() }
    }

    /// The next kind.
    pub fn next(&mut self, rng: &mut Rng) -> Kind {
        if self.round.is_empty() {
            self.round = Kind::ALL.to_vec();
            // Fisher-Yates; the round is used from its end.
            for i in (1..self.round.len()).rev() {
                self.round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        self.round.pop().expect("a round has every kind")
    }
}

impl Default for Picker {
    fn default() -> Self {
        Self::new()
    }
}

/// One fault as it was done: what, to which nodes, when each step happened, and whether it
/// could be done at all. What broke meanwhile is the report's business.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// The kind.
    pub kind: Kind,
    /// The nodes it was done to (indexes into [`NODES`]), in order.
    pub nodes: Vec<usize>,
    /// When its first step began.
    pub started: Instant,
    /// Each step with its time.
    pub steps: Vec<(Instant, String)>,
    /// The error that cut it short, if any.
    pub error: Option<String>,
}

impl FaultRecord {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            nodes: Vec::new(),
            started: Instant::now(),
            steps: Vec::new(),
            error: None,
        }
    }

    /// Records a step now and prints it, so a run that hangs shows how far it got.
    pub fn step(&mut self, clock: &Clock, text: String) {
        let now = Instant::now();
        println!("  {} {text}", clock.stamp(now));
        self.steps.push((now, text));
    }

    /// The nodes' names, joined.
    pub fn node_names(&self) -> String {
        let names: Vec<&str> = self.nodes.iter().map(|&i| NODES[i]).collect();
        names.join(", ")
    }
}

/// Does a fault of `kind` to `cluster`, with nodes and durations drawn from `rng`; returns its
/// record, with the error if a step failed (the cluster is then healed as far as it goes).
pub fn inject(cluster: &mut Cluster, kind: Kind, rng: &mut Rng, clock: &Clock) -> FaultRecord {
    let mut doing = Doing {
        cluster,
        rng,
        clock,
        record: FaultRecord::new(kind),
    };
    println!(
        "{} fault: {}",
        clock.stamp(doing.record.started),
        kind.name()
    );
    let before = owners(doing.cluster);
    doing.step(format!("owners before: {before}"));
    let result = match kind {
        Kind::HostDeath => doing.host_death(),
        Kind::TwoDeaths => doing.two_deaths(),
        Kind::Pause => doing.pause(),
        Kind::LinksDown => doing.links_down(),
        Kind::Loss => doing.loss(),
        Kind::Restart => doing.restart(),
        Kind::VipMove => doing.vip_move(),
        Kind::Reload => doing.reload(),
        Kind::CpuHog => doing.cpu_hog(),
    };
    if let Err(e) = result {
        let error = format!("{e:#}");
        doing.step(format!("FAILED: {error}"));
        doing.record.error = Some(error);
        heal(doing.cluster);
    }
    doing.record
}

/// The converged VIP table as `10.0.0.100 gw1, ...`, or why there is none, and the NAT blocks
/// away from their nodes (held by another node since a death), which say where the replies of a
/// dead node's connections go.
fn owners(cluster: &Cluster) -> String {
    let table = match cluster.converged() {
        Ok(table) => {
            let owners: Vec<String> = table
                .iter()
                .map(|(vip, i)| format!("{vip} {}", NODES[*i]))
                .collect();
            owners.join(", ")
        }
        Err(e) => return format!("not converged ({e:#})"),
    };
    let blocks = cluster
        .live()
        .first()
        .and_then(|&i| cluster.view(i).ok())
        .map(|view| {
            view.blocks
                .iter()
                .map(|b| format!("{} held by {} ({})", b.block, b.holder, b.state))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if blocks.is_empty() {
        table
    } else {
        format!("{table}; blocks away: {}", blocks.join(", "))
    }
}

/// Waits until the cluster has settled after `record`'s fault (converged, the table unchanged
/// for two seconds), then a quiet 2-4 s, so the next fault starts from a steady cluster and
/// what broke is the fault's. A cluster that does not settle is healed once and given another
/// chance.
pub fn settle(
    cluster: &mut Cluster,
    rng: &mut Rng,
    clock: &Clock,
    record: &mut FaultRecord,
) -> Result<()> {
    let started = Instant::now();
    if let Err(e) = cluster.wait_settled(SETTLE_WITHIN) {
        println!(
            "  {} not settled after {SETTLE_WITHIN:?} ({e:#}); healing",
            clock.stamp(Instant::now())
        );
        heal(cluster);
        cluster
            .wait_settled(SETTLE_WITHIN)
            .context("the cluster did not settle after a fault, even healed")?;
    }
    let quiet = between(rng, Duration::from_secs(2), Duration::from_secs(4));
    record.step(
        clock,
        format!(
            "settled in {:.2?}: {}; quiet for {quiet:.1?}",
            started.elapsed(),
            owners(cluster)
        ),
    );
    std::thread::sleep(quiet);
    Ok(())
}

/// Undoes whatever a fault cut short may have left: every daemon resumed and running, links
/// up, no loss rule. Best effort: each repair that fails is printed.
pub fn heal(cluster: &mut Cluster) {
    for (i, name) in NODES.iter().enumerate() {
        let mut repairs = Vec::new();
        if cluster.nodes[i].paused {
            repairs.push(cluster.resume(i));
        }
        repairs.push(cluster.set_links(i, "up"));
        if cluster.status(i).is_err() {
            // Killed, stopped or dead without being reaped: reaped (if need be) and started.
            let _ = cluster.kill_daemon(i);
            repairs.push(cluster.start_daemon(i));
        }
        for e in repairs.into_iter().filter_map(Result::err) {
            println!("  heal {name}: {e:#}");
        }
        // The table is there only while a loss fault runs.
        let _ = cluster.nft_clear(i);
    }
}

/// Something done to one node of the cluster (and its undoing).
type NodeAction = fn(&mut Cluster, usize) -> Result<()>;

/// A fault being done: the cluster, the run's generator and clock, and the fault's record.
struct Doing<'a> {
    cluster: &'a mut Cluster,
    rng: &'a mut Rng,
    clock: &'a Clock,
    record: FaultRecord,
}

/// The UDP idle timeout of the generated configs, and the value a reload switches it to and
/// back: a change every member must stage and apply live, which touches no connection.
const UDP_TIMEOUTS: [&str; 2] = ["udp = \"30s\"", "udp = \"31s\""];

impl Doing<'_> {
    fn step(&mut self, text: String) {
        self.record.step(self.clock, text);
    }

    fn between(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        between(
            self.rng,
            Duration::from_millis(low_ms),
            Duration::from_millis(high_ms),
        )
    }

    /// The node a fault hits: the owner of a VIP drawn from every VIP (the internal one too),
    /// so each fault to a node moves something.
    fn node(&mut self) -> Result<usize> {
        let i = self.cluster.owner(pick(self.rng, &all_vips()))?;
        self.record.nodes.push(i);
        Ok(i)
    }

    /// Node `i` dies as a host dies (links down, every process in its namespace killed); the
    /// daemon is reaped, and the cluster converges without it.
    fn kill(&mut self, i: usize) -> Result<DeadHost> {
        let dead = host_death::kill(&self.cluster.bed, NODES[i], &[EXT_IF, INT_IF])?;
        self.step(format!("{} killed as a host dies", NODES[i]));
        self.cluster.kill_daemon(i)?;
        let took = self.cluster.wait_converged(CONVERGE_WITHIN)?;
        self.step(format!("survivors converged ({took:.2?} after)"));
        Ok(dead)
    }

    /// A dead node comes back: links up, its daemon started on its pins.
    fn comeback(&mut self, i: usize, dead: DeadHost) -> Result<()> {
        dead.revive(&self.cluster.bed)?;
        self.cluster.start_daemon(i)?;
        self.step(format!("{} back (daemon ready)", NODES[i]));
        Ok(())
    }

    /// Does `what` to a node (`doing`), holds it for `low_ms` to `high_ms` milliseconds, and
    /// undoes it (`undoing`).
    fn hold(
        &mut self,
        (low_ms, high_ms): (u64, u64),
        what: &str,
        (doing, undoing): (NodeAction, NodeAction),
        undone: &str,
    ) -> Result<()> {
        let i = self.node()?;
        let hold = self.between(low_ms, high_ms);
        doing(self.cluster, i)?;
        self.step(format!("{} {what} for {hold:.1?}", NODES[i]));
        std::thread::sleep(hold);
        undoing(self.cluster, i)?;
        self.step(format!("{} {undone}", NODES[i]));
        Ok(())
    }

    fn host_death(&mut self) -> Result<()> {
        let i = self.node()?;
        let dead = self.kill(i)?;
        std::thread::sleep(self.between(1000, 3000));
        self.comeback(i, dead)
    }

    /// Issue 11, item 1: X dies, then Y, the node that took X's VIP; X comes back while Y is
    /// still dead, then Y.
    fn two_deaths(&mut self) -> Result<()> {
        let vip = pick(self.rng, &EXTERNAL_VIPS);
        let x = self.cluster.owner(vip)?;
        self.record.nodes.push(x);
        let dead_x = self.kill(x)?;
        let y = self.cluster.owner(vip)?;
        self.record.nodes.push(y);
        std::thread::sleep(self.between(300, 2000));
        let dead_y = self.kill(y)?;
        std::thread::sleep(self.between(500, 1500));
        self.comeback(x, dead_x)?;
        let took = self.cluster.wait_converged(CONVERGE_WITHIN)?;
        self.step(format!("one ring with {} ({took:.2?})", NODES[x]));
        std::thread::sleep(self.between(1000, 2000));
        self.comeback(y, dead_y)
    }

    fn pause(&mut self) -> Result<()> {
        self.hold(
            (1000, 3000),
            "SIGSTOP",
            (|c, i| c.pause(i), |c, i| c.resume(i)),
            "SIGCONT",
        )
    }

    fn links_down(&mut self) -> Result<()> {
        self.hold(
            (1000, 3000),
            "links down",
            (|c, i| c.set_links(i, "down"), |c, i| c.set_links(i, "up")),
            "links up",
        )
    }

    /// Loss of the cluster protocol alone (its UDP port, on every node's input): loss of every
    /// packet would also make the clients' own TCP retransmit past their timeouts, which would
    /// measure TCP, not the gateway.
    fn loss(&mut self) -> Result<()> {
        let hold = self.between(3000, 8000);
        let rule = format!(
            "chain in {{ type filter hook input priority 0; \
             udp dport {CLUSTER_PORT} numgen random mod 100 < {LOSS_PERCENT} drop; }}"
        );
        for i in 0..NODES.len() {
            self.cluster.nft(i, &rule)?;
            self.record.nodes.push(i);
        }
        self.step(format!(
            "{LOSS_PERCENT} % loss of the cluster protocol on every node for {hold:.1?}"
        ));
        std::thread::sleep(hold);
        for i in 0..NODES.len() {
            self.cluster.nft_clear(i)?;
        }
        self.step("loss ends".to_owned());
        Ok(())
    }

    fn restart(&mut self) -> Result<()> {
        let i = self.node()?;
        let took = self.cluster.stop_daemon(i, true)?;
        self.step(format!(
            "{} stopped with --keep-datapath ({took:.2?})",
            NODES[i]
        ));
        std::thread::sleep(self.between(500, 1500));
        self.cluster.start_daemon(i)?;
        self.step(format!("{} started on its pins (ready)", NODES[i]));
        Ok(())
    }

    fn vip_move(&mut self) -> Result<()> {
        let vip: Ipv4Addr = pick(self.rng, &EXTERNAL_VIPS);
        let from = self.cluster.owner(vip)?;
        let to = (from + 1 + self.rng.below(NODES.len() as u64 - 1) as usize) % NODES.len();
        self.record.nodes.extend([from, to]);
        let asked = Instant::now();
        self.cluster
            .daemon(from)?
            .cli(&["vip", "move", &vip.to_string(), NODES[to]])?;
        self.step(format!(
            "{vip} moved {} -> {} (the CLI returned after {:.2?})",
            NODES[from],
            NODES[to],
            asked.elapsed()
        ));
        Ok(())
    }

    fn reload(&mut self) -> Result<()> {
        let i = self.rng.below(NODES.len() as u64) as usize;
        self.record.nodes.push(i);
        let path = self.cluster.nodes[i].config.clone();
        let text = std::fs::read_to_string(&path)?;
        let (change, text) = match UDP_TIMEOUTS.iter().position(|t| text.contains(t)) {
            Some(k) => (
                format!("{} -> {}", UDP_TIMEOUTS[k], UDP_TIMEOUTS[1 - k]),
                text.replace(UDP_TIMEOUTS[k], UDP_TIMEOUTS[1 - k]),
            ),
            None => ("unchanged".to_owned(), text),
        };
        std::fs::write(&path, text)?;
        let asked = Instant::now();
        self.cluster.daemon(i)?.cli(&["reload"])?;
        self.step(format!(
            "reload on {} ({change}): every member runs it after {:.2?}",
            NODES[i],
            asked.elapsed()
        ));
        Ok(())
    }

    fn cpu_hog(&mut self) -> Result<()> {
        let i = self.node()?;
        let hold = self.between(3000, 8000);
        let pid = self.cluster.daemon(i)?.pid()?;
        hog::pin_process(pid, HOG_CPU)?;
        let busy = CpuHog::start(HOG_CPU, HOG_THREADS)?;
        self.step(format!(
            "{} pinned to CPU {HOG_CPU} beside {HOG_THREADS} busy threads for {hold:.1?}",
            NODES[i]
        ));
        std::thread::sleep(hold);
        drop(busy);
        hog::unpin_process(pid)?;
        self.step(format!("hog ends, {} unpinned", NODES[i]));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let draw = |seed| {
            let (mut rng, mut picker) = (Rng::new(seed), Picker::new());
            (0..20).map(|_| picker.next(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn every_round_does_every_kind_once() {
        let (mut rng, mut picker) = (Rng::new(7), Picker::new());
        for _ in 0..3 {
            let round: Vec<Kind> = (0..Kind::ALL.len())
                .map(|_| picker.next(&mut rng))
                .collect();
            for kind in Kind::ALL {
                assert_eq!(round.iter().filter(|k| **k == kind).count(), 1, "{kind:?}");
            }
        }
    }

    #[test]
    fn durations_stay_within_their_bounds() {
        let mut rng = Rng::new(3);
        let (low, high) = (Duration::from_secs(1), Duration::from_secs(3));
        for _ in 0..1000 {
            let d = between(&mut rng, low, high);
            assert!(d >= low && d <= high, "{d:?}");
        }
        assert_eq!(between(&mut rng, low, low), low);
    }
}
