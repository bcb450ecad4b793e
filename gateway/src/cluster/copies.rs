//! Connection copies (docs/architecture.md, "Node death and NAT block take-over"): every node
//! streams its connections to its successor in the ring, and keeps the copies its predecessor
//! streams to it, so that when a node dies the node that held the copies takes its
//! connections over.
//!
//! The stream is a diff of the connection table against what the successor already has, sent
//! every [`COPY_INTERVAL`]: connections opened since (or whose TCP state moved), and those
//! gone. A new successor gets everything, as a new stream that replaces what it held.
//! Connections opened within the last interval before a death are not copied; the node that
//! takes the block over rebuilds them from their next packet (`Holders::rebuilds_for`).
//!
//! The decisions are here, sans-IO: [`CopyPacing`] paces the stream and [`take_over`] works
//! out what a take-over does to a table; the daemon only reads and writes the kernel's tables
//! (`datapath::conntrack`), so the simulator can drive the same code.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashSet};

use crate::cluster::{
    message::{ConnCopy, ConnId, Copies, Message},
    token_ring::{Membership, RingStatus},
    transport::{MessageId, SendError, TransportEvent},
    types::NodeId,
};

/// How often the connection table is compared with what the successor holds.
pub const COPY_INTERVAL: Duration = Duration::from_millis(200);

/// Copies per message: about 13 KB (ten datagrams), which the successor's loop takes in well
/// within a millisecond, between the token's passes.
const PER_MESSAGE: usize = 500;

/// Copy stream messages the transport carries at once: more crowd the sockets and the peer's
/// loop, and the token's datagrams wait behind them.
const IN_FLIGHT: usize = 1;

/// The node `me` streams its copies to: the member after it in the ring; `None` outside a
/// ring or alone in one.
pub fn successor(status: &RingStatus, me: NodeId) -> Option<NodeId> {
    neighbour(status, me, 1)
}

/// The member before `me` in the ring, which streams its copies to it; `None` outside a
/// ring or alone in one.
pub fn predecessor(status: &RingStatus, me: NodeId) -> Option<NodeId> {
    neighbour(status, me, status.members.len().saturating_sub(1))
}

/// The member `steps` places after `me` in ring order, if not `me` itself.
fn neighbour(status: &RingStatus, me: NodeId, steps: usize) -> Option<NodeId> {
    if status.membership != Membership::Member {
        return None;
    }
    let at = status.members.iter().position(|&m| m == me)?;
    Some(status.members[(at + steps) % status.members.len()]).filter(|&n| n != me)
}

/// Whether a node that started has its tables whole, so the ring may give it VIPs
/// (docs/architecture.md, "VIP placement and persistence", readiness): it is a member and holds its predecessor's whole
/// table (or it is alone). Its own connections are in its data path already (kept across a
/// restart, none after a fresh start), and the token brought it the VIPs' previous holders.
/// Once whole it stays so: a later change of predecessor sends it a new table within a
/// comparison, and holding VIPs back meanwhile would only slow a failover down.
#[derive(Debug, Default)]
pub struct Readiness {
    whole: bool,
}

impl Readiness {
    /// Follows the ring's status and the copies held, on every status published; returns
    /// true once, when the tables became whole (then tell the ring: `Event::TablesWhole`).
    pub fn follow(&mut self, status: &RingStatus, me: NodeId, store: &CopyStore) -> bool {
        if self.whole || status.membership != Membership::Member {
            return false;
        }
        self.whole = predecessor(status, me).is_none_or(|p| store.whole_from(p));
        self.whole
    }
}

/// What the owner of the connection table must do for the stream now ([`CopyPacing::due`]).
#[derive(Debug, PartialEq, Eq)]
pub enum CopyStep {
    /// Nothing.
    Wait,
    /// Compare the table with what this successor holds ([`CopyStream::sync`]) and hand the
    /// messages to [`CopyPacing::diffed`].
    Diff(NodeId),
    /// Forget the successor ([`CopyStream::stop`]): there is none, or the stream restarts
    /// (see [`CopyPacing`]), so the next diff sends everything.
    Stop,
}

