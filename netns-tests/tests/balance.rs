//! New connections are spread over the back-ends by weight, and a UDP service works both ways.
use netns_tests::client::{self, run_requests};
use netns_tests::daemon::ServiceConfig;
use netns_tests::scenario::Scenario;
use netns_tests::topology::{self, VIP};
use std::time::Instant;

/// Sends `count` requests on new connections from all client addresses and checks each
/// back-end's share is within 10% (relative) of its weight's share.
fn spread_follows(weights: &[u32], count: usize) {
    let s = Scenario::start(vec![ServiceConfig::web(weights)]).unwrap();
    let started = Instant::now();
    let tally = run_requests(s.client(), &topology::client_addrs(), s.web(), count, 4).unwrap();
    let elapsed = started.elapsed();
    println!(
        "weights {weights:?}: {count} requests in {elapsed:.2?} ({:.0}/s): {tally}",
        count as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(tally.failures, 0, "{tally}");
    let total: u32 = weights.iter().sum();
    for (i, weight) in weights.iter().enumerate() {
        let expected = count as f64 * f64::from(*weight) / f64::from(total);
        let got = tally
            .by_backend
            .get(&topology::backend_name(i))
            .copied()
            .unwrap_or(0) as f64;
        let deviation = (got - expected).abs() / expected;
        println!(
            "  {}: {got} of expected {expected:.0} ({:+.1}%)",
            topology::backend_name(i),
            (got - expected) / expected * 100.0
        );
        assert!(
            deviation <= 0.10,
            "{} off by {:.1}%",
            topology::backend_name(i),
            deviation * 100.0
        );
    }
    println!(
        "gateway services:\n{}",
        s.daemon.cli(&["services"]).unwrap()
    );
}

#[test]
fn equal_weights_spread_evenly() {
    spread_follows(&[1, 1, 1], 3000);
}

#[test]
fn unequal_weights_spread_by_weight() {
    spread_follows(&[1, 2, 3], 6000);
}

#[test]
fn udp_service_works_both_ways() {
    let s = Scenario::start(vec![ServiceConfig::echo()]).unwrap();
    let vip = s.echo();
    let clients = topology::client_addrs();
    let count = 300;
    let (replies, by_backend) = s
        .client()
        .run(move || {
            let mut by_backend = std::collections::BTreeMap::<String, u32>::new();
            let mut replies = 0;
            for i in 0..count {
                let payload = format!("ping-{i}");
                let (from, text) = client::udp_exchange(clients[i % clients.len()], vip, &payload)?;
                anyhow::ensure!(
                    from == std::net::SocketAddr::V4(vip),
                    "reply from {from}, not the VIP"
                );
                let (backend, echoed) = text.split_once(": ").unwrap_or(("", ""));
                anyhow::ensure!(echoed == payload, "reply {text:?} to {payload:?}");
                *by_backend.entry(backend.to_owned()).or_default() += 1;
                replies += 1;
            }
            Ok((replies, by_backend))
        })
        .unwrap();
    println!("UDP via {VIP}: {replies} of {count} replies, by back-end {by_backend:?}");
    assert_eq!(replies, count);
    assert_eq!(
        by_backend.len(),
        3,
        "every back-end answers: {by_backend:?}"
    );
}
