//! The end-to-end benchmark: the same testbed, client, back-ends (the testbed's `testsrv`) and
//! generator (wrk), once through the gateway (XDP) and once through kernel nftables DNAT on the
//! gateway host. Writes rows `{"name","value","unit","baseline","ratio"}` and reports what
//! limited each run (CPU of the machine and of each process).
use anyhow::{ensure, Result};
use clap::Parser;
use netns_tests::cpu::{CpuMeter, CpuUse};
use netns_tests::daemon::{Daemon, GatewayConfig, ServiceConfig, WEB_PORT};
use netns_tests::nft_baseline::NftBaseline;
use netns_tests::testbed::Testbed;
use netns_tests::topology::{self, VIP};
use netns_tests::wrk::{self, WrkRun};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

/// Command line.
#[derive(Parser)]
struct Args {
    /// Where to write the result rows (JSON list).
    #[arg(long)]
    json: PathBuf,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Runs per system and metric, alternating the systems; each row is the median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Which systems to run (both by default; one alone gives rows without ratios).
    #[arg(long, value_delimiter = ',', default_value = "gateway,nftables")]
    systems: Vec<String>,
}

/// Idle timeout of closed connections in both systems (gateway `tcp_closing` and
/// `tcp_time_wait`, conntrack TIME_WAIT), so the connection tables do not fill during the
/// connections-per-second run.
const CLOSING_SECONDS: u32 = 2;

/// One measured run.
struct Measured {
    system: &'static str,
    metric: &'static str,
    value: f64,
    errors: u64,
    cpu: CpuUse,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bed = topology::build()?;
    let servers = topology::start_backends(&bed)?;
    let processes: Vec<(String, u32)> = servers
        .iter()
        .enumerate()
        .map(|(i, p)| (topology::backend_name(i), p.pid()))
        .collect();
    let runs = |keep_alive: bool| WrkRun {
        threads: args.threads,
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
        new_connection_per_request: !keep_alive,
    };
    // Each metric runs on both systems alternately, round after round, so a drift in machine
    // load (other jobs) hits both sides of a ratio alike; the median of each side is reported.
    let mut measured = Vec::new();
    for (keep_alive, _) in [true, false]
        .into_iter()
        .flat_map(|k| (0..args.rounds).map(move |r| (k, r)))
    {
        if args.systems.iter().any(|s| s == "gateway") {
            let mut config = GatewayConfig::new(&bed, vec![ServiceConfig::web(&[1, 1, 1])]);
            config.nat_ports = "10000-32000";
            config.tcp_closing = "2s";
            let mut daemon = Daemon::start(&bed, &config)?;
            let mut with_daemon = processes.clone();
            with_daemon.push(("gateway-daemon".to_owned(), daemon.pid()?));
            measured.push(measure(&bed, "gateway", &with_daemon, &runs(keep_alive))?);
            println!("gateway stats after the run:\n{}", daemon.cli(&["stats"])?);
            daemon.stop(false)?;
        }
        if args.systems.iter().any(|s| s == "nftables") {
            let _baseline =
                NftBaseline::install(bed.ns(topology::GATEWAY)?, WEB_PORT, CLOSING_SECONDS)?;
            measured.push(measure(&bed, "nftables", &processes, &runs(keep_alive))?);
        }
    }

    let mut rows = Vec::new();
    let mut notes = String::new();
    for m in &measured {
        let _ = writeln!(
            notes,
            "{}/{}: {:.0} {}, {} errors; {}; limited by: {}",
            m.metric,
            m.system,
            m.value,
            unit(m.metric),
            m.errors,
            m.cpu,
            limit(&m.cpu)
        );
    }
    for metric in ["e2e_rps", "e2e_cps"] {
        for system in ["gateway", "nftables"] {
            let mut values: Vec<f64> = measured
                .iter()
                .filter(|m| m.metric == metric && m.system == system)
                .map(|m| m.value)
                .collect();
            if values.is_empty() {
                continue;
            }
            values.sort_by(f64::total_cmp);
            let median = values[values.len() / 2];
            let name = format!("{metric}/{system}");
            let baseline = (system == "gateway").then(|| format!("{metric}/nftables"));
            rows.push(json!({"name": name, "value": median, "unit": unit(metric), "baseline": baseline, "ratio": Value::Null}));
            let _ = writeln!(notes, "{name}: median of {values:.0?}");
        }
    }
    print!("{notes}");
    std::fs::write(&args.json, serde_json::to_string_pretty(&rows)?)?;
    std::fs::write(args.json.with_extension("notes.txt"), &notes)?;
    Ok(())
}

/// The unit of a metric's rows.
fn unit(metric: &str) -> &'static str {
    if metric == "e2e_rps" {
        "req/s"
    } else {
        "conn/s"
    }
}

/// Runs wrk once and measures the CPU of the machine and of `processes` meanwhile.
fn measure(
    bed: &Testbed,
    system: &'static str,
    processes: &[(String, u32)],
    run: &WrkRun,
) -> Result<Measured> {
    let metric = if run.new_connection_per_request {
        "e2e_cps"
    } else {
        "e2e_rps"
    };
    println!("{metric}/{system}: wrk {run:?}");
    let meter = CpuMeter::start(processes)?;
    let target = SocketAddrV4::new(VIP, WEB_PORT);
    let result = wrk::run(bed.ns(topology::CLIENT)?.name(), target, run)?;
    let cpu = meter.finish(&[("wrk".to_owned(), result.cpu_ticks)])?;
    ensure!(
        result.errors * 100 <= result.requests,
        "{metric}/{system}: {} errors in {} requests",
        result.errors,
        result.requests
    );
    Ok(Measured {
        system,
        metric,
        value: result.requests_per_second,
        errors: result.errors,
        cpu,
    })
}

/// A plain statement of the bottleneck: the machine's CPUs when nearly all busy (naming the
/// biggest consumer), otherwise the busiest single process near one full CPU.
fn limit(cpu: &CpuUse) -> String {
    let top = cpu
        .processes
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(n, p)| format!("{n} at {p:.0}% of a CPU"))
        .unwrap_or_default();
    if cpu.machine_busy > 90.0 {
        format!(
            "all CPUs busy ({:.0}%; softirq, where XDP and kernel forwarding run, {:.0}%); top process {top}",
            cpu.machine_busy, cpu.softirq
        )
    } else {
        format!(
            "CPUs not saturated ({:.0}% busy); top process {top}",
            cpu.machine_busy
        )
    }
}
