//! Issue test 2: a node that owns VIPs dies under continuous client traffic (a prober per VIP
//! sends a UDP echo request every millisecond): first as a host dies (its daemon killed with
//! SIGKILL and its links taken down), then, after it came back, its daemon alone is killed
//! while the host stays up. Every VIP must serve again on a survivor; the time from the kill to
//! the first good response is reported per VIP and must be under a second with the default
//! timers. In the second case the dead daemon's XDP, still attached, must stop answering ARP
//! for its VIPs when its lease runs out (the dead-man switch), which an ARP watch in the router
//! checks.
use gateway::datapath::netlink::mac_string;
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::failover::Prober;
use netns_tests::host_death;
use netns_tests::topology::{client_addrs, EXT_IF, INT_IF};
use std::time::{Duration, Instant};

/// The default timers must fail a VIP over within this.
const FAILOVER_LIMIT: Duration = Duration::from_secs(1);

/// One prober per external VIP, from distinct client addresses.
fn probers(cluster: &Cluster) -> Vec<Prober> {
    EXTERNAL_VIPS
        .iter()
        .enumerate()
        .map(|(k, vip)| Prober::start(cluster.client(), client_addrs()[k], Cluster::echo(*vip)))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Waits until every prober's service is steady.
fn all_steady(probers: &[Prober]) {
    for p in probers {
        p.wait_steady(Duration::from_millis(200), 0.99, Duration::from_secs(10))
            .unwrap();
    }
}

/// The failover time of every VIP after a kill at `died`; asserts each is under the limit.
fn failovers(probers: &[Prober], died: Instant, what: &str) -> Vec<Duration> {
    let times: Vec<Duration> = probers
        .iter()
        .map(|p| p.failover_after(died, Duration::from_secs(5)).unwrap())
        .collect();
    for (vip, t) in EXTERNAL_VIPS.iter().zip(&times) {
        println!(
            "{what}: {vip} served again {:.1} ms after the kill",
            t.as_secs_f64() * 1e3
        );
        assert!(*t < FAILOVER_LIMIT, "{what}: {vip} took {t:?}");
    }
    times
}

#[test]
fn vips_fail_over_when_a_host_dies_and_when_its_daemon_dies() {
    let mut cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let probers = probers(&cluster);
    all_steady(&probers);

    // 1. The owner of the first VIP dies as a host dies.
    let victim = cluster.owner(EXTERNAL_VIPS[0]).unwrap();
    let before = cluster.converged().unwrap();
    println!("killing host {} (owner in {before:?})", NODES[victim]);
    let dead = host_death::kill(&cluster.bed, NODES[victim], &[EXT_IF, INT_IF]).unwrap();
    failovers(&probers, dead.died, "host death");
    cluster.wait_converged(Duration::from_secs(5)).unwrap();
    let after = cluster.converged().unwrap();
    assert!(after.iter().all(|(_, o)| *o != victim), "{after:?}");

    // It comes back: links up, daemon started again on its pins; it rejoins.
    cluster.kill_daemon(victim).unwrap(); // reaps the process the host's death killed
    dead.revive(&cluster.bed).unwrap();
    cluster.start_daemon(victim).unwrap();
    cluster.wait_settled(Duration::from_secs(20)).unwrap();
    all_steady(&probers);

    // 2. The daemon alone of the first VIP's owner is killed; host, links and XDP stay.
    let victim = cluster.owner(EXTERNAL_VIPS[0]).unwrap();
    let mac = cluster.mac(victim, EXT_IF).unwrap();
    let its_vips: Vec<_> = cluster
        .converged()
        .unwrap()
        .into_iter()
        .filter(|(v, o)| *o == victim && EXTERNAL_VIPS.contains(v))
        .map(|(v, _)| v)
        .collect();
    let watch = cluster.watch_arp().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    println!(
        "killing the daemon of {} ({}), owner of {its_vips:?}",
        NODES[victim],
        mac_string(&mac)
    );
    cluster.kill_daemon(victim).unwrap();
    let died = Instant::now();
    // The probers' flows never stop: the dead daemon's XDP keeps serving the connections it
    // is home of until the router follows the new owner's gratuitous ARP, and the new owner
    // then opens them afresh.
    failovers(&probers, died, "daemon death");
    std::thread::sleep(Duration::from_millis(1000));
    let heard = watch.stop().unwrap();
    let last = heard
        .iter()
        .filter(|h| h.mac == mac && its_vips.contains(&h.addr))
        .map(|h| h.at.saturating_duration_since(died))
        .max();
    println!("its XDP last answered ARP for its VIPs {last:?} after the kill");
    let lease = Duration::from_millis(500);
    assert!(
        last.is_none_or(|t| t < lease),
        "its XDP answered {last:?} after the kill, past the lease"
    );
    for vip in &its_vips {
        let taken = heard
            .iter()
            .filter(|h| h.addr == *vip && h.mac != mac && h.at > died)
            .map(|h| h.at.duration_since(died))
            .min()
            .unwrap_or_else(|| panic!("nobody else answered for {vip}"));
        println!("daemon death: {vip} answered by its new owner {taken:?} after the kill");
        assert!(taken < FAILOVER_LIMIT, "{vip} taken over after {taken:?}");
    }
    cluster.wait_converged(Duration::from_secs(5)).unwrap();
    for p in probers {
        let totals = p.stop().unwrap();
        println!("prober: {} sent, {} echoed", totals.sent, totals.answered);
    }
}
