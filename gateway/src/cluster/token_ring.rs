//! The token ring as a pure state machine: `Node::handle(now, Event) -> Vec<Action>`.
//!
//! How the protocol's rules (docs/architecture.md, "Protocol rules") map to the code:
//! - Token passing with ack: `pass` sends the token and waits for the transport's outcome;
//!   `Event::Outcome { delivered: false }` removes the destination and passes again to the next
//!   member (`token_undeliverable`), as the next generation of the ring's epoch (`epoch`).
//! - 64-bit sequence, stale tokens dropped: `on_token` drops a token of this node's ring whose
//!   sequence is not above the highest it has seen, or whose epoch is an earlier generation.
//!   The start sequence comes from the daemon's random number (`RingConfig::initial_seq`).
//! - 911: a member that has not seen the token for `loss_timeout` sends a `Probe` with the
//!   sequence of the last token it sent and the permission flag set; `on_probe` clears the flag
//!   at every node that sent a newer token, and only the origin whose flag came back true
//!   regenerates its last token (`regenerate`). A probe skips unreachable nodes and never
//!   changes the member list.
//! - Join: a `Join` (or a 911) from a non-member is a request to join; the receiver queues it
//!   and adds it to the member list the next time it holds the token, if its ring is the
//!   better one (more members, then the lower lowest node id), so two rings merge one way.
//! - Alone mode: a node that hears no token for `startup` after start forms a ring of one,
//!   owns every VIP and announces them; unless a ring asked it to join just now (it answers at
//!   once and waits to be taken in), or a node of lower id that waits too did (it waits up to
//!   another `startup`): `wait_for_ring`.
//! - Last man standing (`takes_over`, `quorum.rs`): a ring that lost a majority of the size
//!   it kept takes the lost members' VIPs only once its size has held `quorum_window`, never
//!   while a better ring asks for this node, and a node takes what its own removals lost for
//!   itself only after a token of another member: a node cut off cannot tell the others'
//!   deaths from its own.
//! - A member that no other member reaches for `removed_after` (its passes fail, no token
//!   arrives) while its ring has others is the one cut off: it leaves.
//! - A removed node drops all its VIPs at once: a member that has not held the token for
//!   `removed_after` concludes it was removed (a live ring passes it every round, a lost token
//!   is regenerated sooner), applies an empty VIP set and rejoins owning none. A node that
//!   left for a better ring passes its old ring's token on without itself.
//! - VIP placement (`place`): only a VIP's owner gives it away, while holding the token, so
//!   two members never both believe they own it; VIPs of dead, removed or closed nodes go to
//!   the preferred owner when alive, else to the member with the fewest VIPs (lowest id on
//!   ties): a deterministic spread. Persistence 3 returns to the preferred owner; 0 is
//!   balanced by VIP count, one move per token hop, counting and moving only VIPs no operator
//!   placed (`VipEntry::placed`), once the arrangement was quiet for `arrange_hold`.
//! - Local faults (router witness lost, NIC down): the node releases its VIPs at once and
//!   stops taking part until healthy, then rejoins.
//! - Split brain: `VipConflict` (XDP saw another node claim a VIP this node answers for)
//!   makes the member of the smaller ring (ties: the higher lowest node id) release the VIP at
//!   once until it next takes a token, and the other announce it again; within a merged ring
//!   placement leaves one owner.
//! - Configuration: the token names the configuration the ring runs and carries offers of a
//!   new one, which every member switches to at once when all staged it (`config_change.rs`).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::{
    config_change::ConfigChange,
    events::{Action, ConfigResult, Event, Sent, TimerKind},
    message::{
        AdminAsk, AdminDone, AdminOp, AdminResult, BlockHolder, ConfigId, ConfigState, Join, Load,
        Message, Probe, Token, VipLoad,
    },
    quorum::Quorum,
    types::{NodeId, Persistence, VipEntry},
};

/// The ring's configuration: the node map, the VIPs and the timers.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Every configured node in ring order.
    pub nodes: Vec<NodeId>,
    /// Every VIP with its preferred owner and persistence (`owner` is ignored).
    pub vips: Vec<VipEntry>,
    /// The configuration this node runs (its version and digest).
    pub config: ConfigId,
    /// Start of this node's token sequence (the daemon draws it at random).
    pub initial_seq: u64,
    /// How long a holder keeps the token before passing it (pacing of the ring).
    pub hold: Duration,
    /// No token seen for this long: send a 911.
    pub loss_timeout: Duration,
    /// How long a 911 this node sent may travel before it sends another (a probe takes up to
    /// the transport's give-up per unreachable member it skips).
    pub probe_interval: Duration,
    /// Not held the token for this long while a member: conclude it was removed.
    pub removed_after: Duration,
    /// No token this long after start: run alone.
    pub startup: Duration,
    /// How often a node asks configured non-members to join (and non-members ask to join).
    pub join_interval: Duration,
    /// A token hop after which a moved VIP may move again for load.
    pub settle_hops: u32,
    /// How long the members, the closed nodes and the VIPs an operator placed must stay the
    /// same before the count balance moves a VIP: an operator's move, an open or a rejoin is
    /// not compensated at once, and a node that joins has its tables before it gets VIPs.
    pub arrange_hold: Duration,
    /// How long the transport tries a destination before reporting it unreachable: the
    /// least time between a token pass to this node failing and its removal.
    pub unreachable_after: Duration,
    /// Packets per second through a member's data path from which VIPs are balanced by load
    /// rather than by count; 0 balances by count only.
    pub balance_min_pps: u32,
    /// Least time between two moves for load, so both nodes' loads are measured again (every
    /// second) and carried round before the next decision.
    pub balance_hold: Duration,
}

impl RingConfig {
    /// A configuration with the default timers, chosen for VIP failover well under a second
    /// on a LAN with the transport's defaults.
    pub fn new(nodes: Vec<NodeId>, vips: Vec<VipEntry>) -> Self {
        Self {
            nodes,
            vips,
            config: ConfigId {
                version: 1,
                digest: [0; 32],
            },
            initial_seq: 1,
            hold: Duration::from_millis(5),
            loss_timeout: Duration::from_millis(40),
            probe_interval: Duration::from_millis(100),
            removed_after: Duration::from_millis(400),
            startup: Duration::from_millis(300),
            join_interval: Duration::from_millis(50),
            settle_hops: 8,
            arrange_hold: Duration::from_secs(1),
            unreachable_after: Duration::from_millis(51),
            balance_min_pps: 20_000,
            balance_hold: Duration::from_secs(3),
        }
    }
}

/// Where the node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Started, waiting for a token or for the start-up time to run alone.
    Starting,
    /// A member of a ring (possibly alone).
    Member,
    /// Not a member (removed, or left after a local fault); asking to join.
    Outside,
}

/// A snapshot for status output and the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingStatus {
    /// Where this node stands.
    pub membership: Membership,
    /// Members in ring order, as of the last token seen.
    pub members: Vec<NodeId>,
    /// The ring's epoch.
    pub epoch: u64,
    /// Highest token sequence seen.
    pub seq: u64,
    /// The VIP table as of the last token seen.
    pub vips: Vec<VipEntry>,
    /// What this node answers for.
    pub owned: BTreeSet<Ipv4Addr>,
    /// Whether a local fault keeps the node out.
    pub faulted: bool,
    /// Nodes an operator closed.
    pub closed: Vec<NodeId>,
    /// Members whose tables are not whole yet, as of the last token seen.
    pub unready: Vec<NodeId>,
    /// Whether this node holds the token now.
    pub holding: bool,
    /// Time between this node's last two holds of the token: one round of the ring.
    pub round: Option<Duration>,
    /// Tokens dropped as stale (a sequence this node has seen or passed already).
    pub stale_tokens: u64,
    /// The members' loads as the last token carried them, this node's own as it last measured.
    pub loads: Vec<Load>,
    /// NAT blocks served by another node than their own, as of the last token seen.
    pub blocks: Vec<BlockHolder>,
    /// Each VIP's traffic as its owner last measured it, as of the last token seen.
    pub vip_loads: Vec<VipLoad>,
    /// The configuration this node runs.
    pub config: ConfigId,
    /// The configuration this node staged, if any.
    pub config_staged: Option<ConfigId>,
    /// The latest configuration this node refused, if any.
    pub config_rejected: Option<ConfigId>,
    /// The configuration's part of the last token seen.
    pub ring_config: ConfigState,
    /// The version the ring runs, as of the last token seen.
    pub ring_config_version: u32,
    /// At its last pass this node's ring took over no VIP of the members it lost
    /// (`quorum.rs`): it lost its majority at once, or a better ring asked for it.
    pub quorum_wait: bool,
}

