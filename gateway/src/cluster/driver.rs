//! What a driver of a ring [`Node`](super::token_ring::Node) keeps beside it: the ring's timers, the
//! ring messages waiting for the transport's verdict, the dead-man lease it writes, the rival
//! rings heard of, which name the other side of an ARP conflict, and the NAT blocks it
//! follows away from their nodes. The daemon's shell and the simulator
//! both drive a node with these, so a seed exercises the bookkeeping the daemon runs
//! (`docs/architecture.md`, "The ring's shell").
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::{
    copies::{CopyStore, HeldCopies},
    events::{Event, Sent},
    handoff::Holders,
    message::{BlockHolder, Message},
    transport::{MessageId, SendError, TransportEvent},
    types::NodeId,
};

/// The ring's timers (`Action::SetTimer`): setting a kind again replaces its deadline, as the
/// ring expects. Kinds due at the same instant fire in their order, so every run of a seed
/// fires them alike.
#[derive(Debug)]
pub struct Timers<K> {
    at: BTreeMap<K, Instant>,
}

impl<K: Copy + Ord> Default for Timers<K> {
    fn default() -> Self {
        Self {
            at: BTreeMap::new(),
        }
    }
}

impl<K: Copy + Ord> Timers<K> {
    /// Arms (or re-arms) `kind` for `at`.
    pub fn set(&mut self, kind: K, at: Instant) {
        self.at.insert(kind, at);
    }

    /// Removes and returns the kinds due at `now`, earliest first.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut due: Vec<(Instant, K)> = self
            .at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, at)| (*at, *k))
            .collect();
        due.sort();
        for (_, k) in &due {
            self.at.remove(k);
        }
        due.into_iter().map(|(_, k)| k).collect()
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.values().min().copied()
    }
}

/// The dead-man lease as last written: until when XDP answers ARP and opens connections
/// (`docs/architecture.md`, "Dead-man lease"). It is renewed every tick, for one lease but
/// never past the ring's [`Node::answer_until`](super::token_ring::Node::answer_until), and
/// at once when the written one runs out before the next tick while the ring now allows more.
/// The last case is the first token after a loss: the survivors' leases lapsed while the
/// ring regenerated, and waiting for the tick refused the new ring's first connections for
/// up to a tick (the chaos run's failed new connections right after a death).
#[derive(Debug)]
pub struct Lease {
    length: Duration,
    until: Instant,
}

impl Lease {
    /// A lease of `length`, not yet written (run out at `now`).
    pub fn new(now: Instant, length: Duration) -> Self {
        Self { length, until: now }
    }

    /// How often the lease is renewed (and the shell reads ARP claims): five times per
    /// lease, at least every 50 ms, so a claim is seen well within the split-brain
    /// resolution time.
    pub fn tick(&self) -> Duration {
        (self.length / 5).min(Duration::from_millis(50))
    }

    /// Until when the lease written last runs.
    pub fn until(&self) -> Instant {
        self.until
    }

    /// Renews at a tick: one lease from `now`, never past `cap`. Returns the new end.
    pub fn renew(&mut self, now: Instant, cap: Option<Instant>) -> Instant {
        self.until = self.end(now, cap);
        self.until
    }

    /// Renews between ticks when the written lease runs out before `next_tick` and `cap`
    /// allows it to run longer; returns the new end when it did.
    pub fn renew_early(
        &mut self,
        now: Instant,
        cap: Option<Instant>,
        next_tick: Instant,
    ) -> Option<Instant> {
        let until = self.end(now, cap);
        (self.until < next_tick && until > self.until).then(|| {
            self.until = until;
            until
        })
    }

    fn end(&self, now: Instant, cap: Option<Instant>) -> Instant {
        let full = now + self.length;
        cap.map_or(full, |cap| cap.min(full))
    }
}

/// Ring messages handed to the transport whose delivery the ring waits to hear of
/// (`Event::Outcome`).
#[derive(Debug, Default)]
pub struct Outcomes {
    waiting: BTreeMap<(NodeId, MessageId), Sent>,
}

