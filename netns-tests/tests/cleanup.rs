//! After a clean stop (`gateway stop`, or SIGTERM) nothing of the gateway is left in the
//! kernel: no XDP program on any link, no pins, the program gone from `bpftool prog`.
use netns_tests::client::run_requests;
use netns_tests::cmd;
use netns_tests::daemon::ServiceConfig;
use netns_tests::scenario::Scenario;
use netns_tests::topology;
use std::time::Duration;

/// The ids of the XDP programs on the gateway host's links (`ip -d link`: `prog/xdp id N`).
fn xdp_prog_ids(s: &Scenario) -> Vec<u32> {
    let links = s
        .bed
        .ns(topology::GATEWAY)
        .unwrap()
        .ip(&["-d", "link", "show"])
        .unwrap();
    links
        .split("prog/xdp id ")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

fn assert_nothing_left(s: &Scenario, ids: &[u32]) {
    let gw = s.bed.ns(topology::GATEWAY).unwrap();
    let links = gw.ip(&["-d", "link", "show"]).unwrap();
    assert!(!links.contains("xdp"), "XDP left on a link:\n{links}");
    let net = gw.exec("bpftool", &["net", "show", "-j"]).unwrap();
    let net: serde_json::Value = serde_json::from_str(&net).unwrap();
    assert_eq!(net[0]["xdp"], serde_json::json!([]), "bpftool net: {net}");
    assert!(
        !s.daemon.pin_dir().exists(),
        "pin dir {} left",
        s.daemon.pin_dir().display()
    );
    for id in ids {
        assert!(
            cmd::run("bpftool", &["prog", "show", "id", &id.to_string()]).is_err(),
            "program {id} still loaded"
        );
    }
    println!("nothing left: no XDP on links, no pins, programs {ids:?} unloaded");
}

fn started_with_traffic() -> (Scenario, Vec<u32>) {
    let s = Scenario::start(vec![ServiceConfig::web(&[1, 1, 1])]).unwrap();
    let tally = run_requests(s.client(), &topology::client_addrs(), s.web(), 100, 1).unwrap();
    assert_eq!(tally.failures, 0, "{tally}");
    let ids = xdp_prog_ids(&s);
    println!("served {tally}; XDP programs on the gateway's links: {ids:?}");
    assert_eq!(ids.len(), 2, "the gateway's program runs on ext0 and int0");
    (s, ids)
}

#[test]
fn gateway_stop_leaves_nothing() {
    let (mut s, ids) = started_with_traffic();
    let took = s.daemon.stop(false).unwrap();
    println!("gateway stop took {took:.2?}");
    assert_nothing_left(&s, &ids);
}

#[test]
fn sigterm_leaves_nothing() {
    let (mut s, ids) = started_with_traffic();
    let took = s.daemon.terminate(Duration::from_secs(10)).unwrap();
    println!("SIGTERM to exit took {took:.2?}");
    assert_nothing_left(&s, &ids);
}
