//! Issue 11, item 4: one host dies in a quiet cluster, three times. The survivors must remove
//! the dead node and nobody else: sampled every 20 ms for 1.5 s after each death, no survivor's
//! ring lacks the other survivor, and an ARP watch never hears two owners of one VIP. (Right
//! after a death the survivors used to remove each other: a 911 that returned after its origin
//! had regenerated the token regenerated it again, and every member dropped the token on its
//! way as an earlier generation.)
use netns_tests::arp::longest_dual;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::host_death;
use netns_tests::topology::{EXT_IF, INT_IF};
use std::time::{Duration, Instant};

#[test]
fn after_a_host_death_the_survivors_remove_only_the_dead_node() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let mut removals = Vec::new();
    for round in 0..3 {
        let dead = round % NODES.len();
        let survivors: Vec<usize> = (0..NODES.len()).filter(|&i| i != dead).collect();
        let watch = cluster.watch_arp().unwrap();
        println!("round {round}: killing host {}", NODES[dead]);
        let host = host_death::kill(&cluster.bed, NODES[dead], &[EXT_IF, INT_IF]).unwrap();
        cluster.kill_daemon(dead).unwrap();
        let died = Instant::now();
        while died.elapsed() < Duration::from_millis(1500) {
            for &i in &survivors {
                let view = cluster.view(i).unwrap();
                for &j in &survivors {
                    if !view.members.iter().any(|m| m.name == NODES[j]) {
                        removals.push(format!(
                            "round {round}, {:.0?} after the death: {} without {}",
                            died.elapsed(),
                            NODES[i],
                            NODES[j]
                        ));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.wait_converged(Duration::from_secs(5)).unwrap();
        let heard = watch.stop().unwrap();
        for vip in EXTERNAL_VIPS {
            let dual = longest_dual(&heard, vip, Duration::from_millis(10));
            assert!(
                dual.is_zero(),
                "round {round}: {vip} had two answering owners for {dual:?}"
            );
        }
        host.revive(&cluster.bed).unwrap();
        cluster.start_daemon(dead).unwrap();
        cluster.wait_settled(Duration::from_secs(20)).unwrap();
    }
    for line in &removals {
        println!("{line}");
    }
    assert!(removals.is_empty(), "survivors removed each other");
}
