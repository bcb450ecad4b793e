//! Distributed NAT: a back-end's reply for another node's NAT port reaches this node (it owns
//! the back-ends' gateway VIP) and goes on to that node untouched but for the MACs.
use gateway_common::{Action, Path, Reason};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let home = backend_reply(HOME_PORT);
    vec![
        to_home(
            "tcp reply for another node's nat port goes to that node",
            home,
        ),
        Row::new(
            "udp reply for another node's nat port goes to that node",
            Nic::Internal,
            udp(&home, true),
            Action::Redirect,
        )
        .path(Path::ToHome)
        .expect(move |_| Ok(udp(&home.macs(INT_MAC, HOME_MAC), true))),
        Row::new(
            "reply for a node whose mac is unresolved is dropped, never routed untranslated",
            Nic::Internal,
            tcp(&backend_reply(HOME_UNRESOLVED_PORT), ACK),
            Action::Drop,
        )
        .reason(Reason::HomeUnresolved),
        pass_row(
            "a port of no node's block is not a reply",
            Nic::Internal,
            tcp(&backend_reply(32000), ACK),
        ),
    ]
}