/// When the table is compared with the successor's copies and how the messages go out: one
/// diff at a time, sent before the next is asked for (a slow one is not queued again behind
/// itself), and [`IN_FLIGHT`] messages with the transport at once (a new successor's whole
/// table is thousands of datagrams, which must not crowd out the token). The stream restarts
/// when a message is lost (the diffs after it assume the successor has it) and whenever the
/// successor changes, even for a moment between two diffs (a successor that left and came
/// back, restarted, holds nothing), and whenever the ring's membership changes (its epoch or
/// its members): the successor may have held this node for gone in another ring, and taken
/// its copies out. A restarted stream, and connections taken over from a dead node
/// ([`CopyPacing::hurry`]), are compared at once rather than at the next interval (or as soon
/// as the diff going out is sent): until the successor has them, a second death in a row
/// loses them.
#[derive(Debug)]
pub struct CopyPacing {
    next: Instant,
    /// A comparison is wanted from then on, before `next`, once nothing is going out.
    hurry: Option<Instant>,
    successor: Option<NodeId>,
    epoch: u64,
    members: Vec<NodeId>,
    diffing: bool,
    restart: bool,
    queue: VecDeque<(NodeId, Copies)>,
    in_flight: BTreeSet<(NodeId, MessageId)>,
}

impl CopyPacing {
    /// Pacing whose first comparison is due at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            next: now,
            hurry: None,
            successor: None,
            epoch: 0,
            members: Vec::new(),
            diffing: false,
            restart: false,
            queue: VecDeque::new(),
            in_flight: BTreeSet::new(),
        }
    }

    /// When [`CopyPacing::due`] has something to do next.
    pub fn next(&self) -> Instant {
        match self.hurry {
            Some(at) if !self.diffing && self.queue.is_empty() => self.next.min(at),
            _ => self.next,
        }
    }

    /// Asks for a comparison from `now` on, before the next interval: the table took in
    /// connections the successor must hold before this node may die too (a take-over).
    pub fn hurry(&mut self, now: Instant) {
        self.hurry = Some(self.hurry.map_or(now, |at| at.min(now)));
    }

    /// Follows this node's (`me`) standing in the ring on every token it sees.
    pub fn follow(&mut self, status: &RingStatus, me: NodeId) {
        let next = successor(status, me);
        if (next, status.epoch) != (self.successor, self.epoch) || status.members != self.members {
            (self.successor, self.epoch) = (next, status.epoch);
            self.members.clone_from(&status.members);
            self.restart();
        }
    }

    /// What to do at `now`.
    pub fn due(&mut self, now: Instant) -> CopyStep {
        if self.restart {
            self.restart = false;
            self.hurry(now);
            return CopyStep::Stop;
        }
        if now < self.next() {
            return CopyStep::Wait;
        }
        self.next = now + COPY_INTERVAL;
        let hurry = self.hurry.take();
        match self.successor {
            None => CopyStep::Stop,
            Some(_) if self.diffing || !self.queue.is_empty() => {
                // Still wanted once the diff going out is sent.
                self.hurry = hurry;
                CopyStep::Wait
            }
            Some(successor) => {
                self.diffing = true;
                CopyStep::Diff(successor)
            }
        }
    }

    /// Takes the messages of the diff asked for; send them with [`CopyPacing::transmit`].
    pub fn diffed(&mut self, successor: NodeId, messages: Vec<Copies>) {
        self.diffing = false;
        self.queue
            .extend(messages.into_iter().map(|m| (successor, m)));
    }

    /// Hands queued messages to the transport through `send`, as many as may be in flight;
    /// returns those it refused, for the log (the stream restarts).
    pub fn transmit(
        &mut self,
        mut send: impl FnMut(NodeId, Vec<u8>) -> Result<MessageId, SendError>,
    ) -> Vec<(NodeId, SendError)> {
        let mut refused = Vec::new();
        while self.in_flight.len() < IN_FLIGHT {
            let Some((to, msg)) = self.queue.pop_front() else {
                break;
            };
            match send(to, Message::Copies(msg).encode()) {
                Ok(id) => {
                    self.in_flight.insert((to, id));
                }
                Err(e) => {
                    self.restart();
                    refused.push((to, e));
                }
            }
        }
        refused
    }

    /// Takes note of the transport's verdict on a message; returns whether it was one of the
    /// stream's (then [`CopyPacing::transmit`] may send the next; after a loss,
    /// [`CopyPacing::due`] says to restart).
    pub fn settle(&mut self, event: &TransportEvent) -> bool {
        let (to, id, delivered) = match *event {
            TransportEvent::Delivered { to, id } => (to, id, true),
            TransportEvent::Unreachable { to, id } => (to, id, false),
            TransportEvent::Received { .. } => return false,
        };
        if !self.in_flight.remove(&(to, id)) {
            return false;
        }
        if !delivered {
            self.restart();
        }
        true
    }

    /// What is queued assumes what went before it arrived: it goes, and the next step
    /// restarts the stream.
    fn restart(&mut self) {
        self.restart = true;
        self.queue.clear();
    }
}