impl Outcomes {
    /// Hands the ring's `msg` for `to` to the transport through `send` and remembers it. A
    /// message the transport refuses is lost to the ring as one to a dead peer would be: the
    /// error comes back with the outcome the ring must be given now.
    pub fn send(
        &mut self,
        to: NodeId,
        msg: &Message,
        send: impl FnOnce(Vec<u8>) -> Result<MessageId, SendError>,
    ) -> Result<(), Box<(SendError, Event)>> {
        let Some(what) = Sent::of(msg) else {
            return Ok(());
        };
        match send(msg.encode()) {
            Ok(id) => {
                self.waiting.insert((to, id), what);
                Ok(())
            }
            Err(e) => Err(Box::new((
                e,
                Event::Outcome {
                    to,
                    what,
                    delivered: false,
                },
            ))),
        }
    }

    /// The ring's event for the transport's verdict on a message it remembers; `None` for
    /// other events and for messages that are not the ring's.
    pub fn settle(&mut self, event: &TransportEvent) -> Option<Event> {
        let (to, id, delivered) = match *event {
            TransportEvent::Delivered { to, id } => (to, id, true),
            TransportEvent::Unreachable { to, id } => (to, id, false),
            TransportEvent::Received { .. } => return None,
        };
        let what = self.waiting.remove(&(to, id))?;
        Some(Event::Outcome {
            to,
            what,
            delivered,
        })
    }
}

/// How long a rival ring heard of in a join counts: a ring that claims our VIPs and can reach
/// us asks to join every `join_interval`; older news may describe a ring long gone.
pub const RIVAL_FRESH: Duration = Duration::from_millis(500);

/// The best ring heard of in a non-member's join (size, lowest id) and when: the rival in an
/// ARP conflict, since XDP reports only the rival's MAC. Trusted for [`RIVAL_FRESH`].
#[derive(Debug, Default)]
pub struct Rivals {
    best: Option<((usize, NodeId), Instant)>,
}

impl Rivals {
    /// Takes note of the ring a join received at `now` speaks for.
    pub fn hear(&mut self, now: Instant, msg: &Message) {
        let Message::Join(j) = msg else {
            return;
        };
        let (Some(low), true) = (j.ring_low, j.ring_size > 0) else {
            return;
        };
        let heard = (j.ring_size as usize, low);
        let better = |(r, at): ((usize, NodeId), Instant)| {
            now >= at + RIVAL_FRESH
                || (r.0, std::cmp::Reverse(r.1)) < (heard.0, std::cmp::Reverse(heard.1))
        };
        if self.best.is_none_or(better) {
            self.best = Some((heard, now));
        }
    }

    /// The ring's event for another station answering for `vip` at `now`, this node's ring
    /// being `members` of a cluster of `nodes`. Without fresh news of a rival (the two sides
    /// cannot talk, as in a partition of the cluster network alone) the rival is every
    /// configured node outside this ring: so the side with more nodes keeps the VIP, and of two
    /// equal sides the one with the lowest node id, without either hearing from the other.
    pub fn conflict(&self, now: Instant, vip: Ipv4Addr, members: &[NodeId], nodes: usize) -> Event {
        let (rival_ring, rival_low) = match self.best {
            Some((rival, heard)) if now < heard + RIVAL_FRESH => rival,
            _ => {
                let others: Vec<NodeId> = (0..nodes)
                    .map(|i| NodeId(i as u8))
                    .filter(|id| !members.contains(id))
                    .collect();
                let low = others.iter().copied().min().unwrap_or(NodeId(u8::MAX));
                (others.len(), low)
            }
        };
        Event::VipConflict {
            vip,
            rival_ring,
            rival_low,
        }
    }
}

/// The ring's list of NAT blocks away from their nodes, followed: which blocks newly left
/// their node (their connections are taken over from the copies kept), and when the data
/// path's NAT homes may point at the holders and its VIPs rebuild a dead node's connections
/// (once this node's take-overs are all in, so no reply reaches a holder before the
/// connection it belongs to, and no rebuild takes a connection whose copy is on its way in).
#[derive(Debug, Default)]
pub struct Takeovers {
    blocks: Vec<BlockHolder>,
    in_progress: usize,
    /// The VIPs whose holders name a dead node's block to rebuild from, written without it
    /// while a take-over is in progress (see [`Takeovers::gate`]).
    held: BTreeMap<Ipv4Addr, Holders>,
    /// Whether this process has followed a list as a member of a ring with others: until
    /// then a block whose node is back is no news (see [`Takeovers::follow`]).
    in_ring_before: bool,
}

/// A block newly away from its node.
#[derive(Debug)]
pub struct Takeover {
    /// The node that left.
    pub gone: NodeId,
    /// The node that serves its connections now.
    pub holder: NodeId,
    /// The copies of `gone`'s connections this node kept; they are no use unless it is the
    /// holder, and leave the store either way.
    pub copies: HeldCopies,
}

