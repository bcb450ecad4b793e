//! The gateway's XDP data path (docs/architecture.md, "The path of a packet through XDP").
//! `gateway` reads top to bottom: ARP for VIPs, client packets to VIP services (connection
//! table, Maglev, NAT), back-end replies (reverse NAT), and everything else passed to the
//! kernel untouched.
#![no_std]
#![no_main]

mod arp;
mod bench;
mod conntrack;
mod csum;
mod forward;
mod handoff;
mod hash;
mod lease;
mod maps;
mod nat;
mod parse;
mod stats;

use aya_ebpf::{
    bindings::xdp_action, helpers::generated as gen, macros::xdp, programs::XdpContext,
};
use gateway_common::{
    iface_flags, nat_home, proto, tcp_state, vip_flags, Conn, FlowKey, Path, Reason, Service,
    ServiceKey, Vip,
};

use crate::{
    forward::Route,
    handoff::Handoff,
    maps::{CONNS, IFACES, NAT_HOMES, PEERS, REPLIES, SERVICES, SETTINGS, VIPS},
    nat::L4,
    parse::{
        ptr_at, EthHdr, Ipv4Hdr, TcpHdr, UdpHdr, ETH_LEN, ETH_P_ARP, ETH_P_IP, IPV4_LEN,
        IP_MF_OFFSET, TCP_ACK, TCP_SYN,
    },
};

/// The gateway data path, attached to every cluster NIC.
#[xdp]
pub fn gateway(ctx: XdpContext) -> u32 {
    run(&ctx)
}

/// The data path and its action counter; shared with the benchmark wrappers.
#[inline(always)]
fn run(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let action = datapath(ctx, len);
    stats::action(action, len);
    action
}

/// A trivial pass program: the benchmark baseline, and the program the testbed attaches to
/// the far end of veths so native-mode redirects are received.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Everything `gateway` does but counting its action.
#[inline(always)]
fn datapath(ctx: &XdpContext, len: u64) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return left_to_kernel(Reason::TruncatedEth, len);
    };
    // SAFETY: `eth` is bounds-checked.
    let ethertype = unsafe { (*eth).proto };
    if ethertype == ETH_P_ARP {
        return arp::handle(ctx, eth, len);
    }
    if ethertype != ETH_P_IP {
        return pass_through(len);
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN) else {
        return left_to_kernel(Reason::TruncatedIp, len);
    };
    // SAFETY: `ip` is bounds-checked for a 20-byte header.
    unsafe {
        let ver_ihl = (*ip).ver_ihl;
        let header_len = ((ver_ihl & 0x0f) as usize) * 4;
        let total_len = u16::from_be((*ip).tot_len) as usize;
        let vip = VIPS.get((*ip).daddr);
        if ver_ihl >> 4 != 4
            || header_len < IPV4_LEN
            || total_len < header_len
            || ETH_LEN + total_len > len as usize
        {
            stats::reason(Reason::BadIhl, len);
            // A VIP packet must never reach the kernel's forwarding path.
            return if vip.is_some() {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            };
        }
        match vip {
            Some(vip) => to_vip(ctx, eth, ip, vip, header_len, len),
            None => from_backend(ctx, eth, ip, header_len, len),
        }
    }
}

/// The coarse monotonic clock: a tick's resolution, far cheaper than the precise one, and
/// plenty for idle timeouts, next-hop age, the one-second rate window and the lease.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { gen::bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn pass_through(len: u64) -> u32 {
    stats::path(Path::PassThrough, len);
    xdp_action::XDP_PASS
}

/// Whether this node acts on the frame: it is addressed to the NIC it arrived on, or, with
/// `if_owning`, this node owns a VIP on the NIC's subnet. A switch floods a unicast frame whose
/// port went down (a dead node's) to every port: only a VIP's owner may act on it, or every
/// node would serve it.
#[inline(always)]
fn acts_on(ctx: &XdpContext, eth: *const EthHdr, if_owning: bool) -> bool {
    // SAFETY: the entry is read at once; `eth` is a bounds-checked packet pointer.
    unsafe {
        match IFACES.get(ctx.ingress_ifindex() as u32) {
            Some(iface) => {
                (*eth).dst == iface.mac || (if_owning && iface.flags & iface_flags::OWNS_VIP != 0)
            }
            None => true,
        }
    }
}

