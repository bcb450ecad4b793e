//! The chaos run (issue 11, "A chaos run"): the three-node cluster testbed under steady load
//! ([`load`]: kept-alive and new HTTP connections through every external VIP, and a UDP prober
//! per VIP sending every millisecond) takes random faults one after another ([`faults`]: host
//! deaths, two deaths with a comeback between, SIGSTOP, links down, loss, restarts on the pins,
//! VIP moves, reloads, a CPU hog), each after the cluster has settled from the last; then,
//! with `storm`, a storm of new connections across the death of their home ([`storm`]). The
//! report ([`report`]) says, per fault, what broke while it lasted, and the totals; all of it
//! follows from the seed, which it prints first and last.
//!
//! Single faults have their own namespace tests; what this adds is sequences and
//! interleavings no one wrote down, under more connections than any one test holds.
pub mod faults;
pub mod load;
pub mod report;
pub mod storm;

use crate::capture;
use crate::cluster::{Cluster, ClusterOptions};
use crate::cluster_topology::{EXTERNAL_VIPS, NODES};
use crate::daemon::{ECHO_PORT, WEB_PORT};
use crate::failover::Prober;
use crate::process::Process;
use crate::topology::{
    client_addrs, BACKENDS, BACKEND_HTTP_PORT, BACKEND_UDP_PORT, CLIENT, EXT_IF, ROUTER,
};
use anyhow::{Context, Result};
use faults::{Picker, Rng};
use report::{Clock, Report};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long faults are started for (the last one then runs to its end and settles).
    pub seconds: u64,
    /// The seed every fault, node and duration is drawn from.
    pub seed: u64,
    /// Whether the new-connection storm follows the faults.
    pub storm: bool,
    /// Where the daemons' logs and configs are copied at the end (the testbed's own
    /// directory goes with it).
    pub logs: Option<PathBuf>,
    /// Whether the web traffic is captured (client, router and back-ends; kept with the
    /// logs): the packets of a broken connection, hop by hop.
    pub capture: bool,
}

/// How long the load runs before the first fault, so the probers and connections are steady.
const WARM_UP: Duration = Duration::from_secs(2);

/// The span after a fault has settled in which a prober that had most of its datagrams
/// unanswered has its flow looked up in the tables.
const UNANSWERED_WINDOW: Duration = Duration::from_millis(500);

/// A seed from the clock, for runs that are not replays (printed, so they can be).
pub fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    faults::Rng::new(now.as_nanos() as u64).next_u64() % 1_000_000
}

/// Runs the chaos: builds the testbed, loads it, injects faults for `options.seconds`, and
/// reports. Everything it built is removed when it returns, on error too (the [`Cluster`]'s
/// drop); the logs are copied first when `options.logs` names a place.
pub fn run(options: &Options) -> Result<Report> {
    println!(
        "chaos: seed {}, {} s of faults{}",
        options.seed,
        options.seconds,
        if options.storm { ", then a storm" } else { "" }
    );
    let mut cluster = Cluster::start(&ClusterOptions::default())?;
    let captures = if options.capture {
        capture_web(&cluster)?
    } else {
        Vec::new()
    };
    let result = run_on(&mut cluster, options);
    drop(captures);
    if let Some(dir) = &options.logs {
        // A replay of the seed replaces the last run's logs rather than mixing with them.
        let _ = std::fs::remove_dir_all(dir);
        match cluster.bed.save_logs(dir) {
            Ok(n) => println!("chaos: {n} logs and configs kept in {}", dir.display()),
            Err(e) => println!("chaos: keeping the logs: {e:#}"),
        }
    }
    let mut report = result?;
    report.logs = options.logs.as_ref().map(|d| d.display().to_string());
    Ok(report)
}

/// Captures the web traffic and the UDP probes where they enter and leave the cluster: the
/// client's side (the web and echo ports), the router's side towards the nodes, and each
/// back-end's (its HTTP and UDP echo ports); the last two with the MACs that name the node
/// each packet came from or went to.
fn capture_web(cluster: &Cluster) -> Result<Vec<Process>> {
    let front = format!("tcp port {WEB_PORT} or udp port {ECHO_PORT}");
    let mut captures = vec![
        capture::start(&cluster.bed, CLIENT, "eth0", &front, "client")?,
        capture::start(&cluster.bed, ROUTER, EXT_IF, &front, "router")?,
    ];
    for backend in BACKENDS {
        let filter = format!("tcp port {BACKEND_HTTP_PORT} or udp port {BACKEND_UDP_PORT}");
        captures.push(capture::start(
            &cluster.bed,
            backend,
            "eth0",
            &filter,
            backend,
        )?);
    }
    Ok(captures)
}

