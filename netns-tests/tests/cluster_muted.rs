//! Last man standing (docs/architecture.md, "Quorum"; issue 11, item 5). A node whose cluster
//! datagrams are all lost while it hears the others (nftables drops what it sends to the
//! cluster port) finds every pass of the token failing and removes the others one by one. It
//! cannot tell their deaths from its own cut-off, and they are alive and serve their VIPs: it
//! must take none of them. An ARP watch in the router asks for every external VIP every 10 ms:
//! the muted node never answers for a VIP it did not own. After the heal: one ring again.
use netns_tests::cluster::{Cluster, ClusterOptions, CLUSTER_PORT as PORT};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::topology::EXT_IF;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[test]
fn a_node_whose_datagrams_are_lost_takes_no_vip_of_the_others() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    cluster.wait_settled(Duration::from_secs(10)).unwrap();
    let table = cluster.converged().unwrap();
    println!("table: {table:?}");
    let muted = cluster.owner(EXTERNAL_VIPS[0]).unwrap();
    let mac = cluster.mac(muted, EXT_IF).unwrap();
    let theirs: Vec<Ipv4Addr> = EXTERNAL_VIPS
        .iter()
        .copied()
        .filter(|v| !table.contains(&(*v, muted)))
        .collect();
    let watch = cluster.watch_arp().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    println!("{}'s cluster datagrams dropped on output", NODES[muted]);
    let cut = Instant::now();
    cluster
        .nft(
            muted,
            &format!("chain out {{ type filter hook output priority 0; udp dport {PORT} drop; }}"),
        )
        .unwrap();
    let mut waited = false;
    while cut.elapsed() < Duration::from_secs(3) {
        let view = cluster.view(muted).unwrap();
        waited |= view.quorum_wait;
        std::thread::sleep(Duration::from_millis(50));
    }
    let view = cluster.view(muted).unwrap();
    println!(
        "  {} sees {:?} ({}), answers for {:?}; it waited for quorum: {waited}",
        NODES[muted],
        view.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
        view.state,
        cluster.owned(muted).unwrap()
    );
    cluster.nft_clear(muted).unwrap();
    let healed = Instant::now();
    cluster.wait_converged(Duration::from_secs(15)).unwrap();
    println!("  healed, one ring again in {:.2?}", healed.elapsed());

    let heard = watch.stop().unwrap();
    let taken: Vec<_> = heard
        .iter()
        .filter(|h| h.mac == mac && theirs.contains(&h.addr) && h.at >= cut && h.at <= healed)
        .map(|h| (h.addr, h.at.duration_since(cut)))
        .collect();
    println!(
        "  answers of {} for the others' VIPs {theirs:?}: {taken:?}",
        NODES[muted]
    );
    assert!(
        taken.is_empty(),
        "{} answered for VIPs of live nodes: {taken:?}",
        NODES[muted]
    );
}
