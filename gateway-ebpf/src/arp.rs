//! ARP for VIPs: answer requests for the VIPs this node owns while the daemon's lease is valid,
//! drop requests for VIPs another node owns so nothing else answers, record (and drop) another
//! station's claim on a VIP this node owns (split brain), pass everything else to the kernel.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_common::{vip_flags, ArpClaim, Path, Reason};

use crate::{
    lease,
    maps::{ARP_CLAIMS, IFACES, VIPS},
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
    let ingress = ctx.ingress_ifindex() as u32;
    // SAFETY: `arp` and `eth` point inside the packet (checked by `ptr_at`).
    unsafe {
        if (*arp).htype != HTYPE_ETHERNET
            || (*arp).ptype != PTYPE_IPV4
            || (*arp).hlen != 6
            || (*arp).plen != 4
        {
            stats::path(Path::PassThrough, len);
            return xdp_action::XDP_PASS;
        }
        let sender = u32::from_ne_bytes((*arp).spa);
        if let Some(vip) = VIPS.get(sender) {
            if vip.flags & vip_flags::OWNED != 0 {
                record_claim(sender, (*arp).sha, ingress);
                stats::reason(Reason::ArpClaimed, len);
                return xdp_action::XDP_DROP;
            }
        }
        if (*arp).op != OP_REQUEST {
            stats::path(Path::PassThrough, len);
            return xdp_action::XDP_PASS;
        }
        let target = u32::from_ne_bytes((*arp).tpa);
        let Some(vip) = VIPS.get(target) else {
            stats::path(Path::PassThrough, len);
            return xdp_action::XDP_PASS;
        };
        let iface = match IFACES.get(ingress) {
            Some(iface) if vip.flags & vip_flags::OWNED != 0 && vip.ifindex == ingress => iface,
            _ => {
                stats::reason(Reason::ArpForeignVip, len);
                return xdp_action::XDP_DROP;
            }
        };
        if !lease::valid() {
            stats::reason(Reason::LeaseExpired, len);
            return xdp_action::XDP_DROP;
        }
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

/// Notes that the station `mac` claimed `vip`, which this node owns, for the daemon to settle.
/// (This node's own announcements leave by AF_PACKET and never come back through XDP.)
#[inline(always)]
fn record_claim(vip: u32, mac: [u8; 6], ifindex: u32) {
    let now = crate::now();
    if let Some(claim) = ARP_CLAIMS.get_ptr_mut(vip) {
        // SAFETY: a live map value; a racing CPU can at worst lose one count.
        unsafe {
            (*claim).mac = mac;
            (*claim).ifindex = ifindex;
            (*claim).count = (*claim).count.wrapping_add(1);
            (*claim).last_ns = now;
        }
        return;
    }
    let claim = ArpClaim {
        mac,
        _pad: [0; 2],
        ifindex,
        count: 1,
        last_ns: now,
    };
    let _ = ARP_CLAIMS.insert(vip, claim, 0);
}
