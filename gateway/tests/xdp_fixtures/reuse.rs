//! A client reusing the ports of a finished connection after its backend left the Maglev
//! table: the new SYN gets a fresh pick, and the old reply entry is gone.
use anyhow::ensure;
use gateway_common::{proto, tcp_state, Path};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let flow = to_vip(48000, PORT_TCP);
    let fwd =
        |name: &str, flags: Flags, path: Path, backend| tcp_fwd(name, flow, flags, path, backend);
    vec![
        fwd("reuse: syn opens on backend 0", SYN, Path::NewConn, 0),
        fwd("reuse: fin closes it", FIN, Path::Established, 0).after(state_after(
            flow,
            proto::TCP,
            tcp_state::FIN,
        )),
        fwd(
            "reuse: syn after backend 0 left picks afresh",
            SYN,
            Path::NewConn,
            1,
        )
        .before(|bed| bed.set_maglev(0, 1))
        .after(move |bed| {
            check_entries(flow, proto::TCP, 1, (NAT_MIN, NAT_MAX))(bed)?;
            ensure!(
                reply(bed, &flow, proto::TCP, BACKENDS[0]).is_err(),
                "the finished connection's reply entry is still there"
            );
            Ok(())
        }),
    ]
}
