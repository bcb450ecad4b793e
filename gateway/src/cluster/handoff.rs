//! Who holds each VIP's connections, as this node tells its data path: the VIP's owner and the
//! node that held it before (docs/architecture.md, "Connection hand-off"). The previous holder
//! keeps serving the connections it opened; the owner's XDP sends it the packets it has no
//! connection entry for.
//!
//! The token's VIP table names each VIP's owner and the owner before the latest move
//! (`VipEntry::previous`, set as the ring moves it), so every member agrees on them, also one
//! that joined after the move. A previous holder that died is replaced by the node that took
//! over its connections (the holder of its NAT block), also on a node that sees the block held
//! only once the dead node is back (it restarted before the token came round). Only the newest
//! move is remembered:
//! connections opened two owners ago are reached only through the forwarding entries the
//! owner in between made for them.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use crate::cluster::{
    copies::COPY_INTERVAL,
    message::BlockHolder,
    types::{NodeId, VipEntry},
};

/// How long after a change of another block's entry held by the same node a rebuild waits:
/// the forwarding entries and connections that change made or moved are in the copies by
/// then (five copy intervals: they go out at the next interval, or at once after a take-over),
/// so a connection of that other block that reaches the holder with no entry there is no
/// longer likely. Before, a rebuild could take a connection another node serves (simulator
/// seed 8417: three blocks moved to one holder at once, one of their nodes alive).
pub const REBUILD_QUIET: Duration = Duration::from_millis(5 * COPY_INTERVAL.as_millis() as u64);

/// Where a VIP's connections are, for the data path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// The VIP's owner in the latest table that named one.
    pub owner: Option<NodeId>,
    /// The node that owned it before the latest move, or the node that took over its
    /// connections when it died.
    pub previous: Option<NodeId>,
    /// Whether the previous holder is a ring member: only then are datagrams of flows the
    /// owner does not know offered to it (it sends back the ones that are not its own; a dead
    /// one could not).
    pub previous_live: bool,
    /// The dead node whose block the previous holder took over, while it is away: the
    /// previous holder rebuilds the connections of the VIP it has no copy of (the ones that
    /// node opened after its last copy) as that node opened them.
    pub rebuilds_for: Option<NodeId>,
}

/// The holders of every VIP, updated from each VIP table this node sees, with the previous
/// owner each table named (a previous holder replaced by its block's holder stays replaced
/// until the VIP moves again, also when the dead node comes back).
#[derive(Debug, Default)]
pub struct HolderTable {
    vips: BTreeMap<Ipv4Addr, (Option<NodeId>, Holders)>,
    /// The NAT blocks away from their nodes in the latest update.
    blocks: Vec<BlockHolder>,
    /// The latest change of each block's entry (appeared, changed or went), as this node saw
    /// it.
    block_changed: BTreeMap<NodeId, BlockChange>,
}

/// A change of a block's entry in the list of blocks away from their nodes.
#[derive(Clone, Copy, Debug)]
struct BlockChange {
    at: Instant,
    /// The holder before, when the change was a new holder of a block whose node is back (its
    /// holder left): what that holder served of the block is among its own copies, so its
    /// death is no doubt about a rebuild of its own connections.
    holder_left: Option<NodeId>,
}