impl Takeovers {
    /// Follows the ring's `blocks` and `members`, as this node `me` saw them on the token: the
    /// blocks newly away from their nodes, each with its copies taken out of `store`; `None`
    /// when the list is the one followed last. A block whose node is back already when this
    /// node first sees it held (the token reached this node only after the node rejoined) is
    /// taken over too: this node's forwarding entries to it must still point at the holder,
    /// which serves its old connections. Not so in the first list this process follows in a
    /// ring with others: a daemon restarted on its pins cannot tell the block's old
    /// connections from those its node opened since it is back, and the forwarding entries it
    /// kept were made by a process that followed the block (pointing them at the holder broke
    /// every connection the returned node served for a VIP this node had: chaos run, seed 2).
    /// Each of those that `me` holds is in progress until
    /// [`Takeovers::finished`]. A node that is a member again (two rings merged, one of which
    /// had removed it, or it rejoined) keeps its copies: they are its live stream, not its
    /// remains.
    pub fn follow(
        &mut self,
        me: NodeId,
        blocks: &[BlockHolder],
        members: &[NodeId],
        store: &mut CopyStore,
    ) -> Option<Vec<Takeover>> {
        let in_ring_before = self.in_ring_before;
        self.in_ring_before |= members.iter().any(|&m| m != me);
        if blocks == self.blocks.as_slice() {
            return None;
        }
        let new: Vec<Takeover> = blocks
            .iter()
            .filter(|b| {
                let followed = |o: &BlockHolder| {
                    (o.block, o.holder, o.returned) == (b.block, b.holder, b.returned)
                };
                (!b.returned && !self.blocks.iter().any(followed))
                    || (in_ring_before && b.is_news(&self.blocks))
            })
            .map(|b| Takeover {
                gone: b.block,
                holder: b.holder,
                copies: if members.contains(&b.block) {
                    HeldCopies::default()
                } else {
                    store.take(b.block)
                },
            })
            .collect();
        self.in_progress += new.iter().filter(|t| t.holder == me).count();
        self.blocks = blocks.to_vec();
        Some(new)
    }

    /// One of this node's take-overs is in. Once none is left, returns the VIP holders
    /// [`Takeovers::gate`] held back, to be written whole now (with the NAT homes).
    pub fn finished(&mut self) -> Option<Vec<(Ipv4Addr, Holders)>> {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.settled()
            .then(|| std::mem::take(&mut self.held).into_iter().collect())
    }

    /// What the data path may be told of the VIP holders that `changed`: while a take-over
    /// of this node is in progress, no VIP rebuilds a dead node's connections yet (its
    /// holders are written without `rebuilds_for`, and whole from [`Takeovers::finished`]).
    /// A packet of a connection whose copy the worker has not installed yet would otherwise
    /// be rebuilt as one the dead node opened after its last copy, on whatever port is free
    /// then, or taken from the node its forwarding entry names; the copy that follows is
    /// then left out for the entry the rebuild made, and the back-end resets the connection
    /// (`cluster_handoff`, once the lease no longer lapsed over a take-over). Until then such
    /// a packet is dropped, and its retransmission finds the copy.
    pub fn gate(&mut self, changed: Vec<(Ipv4Addr, Holders)>) -> Vec<(Ipv4Addr, Holders)> {
        changed
            .into_iter()
            .map(|(vip, holders)| {
                if self.settled() || holders.rebuilds_for.is_none() {
                    self.held.remove(&vip);
                    return (vip, holders);
                }
                self.held.insert(vip, holders);
                let without = Holders {
                    rebuilds_for: None,
                    ..holders
                };
                (vip, without)
            })
            .collect()
    }

    /// Whether no take-over of this node is in progress: the NAT homes may follow the blocks.
    pub fn settled(&self) -> bool {
        self.in_progress == 0
    }