/// One node's protocol state.
pub struct Node {
    config: RingConfig,
    me: NodeId,
    membership: Membership,
    faulted: bool,
    started: Instant,
    /// The last token seen (the ring as this node knows it).
    token: Token,
    /// Holding the token (waiting for the pass timer).
    holding: bool,
    /// The destination of the token in flight, until its outcome.
    in_flight: Option<NodeId>,
    last_sent_seq: u64,
    last_token_at: Instant,
    last_held_at: Instant,
    /// When another member last reached this node: a token of its ring arrived, or one it
    /// passed was delivered. A member of a larger ring that nobody reaches for
    /// `removed_after` is the one cut off, not the others (`on_loss_timer`).
    last_reached: Instant,
    last_round: Option<Duration>,
    /// When this node last left or was removed from a ring.
    outside_since: Instant,
    /// Members this node's own 911 found unreachable since it last saw the token: if it
    /// regenerates the token, it removes them at once rather than find out again with the
    /// token (the transport gave up on them moments ago).
    probe_skipped: BTreeSet<NodeId>,
    /// After a stall: tokens before this are leftovers from before the stall (nobody can have
    /// taken this node back in, as it asks to join only afterwards).
    quarantine_until: Instant,
    stale_tokens: u64,
    probe_out: bool,
    /// When this node last sent a 911 of its own.
    probe_sent_at: Option<Instant>,
    joins: BTreeSet<NodeId>,
    /// While not a member: when a node of lower id that is not a member either, or a member of
    /// a ring, last asked this one to join. Either defers running alone (`wait_for_ring`).
    heard_lower: Option<Instant>,
    heard_ring: Option<Instant>,
    /// While a member: when a node of a better ring last asked this one to join. That ring is
    /// alive and took over the VIPs of the members this one lost (`takes_over`).
    heard_better: Option<Instant>,
    /// The ring's size against the size it kept (`takes_over`).
    quorum: Quorum,
    /// Whether the last pass took over no VIP of the members the ring lost.
    quorum_wait: bool,
    /// This node's tables are whole (`Event::TablesWhole`): it may be given VIPs.
    whole: bool,
    /// This node removed members itself (a pass or its 911 failed) and no token of another
    /// member reached it since: its ring may be this node alone, cut off (`place`).
    removed_unconfirmed: bool,
    asks: Vec<AdminAsk>,
    owned: BTreeSet<Ipv4Addr>,
    /// This node's load as last measured, written onto the token at every pass.
    my_load: Option<Load>,
    /// This node's traffic per VIP as last measured, written onto the token at every pass.
    my_vip_loads: Vec<VipLoad>,
    /// When this node moves VIPs for load (`balance_by_traffic`).
    load_moves: LoadMoves,
    /// When this node last saw the members, the closed nodes or the VIPs an operator placed
    /// change: the count balance waits `arrange_hold` after it (`place`).
    last_arranged: Instant,
    /// VIPs lost to a rival in a row, since this node last held a token with other members.
    concessions: BTreeMap<Ipv4Addr, u32>,
    /// Token hops since each VIP last moved.
    settled: BTreeMap<Ipv4Addr, u32>,
    /// VIPs given up after a conflict, until when: then this node hands them back to
    /// placement on its next token (the rival ring has merged or the conflict recurs).
    conceded: BTreeMap<Ipv4Addr, Instant>,
    /// This node's standing with the cluster's configuration.
    config_change: ConfigChange,
}

impl Node {
    /// A node just started: it asks everyone to join and waits for a token.
    pub fn new(config: RingConfig, me: NodeId, now: Instant) -> (Self, Vec<Action>) {
        let token = Token {
            seq: config.initial_seq,
            epoch: 0,
            config_version: config.config.version,
            config: Box::new(ConfigState {
                active_digest: config.config.digest,
                ..ConfigState::default()
            }),
            from: me,
            to: me,
            members: vec![me],
            vips: config
                .vips
                .iter()
                .map(|v| VipEntry {
                    owner: None,
                    previous: None,
                    ..*v
                })
                .collect(),
            ..Token::default()
        };
        let node = Self {
            last_sent_seq: config.initial_seq,
            config_change: ConfigChange::new(me, config.config),
            config,
            me,
            membership: Membership::Starting,
            faulted: false,
            started: now,
            token,
            holding: false,
            in_flight: None,
            last_token_at: now,
            last_held_at: now,
            last_reached: now,
            last_round: None,
            outside_since: now,
            probe_skipped: BTreeSet::new(),
            quarantine_until: now,
            stale_tokens: 0,
            probe_out: false,
            probe_sent_at: None,
            joins: BTreeSet::new(),
            heard_lower: None,
            heard_ring: None,
            heard_better: None,
            quorum: Quorum::new(now),
            quorum_wait: false,
            whole: false,
            removed_unconfirmed: false,
            asks: Vec::new(),
            owned: BTreeSet::new(),
            my_load: None,
            my_vip_loads: Vec::new(),
            load_moves: LoadMoves::default(),
            last_arranged: now,
            concessions: BTreeMap::new(),
            settled: BTreeMap::new(),
            conceded: BTreeMap::new(),
        };
        let mut out = vec![Action::ApplyVips(BTreeSet::new())];
        node.send_joins(&mut out);
        out.push(node.timer(TimerKind::Join, now + node.config.join_interval));
        out.push(node.timer(TimerKind::Loss, now + node.config.startup));
        (node, out)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Status for the CLI and the simulator.
    pub fn status(&self) -> RingStatus {
        RingStatus {
            membership: self.membership,
            members: self.token.members.clone(),
            epoch: self.token.epoch,
            seq: self.token.seq.max(self.last_sent_seq),
            vips: self.token.vips.clone(),
            owned: self.owned.clone(),
            faulted: self.faulted,
            closed: self.token.closed.clone(),
            unready: self.token.unready.clone(),
            holding: self.holding,
            round: self.last_round,
            stale_tokens: self.stale_tokens,
            loads: self
                .token
                .loads
                .iter()
                .filter(|l| l.node != self.me)
                .copied()
                .chain(self.my_load)
                .collect(),
            blocks: self.token.blocks.clone(),
            vip_loads: self.token.vip_loads.clone(),
            config: self.config_change.active(),
            config_staged: self.config_change.staged(),
            config_rejected: self.config_change.rejected(),
            ring_config: (*self.token.config).clone(),
            ring_config_version: self.token.config_version,
            quorum_wait: self.is_member() && self.quorum_wait,
        }
    }

    /// Whether this node fetches `config`'s document now.
    pub fn awaits_config(&self, config: ConfigId) -> bool {
        self.config_change.awaits(config)
    }

    /// The newest configuration version running in the ring as this node knows it.
    pub fn newest_config_version(&self) -> u32 {
        self.config_change.newest(&self.token)
    }

    /// Until when this node may answer for its VIPs, as far as the ring knows: the earliest
    /// moment the others could have removed it (its last hold, every other member's hold, then
    /// the transport giving up on it). The daemon caps its dead-man lease with it, so a node
    /// that was paused or cut off past that moment is silent before its VIPs are taken over,
    /// and stays silent until a token tells it where it stands. `None` when no other node
    /// could take its VIPs (alone) or it owns none (not a member).
    pub fn answer_until(&self) -> Option<Instant> {
        let others = self.members().len().saturating_sub(1) as u32;
        (self.is_member() && others > 0).then(|| {
            self.last_held_at + self.config.hold * (others + 1) + self.config.unreachable_after
        })
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Received { msg, .. } if !self.faulted => match msg {
                Message::Token(t) => self.on_token(now, *t, &mut out),
                Message::Probe(p) => self.on_probe(p, &mut out),
                Message::Join(j) => self.on_join(now, j, &mut out),
                // The daemon's, not the ring's.
                Message::Copies(_) | Message::ConfigFetch(_) | Message::ConfigDoc(_) => {}
            },
            Event::Received { .. } => {}
            Event::Outcome {
                to,
                what,
                delivered,
            } => {
                if what == Sent::Token && self.in_flight == Some(to) {
                    self.in_flight = None;
                    if delivered {
                        self.last_reached = now;
                    } else {
                        self.token_undeliverable(now, to, &mut out);
                    }
                } else if what == Sent::Probe && !delivered && self.probe_out {
                    self.skip_probe(to, &mut out);
                }
            }
            Event::Timer(TimerKind::Pass) if self.holding => self.pass(now, &mut out),
            Event::Timer(TimerKind::Pass) => {}
            Event::Timer(TimerKind::Loss) => self.on_loss_timer(now, &mut out),
            Event::Timer(TimerKind::Join) => {
                if !self.faulted && now >= self.quarantine_until {
                    self.send_joins(&mut out);
                }
                out.push(self.timer(TimerKind::Join, now + self.config.join_interval));
            }
            Event::Admin { id, op } => self.asks.push(AdminAsk {
                id,
                origin: self.me,
                op,
            }),
            Event::OfferConfig { ask, config } if self.is_member() && !self.faulted => {
                self.config_change.want(ask, config, &mut out);
            }
            Event::OfferConfig { ask, .. } => out.push(Action::ConfigDone {
                ask,
                result: ConfigResult::NotMember,
            }),
            Event::ConfigStaged(config) => {
                self.config_change.staged_ok(config, &self.token, &mut out);
            }
            Event::ConfigRejected(config) => self.config_change.refused(config),
            Event::Stalled => self.on_stalled(now, &mut out),
            Event::LocalLoad(load) => {
                self.my_load = Some(Load {
                    node: self.me,
                    ..load
                })
            }
            Event::LocalVipLoads(loads) => self.my_vip_loads = loads,
            Event::TablesWhole => self.whole = true,
            Event::LocalFault => {
                if !self.faulted {
                    self.faulted = true;
                    self.leave(now, &mut out);
                }
            }
            Event::LocalHealthy => {
                if self.faulted {
                    self.faulted = false;
                    self.last_token_at = now;
                    self.last_held_at = now;
                    // Its joins start now: the wait for a ring before it runs alone too (it
                    // heard nothing while cut off, which is no sign the others are gone).
                    self.outside_since = now;
                    self.send_joins(&mut out);
                }
            }
            Event::VipConflict {
                vip,
                rival_ring,
                rival_low,
            } => {
                let rival = (rival_ring, std::cmp::Reverse(rival_low.0));
                if !self.owned.contains(&vip) {
                } else if rival > self.ring_rank() {
                    // Conceded for longer each time the same VIP is lost again without this
                    // node having been in a ring with others meanwhile (a partition of the
                    // cluster network that lasts): up to 64 times `removed_after`.
                    let base = self.removed_after();
                    let streak = self.concessions.entry(vip).or_insert(0);
                    let hold = base * (1 << (*streak).min(6));
                    *streak += 1;
                    self.conceded.insert(vip, now + hold);
                    self.apply(&mut out);
                } else {
                    // Keeping it: announce again, so the neighbours that followed the rival's
                    // claim come back.
                    out.push(Action::Garp(vec![vip]));
                }
            }
        }
        out
    }

