//! Issue 12, finding 8: in a cluster, `reload` applies this node's keys at once and names the
//! changes it leaves for the restart. The cluster key is rotated with reloads on every node
//! (key 2 added, made active, key 1 removed) and no member is lost on the way; then a datagram
//! sealed with the removed key is refused as of an unknown key (before, the old key stayed
//! valid until a restart, and `reload` answered `reloaded`). A change of `[node]` makes
//! `reload` exit 1 naming it.
use gateway::cluster::keys::Keyring;
use gateway::cluster::types::NodeId;
use netns_tests::cluster::{Cluster, ClusterOptions, KEY};
use netns_tests::cluster_topology::NODES;
use netns_tests::forge::{self, Forger};
use std::path::Path;
use std::time::{Duration, Instant};

/// The new key, hex.
const NEW_KEY: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

/// Rewrites the `[cluster]` keys of the file at `path`: `keys` by id, and `active`.
fn set_keys(path: &Path, keys: &[(u8, &str)], active: u8) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    let cluster = table["cluster"].as_table_mut().unwrap();
    let listed: toml::Table = keys
        .iter()
        .map(|(id, key)| (id.to_string(), toml::Value::String(key.to_string())))
        .collect();
    cluster.insert("keys".into(), toml::Value::Table(listed));
    cluster.insert("active_key".into(), toml::Value::Integer(active.into()));
    std::fs::write(path, toml::to_string(&table).unwrap()).unwrap();
}

/// Every node's file gets `keys` and `active`, and is reloaded there; each reload succeeds.
fn rotate_step(cluster: &Cluster, keys: &[(u8, &str)], active: u8) {
    for (i, name) in NODES.iter().enumerate() {
        set_keys(&cluster.nodes[i].config, keys, active);
        let answer = cluster.daemon(i).unwrap().cli(&["reload"]);
        assert!(answer.is_ok(), "reload on {name}: {answer:?}");
    }
    // A round or two of the token under the new keys.
    std::thread::sleep(Duration::from_millis(300));
}

/// Every node's view of the ring: its state and members.
fn rings(cluster: &Cluster) -> Vec<(String, Vec<String>)> {
    (0..NODES.len())
        .map(|i| {
            let view = cluster.view(i).unwrap();
            (
                view.state,
                view.members.into_iter().map(|m| m.name).collect(),
            )
        })
        .collect()
}

/// gw1's count of datagrams refused for their key id.
fn unknown_key(cluster: &Cluster) -> u64 {
    let view = cluster.view(0).unwrap();
    serde_json::to_value(&view.transport).unwrap()["unknown_key"]
        .as_u64()
        .unwrap()
}

/// A datagram to gw1 as gw3 sealed with key 1 (the one removed).
fn send_with_old_key(cluster: &Cluster) {
    let keys = Keyring::new(1, [(1, forge::key())]).unwrap();
    let mut forger = Forger::new(2, 0, keys).unwrap();
    forger
        .transport
        .send(Instant::now(), NodeId(0), b"old key".to_vec())
        .unwrap();
    assert!(forger.flush(cluster).unwrap() > 0);
}

#[test]
fn keys_rotate_with_reloads_and_a_removed_key_opens_nothing() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let before = rings(&cluster);
    println!("rings before: {before:?}");
    rotate_step(&cluster, &[(1, KEY), (2, NEW_KEY)], 1);
    rotate_step(&cluster, &[(1, KEY), (2, NEW_KEY)], 2);
    rotate_step(&cluster, &[(2, NEW_KEY)], 2);
    let after = rings(&cluster);
    println!("rings after: {after:?}");
    assert_eq!(after, before, "a member was lost during the rotation");

    let refused = unknown_key(&cluster);
    send_with_old_key(&cluster);
    let deadline = Instant::now() + Duration::from_secs(2);
    while unknown_key(&cluster) == refused {
        assert!(
            Instant::now() < deadline,
            "gw1 did not refuse a datagram sealed with the removed key"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rings(&cluster), before, "the ring still runs on key 2");

    // A change of [node] applies at the restart: reload says so, and fails.
    let path = &cluster.nodes[0].config;
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(
        path,
        text.replacen("[node]\n", "[node]\nrealtime = false\n", 1),
    )
    .unwrap();
    let answer = cluster.daemon(0).unwrap().cli(&["reload"]).unwrap_err();
    let message = format!("{answer:#}");
    println!("reload of a [node] change: {message}");
    assert!(
        message.contains("changes of node need a restart"),
        "{message}"
    );
}
