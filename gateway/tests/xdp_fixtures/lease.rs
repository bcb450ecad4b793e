//! The dead-man switch: once the daemon's lease runs out, established connections still flow,
//! but no new connection opens and no ARP answer claims an owned VIP.
use gateway_common::{Path, Reason};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let flow = to_vip(49000, PORT_TCP);
    vec![
        tcp_fwd(
            "lease: syn opens while the lease runs",
            flow,
            SYN,
            Path::NewConn,
            0,
        ),
        tcp_fwd(
            "lease: established packets flow after it ran out",
            flow,
            ACK,
            Path::Established,
            0,
        )
        .before(|bed| bed.set_lease(1)),
        drop_row(
            "lease: no new connection after it ran out",
            tcp(&to_vip(49001, PORT_TCP), SYN),
            Reason::LeaseExpired,
        ),
        drop_row(
            "lease: no arp answer for an owned vip after it ran out",
            arp_request(VIP),
            Reason::LeaseExpired,
        ),
    ]
}