impl HolderTable {
    /// Takes in the latest VIP table, member list and NAT blocks away from their nodes, seen
    /// at `at`; returns the VIPs whose holders changed, which the data path must be told.
    pub fn update(
        &mut self,
        at: Instant,
        table: &[VipEntry],
        members: &[NodeId],
        blocks: &[BlockHolder],
    ) -> Vec<(Ipv4Addr, Holders)> {
        let mut changed = Vec::new();
        let followed_before = !self.vips.is_empty();
        let unchanged = |b: &BlockHolder, list: &[BlockHolder]| {
            list.iter()
                .any(|o| (o.block, o.holder, o.returned) == (b.block, b.holder, b.returned))
        };
        for b in blocks.iter().filter(|b| !unchanged(b, &self.blocks)) {
            let before = self.blocks.iter().find(|o| o.block == b.block);
            let holder_left = before
                .filter(|o| o.returned && b.returned && o.holder != b.holder)
                .map(|o| o.holder);
            let change = BlockChange { at, holder_left };
            self.block_changed.insert(b.block, change);
        }
        for b in &self.blocks {
            if !blocks.iter().any(|n| n.block == b.block) {
                let change = BlockChange {
                    at,
                    holder_left: None,
                };
                self.block_changed.insert(b.block, change);
            }
        }
        let block_changed = &self.block_changed;
        let quiet = |block: NodeId, dead: NodeId| {
            block_changed
                .get(&block)
                .is_none_or(|c| at >= c.at + REBUILD_QUIET || c.holder_left == Some(dead))
        };
        for entry in table {
            if entry.owner.is_none() {
                continue; // an unowned spell changes nothing
            }
            let known = self.vips.get(&entry.address).copied();
            let (named, before) = known.unwrap_or_default();
            let mut now = Holders {
                owner: entry.owner,
                previous: match known {
                    Some(_) if named == entry.previous => before.previous,
                    _ => entry.previous,
                },
                previous_live: false,
                rebuilds_for: None,
            };
            // The previous holder's block is held by another node: while it is away, or as
            // news (it died, and came back before the token brought this node the news; the
            // move of its VIPs came with the death). A table that has seen no owned VIP yet
            // (its node just started) cannot tell a move before the death from one after the
            // return: it takes the named previous holder.
            let taken = |b: &&BlockHolder| {
                Some(b.block) == now.previous
                    && ((!b.returned && !members.contains(&b.block))
                        || (followed_before && b.is_news(&self.blocks)))
            };
            if let Some(b) = blocks.iter().find(taken) {
                now.previous = Some(b.holder);
            }
            now.previous_live = now.previous.is_some_and(|p| members.contains(&p));
            // Only while the holder holds no other block away from its node, nor one whose
            // node is back that changed within `REBUILD_QUIET` (other than by the dead node
            // leaving as its holder): a connection of the VIP might then be of either, and a
            // rebuild with the wrong one would take it from the node that serves it
            // (simulator seed 8417). A block long back is no such doubt: what its holder
            // serves of it has entries there, and what its node opened since was copied
            // wherever it was forwarded from.
            now.rebuilds_for = entry.previous.filter(|&dead| {
                let holder = blocks.iter().find(|b| b.block == dead).map(|b| b.holder);
                blocks.iter().any(|b| {
                    b.block == dead
                        && !b.returned
                        && !members.contains(&dead)
                        && now.previous == Some(b.holder)
                }) && blocks.iter().all(|b| {
                    b.block == dead
                        || Some(b.holder) != holder
                        || (b.returned && quiet(b.block, dead))
                })
            });
            self.vips.insert(entry.address, (entry.previous, now));
            if now != before || known.is_none() {
                changed.push((entry.address, now));
            }
        }
        self.blocks = blocks.to_vec();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::Persistence;

    /// A table of VIPs 10.0.0.100 and on, each with its owner and previous owner.
    fn table(owners: &[(Option<u8>, Option<u8>)]) -> Vec<VipEntry> {
        owners
            .iter()
            .enumerate()
            .map(|(i, (owner, previous))| VipEntry {
                address: Ipv4Addr::new(10, 0, 0, 100 + i as u8),
                owner: owner.map(NodeId),
                previous: previous.map(NodeId),
                preferred: None,
                persistence: Persistence::Free,
                placed: false,
            })
            .collect()
    }

    fn holders(owner: u8, previous: Option<u8>, previous_live: bool) -> Holders {
        Holders {
            owner: Some(NodeId(owner)),
            previous: previous.map(NodeId),
            previous_live,
            rebuilds_for: None,
        }
    }

    #[test]
    fn the_tables_previous_owner_is_the_previous_holder() {
        let all = [NodeId(0), NodeId(1), NodeId(2)];
        let mut t = HolderTable::default();
        let first = t.update(
            Instant::now(),
            &table(&[(Some(0), None), (Some(1), None)]),
            &all,
            &[],
        );
        assert_eq!(first.len(), 2, "every VIP is told once");
        let same = table(&[(Some(0), None), (Some(1), None)]);
        assert!(t.update(Instant::now(), &same, &all, &[]).is_empty());
        let moved = t.update(
            Instant::now(),
            &table(&[(Some(2), Some(0)), (Some(1), None)]),
            &all,
            &[],
        );
        assert_eq!(
            moved,
            vec![(Ipv4Addr::new(10, 0, 0, 100), holders(2, Some(0), true))]
        );
        // A node that joins after a move knows the previous holder from its first table.
        let mut joined = HolderTable::default();
        let first = joined.update(Instant::now(), &table(&[(Some(2), Some(0))]), &all, &[]);
        assert_eq!(first[0].1, holders(2, Some(0), true));
    }

    #[test]
    fn a_previous_holder_that_leaves_the_ring_is_kept_but_not_live() {
        let mut t = HolderTable::default();
        let died = t.update(
            Instant::now(),
            &table(&[(Some(1), Some(0))]),
            &[NodeId(1)],
            &[],
        );
        assert_eq!(died[0].1, holders(1, Some(0), false));
        let rejoined = t.update(
            Instant::now(),
            &table(&[(Some(1), Some(0))]),
            &[NodeId(1), NodeId(0)],
            &[],
        );
        assert_eq!(rejoined[0].1, holders(1, Some(0), true));
    }

    #[test]
    fn a_dead_previous_holder_is_replaced_by_the_node_that_took_its_connections() {
        let mut t = HolderTable::default();
        let all = [NodeId(0), NodeId(1), NodeId(2)];
        t.update(Instant::now(), &table(&[(Some(0), None)]), &all, &[]);
        let blocks = [BlockHolder {
            block: NodeId(0),
            holder: NodeId(2),
            returned: false,
            leftovers: None,
        }];
        let moved = table(&[(Some(1), Some(0))]);
        let died = t.update(Instant::now(), &moved, &[NodeId(1), NodeId(2)], &blocks);
        let rebuilding = Holders {
            rebuilds_for: Some(NodeId(0)),
            ..holders(1, Some(2), true)
        };
        assert_eq!(
            died[0].1, rebuilding,
            "node 2 rebuilds node 0's uncopied connections"
        );
        // Node 0 comes back: node 2 still serves what it took over, and rebuilds no more
        // (node 0 opens connections with its block again).
        let back = [BlockHolder {
            returned: true,
            ..blocks[0]
        }];
        // Were node 2 also holding another block, a connection might be of either: no
        // rebuild.
        let two = [
            blocks[0],
            BlockHolder {
                block: NodeId(3),
                ..blocks[0]
            },
        ];
        let mut both = HolderTable::default();
        both.update(Instant::now(), &table(&[(Some(0), None)]), &all, &[]);
        let died_too = both.update(Instant::now(), &moved, &[NodeId(1), NodeId(2)], &two);
        assert_eq!(died_too[0].1, holders(1, Some(2), true));
        let returned = t.update(Instant::now(), &moved, &all, &back);
        assert_eq!(returned[0].1, holders(1, Some(2), true));
        assert!(t.update(Instant::now(), &moved, &all, &back).is_empty());
        // The VIP moves again: its new previous holder is the one the table names.
        let again = t.update(Instant::now(), &table(&[(Some(0), Some(1))]), &all, &back);
        assert_eq!(again[0].1, holders(0, Some(1), true));
    }

    #[test]
    fn a_block_first_seen_after_its_node_came_back_still_replaces_it() {
        let all = [NodeId(0), NodeId(1), NodeId(2)];
        let mut t = HolderTable::default();
        let moved = table(&[(Some(1), Some(0))]);
        t.update(Instant::now(), &moved, &all, &[]);
        // Node 0 died and restarted before the token brought this node the news.
        let back = [BlockHolder {
            block: NodeId(0),
            holder: NodeId(2),
            returned: true,
            leftovers: None,
        }];
        let news = t.update(Instant::now(), &moved, &all, &back);
        assert_eq!(news[0].1, holders(1, Some(2), true));
        assert!(
            t.update(Instant::now(), &moved, &all, &back).is_empty(),
            "news once"
        );
        // A move back to node 0 and away again names the restarted node: it is not replaced.
        t.update(Instant::now(), &table(&[(Some(0), Some(1))]), &all, &back);
        let again = t.update(Instant::now(), &table(&[(Some(1), Some(0))]), &all, &back);
        assert_eq!(again[0].1, holders(1, Some(0), true));
        // The block's holder dies: node 0 still serves what it opened since its return (node
        // 2's own block says where node 2's connections went).
        let holder_died = [
            BlockHolder {
                holder: NodeId(1),
                ..back[0]
            },
            BlockHolder {
                block: NodeId(2),
                holder: NodeId(1),
                returned: false,
                leftovers: None,
            },
        ];
        let died = t.update(
            Instant::now(),
            &table(&[(Some(1), Some(0))]),
            &[NodeId(0), NodeId(1)],
            &holder_died,
        );
        assert!(died.is_empty(), "{died:?}");
        // Nor on a node that learns of the VIP only now (it just started).
        let mut fresh = HolderTable::default();
        let first = fresh.update(Instant::now(), &table(&[(Some(1), Some(0))]), &all, &back);
        assert_eq!(first[0].1, holders(1, Some(0), true));
    }

    #[test]
    fn a_rebuild_waits_while_another_block_of_its_holder_changed_lately() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let all = [NodeId(0), NodeId(1), NodeId(2), NodeId(3)];
        let alive = [NodeId(1), NodeId(2), NodeId(3)];
        let owned = table(&[(Some(0), None)]);
        let moved = table(&[(Some(1), Some(0))]);
        // Node 3 was away and is back; node 2 still serves what it took of node 3's block.
        let back = BlockHolder {
            block: NodeId(3),
            holder: NodeId(2),
            returned: true,
            leftovers: None,
        };
        let away = BlockHolder {
            returned: false,
            ..back
        };
        // Node 0 dies: node 2 takes its block.
        let dead = BlockHolder {
            block: NodeId(0),
            ..away
        };
        let mut long_back = HolderTable::default();
        long_back.update(t0, &owned, &all, &[back]);
        let died = long_back.update(t0 + REBUILD_QUIET, &moved, &alive, &[dead, back]);
        assert_eq!(
            died[0].1.rebuilds_for,
            Some(NodeId(0)),
            "long back: no doubt"
        );
        // The same death just after node 3 came back: no rebuild until it is quiet.
        let mut just_back = HolderTable::default();
        just_back.update(t0, &owned, &all, &[away]);
        let died = just_back.update(t0 + ms(100), &moved, &alive, &[dead, back]);
        assert_eq!(died[0].1.rebuilds_for, None);
        let quiet = just_back.update(t0 + ms(100) + REBUILD_QUIET, &moved, &alive, &[dead, back]);
        assert_eq!(quiet[0].1.rebuilds_for, Some(NodeId(0)));
        // A block back whose holder was the dead node is no doubt: the dead node's copies have
        // what it served of it.
        let mut held_by_dead = HolderTable::default();
        let back_at_0 = BlockHolder {
            holder: NodeId(0),
            ..back
        };
        held_by_dead.update(t0, &owned, &all, &[back_at_0]);
        let died = held_by_dead.update(t0 + ms(100), &moved, &alive, &[dead, back]);
        assert_eq!(died[0].1.rebuilds_for, Some(NodeId(0)));
    }

    #[test]
    fn an_unowned_spell_changes_nothing() {
        let all = [NodeId(0), NodeId(1)];
        let mut t = HolderTable::default();
        t.update(Instant::now(), &table(&[(Some(0), None)]), &all, &[]);
        assert!(t
            .update(Instant::now(), &table(&[(None, Some(0))]), &all, &[])
            .is_empty());
        let taken = t.update(Instant::now(), &table(&[(Some(1), Some(0))]), &all, &[]);
        assert_eq!(taken[0].1, holders(1, Some(0), true));
    }
}
