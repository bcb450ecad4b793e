//! Connection hand-off between nodes: after a VIP moves, its previous holder keeps serving the
//! connections it opened, and the new owner sends it every client packet it has no connection
//! entry for, untranslated, by MAC rewrite (a second chance). Datagrams are the one ambiguity
//! (every one may open a flow), so while the previous holder is a live member the owner offers
//! it those too, and it sends back the ones that belong to no flow of its own; the owner then
//! opens them. A packet never goes back to the node it came from unless it is that answer, and
//! every hand-off costs one TTL, so disagreeing views cannot loop a packet for long.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_common::{HomeKey, NextHop, Path, Reason};

use crate::{
    csum,
    forward::{self, Route},
    maps::HOME_HOPS,
    parse::{EthHdr, Ipv4Hdr},
    stats,
};

/// A packet that may be handed to node `node` (1 + its index), seen from the ingress NIC.
pub struct Handoff<'a> {
    pub ctx: &'a XdpContext,
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    pub node: u32,
    pub now: u64,
    pub len: u64,
}

impl Handoff<'_> {
    /// The resolved next hop to the node on the ingress subnet; `None` when it has none (no
    /// address there, or its MAC is not known yet).
    #[inline(always)]
    pub fn hop(&self) -> Option<*mut NextHop> {
        let key = HomeKey {
            node: self.node,
            ifindex: self.ctx.ingress_ifindex() as u32,
        };
        let hop = HOME_HOPS.get_ptr_mut(&key)?;
        // SAFETY: `ip` is a bounds-checked packet pointer, `hop` a live map value.
        let route = unsafe {
            Route {
                l4_proto: (*self.ip).proto,
                src: (*self.ip).saddr,
                dst: (*hop).addr,
                tot_len: (*self.ip).tot_len,
            }
        };
        forward::node_hop(self.ctx, hop, &route, self.now).ok()
    }

    /// Whether the packet came from the node: its source MAC is the node's (`hop`).
    #[inline(always)]
    pub fn came_from(&self, hop: *const NextHop) -> bool {
        // SAFETY: `eth` is a bounds-checked packet pointer, `hop` a live map value.
        unsafe { (*self.eth).src == (*hop).dst_mac }
    }

    /// The hop to the node, unless the packet came from there (it must not go back) or the
    /// node cannot be reached from this NIC.
    #[inline(always)]
    pub fn onward(&self) -> Option<*mut NextHop> {
        self.hop().filter(|&hop| !self.came_from(hop))
    }

    /// Spends one TTL and sends the packet to the node along `hop`, counting `path`.
    #[inline(always)]
    pub fn send(&self, hop: *const NextHop, path: Path) -> u32 {
        // SAFETY: `ip` is a bounds-checked packet pointer.
        if !unsafe { spend_ttl(self.ip) } {
            stats::reason(Reason::HopLimit, self.len);
            return xdp_action::XDP_DROP;
        }
        forward::redirect(self.eth, hop, path, self.len)
    }
}

/// Takes one from the packet's TTL (with its checksum); false when none is left to take.
///
/// # Safety
/// `ip` must point to a bounds-checked IPv4 header.
#[inline(always)]
unsafe fn spend_ttl(ip: *mut Ipv4Hdr) -> bool {
    if (*ip).ttl <= 1 {
        return false;
    }
    // TTL and protocol form one 16-bit word of the checksum.
    let word = core::ptr::addr_of_mut!((*ip).ttl).cast::<u16>();
    let before = word.read_unaligned();
    (*ip).ttl -= 1;
    (*ip).check = csum::replace2((*ip).check, before, word.read_unaligned());
    true
}
