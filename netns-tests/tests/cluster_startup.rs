//! Issue test 1: three nodes start, form one ring and share the VIPs; every VIP is answered by
//! exactly one MAC, its owner's (an ARP watch on the VIP's subnet asks for every VIP), and
//! every external VIP serves clients, replies included, wherever the back-ends' gateway VIP
//! lives (distributed NAT sends replies to the node that translated them).
use gateway::datapath::netlink::mac_string;
use netns_tests::arp;
use netns_tests::client::{self, run_requests};
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::topology::{self, EXT_IF, INTERNAL_VIP, INT_IF};
use std::time::Duration;

#[test]
fn startup_converges_and_each_vip_is_answered_by_its_owner_alone() {
    // Started means converged and settled: balanced by count once the moves (one per hop, each
    // VIP resting a few hops after it moved) are over.
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let owners = cluster.converged().unwrap();
    println!("owners: {owners:?}");
    for (i, name) in NODES.iter().enumerate() {
        assert!(
            owners.iter().any(|(_, o)| *o == i),
            "{name} owns nothing: {owners:?}"
        );
    }

    let ext = arp::answers(
        cluster.router(),
        EXT_IF,
        &EXTERNAL_VIPS,
        Duration::from_millis(300),
    )
    .unwrap();
    let backend = cluster.bed.ns(topology::BACKENDS[0]).unwrap();
    let int = arp::answers(backend, "eth0", &[INTERNAL_VIP], Duration::from_millis(300)).unwrap();
    for (vip, owner) in &owners {
        let (heard, ifname) = if *vip == INTERNAL_VIP {
            (&int[vip], INT_IF)
        } else {
            (&ext[vip], EXT_IF)
        };
        let expected = cluster.mac(*owner, ifname).unwrap();
        let macs: Vec<String> = heard.iter().map(mac_string).collect();
        println!("{vip}: owner {} answered by {macs:?}", NODES[*owner]);
        assert_eq!(
            heard.iter().collect::<Vec<_>>(),
            [&expected],
            "{vip}: one answer, from its owner {}",
            NODES[*owner]
        );
    }

    // Every external VIP serves HTTP over new connections and UDP both ways.
    for vip in EXTERNAL_VIPS {
        let tally = run_requests(
            cluster.client(),
            &topology::client_addrs(),
            Cluster::web(vip),
            300,
            4,
        )
        .unwrap();
        println!("{vip}: {tally}");
        assert_eq!(tally.failures, 0, "{vip}: {tally}");
        let echo = Cluster::echo(vip);
        let src = topology::client_addrs()[0];
        let (from, text) = cluster
            .client()
            .run(move || client::udp_exchange(src, echo, "ping"))
            .unwrap();
        assert_eq!(
            from,
            std::net::SocketAddr::V4(echo),
            "{vip} echo from {from}"
        );
        assert!(text.ends_with(": ping"), "{vip} echo: {text}");
    }

    // Every member's load travels on the token: each node sees all three.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let view = cluster.view(0).unwrap();
        let loads: Vec<_> = view.members.iter().map(|m| (&m.name, m.load)).collect();
        if loads.iter().all(|(_, l)| l.is_some()) {
            println!("loads seen by gw1: {loads:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loads missing: {loads:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Replies of the VIPs whose owner does not hold the gateway VIP crossed to their home.
    let gateway_owner = owners.iter().find(|(v, _)| *v == INTERNAL_VIP).unwrap().1;
    if owners
        .iter()
        .any(|(v, o)| *v != INTERNAL_VIP && *o != gateway_owner)
    {
        let stats = cluster
            .daemon(gateway_owner)
            .unwrap()
            .json(&["stats"])
            .unwrap();
        let to_home = stats["paths"]["to_home"].as_u64().unwrap_or(0);
        println!(
            "{} sent {to_home} replies to their home",
            NODES[gateway_owner]
        );
        assert!(to_home > 0, "{stats}");
    }
}
