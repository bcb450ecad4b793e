//! The gateway's testbed: clients behind a router, the external bridge, the gateway host with
//! an external and an internal NIC, the internal bridge and three back-end servers.
//!
//! ```text
//! client (192.168.10.10-19) -- router (192.168.10.1 | 10.0.0.1) -- [ext bridge]
//!   -- gw ext0 10.0.0.2 (VIP 10.0.0.100) | gw int0 10.1.0.2 (VIP 10.1.0.1) -- [int bridge]
//!   -- b1 10.1.0.11, b2 10.1.0.12, b3 10.1.0.13 (default route via 10.1.0.1)
//! ```
use crate::binaries;
use crate::process::Process;
use crate::testbed::{End, HostSpec, Spec, Testbed};
use anyhow::{bail, Result};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Host names of the topology.
pub const CLIENT: &str = "client";
/// The upstream router.
pub const ROUTER: &str = "router";
/// The gateway host.
pub const GATEWAY: &str = "gw";
/// The back-end hosts, in order.
pub const BACKENDS: [&str; 3] = ["b1", "b2", "b3"];

/// The external VIP of the services.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// The internal VIP: the back-ends' default gateway, answered for only by the gateway's XDP.
pub const INTERNAL_VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The gateway's external and internal NIC names.
pub const EXT_IF: &str = "ext0";
/// See [`EXT_IF`].
pub const INT_IF: &str = "int0";
/// The HTTP port of the back-end servers.
pub const BACKEND_HTTP_PORT: u16 = 8080;
/// The UDP echo port of the back-end servers.
pub const BACKEND_UDP_PORT: u16 = 9000;
/// Number of client addresses.
pub const CLIENT_COUNT: u8 = 10;

/// The client addresses, 192.168.10.10 to .19.
pub fn client_addrs() -> Vec<Ipv4Addr> {
    (0..CLIENT_COUNT)
        .map(|i| Ipv4Addr::new(192, 168, 10, 10 + i))
        .collect()
}

/// The address of back-end `i` (0-based).
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 11 + i as u8)
}

/// The name back-end `i` answers with (`backend-1` for `i == 0`).
pub fn backend_name(i: usize) -> String {
    format!("backend-{}", i + 1)
}

/// The description of the topology.
pub fn spec() -> Spec {
    let client_cidrs: Vec<String> = client_addrs().iter().map(|a| format!("{a}/24")).collect();
    let client_cidrs: Vec<&str> = client_cidrs.iter().map(String::as_str).collect();
    let spec = Spec::default()
        .bridge("ext")
        .bridge("int")
        .host(HostSpec::new(CLIENT).route("10.0.0.0/24", "192.168.10.1"))
        .host(HostSpec::new(ROUTER).sysctl("net.ipv4.ip_forward", "1"))
        .host(
            HostSpec::new(GATEWAY)
                .sysctl("net.ipv4.ip_forward", "1")
                .route("default", "10.0.0.1"),
        )
        .wire(
            End::new(CLIENT, "eth0", &client_cidrs),
            End::new(ROUTER, "cl0", &["192.168.10.1/24"]),
        )
        .port(End::new(ROUTER, "ext0", &["10.0.0.1/24"]), "ext", false)
        .port(End::new(GATEWAY, EXT_IF, &["10.0.0.2/24"]), "ext", true)
        .port(End::new(GATEWAY, INT_IF, &["10.1.0.2/24"]), "int", true);
    with_backends(spec)
}

/// Adds the back-end hosts to `spec`, on bridge `int`, routing via the internal VIP.
pub fn with_backends(mut spec: Spec) -> Spec {
    for (i, host) in BACKENDS.iter().enumerate() {
        let cidr = format!("{}/24", backend_addr(i));
        spec = spec
            .host(HostSpec::new(host).route("default", &INTERNAL_VIP.to_string()))
            .port(End::new(host, "eth0", &[&cidr]), "int", false);
    }
    spec
}

/// Builds the topology.
pub fn build() -> Result<Testbed> {
    Testbed::build(&spec())
}

/// Starts the test server on back-end `i` (HTTP on 8080, UDP echo on 9000) and waits until it
/// listens.
pub fn start_backend(bed: &Testbed, i: usize) -> Result<Process> {
    let name = backend_name(i);
    let args = vec![
        "--name".to_owned(),
        name.clone(),
        "--http".to_owned(),
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BACKEND_HTTP_PORT).to_string(),
        "--udp".to_owned(),
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BACKEND_UDP_PORT).to_string(),
    ];
    let mut process = bed.spawn(BACKENDS[i], &binaries::find("testsrv")?, &args, &name)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process.log_tail(5).contains("listening") {
        if let Some(status) = process.try_status()? {
            bail!("{name} exited ({status}): {}", process.log_tail(20));
        }
        if Instant::now() > deadline {
            bail!("{name} did not start listening: {}", process.log_tail(20));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(process)
}

/// Starts the test server on every back-end.
pub fn start_backends(bed: &Testbed) -> Result<Vec<Process>> {
    (0..BACKENDS.len()).map(|i| start_backend(bed, i)).collect()
}
