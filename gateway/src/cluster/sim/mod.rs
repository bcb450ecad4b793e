//! The deterministic simulator: many nodes (each the real `Node` over the real `Transport`,
//! real encoding and HMAC) in one process, a virtual clock, and a seeded network that loses,
//! delays, duplicates and reorders datagrams, partitions and heals, and crashes, pauses and
//! restarts nodes. Invariants are asserted as it runs; a failure names its seed, and
//! `cargo xtask sim --seed N [--family F]` replays it. Besides the random mix, `Family` names
//! fault sequences that broke real clusters, run on a lossless network with stricter checks.
//!
//! "Answering" for a VIP, as the model's stand-in for XDP answering ARP: a node whose host is
//! up, whose latest `ApplyVips` holds the VIP, and whose lease is valid. The daemon renews the
//! lease (`LEASE`, [`Lease`]) every `LEASE_TICK` while its process runs, and between ticks when
//! a token lets a lapsed one run again; a paused process stops renewing,
//! so its XDP stops answering when the lease runs out (the dead-man switch); a crashed host
//! answers nothing.
//!
//! Configuration changes: operators offer new configurations at random members during the
//! fault phase (some of them invalid: every node but the offerer's refuses them). The model of
//! the daemon keeps the documents each node has; a fetch succeeds after a short delay when the
//! source is up, reachable and has the document. Checked: a node only ever runs a configuration
//! that was offered and that it accepts; after the faults every live member runs the ring's
//! configuration or refused it, no offer is left pending, and every operator got an answer.
//!
//! Connections (`traffic`): clients open and use connections through a model of each node's
//! XDP program, whose table the node's model of the daemon streams to its successor with the
//! real `CopyPacing` and `CopyStream` into the real `CopyStore`, and rewrites on a take-over
//! with the real `Takeovers` and `copies::take_over`; its VIP holders come from the real
//! `HolderTable`. Checked: once the ring has converged, every member's successor holds a copy
//! of exactly its table; and every connection a crashed node was serving that a node took over
//! from its copies is served (its TCP packets translated with the dead node's NAT port, its
//! datagrams translated), unless a fault since the crash excuses it.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

mod traffic;

use self::traffic::{Clients, DataPath, Fate, Packet, Step, HOPS, TCP};
use super::{
    copies::{self, CopyPacing, CopyStep, CopyStore, CopyStream, Readiness},
    driver::{Lease, Outcomes, Rivals, Takeover, Takeovers, Timers},
    events::{Action, Event, TimerKind},
    handoff::HolderTable,
    keys::Keyring,
    message::{ConfigId, ConnId, Message},
    token_ring::{Membership, Node, RingConfig},
    transport::{Peer, Transport, TransportConfig, TransportEvent},
    types::{NodeId, Persistence, VipEntry},
};

/// How often a running daemon renews its lease.
pub const LEASE_TICK: Duration = Duration::from_millis(20);
/// How long a lease lasts.
pub const LEASE: Duration = Duration::from_millis(100);
/// Longest time two nodes may both answer for one VIP: the split-brain resolution time. A
/// node that stops (pause, partition) keeps answering until its lease runs out, while the
/// others remove it after the transport gives up on it; both are bounded well below this.
pub const RESOLUTION: Duration = Duration::from_millis(1000);
/// After the last fault, the ring must have converged within this.
pub const CONVERGENCE: Duration = Duration::from_secs(6);
/// The shortest time a crashed host takes to boot again: long enough for the ring to give up
/// on it (a real host takes seconds), so its NAT block and connections are taken over.
pub const HOST_BOOT: Duration = Duration::from_millis(200);

/// A small, fast, reproducible random number generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What a scenario does, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The kind of fault sequence.
    pub family: Family,
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Configured nodes.
    pub nodes: usize,
    /// VIPs.
    pub vips: usize,
    /// Datagram loss, percent, while faults run.
    pub loss: u64,
    /// Faults (crash, pause, partition) injected during the fault phase.
    pub faults: usize,
    /// How long faults are injected.
    pub fault_phase: Duration,
}

/// A kind of scenario: the seeded mix of every fault, or one of the fault sequences that broke
/// real clusters (issue 11), on a lossless network where stricter invariants hold: no VIP is
/// ever answered by two nodes, and (`QuietDeath`, `Comeback`) no node removes a live one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Crashes, pauses, partitions and configuration offers at random, with loss.
    Random,
    /// One host dies in a settled cluster; it comes back at the end.
    QuietDeath,
    /// A host dies, then another; the first comes back while the second is still dead.
    Comeback,
    /// Every node starts within 50 ms of the others.
    StartUp,
    /// For a while the datagrams one node sends (to everyone, or to one peer) are lost, some
    /// or all: its acks do not arrive while it hears everything.
    AckLoss,
}

impl Family {
    /// Every family, in the order the test runs them.
    pub const ALL: [Family; 5] = [
        Family::Random,
        Family::QuietDeath,
        Family::Comeback,
        Family::StartUp,
        Family::AckLoss,
    ];

    /// Its name on the command line (`--family`, `SIM_FAMILY`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Random => "random",
            Family::QuietDeath => "quiet-death",
            Family::Comeback => "comeback",
            Family::StartUp => "start-up",
            Family::AckLoss => "ack-loss",
        }
    }

    /// The family called `name`.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether no VIP may ever have two answering nodes (lossless, nothing paused or cut).
    fn never_dual(self) -> bool {
        matches!(
            self,
            Family::QuietDeath | Family::Comeback | Family::StartUp
        )
    }

    /// Whether no node may ever remove a live one from its ring.
    fn never_removes_live(self) -> bool {
        matches!(self, Family::QuietDeath | Family::Comeback)
    }
}

impl Scenario {
    /// The scenario of `seed` in `family`.
    pub fn of(family: Family, seed: u64) -> Self {
        if family == Family::Random {
            return Self::from_seed(seed);
        }
        let mut rng = Rng::new(seed ^ (0xfa31_1700 + family as u64));
        let least = if family == Family::Comeback { 3 } else { 2 };
        Self {
            family,
            seed,
            nodes: least + rng.below(9 - least as u64) as usize,
            vips: 1 + rng.below(8) as usize,
            loss: if family == Family::AckLoss { 3 } else { 0 },
            faults: 0,
            fault_phase: Duration::from_millis(2500 + rng.below(1500)),
        }
    }

