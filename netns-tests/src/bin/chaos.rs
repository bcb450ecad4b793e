//! The chaos run (`cargo xtask chaos`): random faults from a seed against the three-node
//! cluster under load; prints what broke per fault and in all, writes the result rows with
//! `--json`, and exits 0 when nothing broke, 1 when a kept-alive connection broke or two
//! owners answered beyond the resolution time, 2 when the run itself failed.
use anyhow::{Context, Result};
use clap::Parser;
use netns_tests::chaos::{self, Options};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command line.
#[derive(Parser)]
struct Args {
    /// How long to inject faults, in seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// The seed (default: from the clock; the run prints it, and how to replay it).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the result rows (JSON list of `{"name","value","unit"}`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// After the faults, a storm of new connections across a kill -9 of their home.
    #[arg(long)]
    storm: bool,
    /// Where to keep the daemons' logs and configs (a folder per seed is made inside).
    #[arg(long, default_value = "target/chaos")]
    logs: PathBuf,
    /// Capture the web traffic at the client, the router and the back-ends (pcap files kept
    /// with the logs).
    #[arg(long)]
    capture: bool,
}

fn run(args: Args) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(chaos::clock_seed);
    let options = Options {
        seconds: args.seconds,
        seed,
        storm: args.storm,
        logs: Some(args.logs.join(format!("seed-{seed}"))),
        capture: args.capture,
    };
    let report = chaos::run(&options).with_context(|| format!("chaos run of seed {seed}"))?;
    print!("{report}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.rows())?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report.passed())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