    /// The blocks as last followed.
    pub fn blocks(&self) -> &[BlockHolder] {
        &self.blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::message::{Join, Probe};
    use std::time::Duration;

    #[test]
    fn a_lease_cut_short_by_the_ring_is_renewed_as_soon_as_the_ring_allows_more() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut lease = Lease::new(t0, Duration::from_millis(500));
        // A tick: the ring lets it run 66 ms (the cap), not the whole lease.
        assert_eq!(lease.renew(ms(0), Some(ms(66))), ms(66));
        let next_tick = ms(50);
        // Between ticks, with the written lease outlasting the tick, nothing is written.
        assert_eq!(lease.renew_early(ms(10), Some(ms(76)), next_tick), None);
        // The token was lost: the next tick can only write a lapsed lease...
        assert_eq!(lease.renew(ms(80), Some(ms(66))), ms(66));
        assert!(lease.until() < ms(80));
        let next_tick = ms(130);
        // ...and nothing changes until the ring allows more.
        assert_eq!(lease.renew_early(ms(90), Some(ms(66)), next_tick), None);
        // The new ring's first token: renewed at once, not at the tick 40 ms later.
        assert_eq!(
            lease.renew_early(ms(90), Some(ms(156)), next_tick),
            Some(ms(156))
        );
        assert_eq!(lease.until(), ms(156));
        // Alone (no cap), a tick writes the whole lease.
        assert_eq!(lease.renew(ms(130), None), ms(630));
    }

