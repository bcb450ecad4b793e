//! A busy node's table-sized work never stalls the ring. Three nodes; 200,000 connections
//! written into gw1's pinned tables (both directions); `gateway status` asked of every node
//! every 10 ms over the control socket for 60 s while gw1's sweep walks its tables every second
//! and its copy stream gives the whole table to its successor: no member is ever removed, and
//! no node's shell iteration uses 10 ms of CPU or lasts half as long as a peer waits for it.
use std::{net::Ipv4Addr, path::PathBuf, time::Duration, time::Instant};

use aya::maps::{HashMap, Map, MapData};
use gateway::{
    cluster::transport::TransportConfig,
    control::{client, Request},
    datapath::{batch, conntrack::monotonic_ns},
};
use gateway_common::{maps, proto, tcp_state, Conn, FlowKey, Reply};
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use serde_json::Value;

const CONNECTIONS: u32 = 200_000;
const RUN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// One of a node's pinned maps.
fn pinned<K: aya::Pod, V: aya::Pod>(
    pin_dir: &std::path::Path,
    name: &str,
) -> HashMap<MapData, K, V> {
    let data = MapData::from_pin(pin_dir.join("maps").join(name)).unwrap();
    HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap()
}

/// Writes `CONNECTIONS` open TCP connections (clients in 198.18.0.0/15, the first external
/// VIP's port 80, back-end 10.1.0.11:8080) into the tables pinned under `pin_dir`, as XDP
/// would have written them just now.
fn fill(pin_dir: &std::path::Path) {
    let conns: HashMap<_, FlowKey, Conn> = pinned(pin_dir, maps::CONNS);
    let replies: HashMap<_, FlowKey, Reply> = pinned(pin_dir, maps::REPLIES);
    let now = monotonic_ns();
    let vip = u32::from(EXTERNAL_VIPS[0]).to_be();
    let backend = u32::from(Ipv4Addr::new(10, 1, 0, 11)).to_be();
    let (mut keys, mut values, mut rkeys, mut rvalues) = (vec![], vec![], vec![], vec![]);
    for i in 0..CONNECTIONS {
        let client = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i / 16;
        let key = FlowKey {
            src_addr: client.to_be(),
            dst_addr: vip,
            src_port: (40_000 + (i % 16) as u16).to_be(),
            dst_port: 80u16.to_be(),
            proto: proto::TCP,
            _pad: [0; 3],
        };
        // gw1's NAT block is 10000-16999; the ports repeat over clients, as they may.
        let nat_port = (10_000 + (i % 7_000) as u16).to_be();
        let conn = Conn {
            backend_addr: backend,
            backend_port: 8080u16.to_be(),
            nat_port,
            state: tcp_state::OPEN,
            created_ns: now,
            last_seen_ns: now,
            ..Conn::default()
        };
        rkeys.push(FlowKey {
            src_addr: backend,
            dst_addr: key.src_addr,
            src_port: conn.backend_port,
            dst_port: nat_port,
            proto: proto::TCP,
            _pad: [0; 3],
        });
        rvalues.push(Reply {
            vip,
            vip_port: key.dst_port,
            client_port: key.src_port,
            last_seen_ns: now,
            ..Reply::default()
        });
        keys.push(key);
        values.push(conn);
    }
    batch::update(&replies, &rkeys, &rvalues).unwrap();
    batch::update(&conns, &keys, &values).unwrap();
}

/// What one node's poller saw.
#[derive(Debug, Default)]
struct Seen {
    polls: usize,
    /// Polls whose member list was not all three nodes, with what it was.
    short: Vec<Vec<String>>,
    /// Status answers that failed.
    failed: usize,
    /// The longest time a status answer took.
    slowest: Duration,
}

/// Asks the daemon at `socket` for its status every [`POLL`] for [`RUN`].
fn poll(socket: PathBuf) -> Seen {
    let mut seen = Seen::default();
    let end = Instant::now() + RUN;
    while Instant::now() < end {
        let asked = Instant::now();
        let answer = client::call(&socket, &Request::Status);
        seen.slowest = seen.slowest.max(asked.elapsed());
        match answer {
            Ok(status) => {
                seen.polls += 1;
                let members: Vec<String> = status["cluster"]["members"]
                    .as_array()
                    .map(|m| m.iter().map(|m| m["name"].to_string()).collect())
                    .unwrap_or_default();
                if members.len() != NODES.len() || status["cluster"]["state"] != "member" {
                    seen.short.push(members);
                }
            }
            Err(_) => seen.failed += 1,
        }
        std::thread::sleep(POLL);
    }
    seen
}

fn status(cluster: &Cluster, i: usize) -> Value {
    client::call(&cluster.nodes[i].socket, &Request::Status).unwrap()
}

#[test]
fn a_busy_table_and_busy_operators_never_stall_the_ring() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    fill(&cluster.nodes[0].pin_dir);
    let pollers: Vec<_> = (0..NODES.len())
        .map(|i| {
            let socket = cluster.nodes[i].socket.clone();
            std::thread::spawn(move || poll(socket))
        })
        .collect();
    let seen: Vec<Seen> = pollers.into_iter().map(|p| p.join().unwrap()).collect();

    // The work ran: gw1's sweep counted the table, its successor holds a copy of all of it.
    let gw1 = status(&cluster, 0);
    assert_eq!(gw1["connections"], CONNECTIONS, "gw1's last sweep");
    let successor = (1..NODES.len())
        .find(|&i| {
            status(&cluster, i)["cluster"]["copies"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["node"] == NODES[0] && c["connections"] == CONNECTIONS)
                })
        })
        .expect("no node holds copies of gw1's whole table");
    println!(
        "{} holds copies of gw1's {CONNECTIONS} connections",
        NODES[successor]
    );

    for (i, seen) in seen.iter().enumerate() {
        let latency = &status(&cluster, i)["latency"];
        println!(
            "{}: {} polls ({} failed, slowest answer {:?}), longest shell iteration {} ms \
             ({} ms on CPU), longest wait for the datapath worker {} ms",
            NODES[i],
            seen.polls,
            seen.failed,
            seen.slowest,
            latency["longest_shell_iteration_ms"],
            latency["longest_shell_iteration_cpu_ms"],
            latency["longest_datapath_wait_ms"]
        );
        assert!(
            seen.short.is_empty(),
            "{} saw a member missing: {:?}",
            NODES[i],
            seen.short
        );
        assert_eq!(seen.failed, 0, "{}: status failed", NODES[i]);
        assert!(seen.polls > 1000, "{}: only {} polls", NODES[i], seen.polls);
        // However big the table, no iteration is one the daemon warns of (`SLOW_ITERATION`,
        // 10 ms), by the shell thread's CPU time, which on this kernel (tick accounting, no
        // IRQ time accounting) also holds the softirq work of the whole testbed's packets that
        // ran on its CPU meanwhile; and none lasts half a peer's patience.
        let on_cpu = latency["longest_shell_iteration_cpu_ms"].as_f64().unwrap();
        assert!(
            on_cpu < 10.0,
            "{}: a shell iteration used {on_cpu} ms of CPU",
            NODES[i]
        );
        let elapsed = latency["longest_shell_iteration_ms"].as_f64().unwrap();
        let patience = TransportConfig::default().give_up_after().as_secs_f64() * 1000.0;
        assert!(
            elapsed < patience / 2.0,
            "{}: a shell iteration took {elapsed} ms, a peer gives up after {patience} ms",
            NODES[i]
        );
    }
}
