//! Issue test 3: a node's daemon hangs (SIGSTOP) past the ring's timeout and resumes
//! (SIGCONT). Meanwhile an ARP watch in the router asks for every external VIP every 10 ms and
//! records every answer. The hung node's XDP stops answering when its ring-capped lease runs
//! out, before the others take its VIPs; once resumed it drops its VIPs, never answers for a VIP
//! another node owns, and rejoins. The VIPs stick (persistence 1), so after the pause the
//! resumed node owns none and any answer from it would be a violation.
use gateway::datapath::netlink::mac_string;
use netns_tests::cluster::{all_vips, Cluster, ClusterOptions, Placement};
use netns_tests::cluster_topology::{EXTERNAL_VIPS, NODES};
use netns_tests::topology::EXT_IF;
use std::time::{Duration, Instant};

#[test]
fn a_hung_node_goes_silent_then_rejoins_without_answering_for_others() {
    let placements = all_vips()
        .into_iter()
        .enumerate()
        .map(|(k, vip)| Placement {
            vip,
            preferred: k % NODES.len(),
            persistence: 1,
        })
        .collect();
    let options = ClusterOptions {
        placements,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(&options).unwrap();
    let hung = cluster.owner(EXTERNAL_VIPS[0]).unwrap();
    let mac = cluster.mac(hung, EXT_IF).unwrap();
    let before = cluster.converged().unwrap();
    // The external ones, which the router's ARP watch can ask for.
    let its_vips: Vec<_> = before
        .iter()
        .filter(|(v, o)| *o == hung && EXTERNAL_VIPS.contains(v))
        .map(|(v, _)| *v)
        .collect();
    println!(
        "pausing {} ({}), owner of {its_vips:?}",
        NODES[hung],
        mac_string(&mac)
    );

    let watch = cluster.watch_arp().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let paused_at = Instant::now();
    cluster.pause(hung).unwrap();
    let moved_after = cluster.wait_converged(Duration::from_secs(5)).unwrap();
    let moved_at = Instant::now();
    let after = cluster.converged().unwrap();
    println!("the others took over {moved_after:.2?} after the pause: {after:?}");
    // Past the timeout by a wide margin, then resume.
    std::thread::sleep(Duration::from_secs(2));
    let resumed_at = Instant::now();
    cluster.resume(hung).unwrap();
    let rejoined_after = cluster.wait_converged(Duration::from_secs(10)).unwrap();
    println!(
        "{} rejoined {rejoined_after:.2?} after SIGCONT",
        NODES[hung]
    );
    std::thread::sleep(Duration::from_secs(1));
    let heard = watch.stop().unwrap();
    let final_owners = cluster.converged().unwrap();

    // Its own primary address is its kernel's to answer for; only VIP answers count.
    let from_hung: Vec<_> = heard
        .iter()
        .filter(|h| h.mac == mac && EXTERNAL_VIPS.contains(&h.addr))
        .collect();
    let last_before = from_hung
        .iter()
        .filter(|h| h.at < moved_at)
        .map(|h| h.at.duration_since(paused_at))
        .max();
    println!(
        "{} answers heard, {} from the hung node; its last one {:?} after SIGSTOP",
        heard.len(),
        from_hung.len(),
        last_before
    );
    // Silent before the others took over: its last answer precedes every new owner's first.
    for vip in &its_vips {
        let first_new = heard
            .iter()
            .filter(|h| h.addr == *vip && h.mac != mac && h.at > paused_at)
            .map(|h| h.at)
            .min()
            .unwrap_or_else(|| panic!("nobody answered for {vip} after the pause"));
        let last_old = from_hung
            .iter()
            .filter(|h| h.addr == *vip)
            .map(|h| h.at)
            .max();
        if let Some(last_old) = last_old {
            assert!(
                last_old < first_new,
                "{vip}: the hung node answered {:?} after the new owner's first answer",
                last_old.duration_since(first_new)
            );
        }
        println!(
            "{vip}: new owner answered {:.0?} after SIGSTOP",
            first_new.duration_since(paused_at)
        );
    }
    let after_resume: Vec<String> = from_hung
        .iter()
        .filter(|h| h.at >= resumed_at)
        .map(|h| format!("{} at +{:?}", h.addr, h.at.duration_since(resumed_at)))
        .collect();
    assert!(
        after_resume.is_empty(),
        "answers from the resumed node: {after_resume:?}"
    );
    assert!(
        final_owners.iter().all(|(_, o)| *o != hung),
        "persistence 1: the VIPs stay where they went: {final_owners:?}"
    );
    assert_eq!(after, final_owners, "nothing moved when it rejoined");
}
