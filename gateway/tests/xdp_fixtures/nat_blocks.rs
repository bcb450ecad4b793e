//! Node death without breaking connections: this node (node 1) took over node 3's NAT block
//! (31000-31999) with the connections it held copies of, and serves the leftovers of node 2's
//! block (30000-30999), whose node is back; and once this node is back from being away, the
//! replies of its own block that it does not know go to node 2, which served it meanwhile. A
//! back-end's SYN on the ports of a leftover that is over belongs to a new connection of the
//! block's node, which could not know the ports were still remembered here.
use anyhow::{ensure, Result};
use aya::maps::{Array, HashMap};
use gateway_common::{
    maps, nat_home, proto, tcp_state, Action, Conn, FlowKey, Path, Reply, Settings,
};

use crate::prelude::*;

/// Settings of this node (node 1) with `block_previous`.
fn cluster_settings(block_previous: u16) -> Settings {
    Settings {
        node: 1,
        block_previous,
        ..settings()
    }
}

/// Points `port` of `NAT_HOMES` at `value`.
fn set_home(bed: &mut Testbed, port: u16, value: u32) -> Result<()> {
    let mut homes: Array<_, u32> = Array::try_from(bed.ebpf.map_mut(maps::NAT_HOMES).unwrap())?;
    homes.set(u32::from(port), value, 0)?;
    Ok(())
}

/// Writes the entries of a connection from `CLIENT:client_port` to `VIP:PORT_TCP` translated
/// to backend 0 with `nat_port`, as a node that takes a connection over does, with TCP `state`
/// in both directions.
fn take_over(bed: &mut Testbed, client_port: u16, nat_port: u16, state: u8) -> Result<()> {
    let client = to_vip(client_port, PORT_TCP);
    let mut conns: HashMap<_, FlowKey, Conn> =
        HashMap::try_from(bed.ebpf.map_mut(maps::CONNS).unwrap())?;
    let conn = Conn {
        backend_addr: be(BACKENDS[0]),
        backend_port: BACKEND_PORT.to_be(),
        nat_port: nat_port.to_be(),
        state,
        ..Conn::default()
    };
    conns.insert(client_key(&client, proto::TCP), conn, 0)?;
    let mut replies: HashMap<_, FlowKey, Reply> =
        HashMap::try_from(bed.ebpf.map_mut(maps::REPLIES).unwrap())?;
    let value = Reply {
        vip: be(VIP),
        vip_port: PORT_TCP.to_be(),
        client_port: client_port.to_be(),
        state,
        ..Reply::default()
    };
    replies.insert(
        reply_key(&client, proto::TCP, BACKENDS[0], nat_port),
        value,
        0,
    )?;
    Ok(())
}

/// Whether the entries of the connection `take_over` wrote for `client_port` are gone.
fn forgotten(bed: &Testbed, client_port: u16, nat_port: u16) -> Result<()> {
    let client = to_vip(client_port, PORT_TCP);
    ensure!(conn(bed, &client, proto::TCP).is_err(), "CONNS entry kept");
    let replies: HashMap<_, FlowKey, Reply> =
        HashMap::try_from(bed.ebpf.map(maps::REPLIES).unwrap())?;
    let key = reply_key(&client, proto::TCP, BACKENDS[0], nat_port);
    ensure!(replies.get(&key, 0).is_err(), "REPLIES entry kept");
    Ok(())
}

pub fn rows() -> Vec<Row> {
    const TAKEN: (u16, u16) = (46200, 31005);
    const LEFTOVER: (u16, u16) = (46201, 30007);
    const CLOSED: (u16, u16) = (46202, 30010);
    const HANDSHAKE: (u16, u16) = (46203, 30011);
    const SYN_ACK: Flags = Flags { ack: true, ..SYN };
    let translate_row = |name: &str, nat_port: u16, client_port: u16| {
        Row::new(
            name,
            Nic::Internal,
            tcp(&backend_reply(nat_port), ACK),
            Action::Redirect,
        )
        .path(Path::Reply)
        .counts(0, None)
        .expect(move |_| {
            Ok(tcp(
                &to_client(&to_vip(client_port, PORT_TCP), CLIENT_MAC),
                ACK,
            ))
        })
    };
    let own = backend_reply(NAT_MIN + 7);
    vec![
        translate_row(
            "a reply of a block this node took over is translated here",
            TAKEN.1,
            TAKEN.0,
        )
        .before(|bed| {
            bed.set_settings(cluster_settings(0))?;
            for port in [TAKEN.1, TAKEN.1 + 1] {
                set_home(bed, port, 1)?;
            }
            set_home(bed, LEFTOVER.1, 2 | nat_home::LEFTOVERS)?;
            take_over(bed, TAKEN.0, TAKEN.1, tcp_state::OPEN)?;
            take_over(bed, LEFTOVER.0, LEFTOVER.1, tcp_state::OPEN)?;
            for port in [CLOSED.1, HANDSHAKE.1] {
                set_home(bed, port, 2 | nat_home::LEFTOVERS)?;
            }
            take_over(bed, CLOSED.0, CLOSED.1, tcp_state::FIN)?;
            take_over(bed, HANDSHAKE.0, HANDSHAKE.1, tcp_state::OPEN)
        }),
        pass_row(
            "a reply of a taken-over block that is no connection here is not translated",
            Nic::Internal,
            tcp(&backend_reply(TAKEN.1 + 1), ACK),
        ),
        translate_row(
            "a reply of a connection taken over from a node that is back is translated here",
            LEFTOVER.1,
            LEFTOVER.0,
        ),
        to_home(
            "a reply of a returned block that is no leftover goes to the block's node",
            backend_reply(LEFTOVER.1 + 1),
        ),
        Row::new(
            "a back-end's SYN on the ports of a leftover that is over answers the block's node's \
             new connection: it goes there, and the leftover is forgotten",
            Nic::Internal,
            tcp(&backend_reply(CLOSED.1), SYN_ACK),
            Action::Redirect,
        )
        .path(Path::ToHome)
        .expect(|_| {
            let flow = backend_reply(CLOSED.1).macs(INT_MAC, HOME_MAC);
            Ok(tcp(&flow, SYN_ACK))
        })
        .after(|bed| forgotten(bed, CLOSED.0, CLOSED.1)),
        Row::new(
            "a back-end's SYN of a leftover still open is its own (its handshake)",
            Nic::Internal,
            tcp(&backend_reply(HANDSHAKE.1), SYN_ACK),
            Action::Redirect,
        )
        .path(Path::Reply)
        .counts(0, None)
        .expect(|_| {
            Ok(tcp(
                &to_client(&to_vip(HANDSHAKE.0, PORT_TCP), CLIENT_MAC),
                SYN_ACK,
            ))
        }),
        Row::new(
            "a reply of this node's block it does not know goes to the node that served the \
             block while it was away",
            Nic::Internal,
            tcp(&own, ACK),
            Action::Redirect,
        )
        .path(Path::ToHome)
        .before(|bed| bed.set_settings(cluster_settings(2)))
        .expect(move |_| {
            Ok(tcp_with(&own.macs(INT_MAC, HOME_MAC), ACK, |ip| {
                ip.time_to_live = 63
            }))
        }),
        pass_row(
            "unless that node sent it",
            Nic::Internal,
            tcp(&own.macs(HOME_MAC, INT_MAC), ACK),
        ),
    ]
}
