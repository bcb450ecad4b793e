//! Connection hand-off: after a VIP moved here from node 2 (`PEER` on the external subnet), a
//! packet of no connection here goes to node 2 untranslated, one TTL less; once the VIP moved
//! on to node 2, this node keeps serving its own connections and sends back what node 2
//! offers it that is no connection of its own.
use anyhow::ensure;
use etherparse::Ipv4Header;
use gateway_common::{proto, vip_flags, Path, Reason};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    const NODE2: u32 = 2;
    let moved_here = |live: bool| {
        let flags = vip_flags::OWNED | if live { vip_flags::PREVIOUS_LIVE } else { 0 };
        move |bed: &mut Testbed| bed.set_vip(flags, 1, NODE2)
    };
    let moved_away = |bed: &mut Testbed| bed.set_vip(0, NODE2, 0);
    let (from_node2, to_node2) = (from_peer, to_peer);
    let ttl = |ttl: u8| move |ip: &mut Ipv4Header| ip.time_to_live = ttl;
    // A datagram as it leaves for node 2: MACs rewritten, one TTL spent.
    let udp_to_node2 = |flow: Flow| udp_with(&to_node2(flow), true, ttl(63));
    let (handed, served) = (handed_row, udp_served);

    let stray = to_vip(46100, PORT_TCP);
    let stray_out = tcp_with(&to_node2(stray), ACK, ttl(63));
    let opened = to_vip(46101, PORT_TCP);
    let datagram = to_vip(46102, PORT_UDP);
    let unoffered = to_vip(46103, PORT_UDP);
    let new_flow = to_vip(46104, PORT_UDP);
    let offered = to_vip(46105, PORT_TCP);
    let syn = to_vip(46106, PORT_TCP);
    vec![
        handed(
            "tcp of no connection goes to the vip's previous holder",
            tcp(&stray, ACK),
            Path::ToPrevious,
            stray_out.clone(),
        )
        .before(moved_here(false)),
        handed(
            "its next packets go there by the forwarding entry it left",
            tcp(&stray, ACK),
            Path::ToPrevious,
            stray_out,
        )
        .before(move |bed| {
            let c = conn(bed, &stray, proto::TCP)?;
            ensure!(c.home == NODE2, "forwarding entry {c:?}");
            bed.set_vip(vip_flags::OWNED, 1, 0)
        }),
        drop_row(
            "tcp of no connection back from the previous holder is dropped",
            tcp(&from_node2(stray), ACK),
            Reason::NotOpening,
        ),
        drop_row(
            "tcp of no connection with no ttl left is not handed on",
            tcp_with(&stray, ACK, ttl(1)),
            Reason::HopLimit,
        ),
        tcp_fwd(
            "tcp syn after a move opens here",
            opened,
            SYN,
            Path::NewConn,
            0,
        ),
        handed(
            "udp of no flow is offered to a live previous holder",
            udp(&datagram, true),
            Path::ToPrevious,
            udp_to_node2(datagram),
        )
        .before(moved_here(true)),
        served(
            "udp the previous holder sends back opens here",
            udp(&from_node2(datagram), true),
            Path::NewConn,
            datagram,
        ),
        served(
            "udp of no flow opens here when the previous holder is not a member",
            udp(&unoffered, true),
            Path::NewConn,
            unoffered,
        )
        .before(moved_here(false)),
        tcp_fwd(
            "a node keeps serving its connections after the vip moved on",
            opened,
            ACK,
            Path::Established,
            0,
        )
        .before(moved_away),
        served(
            "its udp flows too",
            udp(&datagram, true),
            Path::Established,
            datagram,
        ),
        handed(
            "a datagram the owner offers that is no flow here goes back to the owner",
            udp(&from_node2(new_flow), true),
            Path::ToOwner,
            udp_to_node2(new_flow),
        ),
        handed(
            "a datagram from a sender whose arp entry is stale goes to the vip's owner",
            udp(&new_flow, true),
            Path::ToOwner,
            udp_to_node2(new_flow),
        ),
        drop_row(
            "tcp the owner sends that is no connection here is dropped",
            tcp(&from_node2(offered), ACK),
            Reason::NotOwner,
        ),
        handed(
            "unless this node is the previous holder: the owner asked, it goes back",
            tcp(&from_node2(offered), ACK),
            Path::ToOwner,
            tcp_with(&to_node2(offered), ACK, ttl(63)),
        )
        .before(|bed| the_previous_holder(bed, NODE2)),
        handed(
            "so does a syn",
            tcp(&syn, SYN),
            Path::ToOwner,
            tcp_with(&to_node2(syn), SYN, ttl(63)),
        ),
    ]
}
