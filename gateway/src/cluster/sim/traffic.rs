//! The simulator's connections: clients that open TCP and UDP connections to the VIPs while
//! the faults run and send a packet on each every [`PACKET_INTERVAL`], and a model of each
//! node's XDP program that serves them (docs/architecture.md, "Connection hand-off" and "Node
//! death and NAT block take-over"). The model decides as the program does
//! (`gateway-ebpf/src/main.rs`, `to_vip`), in the same order: an entry of this node's
//! connection table translates the packet, or hands it to the node it names; a packet of no
//! connection here goes to the VIP's owner when this node does not own the VIP, to the VIP's
//! previous holder when it may be one of its connections, and otherwise opens a connection;
//! an own entry of a finished TCP connection not used since this node last took the VIP goes
//! to the previous holder first, and is this node's again when that node sends the packet
//! back. Its table is what the daemon streams to its successor and rewrites
//! on a take-over.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use super::Rng;
use crate::cluster::{
    copies::TableChanges,
    handoff::Holders,
    message::{ConnCopy, ConnId},
    types::NodeId,
};

/// How often every open connection sends a packet.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// Hand-offs a packet survives (each costs it one TTL in the data path).
pub const HOPS: usize = 8;

/// IP protocol numbers.
pub const TCP: u8 = 6;
const UDP: u8 = 17;

/// TCP progress of a connection entry (the data path's `tcp_state`).
const OPEN: u8 = 0;
const CLOSING: u8 = 1;

/// NAT ports each node's block has in the model.
const BLOCK: u16 = 800;

/// A client's packet to a VIP.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    /// Its connection.
    pub id: ConnId,
    /// A TCP SYN, or any datagram.
    pub opening: bool,
    /// A TCP FIN: the client closes.
    pub fin: bool,
}

/// What one node's data path did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Translated, with this NAT port.
    Translated(u16),
    /// Handed to another node.
    HandedTo(NodeId),
    /// Dropped, for this reason.
    Dropped(&'static str),
}

/// Where a client's packet ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Translated by this node with this NAT port.
    Translated {
        /// The node.
        node: usize,
        /// The NAT port.
        nat_port: u16,
    },
    /// Dropped by this node.
    Dropped {
        /// The node.
        node: usize,
        /// Why.
        why: &'static str,
    },
    /// No node the packet could reach took it (no answer to ARP, a node down or cut off).
    Lost,
}

/// One node's XDP program and its maps, as the model keeps them.
#[derive(Debug)]
pub struct DataPath {
    me: NodeId,
    /// The connection table: connections translated here (`home: None`) and forwarding
    /// entries that name the node translating them.
    pub conns: BTreeMap<ConnId, ConnCopy>,
    /// Who holds each VIP's connections, as the daemon last wrote them.
    pub holders: BTreeMap<Ipv4Addr, Holders>,
    /// When this node last took each VIP it owns (`Vip::owned_since_ns`).
    owned_since: BTreeMap<Ipv4Addr, Instant>,
    /// When each entry last carried a packet (`Conn::last_seen_ns`).
    last_seen: BTreeMap<ConnId, Instant>,
}

impl DataPath {
    /// A fresh data path (the host booted) of node `me`.
    pub fn new(me: NodeId) -> Self {
        Self {
            me,
            conns: BTreeMap::new(),
            holders: BTreeMap::new(),
            owned_since: BTreeMap::new(),
            last_seen: BTreeMap::new(),
        }
    }

    /// The table as the daemon's worker reads it (for a copy diff or a take-over): a
    /// forwarding entry names only its home (`conntrack::copies`).
    pub fn table(&self) -> Vec<ConnCopy> {
        self.conns
            .values()
            .map(|c| match c.home {
                None => *c,
                Some(_) => forwarding(c.id, c.home),
            })
            .collect()
    }

    /// Sets the VIPs this node owns, stamping the ones it takes now (`Maps::set_owned`).
    pub fn set_owned(&mut self, now: Instant, owned: &BTreeSet<Ipv4Addr>) {
        self.owned_since.retain(|vip, _| owned.contains(vip));
        for vip in owned {
            self.owned_since.entry(*vip).or_insert(now);
        }
    }

