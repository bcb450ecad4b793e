//! Long-lived connections keep their back-end while a back-end is added with `gateway reload`.
use netns_tests::client::{run_requests, Traffic};
use netns_tests::daemon::ServiceConfig;
use netns_tests::scenario::Scenario;
use netns_tests::topology::{self, BACKEND_HTTP_PORT};
use std::time::{Duration, Instant};

#[test]
fn long_lived_connections_keep_backend_across_reload() {
    let mut s = Scenario::start(vec![ServiceConfig::web(&[1, 1])]).unwrap();
    let clients = topology::client_addrs();
    let traffic = Traffic::start(s.client(), &clients, s.web(), 8).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    s.config.services[0]
        .backends
        .push((topology::backend_addr(2), BACKEND_HTTP_PORT, 1));
    s.config.write().unwrap();
    let started = Instant::now();
    s.daemon.cli(&["reload"]).unwrap();
    println!("reload took {:.2?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(1));

    let report = traffic.stop().unwrap();
    print!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert!(
        report.long_lived.iter().all(|l| l.requests > 50),
        "{report}"
    );

    let after = run_requests(s.client(), &clients, s.web(), 600, 2).unwrap();
    println!("after reload: {after}");
    assert_eq!(after.failures, 0, "{after}");
    assert!(
        after.by_backend.contains_key(&topology::backend_name(2)),
        "{after}"
    );
}