/// The sending side: what this node's successor holds of its connections.
#[derive(Debug, Default)]
pub struct CopyStream {
    successor: Option<NodeId>,
    stream: u32,
    sent: HashMap<ConnId, ConnCopy>,
}

impl CopyStream {
    /// The messages that bring `successor` up to date with `table` (this node's connections
    /// now); nothing when it is. A new successor starts a new stream with everything.
    pub fn sync(&mut self, me: NodeId, successor: NodeId, table: &[ConnCopy]) -> Vec<Copies> {
        let reset = self.successor != Some(successor);
        if reset {
            self.successor = Some(successor);
            self.stream = self.stream.wrapping_add(1);
            self.sent.clear();
        }
        let now: HashMap<ConnId, ConnCopy> = table.iter().map(|c| (c.id, *c)).collect();
        let copies: Vec<ConnCopy> = table
            .iter()
            .filter(|c| self.sent.get(&c.id) != Some(c))
            .copied()
            .collect();
        let gone: Vec<ConnId> = self
            .sent
            .keys()
            .filter(|id| !now.contains_key(id))
            .copied()
            .collect();
        self.sent = now;
        if !reset && copies.is_empty() && gone.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Copies> = Vec::new();
        let mut copies = copies.chunks(PER_MESSAGE);
        let mut gone = gone.chunks(PER_MESSAGE);
        loop {
            let (c, g) = (copies.next(), gone.next());
            if c.is_none() && g.is_none() && !out.is_empty() {
                if let Some(last) = out.last_mut() {
                    last.complete = true;
                }
                return out;
            }
            out.push(Copies {
                from: me,
                reset: reset && out.is_empty(),
                complete: false,
                stream: self.stream,
                copies: c.unwrap_or_default().to_vec(),
                gone: g.unwrap_or_default().to_vec(),
            });
        }
    }

    /// Forgets the successor (this node left the ring, or is alone): the next one gets
    /// everything.
    pub fn stop(&mut self) {
        self.successor = None;
        self.sent.clear();
    }
}

/// The receiving side: the copies each predecessor streamed to this node. Ordered maps: a
/// message's copies cost the same whatever the store holds (a hash map that grows rehashes
/// everything at once, milliseconds at a few hundred thousand copies, in the ring's loop).
#[derive(Debug, Default)]
pub struct CopyStore {
    from: BTreeMap<NodeId, Stream>,
    /// Most copies kept over all nodes; beyond it new copies are not kept.
    limit: usize,
}

/// What one node streamed to this one.
#[derive(Debug, Default)]
struct Stream {
    number: u32,
    /// A comparison came in whole since the stream began ([`Copies::complete`]).
    whole: bool,
    copies: BTreeMap<ConnId, ConnCopy>,
}

impl CopyStore {
    /// A store keeping at most `limit` copies.
    pub fn new(limit: usize) -> Self {
        Self {
            from: BTreeMap::new(),
            limit,
        }
    }