    /// A round of the ring: every member holds the token for `hold`, plus a millisecond of
    /// transit per hop.
    fn round(&self) -> Duration {
        (self.config.hold + Duration::from_millis(1)) * self.members().len() as u32
    }

    /// No token for this long means it is lost (grows with the ring, which it must outlast).
    fn loss_after(&self) -> Duration {
        self.config.loss_timeout + self.round()
    }

    /// Not held the token for this long means this node was removed.
    fn removed_after(&self) -> Duration {
        self.config.removed_after + 2 * self.round()
    }

    fn members(&self) -> &[NodeId] {
        &self.token.members
    }

    fn is_member(&self) -> bool {
        self.membership == Membership::Member
    }

    fn timer(&self, kind: TimerKind, at: Instant) -> Action {
        Action::SetTimer { kind, at }
    }

    /// (members, lowest id) of this node's ring; the larger ring absorbs the smaller.
    fn ring_rank(&self) -> (usize, std::cmp::Reverse<u8>) {
        if self.is_member() {
            let low = self.members().iter().min().map_or(u8::MAX, |n| n.0);
            (self.members().len(), std::cmp::Reverse(low))
        } else {
            (0, std::cmp::Reverse(u8::MAX))
        }
    }

    fn send_joins(&self, out: &mut Vec<Action>) {
        for &n in &self.config.nodes {
            if n != self.me && !(self.is_member() && self.members().contains(&n)) {
                self.send_join(n, out);
            }
        }
    }

    fn on_join(&mut self, now: Instant, j: Join, out: &mut Vec<Action>) {
        if !self.is_member() {
            if j.ring_size > 0 {
                // A ring is looking for its missing nodes: answer at once, so it takes this
                // node in at its next hold, before this node's own wait runs out.
                self.heard_ring = Some(now);
                if !self.faulted && now >= self.quarantine_until {
                    self.send_join(j.from, out);
                }
            } else if j.from < self.me {
                self.heard_lower = Some(now);
            }
            return;
        }
        if self.members().contains(&j.from) {
            return;
        }
        let theirs = (
            j.ring_size as usize,
            std::cmp::Reverse(j.ring_low.map_or(u8::MAX, |n| n.0)),
        );
        if self.ring_rank() > theirs {
            self.joins.insert(j.from);
        } else {
            // Their ring is the better one: ask them to take this node instead.
            self.heard_better = Some(now);
            self.send_join(j.from, out);
        }
    }

    /// Asks `to` to take this node in.
    fn send_join(&self, to: NodeId, out: &mut Vec<Action>) {
        let (size, low) = self.ring_rank();
        out.push(Action::Send {
            to,
            msg: Message::Join(Join {
                from: self.me,
                ring_size: size as u8,
                ring_low: (size > 0).then_some(NodeId(low.0)),
                config_version: self.config_change.active().version,
            }),
        });
    }

    /// Whether a node whose wait to run alone began at `since` and ran out waits on: while a
    /// ring has asked it to join or passed a token without it in the last three join
    /// intervals (that ring serves the VIPs; a node it cannot take in, its datagrams lost,
    /// must not claim them), and for at most another `startup` while a node of lower id that
    /// waits too has asked it to join (nodes started together form one ring round the lowest
    /// of them instead of each a ring of one claiming every VIP).
    fn wait_for_ring(&self, now: Instant, since: Instant) -> bool {
        let recent = |heard: Option<Instant>| {
            heard.is_some_and(|at| at >= since && now < at + self.config.join_interval * 3)
        };
        recent(self.heard_ring)
            || (now < since + self.config.startup * 2 && recent(self.heard_lower))
    }

    /// Whether this node's ring takes over the VIPs of members it lost (`quorum.rs`): not
    /// while it lacks a majority of the size it kept, unless its size has held for
    /// `quorum_window`; nor while a better ring asked it to join in the last three join
    /// intervals (that ring is alive and serves them).
    fn takes_over(&self, now: Instant) -> bool {
        let better = self
            .heard_better
            .is_some_and(|at| now < at + self.config.join_interval * 3);
        self.quorum.holds(now, self.quorum_window()) && !better
    }

    /// How long a ring that lost its majority at once waits before it takes the VIPs of the
    /// members it lost: were they alive, they would have regenerated their token without this
    /// node by then (a 911 after `loss_after`, its give-up on this node after
    /// `unreachable_after`) and asked it to join (three join intervals, for one lost join).
    fn quorum_window(&self) -> Duration {
        self.loss_after() + self.config.unreachable_after + self.config.join_interval * 3
    }

    /// After a stall past the moment the others could have removed this node, it assumes they
    /// did: it drops every VIP at once and, after a quarantine that lets the tokens queued
    /// during the stall drain unheeded, asks to join again.
    fn on_stalled(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.answer_until().is_some_and(|until| now > until) {
            self.quarantine_until = now + self.config.unreachable_after;
            self.leave(now, out);
        }
    }

