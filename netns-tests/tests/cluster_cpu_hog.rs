//! Issue 11, item 5: a busy host. Four busy threads share one CPU with every thread of gw2's
//! daemon for 20 s, under kept-alive HTTP and a UDP flow on every external VIP. The ring's
//! thread runs at real-time priority, so the hog delays it by no more than the kernel's
//! scheduling of it: no node's ring ever lacks a member other than the hog's node, no VIP is
//! answered by two nodes, and no connection breaks.
use netns_tests::arp::longest_dual;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::hog::{self, CpuHog};
use std::time::{Duration, Instant};

const HOGGED: usize = 1;
const CPU: usize = 1;
const RUN: Duration = Duration::from_secs(20);

#[test]
fn a_cpu_hog_beside_a_daemon_removes_no_other_member_and_breaks_nothing() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    let mut traffic = Vec::new();
    for vip in EXTERNAL_VIPS {
        traffic.push(cluster.traffic(vip, 4, 1).unwrap());
    }
    let watch = cluster.watch_arp().unwrap();
    hog::pin_process(cluster.daemon(HOGGED).unwrap().pid().unwrap(), CPU).unwrap();
    let hog = CpuHog::start(CPU, 4).unwrap();
    let started = Instant::now();
    let mut missing = Vec::new();
    let mut samples = 0;
    while started.elapsed() < RUN {
        for i in (0..NODES.len()).filter(|&i| i != HOGGED) {
            let view = cluster.view(i).unwrap();
            for (j, name) in NODES.iter().enumerate() {
                if j != HOGGED && !view.members.iter().any(|m| m.name == *name) {
                    missing.push(format!(
                        "{:.2?}: {} sees no {name}",
                        started.elapsed(),
                        NODES[i]
                    ));
                }
            }
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hog);
    let hogged = cluster.status(HOGGED).unwrap();
    println!("{}: latency {}", NODES[HOGGED], hogged["latency"]);
    let heard = watch.stop().unwrap();
    let mut failures = 0;
    for (vip, (requests, flows)) in EXTERNAL_VIPS.iter().zip(traffic) {
        let report = requests.stop().unwrap();
        println!("{vip}: {report}");
        failures += report.failures();
        for flow in flows {
            let flow = flow.stop().unwrap();
            println!("{vip}: udp {} sent, {} answered", flow.sent, flow.answered);
        }
    }
    println!("{samples} samples, {} with a member missing", missing.len());
    for line in missing.iter().take(20) {
        println!("  {line}");
    }
    for vip in EXTERNAL_VIPS {
        let dual = longest_dual(&heard, vip, Duration::from_millis(10));
        assert!(
            dual.is_zero(),
            "{vip} had two answering owners for {dual:?}"
        );
    }
    assert!(
        missing.is_empty(),
        "a member other than the hog's was removed"
    );
    assert_eq!(failures, 0, "requests failed beside the hog");
}