/// Hands the packet to the kernel untouched, counting why.
#[inline(always)]
fn left_to_kernel(reason: Reason, len: u64) -> u32 {
    stats::reason(reason, len);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(reason: Reason, len: u64) -> u32 {
    stats::reason(reason, len);
    xdp_action::XDP_DROP
}

/// The transport header of an IPv4 packet without options: its L4 view and TCP flags.
#[inline(always)]
fn transport(ctx: &XdpContext, l4_proto: u8) -> Option<(L4, u8)> {
    const AT: usize = ETH_LEN + IPV4_LEN;
    if l4_proto == proto::TCP {
        let tcp = ptr_at::<TcpHdr>(ctx, AT)?;
        // SAFETY: bounds-checked.
        let (flags, check) = unsafe { ((*tcp).flags, core::ptr::addr_of_mut!((*tcp).check)) };
        Some((
            L4 {
                ports: tcp.cast(),
                check,
                udp: false,
            },
            flags,
        ))
    } else {
        let udp = ptr_at::<UdpHdr>(ctx, AT)?;
        // SAFETY: bounds-checked.
        let check = unsafe { core::ptr::addr_of_mut!((*udp).check) };
        Some((
            L4 {
                ports: udp.cast(),
                check,
                udp: true,
            },
            0,
        ))
    }
}

/// The 5-tuple of an IPv4 packet whose L4 header is `l4`, as the connection tables key it.
#[inline(always)]
unsafe fn flow_key(ip: *const Ipv4Hdr, l4: &L4) -> FlowKey {
    let [src_port, dst_port] = *l4.ports;
    FlowKey {
        src_addr: (*ip).saddr,
        dst_addr: (*ip).daddr,
        src_port,
        dst_port,
        proto: (*ip).proto,
        _pad: [0; 3],
    }
}

/// A client's packet to a VIP.
#[inline(always)]
unsafe fn to_vip(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    vip: &Vip,
    header_len: usize,
    len: u64,
) -> u32 {
    if vip.flags & vip_flags::OWNED == 0 && !acts_on(ctx, eth, false) {
        return left_to_kernel(Reason::OtherHost, len);
    }
    if (*ip).frag_off & IP_MF_OFFSET.to_be() != 0 {
        return drop(Reason::Fragment, len);
    }
    if header_len != IPV4_LEN {
        return drop(Reason::IpOptions, len);
    }
    let l4_proto = (*ip).proto;
    if l4_proto != proto::TCP && l4_proto != proto::UDP {
        return drop(Reason::UnsupportedProto, len);
    }
    let Some((l4, tcp_flags)) = transport(ctx, l4_proto) else {
        return drop(Reason::TruncatedL4, len);
    };
    let key = flow_key(ip, &l4);
    let now = now();
    let opening = l4_proto == proto::UDP || tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let handoff = |node| Handoff {
        ctx,
        eth,
        ip,
        node,
        now,
        len,
    };
    let owned = vip.flags & vip_flags::OWNED != 0;
    let mut existing = CONNS.get_ptr_mut(key);
    let mut reclaimed = false;
    if let Some(conn) = existing {
        if (*conn).home != 0 {
            // Another node translates this connection: hand the packet to it, unless it came
            // from there (a datagram that node does not know: handled as one of no flow).
            let home = handoff((*conn).home);
            if let Some(hop) = home.onward() {
                (*conn).last_seen_ns = now;
                return home.send(hop, Path::ToPrevious);
            }
            // Sent back to the owner: no connection of that node's. An entry that kept this
            // node's translation when it offered the packet there is this node's again.
            reclaimed = owned && conntrack::reclaim(&key, conn, now);
            if !reclaimed {
                existing = None;
            }
        }
    }
    let (conn, path) = match existing {
        // A SYN reusing the ports of a finished (FIN/RST) connection opens a new one: a fresh
        // Maglev pick (the old backend may be down or drained) and a fresh NAT port. A node
        // serves the connections it opened whether or not it still owns their VIP.
        Some(conn) if !(opening && l4_proto == proto::TCP && (*conn).state != tcp_state::OPEN) => {
            // A finished connection's, unused since this node last took the VIP: while the VIP
            // was elsewhere the client may have reused its ports for a connection the previous
            // holder opened. Offered there first, the entry keeping its translation for the
            // packet that comes back. An open connection's is not: it lived on through the
            // other node's forwarding entries, and a previous holder standing in for a dead
            // node would rebuild it.
            let finished = l4_proto == proto::TCP && (*conn).state != tcp_state::OPEN;
            if owned && finished && (*conn).last_seen_ns < vip.owned_since_ns && vip.previous != 0 {
                let previous = handoff(vip.previous);
                if let Some(hop) = previous.onward() {
                    (*conn).home = vip.previous;
                    (*conn).last_seen_ns = now;
                    return previous.send(hop, Path::ToPrevious);
                }
            }
            let path = if reclaimed {
                Path::Reclaimed
            } else {
                Path::Established
            };
            (conn, path)
        }
        // A TCP packet that opens nothing, on a VIP whose dead previous holder's block this
        // node took over: one of the connections that node opened after its last copy.
        _ if !opening && l4_proto == proto::TCP && vip.rebuild_max != 0 => {
            if !lease::valid() {
                return drop(Reason::LeaseExpired, len);
            }
            let Some(service) = service_of(&key) else {
                return drop(Reason::NoService, len);
            };
            match conntrack::rebuild(&key, service, now, (vip.rebuild_min, vip.rebuild_max)) {
                Ok(conn) => (conn, Path::Rebuilt),
                Err(reason) => return drop(reason, len),
            }
        }
        _ => {
            if !owned {
                // The previous holder sends back the TCP packets the owner asks it of; any
                // other node sending one back where it came from would bounce it between two
                // nodes that each take the other for the owner, up to its TTL.
                let asked = vip.previous != 0
                    && SETTINGS
                        .get(0)
                        .is_some_and(|s| u32::from(s.node) == vip.previous);
                let back = l4_proto == proto::UDP || asked;
                return not_owner(&handoff(vip.owner), back, len);
            }
            // A packet no connection here knows may be one of the previous holder's: TCP
            // unless it opens one, a datagram while that node is alive to send it back.
            let offer = if l4_proto == proto::TCP {
                !opening
            } else {
                vip.flags & vip_flags::PREVIOUS_LIVE != 0
            };
            if offer && vip.previous != 0 {
                let previous = handoff(vip.previous);
                if let Some(hop) = previous.onward() {
                    // Its next packets go there at once, and the entry travels with this
                    // node's connection copies. A datagram sent back is opened here,
                    // replacing it.
                    let forward = Conn {
                        home: vip.previous,
                        created_ns: now,
                        last_seen_ns: now,
                        ..Conn::default()
                    };
                    let _ = CONNS.insert(key, forward, 0);
                    return previous.send(hop, Path::ToPrevious);
                }
            }
            if !opening {
                return drop(Reason::NotOpening, len);
            }
            if !lease::valid() {
                return drop(Reason::LeaseExpired, len);
            }
            if let Some(old) = existing {
                conntrack::close(&key, old);
            }
            let Some(service) = service_of(&key) else {
                return drop(Reason::NoService, len);
            };
            match conntrack::open(&key, service, now) {
                Ok(conn) => (conn, Path::NewConn),
                Err(reason) => return drop(reason, len),
            }
        }
    };
    (*conn).last_seen_ns = now;
    if l4_proto == proto::TCP {
        conntrack::track(&mut (*conn).state, tcp_flags);
    }
    stats::service_backend((*conn).service_id, (*conn).backend_id, len);
    nat::to_backend(
        ip,
        &l4,
        (*conn).backend_addr,
        (*conn).backend_port,
        (*conn).nat_port,
    );
    forward::send(
        ctx,
        eth,
        core::ptr::addr_of_mut!((*conn).next_hop),
        &Route {
            l4_proto,
            src: key.src_addr,
            dst: (*conn).backend_addr,
            tot_len: (*ip).tot_len,
        },
        now,
        path,
        len,
    )
}

/// The service a client's flow `key` addresses.
#[inline(always)]
fn service_of(key: &FlowKey) -> Option<&'static Service> {
    // SAFETY: a read of a live map entry, which the verifier checks.
    unsafe {
        SERVICES.get(ServiceKey {
            vip: key.dst_addr,
            port: key.dst_port,
            proto: key.proto,
            _pad: 0,
        })
    }
}