    fn on_token(&mut self, now: Instant, t: Token, out: &mut Vec<Action>) {
        if now < self.quarantine_until {
            self.stale_tokens += 1;
            return;
        }
        // A token regenerated after a 911, or passed on after a removal, carries a later
        // generation of the ring's lineage: the same ring carrying on, not a rival (this node
        // may not have heard of the removal yet). An earlier generation is a token that a
        // later one replaced: the removed node's, or a regenerated one's predecessor.
        let lineage =
            self.is_member() && epoch::lineage(t.epoch) == epoch::lineage(self.token.epoch);
        let (theirs, mine) = (
            epoch::generation(t.epoch),
            epoch::generation(self.token.epoch),
        );
        if lineage && theirs < mine {
            self.stale_tokens += 1;
            return;
        }
        let same_ring =
            self.is_member() && (t.epoch == self.token.epoch || (lineage && theirs > mine));
        if same_ring && t.seq <= self.token.seq.max(self.last_sent_seq) {
            self.stale_tokens += 1;
            return;
        }
        if !t.members.contains(&self.me) {
            if !self.is_member() {
                self.heard_ring = Some(now);
            }
            if same_ring {
                // This node was removed from its ring.
                self.leave(now, out);
            }
            return;
        }
        if self.is_member() && !same_ring {
            let theirs = (
                t.members.len(),
                std::cmp::Reverse(t.members.iter().min().map_or(u8::MAX, |n| n.0)),
            );
            // Equal rings (two views of one merge): the higher epoch wins, everywhere alike.
            if theirs < self.ring_rank()
                || (theirs == self.ring_rank() && t.epoch < self.token.epoch)
            {
                // A token of a ring this node left, or of a worse ring: pass it on without
                // this node, so that ring carries on and forgets it.
                self.forward_without_me(t, out);
                return;
            }
            // A better ring took this node: leave the old one.
            self.leave(now, out);
        }
        self.last_round = (same_ring && self.membership == Membership::Member)
            .then(|| now.saturating_duration_since(self.last_held_at));
        let arrangement = |t: &Token| {
            let placed: Vec<Ipv4Addr> = t
                .vips
                .iter()
                .filter(|v| v.placed)
                .map(|v| v.address)
                .collect();
            (t.members.clone(), t.closed.clone(), placed)
        };
        if arrangement(&t) != arrangement(&self.token) {
            self.last_arranged = now;
        }
        self.membership = Membership::Member;
        self.token = t;
        self.removed_unconfirmed = false;
        // A concession holds while the ring still names this node the owner (a rival ring
        // claims the VIP); once the table gives the VIP to another node it is over, so a
        // later assignment back here is answered, and never released and re-placed with this
        // node as its own previous holder (which lost the hand-off of a dead node's
        // connections: a seed of the simulator).
        let me = self.me;
        let vips = &self.token.vips;
        self.conceded
            .retain(|a, _| vips.iter().any(|v| v.address == *a && v.owner == Some(me)));
        self.holding = true;
        self.probe_out = false;
        self.probe_skipped.clear();
        if self.token.members.len() > 1 {
            self.concessions.clear();
        }
        self.last_token_at = now;
        self.last_held_at = now;
        self.last_reached = now;
        self.apply(out);
        self.config_change.follow(now, &self.token, out);
        out.push(self.timer(TimerKind::Pass, now + self.config.hold));
        out.push(self.timer(TimerKind::Loss, now + self.config.loss_timeout));
    }

    /// Passes a foreign ring's token to that ring's next member, without this node in it.
    fn forward_without_me(&mut self, mut t: Token, out: &mut Vec<Action>) {
        let Some(next) = next_after(&t.members, self.me, &BTreeSet::new()) else {
            return;
        };
        t.members.retain(|&m| m != self.me);
        for v in t.vips.iter_mut() {
            if v.owner == Some(self.me) {
                v.hand_to(None);
            }
        }
        if next == self.me || t.members.is_empty() {
            return;
        }
        t.seq += 1;
        t.from = self.me;
        t.to = next;
        out.push(Action::Send {
            to: next,
            msg: Message::Token(Box::new(t)),
        });
    }

    /// Drops every VIP at once and asks to join again; only if nobody takes it in for
    /// `startup` from now does it run alone (a node that was removed while hung must not
    /// claim every VIP the moment it wakes up).
    fn leave(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.membership = Membership::Outside;
        self.outside_since = now;
        self.holding = false;
        self.in_flight = None;
        self.token.members = vec![self.me];
        self.token.epoch = 0;
        self.conceded.clear();
        self.config_change.left(out);
        if !self.owned.is_empty() {
            self.owned.clear();
            out.push(Action::ApplyVips(BTreeSet::new()));
        }
        if !self.faulted && now >= self.quarantine_until {
            self.send_joins(out);
        }
    }