    /// Takes in one message the transport authenticated as `sender`'s; returns whether it was
    /// taken. A message about another node's stream than its sender's is not. A stream's first message (`reset`)
    /// starts it over, whatever its number (the sender may have restarted, numbering from 1);
    /// the rest of a stream that is not the current one is ignored. The sender has one
    /// message in flight at a time ([`CopyPacing`]), so an old stream's message does not
    /// arrive after a newer one.
    pub fn receive(&mut self, sender: NodeId, msg: Copies) -> bool {
        if msg.from != sender {
            return false;
        }
        let held: usize = self.len();
        let entry = self.from.entry(msg.from).or_insert_with(|| Stream {
            number: msg.stream,
            ..Stream::default()
        });
        if msg.reset {
            *entry = Stream {
                number: msg.stream,
                ..Stream::default()
            };
        } else if msg.stream != entry.number {
            return false;
        }
        entry.whole |= msg.complete;
        for id in &msg.gone {
            entry.copies.remove(id);
        }
        let mut room = self.limit.saturating_sub(held);
        for copy in msg.copies {
            if (entry.copies.contains_key(&copy.id) || room > 0)
                && entry.copies.insert(copy.id, copy).is_none()
            {
                room = room.saturating_sub(1);
            }
        }
        true
    }

    /// Whether `node`'s whole table came in (all of it this store has room for), in the
    /// stream it runs now.
    pub fn whole_from(&self, node: NodeId) -> bool {
        self.from.get(&node).is_some_and(|s| s.whole)
    }

    /// Takes every copy of `node`'s connections (it died; this node takes them over). Moves
    /// the node's map out whole, so the ring's loop does no work per copy: whoever writes
    /// them into the tables unpacks them (`HeldCopies::into_vec`).
    pub fn take(&mut self, node: NodeId) -> HeldCopies {
        HeldCopies(
            self.from
                .remove(&node)
                .map(|s| s.copies)
                .unwrap_or_default(),
        )
    }

    /// Copies held, over all nodes.
    pub fn len(&self) -> usize {
        self.from.values().map(|s| s.copies.len()).sum()
    }

    /// Whether no copy is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The copies held of `node`'s connections, in connection order.
    pub fn of(&self, node: NodeId) -> impl Iterator<Item = &ConnCopy> {
        self.from
            .get(&node)
            .into_iter()
            .flat_map(|s| s.copies.values())
    }

    /// Copies held per node, for status.
    pub fn per_node(&self) -> Vec<(NodeId, usize)> {
        self.from
            .iter()
            .map(|(n, s)| (*n, s.copies.len()))
            .collect()
    }
}

/// One node's copies, taken out of the store.
#[derive(Debug, Default)]
pub struct HeldCopies(BTreeMap<ConnId, ConnCopy>);

impl HeldCopies {
    /// How many copies there are.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The copies, in connection order.
    pub fn into_vec(self) -> Vec<ConnCopy> {
        self.0.into_values().collect()
    }
}

/// What a node's connection table must become when `gone` left the ring and `holder` serves its
/// NAT block: the forwarding entries to `gone` point at the holder, and the holder itself (when
/// that is this node, `me`) drops them and installs `gone`'s connections from its copies. A copy
/// of a connection this node translates itself is left out; one it only forwarded somewhere is
/// replaced (the dead node's copy is the newer word on it). So is a copy whose back-end sees
/// it as it sees an open connection this node translates (same client address, NAT port,
/// back-end and protocol): the back-end holds one connection for them, the one this node
/// serves (a leftover of `gone`'s block, which `gone`, back from an absence, opened again);
/// installing the copy would send that connection's replies to the copy's client port (chaos
/// run, seed 4: a kept-alive connection broke at the death of the block's node).
pub fn take_over(
    me: NodeId,
    gone: NodeId,
    holder: NodeId,
    table: &[ConnCopy],
    copies: &[ConnCopy],
) -> TableChanges {
    let stale: Vec<ConnId> = table
        .iter()
        .filter(|c| c.home == Some(gone))
        .map(|c| c.id)
        .collect();
    if holder != me {
        return TableChanges {
            rehomed: stale,
            ..TableChanges::default()
        };
    }
    let translated: HashSet<ConnId> = table
        .iter()
        .filter(|c| c.home.is_none())
        .map(|c| c.id)
        .collect();
    let served: HashSet<ReplyId> = table
        .iter()
        .filter(|c| c.home.is_none() && c.state == 0)
        .map(reply_id)
        .collect();
    TableChanges {
        removed: stale,
        installed: copies
            .iter()
            .filter(|c| c.home != Some(me) && !translated.contains(&c.id))
            .filter(|c| c.home.is_some() || !served.contains(&reply_id(c)))
            .copied()
            .collect(),
        ..TableChanges::default()
    }
}