    /// Carries out a take-over's changes at `now`, `holder` serving the dead node's block.
    pub fn apply(&mut self, now: Instant, changes: TableChanges, holder: NodeId) {
        for id in &changes.removed {
            self.conns.remove(id);
            self.last_seen.remove(id);
        }
        for id in &changes.rehomed {
            if let Some(c) = self.conns.get_mut(id) {
                c.home = Some(holder);
            }
        }
        for c in changes.installed {
            self.conns.insert(c.id, c);
            self.last_seen.insert(c.id, now);
        }
    }

    /// What the program does at `now` with `packet`, which came from node `came_from` (or
    /// from the client), on a node that owns its VIP (`owned`) and whose lease is
    /// `lease_valid`.
    pub fn handle(
        &mut self,
        now: Instant,
        packet: &Packet,
        came_from: Option<NodeId>,
        owned: bool,
        lease_valid: bool,
    ) -> Step {
        let id = packet.id;
        let tcp = id.proto == TCP;
        let onward = |node: Option<NodeId>| node.filter(|&n| n != self.me && Some(n) != came_from);
        let holders = self.holders.get(id.vip.ip()).copied().unwrap_or_default();
        let mut existing = self.conns.get(&id).copied();
        let mut reclaimed = false;
        if let Some(home) = existing.and_then(|c| c.home) {
            if let Some(to) = onward(Some(home)) {
                self.last_seen.insert(id, now);
                return Step::HandedTo(to);
            }
            // Sent back to the owner: an entry that kept this node's translation is its own
            // again (`conntrack::reclaim`).
            reclaimed = owned && existing.is_some_and(|c| c.nat_port != 0);
            if !reclaimed {
                existing = None;
            }
        }
        match existing {
            Some(c) if !(packet.opening && tcp && c.state != OPEN) => {
                let stale = self
                    .owned_since
                    .get(id.vip.ip())
                    .zip(self.last_seen.get(&id))
                    .is_some_and(|(since, seen)| seen < since)
                    && tcp
                    && c.state != OPEN;
                let entry = self.conns.get_mut(&id).expect("the entry");
                self.last_seen.insert(id, now);
                if owned && stale && !reclaimed {
                    if let Some(previous) = onward(holders.previous) {
                        entry.home = Some(previous);
                        return Step::HandedTo(previous);
                    }
                }
                entry.home = None;
                if tcp && packet.fin {
                    entry.state = CLOSING;
                }
                return Step::Translated(c.nat_port);
            }
            _ => {}
        }
        let rebuilds_for = holders
            .rebuilds_for
            .filter(|_| holders.previous == Some(self.me));
        if let (true, Some(dead)) = (tcp && !packet.opening, rebuilds_for) {
            // One of the connections the dead node opened after its last copy.
            if !lease_valid {
                return Step::Dropped("lease expired");
            }
            return self.open(now, id, dead);
        }
        if !owned {
            // What the owner offered its previous holder goes back to it (the answer to its
            // offer), and any datagram; other TCP never back where it came from.
            let to = if tcp && holders.previous != Some(self.me) {
                onward(holders.owner)
            } else {
                holders.owner.filter(|&n| n != self.me)
            };
            return to.map_or(Step::Dropped("not owner"), Step::HandedTo);
        }
        let offer = if tcp {
            !packet.opening
        } else {
            holders.previous_live
        };
        if let (true, Some(previous)) = (offer, onward(holders.previous)) {
            self.conns.insert(id, forwarding(id, Some(previous)));
            self.last_seen.insert(id, now);
            return Step::HandedTo(previous);
        }
        if !packet.opening {
            return Step::Dropped("not opening");
        }
        if !lease_valid {
            return Step::Dropped("lease expired");
        }
        self.open(now, id, self.me)
    }

    /// Opens connection `id` with a NAT port of `block`'s node: this node's, or a dead node's
    /// whose connection it rebuilds.
    fn open(&mut self, now: Instant, id: ConnId, block: NodeId) -> Step {
        let Some(nat_port) = self.free_port(&id, block) else {
            return Step::Dropped("NAT exhausted");
        };
        self.last_seen.insert(id, now);
        self.conns.insert(
            id,
            ConnCopy {
                id,
                state: OPEN,
                backend: SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 10), 8080),
                nat_port,
                backend_index: 0,
                service_index: 0,
                home: None,
            },
        );
        Step::Translated(nat_port)
    }

    /// The first port of `block`'s node's block that no connection here uses, probing from
    /// the flow's hash as the data path does (`conntrack::insert`).
    fn free_port(&self, id: &ConnId, block: NodeId) -> Option<u16> {
        let used: BTreeSet<u16> = self.conns.values().map(|c| c.nat_port).collect();
        let start = first_probe(id, block);
        (0..BLOCK)
            .map(|probe| block_first(block) + (start - block_first(block) + probe) % BLOCK)
            .find(|port| !used.contains(port))
    }
}

