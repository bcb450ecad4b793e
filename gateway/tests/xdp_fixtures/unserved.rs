//! Traffic of no service or connection: left to the kernel when it is not for a VIP, dropped
//! with its reason when it is.
use gateway_common::Reason;

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let host = to_gateway();
    vec![
        pass_row("tcp to the gateway itself", Nic::External, tcp(&host, SYN)),
        pass_row(
            "tcp to a nat port with no entry",
            Nic::Internal,
            tcp(
                &Flow {
                    dst_mac: INT_MAC,
                    dport: NAT_MIN + 1,
                    ..host
                },
                ACK,
            ),
        ),
        drop_row(
            "tcp to a vip on an unserved port",
            tcp(&to_vip(CLIENT_PORT, 443), SYN),
            Reason::NoService,
        ),
        drop_row(
            "udp to a vip on a tcp-only port",
            udp(&to_vip(CLIENT_PORT, PORT_TCP), true),
            Reason::NoService,
        ),
        drop_row(
            "tcp to a foreign vip",
            tcp(
                &Flow {
                    dst: FOREIGN_VIP,
                    ..to_vip(CLIENT_PORT, PORT_TCP)
                },
                SYN,
            ),
            Reason::NotOwner,
        ),
        drop_row(
            "tcp ack with no connection",
            tcp(&to_vip(43000, PORT_TCP), ACK),
            Reason::NotOpening,
        ),
        drop_row(
            "tcp syn to a service with no healthy backend",
            tcp(&to_vip(43001, PORT_NO_BACKEND), SYN),
            Reason::NoBackend,
        ),
    ]
}
