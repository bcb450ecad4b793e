//! Address and port translation of a parsed packet, with incremental checksum updates.
use crate::{csum, parse::Ipv4Hdr};

/// The transport header of a TCP or UDP packet: where its ports and checksum are.
pub struct L4 {
    /// Source port, then destination port (both protocols start this way).
    pub ports: *mut [u16; 2],
    /// The TCP or UDP checksum field.
    pub check: *mut u16,
    /// UDP, whose checksum 0 means "none" and must stay 0.
    pub udp: bool,
}

impl L4 {
    #[inline(always)]
    unsafe fn update(
        &self,
        from: u32,
        to: u32,
        from_port: u16,
        to_port: u16,
        other_from: u16,
        other_to: u16,
    ) {
        let old = *self.check;
        if self.udp && old == 0 {
            return;
        }
        let mut c = csum::replace4(old, from, to);
        c = csum::replace2(c, from_port, to_port);
        c = csum::replace2(c, other_from, other_to);
        if self.udp && c == 0 {
            c = 0xffff;
        }
        *self.check = c;
    }
}

/// Client to backend: destination VIP:port becomes backend:port, the client's source port
/// becomes the NAT port. Values in network order.
#[inline(always)]
pub unsafe fn to_backend(ip: *mut Ipv4Hdr, l4: &L4, addr: u32, port: u16, nat_port: u16) {
    let old_addr = (*ip).daddr;
    let [old_sport, old_dport] = *l4.ports;
    (*ip).check = csum::replace4((*ip).check, old_addr, addr);
    (*ip).daddr = addr;
    l4.update(old_addr, addr, old_dport, port, old_sport, nat_port);
    *l4.ports = [nat_port, port];
}

/// Backend to client: source backend:port becomes VIP:port, destination NAT port becomes the
/// client's own port. Values in network order.
#[inline(always)]
pub unsafe fn to_client(ip: *mut Ipv4Hdr, l4: &L4, vip: u32, vip_port: u16, client_port: u16) {
    let old_addr = (*ip).saddr;
    let [old_sport, old_dport] = *l4.ports;
    (*ip).check = csum::replace4((*ip).check, old_addr, vip);
    (*ip).saddr = vip;
    l4.update(old_addr, vip, old_sport, vip_port, old_dport, client_port);
    *l4.ports = [vip_port, client_port];
}