    fn on_loss_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(self.timer(TimerKind::Loss, now + self.config.loss_timeout));
        if self.faulted {
            return;
        }
        match self.membership {
            Membership::Starting
                if now >= self.started + self.config.startup
                    && !self.wait_for_ring(now, self.started) =>
            {
                self.form_alone(now, out);
            }
            Membership::Outside
                if now >= self.outside_since + self.config.startup
                    && !self.wait_for_ring(now, self.outside_since) =>
            {
                self.form_alone(now, out);
            }
            // Every pass of this node fails and no token reaches it, yet it keeps a ring of
            // others (their joins take them back in): it is the one cut off (its datagrams
            // are lost). It leaves rather than serve as a ring the others do not know.
            Membership::Member
                if self.members().len() > 1 && now >= self.last_reached + self.removed_after() =>
            {
                self.leave(now, out);
            }
            Membership::Member if self.holding => {}
            Membership::Member if now >= self.last_held_at + self.removed_after() => {
                self.leave(now, out);
            }
            // A token this node passed is still with the transport (resending, or about to
            // report the destination unreachable): not lost yet.
            Membership::Member if self.in_flight.is_some() => {}
            // This node's 911 is still on its way round.
            Membership::Member
                if self.probe_out
                    && self
                        .probe_sent_at
                        .is_some_and(|at| now < at + self.config.probe_interval) => {}
            Membership::Member if now >= self.last_token_at + self.loss_after() => {
                self.probe_sent_at = Some(now);
                self.send_probe(out);
            }
            _ => {}
        }
    }

    /// Forms a ring of one: owns every VIP.
    fn form_alone(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.membership = Membership::Member;
        self.token.members = vec![self.me];
        // Alone, the ring runs this node's configuration.
        let mine = self.config_change.active();
        self.token.config_version = mine.version;
        *self.token.config = ConfigState {
            active_digest: mine.digest,
            ..ConfigState::default()
        };
        self.token.epoch = epoch::fresh(self.last_sent_seq, self.me);
        self.token.seq = self.last_sent_seq;
        self.holding = true;
        self.last_token_at = now;
        self.last_held_at = now;
        self.last_reached = now;
        out.push(self.timer(TimerKind::Pass, now));
    }

    fn send_probe(&mut self, out: &mut Vec<Action>) {
        self.probe_out = true;
        let probe = Probe {
            origin: self.me,
            permit: true,
            seq: self.last_sent_seq,
        };
        self.forward_probe(probe, self.me, out);
    }

    /// Sends `probe` to the member after `after`, past those a 911 of ours found unreachable,
    /// or handles it here when no other is left.
    fn forward_probe(&mut self, probe: Probe, after: NodeId, out: &mut Vec<Action>) {
        match next_after(self.members(), after, &self.probe_skipped) {
            Some(next) if next != self.me => out.push(Action::Send {
                to: next,
                msg: Message::Probe(probe),
            }),
            _ if probe.origin == self.me && probe.permit => self.regenerate(out),
            _ => {}
        }
    }

    fn skip_probe(&mut self, unreachable: NodeId, out: &mut Vec<Action>) {
        // The outcome of an earlier 911 to a node a regenerated token already left out: the
        // token is on its way, and this node's new 911 (if any) does not go there.
        if !self.members().contains(&unreachable) {
            return;
        }
        // Once per unreachable node: the outcomes of the other nodes' 911s this node passed
        // to it come in too, and each further 911 of ours would come back with permission.
        if !self.probe_skipped.insert(unreachable) {
            return;
        }
        let probe = Probe {
            origin: self.me,
            permit: true,
            seq: self.last_sent_seq,
        };
        self.forward_probe(probe, unreachable, out);
    }

    fn on_probe(&mut self, mut p: Probe, out: &mut Vec<Action>) {
        if !self.is_member() {
            return;
        }
        if !self.members().contains(&p.origin) {
            // A 911 from a non-member is a request to join.
            self.joins.insert(p.origin);
            return;
        }
        if p.origin == self.me {
            // A 911 of ours sent before this node last passed a token (it regenerated on an
            // earlier one) is spent: regenerating again would make the token on its way an
            // earlier generation that every member drops.
            if p.seq != self.last_sent_seq {
                return;
            }
            self.probe_out = false;
            if p.permit && !self.holding && self.in_flight.is_none() {
                self.regenerate(out);
            }
            return;
        }
        if self.last_sent_seq > p.seq {
            p.permit = false;
        }
        self.forward_probe(p, self.me, out);
    }

    /// The 911 came back with permission: this node's last token becomes the token again
    /// (it is passed on at once, with a new sequence).
    fn regenerate(&mut self, out: &mut Vec<Action>) {
        self.probe_out = false;
        self.holding = true;
        // The next generation, marked with this node: should the old token turn up after all,
        // every member that saw this one drops it.
        self.token.epoch = epoch::next_generation(self.token.epoch, self.me);
        out.push(Action::SetTimer {
            kind: TimerKind::Pass,
            at: self.last_token_at,
        });
    }

    fn token_undeliverable(&mut self, now: Instant, to: NodeId, out: &mut Vec<Action>) {
        self.remove_member(to);
        self.removed_unconfirmed = true;
        // The next generation: the token may have reached `to` after all (its ack lost), and
        // `to` passes its copy on; whoever saw this one drops that one. And should the cluster
        // network be split, each side's token is a generation of its own, two rings that merge
        // when it heals rather than two tokens of one ring.
        self.token.epoch = epoch::next_generation(self.token.epoch, self.me);
        self.holding = true;
        self.pass(now, out);
    }

    /// Does this node's work on the token and passes it to the next member.
    fn pass(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.is_member() {
            return;
        }
        self.holding = false;
        self.last_held_at = now;
        for gone in std::mem::take(&mut self.probe_skipped) {
            if gone != self.me {
                self.remove_member(gone);
                self.removed_unconfirmed = true;
            }
        }
        self.admit_joins();
        self.carry_readiness();
        self.release_conceded(now);
        self.carry_out_asks(out);
        self.place(now);
        self.carry_loads();
        self.config_change.at_pass(now, &mut self.token, out);
        self.apply(out);
        let seq = self.token.seq.max(self.last_sent_seq) + 1;
        self.token.seq = seq;
        self.last_sent_seq = seq;
        self.token.from = self.me;
        let next = next_after(self.members(), self.me, &BTreeSet::new()).unwrap_or(self.me);
        self.token.to = next;
        self.last_token_at = now;
        if next == self.me {
            self.holding = true;
            out.push(self.timer(TimerKind::Pass, now + self.config.hold));
        } else {
            self.in_flight = Some(next);
            out.push(Action::Send {
                to: next,
                msg: Message::Token(Box::new(self.token.clone())),
            });
        }
        out.push(self.timer(TimerKind::Loss, now + self.config.loss_timeout));
    }

    /// Takes `gone` out of the ring. Its successor, which holds copies of its connections,
    /// takes over its NAT port block and whatever it served for others.
    fn remove_member(&mut self, gone: NodeId) {
        if !self.token.members.contains(&gone) {
            return;
        }
        let successor = next_after(&self.token.members, gone, &BTreeSet::from([gone]));
        self.token.members.retain(|&m| m != gone);
        self.joins.remove(&gone);
        if let Some(successor) = successor.filter(|&s| s != gone) {
            hand_over_blocks(&mut self.token.blocks, gone, successor);
        }
    }

    /// Writes onto the token whether this node's tables are whole, and drops the entries of
    /// nodes no longer members.
    fn carry_readiness(&mut self) {
        let (me, members, whole) = (self.me, self.token.members.clone(), self.whole);
        self.token
            .unready
            .retain(|&n| members.contains(&n) && (n != me || !whole));
        if !whole && !self.token.unready.contains(&me) {
            self.token.unready.push(me);
        }
        self.token.unready.sort();
    }

    /// Writes this node's load onto the token and drops the loads of nodes no longer members.
    fn carry_loads(&mut self) {
        let (me, members) = (self.me, self.token.members.clone());
        self.token
            .loads
            .retain(|l| l.node != me && members.contains(&l.node));
        self.token.loads.extend(self.my_load);
        self.token.loads.sort_by_key(|l| l.node);
        // Each VIP's load is its owner's to write.
        let owner = |vips: &[VipEntry], a: Ipv4Addr| {
            vips.iter().find(|v| v.address == a).and_then(|v| v.owner)
        };
        let vips = self.token.vips.clone();
        self.token
            .vip_loads
            .retain(|l| owner(&vips, l.address).is_some_and(|o| o != me && members.contains(&o)));
        self.token.vip_loads.extend(
            self.my_vip_loads
                .iter()
                .filter(|l| owner(&vips, l.address) == Some(me)),
        );
        self.token.vip_loads.sort_by_key(|l| l.address);
    }

    /// Hands VIPs conceded long enough ago back to placement.
    fn release_conceded(&mut self, now: Instant) {
        let expired: Vec<Ipv4Addr> = self
            .conceded
            .iter()
            .filter(|(_, &until)| until <= now)
            .map(|(&vip, _)| vip)
            .collect();
        for vip in expired {
            self.conceded.remove(&vip);
            for v in self.token.vips.iter_mut() {
                if v.address == vip && v.owner == Some(self.me) {
                    v.hand_to(None);
                }
            }
        }
    }

    fn admit_joins(&mut self) {
        if self.joins.is_empty() {
            return;
        }
        let mut members: BTreeSet<NodeId> = self.token.members.iter().copied().collect();
        let joining = std::mem::take(&mut self.joins);
        // A node back in the ring translates with its own block again; whoever took the block
        // over keeps serving the connections it took until they end.
        for b in self.token.blocks.iter_mut() {
            if joining.contains(&b.block) {
                b.returned = true;
            }
        }
        // A node that joins has yet to take in its predecessor's connections.
        for &n in &joining {
            if !members.contains(&n) && !self.token.unready.contains(&n) {
                self.token.unready.push(n);
            }
        }
        members.extend(joining);
        // Ring order is the configured node order.
        self.token.members = self
            .config
            .nodes
            .iter()
            .copied()
            .filter(|n| members.contains(n))
            .collect();
        if self.token.members.len() > 1 && self.token.epoch == 0 {
            self.token.epoch = epoch::fresh(self.last_sent_seq, self.me);
        }
    }

    /// Puts this node's commands on the token, carries out those it can, and takes the
    /// answers addressed to it.
    fn carry_out_asks(&mut self, out: &mut Vec<Action>) {
        self.token.asks.append(&mut self.asks);
        let mut waiting = Vec::new();
        for ask in std::mem::take(&mut self.token.asks) {
            match self.try_ask(ask) {
                Some(result) => self.token.done.push(AdminDone {
                    id: ask.id,
                    origin: ask.origin,
                    result,
                }),
                None => waiting.push(ask),
            }
        }
        self.token.asks = waiting;
        let me = self.me;
        let members = self.token.members.clone();
        self.token.done.retain(|d| {
            if d.origin == me {
                out.push(Action::AdminDone {
                    id: d.id,
                    result: d.result,
                });
                false
            } else {
                members.contains(&d.origin)
            }
        });
    }

    /// Carries out `ask` if this node may (`None`: it stays on the token for the owner).
    fn try_ask(&mut self, ask: AdminAsk) -> Option<AdminResult> {
        let members = &self.token.members;
        let index = |vip: Ipv4Addr| self.token.vips.iter().position(|v| v.address == vip);
        let vip_index = match ask.op {
            AdminOp::Move(vip, _) | AdminOp::Prefer(vip, _) | AdminOp::Pin(vip, _) => {
                match index(vip) {
                    Some(i) => Some(i),
                    None => return Some(AdminResult::UnknownVip),
                }
            }
            AdminOp::Close(..) | AdminOp::Open(_) => None,
        };
        let member = |n: NodeId| members.contains(&n);
        match (ask.op, vip_index) {
            (AdminOp::Move(vip, node), Some(i)) => {
                if !member(node) {
                    return Some(AdminResult::NotMember);
                }
                if self.token.closed.contains(&node) {
                    return Some(AdminResult::Closed);
                }
                let owner = self.token.vips[i].owner;
                if owner == Some(node) {
                    return Some(AdminResult::AlreadyThere);
                }
                // Only the owner gives a VIP away (or anyone, when its owner is gone).
                if owner == Some(self.me) || owner.is_none_or(|o| !member(o)) {
                    self.token.vips[i].hand_to(Some(node));
                    self.settled.insert(vip, 0);
                    self.token.vips[i].placed = true;
                    return Some(AdminResult::Done);
                }
                None
            }
            (AdminOp::Prefer(_, node), Some(i)) => {
                self.token.vips[i].preferred = Some(node);
                Some(AdminResult::Done)
            }
            (AdminOp::Pin(_, persistence), Some(i)) => {
                self.token.vips[i].persistence = persistence;
                Some(AdminResult::Done)
            }
            (AdminOp::Close(node, force), _) => {
                let open_left = members
                    .iter()
                    .any(|&m| m != node && !self.token.closed.contains(&m));
                if !force && !open_left && !self.token.closed.contains(&node) {
                    return Some(AdminResult::LastOpen);
                }
                if !self.token.closed.contains(&node) {
                    self.token.closed.push(node);
                }
                // Done once the node owns nothing (it releases its VIPs when it holds the
                // token).
                (!self.token.vips.iter().any(|v| v.owner == Some(node)))
                    .then_some(AdminResult::Done)
            }
            (AdminOp::Open(node), _) => {
                self.token.closed.retain(|&n| n != node);
                Some(AdminResult::Done)
            }
            _ => None,
        }
    }

    /// The placement rules, applied by the holder (see the module doc).
    fn place(&mut self, now: Instant) {
        let members: Vec<NodeId> = self.token.members.clone();
        self.quorum
            .observe(now, members.len(), self.quorum_window());
        let takes_over = self.takes_over(now);
        self.quorum_wait = !takes_over;
        let closed = self.token.closed.clone();
        let open = |n: NodeId| members.contains(&n) && !closed.contains(&n);
        // A member whose tables are not whole is given a VIP only when no open member that
        // is whole can take it.
        let whole_open: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|&n| open(n) && !self.token.unready.contains(&n))
            .collect();
        let candidates: Vec<NodeId> = if whole_open.is_empty() {
            members.iter().copied().filter(|&n| open(n)).collect()
        } else {
            whole_open
        };
        let eligible = |n: NodeId| candidates.contains(&n);
        for s in self.settled.values_mut() {
            *s = s.saturating_add(1);
        }
        let count =
            |vips: &[VipEntry], n: NodeId| vips.iter().filter(|v| v.owner == Some(n)).count();
        // This node gives away what it must: when closed, and persistence-3 VIPs whose
        // preferred owner is alive.
        for i in 0..self.token.vips.len() {
            let v = self.token.vips[i];
            if v.owner != Some(self.me) {
                continue;
            }
            let target = if !open(self.me) {
                least_loaded(&self.token.vips, &candidates, count)
            } else if v.persistence == Persistence::Home {
                v.preferred.filter(|&p| p != self.me && eligible(p))
            } else {
                None
            };
            if let Some(t) = target {
                self.token.vips[i].hand_to(Some(t));
                self.settled.insert(v.address, 0);
            }
        }
        // VIPs whose owner is gone: to the preferred owner if alive, else the least loaded;
        // none while the ring may not take them over (they may be served still). This node's
        // own removals may be its own cut-off: what they lost it hands to another member, but
        // takes itself only once a token of another member showed they were not (that member
        // places it, a hop later).
        let unconfirmed = self.removed_unconfirmed && members.len() > 1;
        for i in 0..self.token.vips.len() {
            let v = self.token.vips[i];
            if v.owner.is_some_and(open) {
                continue;
            }
            let lost = v.owner.is_none_or(|o| !members.contains(&o));
            if lost && !takes_over {
                continue;
            }
            if v.owner
                .is_some_and(|o| members.contains(&o) && o != self.me)
            {
                continue; // a closed member releases its own VIPs
            }
            let target = v
                .preferred
                .filter(|&p| eligible(p))
                .or_else(|| least_loaded(&self.token.vips, &candidates, count));
            if lost && unconfirmed && target == Some(self.me) {
                continue;
            }
            self.token.vips[i].hand_to(target);
            self.token.vips[i].placed = false;
            self.settled.insert(v.address, 0);
        }
        // Load: by traffic while a member is busy, else by count.
        if self.balance_by_traffic(now, &candidates) {
            return;
        }
        // By count: this node gives one free VIP to the least loaded member when it holds two
        // more than it. Only VIPs no operator placed count and move, and only once the
        // arrangement has been quiet for `arrange_hold`: an operator's move, an open or a
        // rejoin is neither undone nor compensated at once, and a node that just joined gets
        // VIPs only once its tables are whole.
        if now < self.last_arranged + self.config.arrange_hold {
            return;
        }
        let unplaced = |vips: &[VipEntry], n: NodeId| {
            vips.iter()
                .filter(|v| v.owner == Some(n) && !v.placed)
                .count()
        };
        if let Some(least) = least_loaded(&self.token.vips, &candidates, unplaced) {
            let mine = unplaced(&self.token.vips, self.me);
            if mine >= unplaced(&self.token.vips, least) + 2 {
                let movable = self.token.vips.iter().position(|v| {
                    v.owner == Some(self.me)
                        && v.persistence == Persistence::Free
                        && !v.placed
                        && self.settled.get(&v.address).copied().unwrap_or(u32::MAX)
                            >= self.config.settle_hops
                });
                if let Some(i) = movable {
                    self.token.vips[i].hand_to(Some(least));
                    self.settled.insert(self.token.vips[i].address, 0);
                }
            }
        }
    }

    /// Balancing by traffic (docs/architecture.md, "Load balancing"), while any open member's data
    /// path carries `balance_min_pps` or more; returns whether it applies (then counts are left
    /// alone, or the two rules would undo each other). One node decides, the open member of lowest
    /// id: when the busiest member is over the mean by a quarter, it moves the busiest's free,
    /// settled VIP with the most traffic that is at most three quarters of the gap to the least
    /// busy member (so the gap between the two at least halves: moves cannot swing back and
    /// forth). Each decision waits `balance_hold` after the last move and after the traffic
    /// began (`LoadMoves`).
    fn balance_by_traffic(&mut self, now: Instant, candidates: &[NodeId]) -> bool {
        let min = self.config.balance_min_pps;
        let pps = |n: NodeId| {
            self.token
                .loads
                .iter()
                .find(|l| l.node == n)
                .map(|l| l.packets_per_s)
        };
        let Some(loads) = candidates
            .iter()
            .map(|&n| pps(n).map(|p| (p, n)))
            .collect::<Option<Vec<(u32, NodeId)>>>()
        else {
            return false;
        };
        let busy = min > 0 && loads.iter().any(|(p, _)| *p >= min);
        self.load_moves.busy(now, busy);
        if !busy {
            return false;
        }
        let decider = candidates.iter().min() == Some(&self.me);
        if !decider || !self.load_moves.due(now, self.config.balance_hold) {
            return true;
        }
        let settled = |a: Ipv4Addr| {
            self.settled.get(&a).copied().unwrap_or(u32::MAX) >= self.config.settle_hops
        };
        if let Some((i, to)) =
            traffic_move(&loads, &self.token.vips, &self.token.vip_loads, settled)
        {
            let vip = self.token.vips[i].address;
            self.token.vips[i].hand_to(Some(to));
            // Moved for load, it is no longer where an operator put it.
            self.token.vips[i].placed = false;
            self.settled.insert(vip, 0);
            self.load_moves.moved(now);
        }
        true
    }

    /// Applies the table's view of what this node owns; announces what it newly takes.
    fn apply(&mut self, out: &mut Vec<Action>) {
        let owned: BTreeSet<Ipv4Addr> = if self.is_member() && !self.faulted {
            self.token
                .vips
                .iter()
                .filter(|v| v.owner == Some(self.me) && !self.conceded.contains_key(&v.address))
                .map(|v| v.address)
                .collect()
        } else {
            BTreeSet::new()
        };
        if owned != self.owned {
            let new: Vec<Ipv4Addr> = owned.difference(&self.owned).copied().collect();
            // A VIP that just came here waits a few hops before load may move it on.
            for &vip in &new {
                self.settled.insert(vip, 0);
            }
            self.owned = owned.clone();
            out.push(Action::ApplyVips(owned));
            if !new.is_empty() {
                out.push(Action::Garp(new));
            }
        }
    }
}

