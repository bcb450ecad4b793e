//! Restart mode: `gateway stop --keep-datapath` and a new daemon break no connection and fail
//! no request, with long-lived and new connections running all along.
use netns_tests::client::Traffic;
use netns_tests::daemon::ServiceConfig;
use netns_tests::scenario::Scenario;
use netns_tests::topology;
use std::time::Duration;

#[test]
fn restart_mode_breaks_nothing_under_traffic() {
    let mut s = Scenario::start(vec![ServiceConfig::web(&[1, 1, 1])]).unwrap();
    let traffic = Traffic::start(s.client(), &topology::client_addrs(), s.web(), 8).unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let stopped = s.daemon.stop(true).unwrap();
    assert!(s.daemon.pin_dir().exists(), "pins kept in restart mode");
    println!("stop --keep-datapath took {stopped:.2?}");
    std::thread::sleep(Duration::from_millis(500));
    let ready = s.daemon.launch().unwrap();
    println!("new daemon ready in {ready:.2?}");
    let status = s.daemon.json(&["status"]).unwrap();
    assert_eq!(
        status["adopted"], true,
        "the new daemon adopted the pinned datapath: {status}"
    );
    std::thread::sleep(Duration::from_secs(1));

    let report = traffic.stop().unwrap();
    print!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert!(report.new.successes() > 100, "{report}");
}