    #[test]
    fn timers_replace_and_fire_in_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        timers.set('a', ms(30));
        timers.set('b', ms(10));
        timers.set('a', ms(20)); // re-armed earlier
        timers.set('c', ms(50));
        timers.set('d', ms(20)); // same instant as 'a': after it
        assert_eq!(timers.next(), Some(ms(10)));
        assert_eq!(timers.due(ms(5)), []);
        assert_eq!(timers.due(ms(25)), ['b', 'a', 'd']);
        assert_eq!(timers.due(ms(25)), [], "fired timers are gone");
        assert_eq!(timers.next(), Some(ms(50)));
    }

    #[test]
    fn outcomes_reach_the_ring_once_and_a_refusal_at_once() {
        let mut outcomes = Outcomes::default();
        let probe = Message::Probe(Probe {
            origin: NodeId(0),
            permit: true,
            seq: 1,
        });
        let to = NodeId(2);
        outcomes.send(to, &probe, |_| Ok(MessageId(7))).unwrap();
        let delivered = TransportEvent::Delivered {
            to,
            id: MessageId(7),
        };
        assert!(matches!(
            outcomes.settle(&delivered),
            Some(Event::Outcome {
                what: Sent::Probe,
                delivered: true,
                ..
            })
        ));
        assert!(outcomes.settle(&delivered).is_none(), "settled once");
        let join = Message::Join(Join {
            from: NodeId(0),
            ring_size: 0,
            ring_low: None,
            config_version: 1,
        });
        let (_, event) = *outcomes
            .send(to, &join, |_| Err(SendError::UnknownPeer(to)))
            .unwrap_err();
        assert!(matches!(
            event,
            Event::Outcome {
                what: Sent::Join,
                delivered: false,
                ..
            }
        ));
    }

    #[test]
    fn a_conflict_names_the_best_fresh_rival_or_every_node_outside_the_ring() {
        let t0 = Instant::now();
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let join = |size, low| {
            Message::Join(Join {
                from: NodeId(low),
                ring_size: size,
                ring_low: Some(NodeId(low)),
                config_version: 1,
            })
        };
        let rival = |e: Event| match e {
            Event::VipConflict {
                rival_ring,
                rival_low,
                ..
            } => (rival_ring, rival_low.0),
            _ => unreachable!(),
        };
        let mut rivals = Rivals::default();
        let members = [NodeId(0), NodeId(1)];
        assert_eq!(rival(rivals.conflict(t0, vip, &members, 5)), (3, 2));
        rivals.hear(t0, &join(2, 3));
        rivals.hear(t0, &join(1, 4)); // a smaller ring: not the rival
        assert_eq!(rival(rivals.conflict(t0, vip, &members, 5)), (2, 3));
        let stale = t0 + RIVAL_FRESH;
        assert_eq!(rival(rivals.conflict(stale, vip, &members, 5)), (3, 2));
        rivals.hear(stale, &join(1, 4)); // stale news gives way to any news
        assert_eq!(rival(rivals.conflict(stale, vip, &members, 5)), (1, 4));
    }

    #[test]
    fn blocks_newly_away_are_taken_over_once_and_homes_wait_for_this_nodes() {
        let (me, other) = (NodeId(1), NodeId(2));
        let away = |block, holder, returned| BlockHolder {
            block: NodeId(block),
            holder,
            returned,
            leftovers: None,
        };
        let taken = |t: &[Takeover]| t.iter().map(|t| (t.gone.0, t.holder)).collect::<Vec<_>>();
        let mut store = CopyStore::new(10);
        let mut takeovers = Takeovers::default();
        let members = [me, other];
        assert!(takeovers.follow(me, &[], &members, &mut store).is_none());
        let first = takeovers
            .follow(
                me,
                &[away(0, me, false), away(3, other, false)],
                &members,
                &mut store,
            )
            .unwrap();
        assert_eq!(taken(&first), [(0, me), (3, other)]);
        assert!(
            !takeovers.settled(),
            "this node's take-over of 0 is in progress"
        );
        // Node 0 is back: nothing new to take over, and the list is followed.
        let back = [away(0, me, true), away(3, other, false)];
        let members = [me, other, NodeId(0)];
        assert!(takeovers
            .follow(me, &back, &members, &mut store)
            .unwrap()
            .is_empty());
        assert_eq!(takeovers.blocks(), back);
        assert!(takeovers.finished().is_some());
        assert!(takeovers.follow(me, &back, &members, &mut store).is_none());
        // A node that sees a block held only once its node is back still re-points its
        // forwarding entries: the block is taken over (and the node's copies stay).
        let mut late = Takeovers::default();
        assert!(late.follow(NodeId(3), &[], &members, &mut store).is_none());
        let first = late.follow(NodeId(3), &back, &members, &mut store).unwrap();
        assert_eq!(taken(&first), [(0, me), (3, other)]);
        // Not in the first list a process follows in a ring (a daemon restarted on its pins
        // keeps forwarding entries its earlier process made): only blocks still away.
        let mut restarted = Takeovers::default();
        let alone = [NodeId(3)];
        assert!(restarted
            .follow(NodeId(3), &[], &alone, &mut store)
            .is_none());
        let first = restarted
            .follow(NodeId(3), &back, &members, &mut store)
            .unwrap();
        assert_eq!(taken(&first), [(3, other)]);
        // The same holder's block away again is a new take-over; returned again is not.
        let again = [away(0, me, false), away(3, other, false)];
        assert_eq!(
            late.follow(NodeId(3), &again, &members, &mut store)
                .unwrap()
                .len(),
            1
        );
        assert!(late
            .follow(NodeId(3), &back, &members, &mut store)
            .unwrap()
            .is_empty());
        // The holder of the returned block dies: its own block is taken over (with what it
        // served of node 0's), the returned block's new holder is no take-over (node 0's
        // connections since its return stay with it).
        let holder_died = [
            away(0, other, true),
            away(1, other, false),
            away(3, other, false),
        ];
        let died = late
            .follow(NodeId(3), &holder_died, &members, &mut store)
            .unwrap();
        assert_eq!(taken(&died), [(1, other)]);
    }

    #[test]
    fn no_vip_rebuilds_a_dead_nodes_connections_until_this_nodes_take_overs_are_in() {
        let (me, dead) = (NodeId(1), NodeId(0));
        let vip = |n| Ipv4Addr::new(10, 0, 0, n);
        let rebuilding = Holders {
            owner: Some(NodeId(2)),
            previous: Some(me),
            previous_live: true,
            rebuilds_for: Some(dead),
        };
        let plain = Holders {
            owner: Some(me),
            previous: None,
            previous_live: false,
            rebuilds_for: None,
        };
        let without = Holders {
            rebuilds_for: None,
            ..rebuilding
        };
        let mut takeovers = Takeovers::default();
        let mut store = CopyStore::new(10);
        let away = [BlockHolder {
            block: dead,
            holder: me,
            returned: false,
            leftovers: None,
        }];
        // Settled: holders are written as they are.
        assert_eq!(
            takeovers.gate(vec![(vip(100), rebuilding)]),
            [(vip(100), rebuilding)]
        );
        takeovers.follow(me, &away, &[me, NodeId(2)], &mut store);
        // In progress: the rebuild waits, the rest is written.
        assert_eq!(
            takeovers.gate(vec![
                (vip(100), rebuilding),
                (vip(101), plain),
                (vip(102), rebuilding)
            ]),
            [(vip(100), without), (vip(101), plain), (vip(102), without)]
        );
        // A VIP that no longer rebuilds before the take-over is in is not held any more.
        assert_eq!(takeovers.gate(vec![(vip(102), plain)]), [(vip(102), plain)]);
        assert_eq!(takeovers.finished(), Some(vec![(vip(100), rebuilding)]));
        assert_eq!(takeovers.finished(), Some(vec![]), "given once");
    }
}
