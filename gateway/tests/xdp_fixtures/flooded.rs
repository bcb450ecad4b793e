//! Frames addressed to another station's MAC (a switch floods a dead node's frames to every
//! port): left to the kernel unless they are for what this node owns.
use gateway_common::{Path, Reason};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let flooded = |dst| Flow {
        dst,
        ..to_vip(CLIENT_PORT, PORT_TCP).macs(CLIENT_MAC, PEER_MAC)
    };
    vec![
        kernel_row(
            "a frame for another station's mac (flooded by a switch) for a vip another node \
             owns is left to the kernel",
            Nic::External,
            tcp(&flooded(FOREIGN_VIP), SYN),
            Reason::OtherHost,
        ),
        tcp_fwd(
            "the owner acts on a flooded frame for its vip",
            flooded(VIP),
            ACK,
            Path::Established,
            0,
        )
        .before(opened(to_vip(CLIENT_PORT, PORT_TCP))),
        kernel_row(
            "a reply in a frame for another station is left to the kernel",
            Nic::Internal,
            tcp(
                &Flow {
                    dst_mac: HOME_MAC,
                    ..backend_reply(NAT_MIN + 3)
                },
                ACK,
            ),
            Reason::OtherHost,
        ),
    ]
}
