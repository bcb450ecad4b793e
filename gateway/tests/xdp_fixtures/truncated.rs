//! Every cut of a packet inside its headers: left to the kernel while the IPv4 header is
//! incomplete, then dropped (to a VIP) or passed (otherwise) by how its lengths disagree; and
//! frames shorter than Ethernet, which the kernel refuses to run.
use gateway_common::{programs, Reason};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let vip = to_vip(47000, PORT_TCP);
    let host = Flow {
        dst: EXT_ADDR,
        ..vip
    };
    let cases = [
        ("tcp to vip", tcp(&vip, SYN), true),
        ("udp to vip", udp(&to_vip(47000, PORT_UDP), true), true),
        ("tcp to host", tcp(&host, SYN), false),
    ];
    let mut rows = Vec::new();
    for (what, full, to_vip) in cases {
        let headers = full.len() - PAYLOAD.len();
        for cut in 14..headers {
            let name = format!("{what} cut at {cut}");
            let raw = full[..cut].to_vec();
            rows.push(if cut < 34 {
                kernel_row(name, Nic::External, raw, Reason::TruncatedIp)
            } else if to_vip {
                drop_row(&name, raw, Reason::BadIhl)
            } else {
                kernel_row(name, Nic::External, raw, Reason::BadIhl)
            });
            if cut >= 34 {
                // The same cut with a consistent IPv4 total length: the L4 header is short.
                let mut consistent = full[..cut].to_vec();
                consistent[16..18].copy_from_slice(&((cut - 14) as u16).to_be_bytes());
                let mut ip = etherparse::Ipv4Header::from_slice(&consistent[14..])
                    .unwrap()
                    .0;
                ip.header_checksum = ip.calc_header_checksum();
                consistent[24..26].copy_from_slice(&ip.header_checksum.to_be_bytes());
                let name = format!("{what} cut at {cut} with a consistent length");
                rows.push(if to_vip {
                    drop_row(&name, consistent, Reason::TruncatedL4)
                } else {
                    pass_row(&name, Nic::External, consistent)
                });
            }
        }
    }
    let full = arp_request(VIP);
    rows.extend((14..full.len()).map(|cut| {
        kernel_row(
            format!("arp cut at {cut}"),
            Nic::External,
            full[..cut].to_vec(),
            Reason::TruncatedArp,
        )
    }));
    rows
}

/// The kernel refuses to run XDP on less than an Ethernet header, so `TruncatedEth` is only
/// reachable from real NICs; check the refusal rather than skip the cuts silently.
pub fn short_frames_refused(bed: &Testbed) -> Vec<String> {
    let packet = tcp(&to_vip(CLIENT_PORT, PORT_TCP), SYN);
    (0..14)
        .filter(|&cut| {
            bed.run(programs::GATEWAY, Nic::External, &packet[..cut], 1)
                .is_ok()
        })
        .map(|cut| format!("cut at {cut}: the kernel ran a frame shorter than Ethernet"))
        .collect()
}
