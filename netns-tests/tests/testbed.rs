//! The testbed itself, without the gateway: the topology's plain links and routes work, the
//! pass programs sit on the gateway's bridge ports, and everything is removed on drop, even
//! when the test panics.
use netns_tests::client::{self, Tally};
use netns_tests::cmd;
use netns_tests::topology::{self, BACKEND_HTTP_PORT};
use std::net::SocketAddrV4;

fn namespaces_with(prefix: &str) -> Vec<String> {
    cmd::run("ip", &["netns", "list"])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn topology_links_routes_and_pass_programs() {
    let bed = topology::build().unwrap();
    let servers = topology::start_backends(&bed).unwrap();
    let client = bed.ns(topology::CLIENT).unwrap();
    client.exec("ping", &["-c1", "-W2", "10.0.0.1"]).unwrap();
    let router = bed.ns(topology::ROUTER).unwrap();
    router.exec("ping", &["-c1", "-W2", "10.0.0.2"]).unwrap();

    // Back-end to back-end over the internal bridge, through the real test server.
    let b1 = bed.ns(topology::BACKENDS[0]).unwrap();
    let mut tally = Tally::default();
    for i in 0..topology::BACKENDS.len() {
        let dst = SocketAddrV4::new(topology::backend_addr(i), BACKEND_HTTP_PORT);
        let src = topology::backend_addr(0);
        tally.record(b1.run(move || client::http_get(src, dst)));
    }
    println!("direct requests: {tally}");
    assert_eq!(tally.failures, 0, "{tally}");
    assert_eq!(tally.by_backend.len(), 3, "{tally}");

    // The gateway's two bridge ports run xdp_pass in native mode.
    let links = cmd::run_in(&bed.netns_name("sw"), "ip", &["-d", "link", "show"]).unwrap();
    let xdp_ports = links.matches("prog/xdp").count();
    println!("bridge ports with an XDP program: {xdp_ports}");
    assert_eq!(xdp_ports, 2, "{links}");
    let offload = bed
        .ns(topology::GATEWAY)
        .unwrap()
        .exec("ethtool", &["-k", topology::EXT_IF])
        .unwrap();
    assert!(offload.contains("tx-checksumming: off"), "{offload}");

    let prefix = bed.prefix().to_owned();
    drop(servers);
    drop(bed);
    assert!(namespaces_with(&prefix).is_empty());
}

#[test]
fn removed_even_on_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let bed = topology::build().unwrap();
        tx.send(bed.prefix().to_owned()).unwrap();
        assert_eq!(namespaces_with(bed.prefix()).len(), 7);
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err());
    let prefix = rx.recv().unwrap();
    assert!(
        namespaces_with(&prefix).is_empty(),
        "namespaces left behind"
    );
    // The failed testbed kept its logs for diagnosis; this failure was on purpose.
    std::fs::remove_dir_all(std::env::temp_dir().join(prefix)).unwrap();
}
