//! The cluster testbed: clients behind a router, three gateway nodes on a shared external and a
//! shared internal bridge, three back-end servers whose default gateway is the internal VIP.
//!
//! ```text
//! client (192.168.10.10-19) -- router (192.168.10.1 | 10.0.0.1) -- [ext bridge]
//!   -- gw1 ext0 10.0.0.2 | gw2 ext0 10.0.0.3 | gw3 ext0 10.0.0.4     (VIPs 10.0.0.100-102)
//!   -- gw1 int0 10.1.0.2 | gw2 int0 10.1.0.3 | gw3 int0 10.1.0.4     (VIP 10.1.0.1)
//!   -- [int bridge] -- b1 10.1.0.11, b2 10.1.0.12, b3 10.1.0.13 (default route via 10.1.0.1)
//! ```
//!
//! The router is the nodes' witness and the place where the tests listen to ARP. The same
//! testbed serves keepalived (VRRP) as the failover baseline.
use crate::testbed::{End, HostSpec, Spec, Testbed};
use crate::topology::{self, client_addrs, CLIENT, EXT_IF, INT_IF, ROUTER};
use anyhow::Result;
use std::net::Ipv4Addr;

/// The gateway nodes' host names, in ring order.
pub const NODES: [&str; 3] = ["gw1", "gw2", "gw3"];

/// The external VIPs: one web service on each.
pub const EXTERNAL_VIPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 0, 100),
    Ipv4Addr::new(10, 0, 0, 101),
    Ipv4Addr::new(10, 0, 0, 102),
];

/// The router's address on the external subnet: the nodes' default route and witness.
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Node `i`'s primary address on the external subnet.
pub fn external_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 2 + i as u8)
}

/// Node `i`'s primary address on the internal subnet.
pub fn internal_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 2 + i as u8)
}

/// The description of the cluster testbed (the back-ends route via the internal VIP
/// 10.1.0.1, which only a node's XDP, or keepalived, answers for).
pub fn spec() -> Spec {
    let client_cidrs: Vec<String> = client_addrs().iter().map(|a| format!("{a}/24")).collect();
    let client_cidrs: Vec<&str> = client_cidrs.iter().map(String::as_str).collect();
    let mut spec = Spec::default()
        .bridge("ext")
        .bridge("int")
        .host(HostSpec::new(CLIENT).route("10.0.0.0/24", "192.168.10.1"))
        .host(HostSpec::new(ROUTER).sysctl("net.ipv4.ip_forward", "1"))
        .wire(
            End::new(CLIENT, "eth0", &client_cidrs),
            End::new(ROUTER, "cl0", &["192.168.10.1/24"]),
        )
        .port(
            End::new(ROUTER, EXT_IF, &[&format!("{ROUTER_ADDR}/24")]),
            "ext",
            false,
        );
    for (i, node) in NODES.iter().enumerate() {
        let ext = format!("{}/24", external_addr(i));
        let int = format!("{}/24", internal_addr(i));
        spec = spec
            .host(
                HostSpec::new(node)
                    .sysctl("net.ipv4.ip_forward", "1")
                    .route("default", &ROUTER_ADDR.to_string()),
            )
            .port(End::new(node, EXT_IF, &[&ext]), "ext", true)
            .port(End::new(node, INT_IF, &[&int]), "int", true);
    }
    topology::with_backends(spec)
}

/// Builds the cluster testbed.
pub fn build() -> Result<Testbed> {
    Testbed::build(&spec())
}
