//! Issue test 5: the token holder dies mid-round (its host killed while `status` shows it
//! holding the token; a long hold makes that moment easy to catch). The survivors recover the
//! token with the 911 and exactly one token survives, which the sequence numbers in the status
//! output prove: the highest sequence rises by one per hop, never faster, and no node drops a
//! stale (second) token.
use netns_tests::cluster::{Cluster, ClusterOptions};
use netns_tests::cluster_topology::NODES;
use netns_tests::host_death;
use netns_tests::topology::{EXT_IF, INT_IF};
use std::time::{Duration, Instant};

/// A long hold, so the test can see who holds the token and kill it then.
const HOLD: Duration = Duration::from_millis(200);

#[test]
fn one_token_survives_the_death_of_its_holder() {
    let options = ClusterOptions {
        timers: vec![("token_hold".into(), "200ms".into())],
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(&options).unwrap();

    // Find the holder and kill its host while it holds the token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (holder, seq) = loop {
        let held = (0..NODES.len()).find_map(|i| {
            let view = cluster.view(i).ok()?;
            view.token.holding.then_some((i, view.token.seq))
        });
        if let Some(found) = held {
            break found;
        }
        assert!(Instant::now() < deadline, "nobody seen holding the token");
    };
    let dead = host_death::kill(&cluster.bed, NODES[holder], &[EXT_IF, INT_IF]).unwrap();
    println!(
        "killed {} holding the token (highest sequence it had seen #{seq})",
        NODES[holder]
    );
    cluster.gateways.kill_daemon(holder).unwrap();
    cluster.wait_converged(Duration::from_secs(10)).unwrap();
    println!(
        "survivors converged {:.0?} after the kill",
        dead.died.elapsed()
    );
    let survivors: Vec<usize> = (0..NODES.len()).filter(|&i| i != holder).collect();

    // Watch the sequence for a while: one token means one hop per hold.
    let watch = Duration::from_secs(3);
    let sample = |c: &Cluster| -> (u64, u64) {
        survivors.iter().fold((0, 0), |(seq, stale), &i| {
            let t = c.view(i).unwrap().token;
            (seq.max(t.seq), stale + t.stale)
        })
    };
    let (first, stale_before) = sample(&cluster);
    let started = Instant::now();
    let mut seqs = vec![first];
    while started.elapsed() < watch {
        std::thread::sleep(Duration::from_millis(20));
        let (seq, _) = sample(&cluster);
        assert!(seq >= *seqs.last().unwrap(), "the sequence went back");
        seqs.push(seq);
    }
    let (last, stale_after) = sample(&cluster);
    let hops = last - first;
    let most = (started.elapsed().as_secs_f64() / HOLD.as_secs_f64()).ceil() as u64 + 1;
    println!(
        "token #{first} -> #{last}: {hops} hops in {:.2?} (one token: at most {most}); \
         stale tokens dropped {stale_before} -> {stale_after}",
        started.elapsed()
    );
    assert!(hops >= most / 2, "the token is not moving: {hops} hops");
    assert!(hops <= most, "{hops} hops: more than one token");
    assert_eq!(
        stale_after, stale_before,
        "a second token was dropped as stale"
    );
    for &i in &survivors {
        let view = cluster.view(i).unwrap();
        let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        assert!(!names.contains(&NODES[holder]), "{names:?}");
    }
}