/// A client packet for a VIP another node owns, of no connection of this node: it goes to the
/// owner, whether its sender's ARP entry is stale (it still names this node for the VIP) or
/// the owner offered it to this node (its previous holder), which has no connection of it:
/// sent back (`back`), the owner opens the datagram's flow, takes back a connection of its own
/// whose entry it had offered here, or drops the TCP packet. What is not to go back and came
/// from the owner is dropped.
#[inline(always)]
fn not_owner(owner: &Handoff, back: bool, len: u64) -> u32 {
    let hop = if back { owner.hop() } else { owner.onward() };
    match hop {
        Some(hop) if owner.node != 0 => owner.send(hop, Path::ToOwner),
        _ => drop(Reason::NotOwner, len),
    }
}

/// Any other IPv4 packet: a back-end's reply to a translated connection, or not ours.
#[inline(always)]
unsafe fn from_backend(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    header_len: usize,
    len: u64,
) -> u32 {
    let l4_proto = (*ip).proto;
    if (l4_proto != proto::TCP && l4_proto != proto::UDP)
        || header_len != IPV4_LEN
        || (*ip).frag_off & IP_MF_OFFSET.to_be() != 0
    {
        return pass_through(len);
    }
    let Some((l4, tcp_flags)) = transport(ctx, l4_proto) else {
        return pass_through(len);
    };
    let Some(settings) = SETTINGS.get(0) else {
        return pass_through(len);
    };
    let port = u16::from_be((*l4.ports)[1]);
    if l4_proto == proto::UDP && port == settings.cluster_port && port != 0 {
        // The cluster protocol: only configured nodes may speak it.
        if PEERS.get((*ip).saddr).is_none() {
            return drop(Reason::NotPeer, len);
        }
        return pass_through(len);
    }
    let reply = Reply {
        ctx,
        eth,
        ip,
        l4: &l4,
        tcp_flags,
        len,
    };
    let handoff = |node| Handoff {
        ctx,
        eth,
        ip,
        node,
        now: now(),
        len,
    };
    // Only ports of this node's NAT block, or of a block another node serves, can be replies:
    // cheap tests before any lookup; alone (no cluster port) no other node has NAT ports.
    let own = port >= settings.nat_port_min && port <= settings.nat_port_max;
    let home = if own {
        0
    } else if settings.cluster_port == 0 {
        return pass_through(len);
    } else {
        match NAT_HOMES.get(port as u32) {
            Some(home) if *home != 0 => *home,
            _ => return pass_through(len),
        }
    };
    if !acts_on(ctx, eth, true) {
        return left_to_kernel(Reason::OtherHost, len);
    }
    if own {
        if let Some(action) = reply.translate() {
            return action;
        }
        // A connection of this block that the node which served it while this one was away
        // took over, unless that node sent it here.
        let previous = handoff(u32::from(settings.block_previous));
        if previous.node != 0 {
            if let Some(hop) = previous.onward() {
                return previous.send(hop, Path::ToHome);
            }
        }
        return pass_through(len);
    }
    let node = home & !nat_home::LEFTOVERS;
    if home & nat_home::LEFTOVERS != 0 || node == u32::from(settings.node) {
        // A block this node took over, or whose connections it still serves; a back-end's
        // SYN on the ports of one that is over answers a new connection another node opened.
        reply.forget_reopened();
        if let Some(action) = reply.translate() {
            return action;
        }
        if node == u32::from(settings.node) {
            return pass_through(len);
        }
    }
    let home = handoff(node);
    match home.hop() {
        Some(hop) if !home.came_from(hop) => forward::redirect(eth, hop, Path::ToHome, len),
        Some(_) => pass_through(len),
        None => {
            // The kernel must not see it: it would route the half-translated reply on to
            // the client.
            drop(Reason::HomeUnresolved, len)
        }
    }
}