/// A forwarding entry of connection `id` to `home`, with no translation.
fn forwarding(id: ConnId, home: Option<NodeId>) -> ConnCopy {
    ConnCopy {
        id,
        state: OPEN,
        backend: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        nat_port: 0,
        backend_index: 0,
        service_index: 0,
        home,
    }
}

/// The first port of `node`'s NAT block in the model.
fn block_first(node: NodeId) -> u16 {
    1024 + u16::from(node.0) * BLOCK
}

/// The port of `node`'s block where the probe for connection `id` starts: a hash of the flow,
/// the same on every node.
fn first_probe(id: &ConnId, node: NodeId) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    let bytes = id
        .client
        .ip()
        .octets()
        .into_iter()
        .chain(id.client.port().to_be_bytes());
    let bytes = bytes
        .chain(id.vip.ip().octets())
        .chain(id.vip.port().to_be_bytes())
        .chain([id.proto]);
    for b in bytes {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    block_first(node) + (h % u32::from(BLOCK)) as u16
}

/// One client connection.
#[derive(Debug)]
pub struct Flow {
    /// Its key.
    pub id: ConnId,
    /// Whether a node opened it (its TCP SYN was translated; datagrams always open).
    pub opened: bool,
    /// When the client closes it, if it does.
    pub close_at: Option<Instant>,
    /// Whether the client closed it (sent its FIN): it sends no more.
    pub closed: bool,
    /// What became of its latest packet.
    pub last: Option<Fate>,
}

/// The clients: they open connections while the faults run, close some, and send a packet
/// on every open one each [`PACKET_INTERVAL`]. Their own generator, so the network's and the
/// faults' draws of a seed stay as they are.
pub struct Clients {
    rng: Rng,
    /// Every connection opened, in order.
    pub flows: Vec<Flow>,
    next: Instant,
}

impl Clients {
    /// Clients of the scenario `seed`, first sending at `start`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            rng: Rng::new(seed ^ 0xc11e_4715),
            flows: Vec::new(),
            next: start + PACKET_INTERVAL,
        }
    }

    /// When the clients send next.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// The packets due at `now` (the index of each one's flow with it), opening new
    /// connections to `vips` while `opening` (the faults run).
    pub fn due(&mut self, now: Instant, opening: bool, vips: &[Ipv4Addr]) -> Vec<(usize, Packet)> {
        if now < self.next {
            return Vec::new();
        }
        self.next = now + PACKET_INTERVAL;
        if opening && !vips.is_empty() && self.rng.chance(40) {
            let n = self.flows.len();
            let vip = vips[self.rng.below(vips.len() as u64) as usize];
            let proto = if self.rng.chance(70) { TCP } else { UDP };
            let client = SocketAddrV4::new(
                Ipv4Addr::new(192, 0, 2, 1 + (n % 200) as u8),
                20_000 + n as u16,
            );
            let lives = Duration::from_millis(100 + self.rng.below(2000));
            let close_at = self.rng.chance(10).then_some(now + lives);
            self.flows.push(Flow {
                id: ConnId {
                    client,
                    vip: SocketAddrV4::new(vip, 80),
                    proto,
                },
                opened: false,
                close_at,
                closed: false,
                last: None,
            });
        }
        self.flows
            .iter_mut()
            .enumerate()
            .filter(|(_, f)| !f.closed)
            .map(|(i, f)| {
                let fin = f.opened && f.close_at.is_some_and(|at| at <= now);
                let packet = Packet {
                    id: f.id,
                    opening: f.id.proto == UDP || !f.opened,
                    fin,
                };
                f.closed = fin;
                (i, packet)
            })
            .collect()
    }

    /// Takes note of where flow `i`'s packet ended.
    pub fn delivered(&mut self, i: usize, fate: Fate) {
        let flow = &mut self.flows[i];
        if matches!(fate, Fate::Translated { .. }) {
            flow.opened = true;
        }
        flow.last = Some(fate);
    }
}
