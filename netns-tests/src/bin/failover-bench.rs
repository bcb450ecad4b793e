//! The failover benchmark: on the cluster testbed, each system under test serves the echo
//! service on a VIP while a prober in the client namespace sends a datagram every millisecond;
//! the VIP's owner is killed as a host dies, and the time until the first echo of a datagram
//! sent after the kill is the failover time. Repeated `--rounds` times per system; writes rows
//! `{"name","value","unit"}` (median and maximum per system) and prints a table.
//!
//! Systems are [`System`]s: the gateway cluster with its default timers, and keepalived with
//! its default and its fast timers.
use anyhow::{Context, Result};
use clap::Parser;
use netns_tests::cluster::{ClusterOptions, GatewaySystem};
use netns_tests::cluster_topology::{self, EXTERNAL_VIPS};
use netns_tests::daemon::ECHO_PORT;
use netns_tests::failover::{self, Limits, Prober, Round, System};
use netns_tests::keepalived::{KeepalivedSystem, Timers};
use netns_tests::topology::{self, client_addrs};
use serde_json::json;
use std::net::SocketAddrV4;
use std::path::PathBuf;

/// Command line.
#[derive(Parser)]
struct Args {
    /// Where to write the result rows (JSON list).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Failovers measured per system.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Which systems to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gateway,keepalived_default,keepalived_fast"
    )]
    systems: Vec<String>,
}

/// The system of a name given on the command line.
fn system(name: &str) -> Result<Box<dyn System>> {
    if name == "gateway" {
        return Ok(Box::new(GatewaySystem::new(ClusterOptions::default())));
    }
    match name.strip_prefix("keepalived_") {
        Some(profile) => Ok(Box::new(KeepalivedSystem::new(Timers::parse(profile)?))),
        None => {
            anyhow::bail!("unknown system `{name}` (gateway, keepalived_default, keepalived_fast)")
        }
    }
}

/// The row the gateway's rows are compared with: keepalived with its defaults.
const BASELINE: &str = "failover_ms_median/keepalived_default";

fn main() -> Result<()> {
    let args = Args::parse();
    let bed = cluster_topology::build()?;
    let _servers = topology::start_backends(&bed)?;
    let client = bed.ns(topology::CLIENT)?;
    let target = SocketAddrV4::new(EXTERNAL_VIPS[0], ECHO_PORT);
    let mut results: Vec<(String, Vec<Round>)> = Vec::new();
    for name in &args.systems {
        let mut system = system(name)?;
        println!("{name}: starting");
        system
            .start(&bed)
            .with_context(|| format!("start {name}"))?;
        let prober = Prober::start(client, client_addrs()[0], target)?;
        let rounds = failover::measure_failovers(
            &bed,
            system.as_mut(),
            &prober,
            args.rounds,
            Limits::default(),
        )
        // A panic, not an error: the testbed then keeps the daemons' logs for a post-mortem.
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let totals = prober.stop()?;
        println!(
            "{name}: prober sent {} datagrams, {} echoed",
            totals.sent, totals.answered
        );
        // Stops the system and removes what it installed before the next one starts.
        drop(system);
        results.push((name.clone(), rounds));
    }

    let mut rows = Vec::new();
    println!(
        "\n{:<24} {:>12} {:>12}  rounds (ms, killed node)",
        "system", "median ms", "max ms"
    );
    for (name, rounds) in &results {
        let Some((median, max)) = failover::median_max_ms(rounds) else {
            continue;
        };
        let each: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.1} {}", r.failover.as_secs_f64() * 1e3, r.killed))
            .collect();
        println!("{name:<24} {median:>12.1} {max:>12.1}  {}", each.join(", "));
        for (stat, value) in [("median", median), ("max", max)] {
            let mut row =
                json!({"name": format!("failover_ms_{stat}/{name}"), "value": value, "unit": "ms"});
            if name == "gateway" {
                row["baseline"] = json!(BASELINE);
            }
            rows.push(row);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
