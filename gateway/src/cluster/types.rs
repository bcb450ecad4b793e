//! Small types shared by every part of the cluster code.
use std::net::Ipv4Addr;

/// A node's identity in the cluster: its index in the configured node map (ring order), 0..64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u8);

/// Largest number of nodes in a cluster (one byte per node id on the wire, with room to spare);
/// the data path's maps are sized for the same number.
pub const MAX_NODES: usize = gateway_common::MAX_NODES as usize;

/// How strongly a VIP sticks to a node (docs/architecture.md, "VIP placement and persistence").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Persistence {
    /// Free: load balancing may move it.
    Free = 0,
    /// Sticks to its current owner while that node lives.
    Sticky = 1,
    /// Returns to its preferred owner whenever that node is a live member.
    Home = 3,
}

impl Persistence {
    /// The wire and config number (0, 1 or 3).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The persistence with that number, if it is one.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::Free),
            1 => Some(Self::Sticky),
            3 => Some(Self::Home),
            _ => None,
        }
    }
}

/// One row of the VIP table carried on the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipEntry {
    /// The VIP.
    pub address: Ipv4Addr,
    /// The member that answers for it; `None` only while no member is alive to take it.
    pub owner: Option<NodeId>,
    /// The member that answered for it before the latest move: it keeps serving the
    /// connections it opened (docs/architecture.md, "Connection hand-off"). On the token, so a
    /// node that joins, or missed the move, knows it too.
    pub previous: Option<NodeId>,
    /// Where it returns with persistence 3, and where it starts.
    pub preferred: Option<NodeId>,
    /// How it may move.
    pub persistence: Persistence,
    /// An operator moved it where it is: the count balance neither moves nor counts it, until
    /// it fails over or moves for load.
    pub placed: bool,
}

impl VipEntry {
    /// Moves the VIP to `to` (`None`: nobody, for now); the owner it leaves becomes the
    /// previous one, and stays so across a spell without one.
    pub fn hand_to(&mut self, to: Option<NodeId>) {
        if self.owner.is_some() && self.owner != to {
            self.previous = self.owner;
        }
        self.owner = to;
    }
}
