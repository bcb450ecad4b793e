//! Per-packet cost of the XDP data path, measured with `BPF_PROG_TEST_RUN` (the kernel's own
//! timing of `repeat` runs) in a private namespace like the fixtures'.
//!
//! Rewriting paths run through benchmark-only wrappers (`bench_gateway`, `bench_new_conn`) that
//! restore the packet after every iteration; `bench_restore` is that wrapper around a trivial
//! body. Such rows are reported net: wrapper − restore_overhead, where restore_overhead =
//! bench_restore − trivial_pass, so every row compares with the trivial program directly.
//! Each row proves its path: every iteration must have counted the named path and action.
//!
//! Run as root: `cargo run --release -p gateway --example xdp_bench -- --json OUT`.
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use aya::maps::HashMap;
use clap::Parser;
use gateway_common::{maps, programs, proto, Action, Conn, FlowKey, Path, CONN_TABLE_SIZE};
use serde_json::json;
use support::{
    packets::{tcp, Flow, ACK, SYN},
    testbed::*,
};

/// Command line.
#[derive(Parser)]
struct Args {
    /// Where to write the JSON rows.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Iterations per kernel run.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Kernel runs per row; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const BASELINE: &str = "xdp_ns/trivial_pass";

/// One measured packet: program, packet, and the path and action every iteration must take.
struct Case {
    name: &'static str,
    program: &'static str,
    nic: Nic,
    packet: Vec<u8>,
    path: Path,
    action: Action,
    /// Reported net of the wrapper's save/restore.
    net: bool,
    /// Iterations per round when fewer than `--repeat` (new connections into a table with room).
    repeat_cap: Option<u32>,
    /// Unmeasured iterations run first (to fill the connection tables).
    prefill: u32,
}

/// Median kernel ns per packet of `case` over `rounds` runs, after proving its path.
fn measure(bed: &Testbed, case: &Case, args: &Args) -> Result<f64> {
    if case.prefill > 0 {
        bed.run(case.program, case.nic, &case.packet, case.prefill)?;
    }
    let repeat = case
        .repeat_cap
        .map_or(args.repeat, |cap| cap.min(args.repeat));
    let mut samples = Vec::new();
    for _ in 0..args.rounds {
        let (paths, actions) = (bed.counters(maps::PATHS)?, bed.counters(maps::ACTIONS)?);
        let (action, _, per_run) = bed.run(case.program, case.nic, &case.packet, repeat)?;
        ensure!(
            action == case.action as u32,
            "{}: action {action}",
            case.name
        );
        if case.program != programs::PASS && case.program != "bench_restore" {
            let moved =
                |before: &[u64], after: &[u64], i: u32| after[i as usize] - before[i as usize];
            let (p, a) = (bed.counters(maps::PATHS)?, bed.counters(maps::ACTIONS)?);
            let path_moves = moved(&paths, &p, case.path as u32);
            let action_moves = moved(&actions, &a, case.action as u32);
            let all_paths: u64 = p.iter().sum::<u64>() - paths.iter().sum::<u64>();
            ensure!(
                path_moves == repeat as u64 && action_moves == repeat as u64 && all_paths == repeat as u64,
                "{}: {path_moves} of {repeat} iterations took {:?} ({all_paths} counted paths, {action_moves} {:?})",
                case.name,
                case.path,
                case.action
            );
        }
        samples.push(per_run.as_nanos() as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// The NAT port the data path gave `flow`.
fn nat_port(bed: &Testbed, flow: &Flow) -> Result<u16> {
    let conns: HashMap<_, FlowKey, Conn> =
        HashMap::try_from(bed.ebpf.map(maps::CONNS).context("CONNS")?)?;
    let key = FlowKey {
        src_addr: u32::from_ne_bytes(flow.src),
        dst_addr: u32::from_ne_bytes(flow.dst),
        src_port: flow.sport.to_be(),
        dst_port: flow.dport.to_be(),
        proto: proto::TCP,
        _pad: [0; 3],
    };
    Ok(u16::from_be(conns.get(&key, 0)?.nat_port))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bed = Testbed::new(
        "gwbench",
        &[
            programs::PASS,
            programs::GATEWAY,
            "bench_gateway",
            "bench_new_conn",
            "bench_restore",
        ],
    )?;
    let client = Flow {
        src_mac: CLIENT_MAC,
        dst_mac: EXT_MAC,
        src: CLIENT,
        dst: VIP,
        sport: 50000,
        dport: PORT_TCP,
    };
    // Open the connection the established and reply rows use.
    let (action, _, _) = bed.run("bench_gateway", Nic::External, &tcp(&client, SYN), 1)?;
    ensure!(
        action == Action::Redirect as u32,
        "opening the benchmark connection: action {action}"
    );
    let backend = Flow {
        src_mac: BACKEND_MACS[0],
        dst_mac: INT_MAC,
        src: BACKENDS[0],
        dst: CLIENT,
        sport: BACKEND_PORT,
        dport: nat_port(&bed, &client)?,
    };
    let host = Flow {
        dst: EXT_ADDR,
        dport: 22,
        ..client
    };
    let case = |name, program, nic, packet, path, action, net| Case {
        name,
        program,
        nic,
        packet,
        path,
        action,
        net,
        repeat_cap: None,
        prefill: 0,
    };
    // New connections go last: they fill the tables and at last evict the benchmark connection.
    // `new_conn` inserts into tables with room (every round together fills at most half of
    // them), as with the daemon expiring idle entries; `new_conn_full_table` first fills them,
    // so that every insert also evicts the least recently used entry (a SYN flood's cost).
    let cases = [
        case(
            BASELINE,
            programs::PASS,
            Nic::External,
            tcp(&client, ACK),
            Path::PassThrough,
            Action::Pass,
            false,
        ),
        case(
            "bench_restore",
            "bench_restore",
            Nic::External,
            tcp(&client, ACK),
            Path::PassThrough,
            Action::Pass,
            false,
        ),
        case(
            "xdp_ns/established",
            "bench_gateway",
            Nic::External,
            tcp(&client, ACK),
            Path::Established,
            Action::Redirect,
            true,
        ),
        case(
            "xdp_ns/reply",
            "bench_gateway",
            Nic::Internal,
            tcp(&backend, ACK),
            Path::Reply,
            Action::Redirect,
            true,
        ),
        case(
            "xdp_ns/pass_through",
            programs::GATEWAY,
            Nic::External,
            tcp(&host, ACK),
            Path::PassThrough,
            Action::Pass,
            false,
        ),
        Case {
            repeat_cap: Some(CONN_TABLE_SIZE / 2 / args.rounds.max(1) as u32),
            ..case(
                "xdp_ns/new_conn",
                "bench_new_conn",
                Nic::External,
                tcp(&client, SYN),
                Path::NewConn,
                Action::Redirect,
                true,
            )
        },
        Case {
            prefill: 2 * CONN_TABLE_SIZE,
            ..case(
                "xdp_ns/new_conn_full_table",
                "bench_new_conn",
                Nic::External,
                tcp(&client, SYN),
                Path::NewConn,
                Action::Redirect,
                true,
            )
        },
    ];
    let mut measured = Vec::new();
    for case in &cases {
        measured.push(measure(&bed, case, &args)?);
    }
    let trivial = measured[0];
    let restore_overhead = (measured[1] - trivial).max(0.0);
    let mut rows = vec![
        (BASELINE, trivial, "direct".to_string()),
        (
            "xdp_ns/restore_overhead",
            restore_overhead,
            "bench_restore − trivial_pass".to_string(),
        ),
    ];
    for (case, ns) in cases.iter().zip(&measured).skip(2) {
        let (value, mut method) = if case.net {
            (
                ns - restore_overhead,
                "net: wrapper − restore_overhead".to_string(),
            )
        } else {
            (*ns, "direct".to_string())
        };
        if let Some(cap) = case.repeat_cap {
            method += &format!(", {} iterations per round", cap.min(args.repeat));
        }
        if case.prefill > 0 {
            method += &format!(", after {} to fill the tables", case.prefill);
        }
        rows.push((case.name, value, method));
    }
    println!(
        "{:<26} {:>9} {:>7}  method ({} iterations x {} rounds, median)",
        "row", "ns/pkt", "ratio", args.repeat, args.rounds
    );
    let json: Vec<_> = rows
        .iter()
        .map(|(name, value, method)| {
            let baseline = (*name != BASELINE).then_some(BASELINE);
            let ratio = baseline.map(|_| value / trivial);
            println!("{name:<26} {value:>9.1} {:>7}  {method}", ratio.map_or("-".into(), |r| format!("{r:.2}x")));
            json!({ "name": name, "value": value, "unit": "ns", "baseline": baseline, "ratio": ratio })
        })
        .collect();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
