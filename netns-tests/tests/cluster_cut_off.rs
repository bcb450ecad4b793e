//! A node cut off, its links down while kept-alive connections run through a VIP it owns and
//! forwards to the node that opened them: in its own view every other member is gone, and its
//! data path must not take their blocks over meanwhile (it dropped the forwarding entry of a
//! connection another node served and rebuilt it on the wrong block's port, which the back-end
//! reset: chaos run, seed 9). The VIP is moved back to the cut-off node after each rejoin, so
//! its forwarding entries are used again.
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use std::time::Duration;

/// Kept-alive HTTP connections through the VIP.
const LONG_LIVED: usize = 8;
/// The node that opens them.
const OPENER: usize = 0;
/// The node the VIP moves to, which forwards them to `OPENER`, and whose links go down.
const CUT: usize = 2;

#[test]
fn a_cut_off_node_keeps_forwarding_the_connections_others_serve() {
    let vip = EXTERNAL_VIPS[0];
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    cluster.place(vip, OPENER).unwrap();
    let (traffic, _) = cluster.traffic(vip, LONG_LIVED, 0).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The connections are forwarded from here on.
    cluster.place(vip, CUT).unwrap();
    // Long enough for every connection to have a forwarding entry and be copied.
    std::thread::sleep(Duration::from_millis(600));

    for (round, away) in [1500, 2500].into_iter().enumerate() {
        println!("{round}: {}'s links down for {away} ms", NODES[CUT]);
        cluster.set_links(CUT, "down").unwrap();
        std::thread::sleep(Duration::from_millis(away));
        let alone = cluster.view(CUT).unwrap();
        println!(
            "   {} sees {:?}, quorum wait {}, answers for {:?}",
            NODES[CUT],
            alone.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
            alone.quorum_wait,
            cluster.owned(CUT).unwrap()
        );
        cluster.set_links(CUT, "up").unwrap();
        cluster.wait_settled(Duration::from_secs(20)).unwrap();
        println!("   rejoined; owners {:?}", cluster.converged().unwrap());
        cluster.place(vip, CUT).unwrap();
        // Requests on every kept-alive connection through the forwarding entries again.
        std::thread::sleep(Duration::from_secs(2));
    }

    let report = traffic.stop().unwrap();
    println!("{report}");
    report.assert_none_broke("after the cuts");
}
