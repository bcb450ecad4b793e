//! Issue 11, item 6: connections opened just before their home dies. The copy stream sends a
//! node's new connections to its successor every 200 ms, so those opened after the last copy
//! have none when the node dies; every one of them failed. Now the node that takes the dead
//! node's block over rebuilds such a connection from its next packet, as the dead node opened
//! it (`conntrack::rebuild`: Maglev's pick of the flow, the dead node's NAT port probe).
//!
//! A storm of new connections (each held open a second, with a request at its opening and one
//! before its close) runs through one VIP while its owner dies as a host dies. No connection
//! may fail, also none of the many opened in the last copy interval before the death.
use netns_tests::client::Storm;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::host_death;
use netns_tests::topology::{client_addrs, EXT_IF, INT_IF};
use std::time::{Duration, Instant};

/// New connections per second.
const RATE: u64 = 150;
/// How long each is held open.
const HOLD: Duration = Duration::from_secs(1);
/// The copy stream's interval (`cluster::copies::COPY_INTERVAL`): connections opened within it
/// before the death may have had no copy.
const COPY_INTERVAL: Duration = Duration::from_millis(200);

#[test]
fn connections_opened_just_before_their_home_dies_go_on() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    let vip = EXTERNAL_VIPS[0];
    let victim = cluster.owner(vip).unwrap();
    let storm = Storm::start(
        cluster.client(),
        &client_addrs(),
        Cluster::web(vip),
        RATE,
        HOLD,
    );
    std::thread::sleep(Duration::from_secs(3));

    println!("killing host {} (owner of {vip})", NODES[victim]);
    let death = Instant::now();
    let _dead = host_death::kill(&cluster.bed, NODES[victim], &[EXT_IF, INT_IF]).unwrap();
    cluster.kill_daemon(victim).unwrap();
    cluster.wait_converged(Duration::from_secs(5)).unwrap();
    let owner = cluster.owner(vip).unwrap();
    println!("{vip} now on {}", NODES[owner]);
    std::thread::sleep(Duration::from_secs(3));

    let outcome = storm.stop().unwrap();
    let before: Vec<&Instant> = outcome.opened.iter().filter(|at| **at < death).collect();
    let last = before
        .iter()
        .filter(|at| death - ***at <= COPY_INTERVAL)
        .count();
    let failed: Vec<String> = outcome
        .failures
        .iter()
        .map(|f| {
            let at = f.opened.saturating_duration_since(death).as_millis() as i128
                - death.saturating_duration_since(f.opened).as_millis() as i128;
            format!(
                "opened at {at} ms from the death, failed at {}: {}",
                f.phase, f.error
            )
        })
        .collect();
    println!(
        "{} connections, {} opened before the death, {last} in its last {COPY_INTERVAL:?}, {} failed",
        outcome.opened.len(),
        before.len(),
        failed.len()
    );
    for f in &failed {
        println!("  {f}");
    }
    assert!(
        last >= 10,
        "only {last} connections opened in the last copy interval: the storm did not run"
    );
    assert!(failed.is_empty(), "{} connections failed", failed.len());
}
