//! Changing the cluster's configuration together (docs/architecture.md, "Configuration change"),
//! the ring's part of it: which configuration every member runs, how a new one is offered,
//! fetched, staged and switched to at once. Sans-IO like the ring: the daemon fetches, verifies
//! and applies documents when told to (`Action::FetchConfig`, `Action::ActivateConfig`) and
//! reports back (`Event::ConfigStaged`, `Event::ConfigRejected`).
//!
//! The rules:
//! - The token names the configuration the ring runs (version and digest) and at most one
//!   offer of a new one. Only the holder writes the token, so two offers never race: a second
//!   one is refused as busy.
//! - A member that sees an offer newer than what it runs fetches the document from the
//!   offerer (then from members that staged it), verifies and stages it, and reports so in its
//!   own record on the token. When the holder sees every member's record name the offer as
//!   staged, it makes the offer the ring's configuration; every member switches to it as the
//!   token reaches it, within one round.
//! - A member that refuses the offer reports it; the offerer withdraws its offer and tells its
//!   operator who refused. An offer not staged everywhere within [`OFFER_TIMEOUT`] is withdrawn
//!   too, naming the members that did not stage it.
//! - A member that runs an older configuration than the ring (or the same version with another
//!   digest: the ring's wins) fetches the ring's and switches to it at once. A member that
//!   runs a newer one (started with a newer file, or back from a partition whose side
//!   switched) offers it, unless another member runs a newer one still; refused, it takes the
//!   ring's.
use std::time::{Duration, Instant};

use super::{
    events::{Action, ConfigResult},
    message::{ConfigId, ConfigOffer, ConfigState, ConfigTag, MemberConfig, Token},
    types::NodeId,
};

/// How long an offer may wait for every member to stage it.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(8);

/// How long a fetch may go unanswered before it is sent again (to the next source).
pub const FETCH_RETRY: Duration = Duration::from_millis(500);

/// An offer of this node's on the token.
#[derive(Clone, Copy, Debug)]
struct Offered {
    ask: u64,
    config: ConfigId,
    since: Instant,
}

/// A fetch this node asked for.
#[derive(Clone, Copy, Debug)]
struct Fetching {
    config: ConfigId,
    at: Instant,
    tries: usize,
}

/// One node's standing with the cluster's configuration.
#[derive(Debug)]
pub struct ConfigChange {
    me: NodeId,
    active: ConfigId,
    staged: Option<ConfigId>,
    rejected: Option<ConfigId>,
    fetching: Option<Fetching>,
    /// An operator's offer, waiting for this node's next hold of the token.
    wanted: Option<(u64, ConfigId)>,
    offered: Option<Offered>,
    /// This node's own newer configuration was refused: it takes the ring's.
    yielding: bool,
}

impl ConfigChange {
    /// A node running `active`.
    pub fn new(me: NodeId, active: ConfigId) -> Self {
        Self {
            me,
            active,
            staged: None,
            rejected: None,
            fetching: None,
            wanted: None,
            offered: None,
            yielding: false,
        }
    }

    /// The configuration this node runs.
    pub fn active(&self) -> ConfigId {
        self.active
    }

    /// The configuration this node staged, if any.
    pub fn staged(&self) -> Option<ConfigId> {
        self.staged
    }

    /// The latest configuration this node refused, if any.
    pub fn rejected(&self) -> Option<ConfigId> {
        self.rejected
    }

    /// Whether this node asked for `config`'s document (and has not had it yet): the daemon
    /// takes only the documents the ring fetches.
    pub fn awaits(&self, config: ConfigId) -> bool {
        self.fetching.is_some_and(|f| f.config == config)
    }

    /// The newest version this node knows to run anywhere: on `token`, in any member's
    /// record, or here. An operator's new configuration is numbered above it.
    pub fn newest(&self, token: &Token) -> u32 {
        newest_run(&token.config, self.me)
            .max(token.config_version)
            .max(self.active.version)
    }

    /// The operator offers `config` (already staged by the daemon); answered by
    /// `Action::ConfigDone` with `ask`.
    pub fn want(&mut self, ask: u64, config: ConfigId, out: &mut Vec<Action>) {
        if let Some((earlier, _)) = self.wanted.replace((ask, config)) {
            done(earlier, ConfigResult::Busy, out);
        }
        self.staged = Some(config);
    }