    /// The scenario of `seed` in the random family: mostly 2 to 8 nodes, some up to 16 and a
    /// few of 64.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5ce7_a210);
        let nodes = match rng.below(1000) {
            0..=1 => 64,
            2..=99 => 9 + rng.below(8) as usize,
            _ => 2 + rng.below(7) as usize,
        };
        Self {
            family: Family::Random,
            seed,
            nodes,
            vips: 1 + rng.below(8) as usize,
            loss: rng.below(15),
            faults: rng.below(5) as usize,
            fault_phase: Duration::from_millis(500 + rng.below(3000)),
        }
    }
}

/// A fault as the connection check sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disruption {
    /// A crashed node boots again.
    Restart(usize),
    /// A crash, a pause, a resume, a partition or its healing.
    Other,
}

enum Fault {
    Crash(usize),
    Restart(usize),
    Pause(usize),
    Resume(usize),
    /// The cluster links between `side` and the rest are cut. With `isolated`, `side` also
    /// lost its external NICs (the router and clients are with the rest): those nodes see
    /// their witness fail. Otherwise both sides still share the external segment, so each
    /// hears the other's ARP (a cluster-only partition).
    Partition {
        side: BTreeSet<usize>,
        isolated: bool,
    },
    Heal,
    /// A host that was never up boots (the first boot of a staggered start).
    Boot(usize),
    /// The operator of node `0` offers a new configuration (`1`: a valid one).
    Offer(usize, bool),
    /// From now on `percent` of the datagrams node `from` sends (to `to` only, if given) are
    /// lost; 0 ends it.
    SendLoss {
        from: usize,
        to: Option<usize>,
        percent: u64,
    },
}

/// The first digest byte of a configuration every node refuses.
const INVALID: u8 = 0xee;

struct Host {
    node: Node,
    transport: Transport,
    timers: Timers<TimerKind>,
    sent: Outcomes,
    rivals: Rivals,
    up: bool,
    paused: bool,
    lease: Lease,
    next_lease: Instant,
    owned: BTreeSet<Ipv4Addr>,
    boots: u64,
    /// The configuration documents the daemon holds (the one it runs, the ones it staged).
    docs: BTreeSet<ConfigId>,
    /// The configuration it runs (its file: what it starts with after a restart).
    active: ConfigId,
    /// When it crashed, while it is down.
    down_since: Instant,
    /// The members each node saw with each member's boot count, for `check_removals`.
    seen_members: BTreeMap<usize, u64>,
    /// Its XDP program and maps.
    datapath: DataPath,
    /// The daemon's copy stream to its successor, and its pacing.
    copy_stream: CopyStream,
    copy_pacing: CopyPacing,
    /// The copies its predecessors streamed to it.
    copy_store: CopyStore,
    /// Whether its tables are whole yet.
    readiness: Readiness,
    /// The NAT blocks it follows away from their nodes.
    takeovers: Takeovers,
    /// Who holds each VIP's connections.
    holders: HolderTable,
    /// The take-overs handed to its datapath worker, in order, each with when it is done.
    worker: VecDeque<(Instant, Takeover)>,
}

/// How long the datapath worker takes to take over a block with `copies` connections: the
/// daemon's installs them with batched map updates, a few microseconds each.
fn take_over_time(copies: usize) -> Duration {
    Duration::from_millis(1) + Duration::from_micros(5 * copies as u64)
}

/// A host crash, with the connections the crashed node was serving then: those whose latest
/// packet it translated.
struct Crash {
    at: Instant,
    node: usize,
    serving: BTreeSet<ConnId>,
}

/// Connections a node took over from a dead node's copies.
struct TakenOver {
    at: Instant,
    gone: usize,
    holder: usize,
    /// The connections the dead node translated, with their NAT ports.
    conns: Vec<(ConnId, u16)>,
}

/// A fetch on its way: the daemon of `host` asked `from` for `config`.
struct Fetch {
    at: Instant,
    host: usize,
    boots: u64,
    from: usize,
    config: ConfigId,
}

struct Datagram {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// One simulated cluster.
pub struct Sim {
    scenario: Scenario,
    rng: Rng,
    start: Instant,
    now: Instant,
    /// `None` only while a host is being worked on.
    hosts: Vec<Option<Host>>,
    net: Vec<Datagram>,
    order: u64,
    partition: Option<(BTreeSet<usize>, bool)>,
    faults: Vec<(Instant, Fault)>,
    faults_end: Instant,
    /// Since when each VIP has had two answering nodes.
    double_since: BTreeMap<Ipv4Addr, Instant>,
    vips: Vec<VipEntry>,
    keys: Keyring,
    trace: Option<String>,
    fetches: Vec<Fetch>,
    /// Every configuration an operator offered, and at which node.
    offerers: BTreeMap<ConfigId, usize>,
    /// Offers waiting for their answer: ask id -> (node, its boot).
    open_offers: BTreeMap<u64, (usize, u64)>,
    next_ask: u64,
    clients: Clients,
    taken_over: Vec<TakenOver>,
    crashes: Vec<Crash>,
    /// When each fault other than an offer struck, in order.
    disruptions: Vec<(Instant, Disruption)>,
    /// The one-way loss in force (`Fault::SendLoss`).
    send_loss: Option<(usize, Option<usize>, u64)>,
    /// A node of a ring of three or more whose datagrams are all lost, and the VIPs it may
    /// answer for: those it answered for when the loss began, and those a token of another
    /// member gave it since (`check_muted`).
    muted: Option<(usize, BTreeSet<Ipv4Addr>)>,
    /// Whether the ring has converged once (from then on `check_removals` applies).
    settled: bool,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 9, (i / 250) as u8, (i % 250 + 1) as u8], 7400))
}

impl Sim {
    /// Builds the scenario's cluster and fault schedule; `trace` records every step.
    pub fn new(scenario: Scenario, trace: bool) -> Self {
        let mut rng = Rng::new(scenario.seed);
        let start = Instant::now();
        let vips: Vec<VipEntry> = (0..scenario.vips)
            .map(|i| VipEntry {
                address: Ipv4Addr::new(10, 0, 0, 100 + i as u8),
                owner: None,
                previous: None,
                preferred: (rng.chance(50)).then(|| NodeId(rng.below(scenario.nodes as u64) as u8)),
                persistence: [Persistence::Free, Persistence::Sticky, Persistence::Home]
                    [rng.below(3) as usize],
                placed: false,
            })
            .collect();
        let keys = Keyring::new(1, [(1, [7u8; 32])]).expect("a valid keyring");
        let clients = Clients::new(scenario.seed, start);
        let mut sim = Self {
            faults_end: start + scenario.fault_phase,
            rng,
            start,
            now: start,
            hosts: Vec::new(),
            net: Vec::new(),
            order: 0,
            partition: None,
            faults: Vec::new(),
            double_since: BTreeMap::new(),
            vips,
            keys,
            trace: trace.then(String::new),
            scenario,
            fetches: Vec::new(),
            offerers: BTreeMap::from([(
                ConfigId {
                    version: 1,
                    digest: [0; 32],
                },
                usize::MAX,
            )]),
            open_offers: BTreeMap::new(),
            next_ask: 1,
            clients,
            taken_over: Vec::new(),
            crashes: Vec::new(),
            disruptions: Vec::new(),
            send_loss: None,
            muted: None,
            settled: false,
        };
        for i in 0..sim.scenario.nodes {
            let host = sim.boot(
                i,
                1,
                ConfigId {
                    version: 1,
                    digest: [0; 32],
                },
            );
            sim.hosts.push(Some(host));
        }
        sim.schedule_faults();
        sim
    }

