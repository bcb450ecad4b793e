//! Issue test 4: a node restarts (its daemon stopped cleanly, then started again): it rejoins;
//! the persistence-3 VIP that prefers it returns to it; the VIPs with persistence 1 stay where
//! they went while it was away.
use netns_tests::cluster::{all_vips, Cluster, ClusterOptions, Placement};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use std::time::{Duration, Instant};

#[test]
fn a_restarted_node_rejoins_and_gets_back_only_its_persistence_3_vip() {
    // gw2 prefers the first VIP with persistence 3; every other VIP sticks (persistence 1).
    let returning = EXTERNAL_VIPS[0];
    let placements = all_vips()
        .into_iter()
        .map(|vip| Placement {
            vip,
            preferred: 1,
            persistence: if vip == returning { 3 } else { 1 },
        })
        .collect();
    let options = ClusterOptions {
        placements,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(&options).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    assert_eq!(
        cluster.owner(returning).unwrap(),
        1,
        "a persistence-3 VIP lives on its preferred node"
    );

    let stopped = cluster.stop_daemon(1, false).unwrap();
    println!("gw2 stopped in {stopped:?}");
    cluster.wait_settled(Duration::from_secs(10)).unwrap();
    let away = cluster.converged().unwrap();
    println!("while gw2 is away: {away:?}");
    assert!(away.iter().all(|(_, o)| *o != 1));

    let started = Instant::now();
    cluster.start_daemon(1).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    let back = cluster.converged().unwrap();
    println!("{:.2?} after the restart: {back:?}", started.elapsed());
    for (vip, owner) in &back {
        if *vip == returning {
            assert_eq!(*owner, 1, "{vip} returned to {}", NODES[1]);
        } else {
            let before = away.iter().find(|(v, _)| v == vip).unwrap().1;
            assert_eq!(*owner, before, "{vip} (persistence 1) stayed");
        }
    }
    let view = cluster.view(1).unwrap();
    let members: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, NODES, "ring order after the rejoin");
}
