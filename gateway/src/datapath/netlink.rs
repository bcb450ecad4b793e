//! The kernel's view over rtnetlink: the cluster NICs (ifindex, MAC, primary IPv4), and the
//! neighbour entries of the other nodes, which the data path's forwarding needs resolved.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::{
    address::AddressAttribute,
    link::LinkAttribute,
    neighbour::{NeighbourFlags, NeighbourState},
};
use tracing::debug;

/// What the daemon needs to know about one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Kernel name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Hardware address.
    pub mac: [u8; 6],
    /// First IPv4 address on the link (the node's primary address on that subnet).
    pub address: Option<Ipv4Addr>,
}

/// Looks up each named link; fails naming the first that is missing or has no Ethernet MAC.
pub async fn nics(names: &[String]) -> Result<Vec<Nic>> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    let task = tokio::spawn(connection);
    let mut out = Vec::new();
    for name in names {
        let link = handle
            .link()
            .get()
            .match_name(name.clone())
            .execute()
            .try_next()
            .await
            .ok()
            .flatten()
            .with_context(|| format!("interface `{name}` not found"))?;
        let ifindex = link.header.index;
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        let Some(mac) = mac else {
            bail!("interface `{name}` has no Ethernet MAC address");
        };
        let mut addrs = handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        let mut address = None;
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            let v4 = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v4))
                | AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            });
            if v4.is_some() {
                address = v4;
                break;
            }
        }
        out.push(Nic {
            name: name.clone(),
            ifindex,
            mac,
            address,
        });
    }
    task.abort();
    Ok(out)
}

/// Formats a MAC the usual way.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Keeps the other nodes' neighbour entries resolved: every `every`, for each `(ifindex,
/// address)`, asks the kernel to use the entry (`NTF_USE`), which starts ARP resolution when it
/// is missing or failed and refreshes it otherwise. XDP hands a back-end's reply to its home
/// node with the MAC `bpf_fib_lookup` finds there and cannot resolve one itself; without this a
/// path the cluster protocol seldom uses (its first sends take the primary path) could stay
/// unresolved after a node's links flapped, and those replies would be dropped.
pub async fn keep_neighbours(targets: Vec<(u32, Ipv4Addr)>, every: Duration) -> Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    let task = tokio::spawn(connection);
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        for (ifindex, addr) in &targets {
            let result = handle
                .neighbours()
                .add(*ifindex, IpAddr::V4(*addr))
                .state(NeighbourState::None)
                .flags(NeighbourFlags::Use)
                .replace()
                .execute()
                .await;
            if let Err(e) = result {
                debug!(%addr, ifindex, "neighbour use: {e}");
            }
        }
        if task.is_finished() {
            bail!("the rtnetlink connection ended");
        }
    }
}
