//! Balancing by load (docs/architecture.md, "Load balancing"): two VIPs that start on gw1 both
//! carry steady traffic (short UDP flows) while the third external VIP and the back-ends' gateway
//! VIP are on gw2 and gw3; counts are even (2, 1, 1), so only the traffic can make the ring move
//! one of them. It must, to the idle node (gw3 carries the replies), and then stay put: no more
//! moves for a few hold periods while the traffic goes on.
use netns_tests::client::UdpBlast;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::topology::{client_addrs, INTERNAL_VIP};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Datagrams per second to each busy VIP.
const RATE: u64 = 1500;

fn owners(cluster: &Cluster) -> Vec<(Ipv4Addr, usize)> {
    cluster.converged().unwrap_or_default()
}

#[test]
fn a_busy_node_gives_one_vip_away_and_the_placement_holds() {
    let (busy, quiet) = (&EXTERNAL_VIPS[..2], EXTERNAL_VIPS[2]);
    let options = ClusterOptions {
        balance_min_pps: Some(2000),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(&options).unwrap();
    // The operator puts both busy VIPs on gw1: the count balance leaves VIPs an operator
    // placed where they are and out of its counts (issue 11, "placement an operator can
    // trust"), so only the traffic can move one.
    let arrangement = [(busy[0], 0), (busy[1], 0), (quiet, 1), (INTERNAL_VIP, 2)];
    for (vip, node) in arrangement {
        if cluster.owner(vip).unwrap() != node {
            cluster
                .daemon(0)
                .unwrap()
                .cli(&["vip", "move", &vip.to_string(), NODES[node]])
                .unwrap();
        }
    }
    cluster.wait_settled(Duration::from_secs(10)).unwrap();
    let start = owners(&cluster);
    println!("placement at start: {start:?}");
    for (vip, node) in arrangement {
        assert!(start.contains(&(vip, node)), "{vip} not on {}", NODES[node]);
    }

    let blasts: Vec<UdpBlast> = busy
        .iter()
        .enumerate()
        .map(|(k, &vip)| {
            UdpBlast::start(
                cluster.client(),
                client_addrs()[k],
                Cluster::echo(vip),
                RATE,
            )
        })
        .collect();
    let began = Instant::now();
    let moved = loop {
        let table = owners(&cluster);
        let on_gw1 = busy
            .iter()
            .filter(|v| table.iter().any(|(t, o)| t == *v && *o == 0))
            .count();
        if on_gw1 == 1 {
            break table;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no VIP moved for load: {table:?}, loads {:?}",
            cluster.view(0).unwrap().members
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("{:.1?} after the traffic began: {moved:?}", began.elapsed());
    let view = cluster.view(0).unwrap();
    for m in &view.members {
        println!("  {} load {:?}", m.name, m.load);
    }
    // gw3 carries every reply (it owns the back-ends' gateway VIP): the idle node is gw2.
    // Measured while the traffic still ramped, gw3 looked as idle and took the VIP (CI).
    let to_gw2 = busy
        .iter()
        .filter(|v| moved.iter().any(|(t, o)| t == *v && *o == 1))
        .count();
    assert_eq!(
        to_gw2, 1,
        "the VIP did not go to the idle node gw2: {moved:?}"
    );

    // Two hold periods and more: nothing moves back and forth.
    let watch = Instant::now();
    let mut changes = 0;
    let mut last = moved.clone();
    while watch.elapsed() < Duration::from_secs(8) {
        let now = owners(&cluster);
        if !now.is_empty() && now != last {
            changes += 1;
            println!("{:.1?} later: {now:?}", watch.elapsed());
            last = now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let view = cluster.view(0).unwrap();
    for m in &view.members {
        println!("  {} load {:?}", m.name, m.load);
    }
    for v in &view.vips {
        println!(
            "  {} on {:?}: {:?} packets/s",
            v.address, v.owner, v.packets_per_s
        );
    }
    for b in blasts {
        println!("blast sent {} datagrams", b.stop().unwrap());
    }
    assert_eq!(changes, 0, "VIPs kept moving after the first move for load");
}
