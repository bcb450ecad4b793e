//! Signed, staged configuration (docs/architecture.md, "Configuration change"): an operator edits
//! the cluster-wide part of one node's file and runs `gateway reload` there; the command returns
//! once every member runs the new version, each node's file holds it (with its own `[node]`
//! section), and the data path follows it. A node that was down meanwhile fetches the version the
//! ring runs when it comes back. A bad file changes nothing and names file, line and field; a
//! change one member refuses (it would not be a valid configuration there) changes nothing and
//! names the member.
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::topology::{backend_addr, backend_name, client_addrs};
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

/// Sets the weight of back-end `address` in every service of the config file at `path`.
fn set_weight(path: &Path, address: Ipv4Addr, weight: i64) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    for service in table["service"].as_array_mut().unwrap() {
        for backend in service["backend"].as_array_mut().unwrap() {
            if backend["address"].as_str() == Some(&address.to_string()) {
                backend["weight"] = toml::Value::Integer(weight);
            }
        }
    }
    std::fs::write(path, toml::to_string(&table).unwrap()).unwrap();
}

/// The weights of `address` in node `i`'s running services (it is in some: a check that
/// every weight is 0 must not pass on none).
fn weights(cluster: &Cluster, i: usize, address: Ipv4Addr) -> Vec<u64> {
    let services = cluster.daemon(i).unwrap().json(&["services"]).unwrap();
    let found: Vec<u64> = services
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["backends"].as_array().unwrap().clone())
        .filter(|b| b["address"].as_str() == Some(&address.to_string()))
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    assert!(
        !found.is_empty(),
        "{address} is in no service of {}",
        NODES[i]
    );
    found
}

/// (version this node runs, version the ring runs) of node `i`.
fn versions(cluster: &Cluster, i: usize) -> (u32, u32) {
    let view = cluster.view(i).unwrap();
    (view.config_version, view.ring_config_version)
}

/// Which back-ends answer new connections through the first VIP.
fn serving(cluster: &Cluster) -> Vec<String> {
    let web = Cluster::web(EXTERNAL_VIPS[0]);
    let report =
        netns_tests::client::run_requests(cluster.client(), &client_addrs(), web, 300, 2).unwrap();
    assert_eq!(report.failures, 0, "{report}");
    report.by_backend.keys().cloned().collect()
}

/// Waits until node `i` runs configuration `version`.
fn wait_version(cluster: &Cluster, i: usize, version: u32, within: Duration) -> Duration {
    let started = Instant::now();
    while versions(cluster, i).0 != version {
        assert!(
            started.elapsed() < within,
            "{} runs {:?}, not version {version}",
            NODES[i],
            versions(cluster, i)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[test]
fn a_reload_on_one_node_switches_every_node_and_a_late_node_catches_up() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    for (i, name) in NODES.iter().enumerate() {
        assert_eq!(versions(&cluster, i), (1, 1), "{name} at start");
    }
    let (b1, b3) = (backend_addr(0), backend_addr(2));
    assert!(serving(&cluster).contains(&backend_name(2)));

    // gw1's operator drains back-end 3.
    set_weight(&cluster.nodes[0].config, b3, 0);
    let started = Instant::now();
    cluster.daemon(0).unwrap().cli(&["reload"]).unwrap();
    let took = started.elapsed();
    println!("reload on gw1: every member runs version 2 after {took:.1?}");
    // The node that asked runs it before its operator hears so.
    assert!(
        weights(&cluster, 0, b3).iter().all(|&w| w == 0),
        "gw1 drained b3"
    );
    for (i, name) in NODES.iter().enumerate() {
        let settled = wait_version(&cluster, i, 2, Duration::from_secs(1));
        println!("{name} runs version 2 ({settled:.1?} after reload returned)");
        assert!(
            weights(&cluster, i, b3).iter().all(|&w| w == 0),
            "{name} drained b3"
        );
        let file = std::fs::read_to_string(&cluster.nodes[i].config).unwrap();
        let parsed: toml::Table = toml::from_str(&file).unwrap();
        assert_eq!(
            parsed["node"]["name"].as_str(),
            Some(*name),
            "own [node] kept"
        );
        assert_eq!(parsed["cluster"]["config_version"].as_integer(), Some(2));
        assert!(parsed["cluster"].get("keys").is_some(), "secrets kept");
        let mut previous = cluster.nodes[i].config.clone().into_os_string();
        previous.push(".previous");
        let previous = std::fs::read_to_string(&previous).unwrap();
        assert!(previous != file, "{name} keeps the file it replaced");
    }
    let after = serving(&cluster);
    println!("new connections after the drain: {after:?}");
    assert!(!after.contains(&backend_name(2)), "{after:?}");

    // A bad file: refused with file, line and field; nothing changes anywhere.
    let path = cluster.nodes[0].config.clone();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replacen("weight = 0", "weight = \"heavy\"", 1)).unwrap();
    let refused = cluster.daemon(0).unwrap().cli(&["reload"]).unwrap_err();
    let message = format!("{refused:#}");
    println!("bad file: {message}");
    assert!(message.contains(&path.display().to_string()) && message.contains("weight"));
    std::fs::write(&path, &good).unwrap();
    for i in 0..NODES.len() {
        assert_eq!(versions(&cluster, i), (2, 2));
    }

    // gw3's NAT block moved in the node map but not in gw3's own [node]: valid on gw1 and gw2,
    // not on gw3, which refuses it; the operator hears which node refused, nothing changes.
    let mut table: toml::Table = toml::from_str(&good).unwrap();
    table["cluster"]["node"][2]["nat_ports"] = toml::Value::String("60000-60999".into());
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    let refused = format!(
        "{:#}",
        cluster.daemon(0).unwrap().cli(&["reload"]).unwrap_err()
    );
    println!("refused by a member: {refused}");
    assert!(refused.contains("gw3 refused"), "{refused}");
    std::fs::write(&path, &good).unwrap();
    for i in 0..NODES.len() {
        assert_eq!(versions(&cluster, i), (2, 2));
    }
    assert_eq!(cluster.view(2).unwrap().config_refused, 1);

    // gw3 stops; gw2's operator brings back-end 3 back and drains back-end 1.
    cluster.stop_daemon(2, false).unwrap();
    cluster.wait_settled(Duration::from_secs(10)).unwrap();
    set_weight(&cluster.nodes[1].config, b3, 1);
    set_weight(&cluster.nodes[1].config, b1, 0);
    cluster.daemon(1).unwrap().cli(&["reload"]).unwrap();
    for i in 0..2 {
        assert_eq!(versions(&cluster, i), (3, 3));
    }
    // gw3 starts on its old file (version 2) and takes the ring's version 3.
    let started = Instant::now();
    cluster.start_daemon(2).unwrap();
    let caught_up = wait_version(&cluster, 2, 3, Duration::from_secs(10));
    println!(
        "gw3 restarted with version 2, runs version 3 {:.1?} after its start ({caught_up:.1?} after ready)",
        started.elapsed()
    );
    assert!(weights(&cluster, 2, b1).iter().all(|&w| w == 0));
    let file = std::fs::read_to_string(&cluster.nodes[2].config).unwrap();
    assert!(
        file.contains("config_version = 3"),
        "gw3's file holds version 3"
    );
    cluster.wait_settled(Duration::from_secs(10)).unwrap();
    let after = serving(&cluster);
    println!("new connections after the second change: {after:?}");
    assert!(
        !after.contains(&backend_name(0)) && after.contains(&backend_name(2)),
        "{after:?}"
    );
}
