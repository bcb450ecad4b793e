//! NAT port choice in a two-port block: the second connection from the same client to the
//! same backend must probe past the first one's port; the third finds none free; once the
//! back-end has closed the first (its reply entry kept through the back-end's TIME_WAIT, its
//! connection entry swept), the next takes that port rather than be refused.
use anyhow::ensure;
use aya::maps::HashMap;
use gateway_common::{maps, proto, tcp_state, Conn, FlowKey, Path, Reason, Reply, Settings};

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
        tcp_fwd(
            "nat: a port the back-end closed is taken when no other is free",
            to_vip(46003, PORT_TCP),
            SYN,
            Path::NewConn,
            0,
        )
        .before(move |bed| {
            // As the sweep leaves a connection the back-end closed: the connection entry
            // gone, the reply entry kept with the back-end's FIN.
            let nat = nat_port(bed, &first, proto::TCP)?;
            let mut conns: HashMap<_, FlowKey, Conn> =
                HashMap::try_from(bed.ebpf.map_mut(maps::CONNS).unwrap())?;
            conns.remove(&client_key(&first, proto::TCP))?;
            let mut replies: HashMap<_, FlowKey, Reply> =
                HashMap::try_from(bed.ebpf.map_mut(maps::REPLIES).unwrap())?;
            let key = reply_key(&first, proto::TCP, BACKENDS[0], nat);
            let closed = Reply {
                state: tcp_state::FIN,
                ..replies.get(&key, 0)?
            };
            replies.insert(key, closed, 0)?;
            Ok(())
        })
        .after(move |bed| {
            let third = to_vip(46003, PORT_TCP);
            check_entries(third, proto::TCP, 0, (PORT, PORT + 1))(bed)?;
            let (taken, other) = (
                nat_port(bed, &third, proto::TCP)?,
                nat_port(bed, &second, proto::TCP)?,
            );
            ensure!(taken != other, "it took the open connection's port {other}");
            let entry = reply(bed, &third, proto::TCP, BACKENDS[0])?;
            ensure!(
                entry.client_port == 46003u16.to_be() && entry.state == tcp_state::OPEN,
                "the reply entry is not the new connection's: {entry:?}"
            );
            Ok(())
        }),
    ]
}
