//! The benchmark's baseline works on the testbed: kernel nftables DNAT of the VIP spreads new
//! connections over the back-ends and replies come back through the gateway host.
use netns_tests::client::{run_requests, Traffic};
use netns_tests::daemon::WEB_PORT;
use netns_tests::nft_baseline::NftBaseline;
use netns_tests::topology::{self, VIP};
use std::net::SocketAddrV4;
use std::time::Duration;

#[test]
fn nftables_dnat_baseline_serves_the_vip() {
    let bed = topology::build().unwrap();
    let _servers = topology::start_backends(&bed).unwrap();
    let _baseline = NftBaseline::install(bed.ns(topology::GATEWAY).unwrap(), WEB_PORT, 2).unwrap();
    let vip = SocketAddrV4::new(VIP, WEB_PORT);
    let client = bed.ns(topology::CLIENT).unwrap();
    let tally = run_requests(client, &topology::client_addrs(), vip, 300, 2).unwrap();
    println!("nftables DNAT: {tally}");
    assert_eq!(tally.failures, 0, "{tally}");
    assert_eq!(tally.by_backend.len(), 3, "{tally}");

    // Long-lived connections keep their back-end under conntrack too.
    let traffic = Traffic::start(client, &topology::client_addrs(), vip, 4).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop().unwrap();
    print!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert!(
        report.long_lived.iter().all(|l| l.requests > 20),
        "{report}"
    );
}
