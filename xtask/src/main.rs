//! `cargo xtask`: the project's own commands. Every command runs `setup` first, so a fresh
//! machine (or CI) needs nothing but `cargo xtask test`.
mod bench;
mod build;
mod chaos;
mod demo;
mod setup;
mod sim;
mod step;
mod test;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Command line.
#[derive(Parser)]
#[command(about = "Setup, build, test, demo and benchmarks of the gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: Debian packages, bpf-linker, the bpffs mount.
    Setup,
    /// Build the workspace (the XDP object is built by gateway/build.rs).
    Build,
    /// Everything CI checks: format, lints, unit, XDP fixture, daemon and namespace tests.
    Test,
    /// Build, start the testbed and the daemon, send traffic, print what happened.
    Demo,
    /// XDP per-packet costs and end-to-end throughput against nftables; writes
    /// target/bench/results.json.
    Bench,
    /// Random faults from a seed against the three-node cluster under load; reports what
    /// broke, fails on a broken kept-alive connection or two answering owners.
    Chaos(chaos::Args),
    /// Replay one seeded scenario of the ring simulator with a trace.
    Sim {
        /// The scenario's seed (a failing test prints it).
        #[arg(long)]
        seed: u64,
        /// Its family (random, quiet-death, comeback, start-up, ack-loss).
        #[arg(long, default_value = "random")]
        family: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut steps = step::Steps::new();
    let result = setup::run(&mut steps).and_then(|()| match cli.command {
        Command::Setup => Ok(()),
        Command::Build => build::run(&mut steps),
        Command::Test => test::run(&mut steps),
        Command::Demo => demo::run(&mut steps),
        Command::Bench => bench::run(&mut steps),
        Command::Chaos(args) => chaos::run(&mut steps, &args),
        Command::Sim { seed, family } => sim::run(&mut steps, seed, &family),
    });
    steps.summary();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