    /// The daemon fetched and verified `config`; `ring` is the last token seen.
    pub fn staged_ok(&mut self, config: ConfigId, ring: &Token, out: &mut Vec<Action>) {
        if self.fetching.is_some_and(|f| f.config == config) {
            self.fetching = None;
        }
        if self.rejected == Some(config) {
            self.rejected = None;
        }
        self.staged = Some(config);
        // Fetched because the ring runs it already: switch now.
        if ring.active_config() == config && self.active != config {
            self.activate(config, out);
        }
    }

    /// The daemon refused `config` (bad signature or digest, invalid, or not fetchable).
    pub fn refused(&mut self, config: ConfigId) {
        if self.fetching.is_some_and(|f| f.config == config) {
            self.fetching = None;
        }
        if self.staged == Some(config) {
            self.staged = None;
        }
        self.rejected = Some(config);
    }

    /// This node left its ring: an offer of its own is over.
    pub fn left(&mut self, out: &mut Vec<Action>) {
        if let Some(o) = self.offered.take() {
            done(o.ask, ConfigResult::NotMember, out);
        }
        if let Some((ask, _)) = self.wanted.take() {
            done(ask, ConfigResult::NotMember, out);
        }
        self.fetching = None;
    }

    /// A token reached this node (a member): follows the ring's configuration and fetches
    /// what is offered.
    pub fn follow(&mut self, now: Instant, token: &Token, out: &mut Vec<Action>) {
        let ring = token.active_config();
        let records = &token.config.members;
        if ring != self.active && (ring.version >= self.active.version || self.yielding) {
            if self.staged == Some(ring) {
                self.activate(ring, out);
                return;
            }
            if self.rejected != Some(ring) {
                // From the member that passed the token, when it runs it, else any that does.
                let mut sources: Vec<NodeId> = records
                    .iter()
                    .filter(|m| m.active == ring.tag())
                    .map(|m| m.node)
                    .collect();
                if !sources.is_empty() {
                    sources.sort_by_key(|&n| n != token.from);
                    self.fetch(now, ring, &sources, out);
                    return;
                }
                // No member runs it (those that did left before this node fetched it): a
                // newer offer may still do.
            }
            // Refused the ring's: a newer offer may still do.
        }
        if let Some(o) = token.config.offer {
            // The same version with another digest too: the ring settles on the offer.
            let wanted = o.config.version >= self.active.version
                && o.config != self.active
                && self.staged != Some(o.config)
                && self.rejected != Some(o.config);
            if wanted {
                let sources: Vec<NodeId> = std::iter::once(o.from)
                    .chain(
                        records
                            .iter()
                            .filter(|m| m.staged == o.config.tag() && m.node != o.from)
                            .map(|m| m.node),
                    )
                    .collect();
                self.fetch(now, o.config, &sources, out);
            }
        }
    }

    /// This node holds the token and is about to pass it: writes its record, switches the
    /// ring to an offer every member staged, settles its own offer and places a new one.
    pub fn at_pass(&mut self, now: Instant, token: &mut Token, out: &mut Vec<Action>) {
        let members = token.members.clone();
        let ring_version = token.config_version;
        let state = &mut token.config;
        // Offers of nodes gone, overtaken, or of this node's earlier life (it restarted).
        let mine = self.offered.map(|o| o.config);
        if state.offer.is_some_and(|o| {
            !members.contains(&o.from)
                || o.config.version <= ring_version
                || (o.from == self.me && mine != Some(o.config))
        }) {
            state.offer = None;
        }
        state
            .members
            .retain(|m| m.node != self.me && members.contains(&m.node));
        state.members.push(self.record());
        state.members.sort_by_key(|m| m.node);
        if let Some(o) = state.offer {
            let tag = o.config.tag();
            let ready = members.iter().all(|n| {
                state
                    .members
                    .iter()
                    .any(|m| m.node == *n && (m.staged == tag || m.active == tag))
            });
            if ready {
                token.config_version = o.config.version;
                state.active_digest = o.config.digest;
                state.offer = None;
            }
        }
        // Switch first, so this node runs an offer of its own before its operator hears so.
        self.follow(now, token, out);
        self.settle_offer(now, token, out);
        self.place_offer(now, token, out);
    }

