//! The cluster protocol's sender filter: datagrams to the cluster port pass only from peers.
use gateway_common::Reason;

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let cluster = |src| Flow {
        src_mac: PEER_MAC,
        src,
        dst: EXT_ADDR,
        sport: CLUSTER_PORT,
        dport: CLUSTER_PORT,
        ..to_vip(0, 0)
    };
    vec![
        pass_row(
            "cluster protocol from a peer",
            Nic::External,
            udp(&cluster(PEER), true),
        ),
        drop_row(
            "cluster protocol from a stranger",
            udp(&cluster(CLIENT), true),
            Reason::NotPeer,
        ),
    ]
}