/// When moves for load are due. A decision waits `balance_hold` after the cluster became busy
/// as well as after the last move: loads are measured every second, and the first measurements
/// of traffic that just began are of its ramp, not of where it settles. A node that will carry
/// the replies (the back-ends' gateway VIP) looked idle there, took a busy VIP, and that VIP
/// moved on again once the replies were counted (CI, `cluster_balance`).
#[derive(Debug, Default)]
struct LoadMoves {
    /// Since when some open member has carried `balance_min_pps` or more without a break.
    busy_since: Option<Instant>,
    /// When this node last moved a VIP for load.
    last_move: Option<Instant>,
}

impl LoadMoves {
    /// Records whether the cluster is busy at `now`.
    fn busy(&mut self, now: Instant, busy: bool) {
        if !busy {
            self.busy_since = None;
        } else if self.busy_since.is_none() {
            self.busy_since = Some(now);
        }
    }

    /// Whether a move may be decided at `now`.
    fn due(&self, now: Instant, hold: Duration) -> bool {
        let waited = |since: Instant| now >= since + hold;
        self.busy_since.is_some_and(waited) && self.last_move.is_none_or(waited)
    }

    fn moved(&mut self, now: Instant) {
        self.last_move = Some(now);
    }
}

/// The member after `after` in ring order, skipping `skip`; `None` when there is none.
fn next_after(members: &[NodeId], after: NodeId, skip: &BTreeSet<NodeId>) -> Option<NodeId> {
    let start = members
        .iter()
        .position(|&m| m == after)
        .map_or(0, |i| i + 1);
    (0..members.len())
        .map(|k| members[(start + k) % members.len()])
        .find(|m| !skip.contains(m))
}

