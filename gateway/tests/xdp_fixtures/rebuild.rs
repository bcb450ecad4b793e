//! The last connections before a death: this node (node 1) took over the NAT block of a dead
//! node (40000-40999) with the copies it had, but the dead node opened a connection after its
//! last copy. Its next packet rebuilds it here as the dead node opened it: the same back-end
//! (Maglev's pick of the flow) and the same NAT port (the dead node's probe of its block from
//! the flow's hash), so the back-end sees its connection go on. The first row opens the
//! connection as the dead node did, to know what it chose.
use std::{cell::Cell, rc::Rc};

use anyhow::{ensure, Result};
use aya::maps::Array;
use gateway_common::{maps, proto, vip_flags, Action, Path, Reason, Settings};

use crate::prelude::*;

/// The dead node's block.
const DEAD: (u16, u16) = (40000, 40999);

/// This node's settings (node 1, its own block), or the dead node's when it opened the
/// connection.
fn node_settings(block: (u16, u16)) -> Settings {
    Settings {
        node: 1,
        nat_port_min: block.0,
        nat_port_max: block.1,
        ..settings()
    }
}

/// This node after the take-over: its own settings, the dead node's ports homed here (as
/// `write_homes` points a held block at its holder), and `VIP` with the dead node's block to
/// rebuild from, owned here or by node 2 (`flags`).
fn took_over(bed: &mut Testbed, flags: u32, owner: u32) -> Result<()> {
    bed.set_settings(node_settings((NAT_MIN, NAT_MAX)))?;
    let mut homes: Array<_, u32> = Array::try_from(bed.ebpf.map_mut(maps::NAT_HOMES).unwrap())?;
    for port in DEAD.0..=DEAD.1 {
        homes.set(u32::from(port), 1, 0)?;
    }
    bed.set_vip_rebuilding(flags, owner, 1, DEAD)
}

/// Opens `flow` as the dead node did, notes its NAT port in `chosen`, and forgets it (its copy
/// never reached this node).
fn opened_by_the_dead_node(
    flow: Flow,
    chosen: Rc<Cell<u16>>,
) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        bed.set_settings(node_settings(DEAD))?;
        opened(flow)(bed)?;
        chosen.set(nat_port(bed, &flow, proto::TCP)?);
        forget(bed, &flow, proto::TCP)
    }
}

/// Checks that `flow` was rebuilt with the NAT port the dead node chose.
fn same_port(flow: Flow, chosen: Rc<Cell<u16>>) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        check_entries(flow, proto::TCP, 0, DEAD)(bed)?;
        let port = nat_port(bed, &flow, proto::TCP)?;
        ensure!(
            port == chosen.get(),
            "rebuilt with NAT port {port}, the dead node chose {}",
            chosen.get()
        );
        Ok(())
    }
}

pub fn rows() -> Vec<Row> {
    let owned = to_vip(46300, PORT_TCP);
    let handed = to_vip(46301, PORT_TCP).macs(PEER_MAC, EXT_MAC);
    let stray = to_vip(46302, PORT_TCP);
    let limited = to_vip(46303, PORT_TCP);
    let syn = to_vip(46304, PORT_TCP);
    let datagram = to_vip(46305, PORT_UDP);
    let chosen = Rc::new(Cell::new(0));
    let chosen_handed = Rc::new(Cell::new(0));
    vec![
        tcp_fwd(
            "tcp of a connection the dead node opened after its last copy is rebuilt",
            owned,
            ACK,
            Path::Rebuilt,
            0,
        )
        .before({
            let opened = opened_by_the_dead_node(owned, chosen.clone());
            move |bed| {
                opened(bed)?;
                took_over(bed, vip_flags::OWNED, 1)
            }
        })
        .after(same_port(owned, chosen)),
        tcp_fwd(
            "its next packets use the rebuilt connection",
            owned,
            ACK,
            Path::Established,
            0,
        ),
        reply_row(
            "the back-end's reply to the dead node's port reaches the client",
            owned,
            proto::TCP,
            0,
            ACK,
            CLIENT_MAC,
        ),
        tcp_fwd(
            "tcp the vip's owner hands over is rebuilt here too",
            handed,
            ACK,
            Path::Rebuilt,
            0,
        )
        .before({
            let opened = opened_by_the_dead_node(handed, chosen_handed.clone());
            move |bed| {
                opened(bed)?;
                took_over(bed, 0, 2)
            }
        })
        .after(same_port(handed, chosen_handed)),
        tcp_fwd(
            "a syn opens a connection with this node's block",
            syn,
            SYN,
            Path::NewConn,
            0,
        )
        .before(|bed| took_over(bed, vip_flags::OWNED, 1))
        .after(check_entries(syn, proto::TCP, 0, (NAT_MIN, NAT_MAX))),
        Row::new(
            "udp is not rebuilt: a datagram opens with this node's block",
            Nic::External,
            udp(&datagram, true),
            Action::Redirect,
        )
        .path(Path::NewConn)
        .counts(1, Some(1))
        .expect(move |bed| {
            let macs = Some((INT_MAC, BACKEND_MACS[1]));
            Ok(udp(&translated(bed, &datagram, proto::UDP, 1, macs)?, true))
        })
        .after(check_entries(datagram, proto::UDP, 1, (NAT_MIN, NAT_MAX))),
        drop_row(
            "a rebuild counts against the rate limit",
            tcp(&limited, ACK),
            Reason::RateLimited,
        )
        .before(|bed| {
            bed.set_settings(Settings {
                new_conns_per_cpu: 1,
                ..node_settings((NAT_MIN, NAT_MAX))
            })?;
            bed.set_rate_window(1)
        }),
        drop_row(
            "and waits for a valid lease",
            tcp(&limited, ACK),
            Reason::LeaseExpired,
        )
        .before(|bed| {
            bed.set_settings(node_settings((NAT_MIN, NAT_MAX)))?;
            bed.set_lease(0)
        }),
        drop_row(
            "without a dead node's block, tcp of no connection is dropped",
            tcp(&stray, ACK),
            Reason::NotOpening,
        )
        .before(|bed| {
            bed.set_lease(u64::MAX)?;
            bed.set_vip(vip_flags::OWNED, 1, 0)
        }),
    ]
}
