//! The per-CPU limit on new connections: a SYN over it is dropped, one just under it opens.
use gateway_common::{Path, Reason, Settings};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let limited = to_vip(44000, PORT_TCP);
    vec![
        drop_row(
            "tcp syn over the rate limit",
            tcp(&limited, SYN),
            Reason::RateLimited,
        )
        .before(|bed| {
            bed.set_settings(Settings {
                new_conns_per_cpu: 5,
                ..settings()
            })?;
            bed.set_rate_window(5)
        }),
        tcp_fwd(
            "tcp syn just under the rate limit",
            limited,
            SYN,
            Path::NewConn,
            0,
        )
        .before(|bed| bed.set_rate_window(4)),
    ]
}