/// `gone` left the ring: `successor` takes over its NAT block (serving its connections from
/// the copies it holds) and everything `gone` served for others (those connections were
/// among its own, so among the copies too).
fn hand_over_blocks(blocks: &mut Vec<BlockHolder>, gone: NodeId, successor: NodeId) {
    for b in blocks.iter_mut() {
        if b.holder == gone {
            b.holder = successor;
        }
        // What the gone node served of another block went to its successor with its copies.
        if b.leftovers == Some(gone) {
            b.leftovers = Some(successor);
        }
        if b.leftovers == Some(b.holder) {
            b.leftovers = None;
        }
    }
    // The node that held the block while its node was away before still serves what it took
    // then: the new holder sends on the replies it does not know.
    let earlier = blocks
        .iter()
        .find(|b| b.block == gone && b.returned)
        .map(|b| b.holder)
        .filter(|&h| h != successor);
    blocks.retain(|b| b.block != gone && b.block != b.holder);
    blocks.push(BlockHolder {
        block: gone,
        holder: successor,
        returned: false,
        leftovers: earlier,
    });
    blocks.sort_by_key(|b| b.block);
}

/// The move for traffic, if one is due: `loads` are the open members' packets per second.
/// When the busiest is over the mean by a quarter, its free, settled VIP with the most traffic
/// that is at most three quarters of the gap to the least busy member goes there (the gap
/// between the two at least halves, so moves cannot swing back and forth). Returns the VIP's
/// index in `vips` and where it goes.
fn traffic_move(
    loads: &[(u32, NodeId)],
    vips: &[VipEntry],
    vip_loads: &[VipLoad],
    settled: impl Fn(Ipv4Addr) -> bool,
) -> Option<(usize, NodeId)> {
    let &(high, busiest) = loads
        .iter()
        .max_by_key(|(p, n)| (*p, std::cmp::Reverse(*n)))?;
    let &(low, idlest) = loads.iter().min_by_key(|(p, n)| (*p, *n))?;
    let mean = loads.iter().map(|(p, _)| u64::from(*p)).sum::<u64>() / loads.len() as u64;
    if u64::from(high) * 4 <= mean * 5 || busiest == idlest {
        return None;
    }
    let most = (u64::from(high - low) * 3 / 4) as u32;
    let rate = |a: Ipv4Addr| {
        vip_loads
            .iter()
            .find(|l| l.address == a)
            .map_or(0, |l| l.packets_per_s)
    };
    vips.iter()
        .enumerate()
        .filter(|(_, v)| {
            v.owner == Some(busiest)
                && v.persistence == Persistence::Free
                && settled(v.address)
                && (1..=most).contains(&rate(v.address))
        })
        .max_by_key(|(_, v)| rate(v.address))
        .map(|(i, _)| (i, idlest))
}

/// The open member owning the fewest VIPs (lowest id on ties).
fn least_loaded(
    vips: &[VipEntry],
    candidates: &[NodeId],
    count: impl Fn(&[VipEntry], NodeId) -> usize,
) -> Option<NodeId> {
    candidates
        .iter()
        .copied()
        .min_by_key(|&n| (count(vips, n), n))
}

/// A ring's epoch: which formation of which ring a token belongs to. Bits 63-32 name the
/// lineage (drawn when a ring forms), bits 31-8 count its generations (a regeneration after a
/// 911 or a removal starts the next one), bits 7-0 are the node that started the generation,
/// so the two sides of a split cluster network carry different epochs.
mod epoch {
    use super::NodeId;

    /// The first generation of a new ring formed by `me`, its lineage drawn from `seed`.
    pub fn fresh(seed: u64, me: NodeId) -> u64 {
        (u64::from((seed as u32) | 1) << 32) | u64::from(me.0)
    }

    /// The next generation of `epoch`, started by `me`.
    pub fn next_generation(epoch: u64, me: NodeId) -> u64 {
        let generation = (generation(epoch) + 1) & 0xff_ffff;
        (epoch & !0xffff_ffff) | (generation << 8) | u64::from(me.0)
    }

    /// The ring an epoch descends from.
    pub fn lineage(epoch: u64) -> u64 {
        epoch >> 32
    }

    /// How many regenerations and removals the ring has been through.
    pub fn generation(epoch: u64) -> u64 {
        (epoch >> 8) & 0xff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(block: u8, holder: u8, returned: bool) -> BlockHolder {
        BlockHolder {
            block: NodeId(block),
            holder: NodeId(holder),
            returned,
            leftovers: None,
        }
    }

    fn vip(last: u8, owner: u8, persistence: Persistence) -> VipEntry {
        VipEntry {
            address: Ipv4Addr::new(10, 0, 0, last),
            owner: Some(NodeId(owner)),
            previous: None,
            preferred: None,
            persistence,
            placed: false,
        }
    }

    fn rate(last: u8, packets_per_s: u32) -> VipLoad {
        VipLoad {
            address: Ipv4Addr::new(10, 0, 0, last),
            packets_per_s,
        }
    }

    fn join(from: u8, ring_size: u8) -> Event {
        Event::Received {
            from: NodeId(from),
            msg: Message::Join(Join {
                from: NodeId(from),
                ring_size,
                ring_low: (ring_size > 0).then_some(NodeId(from)),
                config_version: 1,
            }),
        }
    }

    /// Node 1 of three, started at `t0`.
    fn starting(t0: Instant) -> Node {
        let config = RingConfig::new(
            vec![NodeId(0), NodeId(1), NodeId(2)],
            vec![vip(100, 0, Persistence::Free)],
        );
        Node::new(config, NodeId(1), t0).0
    }

    /// Runs the loss timer every `loss_timeout` from `from` to `to` ms after `t0`, feeding
    /// `heard` every join interval; returns when the node went alone, if it did.
    fn alone_at(node: &mut Node, t0: Instant, to: u64, heard: Option<Event>) -> Option<u64> {
        let loss = node.config.loss_timeout.as_millis() as u64;
        for ms in (0..=to).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            if let Some(e) = heard.as_ref().filter(|_| ms % 50 == 0) {
                node.handle(now, e.clone());
            }
            if ms % loss == 0 {
                node.handle(now, Event::Timer(TimerKind::Loss));
            }
            if node.status().membership == Membership::Member {
                return Some(ms);
            }
        }
        None
    }

    #[test]
    fn a_node_started_with_a_lower_one_waits_for_it_at_most_another_startup() {
        let t0 = Instant::now();
        assert_eq!(alone_at(&mut starting(t0), t0, 1000, None), Some(320));
        // Node 0 keeps asking to join, waiting too: node 1 leaves the ring to it for a while.
        let mut waiting = starting(t0);
        assert_eq!(
            alone_at(&mut waiting, t0, 1000, Some(join(0, 0))),
            Some(600)
        );
        // Node 2 is no reason to wait: node 1 is the lower.
        assert_eq!(
            alone_at(&mut starting(t0), t0, 1000, Some(join(2, 0))),
            Some(320)
        );
    }