    /// This node's record for the token.
    fn record(&self) -> MemberConfig {
        let tag = |c: Option<ConfigId>| c.map_or(ConfigTag::default(), |c| c.tag());
        MemberConfig {
            node: self.me,
            active: self.active.tag(),
            staged: tag(self.staged),
            rejected: tag(self.rejected),
        }
    }

    /// Ends this node's offer once the ring switched to it, a member refused it, or it waited
    /// too long.
    fn settle_offer(&mut self, now: Instant, token: &mut Token, out: &mut Vec<Action>) {
        let Some(o) = self.offered else {
            return;
        };
        let tag = o.config.tag();
        let state = &mut token.config;
        let result =
            if token.config_version == o.config.version && state.active_digest == o.config.digest {
                ConfigResult::Active
            } else if state.offer.map(|x| x.config) != Some(o.config) {
                ConfigResult::Outdated(token.config_version)
            } else if o.ask == 0 && self.outranked(state) {
                // A member runs a newer one than this node's own: that one is offered instead.
                state.offer = None;
                self.offered = None;
                return;
            } else if let Some(m) = state.members.iter().find(|m| m.rejected == tag) {
                state.offer = None;
                ConfigResult::Rejected(m.node)
            } else if now >= o.since + OFFER_TIMEOUT {
                state.offer = None;
                let unstaged = token
                    .members
                    .iter()
                    .copied()
                    .filter(|n| {
                        !state
                            .members
                            .iter()
                            .any(|m| m.node == *n && (m.staged == tag || m.active == tag))
                    })
                    .collect();
                ConfigResult::TimedOut(unstaged)
            } else {
                return;
            };
        self.offered = None;
        if o.ask == 0 {
            // Nobody waits for an offer of this node's own newer file; refused, it gives in.
            self.yielding = result != ConfigResult::Active;
        } else {
            done(o.ask, result, out);
        }
    }

    /// Puts the operator's offer on the token, or offers this node's configuration when it is
    /// newer than the ring's.
    fn place_offer(&mut self, now: Instant, token: &mut Token, out: &mut Vec<Action>) {
        let (ask, config) = match self.wanted.take() {
            Some(wanted) => wanted,
            None if !self.yielding
                && self.offered.is_none()
                && self.active.version > token.config_version
                && !self.outranked(&token.config) =>
            {
                (0, self.active)
            }
            None => return,
        };
        let refusal = if token.config.offer.is_some() || self.offered.is_some() {
            Some(ConfigResult::Busy)
        } else if ask != 0
            && config.version <= token.config_version.max(newest_run(&token.config, self.me))
        {
            Some(ConfigResult::Outdated(
                token.config_version.max(newest_run(&token.config, self.me)),
            ))
        } else {
            None
        };
        if let Some(result) = refusal {
            if self.staged == Some(config) && config != self.active {
                self.staged = None;
            }
            if ask != 0 {
                done(ask, result, out);
            }
            return;
        }
        token.config.offer = Some(ConfigOffer {
            config,
            from: self.me,
        });
        self.offered = Some(Offered {
            ask,
            config,
            since: now,
        });
        if let Some(mine) = token.config.members.iter_mut().find(|m| m.node == self.me) {
            *mine = self.record();
        }
    }

    /// Whether another member runs a configuration that wins over this node's own: a newer
    /// one, or another one of the same version on a node of lower id.
    fn outranked(&self, state: &ConfigState) -> bool {
        let mine = self.active.tag();
        state.members.iter().any(|m| {
            m.node != self.me
                && (m.active.version > mine.version
                    || (m.active.version == mine.version && m.active != mine && m.node < self.me))
        })
    }

    fn activate(&mut self, config: ConfigId, out: &mut Vec<Action>) {
        self.active = config;
        if self.staged == Some(config) {
            self.staged = None;
        }
        self.fetching = None;
        self.yielding = false;
        out.push(Action::ActivateConfig(config));
    }

