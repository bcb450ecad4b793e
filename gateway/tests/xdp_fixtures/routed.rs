//! A client behind the router: translated replies go back to the router's MAC.
use gateway_common::{proto, Path};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let flow = Flow {
        src_mac: ROUTER_MAC,
        src: REMOTE_CLIENT,
        ..to_vip(42000, PORT_TCP)
    };
    vec![
        tcp_fwd("tcp syn from a routed client", flow, SYN, Path::NewConn, 0),
        reply_row(
            "tcp reply to a routed client",
            flow,
            proto::TCP,
            0,
            ACK,
            ROUTER_MAC,
        ),
    ]
}
