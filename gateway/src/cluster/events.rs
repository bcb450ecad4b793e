//! The ring's vocabulary with its drivers (the daemon's shell and the simulator): the events
//! fed to `token_ring::Node::handle` and the actions it returns, the timers it asks for, and what
//! the transport's outcomes refer to.
use std::{collections::BTreeSet, net::Ipv4Addr, time::Instant};

use super::{
    message::{AdminOp, AdminResult, ConfigId, Load, Message, VipLoad},
    types::NodeId,
};

/// The timers the ring asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Pass the token on.
    Pass,
    /// Check for token loss and removal.
    Loss,
    /// Send joins.
    Join,
}

/// What a message sent was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The token.
    Token,
    /// A 911.
    Probe,
    /// A join.
    Join,
}

impl Sent {
    /// What kind of ring message `msg` is; `None` for what the ring never sends.
    pub fn of(msg: &Message) -> Option<Sent> {
        match msg {
            Message::Token(_) => Some(Sent::Token),
            Message::Probe(_) => Some(Sent::Probe),
            Message::Join(_) => Some(Sent::Join),
            Message::Copies(_) | Message::ConfigFetch(_) | Message::ConfigDoc(_) => None,
        }
    }
}

/// Inputs of the state machine.
#[derive(Clone, Debug)]
pub enum Event {
    /// A message from a node.
    Received {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// The transport's verdict on a message this node sent.
    Outcome {
        /// Where it went.
        to: NodeId,
        /// What it was.
        what: Sent,
        /// Acked (true) or given up on (false).
        delivered: bool,
    },
    /// A timer fired.
    Timer(TimerKind),
    /// An operator command from this node's CLI, answered by `Action::AdminDone` with `id`.
    Admin {
        /// The command's id.
        id: u64,
        /// What to do.
        op: AdminOp,
    },
    /// This node's process did not run for a while (stopped, starved): whatever it holds may
    /// be stale. Fed by the daemon, before anything received meanwhile.
    Stalled,
    /// This node's latest load figures (the `node` field is ignored): carried on the token
    /// from its next pass, so every member sees every member's load.
    LocalLoad(Load),
    /// This node's latest traffic per VIP it owns, carried on the token the same way.
    LocalVipLoads(Vec<VipLoad>),
    /// This node's tables are whole: it holds a full copy of its predecessor's connections
    /// (or has no predecessor), so the ring may give it VIPs. Fed once after start-up.
    TablesWhole,
    /// The node cannot serve (witness unreachable, NIC down, XDP gone).
    LocalFault,
    /// The node can serve again.
    LocalHealthy,
    /// The operator offers a new configuration, which the daemon has staged; answered by
    /// `Action::ConfigDone` with `ask`.
    OfferConfig {
        /// The command's id.
        ask: u64,
        /// Which configuration.
        config: ConfigId,
    },
    /// The daemon fetched and verified a configuration the ring asked for.
    ConfigStaged(ConfigId),
    /// The daemon refused a configuration the ring asked for.
    ConfigRejected(ConfigId),
    /// Another node claims a VIP this node answers for, as a member of a ring of
    /// `rival_ring` members whose lowest id is `rival_low` (from its latest join or token).
    VipConflict {
        /// The VIP.
        vip: Ipv4Addr,
        /// Members of the rival's ring.
        rival_ring: usize,
        /// The lowest node id of the rival's ring.
        rival_low: NodeId,
    },
}

/// Outputs of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message.
    Send {
        /// To whom.
        to: NodeId,
        /// What.
        msg: Message,
    },
    /// Fire `kind` at `at` (replacing an earlier one of the same kind).
    SetTimer {
        /// Which timer.
        kind: TimerKind,
        /// When.
        at: Instant,
    },
    /// The VIPs this node answers for from now on (all of them).
    ApplyVips(BTreeSet<Ipv4Addr>),
    /// Announce these VIPs with gratuitous ARP (newly taken).
    Garp(Vec<Ipv4Addr>),
    /// An operator command finished.
    AdminDone {
        /// The command's id.
        id: u64,
        /// Its outcome.
        result: AdminResult,
    },
    /// Fetch this configuration's document from that node, verify it and stage it; report
    /// with `Event::ConfigStaged` or `Event::ConfigRejected`.
    FetchConfig {
        /// Who to ask.
        from: NodeId,
        /// Which configuration.
        config: ConfigId,
    },
    /// Switch to this staged configuration now.
    ActivateConfig(ConfigId),
    /// An offer of a new configuration ended.
    ConfigDone {
        /// The command's id.
        ask: u64,
        /// How.
        result: ConfigResult,
    },
}

/// How an offer of this node's operator ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigResult {
    /// Every member switched to it.
    Active,
    /// Another offer is on its way in.
    Busy,
    /// The ring runs this version or a newer one already.
    Outdated(u32),
    /// A member refused it.
    Rejected(NodeId),
    /// These members did not stage it in time.
    TimedOut(Vec<NodeId>),
    /// This node is not a member of a ring (starting, removed or faulty).
    NotMember,
}
