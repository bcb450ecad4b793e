//! Issue 11, item 2: restart mode in a cluster. A node's daemon stops with `--keep-datapath`
//! and starts again on its pins while kept-alive connections run through every external VIP.
//! Its VIPs move away while it is down, its XDP keeps serving the connections it is home of,
//! and when it rejoins nothing may break: neither its own connections nor those of a VIP the
//! cluster hands to it, which it is given only once its tables are whole.
use netns_tests::client::Traffic;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::topology::client_addrs;
use std::time::{Duration, Instant};

#[test]
fn a_daemon_restart_on_its_pins_breaks_no_connection() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    let before = cluster.converged().unwrap();
    println!("before: {before:?}");
    let traffic: Vec<Traffic> = EXTERNAL_VIPS
        .iter()
        .map(|vip| {
            Traffic::start(cluster.client(), &client_addrs(), Cluster::web(*vip), 4).unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let restarted = 1;
    let stopped = cluster.stop_daemon(restarted, true).unwrap();
    println!(
        "{} stopped with --keep-datapath in {stopped:?}",
        NODES[restarted]
    );
    cluster.wait_converged(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    println!("while it is away: {:?}", cluster.converged().unwrap());
    let started = Instant::now();
    cluster.start_daemon(restarted).unwrap();
    // Until its tables are whole (its predecessor's connections copied in), the restarted
    // node is listed unready and given no VIP: every view of the ring says so at once.
    let name = NODES[restarted];
    let (mut unready_seen, mut whole_at) = (0, None);
    while started.elapsed() < Duration::from_secs(4) {
        for i in cluster.live() {
            let Ok(view) = cluster.view(i) else { continue };
            let unready = view.unready.iter().any(|n| n == name);
            let owns: Vec<&str> = view
                .vips
                .iter()
                .filter(|v| v.owner.as_deref() == Some(name))
                .map(|v| v.address.as_str())
                .collect();
            assert!(
                !unready || owns.is_empty(),
                "{} sees {name} own {owns:?} while its tables are not whole",
                NODES[i]
            );
            unready_seen += usize::from(unready);
            let member = view.members.iter().any(|m| m.name == name);
            if i == restarted && member && !unready && whole_at.is_none() {
                whole_at = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("{name} listed unready in {unready_seen} views; whole after {whole_at:.2?}");
    assert!(whole_at.is_some(), "{name} never became whole");
    // Its own log agrees: it answered for no VIP before it said its tables were whole.
    let log = cluster.daemon(restarted).unwrap().log_tail(usize::MAX);
    let lines: Vec<&str> = log.lines().collect();
    let whole = lines.iter().position(|l| l.contains("tables whole"));
    let answering = lines
        .iter()
        .position(|l| l.contains("answering for") && !l.ends_with("{}"));
    println!(
        "{name}'s log: {}",
        lines
            .iter()
            .filter(|l| l.contains("tables whole") || l.contains("answering for"))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(whole.is_some(), "{name} never logged its tables whole");
    assert!(
        answering.is_none_or(|a| Some(a) > whole),
        "{name} answered for a VIP before its tables were whole"
    );
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    println!(
        "{:.2?} after the start: {:?}",
        started.elapsed(),
        cluster.converged().unwrap()
    );
    std::thread::sleep(Duration::from_secs(2));

    let mut failures = 0;
    for (vip, t) in EXTERNAL_VIPS.iter().zip(traffic) {
        let report = t.stop().unwrap();
        println!("{vip}: {report}");
        failures += report.long_lived.iter().filter(|l| l.failures > 0).count();
        assert_eq!(report.new.failures, 0, "new connections to {vip} failed");
    }
    assert_eq!(failures, 0, "kept-alive connections broke");
}
