//! The failover benchmark's baseline works on the cluster testbed: keepalived with the fast
//! timers moves the VIPs when their owner dies as a host dies, the prober measures the
//! failover, and the node comes back and takes the VIPs back.
use netns_tests::cluster_topology::{self, EXTERNAL_VIPS};
use netns_tests::daemon::ECHO_PORT;
use netns_tests::failover::{self, Limits, Prober, System};
use netns_tests::keepalived::{KeepalivedSystem, Timers};
use netns_tests::topology::{self, client_addrs};
use std::net::SocketAddrV4;
use std::time::Duration;

#[test]
fn keepalived_fast_failover_is_measured() {
    let bed = cluster_topology::build().unwrap();
    let _servers = topology::start_backends(&bed).unwrap();
    let mut keepalived = KeepalivedSystem::new(Timers::Fast);
    keepalived.start(&bed).unwrap();
    assert_eq!(keepalived.owner_of_vip(&bed).unwrap(), Some(0));
    let target = SocketAddrV4::new(EXTERNAL_VIPS[0], ECHO_PORT);
    let prober =
        Prober::start(bed.ns(topology::CLIENT).unwrap(), client_addrs()[0], target).unwrap();
    let rounds =
        failover::measure_failovers(&bed, &mut keepalived, &prober, 1, Limits::default()).unwrap();
    println!("keepalived fast: {rounds:?}");
    assert_eq!(rounds.len(), 1);
    assert_eq!(rounds[0].killed, "gw1");
    assert!(
        rounds[0].failover < Duration::from_secs(3),
        "{:?}",
        rounds[0]
    );
    // gw1 is back and serving again.
    assert_eq!(keepalived.owner_of_vip(&bed).unwrap(), Some(0));
    failover::wait_steady(&bed, &keepalived, &prober, Duration::from_secs(10)).unwrap();
    let totals = prober.stop().unwrap();
    assert!(totals.answered > 0, "{totals:?}");
}
