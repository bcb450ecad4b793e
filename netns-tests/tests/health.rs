//! A killed back-end gets no new connections once the health check took it down.
use netns_tests::client::run_requests;
use netns_tests::daemon::ServiceConfig;
use netns_tests::scenario::Scenario;
use netns_tests::topology;
use std::time::{Duration, Instant};

#[test]
fn killed_backend_gets_no_new_connections_after_fall_time() {
    let mut s = Scenario::start(vec![ServiceConfig::web(&[1, 1, 1])]).unwrap();
    let clients = topology::client_addrs();
    let before = run_requests(s.client(), &clients, s.web(), 300, 2).unwrap();
    println!("before: {before}");
    assert_eq!(before.failures, 0, "{before}");

    let victim = topology::backend_addr(1).to_string();
    let killed = Instant::now();
    let mut server = s.servers[1].take().unwrap();
    server.signal(libc::SIGKILL).unwrap();
    server.wait_exit(Duration::from_secs(5)).unwrap();
    // interval 200ms x fall 2, each check up to 150ms: down within about 0.7 s.
    let limit = Duration::from_millis(200 * 2 + 150 + 1000);
    let down_after = loop {
        let services = s.daemon.json(&["services"]).unwrap();
        let healthy = services[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == victim.as_str())
            .map(|b| b["healthy"].as_bool() == Some(true))
            .unwrap();
        if !healthy {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < limit,
            "{victim} still healthy after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("{victim} marked down {down_after:.2?} after the kill");

    let after = run_requests(s.client(), &clients, s.web(), 600, 2).unwrap();
    println!("after: {after}");
    if after.failures > 0 {
        // Show where the failed connections went (state, age) to tell a stale entry from a
        // table that still names the dead back-end.
        let conns = s.daemon.cli(&["conns", "--backend", &victim]).unwrap();
        println!("connections to {victim}:\n{conns}");
    }
    assert_eq!(after.failures, 0, "{after}");
    assert!(
        !after.by_backend.contains_key(&topology::backend_name(1)),
        "{after}"
    );
    assert_eq!(after.by_backend.len(), 2, "{after}");
}
