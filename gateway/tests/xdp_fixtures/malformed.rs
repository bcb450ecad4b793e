//! Packets whose form the data path does not translate: fragments, IP options, other
//! protocols and encapsulations, and bad IPv4 headers (to a VIP dropped, otherwise left to
//! the kernel).
use etherparse::PacketBuilder;
use gateway_common::Reason;

use crate::prelude::*;

/// `packet` with `patch` applied to its bytes.
fn patched(mut packet: Vec<u8>, patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    patch(&mut packet);
    packet
}

pub fn rows() -> Vec<Row> {
    let vip = to_vip(43000, PORT_TCP);
    let host = to_gateway();
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, PAYLOAD)
        .unwrap();
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv6([1; 16], [2; 16], 64)
        .udp(1, 2)
        .write(&mut v6, PAYLOAD)
        .unwrap();
    let with = |f: fn(&mut Vec<u8>)| patched(tcp(&vip, SYN), f);
    vec![
        drop_row(
            "first fragment to a vip",
            tcp_with(&vip, SYN, |ip| {
                ip.dont_fragment = false;
                ip.more_fragments = true;
            }),
            Reason::Fragment,
        ),
        drop_row(
            "later fragment to a vip",
            tcp_with(&vip, SYN, |ip| {
                ip.dont_fragment = false;
                ip.fragment_offset = etherparse::IpFragOffset::try_new(100).unwrap();
            }),
            Reason::Fragment,
        ),
        drop_row(
            "ip options to a vip",
            tcp_with(&vip, SYN, |ip| {
                ip.options = [1, 1, 1, 0][..].try_into().unwrap()
            }),
            Reason::IpOptions,
        ),
        drop_row("icmp echo to a vip", icmp, Reason::UnsupportedProto),
        pass_row("ipv6", Nic::External, v6),
        pass_row(
            "vlan-tagged packet to a vip",
            Nic::External,
            with(|p| {
                p.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
            }),
        ),
        drop_row(
            "ihl below 5 to a vip",
            with(|p| p[14] = 0x44),
            Reason::BadIhl,
        ),
        drop_row(
            "ihl beyond total length to a vip",
            with(|p| p[14] = 0x4f),
            Reason::BadIhl,
        ),
        drop_row(
            "total length beyond the packet to a vip",
            with(|p| p[16..18].copy_from_slice(&1000u16.to_be_bytes())),
            Reason::BadIhl,
        ),
        drop_row(
            "ip version 5 to a vip",
            with(|p| p[14] = 0x55),
            Reason::BadIhl,
        ),
        kernel_row(
            "ihl below 5 to a non-vip",
            Nic::External,
            patched(tcp(&host, SYN), |p| p[14] = 0x44),
            Reason::BadIhl,
        ),
    ]
}
