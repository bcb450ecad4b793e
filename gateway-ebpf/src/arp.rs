//! ARP for VIPs: answer requests for the VIPs this node owns, drop requests for VIPs another
//! node owns so nothing else answers, pass everything else to the kernel.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_common::{vip_flags, Path, Reason};

use crate::{
    maps::{IFACES, VIPS},
    parse::{ptr_at, ArpHdr, EthHdr, ETH_LEN},
    stats,
};

const HTYPE_ETHERNET: u16 = 1u16.to_be();
const PTYPE_IPV4: u16 = 0x0800u16.to_be();
const OP_REQUEST: u16 = 1u16.to_be();
const OP_REPLY: u16 = 2u16.to_be();

/// Handles an ARP frame; `eth` is its (already bounds-checked) Ethernet header.
#[inline(always)]
pub fn handle(ctx: &XdpContext, eth: *mut EthHdr, len: u64) -> u32 {
    let Some(arp) = ptr_at::<ArpHdr>(ctx, ETH_LEN) else {
        stats::reason(Reason::TruncatedArp, len);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: `arp` and `eth` point inside the packet (checked by `ptr_at`).
    unsafe {
        if (*arp).htype != HTYPE_ETHERNET
            || (*arp).ptype != PTYPE_IPV4
            || (*arp).hlen != 6
            || (*arp).plen != 4
            || (*arp).op != OP_REQUEST
        {
            stats::path(Path::PassThrough, len);
            return xdp_action::XDP_PASS;
        }
        let target = u32::from_ne_bytes((*arp).tpa);
        let Some(vip) = VIPS.get(target) else {
            stats::path(Path::PassThrough, len);
            return xdp_action::XDP_PASS;
        };
        let ingress = ctx.ingress_ifindex() as u32;
        let iface = match IFACES.get(ingress) {
            Some(iface) if vip.flags & vip_flags::OWNED != 0 && vip.ifindex == ingress => iface,
            _ => {
                stats::reason(Reason::ArpForeignVip, len);
                return xdp_action::XDP_DROP;
            }
        };
        (*eth).dst = (*arp).sha;
        (*eth).src = iface.mac;
        (*arp).op = OP_REPLY;
        (*arp).tha = (*arp).sha;
        (*arp).tpa = (*arp).spa;
        (*arp).sha = iface.mac;
        (*arp).spa = target.to_ne_bytes();
    }
    stats::path(Path::ArpReply, len);
    xdp_action::XDP_TX
}
