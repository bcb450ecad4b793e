//! Sending a translated packet on: next hop from the connection's cache or `bpf_fib_lookup`,
//! MAC rewrite, redirect out of the right NIC.
use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated as gen,
    programs::XdpContext,
};
use gateway_common::{HomeHop, NextHop, Path, Reason, NEXT_HOP_TTL_NS};

use crate::{parse::EthHdr, stats};

const AF_INET: u8 = 2;

/// What `bpf_fib_lookup` needs to know of a translated packet (addresses in network order,
/// `tot_len` as in the IPv4 header).
pub struct Route {
    pub l4_proto: u8,
    pub src: u32,
    pub dst: u32,
    pub tot_len: u16,
}

/// What [`resolve`] found for a packet.
enum Resolved {
    /// `next_hop` holds the NIC and MACs to send with.
    Ready,
    /// The route is known but the neighbour's MAC is not (yet) in the kernel's table.
    NoNeigh,
    /// No route.
    NoRoute,
}

/// Fills `next_hop` from `bpf_fib_lookup` along `route` unless its cached value is fresh.
#[inline(always)]
fn resolve(ctx: &XdpContext, next_hop: *mut NextHop, route: &Route, now: u64) -> Resolved {
    // SAFETY: `next_hop` points into a live map value.
    unsafe {
        if (*next_hop).ifindex != 0 && now.wrapping_sub((*next_hop).stamp_ns) < NEXT_HOP_TTL_NS {
            return Resolved::Ready;
        }
        let mut params: bpf_fib_lookup = core::mem::zeroed();
        params.family = AF_INET;
        params.l4_protocol = route.l4_proto;
        params.__bindgen_anon_1.tot_len = u16::from_be(route.tot_len);
        params.ifindex = ctx.ingress_ifindex() as u32;
        params.__bindgen_anon_3.ipv4_src = route.src;
        params.__bindgen_anon_4.ipv4_dst = route.dst;
        let rc = gen::bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        ) as u32;
        if rc == BPF_FIB_LKUP_RET_NO_NEIGH {
            return Resolved::NoNeigh;
        }
        if rc != BPF_FIB_LKUP_RET_SUCCESS {
            return Resolved::NoRoute;
        }
        (*next_hop).ifindex = params.ifindex;
        (*next_hop).src_mac = params.smac;
        (*next_hop).dst_mac = params.dmac;
        (*next_hop).stamp_ns = now;
        Resolved::Ready
    }
}

/// Rewrites the MACs from the resolved `next_hop` and redirects out of its NIC.
#[inline(always)]
pub fn redirect(eth: *mut EthHdr, next_hop: *const NextHop, path: Path, len: u64) -> u32 {
    // SAFETY: `next_hop` points into a live map value, `eth` into the packet.
    unsafe {
        (*eth).src = (*next_hop).src_mac;
        (*eth).dst = (*next_hop).dst_mac;
        stats::path(path, len);
        gen::bpf_redirect((*next_hop).ifindex, 0) as u32
    }
}

/// Forwards the packet (already translated along `route`) using and refreshing `next_hop`.
/// `path` is counted when the packet leaves by the fast path.
///
/// The TTL is left alone: to its client the gateway is the service's endpoint (an L4 NAT, as
/// IPVS-NAT and Katran do), not a router hop. Packets handed to the kernel (`KernelForward`)
/// do get one decrement there, from the kernel's own forwarding.
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    next_hop: *mut NextHop,
    route: &Route,
    now: u64,
    path: Path,
    len: u64,
) -> u32 {
    match resolve(ctx, next_hop, route, now) {
        Resolved::Ready => redirect(eth, next_hop, path, len),
        Resolved::NoNeigh => {
            // The kernel forwards it and resolves the neighbour for the next packets.
            stats::path(Path::KernelForward, len);
            xdp_action::XDP_PASS
        }
        Resolved::NoRoute => {
            stats::reason(Reason::NoRoute, len);
            xdp_action::XDP_DROP
        }
    }
}

/// The next hop to another node of the cluster (`hop`, on the packet's ingress subnet),
/// resolved and cached; the reason it cannot be used otherwise.
#[inline(always)]
pub fn node_hop(
    ctx: &XdpContext,
    hop: *mut HomeHop,
    route: &Route,
    now: u64,
) -> Result<*mut NextHop, Reason> {
    // SAFETY: `hop` points into a live map value.
    let next_hop = unsafe { core::ptr::addr_of_mut!((*hop).next_hop) };
    match resolve(ctx, next_hop, route, now) {
        Resolved::Ready => Ok(next_hop),
        Resolved::NoNeigh => Err(Reason::HomeUnresolved),
        Resolved::NoRoute => Err(Reason::NoRoute),
    }
}
