//! Cluster datagrams a test makes as a holder of the cluster's key would (issue 12): a real
//! `Transport` speaking as one node of the testbed, its datagrams sent from that node's own
//! addresses, the only ones the XDP address filter lets through to a cluster port. Its
//! counters start from the unix time in milliseconds, above those of the node it speaks as
//! (which started earlier), so the receiver takes them for that node's newest.
use crate::cluster::{Cluster, CLUSTER_PORT, KEY};
use crate::cluster_topology::{external_addr, internal_addr};
use anyhow::Result;
use gateway::cluster::keys::Keyring;
use gateway::cluster::transport::{Peer, Transport, TransportConfig};
use gateway::cluster::types::NodeId;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

/// The testbed's cluster key ([`KEY`]) as bytes.
pub fn key() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&KEY[2 * i..2 * i + 2], 16).expect("KEY is hex");
    }
    bytes
}

/// Node `i`'s cluster addresses, one per path.
fn node_addrs(i: usize) -> Vec<SocketAddr> {
    [external_addr(i), internal_addr(i)]
        .into_iter()
        .map(|a| SocketAddr::V4(SocketAddrV4::new(a, CLUSTER_PORT)))
        .collect()
}

/// A transport that speaks as node `sender` to node `to`, sealing with `keys`.
pub struct Forger {
    sender: usize,
    /// The transport; queue messages on it with `send`, then [`Forger::flush`].
    pub transport: Transport,
}

impl Forger {
    /// Speaks as `sender` to `to` with `keys`.
    pub fn new(sender: usize, to: usize, keys: Keyring) -> Result<Self> {
        let peers = vec![Peer {
            id: NodeId(to as u8),
            addrs: node_addrs(to),
        }];
        let boot = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let transport = Transport::new(
            NodeId(sender as u8),
            node_addrs(sender),
            peers,
            keys,
            TransportConfig::default(),
            boot,
        )?;
        Ok(Self { sender, transport })
    }

    /// Sends every datagram the transport has queued, from the sender's namespace and
    /// address.
    pub fn flush(&mut self, cluster: &Cluster) -> Result<usize> {
        let mut datagrams = Vec::new();
        while let Some(t) = self.transport.poll_transmit() {
            datagrams.push(t);
        }
        let count = datagrams.len();
        cluster.ns(self.sender).run(move || {
            for t in &datagrams {
                let socket = UdpSocket::bind(SocketAddr::new(t.from.ip(), 0))?;
                socket.send_to(&t.bytes, t.to)?;
            }
            Ok(())
        })?;
        Ok(count)
    }
}