    /// Asks the next source for `config`, unless a fetch of it is still fresh.
    fn fetch(&mut self, now: Instant, config: ConfigId, sources: &[NodeId], out: &mut Vec<Action>) {
        let sources: Vec<NodeId> = sources.iter().copied().filter(|&n| n != self.me).collect();
        let tries = match self.fetching {
            Some(f) if f.config == config && now < f.at + FETCH_RETRY => return,
            Some(f) if f.config == config => f.tries + 1,
            _ => 0,
        };
        let Some(&from) = sources.get(tries % sources.len().max(1)) else {
            return;
        };
        self.fetching = Some(Fetching {
            config,
            at: now,
            tries,
        });
        out.push(Action::FetchConfig { from, config });
    }
}

/// The newest version any other member than `me` reports running.
fn newest_run(state: &ConfigState, me: NodeId) -> u32 {
    state
        .members
        .iter()
        .filter(|m| m.node != me)
        .map(|m| m.active.version)
        .max()
        .unwrap_or(0)
}

fn done(ask: u64, result: ConfigResult, out: &mut Vec<Action>) {
    out.push(Action::ConfigDone { ask, result });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(version: u32, fill: u8) -> ConfigId {
        ConfigId {
            version,
            digest: [fill; 32],
        }
    }

    /// A token of members 0, 1, 2 running `active`.
    fn token(active: ConfigId) -> Token {
        Token {
            config_version: active.version,
            members: vec![NodeId(0), NodeId(1), NodeId(2)],
            config: Box::new(ConfigState {
                active_digest: active.digest,
                ..ConfigState::default()
            }),
            ..Token::default()
        }
    }

    fn nodes(active: ConfigId) -> Vec<ConfigChange> {
        (0..3)
            .map(|i| ConfigChange::new(NodeId(i), active))
            .collect()
    }

    /// Passes the token once round the ring, from node 0, each node following it and then
    /// passing it; returns every node's actions.
    fn round(now: Instant, nodes: &mut [ConfigChange], t: &mut Token) -> Vec<Vec<Action>> {
        nodes
            .iter_mut()
            .enumerate()
            .map(|(i, n)| {
                let mut out = Vec::new();
                t.from = NodeId(((i + 2) % 3) as u8);
                n.follow(now, t, &mut out);
                n.at_pass(now, t, &mut out);
                out
            })
            .collect()
    }

    /// Three nodes running version 1 whose token has been round once since node 0's operator
    /// offered version 2 (command 7); the actions of that round.
    fn offered() -> (Instant, Vec<ConfigChange>, Token, Vec<Vec<Action>>) {
        let now = Instant::now();
        let mut nodes = nodes(id(1, 1));
        let mut t = token(id(1, 1));
        let mut out = Vec::new();
        nodes[0].want(7, id(2, 2), &mut out);
        let acts = round(now, &mut nodes, &mut t);
        (now, nodes, t, acts)
    }

    #[test]
    fn the_ring_switches_only_once_every_member_staged_the_offer() {
        let (now, mut nodes, mut t, acts) = offered();
        let v2 = id(2, 2);
        let mut out = Vec::new();
        assert_eq!(t.config.offer.map(|o| o.config), Some(v2));
        // Nodes 1 and 2 fetch it from node 0; nobody switches yet.
        for i in [1, 2] {
            assert_eq!(
                acts[i],
                vec![Action::FetchConfig {
                    from: NodeId(0),
                    config: v2
                }]
            );
        }
        nodes[1].staged_ok(v2, &t, &mut out);
        let acts = round(now, &mut nodes, &mut t);
        assert_eq!(t.config_version, 1, "node 2 has not staged it");
        assert!(acts
            .iter()
            .flatten()
            .all(|a| !matches!(a, Action::ActivateConfig(_))));
        nodes[2].staged_ok(v2, &t, &mut out);
        assert!(out.is_empty());
        let acts = round(now, &mut nodes, &mut t);
        // Node 0 holds it first and sees node 2's report only next time round: node 2
        // switches the ring as it passes the token.
        assert_eq!(t.active_config(), v2);
        assert!(acts[2].contains(&Action::ActivateConfig(v2)));
        let acts = round(now, &mut nodes, &mut t);
        assert!(acts[0].contains(&Action::ActivateConfig(v2)));
        assert!(acts[0].contains(&Action::ConfigDone {
            ask: 7,
            result: ConfigResult::Active
        }));
        assert!(acts[1].contains(&Action::ActivateConfig(v2)));
        assert!(nodes.iter().all(|n| n.active() == v2));
        assert_eq!(t.config.offer, None);
    }

    #[test]
    fn a_refusal_withdraws_the_offer_and_names_the_member() {
        let (now, mut nodes, mut t, _) = offered();
        let (v1, v2) = (id(1, 1), id(2, 2));
        nodes[1].refused(v2);
        round(now, &mut nodes, &mut t);
        let acts = round(now, &mut nodes, &mut t);
        assert!(acts[0].contains(&Action::ConfigDone {
            ask: 7,
            result: ConfigResult::Rejected(NodeId(1))
        }));
        assert_eq!(t.config.offer, None);
        assert_eq!(t.active_config(), v1);
        assert!(nodes.iter().all(|n| n.active() == v1));
    }

    #[test]
    fn a_second_offer_is_busy_and_an_unstaged_one_times_out() {
        let now = Instant::now();
        let (v1, v2, v2b) = (id(1, 1), id(2, 2), id(2, 3));
        let mut nodes = nodes(v1);
        let mut t = token(v1);
        let mut out = Vec::new();
        nodes[0].want(7, v2, &mut out);
        nodes[1].want(8, v2b, &mut out);
        let acts = round(now, &mut nodes, &mut t);
        assert!(acts[1].contains(&Action::ConfigDone {
            ask: 8,
            result: ConfigResult::Busy
        }));
        let later = now + OFFER_TIMEOUT;
        let acts = round(later, &mut nodes, &mut t);
        assert!(acts[0].contains(&Action::ConfigDone {
            ask: 7,
            result: ConfigResult::TimedOut(vec![NodeId(1), NodeId(2)])
        }));
        assert_eq!(t.config.offer, None);
    }

    #[test]
    fn a_member_behind_the_ring_fetches_its_configuration_and_switches_at_once() {
        let now = Instant::now();
        let (v1, v3) = (id(1, 1), id(3, 3));
        let mut nodes = nodes(v3);
        nodes[2] = ConfigChange::new(NodeId(2), v1);
        let mut t = token(v3);
        let acts = round(now, &mut nodes, &mut t);
        assert_eq!(
            acts[2],
            vec![Action::FetchConfig {
                from: NodeId(1),
                config: v3
            }]
        );
        let mut out = Vec::new();
        nodes[2].staged_ok(v3, &t, &mut out);
        assert_eq!(out, vec![Action::ActivateConfig(v3)]);
        assert_eq!(nodes[2].active(), v3);
    }

    #[test]
    fn a_ring_configuration_no_member_runs_gives_way_to_a_newer_offer() {
        let now = Instant::now();
        let (v1, v2, v3) = (id(1, 1), id(2, 2), id(3, 3));
        // The ring names version 2, which only nodes that left ran; node 1 runs version 3.
        let mut nodes = nodes(v1);
        nodes[1] = ConfigChange::new(NodeId(1), v3);
        let mut t = token(v2);
        let first = round(now, &mut nodes, &mut t);
        let second = round(now, &mut nodes, &mut t);
        let fetch_v3 = Action::FetchConfig {
            from: NodeId(1),
            config: v3,
        };
        assert!(first[2].contains(&fetch_v3) && second[0].contains(&fetch_v3));
        let mut out = Vec::new();
        for n in [0, 2] {
            nodes[n].staged_ok(v3, &t, &mut out);
        }
        // Ready at node 2's pass, which switches the ring; the others follow on the next.
        round(now, &mut nodes, &mut t);
        round(now, &mut nodes, &mut t);
        assert!(nodes.iter().all(|n| n.active() == v3));
    }

    #[test]
    fn a_member_ahead_of_the_ring_offers_what_it_runs() {
        let now = Instant::now();
        let (v1, v2) = (id(1, 1), id(2, 2));
        let mut nodes = nodes(v1);
        nodes[1] = ConfigChange::new(NodeId(1), v2);
        let mut t = token(v1);
        round(now, &mut nodes, &mut t);
        assert_eq!(
            t.config.offer,
            Some(ConfigOffer {
                config: v2,
                from: NodeId(1),
            })
        );
    }
}