/// What a copy may name, from this node's configuration: the services (VIP, port and
/// protocol) with their back-ends in the data path's numbering, the node map's size and, when
/// every node's NAT block is listed, those blocks. A take-over installs only copies that name
/// these ([`Catalogue::admit`]): a copy is a peer's word, and one with a key could otherwise
/// have this node translate to any address it likes.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    services: Vec<Offered>,
    nodes: usize,
    blocks: Option<Vec<(u16, u16)>>,
}

/// One configured service, as a copy names it.
#[derive(Debug, Clone)]
pub struct Offered {
    /// Its VIP and port.
    pub vip: std::net::SocketAddrV4,
    /// Its IP protocol number.
    pub proto: u8,
    /// Its back-ends, the first numbered `first_backend` in the data path's tables.
    pub backends: Vec<std::net::SocketAddrV4>,
    /// The data path's number of its first back-end.
    pub first_backend: u16,
}

/// Why a copy was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Its VIP, port and protocol are no service here.
    NoService,
    /// Its back-end is not one of the service's.
    NoBackend,
    /// Its NAT port is in no node's block.
    NatPort,
    /// It forwards to a node the map does not have.
    NoNode,
}

impl Unfit {
    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Unfit::NoService => "no such service",
            Unfit::NoBackend => "not a back-end of its service",
            Unfit::NatPort => "NAT port in no node's block",
            Unfit::NoNode => "forwards to no node of the map",
        }
    }
}

impl Catalogue {
    /// The catalogue of `services`, a node map of `nodes` nodes, and the map's NAT blocks
    /// (`None` when some node's is not listed, so ports cannot be checked).
    pub fn new(services: Vec<Offered>, nodes: usize, blocks: Option<Vec<(u16, u16)>>) -> Self {
        Self {
            services,
            nodes,
            blocks,
        }
    }

    /// `copy` with this node's numbers for its service and back-end (a peer on another
    /// configuration version numbers them otherwise), or why it cannot be installed.
    pub fn fit(&self, copy: &ConnCopy) -> Result<ConnCopy, Unfit> {
        let (index, service) = self
            .services
            .iter()
            .enumerate()
            .find(|(_, s)| s.vip == copy.id.vip && s.proto == copy.id.proto)
            .ok_or(Unfit::NoService)?;
        let mut fitted = ConnCopy {
            service_index: u8::try_from(index).map_err(|_| Unfit::NoService)?,
            ..*copy
        };
        match copy.home {
            Some(home) if usize::from(home.0) >= self.nodes => return Err(Unfit::NoNode),
            Some(_) => return Ok(fitted),
            None => {}
        }
        let backend = service
            .backends
            .iter()
            .position(|b| *b == copy.backend)
            .ok_or(Unfit::NoBackend)?;
        fitted.backend_index = service.first_backend + backend as u16;
        let in_a_block = |blocks: &Vec<(u16, u16)>| {
            blocks
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&copy.nat_port))
        };
        if copy.nat_port == 0 || self.blocks.as_ref().is_some_and(|b| !in_a_block(b)) {
            return Err(Unfit::NatPort);
        }
        Ok(fitted)
    }

    /// The copies that fit, renumbered, and the ones that do not with why.
    pub fn admit(&self, copies: Vec<ConnCopy>) -> (Vec<ConnCopy>, Vec<(ConnCopy, Unfit)>) {
        let mut fit = Vec::with_capacity(copies.len());
        let mut unfit = Vec::new();
        for copy in copies {
            match self.fit(&copy) {
                Ok(fitted) => fit.push(fitted),
                Err(why) => unfit.push((copy, why)),
            }
        }
        (fit, unfit)
    }
}

/// A translated connection as its back-end sees it: client address, NAT port, back-end and
/// protocol (the key of its reply entry).
type ReplyId = (std::net::Ipv4Addr, u16, std::net::SocketAddrV4, u8);

fn reply_id(c: &ConnCopy) -> ReplyId {
    (*c.id.client.ip(), c.nat_port, c.backend, c.id.proto)
}

