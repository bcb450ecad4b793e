//! Issue 12, finding 2 (connection copies): a take-over installs only copies that fit the
//! configuration. A holder of the cluster key sends gw2, speaking as gw1 (gw2's predecessor,
//! whose copies gw2 keeps), a copy stream naming a back-end that is no back-end, a service that
//! does not exist, a NAT port in no node's block and a forwarding home that is no node, with one
//! copy that fits beside them (under service and back-end numbers of its own choosing). gw1
//! then dies as a host dies and gw2 takes its block over: it must install the copy that fits,
//! renumbered, and none of the others.
use gateway::cluster::keys::Keyring;
use gateway::cluster::message::{ConnCopy, ConnId, Copies, Message};
use gateway::cluster::types::NodeId;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::daemon::WEB_PORT;
use netns_tests::forge::{self, Forger};
use netns_tests::host_death;
use netns_tests::topology::{backend_addr, BACKEND_HTTP_PORT, EXT_IF, INT_IF};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The client address of every forged copy: nothing is ever sent from it.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 77);
/// A NAT port in gw1's block (`nat_block(0)`).
const NAT_PORT: u16 = 10_500;

/// A copy of a web connection from `CLIENT:port` to the first external VIP.
fn copy(port: u16) -> ConnCopy {
    ConnCopy {
        id: ConnId {
            client: SocketAddrV4::new(CLIENT, port),
            vip: SocketAddrV4::new(EXTERNAL_VIPS[0], WEB_PORT),
            proto: 6,
        },
        state: 0,
        backend: SocketAddrV4::new(backend_addr(0), BACKEND_HTTP_PORT),
        nat_port: NAT_PORT + port % 100,
        backend_index: 200,
        service_index: 9,
        home: None,
    }
}

/// Sends `copies` to gw2 as gw1's whole table, sealed with the cluster key.
fn forge(cluster: &Cluster, copies: Vec<ConnCopy>) {
    let keys = Keyring::new(1, [(1, forge::key())]).unwrap();
    let mut forger = Forger::new(0, 1, keys).unwrap();
    let message = Message::Copies(Copies {
        from: NodeId(0),
        reset: true,
        complete: true,
        stream: 4242,
        copies,
        gone: Vec::new(),
    });
    forger
        .transport
        .send(Instant::now(), NodeId(1), message.encode())
        .unwrap();
    assert!(forger.flush(cluster).unwrap() > 0);
}

/// gw2's connection table entries of `CLIENT`, as `gateway conns` prints them.
fn forged_entries(cluster: &Cluster) -> Vec<serde_json::Value> {
    let list = cluster
        .daemon(1)
        .unwrap()
        .json(&["conns", "--client", &CLIENT.to_string()])
        .unwrap();
    list.as_array().cloned().unwrap_or_default()
}

#[test]
fn a_take_over_installs_only_the_copies_that_fit_the_configuration() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let fits = copy(40_001);
    let no_backend = ConnCopy {
        backend: SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 99), 22),
        ..copy(40_002)
    };
    let no_service = ConnCopy {
        id: ConnId {
            vip: SocketAddrV4::new(EXTERNAL_VIPS[0], 2222),
            ..copy(40_003).id
        },
        ..copy(40_003)
    };
    let no_block = ConnCopy {
        nat_port: 40_000,
        ..copy(40_004)
    };
    let no_node = ConnCopy {
        home: Some(NodeId(7)),
        ..copy(40_005)
    };
    forge(
        &cluster,
        vec![fits, no_backend, no_service, no_block, no_node],
    );
    // gw2 drops gw1's own datagrams from now on (their counters are below the forged one's),
    // which would soon break the ring: gw1 dies at once.
    let _dead = host_death::kill(&cluster.bed, NODES[0], &[EXT_IF, INT_IF]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let entries = forged_entries(&cluster);
        if !entries.is_empty() {
            // The take-over writes them in one batch; a moment more for a second look.
            std::thread::sleep(Duration::from_millis(200));
            break forged_entries(&cluster);
        }
        assert!(
            Instant::now() < deadline,
            "gw2 installed none of the forged copies, not even the one that fits"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("gw2's entries of {CLIENT}: {entries:#?}");
    let clients: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["client"].as_str())
        .collect();
    assert_eq!(clients, ["10.0.0.77:40001"], "only the copy that fits");
    assert_eq!(
        entries[0]["backend"].as_str(),
        Some(
            SocketAddrV4::new(backend_addr(0), BACKEND_HTTP_PORT)
                .to_string()
                .as_str()
        )
    );
}
