//! Test packets built with etherparse, whose checksums are computed independently of the data
//! path's incremental updates.
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpNumber, Ipv4Header,
    TcpHeader, UdpHeader,
};

/// Both ends of a packet at layers 2 to 4.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    /// The same flow with MACs replaced (a forwarded packet).
    pub fn macs(self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Self {
        Self {
            src_mac,
            dst_mac,
            ..self
        }
    }
}

/// TCP flags of a test segment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FIN: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

/// Payload of test segments: with it a TCP frame is the 60-byte Ethernet minimum.
pub const PAYLOAD: &[u8] = b"hello!";

fn ip_header(flow: &Flow, proto: IpNumber, payload_len: usize) -> Ipv4Header {
    let mut ip = Ipv4Header::new(payload_len as u16, 64, proto, flow.src, flow.dst).unwrap();
    ip.identification = 0x1234;
    ip.dont_fragment = true;
    ip
}

fn frame(flow: &Flow, ether_type: EtherType) -> Vec<u8> {
    Ethernet2Header {
        source: flow.src_mac,
        destination: flow.dst_mac,
        ether_type,
    }
    .to_bytes()
    .to_vec()
}

/// A TCP segment; `tweak` may edit the IPv4 header (its checksum is computed afterwards).
pub fn tcp_with(flow: &Flow, flags: Flags, tweak: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let mut tcp = TcpHeader::new(flow.sport, flow.dport, 1000, 64240);
    tcp.syn = flags.syn;
    tcp.ack = flags.ack;
    tcp.fin = flags.fin;
    tcp.rst = flags.rst;
    tcp.acknowledgment_number = if flags.ack { 5000 } else { 0 };
    let mut ip = ip_header(flow, IpNumber::TCP, tcp.header_len() + PAYLOAD.len());
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, PAYLOAD).unwrap();
    tweak(&mut ip);
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = frame(flow, EtherType::IPV4);
    ip.write(&mut out).unwrap();
    tcp.write(&mut out).unwrap();
    out.extend_from_slice(PAYLOAD);
    out
}

/// A plain TCP segment.
pub fn tcp(flow: &Flow, flags: Flags) -> Vec<u8> {
    tcp_with(flow, flags, |_| {})
}

/// A UDP datagram, with a checksum or with checksum 0 ("none").
pub fn udp(flow: &Flow, checksum: bool) -> Vec<u8> {
    udp_with(flow, checksum, |_| {})
}

/// A UDP datagram; `tweak` may edit the IPv4 header (its checksum is computed afterwards).
pub fn udp_with(flow: &Flow, checksum: bool, tweak: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let mut ip = ip_header(flow, IpNumber::UDP, 8 + PAYLOAD.len());
    let udp = if checksum {
        UdpHeader::with_ipv4_checksum(flow.sport, flow.dport, &ip, PAYLOAD).unwrap()
    } else {
        UdpHeader::without_ipv4_checksum(flow.sport, flow.dport, PAYLOAD.len()).unwrap()
    };
    tweak(&mut ip);
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = frame(flow, EtherType::IPV4);
    ip.write(&mut out).unwrap();
    udp.write(&mut out).unwrap();
    out.extend_from_slice(PAYLOAD);
    out
}

/// An ARP packet (request or reply) for IPv4 over Ethernet.
pub fn arp(
    eth: (&[u8; 6], &[u8; 6]),
    reply: bool,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let flow = Flow {
        src_mac: *eth.0,
        dst_mac: *eth.1,
        src: [0; 4],
        dst: [0; 4],
        sport: 0,
        dport: 0,
    };
    let mut out = frame(&flow, EtherType::ARP);
    let packet: ArpPacket = ArpEthIpv4Packet {
        operation: if reply {
            ArpOperation::REPLY
        } else {
            ArpOperation::REQUEST
        },
        sender_mac: sha,
        sender_ipv4: spa,
        target_mac: tha,
        target_ipv4: tpa,
    }
    .into();
    packet.write(&mut out).unwrap();
    out
}