    #[test]
    fn a_node_whose_fault_clears_waits_a_whole_startup_before_it_runs_alone() {
        let t0 = Instant::now();
        let mut node = starting(t0);
        node.handle(t0, Event::LocalFault);
        assert_eq!(alone_at(&mut node, t0, 2000, None), None, "faulted");
        let healthy = t0 + Duration::from_secs(2);
        node.handle(healthy, Event::LocalHealthy);
        assert_eq!(alone_at(&mut node, healthy, 1000, None), Some(320));
    }

    #[test]
    fn a_node_a_ring_asks_in_answers_at_once_and_never_runs_alone() {
        let t0 = Instant::now();
        let mut node = starting(t0);
        let answer = node.handle(t0, join(2, 2));
        assert!(
            answer.iter().any(|a| matches!(a,
                Action::Send { to, msg: Message::Join(j) } if *to == NodeId(2) && j.from == NodeId(1))),
            "{answer:?}"
        );
        assert_eq!(alone_at(&mut node, t0, 2000, Some(join(2, 2))), None);
        // Once the ring is silent, the wait runs out.
        assert!(alone_at(&mut node, t0 + Duration::from_secs(2), 400, None).is_some());
    }

    #[test]
    fn traffic_moves_the_busiest_vip_that_narrows_the_gap() {
        let vips = [
            vip(100, 0, Persistence::Free),
            vip(101, 0, Persistence::Free),
            vip(102, 1, Persistence::Free),
        ];
        let loads = [(6000, NodeId(0)), (300, NodeId(1)), (1500, NodeId(2))];
        let rates = [rate(100, 5000), rate(101, 3000), rate(102, 300)];
        // 100 would make node 1 the busier by more than node 0 was: 101 goes.
        assert_eq!(
            traffic_move(&loads, &vips, &rates, |_| true),
            Some((1, NodeId(1)))
        );
        // Not settled yet, or sticky: nothing moves.
        assert_eq!(traffic_move(&loads, &vips, &rates, |_| false), None);
        let sticky = vips.map(|v| VipEntry {
            persistence: Persistence::Sticky,
            ..v
        });
        assert_eq!(traffic_move(&loads, &sticky, &rates, |_| true), None);
        // Within a quarter of the mean: balanced enough.
        let even = [(3500, NodeId(0)), (3000, NodeId(1)), (3300, NodeId(2))];
        assert_eq!(traffic_move(&even, &vips, &rates, |_| true), None);
    }

    #[test]
    fn a_move_for_load_waits_the_hold_after_the_traffic_began_and_after_each_move() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(3);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut moves = LoadMoves::default();
        moves.busy(at(0), true);
        assert!(!moves.due(at(2), hold), "traffic still ramping");
        moves.busy(at(3), true);
        assert!(moves.due(at(3), hold));
        moves.moved(at(3));
        assert!(!moves.due(at(5), hold), "just moved");
        assert!(moves.due(at(6), hold));
        // A quiet spell starts the wait again.
        moves.busy(at(7), false);
        moves.busy(at(8), true);
        assert!(!moves.due(at(10), hold));
        assert!(moves.due(at(11), hold));
    }

    /// Node 1 of three, a member of the ring `members` whose token carries `vips`, in which
    /// the members `unready` have not taken in their tables yet.
    fn member(t0: Instant, members: &[u8], vips: Vec<VipEntry>, unready: &[u8]) -> Node {
        let mut node = starting(t0);
        node.membership = Membership::Member;
        node.whole = true;
        node.token.members = members.iter().map(|&n| NodeId(n)).collect();
        node.token.vips = vips;
        node.token.unready = unready.iter().map(|&n| NodeId(n)).collect();
        node
    }

    fn owner(node: &Node, last: u8) -> Option<NodeId> {
        let address = Ipv4Addr::new(10, 0, 0, last);
        node.token.vips.iter().find(|v| v.address == address)?.owner
    }

    #[test]
    fn a_member_whose_tables_are_not_whole_gets_no_vip_another_can_take() {
        let t0 = Instant::now();
        // Node 0 is gone; node 2, the least loaded, has just joined.
        let vips = || {
            vec![
                vip(100, 0, Persistence::Free),
                vip(101, 1, Persistence::Free),
            ]
        };
        let mut node = member(t0, &[1, 2], vips(), &[2]);
        node.place(t0);
        assert_eq!(owner(&node, 100), Some(NodeId(1)));
        let mut node = member(t0, &[1, 2], vips(), &[]);
        node.place(t0);
        assert_eq!(owner(&node, 100), Some(NodeId(2)));
        // A VIP that goes home waits until its home is whole.
        let mut home = vip(101, 1, Persistence::Home);
        home.preferred = Some(NodeId(2));
        let mut node = member(t0, &[1, 2], vec![home], &[2]);
        node.place(t0);
        assert_eq!(owner(&node, 101), Some(NodeId(1)));
        node.token.unready.clear();
        node.place(t0);
        assert_eq!(owner(&node, 101), Some(NodeId(2)));
    }

    #[test]
    fn a_member_whose_tables_are_not_whole_takes_a_vip_nobody_else_can() {
        let t0 = Instant::now();
        let mut node = member(t0, &[1], vec![vip(100, 0, Persistence::Free)], &[1]);
        node.whole = false;
        node.place(t0);
        assert_eq!(owner(&node, 100), Some(NodeId(1)));
    }

    #[test]
    fn a_node_that_joins_is_unready_until_it_says_its_tables_are_whole() {
        let t0 = Instant::now();
        let mut node = member(t0, &[1], Vec::new(), &[]);
        node.joins.insert(NodeId(2));
        node.admit_joins();
        node.carry_readiness();
        assert_eq!(node.token.unready, vec![NodeId(2)]);
        // Node 2 writes itself off the list at its pass, once whole.
        let mut joined = member(t0, &[1, 2], Vec::new(), &[2]);
        joined.me = NodeId(2);
        joined.whole = false;
        joined.carry_readiness();
        assert_eq!(joined.token.unready, vec![NodeId(2)]);
        joined.handle(t0, Event::TablesWhole);
        joined.carry_readiness();
        assert!(joined.token.unready.is_empty());
        // A member that left is dropped from it.
        let mut node = member(t0, &[1], Vec::new(), &[2]);
        node.carry_readiness();
        assert!(node.token.unready.is_empty());
    }

    #[test]
    fn a_gone_nodes_successor_takes_its_block_and_what_it_served() {
        let mut blocks = vec![held(0, 1, true), held(3, 1, false)];
        hand_over_blocks(&mut blocks, NodeId(1), NodeId(2));
        assert_eq!(
            blocks,
            vec![held(0, 2, true), held(1, 2, false), held(3, 2, false)]
        );
        // Node 2 dies before node 1 is back: node 0 takes all; node 0's own leftovers are
        // simply its own connections again.
        hand_over_blocks(&mut blocks, NodeId(2), NodeId(0));
        assert_eq!(
            blocks,
            vec![held(1, 0, false), held(2, 0, false), held(3, 0, false)]
        );
    }

    #[test]
    fn a_block_away_again_keeps_the_node_that_serves_what_it_took_the_first_time() {
        // Node 2 was away before and is back; node 1 still serves what it took then.
        let mut blocks = vec![held(2, 1, true)];
        hand_over_blocks(&mut blocks, NodeId(2), NodeId(0));
        let again = BlockHolder {
            leftovers: Some(NodeId(1)),
            ..held(2, 0, false)
        };
        assert_eq!(blocks, vec![again]);
        // Node 1 dies: its successor, node 0, has its copies, leftovers among them.
        hand_over_blocks(&mut blocks, NodeId(1), NodeId(0));
        assert_eq!(blocks, vec![held(1, 0, false), held(2, 0, false)]);
        // Away again with its successor the earlier holder: nothing else to ask.
        let mut blocks = vec![held(2, 0, true)];
        hand_over_blocks(&mut blocks, NodeId(2), NodeId(0));
        assert_eq!(blocks, vec![held(2, 0, false)]);
    }
}
