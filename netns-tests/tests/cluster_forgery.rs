//! Issue test 7: a forged, a replayed and a wrongly keyed cluster message, and one from an
//! address that is no node, each change nothing and are counted. A real token datagram from
//! gw3 (gw1's predecessor in the ring) to gw1 is captured on gw1's NIC; variants of it are sent
//! to gw1's cluster port from gw3's own address (so the address filter lets them through to the
//! authentication) and from the router (which the XDP address filter drops).
use gateway::cluster::envelope::{self, Header};
use gateway::cluster::keys::Keyring;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{external_addr, ROUTER_ADDR};
use netns_tests::netns::Netns;
use netns_tests::packet::capture_udp;
use netns_tests::topology::EXT_IF;
use ring::hmac;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

const PORT: u16 = 7400;

/// Sends `bytes` from `src` (any port) to gw1's cluster port, inside `ns`.
fn send(ns: &Netns, src: Ipv4Addr, bytes: Vec<u8>) {
    let dst = SocketAddrV4::new(external_addr(0), PORT);
    ns.run(move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))?;
        socket.send_to(&bytes, dst)?;
        Ok(())
    })
    .unwrap();
}

/// gw1's transport counter `name` and XDP drop reason `not_peer`.
fn counters(cluster: &Cluster, name: &str) -> (u64, u64) {
    let view = cluster.view(0).unwrap();
    let transport = serde_json::to_value(&view.transport).unwrap();
    let stats = cluster.daemon(0).unwrap().json(&["stats"]).unwrap();
    (
        transport[name].as_u64().unwrap(),
        stats["reasons"]["not_peer"].as_u64().unwrap_or(0),
    )
}

/// Sends `bytes` and waits until gw1's counter `name` rose by one.
fn rejected(cluster: &Cluster, ns: &Netns, src: Ipv4Addr, bytes: Vec<u8>, name: &str) {
    let (before, _) = counters(cluster, name);
    send(ns, src, bytes);
    for _ in 0..50 {
        let (now, _) = counters(cluster, name);
        if now > before {
            assert_eq!(now, before + 1, "{name}");
            println!("{name}: {before} -> {now}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} did not count the message");
}

#[test]
fn forged_replayed_wrongly_keyed_and_stranger_messages_change_nothing() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let before = cluster.converged().unwrap();
    let names = |c: &Cluster| -> Vec<String> {
        c.view(0)
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.name)
            .collect()
    };
    let members_before = names(&cluster);
    let gw3 = external_addr(2);
    // A data fragment (kind 1 at byte 5): a piece of the token or another ring message.
    let is_data = |bytes: &[u8]| bytes.get(5) == Some(&1);
    let real = capture_udp(
        cluster.ns(0),
        EXT_IF,
        (gw3, PORT),
        is_data,
        Duration::from_secs(2),
    )
    .unwrap();
    let keys = Keyring::new(1, [(1, netns_tests::forge::key())]).unwrap();
    let opened = envelope::open(&real, &keys).expect("a real datagram opens");
    println!(
        "captured {} bytes: {:?} #{} from gw3",
        real.len(),
        opened.header.kind,
        opened.header.counter
    );
    let sender_ns = cluster.ns(2);

    // Replayed: the very bytes again.
    rejected(&cluster, sender_ns, gw3, real.clone(), "replayed");

    // Forged: one payload byte changed, the tag left as it was.
    let mut forged = real.clone();
    forged[envelope::HEADER_LEN] ^= 0x5a;
    rejected(&cluster, sender_ns, gw3, forged, "bad_auth");

    // Wrongly keyed: a fresh counter, sealed with a key the cluster does not have.
    let header = Header {
        counter: opened.header.counter + (1 << 40),
        ..opened.header
    };
    let wrong = hmac::Key::new(hmac::HMAC_SHA256, &[0x33; 32]);
    let sealed = envelope::seal(&header, opened.payload, &wrong);
    rejected(&cluster, sender_ns, gw3, sealed, "bad_auth");

    // A key id nobody configured.
    let unknown = Header {
        key_id: 9,
        ..header
    };
    let sealed = envelope::seal(&unknown, opened.payload, &wrong);
    rejected(&cluster, sender_ns, gw3, sealed, "unknown_key");

    // From an address that is no node: XDP drops it before the daemon sees it.
    let (received, not_peer) = counters(&cluster, "received");
    send(cluster.router(), ROUTER_ADDR, real);
    let mut dropped = false;
    for _ in 0..50 {
        if counters(&cluster, "received").1 > not_peer {
            dropped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dropped, "XDP counted no not_peer drop");
    println!(
        "not_peer: {not_peer} -> {}",
        counters(&cluster, "received").1
    );
    assert!(counters(&cluster, "received").0 >= received);

    // Nothing changed: the same ring, the same owners.
    assert_eq!(cluster.converged().unwrap(), before);
    assert_eq!(names(&cluster), members_before);
}
