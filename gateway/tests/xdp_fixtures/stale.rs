//! Own entries of finished TCP connections from before this node last took the VIP
//! (`Vip::owned_since_ns`): while the VIP was elsewhere (at node 2, `PEER`), the client may
//! have reused their ports for a connection node 2 opened. The first packet of such an entry
//! goes to node 2, the entry keeping its translation; node 2 sends back what it has no
//! connection of, and then the entry is this node's again. An entry used since the VIP was
//! taken, an open TCP connection's and a datagram flow's are translated at once.
use anyhow::ensure;
use etherparse::Ipv4Header;
use gateway_common::{proto, vip_flags, Path};

use crate::prelude::*;

const NODE2: u32 = 2;

pub fn rows() -> Vec<Row> {
    let (from_node2, to_node2, handed) = (from_peer, to_peer, handed_row);
    let ttl = |ttl: u8| move |ip: &mut Ipv4Header| ip.time_to_live = ttl;
    // The VIP moved to node 2 and back, with node 2 a ring member or not.
    let taken_back = |flags: u32| {
        move |bed: &mut Testbed| {
            // The entries opened so far were used a tick before.
            std::thread::sleep(std::time::Duration::from_millis(20));
            bed.set_vip_taken(flags, NODE2, coarse_now())
        }
    };
    let kept = |flow: Flow, l4: u8, home: u32| {
        move |bed: &mut Testbed| {
            let c = conn(bed, &flow, l4)?;
            ensure!(c.home == home, "home {} of {c:?}", c.home);
            ensure!(c.nat_port != 0, "the translation is kept: {c:?}");
            Ok(())
        }
    };
    let reused = to_vip(47100, PORT_TCP);
    let swept = to_vip(47101, PORT_TCP);
    let followed = to_vip(47102, PORT_TCP);
    let fresh = to_vip(47103, PORT_TCP);
    let datagram = to_vip(47104, PORT_UDP);
    let open = to_vip(47106, PORT_TCP);
    let tcp_to_node2 = |flow: Flow| tcp_with(&to_node2(flow), ACK, ttl(63));
    let mut rows = Vec::new();
    for flow in [reused, swept, followed, open] {
        rows.push(tcp_fwd(
            "a connection opened here",
            flow,
            SYN,
            Path::NewConn,
            0,
        ));
    }
    for flow in [reused, swept, followed] {
        rows.push(tcp_fwd(
            "closed by its client",
            flow,
            FIN,
            Path::Established,
            0,
        ));
    }
    rows.extend([
        udp_served(
            "a flow opened here",
            udp(&datagram, true),
            Path::NewConn,
            datagram,
        ),
        handed(
            "tcp of a finished connection unused since the vip came back goes to its previous holder",
            tcp(&reused, ACK),
            Path::ToPrevious,
            tcp_to_node2(reused),
        )
        .before(taken_back(0))
        .after(kept(reused, proto::TCP, NODE2)),
        tcp_fwd(
            "an open connection's is translated here",
            open,
            ACK,
            Path::Established,
            0,
        ),
        handed(
            "its next packets follow it there",
            tcp(&reused, ACK),
            Path::ToPrevious,
            tcp_to_node2(reused),
        ),
        tcp_fwd(
            "sent back, it is translated here as before",
            from_node2(reused),
            ACK,
            Path::Reclaimed,
            0,
        )
        .after(kept(reused, proto::TCP, 0)),
        tcp_fwd("then translated at once", reused, ACK, Path::Established, 0),
        tcp_fwd(
            "one opened since is translated at once",
            fresh,
            SYN,
            Path::NewConn,
            0,
        ),
        tcp_fwd("and its next packets", fresh, ACK, Path::Established, 0),
        handed(
            "another unused one goes to the previous holder",
            tcp(&swept, ACK),
            Path::ToPrevious,
            tcp_to_node2(swept),
        ),
        tcp_fwd(
            "sent back after the sweep took its reply entry, it is translated as before",
            from_node2(swept),
            ACK,
            Path::Reclaimed,
            0,
        )
        .before(move |bed| forget_reply(bed, &swept, proto::TCP))
        .after(move |bed| {
            reply(bed, &swept, proto::TCP, BACKENDS[0])?;
            Ok(())
        }),
        udp_served(
            "a datagram of an own flow unused since is translated here",
            udp(&datagram, true),
            Path::Established,
            datagram,
        )
        .before(taken_back(vip_flags::PREVIOUS_LIVE)),
        handed(
            "an unused one whose previous holder keeps it",
            tcp(&followed, ACK),
            Path::ToPrevious,
            tcp_to_node2(followed),
        ),
        handed(
            "once the vip is there, what it sends of it goes back: this node is not its owner",
            tcp(&from_node2(followed), ACK),
            Path::ToOwner,
            tcp_to_node2(followed),
        )
        .before(|bed| the_previous_holder(bed, NODE2))
        .after(kept(followed, proto::TCP, NODE2)),
    ]);
    rows
}
