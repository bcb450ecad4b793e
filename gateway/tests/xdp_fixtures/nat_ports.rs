//! NAT port choice in a two-port block: the second connection from the same client to the
//! same backend must probe past the first one's port; the third finds none free.
use anyhow::ensure;
use gateway_common::{proto, Path, Reason, Settings};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    const PORT: u16 = 30000;
    let first = to_vip(46000, PORT_TCP);
    let second = to_vip(46001, PORT_TCP);
    vec![
        tcp_fwd(
            "nat: first connection in a two-port block",
            first,
            SYN,
            Path::NewConn,
            0,
        )
        .before(|bed| {
            bed.set_settings(Settings {
                nat_port_min: PORT,
                nat_port_max: PORT + 1,
                ..settings()
            })
        })
        .after(check_entries(first, proto::TCP, 0, (PORT, PORT + 1))),
        tcp_fwd(
            "nat: second connection probes to the other port",
            second,
            SYN,
            Path::NewConn,
            0,
        )
        .after(move |bed| {
            check_entries(second, proto::TCP, 0, (PORT, PORT + 1))(bed)?;
            let (a, b) = (
                nat_port(bed, &first, proto::TCP)?,
                nat_port(bed, &second, proto::TCP)?,
            );
            ensure!(a != b, "both connections got NAT port {a}");
            Ok(())
        }),
        drop_row(
            "nat: third connection finds the block exhausted",
            tcp(&to_vip(46002, PORT_TCP), SYN),
            Reason::NatExhausted,
        ),
    ]
}
