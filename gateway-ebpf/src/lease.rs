//! The dead-man switch: the daemon renews a lease in `LEASE`; while it is valid this node
//! answers ARP for its VIPs and opens connections on them. A crashed or hung daemon thus stops
//! claiming VIPs on its own, and the cluster takes them over cleanly, while the connections
//! this node is home of keep flowing.
use crate::maps::LEASE;

/// Whether the daemon's lease is still running.
#[inline(always)]
pub fn valid() -> bool {
    LEASE.get(0).is_some_and(|until| crate::now() < *until)
}