    fn ring_config(&mut self, active: ConfigId) -> RingConfig {
        let nodes = (0..self.scenario.nodes).map(|i| NodeId(i as u8)).collect();
        let mut config = RingConfig::new(nodes, self.vips.clone());
        config.config = active;
        config.initial_seq = self.rng.next_u64() >> 8;
        config.unreachable_after = TransportConfig::default().give_up_after();
        config
    }

    fn boot(&mut self, i: usize, boots: u64, active: ConfigId) -> Host {
        let peers = (0..self.scenario.nodes)
            .filter(|&j| j != i)
            .map(|j| Peer {
                id: NodeId(j as u8),
                addrs: vec![addr(j)],
            })
            .collect();
        let transport = Transport::new(
            NodeId(i as u8),
            vec![addr(i)],
            peers,
            self.keys.clone(),
            TransportConfig::default(),
            // Each boot's counters start above the last boot's.
            boots * 1_000_000,
        )
        .expect("a valid transport configuration");
        let config = self.ring_config(active);
        let (node, actions) = Node::new(config, NodeId(i as u8), self.now);
        let mut lease = Lease::new(self.now, LEASE);
        lease.renew(self.now, None);
        let mut host = Host {
            node,
            transport,
            timers: Timers::default(),
            sent: Outcomes::default(),
            rivals: Rivals::default(),
            up: true,
            paused: false,
            lease,
            next_lease: self.now + LEASE_TICK,
            owned: BTreeSet::new(),
            boots,
            docs: BTreeSet::from([active]),
            active,
            down_since: self.now,
            seen_members: BTreeMap::new(),
            datapath: DataPath::new(NodeId(i as u8)),
            copy_stream: CopyStream::default(),
            copy_pacing: CopyPacing::new(self.now),
            copy_store: CopyStore::new(usize::MAX),
            readiness: Readiness::default(),
            takeovers: Takeovers::default(),
            holders: HolderTable::default(),
            worker: VecDeque::new(),
        };
        self.perform(&mut host, i, actions);
        host
    }

    fn schedule_faults(&mut self) {
        if self.scenario.family != Family::Random {
            self.schedule_sequence();
            return;
        }
        let n = self.scenario.nodes;
        let phase = self.scenario.fault_phase.as_millis() as u64;
        for _ in 0..self.scenario.faults {
            let at = self.start + Duration::from_millis(self.rng.below(phase));
            let back = at + Duration::from_millis(100 + self.rng.below(1500));
            let back = back.min(self.faults_end);
            let victim = self.rng.below(n as u64) as usize;
            let (fault, undo) = match self.rng.below(3) {
                0 => (Fault::Crash(victim), Fault::Restart(victim)),
                1 => (Fault::Pause(victim), Fault::Resume(victim)),
                _ => {
                    let side = (0..n).filter(|_| self.rng.chance(50)).collect();
                    let isolated = self.rng.chance(50);
                    (Fault::Partition { side, isolated }, Fault::Heal)
                }
            };
            self.faults.push((at, fault));
            self.faults.push((back, undo));
        }
        // Offers draw from their own generator, so they leave every other fault of a seed as
        // it was before they existed.
        let mut offers = Rng::new(self.scenario.seed ^ 0x0ffe_7500);
        for _ in 0..offers.below(3) {
            let at = self.start + Duration::from_millis(offers.below(phase));
            let node = offers.below(n as u64) as usize;
            let valid = !offers.chance(15);
            self.faults.push((at, Fault::Offer(node, valid)));
        }
        self.faults.sort_by_key(|(at, _)| *at);
    }