/// Each node's XDP drop counters by reason (`gateway stats`): where the packets of a failed
/// connection may have gone.
fn drop_reasons(cluster: &Cluster) -> Vec<(&'static str, Vec<(String, u64)>)> {
    NODES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let stats = cluster.daemon(i).and_then(|d| d.json(&["stats"]));
            let reasons = stats
                .ok()
                .and_then(|s| s["reasons"].as_object().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(reason, count)| Some((reason, count.as_u64()?)))
                .filter(|(_, count)| *count > 0)
                .collect();
            (*name, reasons)
        })
        .collect()
}

/// What each node's connection table holds of one client connection (`gateway conns`), and
/// of any other connection of its client address on the same NAT port (the back-end takes
/// the two for one): where a broken connection's packets, or an unanswered prober's
/// datagrams, went after the fault. `what` says which it is.
fn tables_of(cluster: &Cluster, what: &str, client: std::net::SocketAddrV4) -> String {
    let wanted = client.to_string();
    let tables: Vec<Result<Vec<serde_json::Value>>> = (0..NODES.len())
        .map(|i| {
            let list = cluster
                .daemon(i)?
                .json(&["conns", "--client", &client.ip().to_string()])?;
            Ok(list.as_array().cloned().unwrap_or_default())
        })
        .collect();
    let ports: Vec<&serde_json::Value> = tables
        .iter()
        .flatten()
        .flatten()
        .filter(|c| c["client"].as_str() == Some(&wanted))
        .map(|c| &c["nat_port"])
        .collect();
    let per_node: Vec<String> = NODES
        .iter()
        .zip(&tables)
        .map(|(name, table)| {
            let entries: Vec<String> = match table {
                Ok(list) => list
                    .iter()
                    .filter(|c| {
                        c["client"].as_str() == Some(&wanted) || ports.contains(&&c["nat_port"])
                    })
                    .map(|c| {
                        format!(
                            "{} -> {} nat {} home {} {} idle {}s",
                            c["client"],
                            c["backend"],
                            c["nat_port"],
                            c["home"],
                            c["state"],
                            c["idle_s"]
                        )
                    })
                    .collect(),
                Err(e) => vec![format!("unreadable: {e:#}")],
            };
            format!("{name}: [{}]", entries.join("; "))
        })
        .collect();
    format!("{what} {wanted} in the tables: {}", per_node.join(", "))
}

fn run_on(cluster: &mut Cluster, options: &Options) -> Result<Report> {
    let clock = Clock::start();
    let mut rng = Rng::new(options.seed);
    let mut picker = Picker::new();
    let watch = cluster.watch_arp()?;
    let probers = EXTERNAL_VIPS
        .iter()
        .zip(client_addrs())
        .map(|(&vip, src)| Prober::start(cluster.client(), src, Cluster::echo(vip)))
        .collect::<Result<Vec<_>>>()?;
    for prober in &probers {
        prober.wait_steady(Duration::from_millis(200), 0.99, Duration::from_secs(10))?;
    }
    let load = load::Load::start(cluster)?;
    println!(
        "{} load running: {} kept-alive connections, new connections and a 1 ms UDP prober on each of {} VIPs",
        clock.stamp(Instant::now()),
        load::KEPT_PER_VIP * EXTERNAL_VIPS.len(),
        EXTERNAL_VIPS.len()
    );
    std::thread::sleep(WARM_UP);
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let mut done = Vec::new();
    let mut aborted = None;
    while Instant::now() < deadline && aborted.is_none() {
        let kind = picker.next(&mut rng);
        let mut record = faults::inject(cluster, kind, &mut rng, &clock);
        // A cluster that does not settle ends the faults; what was seen up to here is
        // reported, and the run fails.
        aborted = faults::settle(cluster, &mut rng, &clock, &mut record)
            .with_context(|| format!("after fault #{}", done.len()))
            .err()
            .map(|e| format!("{e:#}"));
        for client in load.broken() {
            record.step(&clock, tables_of(cluster, "broken", client));
        }
        // A settled cluster answers every prober; one that is not answered is a flow lost
        // on the way, and the tables say where.
        for prober in &probers {
            let answered = prober.answered_fraction(UNANSWERED_WINDOW, Duration::from_millis(20));
            if answered.is_some_and(|f| f < 0.5) {
                let what = format!("unanswered prober of {}:", prober.target());
                record.step(&clock, tables_of(cluster, &what, prober.source()));
                record.step(&clock, format!("drops so far: {:?}", drop_reasons(cluster)));
            }
        }
        done.push(record);
    }
    let ended = Instant::now();
    let seen = load.stop()?;
    let heard = watch.stop()?;
    let mut report = Report::build(options, clock, done, ended, seen, &probers, &heard);
    report.aborted = aborted;
    report.drops = drop_reasons(cluster);
    drop(probers);
    if options.storm && report.aborted.is_none() {
        report.storm = Some(storm::run(cluster, &clock)?);
    }
    Ok(report)
}
