//! Node death without breaking connections
//! (docs/architecture.md, "Node death and NAT block take-over"): under continuous traffic through
//! one VIP (kept-alive HTTP connections, a stream of new ones, and UDP flows that each keep one
//! source port), the VIP's owner dies as a host dies (links down, every process killed). Its
//! successor in the ring held copies of its connections and takes them over with its NAT block;
//! the VIP's new owner sends it the packets of those connections. Every kept-alive connection must
//! go on answering from its own back-end, every UDP flow with its own translation. Then the dead
//! node comes back: it translates with its block again, and the connections that were taken over
//! go on.
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::host_death;
use netns_tests::topology::{EXT_IF, INT_IF};
use std::time::Duration;

/// Kept-alive HTTP connections through the VIP.
const LONG_LIVED: usize = 8;
/// UDP flows through the VIP.
const UDP_FLOWS: usize = 4;

#[test]
fn connections_survive_the_death_of_their_home_and_its_return() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let vip = EXTERNAL_VIPS[0];
    let victim = cluster.owner(vip).unwrap();
    let successor = (victim + 1) % NODES.len();
    let (traffic, flows) = cluster.traffic(vip, LONG_LIVED, UDP_FLOWS).unwrap();
    // Long enough for the successor to hold copies of every connection.
    std::thread::sleep(Duration::from_millis(600));
    let copies = cluster.view(successor).unwrap().copies;
    println!("{} holds copies {copies:?}", NODES[successor]);

    println!("killing host {} (owner of {vip})", NODES[victim]);
    let dead = host_death::kill(&cluster.bed, NODES[victim], &[EXT_IF, INT_IF]).unwrap();
    cluster.wait_converged(Duration::from_secs(5)).unwrap();
    let owner = cluster.owner(vip).unwrap();
    let blocks = cluster.view(successor).unwrap().blocks;
    println!("{vip} now on {}; NAT blocks away {blocks:?}", NODES[owner]);
    assert!(
        blocks
            .iter()
            .any(|b| b.block == NODES[victim] && b.holder == NODES[successor]),
        "{} did not take over {}'s block",
        NODES[successor],
        NODES[victim]
    );
    std::thread::sleep(Duration::from_secs(1));

    // The dead node comes back and rejoins.
    cluster.kill_daemon(victim).unwrap(); // reaps the process the host's death killed
    dead.revive(&cluster.bed).unwrap();
    cluster.start_daemon(victim).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    let blocks = cluster.view(victim).unwrap().blocks;
    println!("{} is back; NAT blocks away {blocks:?}", NODES[victim]);
    std::thread::sleep(Duration::from_secs(1));

    let report = traffic.stop().unwrap();
    println!("{report}");
    let reports: Vec<_> = flows.into_iter().map(|f| f.stop().unwrap()).collect();
    for (k, r) in reports.iter().enumerate() {
        println!(
            "udp flow #{k}: {} sent, {} answered, answers {:?}",
            r.sent, r.answered, r.answers
        );
    }
    for (k, l) in report.long_lived.iter().enumerate() {
        assert_eq!(
            l.failures, 0,
            "kept-alive connection #{k} broke: {:?}",
            l.first_error
        );
    }
    for (k, r) in reports.iter().enumerate() {
        assert_eq!(
            r.answers.len(),
            1,
            "udp flow #{k} was translated anew: {:?}",
            r.answers
        );
    }
}
