//! Connection hand-off (docs/architecture.md, "Connection hand-off"): under continuous
//! traffic through one VIP (kept-alive HTTP connections, a stream of new ones, and UDP flows
//! that each keep one source port), the operator moves the VIP to another node, then that
//! node's daemon alone dies (its host and XDP stay up) and the VIP fails over again. Every
//! kept-alive connection must go on answering from its own back-end throughout: the new owner
//! sends the packets of connections it does not know to the VIP's previous holder, which still
//! serves them. UDP flows keep their translation across the planned move (the old owner is alive
//! to send back the datagrams that are not its own); across the daemon's death they keep their
//! back-end but are translated anew (a NAT rebinding, which QUIC, for one, rides out).
//!
//! And a VIP that comes back to a node whose entry of a finished connection is still there
//! while the client reused its ports for a connection the node in between opened.
use netns_tests::client::{http_get_from, KeepAlive, UdpFlow, UdpFlowReport};
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::topology::client_addrs;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Kept-alive HTTP connections through the VIP.
const LONG_LIVED: usize = 8;
/// UDP flows through the VIP.
const UDP_FLOWS: usize = 4;

/// Waits until the live nodes agree that `vip` is owned by a node other than `not`.
fn wait_moved_off(cluster: &Cluster, vip: std::net::Ipv4Addr, not: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(owner) = cluster.owner(vip) {
            if owner != not {
                return owner;
            }
        }
        assert!(Instant::now() < deadline, "{vip} stayed on {}", NODES[not]);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Node `i`'s XDP count of packets along `path`.
fn path_count(cluster: &Cluster, i: usize, path: &str) -> u64 {
    let stats = cluster.daemon(i).unwrap().json(&["stats"]).unwrap();
    stats["paths"][path].as_u64().unwrap_or(0)
}

fn print_flows(what: &str, reports: &[UdpFlowReport]) {
    for (k, r) in reports.iter().enumerate() {
        println!(
            "{what}: udp flow #{k}: {} sent, {} answered, answers {:?}",
            r.sent, r.answered, r.answers
        );
    }
}

/// The back-end of an answer (`backend-2: 10.0.9.1:20013` -> `backend-2`).
fn backend(answer: &str) -> &str {
    answer.split_once(": ").map_or(answer, |(b, _)| b)
}

#[test]
fn connections_survive_a_vip_move_and_the_death_of_the_new_owners_daemon() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let vip = EXTERNAL_VIPS[0];
    let first = cluster.owner(vip).unwrap();
    let (traffic, flows) = cluster.traffic(vip, LONG_LIVED, UDP_FLOWS).unwrap();
    let start_flows = |cluster: &Cluster| {
        UdpFlow::start_many(
            cluster.client(),
            &client_addrs(),
            Cluster::echo(vip),
            UDP_FLOWS,
        )
        .unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));

    // 1. The operator moves the VIP; the CLI returns once the ring has carried it out.
    let second = (first + 1) % NODES.len();
    let asked = Instant::now();
    cluster
        .daemon(first)
        .unwrap()
        .cli(&["vip", "move", &vip.to_string(), NODES[second]])
        .unwrap();
    println!(
        "{vip} moved {} -> {} in {:.1?}",
        NODES[first],
        NODES[second],
        asked.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    let moved: Vec<UdpFlowReport> = flows.into_iter().map(|f| f.stop().unwrap()).collect();
    print_flows("planned move", &moved);
    for (k, r) in moved.iter().enumerate() {
        assert_eq!(
            r.answers.len(),
            1,
            "udp flow #{k} was translated anew by the planned move: {:?}",
            r.answers
        );
    }

    let handed = path_count(&cluster, second, "to_previous");
    println!(
        "{} sent {handed} packets to {}",
        NODES[second], NODES[first]
    );
    assert!(handed > 0, "no packet went to the previous holder");

    // 2. New UDP flows start on the new owner (each first offered to the old one, which sends
    // it back); then the new owner's daemon dies, its XDP stays and serves what it opened.
    let flows = start_flows(&cluster);
    std::thread::sleep(Duration::from_millis(300));
    let returned = path_count(&cluster, first, "to_owner");
    println!(
        "{} sent {returned} datagrams back to {}",
        NODES[first], NODES[second]
    );
    assert!(
        returned >= UDP_FLOWS as u64,
        "the new flows were not offered to the previous holder first"
    );
    let killed = Instant::now();
    cluster.kill_daemon(second).unwrap();
    let third = wait_moved_off(&cluster, vip, second);
    println!(
        "{vip} failed over {} -> {} {:.1?} after the daemon's kill",
        NODES[second],
        NODES[third],
        killed.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop().unwrap();
    println!("{report}");
    let failed_over: Vec<UdpFlowReport> = flows.into_iter().map(|f| f.stop().unwrap()).collect();
    print_flows("daemon death", &failed_over);

    for (k, l) in report.long_lived.iter().enumerate() {
        assert_eq!(
            l.failures, 0,
            "kept-alive connection #{k} broke: {:?}",
            l.first_error
        );
    }
    assert_eq!(
        report.new.failures, 0,
        "new connections failed: {}",
        report.new
    );
    for (k, r) in failed_over.iter().enumerate() {
        let first_backend = backend(&r.answers[0].0);
        assert!(
            r.answers.iter().all(|(a, _)| backend(a) == first_backend),
            "udp flow #{k} changed back-end: {:?}",
            r.answers
        );
    }
}

/// `cluster_returned_block` broke one kept-alive connection of eight so, by chance: gw3
/// translated a connection, which the back-end closed; the VIP moved to gw1, and the client
/// opened a connection of the same ports through it; when the VIP came back to gw3, gw3
/// translated that one's packets with its entry of the finished one (kept `tcp_closing`), to
/// a NAT port the back-end knew only in TIME_WAIT. gw3 now offers gw1 the packets of an own
/// entry of a finished connection it has not seen since it took the VIP, and gw1 serves the
/// new connection. gw3's own open connection, which lived on through gw1's forwarding
/// entries, gw3 goes on translating.
#[test]
fn a_connection_on_reused_ports_stays_with_the_node_that_opened_it() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    let vip = EXTERNAL_VIPS[0];
    let web = Cluster::web(vip);
    let (earlier, later) = (2, 0);
    let reused = SocketAddrV4::new(client_addrs()[0], 41234);
    let other = client_addrs()[1];

    cluster.place(vip, earlier).unwrap();
    let (mut own, own_backend, first) = cluster
        .client()
        .run(move || {
            let mut own = KeepAlive::connect(other, web)?;
            let backend = own.get()?;
            Ok((own, backend, http_get_from(reused, web)?))
        })
        .unwrap();
    println!(
        "{} served a kept-alive connection ({own_backend}) and one closed ({first}) from {reused}",
        NODES[earlier]
    );

    cluster.place(vip, later).unwrap();
    let (mut again, backend) = cluster
        .client()
        .run(move || {
            let mut again = KeepAlive::connect_from(reused, web)?;
            let backend = again.get()?;
            Ok((again, backend))
        })
        .unwrap();
    assert_eq!(own.get().unwrap(), own_backend);
    println!(
        "{} opened a connection from {reused} ({backend})",
        NODES[later]
    );

    cluster.place(vip, earlier).unwrap();
    for i in 0..30 {
        let answer = again.get();
        assert_eq!(
            answer.as_ref().ok(),
            Some(&backend),
            "request {i} on the reused ports, the VIP back at {}: {answer:?}",
            NODES[earlier]
        );
        let answer = own.get();
        assert_eq!(
            answer.as_ref().ok(),
            Some(&own_backend),
            "request {i} on {}'s own connection: {answer:?}",
            NODES[earlier]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let offered = path_count(&cluster, earlier, "to_previous");
    println!(
        "{} sent {offered} packets to {}",
        NODES[earlier], NODES[later]
    );
}