    /// The faults of a family other than `Random`, from their own generator. A cluster
    /// settles within about 700 ms of a common start (start-up wait, joins, first moves).
    fn schedule_sequence(&mut self) {
        let mut rng = Rng::new(self.scenario.seed ^ 0x5e9_0e7ce);
        let n = self.scenario.nodes;
        let ms = |m: u64| Duration::from_millis(m);
        let settled = self.start + ms(700 + rng.below(800));
        let end = self.faults_end;
        let pick_other = |rng: &mut Rng, not: &[usize]| loop {
            let v = rng.below(n as u64) as usize;
            if !not.contains(&v) {
                return v;
            }
        };
        match self.scenario.family {
            Family::Random => unreachable!("scheduled by schedule_faults"),
            Family::QuietDeath => {
                let victim = pick_other(&mut rng, &[]);
                self.faults.push((settled, Fault::Crash(victim)));
                self.faults.push((end, Fault::Restart(victim)));
            }
            Family::Comeback => {
                let first = pick_other(&mut rng, &[]);
                let second = pick_other(&mut rng, &[first]);
                let second_at = settled + ms(100 + rng.below(1500));
                let back_at = second_at + ms(rng.below(600));
                self.faults.push((settled, Fault::Crash(first)));
                self.faults.push((second_at, Fault::Crash(second)));
                self.faults.push((back_at, Fault::Restart(first)));
                self.faults.push((end + ms(500), Fault::Restart(second)));
            }
            Family::StartUp => {
                // Node 0 boots at the start; every other one within 50 ms of it.
                for i in 1..n {
                    let at = self.start + Duration::from_micros(rng.below(50_000));
                    self.host_mut(i).up = false;
                    self.faults.push((at, Fault::Boot(i)));
                }
                self.net.retain(|d| Self::host_of(d.from) == Some(0));
            }
            Family::AckLoss => {
                let from = pick_other(&mut rng, &[]);
                let to = rng.chance(50).then(|| pick_other(&mut rng, &[from]));
                let percent = [30, 60, 100][rng.below(3) as usize];
                let until = settled + ms(300 + rng.below(1500));
                self.faults
                    .push((settled, Fault::SendLoss { from, to, percent }));
                self.faults.push((
                    until.min(end),
                    Fault::SendLoss {
                        from,
                        to,
                        percent: 0,
                    },
                ));
            }
        }
        self.faults.sort_by_key(|(at, _)| *at);
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let ms = self.now.duration_since(self.start).as_millis();
            let _ = writeln!(trace, "{ms:>6} ms {}", line());
        }
    }

    /// The trace so far (empty unless tracing).
    pub fn trace(&self) -> &str {
        self.trace.as_deref().unwrap_or("")
    }

    /// Carries out the ring's actions and drains the transport, as the shell's loop does;
    /// then does what the shell does with the status it publishes ([`Sim::follow`]).
    fn perform(&mut self, host: &mut Host, i: usize, actions: Vec<Action>) {
        let mut queue = actions;
        loop {
            let mut copies_sent = false;
            for action in std::mem::take(&mut queue) {
                match action {
                    Action::Send { to, msg } => {
                        if let Message::Token(t) = &msg {
                            let (seq, epoch, members) = (t.seq, t.epoch, t.members.clone());
                            self.log(|| format!("node {i} token -> {} seq {seq} epoch {epoch} members {members:?}", to.0));
                        } else {
                            self.log(|| format!("node {i} -> {}: {msg:?}", to.0));
                        }
                        let (now, transport) = (self.now, &mut host.transport);
                        if let Err(refused) = host
                            .sent
                            .send(to, &msg, |bytes| transport.send(now, to, bytes))
                        {
                            queue.extend(host.node.handle(self.now, refused.1));
                        }
                    }
                    Action::SetTimer { kind, at } => {
                        host.timers.set(kind, at);
                    }
                    Action::ApplyVips(vips) => {
                        self.log(|| format!("node {i} answers for {vips:?}"));
                        host.datapath.set_owned(self.now, &vips);
                        host.owned = vips;
                    }
                    Action::Garp(_) | Action::AdminDone { .. } => {}
                    Action::FetchConfig { from, config } => {
                        let delay = Duration::from_millis(1 + self.rng.below(20));
                        self.fetches.push(Fetch {
                            at: self.now + delay,
                            host: i,
                            boots: host.boots,
                            from: usize::from(from.0),
                            config,
                        });
                    }
                    Action::ActivateConfig(config) => {
                        self.log(|| format!("node {i} runs configuration {}", config.version));
                        let offerer = self.offerers.get(&config).copied();
                        assert!(
                            offerer.is_some()
                                && (config.digest[0] != INVALID || offerer == Some(i)),
                            "seed {}: node {i} runs configuration {config:?}, never offered or refused by it",
                            self.scenario.seed
                        );
                        host.active = config;
                        host.docs.insert(config);
                    }
                    Action::ConfigDone { ask, result } => {
                        self.log(|| format!("node {i} offer {ask}: {result:?}"));
                        self.open_offers.remove(&ask);
                    }
                }
            }
            while let Some(t) = host.transport.poll_transmit() {
                self.send_datagram(t.from, t.to, t.bytes);
            }
            while let Some(event) = host.transport.poll_event() {
                let event = match event {
                    TransportEvent::Received { from, payload } => match Message::decode(&payload) {
                        Ok(Message::Copies(copies)) => {
                            host.copy_store.receive(from, copies);
                            continue;
                        }
                        Ok(msg) => {
                            host.rivals.hear(self.now, &msg);
                            self.given_while_muted(i, &msg);
                            Event::Received { from, msg }
                        }
                        Err(e) => {
                            panic!("seed {}: undecodable ring message: {e}", self.scenario.seed)
                        }
                    },
                    TransportEvent::Delivered { .. } | TransportEvent::Unreachable { .. } => {
                        if host.copy_pacing.settle(&event) {
                            self.send_copies(host, i);
                            copies_sent = true;
                            continue;
                        }
                        match host.sent.settle(&event) {
                            Some(outcome) => outcome,
                            None => continue,
                        }
                    }
                };
                queue.extend(host.node.handle(self.now, event));
            }
            if queue.is_empty() && !copies_sent {
                break;
            }
        }
        // As the shell does: a token after a loss lets the lease run again at once.
        let cap = host.node.answer_until();
        host.lease.renew_early(self.now, cap, host.next_lease);
        self.follow(host, i);
    }

    /// What the shell does with every status it publishes: the copy stream follows the ring,
    /// the NAT blocks newly away from their nodes are taken over, and the data path learns
    /// who holds each VIP's connections (the last two not while the ring waits for its
    /// quorum).
    fn follow(&mut self, host: &mut Host, i: usize) {
        let me = NodeId(i as u8);
        let status = host.node.status();
        host.copy_pacing.follow(&status, me);
        if host.readiness.follow(&status, me, &host.copy_store) {
            self.log(|| format!("node {i} tables whole"));
            let actions = host.node.handle(self.now, Event::TablesWhole);
            self.perform(host, i, actions);
        }
        if status.quorum_wait {
            return;
        }
        let followed =
            host.takeovers
                .follow(me, &status.blocks, &status.members, &mut host.copy_store);
        for takeover in followed.unwrap_or_default() {
            let (gone, holder) = (takeover.gone.0, takeover.holder.0);
            self.log(|| format!("node {i} follows block {gone} -> {holder}"));
            // The daemon's worker takes them over in turn, after what it is doing.
            let start = host.worker.back().map_or(self.now, |(done, _)| *done);
            let done = start.max(self.now) + take_over_time(takeover.copies.count());
            host.worker.push_back((done, takeover));
        }
        let changed = host
            .holders
            .update(self.now, &status.vips, &status.members, &status.blocks);
        for (vip, holders) in host.takeovers.gate(changed) {
            host.datapath.holders.insert(vip, holders);
        }
    }

    /// Carries out the take-overs the worker has finished by now, as `Worker::take_over`
    /// does, and on the holder what the shell does at `Completion::TakenOver`.
    fn finish_takeovers(&mut self, host: &mut Host, i: usize) {
        let me = NodeId(i as u8);
        while host
            .worker
            .front()
            .is_some_and(|(done, _)| *done <= self.now)
        {
            let (_, takeover) = host.worker.pop_front().expect("a take-over");
            let Takeover {
                gone,
                holder,
                copies,
            } = takeover;
            let copies = copies.into_vec();
            let changes = copies::take_over(me, gone, holder, &host.datapath.table(), &copies);
            if holder == me {
                let conns: Vec<(ConnId, u16)> = changes
                    .installed
                    .iter()
                    .filter(|c| c.home.is_none())
                    .map(|c| (c.id, c.nat_port))
                    .collect();
                let n = conns.len();
                self.log(|| format!("node {i} takes over {n} connections of node {}", gone.0));
                self.taken_over.push(TakenOver {
                    at: self.now,
                    gone: usize::from(gone.0),
                    holder: i,
                    conns,
                });
                for (vip, holders) in host.takeovers.finished().unwrap_or_default() {
                    host.datapath.holders.insert(vip, holders);
                }
                host.copy_pacing.hurry(self.now);
            }
            host.datapath.apply(self.now, changes, holder);
        }
    }

    /// Moves the copy stream on (the shell's `send_copies`): a diff of the table when one is
    /// due, or the successor forgotten; then hands the transport what `CopyPacing` lets go.
    fn send_copies(&mut self, host: &mut Host, i: usize) {
        match host.copy_pacing.due(self.now) {
            CopyStep::Wait => {}
            CopyStep::Stop => host.copy_stream.stop(),
            CopyStep::Diff(successor) => {
                let table = host.datapath.table();
                let messages = host.copy_stream.sync(NodeId(i as u8), successor, &table);
                if !messages.is_empty() {
                    let (n, to) = (messages.len(), successor.0);
                    self.log(|| {
                        format!(
                            "node {i} copies -> {to}: {n} messages of {} connections",
                            table.len()
                        )
                    });
                }
                host.copy_pacing.diffed(successor, messages);
            }
        }
        let (now, transport) = (self.now, &mut host.transport);
        host.copy_pacing
            .transmit(|to, bytes| transport.send(now, to, bytes));
    }

    fn send_datagram(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if let Some((sender, receiver, percent)) = self.send_loss {
            let hit = Self::host_of(from) == Some(sender)
                && receiver.is_none_or(|r| Self::host_of(to) == Some(r));
            if hit && self.rng.chance(percent) {
                return;
            }
        }
        let during_faults = self.now < self.faults_end;
        if during_faults && self.rng.chance(self.scenario.loss) {
            return;
        }
        let copies = if during_faults && self.rng.chance(2) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay =
                Duration::from_micros(100 + self.rng.below(if during_faults { 3000 } else { 400 }));
            self.order += 1;
            self.net.push(Datagram {
                at: self.now + delay,
                order: self.order,
                from,
                to,
                bytes: bytes.clone(),
            });
        }
    }

    fn host_of(to: SocketAddr) -> Option<usize> {
        match to {
            SocketAddr::V4(a) => {
                let o = a.ip().octets();
                Some(o[2] as usize * 250 + o[3] as usize - 1)
            }
            SocketAddr::V6(_) => None,
        }
    }

    /// Whether cluster datagrams between `a` and `b` are cut.
    fn cut(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|(side, _)| side.contains(&a) != side.contains(&b))
    }

    /// Whether `a` and `b` cannot hear each other's ARP.
    fn l2_cut(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|(side, isolated)| *isolated && side.contains(&a) != side.contains(&b))
    }

    /// Whether host `i` lost its external NICs (the router and the clients are on the other
    /// side of an isolating partition).
    fn isolated(&self, i: usize) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|(side, isolated)| *isolated && side.contains(&i))
    }

    /// Tells host `i` (just resumed or restarted) whether it reaches its witness now.
    fn tell_witness(&mut self, i: usize) {
        let healthy = !self.isolated(i);
        self.witness(&BTreeSet::from([i]), healthy);
    }

    /// Tells every up host of `side` its witness is lost (`healthy` false) or back.
    fn witness(&mut self, side: &BTreeSet<usize>, healthy: bool) {
        for &i in side {
            if !self.host(i).up || self.host(i).paused {
                continue;
            }
            let event = if healthy {
                Event::LocalHealthy
            } else {
                Event::LocalFault
            };
            let mut host = self.take(i);
            let actions = host.node.handle(self.now, event);
            self.perform(&mut host, i, actions);
            self.put(i, host);
        }
    }

    /// The next moment anything happens.
    fn next_time(&self) -> Instant {
        let mut next = self.now + Duration::from_millis(10);
        let mut consider = |t: Instant| {
            if t < next {
                next = t;
            }
        };
        self.net.iter().for_each(|d| consider(d.at));
        self.fetches.iter().for_each(|f| consider(f.at));
        if let Some((at, _)) = self.faults.first() {
            consider(*at);
        }
        for h in self.hosts.iter().flatten().filter(|h| h.up && !h.paused) {
            if let Some(t) = h.timers.next() {
                consider(t);
            }
            if let Some(t) = h.transport.poll_timeout() {
                consider(t);
            }
            consider(h.next_lease);
            consider(h.copy_pacing.next());
        }
        consider(self.clients.next());
        next.max(self.now)
    }

    fn step(&mut self) {
        self.now = self.next_time();
        while self.faults.first().is_some_and(|(at, _)| *at <= self.now) {
            let (_, fault) = self.faults.remove(0);
            self.inject(fault);
        }
        // Datagrams due now, in send order.
        self.net.sort_by_key(|d| (d.at, d.order));
        let due: Vec<Datagram> = {
            let split = self.net.partition_point(|d| d.at <= self.now);
            self.net.drain(..split).collect()
        };
        self.finish_fetches();
        for d in due {
            let (Some(from), Some(to)) = (Self::host_of(d.from), Self::host_of(d.to)) else {
                continue;
            };
            if to >= self.hosts.len() || self.cut(from, to) {
                continue;
            }
            let mut host = self.take(to);
            if host.up && !host.paused {
                host.transport
                    .handle_datagram(self.now, d.to, d.from, &d.bytes);
                self.perform(&mut host, to, Vec::new());
            }
            self.put(to, host);
        }
        for i in 0..self.hosts.len() {
            let mut host = self.take(i);
            if host.up && !host.paused {
                if host.transport.poll_timeout().is_some_and(|t| t <= self.now) {
                    host.transport.handle_timeout(self.now);
                    self.perform(&mut host, i, Vec::new());
                }
                for kind in host.timers.due(self.now) {
                    let actions = host.node.handle(self.now, Event::Timer(kind));
                    self.perform(&mut host, i, actions);
                }
                if host.next_lease <= self.now {
                    host.lease.renew(self.now, host.node.answer_until());
                    host.next_lease = self.now + LEASE_TICK;
                }
                self.finish_takeovers(&mut host, i);
                if host.copy_pacing.next() <= self.now {
                    self.send_copies(&mut host, i);
                    self.perform(&mut host, i, Vec::new());
                }
            }
            self.put(i, host);
        }
        let vips: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.address).collect();
        let opening = self.now < self.faults_end;
        for (flow, packet) in self.clients.due(self.now, opening, &vips) {
            let fate = self.route(&packet);
            if self.clients.flows[flow].last != Some(fate) {
                let id = packet.id;
                self.log(|| {
                    format!(
                        "{}:{} proto {} -> {}: {fate:?}",
                        id.client.ip(),
                        id.client.port(),
                        id.proto,
                        id.vip.ip()
                    )
                });
            }
            self.clients.delivered(flow, fate);
        }
        self.check_conflicts();
        self.check_safety();
        self.check_muted();
        if self.scenario.family.never_removes_live() {
            // Before the first convergence, rings of the start merge: a node leaves a worse
            // ring for the better one.
            self.settled = self.settled || self.converged();
            if self.settled {
                self.check_removals();
            }
        }
    }

    /// Fetches due now: the document arrives when the source is up, reachable and has it.
    fn finish_fetches(&mut self) {
        let (due, later): (Vec<Fetch>, Vec<Fetch>) = std::mem::take(&mut self.fetches)
            .into_iter()
            .partition(|f| f.at <= self.now);
        self.fetches = later;
        for f in due {
            let source = self.host(f.from);
            let answered = source.up
                && !source.paused
                && !self.cut(f.host, f.from)
                && source.docs.contains(&f.config);
            let mut host = self.take(f.host);
            if answered && host.up && !host.paused && host.boots == f.boots {
                let event = if f.config.digest[0] == INVALID
                    && self.offerers.get(&f.config) != Some(&f.host)
                {
                    Event::ConfigRejected(f.config)
                } else {
                    host.docs.insert(f.config);
                    Event::ConfigStaged(f.config)
                };
                let actions = host.node.handle(self.now, event);
                self.perform(&mut host, f.host, actions);
            }
            self.put(f.host, host);
        }
    }

    /// Carries a client's packet through the data paths: to the node answering ARP for its VIP
    /// that the clients reach, and on through the hand-offs it makes.
    fn route(&mut self, packet: &Packet) -> Fate {
        let vip = *packet.id.vip.ip();
        let Some(mut at) = self.answering(vip).into_iter().find(|&i| !self.isolated(i)) else {
            return Fate::Lost;
        };
        let mut came_from = None;
        let now = self.now;
        for _ in 0..=HOPS {
            let lease_valid = now < self.host(at).lease.until();
            let host = self.host_mut(at);
            let owned = host.owned.contains(&vip);
            match host
                .datapath
                .handle(now, packet, came_from, owned, lease_valid)
            {
                Step::Translated(nat_port) => return Fate::Translated { node: at, nat_port },
                Step::Dropped(why) => return Fate::Dropped { node: at, why },
                Step::HandedTo(to) => {
                    let to = usize::from(to.0);
                    if to >= self.hosts.len() || !self.host(to).up || self.l2_cut(at, to) {
                        return Fate::Lost;
                    }
                    came_from = Some(NodeId(at as u8));
                    at = to;
                }
            }
        }
        Fate::Dropped {
            node: at,
            why: "out of hops",
        }
    }

    fn take(&mut self, i: usize) -> Host {
        self.hosts[i].take().expect("host present")
    }

    fn put(&mut self, i: usize, host: Host) {
        self.hosts[i] = Some(host);
    }

    fn host(&self, i: usize) -> &Host {
        self.hosts[i].as_ref().expect("host present")
    }

    fn host_mut(&mut self, i: usize) -> &mut Host {
        self.hosts[i].as_mut().expect("host present")
    }

    fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Crash(i) if self.host(i).up => {
                self.log(|| format!("crash node {i}"));
                self.disruptions.push((self.now, Disruption::Other));
                let serving = self
                    .clients
                    .flows
                    .iter()
                    .filter(|f| matches!(f.last, Some(Fate::Translated { node, .. }) if node == i))
                    .map(|f| f.id)
                    .collect();
                self.crashes.push(Crash {
                    at: self.now,
                    node: i,
                    serving,
                });
                let now = self.now;
                let host = self.host_mut(i);
                host.up = false;
                host.down_since = now;
                host.owned.clear();
            }
            Fault::Restart(i)
                if !self.host(i).up && self.now < self.host(i).down_since + HOST_BOOT =>
            {
                let at = self.host(i).down_since + HOST_BOOT;
                let later = self.faults.partition_point(|(t, _)| *t <= at);
                self.faults.insert(later, (at, Fault::Restart(i)));
            }
            Fault::Restart(i) | Fault::Boot(i) if !self.host(i).up => {
                self.disruptions.push((self.now, Disruption::Restart(i)));
                self.log(|| format!("restart node {i}"));
                let boots = self.host(i).boots + 1;
                let active = self.host(i).active;
                let host = self.boot(i, boots, active);
                self.put(i, host);
                self.tell_witness(i);
            }
            Fault::Pause(i) if self.host(i).up && !self.host(i).paused => {
                self.log(|| format!("pause node {i}"));
                self.disruptions.push((self.now, Disruption::Other));
                self.host_mut(i).paused = true;
            }
            Fault::Resume(i) if self.host(i).paused => {
                self.log(|| format!("resume node {i}"));
                self.disruptions.push((self.now, Disruption::Other));
                self.host_mut(i).paused = false;
                // The daemon notices its stall before it handles what arrived meanwhile.
                let mut host = self.take(i);
                let actions = host.node.handle(self.now, Event::Stalled);
                self.perform(&mut host, i, actions);
                self.put(i, host);
                self.tell_witness(i);
            }
            Fault::Partition { side, isolated } => {
                self.log(|| format!("partition {side:?} isolated {isolated}"));
                self.disruptions.push((self.now, Disruption::Other));
                if let Some((old, true)) = self.partition.take() {
                    self.witness(&old, true);
                }
                if isolated {
                    self.witness(&side, false);
                }
                self.partition = Some((side, isolated));
            }
            Fault::SendLoss { from, to, percent } => {
                self.log(|| format!("{percent} % loss of what node {from} sends to {to:?}"));
                self.disruptions.push((self.now, Disruption::Other));
                self.send_loss = (percent > 0).then_some((from, to, percent));
                self.muted = (percent == 100 && to.is_none() && self.hosts.len() >= 3)
                    .then(|| (from, self.host(from).owned.clone()));
            }
            Fault::Heal => {
                self.log(|| "heal".to_owned());
                self.disruptions.push((self.now, Disruption::Other));
                if let Some((side, true)) = self.partition.take() {
                    self.witness(&side, true);
                }
            }
            Fault::Offer(i, valid) if self.host(i).up && !self.host(i).paused => {
                let st = self.host(i).node.status();
                // From the clock, not the generator: the network's draws stay as they were.
                let mut digest = [0u8; 32];
                let at = self.now.duration_since(self.start).as_nanos() as u64 ^ i as u64;
                digest[..8].copy_from_slice(&Rng::new(at).next_u64().to_be_bytes());
                digest[0] = if valid { digest[0] % INVALID } else { INVALID };
                let config = ConfigId {
                    version: st.ring_config_version.max(st.config.version) + 1,
                    digest,
                };
                let ask = self.next_ask;
                self.next_ask += 1;
                self.log(|| format!("operator of node {i} offers {config:?} as {ask}"));
                self.offerers.insert(config, i);
                let mut host = self.take(i);
                self.open_offers.insert(ask, (i, host.boots));
                host.docs.insert(config);
                let actions = host
                    .node
                    .handle(self.now, Event::OfferConfig { ask, config });
                self.perform(&mut host, i, actions);
                self.put(i, host);
            }
            _ => {}
        }
    }

    fn answering(&self, vip: Ipv4Addr) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| {
                let h = self.host(i);
                h.up && h.owned.contains(&vip) && self.now < h.lease.until()
            })
            .collect()
    }

    /// Two nodes answering for one VIP on one L2 segment hear each other's ARP: XDP reports it.
    fn check_conflicts(&mut self) {
        for v in self.vips.clone() {
            let answering = self.answering(v.address);
            if answering.len() < 2 {
                continue;
            }
            for &i in &answering {
                let rival = answering
                    .iter()
                    .copied()
                    .find(|&j| j != i && !self.l2_cut(i, j));
                if let (Some(_), false) = (rival, self.host(i).paused) {
                    // XDP reports only the rival's MAC: who it is, the node's driver knows
                    // from the joins it heard, as the daemon's does.
                    let mut host = self.take(i);
                    let members = host.node.status().members;
                    let event =
                        host.rivals
                            .conflict(self.now, v.address, &members, self.hosts.len());
                    let actions = host.node.handle(self.now, event);
                    self.perform(&mut host, i, actions);
                    self.put(i, host);
                }
            }
        }
    }

    fn check_safety(&mut self) {
        for v in self.vips.clone() {
            let answering = self.answering(v.address);
            if answering.len() > 1 {
                assert!(
                    !self.scenario.family.never_dual(),
                    "seed {} ({}): nodes {answering:?} both answer for {}\n{}",
                    self.scenario.seed,
                    self.scenario.family.name(),
                    v.address,
                    self.report()
                );
                let since = *self.double_since.entry(v.address).or_insert(self.now);
                assert!(
                    self.now.duration_since(since) <= RESOLUTION,
                    "seed {}: nodes {answering:?} both answer for {} for longer than {RESOLUTION:?}\n{}",
                    self.scenario.seed,
                    v.address,
                    self.report()
                );
            } else {
                self.double_since.remove(&v.address);
            }
        }
    }

    /// A VIP a token gives the muted node: the giver could not know the token would be the last
    /// it delivers there (the ack lost, it removes the node and places the VIP again).
    fn given_while_muted(&mut self, i: usize, msg: &Message) {
        let (Some((x, allowed)), Message::Token(t)) = (&mut self.muted, msg) else {
            return;
        };
        if *x == i {
            let me = Some(NodeId(i as u8));
            allowed.extend(t.vips.iter().filter(|v| v.owner == me).map(|v| v.address));
        }
    }

    /// A node whose datagrams are all lost takes no VIP: it cannot tell the others' deaths
    /// from its own cut-off, and they, alive, serve their VIPs (`quorum.rs`). It answers for
    /// those it answered for when the loss began and those a token gave it since. A ring of
    /// two is exempt (either node takes the other's VIPs at once, corosync's `two_node`).
    fn check_muted(&self) {
        let Some((x, before)) = &self.muted else {
            return;
        };
        for vip in self.host(*x).owned.difference(before) {
            assert!(
                !self.answering(*vip).contains(x),
                "seed {} ({}): node {x}, whose datagrams are all lost, answers for {vip}\n{}",
                self.scenario.seed,
                self.scenario.family.name(),
                self.report()
            );
        }
    }

    /// No node drops from its ring a member that is up and running the boot it saw in it.
    fn check_removals(&mut self) {
        let boots: Vec<Option<u64>> = (0..self.hosts.len())
            .map(|j| {
                let h = self.host(j);
                (h.up && !h.paused).then_some(h.boots)
            })
            .collect();
        for i in 0..self.hosts.len() {
            if !self.host(i).up {
                continue;
            }
            let members = self.host(i).node.status().members;
            // Each member with the boot it ran when it entered this node's ring: an entry that
            // outlived its node's crash stands for the old boot, not the one running since,
            // also while that node is down (forgetting it then took the entry for the new boot
            // once the node was back: comeback seed 504).
            let seen = &self.host(i).seen_members;
            let now: BTreeMap<usize, u64> = members
                .iter()
                .map(|m| usize::from(m.0))
                .filter_map(|j| {
                    let kept = seen.get(&j).copied();
                    let boot = if self.host(j).up {
                        boots[j].map(|b| kept.unwrap_or(b))
                    } else {
                        kept
                    };
                    boot.map(|b| (j, b))
                })
                .collect();
            for (&j, &boot) in &self.host(i).seen_members {
                assert!(
                    now.contains_key(&j) || boots[j] != Some(boot),
                    "seed {} ({}): node {i} removed node {j}, which is up\n{}",
                    self.scenario.seed,
                    self.scenario.family.name(),
                    self.report()
                );
            }
            self.host_mut(i).seen_members = now;
        }
    }

    /// Every connection a crashed node was serving that a node took over from its copies is
    /// served after the take-over: its TCP packets are translated with the dead node's NAT port
    /// (by the node that took it over, or by one that kept it through a pause or took it over
    /// before), its datagrams are translated. Excused: take-overs from a node that did not crash
    /// (removed while paused or cut off, it may serve them itself), and any fault after the
    /// crash but the node's restart.
    fn check_takeovers(&self) {
        let flows: BTreeMap<ConnId, &traffic::Flow> =
            self.clients.flows.iter().map(|f| (f.id, f)).collect();
        for t in &self.taken_over {
            let crash = self
                .crashes
                .iter()
                .rev()
                .find(|c| c.node == t.gone && c.at <= t.at);
            let Some(crash) = crash else {
                continue;
            };
            let excused = self
                .disruptions
                .iter()
                .any(|&(at, d)| at > crash.at && d != Disruption::Restart(t.gone));
            if excused {
                continue;
            }
            for &(id, nat_port) in &t.conns {
                let flow = flows
                    .get(&id)
                    .filter(|f| !f.closed && crash.serving.contains(&id));
                let Some(flow) = flow else {
                    continue;
                };
                let served = match flow.last {
                    Some(Fate::Translated { nat_port: port, .. }) => {
                        id.proto != TCP || port == nat_port
                    }
                    _ => false,
                };
                if !served {
                    let entries: Vec<String> = self
                        .hosts
                        .iter()
                        .flatten()
                        .enumerate()
                        .filter_map(|(i, h)| {
                            let entry = h.datapath.conns.get(&id)?;
                            let holders = h.datapath.holders.get(id.vip.ip());
                            Some(format!("node {i}: {entry:?}, VIP holders {holders:?}"))
                        })
                        .collect();
                    panic!(
                        "seed {}: connection {id:?} of node {} (NAT port {nat_port}), taken over by node {}, not served: {:?}\nentries:\n{}\n{}",
                        self.scenario.seed,
                        t.gone,
                        t.holder,
                        flow.last,
                        entries.join("\n"),
                        self.report()
                    );
                }
            }
        }
    }

    /// The cluster's state, for failure messages.
    pub fn report(&self) -> String {
        let mut s = format!(
            "at {} ms, scenario {:?}\n",
            self.now.duration_since(self.start).as_millis(),
            self.scenario
        );
        for (i, h) in self.hosts.iter().flatten().enumerate() {
            let st = h.node.status();
            let _ =
                writeln!(
                s,
                "node {i}: up {} paused {} {:?} members {:?} epoch {} seq {} owns {:?} table {:?} config {} ring config {} offer {:?}",
                h.up,
                h.paused,
                st.membership,
                st.members,
                st.epoch,
                st.seq,
                h.owned,
                st.vips
                    .iter()
                    .map(|v| (v.address.octets()[3], v.owner.map(|n| n.0), v.persistence.number()))
                    .collect::<Vec<_>>(),
                st.config.version,
                st.ring_config_version,
                st.ring_config.offer.map(|o| (o.config.version, o.from.0)),
            );
        }
        s
    }

    /// Whether the ring has converged: one ring of every live node, every VIP owned by
    /// exactly one live member, the same table everywhere.
    fn converged(&self) -> bool {
        self.divergence().is_none()
    }

    /// Why the ring has not converged, if it has not.
    fn divergence(&self) -> Option<String> {
        let live: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| self.host(i).up && !self.host(i).paused)
            .collect();
        let all: Vec<NodeId> = live.iter().map(|&i| NodeId(i as u8)).collect();
        let statuses: Vec<_> = live.iter().map(|&i| self.host(i).node.status()).collect();
        let one_ring = statuses
            .iter()
            .all(|s| s.membership == Membership::Member && s.members == all)
            && statuses.windows(2).all(|w| w[0].epoch == w[1].epoch);
        let owners_ok = self
            .vips
            .iter()
            .all(|v| self.answering(v.address).len() == 1);
        let same_table = statuses.windows(2).all(|w| {
            let owners = |s: &super::token_ring::RingStatus| {
                s.vips
                    .iter()
                    .map(|v| (v.address, v.owner))
                    .collect::<Vec<_>>()
            };
            owners(&w[0]) == owners(&w[1])
        });
        // Every NAT block away from its node is held by a live member, and only the blocks of
        // nodes that are not back.
        let blocks_ok = statuses.windows(2).all(|w| w[0].blocks == w[1].blocks)
            && statuses.iter().all(|s| {
                s.blocks
                    .iter()
                    .all(|b| all.contains(&b.holder) && (b.returned || !all.contains(&b.block)))
            });
        // Every member runs the ring's configuration (or refused it), no offer waits, and every operator
        // whose node still runs the same boot has had an answer.
        let config_ok = statuses.iter().all(|s| {
            let ring = super::message::ConfigId {
                version: s.ring_config_version,
                digest: s.ring_config.active_digest,
            };
            (s.config == ring || s.config_rejected == Some(ring)) && s.ring_config.offer.is_none()
        }) && statuses
            .windows(2)
            .all(|w| w[0].ring_config_version == w[1].ring_config_version)
            && self
                .open_offers
                .values()
                .all(|&(i, boots)| !self.host(i).up || self.host(i).boots != boots);
        // Every member's successor holds a copy of exactly its connection table.
        let copies_ok = live.iter().zip(&statuses).all(|(&i, s)| {
            copies::successor(s, NodeId(i as u8)).is_none_or(|next| {
                let store = &self.host(usize::from(next.0)).copy_store;
                store
                    .of(NodeId(i as u8))
                    .eq(self.host(i).datapath.table().iter())
            })
        });
        // Every member's tables became whole, and the ring knows it.
        let ready_ok = statuses.iter().all(|s| s.unready.is_empty());
        match (
            one_ring, owners_ok, same_table, blocks_ok, config_ok, copies_ok, ready_ok,
        ) {
            (false, ..) => Some("not one ring of every live node".into()),
            (_, false, ..) => Some("a VIP without exactly one answering owner".into()),
            (_, _, false, ..) => Some("members disagree on the VIP table".into()),
            (_, _, _, false, ..) => Some("a NAT block held by no live member".into()),
            (_, _, _, _, false, ..) => Some("members disagree on the configuration".into()),
            (.., false, _) => {
                Some("a successor's copies differ from its predecessor's table".into())
            }
            (.., false) => Some("a member's tables never became whole".into()),
            _ => None,
        }
    }

    /// Runs the scenario to its end; panics (with the seed) when an invariant breaks. After the
    /// last fault the cluster must, within `CONVERGENCE`, reach a state that holds for
    /// `STABLE` (load moves may run on for a few rounds after the ring forms).
    pub fn run(&mut self) {
        const STABLE: Duration = Duration::from_millis(300);
        let settle_by = self.faults_end.max(self.start + Duration::from_secs(1)) + CONVERGENCE;
        let mut stable_since: Option<Instant> = None;
        while self.now < settle_by {
            self.step();
            let quiet = self.now >= self.faults_end && self.faults.is_empty();
            if quiet && self.converged() {
                let since = *stable_since.get_or_insert(self.now);
                if self.now.duration_since(since) >= STABLE {
                    self.check_takeovers();
                    return;
                }
            } else {
                stable_since = None;
            }
        }
        panic!(
            "seed {}: no stable convergence within {CONVERGENCE:?} after the last fault: {}\n{}",
            self.scenario.seed,
            self.divergence().unwrap_or_default(),
            self.report()
        );
    }
}
