//! Small types shared by every part of the cluster code.

/// A node's identity in the cluster: its index in the configured node map (ring order), 0..64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u8);
