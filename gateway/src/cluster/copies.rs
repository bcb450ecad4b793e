//! Connection copies (docs/architecture.md, "Node death and NAT block take-over"): every node
//! streams its connections to its successor in the ring, and keeps the copies its predecessor
//! streams to it, so that when a node dies the node that held the copies takes its
//! connections over.
//!
//! The stream is a diff of the connection table against what the successor already has, sent
//! every [`COPY_INTERVAL`]: connections opened since (or whose TCP state moved), and those
//! gone. A new successor gets everything, as a new stream that replaces what it held.
//! Connections opened within the last interval before a death are not copied.
use std::{collections::BTreeMap, time::Duration};

use foldhash::HashMap;

use crate::cluster::{
    message::{ConnCopy, ConnId, Copies},
    types::NodeId,
};

/// How often the connection table is compared with what the successor holds.
pub const COPY_INTERVAL: Duration = Duration::from_millis(200);

/// Copies per message: about 13 KB (ten datagrams), which the successor's loop takes in well
/// within a millisecond, between the token's passes.
const PER_MESSAGE: usize = 500;

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
        let mut out = Vec::new();
        let mut copies = copies.chunks(PER_MESSAGE);
        let mut gone = gone.chunks(PER_MESSAGE);
        loop {
            let (c, g) = (copies.next(), gone.next());
            if c.is_none() && g.is_none() && !out.is_empty() {
                return out;
            }
            out.push(Copies {
                from: me,
                reset: reset && out.is_empty(),
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
    from: BTreeMap<NodeId, (u32, BTreeMap<ConnId, ConnCopy>)>,
    /// Most copies kept over all nodes; beyond it new copies are not kept.
    limit: usize,
}

impl CopyStore {
    /// A store keeping at most `limit` copies.
    pub fn new(limit: usize) -> Self {
        Self {
            from: BTreeMap::new(),
            limit,
        }
    }

    /// Takes in one message. Messages of an older stream than the newest seen from the same
    /// node are ignored (delivery order is not guaranteed); returns whether it was taken.
    pub fn receive(&mut self, msg: Copies) -> bool {
        let held: usize = self.len();
        let entry = self
            .from
            .entry(msg.from)
            .or_insert((msg.stream, BTreeMap::new()));
        if msg.stream != entry.0 {
            if !newer(msg.stream, entry.0) {
                return false;
            }
            *entry = (msg.stream, BTreeMap::new());
        } else if msg.reset {
            entry.1.clear();
        }
        for id in &msg.gone {
            entry.1.remove(id);
        }
        let mut room = self.limit.saturating_sub(held);
        for copy in msg.copies {
            if (entry.1.contains_key(&copy.id) || room > 0)
                && entry.1.insert(copy.id, copy).is_none()
            {
                room = room.saturating_sub(1);
            }
        }
        true
    }

    /// Takes every copy of `node`'s connections (it died; this node takes them over). Moves
    /// the node's map out whole, so the ring's loop does no work per copy: whoever writes
    /// them into the tables unpacks them (`HeldCopies::into_vec`).
    pub fn take(&mut self, node: NodeId) -> HeldCopies {
        HeldCopies(
            self.from
                .remove(&node)
                .map(|(_, copies)| copies)
                .unwrap_or_default(),
        )
    }

    /// Copies held, over all nodes.
    pub fn len(&self) -> usize {
        self.from.values().map(|(_, c)| c.len()).sum()
    }

    /// Whether no copy is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies held per node, for status.
    pub fn per_node(&self) -> Vec<(NodeId, usize)> {
        self.from.iter().map(|(n, (_, c))| (*n, c.len())).collect()
    }
}

/// One node's copies, taken out of the store.
#[derive(Debug, Default)]
pub struct HeldCopies(BTreeMap<ConnId, ConnCopy>);

impl HeldCopies {
    /// The copies, in connection order.
    pub fn into_vec(self) -> Vec<ConnCopy> {
        self.0.into_values().collect()
    }
}

/// Whether stream number `a` is newer than `b` (they wrap).
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
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
    fn the_stream_sends_only_what_changed_and_the_store_follows_it() {
        let (me, next) = (NodeId(0), NodeId(1));
        let mut stream = CopyStream::default();
        let mut store = CopyStore::new(100);
        let first = stream.sync(me, next, &[copy(1, 0), copy(2, 0)]);
        assert_eq!(first.len(), 1);
        assert!(first[0].reset && first[0].copies.len() == 2);
        first.into_iter().for_each(|m| assert!(store.receive(m)));
        assert!(stream.sync(me, next, &[copy(1, 0), copy(2, 0)]).is_empty());
        let diff = stream.sync(me, next, &[copy(2, 1), copy(3, 0)]);
        assert_eq!(diff.len(), 1);
        assert!(!diff[0].reset);
        assert_eq!(diff[0].copies, vec![copy(2, 1), copy(3, 0)]);
        assert_eq!(diff[0].gone, vec![copy(1, 0).id]);
        diff.into_iter().for_each(|m| assert!(store.receive(m)));
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
        let old = stream.sync(me, NodeId(0), &[copy(1, 0)]);
        let new = stream.sync(me, NodeId(1), &[copy(1, 0), copy(2, 0)]);
        assert!(new[0].reset && new[0].copies.len() == 2);
        new.into_iter().for_each(|m| assert!(store.receive(m)));
        old.into_iter().for_each(|m| assert!(!store.receive(m)));
        assert_eq!(store.per_node(), vec![(me, 2)]);
    }

    #[test]
    fn big_tables_are_split_and_the_store_keeps_its_limit() {
        let table: Vec<ConnCopy> = (0..4500).map(|p| copy(p, 0)).collect();
        let mut stream = CopyStream::default();
        let msgs = stream.sync(NodeId(0), NodeId(1), &table);
        assert_eq!(msgs.len(), 4500usize.div_ceil(PER_MESSAGE));
        assert_eq!(msgs.iter().filter(|m| m.reset).count(), 1);
        let mut store = CopyStore::new(3000);
        msgs.into_iter().for_each(|m| assert!(store.receive(m)));
        assert_eq!(store.len(), 3000);
    }
}