/// A packet that may be a back-end's reply to a connection in `REPLIES`.
struct Reply<'a> {
    ctx: &'a XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    l4: &'a L4,
    tcp_flags: u8,
    len: u64,
}

impl Reply<'_> {
    /// Forgets the connection this reply's ports belong to here if the reply is a SYN and
    /// that connection is over: the back-end accepted a new connection on them, which the
    /// block's node (back from being away, or a holder rebuilding) opened without knowing
    /// this node still remembers the old one. The reply, and the new connection's later
    /// ones, then go on to the block's node instead of to the old connection's client.
    #[inline(always)]
    unsafe fn forget_reopened(&self) {
        if (*self.ip).proto == proto::TCP && self.tcp_flags & TCP_SYN != 0 {
            conntrack::forget_finished(&flow_key(self.ip, self.l4));
        }
    }

    /// Translates the reply back and sends it to the client, if `REPLIES` knows it.
    #[inline(always)]
    unsafe fn translate(&self) -> Option<u32> {
        let (ip, l4) = (self.ip, self.l4);
        let l4_proto = (*ip).proto;
        let key = flow_key(ip, l4);
        let reply = REPLIES.get_ptr_mut(key)?;
        let now = now();
        (*reply).last_seen_ns = now;
        if l4_proto == proto::TCP {
            conntrack::track(&mut (*reply).state, self.tcp_flags);
        }
        stats::service((*reply).service_id, self.len);
        nat::to_client(
            ip,
            l4,
            (*reply).vip,
            (*reply).vip_port,
            (*reply).client_port,
        );
        Some(forward::send(
            self.ctx,
            self.eth,
            core::ptr::addr_of_mut!((*reply).next_hop),
            &Route {
                l4_proto,
                src: (*reply).vip,
                dst: key.dst_addr,
                tot_len: (*ip).tot_len,
            },
            now,
            Path::Reply,
            self.len,
        ))
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
