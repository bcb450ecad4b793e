//! Issue 11, item 3: every node starts at once. Nodes that waited the start-up time together
//! each formed a ring of one, claimed every VIP and answered ARP for it side by side; now a
//! node that hears a lower one waiting too leaves the ring to it. Three rounds: all daemons
//! stop, then start in the same few milliseconds; an ARP watch in the router must never hear
//! two owners of one VIP.
use netns_tests::arp::longest_dual;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use std::time::{Duration, Instant};

#[test]
fn nodes_started_together_form_one_ring_without_two_owners() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    for round in 1..=3 {
        for node in cluster.nodes.iter_mut() {
            node.daemon.as_mut().unwrap().stop(false).unwrap();
        }
        let watch = cluster.watch_arp().unwrap();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for node in cluster.gateways.nodes.iter_mut() {
                scope.spawn(move || node.daemon.as_mut().unwrap().launch().unwrap());
            }
        });
        let ready = started.elapsed();
        cluster.wait_converged(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let heard = watch.stop().unwrap();
        let view = cluster.view(0).unwrap();
        let members: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        println!("round {round}: all ready within {ready:.2?}, ring {members:?}");
        assert_eq!(members, NODES, "one ring of every node");
        for vip in EXTERNAL_VIPS {
            let dual = longest_dual(&heard, vip, Duration::from_millis(10));
            assert!(
                dual.is_zero(),
                "round {round}: {vip} had two answering owners for {dual:?}"
            );
        }
    }
}
