//! The usual set-up of a gateway test: the topology, a test server on every back-end, and the
//! daemon serving the given services. Field order is drop order: daemon, servers, testbed.
use crate::daemon::{Daemon, GatewayConfig, ServiceConfig, ECHO_PORT, WEB_PORT};
use crate::netns::Netns;
use crate::process::Process;
use crate::testbed::Testbed;
use crate::topology::{self, VIP};
use anyhow::Result;
use std::net::SocketAddrV4;
use std::time::Instant;

/// A running gateway scenario.
pub struct Scenario {
    /// The daemon.
    pub daemon: Daemon,
    /// The test servers, by back-end index; `None` once a test killed one.
    pub servers: Vec<Option<Process>>,
    /// The config the daemon runs (edit, `write`, then `daemon.cli(&["reload"])`).
    pub config: GatewayConfig,
    /// The testbed.
    pub bed: Testbed,
}

impl Scenario {
    /// Builds the topology, starts the back-ends and the daemon with `services`.
    pub fn start(services: Vec<ServiceConfig>) -> Result<Self> {
        let started = Instant::now();
        let bed = topology::build()?;
        let servers = topology::start_backends(&bed)?
            .into_iter()
            .map(Some)
            .collect();
        let config = GatewayConfig::new(&bed, services);
        let daemon = Daemon::start(&bed, &config)?;
        println!(
            "testbed {} with gateway ready in {:.2?}",
            bed.prefix(),
            started.elapsed()
        );
        Ok(Self {
            daemon,
            servers,
            config,
            bed,
        })
    }

    /// The client namespace.
    pub fn client(&self) -> &Netns {
        self.bed.ns(topology::CLIENT).expect("client host")
    }

    /// The HTTP service's address.
    pub fn web(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, WEB_PORT)
    }

    /// The UDP echo service's address.
    pub fn echo(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, ECHO_PORT)
    }
}
