//! Header layouts and bounds-checked access to packet bytes.
//!
//! Multi-byte fields are kept in network byte order, as they are in the maps.
use aya_ebpf::programs::XdpContext;

/// Length of an Ethernet header (no VLAN tag: tagged frames pass through).
pub const ETH_LEN: usize = 14;
/// Length of an IPv4 header without options (the only kind the data path translates).
pub const IPV4_LEN: usize = 20;

/// EtherType of IPv4, as read from the wire into a native u16.
pub const ETH_P_IP: u16 = 0x0800u16.to_be();
/// EtherType of ARP, as read from the wire into a native u16.
pub const ETH_P_ARP: u16 = 0x0806u16.to_be();

/// IPv4 "more fragments" flag and fragment offset bits of `frag_off` (host order).
pub const IP_MF_OFFSET: u16 = 0x3fff;

/// An Ethernet header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

/// An IPv4 header without options.
#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// The TCP header up to and including the checksum.
#[repr(C)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    pub off_res: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

/// TCP flag bits of `TcpHdr::flags`: the ones connection tracking reads.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A UDP header.
#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

/// An ARP packet for IPv4 over Ethernet.
#[repr(C)]
pub struct ArpHdr {
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

/// A pointer to a `T` at `offset` in the packet, if the packet is long enough to hold it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}
