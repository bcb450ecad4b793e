//! Issue 11, item 7: commands an operator can trust. A move to the VIP's owner says it moved
//! nothing; errors name the command and what it refers to; closing the last open node is
//! refused unless forced; the count balance leaves a table the operator arranged as it is;
//! `gateway stop` returns once the daemon has exited (checked by `Daemon::stop` for every
//! test).
use netns_tests::cluster::all_vips;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use std::time::Duration;

#[test]
fn operator_commands_say_what_they_did_and_refuse_what_would_stop_the_cluster() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let gw1 = cluster.daemon(0).unwrap();

    // A move to the current owner.
    let vip = EXTERNAL_VIPS[0];
    let owner = NODES[cluster.owner(vip).unwrap()];
    let err = gw1
        .cli(&["vip", "move", &vip.to_string(), owner])
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(
        err.contains(&format!(
            "vip move {vip} {owner}: the VIP is on that node already"
        )),
        "{err}"
    );

    // An unknown VIP and an unknown node are named.
    let err = gw1
        .cli(&["vip", "move", "10.0.0.199", "gw2"])
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(
        err.contains("vip move 10.0.0.199 gw2: no such VIP"),
        "{err}"
    );
    let err = gw1.cli(&["node", "close", "gw9"]).unwrap_err().to_string();
    assert!(err.contains("node close gw9: no node named `gw9`"), "{err}");

    // Close two nodes; the third is the last open one.
    for node in &NODES[..2] {
        gw1.cli(&["node", "close", node]).unwrap();
    }
    let err = gw1
        .cli(&["node", "close", NODES[2]])
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains("last open node"), "{err}");
    let owners = cluster.converged().unwrap();
    assert!(
        owners.iter().all(|(_, o)| *o == 2),
        "every VIP on the last open node: {owners:?}"
    );
    gw1.cli(&["node", "close", NODES[2], "--force"]).unwrap();
    let view = cluster.view(0).unwrap();
    assert_eq!(view.closed.len(), 3, "{:?}", view.closed);
    for node in NODES {
        gw1.cli(&["node", "open", node]).unwrap();
    }
    cluster.wait_settled(Duration::from_secs(20)).unwrap();

    // Counts 2, 2, 0: the count balance would move one VIP to gw3; one the operator placed, it
    // leaves alone.
    let arranged: Vec<_> = all_vips().into_iter().zip([0, 0, 1, 1]).collect();
    for &(vip, node) in &arranged {
        if cluster.owner(vip).unwrap() != node {
            gw1.cli(&["vip", "move", &vip.to_string(), NODES[node]])
                .unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut table = cluster.converged().unwrap();
    table.sort();
    let mut expected = arranged.clone();
    expected.sort();
    assert_eq!(table, expected, "the table the operator arranged");

    // Stop returns once the daemon is gone (Daemon::stop checks it).
    cluster.stop_daemon(2, false).unwrap();
}
