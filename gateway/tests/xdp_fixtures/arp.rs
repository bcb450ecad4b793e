//! ARP: this node answers requests for the VIPs it owns on their NIC, leaves other addresses
//! to the kernel, and counts another station's claims on an owned VIP.
use anyhow::{ensure, Context, Result};
use aya::maps::HashMap;
use gateway_common::{maps, Action, ArpClaim, Path, Reason};

use crate::prelude::*;

/// `ARP_CLAIMS` holds the other station's claim on the VIP, seen `count` times.
fn claimed(count: u32) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        let claims: HashMap<_, u32, ArpClaim> =
            HashMap::try_from(bed.ebpf.map(maps::ARP_CLAIMS).unwrap())?;
        let claim = claims.get(&be(VIP), 0).context("no ARP_CLAIMS entry")?;
        ensure!(
            claim.mac == PEER_MAC && claim.count == count && claim.ifindex == bed.ext_ifindex,
            "claim {claim:?}"
        );
        Ok(())
    }
}

pub fn rows() -> Vec<Row> {
    let claim = |reply, tpa| arp((&PEER_MAC, &BCAST), reply, PEER_MAC, VIP, [0; 6], tpa);
    vec![
        Row::new(
            "arp request for an owned vip",
            Nic::External,
            arp_request(VIP),
            Action::Tx,
        )
        .path(Path::ArpReply)
        .expect(|_| {
            Ok(arp(
                (&EXT_MAC, &CLIENT_MAC),
                true,
                EXT_MAC,
                VIP,
                CLIENT_MAC,
                CLIENT,
            ))
        }),
        drop_row(
            "arp request for a foreign vip",
            arp_request(FOREIGN_VIP),
            Reason::ArpForeignVip,
        ),
        Row::new(
            "arp request for an owned vip on the wrong nic",
            Nic::Internal,
            arp_request(VIP),
            Action::Drop,
        )
        .reason(Reason::ArpForeignVip),
        pass_row(
            "arp request for a non-vip",
            Nic::External,
            arp_request(EXT_ADDR),
        ),
        drop_row(
            "arp reply from another station for an owned vip",
            claim(true, CLIENT),
            Reason::ArpClaimed,
        )
        .after(claimed(1)),
        drop_row(
            "gratuitous arp from another station for an owned vip",
            claim(false, VIP),
            Reason::ArpClaimed,
        )
        .after(claimed(2)),
        pass_row(
            "arp reply for a foreign vip",
            Nic::External,
            arp(
                (&PEER_MAC, &BCAST),
                true,
                PEER_MAC,
                FOREIGN_VIP,
                [0; 6],
                FOREIGN_VIP,
            ),
        ),
    ]
}