/// Changes to a connection table ([`take_over`]), in the order they apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableChanges {
    /// Entries to drop.
    pub removed: Vec<ConnId>,
    /// Forwarding entries that now point at the holder (all else about them stays).
    pub rehomed: Vec<ConnId>,
    /// Entries to write as the copies say, as if each had just seen a packet.
    pub installed: Vec<ConnCopy>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    fn copy(port: u16, state: u8) -> ConnCopy {
        ConnCopy {
            id: ConnId {
                client: SocketAddrV4::new([192, 0, 2, 7].into(), port),
                vip: SocketAddrV4::new([10, 0, 0, 100].into(), 80),
                proto: 6,
            },
            state,
            backend: SocketAddrV4::new([10, 1, 0, 11].into(), 8080),
            nat_port: port,
            backend_index: 1,
            service_index: 0,
            home: None,
        }
    }

    #[test]
    fn a_take_over_installs_only_copies_of_configured_services_renumbered() {
        let web = Offered {
            vip: SocketAddrV4::new([10, 0, 0, 100].into(), 80),
            proto: 6,
            backends: vec![
                SocketAddrV4::new([10, 1, 0, 10].into(), 8080),
                SocketAddrV4::new([10, 1, 0, 11].into(), 8080),
            ],
            first_backend: 3,
        };
        let dns = Offered {
            vip: SocketAddrV4::new([10, 0, 0, 101].into(), 53),
            proto: 17,
            backends: vec![],
            first_backend: 5,
        };
        let catalogue = Catalogue::new(vec![dns, web], 3, Some(vec![(1, 100), (200, 300)]));
        let good = copy(7, 0);
        let fitted = catalogue.fit(&good).unwrap();
        assert_eq!((fitted.service_index, fitted.backend_index), (1, 4));
        let udp = ConnCopy {
            id: ConnId {
                proto: 17,
                ..good.id
            },
            ..good
        };
        let elsewhere = ConnCopy {
            backend: SocketAddrV4::new([192, 0, 2, 99].into(), 22),
            ..good
        };
        let outside = ConnCopy {
            nat_port: 150,
            ..good
        };
        let far = ConnCopy {
            home: Some(NodeId(3)),
            ..good
        };
        let forwarding = ConnCopy {
            home: Some(NodeId(2)),
            backend: SocketAddrV4::new([0, 0, 0, 0].into(), 0),
            nat_port: 0,
            ..good
        };
        let (fit, unfit) = catalogue.admit(vec![good, udp, elsewhere, outside, far, forwarding]);
        assert_eq!(fit.len(), 2);
        assert_eq!(fit[1].home, Some(NodeId(2)));
        let why: Vec<Unfit> = unfit.iter().map(|(_, why)| *why).collect();
        assert_eq!(
            why,
            [
                Unfit::NoService,
                Unfit::NoBackend,
                Unfit::NatPort,
                Unfit::NoNode
            ]
        );
        // Blocks not all listed: any port but 0 goes.
        let open = Catalogue {
            blocks: None,
            ..catalogue
        };
        assert!(open.fit(&outside).is_ok());
    }

    #[test]
    fn the_stream_sends_only_what_changed_and_the_store_follows_it() {
        let (me, next) = (NodeId(0), NodeId(1));
        let mut stream = CopyStream::default();
        let mut store = CopyStore::new(100);
        let first = stream.sync(me, next, &[copy(1, 0), copy(2, 0)]);
        assert_eq!(first.len(), 1);
        assert!(first[0].reset && first[0].copies.len() == 2);
        first
            .into_iter()
            .for_each(|m| assert!(store.receive(m.from, m)));
        assert!(stream.sync(me, next, &[copy(1, 0), copy(2, 0)]).is_empty());
        let diff = stream.sync(me, next, &[copy(2, 1), copy(3, 0)]);
        assert_eq!(diff.len(), 1);
        assert!(!diff[0].reset);
        assert_eq!(diff[0].copies, vec![copy(2, 1), copy(3, 0)]);
        assert_eq!(diff[0].gone, vec![copy(1, 0).id]);
        diff.into_iter()
            .for_each(|m| assert!(store.receive(m.from, m)));
        let mut held = store.take(me).into_vec();
        held.sort_by_key(|c| c.id);
        assert_eq!(held, vec![copy(2, 1), copy(3, 0)]);
        assert!(store.is_empty());
    }

    #[test]
    fn a_new_successor_gets_everything_and_an_old_stream_is_ignored() {
        let me = NodeId(2);
        let mut stream = CopyStream::default();
        let mut store = CopyStore::new(100);
        stream.sync(me, NodeId(0), &[copy(1, 0)]);
        let old_diff = stream.sync(me, NodeId(0), &[copy(1, 0), copy(3, 0)]);
        let new = stream.sync(me, NodeId(1), &[copy(1, 0), copy(2, 0)]);
        assert!(new[0].reset && new[0].copies.len() == 2);
        new.into_iter()
            .for_each(|m| assert!(store.receive(m.from, m)));
        old_diff
            .into_iter()
            .for_each(|m| assert!(!store.receive(m.from, m)));
        assert_eq!(store.per_node(), vec![(me, 2)]);
        let forged = stream.sync(me, NodeId(1), &[copy(5, 0)]);
        assert!(
            !store.receive(NodeId(1), forged[0].clone()),
            "not its sender's stream"
        );
        // The sender restarted: its new stream numbers from 1 again, and starts over.
        let mut restarted = CopyStream::default();
        let first = restarted.sync(me, NodeId(1), &[copy(4, 0)]);
        first
            .into_iter()
            .for_each(|m| assert!(store.receive(m.from, m)));
        assert_eq!(store.take(me).into_vec(), [copy(4, 0)]);
    }

    #[test]
    fn pacing_sends_one_message_at_a_time_and_restarts_on_a_loss_or_a_new_ring() {
        use crate::cluster::token_ring::{Node, RingConfig};
        let t0 = Instant::now();
        let (me, next) = (NodeId(0), NodeId(1));
        let config = RingConfig::new(vec![me, next], Vec::new());
        let mut status = Node::new(config, me, t0).0.status();
        (status.membership, status.members) = (Membership::Member, vec![me, next]);
        let mut pacing = CopyPacing::new(t0);
        pacing.follow(&status, me);
        assert_eq!(
            pacing.due(t0),
            CopyStep::Stop,
            "a new ring restarts the stream"
        );
        assert_eq!(pacing.due(t0), CopyStep::Diff(next));
        let table: Vec<ConnCopy> = (0..1200).map(|p| copy(p, 0)).collect();
        let mut stream = CopyStream::default();
        pacing.diffed(next, stream.sync(me, next, &table));
        let mut ids = 0..;
        let mut send = |_, _| Ok(MessageId(ids.next().unwrap()));
        assert!(pacing.transmit(&mut send).is_empty());
        assert_eq!(pacing.in_flight.len(), 1, "one message at a time");
        let later = t0 + COPY_INTERVAL;
        assert_eq!(
            pacing.due(later),
            CopyStep::Wait,
            "the diff is still going out"
        );
        let delivered = TransportEvent::Delivered {
            to: next,
            id: MessageId(0),
        };
        assert!(pacing.settle(&delivered));
        assert!(pacing.transmit(&mut send).is_empty());
        let lost = TransportEvent::Unreachable {
            to: next,
            id: MessageId(1),
        };
        assert!(pacing.settle(&lost));
        assert!(
            pacing.queue.is_empty(),
            "what was queued assumed the lost one"
        );
        assert_eq!(pacing.due(later), CopyStep::Stop);
        assert_eq!(
            pacing.due(later),
            CopyStep::Diff(next),
            "a restarted stream is compared at once"
        );
        pacing.diffed(next, Vec::new());
        status.epoch += 1;
        pacing.follow(&status, me);
        assert_eq!(pacing.due(later), CopyStep::Stop, "the ring changed");
    }

    #[test]
    fn a_take_over_is_copied_on_at_once_or_once_the_diff_going_out_is_sent() {
        let t0 = Instant::now();
        let next = NodeId(1);
        let mut pacing = CopyPacing::new(t0);
        pacing.successor = Some(next);
        assert_eq!(pacing.due(t0), CopyStep::Diff(next));
        pacing.diffed(next, Vec::new());
        let soon = t0 + COPY_INTERVAL / 4;
        assert_eq!(pacing.due(soon), CopyStep::Wait, "not yet due");
        pacing.hurry(soon);
        assert_eq!(pacing.next(), soon);
        assert_eq!(pacing.due(soon), CopyStep::Diff(next), "hurried");
        // Hurried while a diff is going out: due once it is sent.
        let table: Vec<ConnCopy> = (0..1200).map(|p| copy(p, 0)).collect();
        pacing.diffed(next, CopyStream::default().sync(NodeId(0), next, &table));
        let later = soon + COPY_INTERVAL / 4;
        pacing.hurry(later);
        assert!(pacing.next() > later, "the diff is still going out");
        let mut ids = 0..;
        while !pacing.queue.is_empty() {
            assert!(pacing
                .transmit(|_, _| Ok(MessageId(ids.next().unwrap())))
                .is_empty());
            let id = *pacing.in_flight.iter().next().unwrap();
            assert!(pacing.settle(&TransportEvent::Delivered { to: id.0, id: id.1 }));
        }
        assert_eq!(pacing.next(), later);
        assert_eq!(pacing.due(later), CopyStep::Diff(next));
        // With no successor a hurry is spent too (the stream stops).
        pacing.diffed(next, Vec::new());
        pacing.successor = None;
        pacing.hurry(later);
        assert_eq!(pacing.due(later), CopyStep::Stop);
        assert!(pacing.next() > later, "spent");
    }

    #[test]
    fn big_tables_are_split_and_the_store_keeps_its_limit() {
        let table: Vec<ConnCopy> = (0..4500).map(|p| copy(p, 0)).collect();
        let mut stream = CopyStream::default();
        let msgs = stream.sync(NodeId(0), NodeId(1), &table);
        assert_eq!(msgs.len(), 4500usize.div_ceil(PER_MESSAGE));
        assert_eq!(msgs.iter().filter(|m| m.reset).count(), 1);
        let mut store = CopyStore::new(3000);
        msgs.into_iter()
            .for_each(|m| assert!(store.receive(m.from, m)));
        assert_eq!(store.len(), 3000);
    }

    #[test]
    fn a_copy_the_back_end_takes_for_a_connection_this_node_serves_is_not_installed() {
        let (me, gone) = (NodeId(1), NodeId(0));
        // This node serves a leftover of the gone node's block on NAT port 500; the gone node
        // opened another connection of the same client address on that port since.
        let ours = copy(500, 0);
        let mut reopened = copy(501, 0);
        reopened.nat_port = 500;
        let other = copy(502, 0);
        let changes = take_over(me, gone, me, &[ours], &[reopened, other]);
        assert_eq!(changes.installed, vec![other]);
        // Once ours is over, the copy is the live one.
        let changes = take_over(me, gone, me, &[copy(500, 2)], &[reopened]);
        assert_eq!(changes.installed, vec![reopened]);
    }

    #[test]
    fn the_tables_are_whole_once_the_predecessors_first_comparison_came_in_whole() {
        use crate::cluster::token_ring::{Node, RingConfig};
        let (prev, me) = (NodeId(0), NodeId(1));
        let config = RingConfig::new(vec![prev, me], Vec::new());
        let mut status = Node::new(config, me, Instant::now()).0.status();
        let mut readiness = Readiness::default();
        let mut store = CopyStore::new(10_000);
        assert!(!readiness.follow(&status, me, &store), "not a member yet");
        (status.membership, status.members) = (Membership::Member, vec![prev, me]);
        assert_eq!(predecessor(&status, me), Some(prev));
        let table: Vec<ConnCopy> = (0..1200).map(|p| copy(p, 0)).collect();
        let mut msgs = CopyStream::default().sync(prev, me, &table);
        let complete: Vec<bool> = msgs.iter().map(|m| m.complete).collect();
        assert_eq!(complete, vec![false, false, true]);
        let last = msgs.pop().unwrap();
        msgs.into_iter()
            .for_each(|m| assert!(store.receive(m.from, m)));
        assert!(!readiness.follow(&status, me, &store), "one batch to go");
        assert!(store.receive(prev, last));
        assert!(readiness.follow(&status, me, &store));
        assert!(!readiness.follow(&status, me, &store), "said once");
        // Alone, nothing is to come.
        let mut alone = Readiness::default();
        status.members = vec![me];
        assert!(alone.follow(&status, me, &CopyStore::new(10)));
    }
}
