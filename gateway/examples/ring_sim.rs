//! Replays one seeded scenario of the ring simulator with a trace:
//! `cargo run -p gateway --example ring_sim -- --seed N` (what `cargo xtask sim --seed N` runs).
use std::panic::{self, AssertUnwindSafe};

use clap::Parser;
use gateway::cluster::sim::{Scenario, Sim};

/// Command line.
#[derive(Parser)]
struct Args {
    /// The scenario's seed.
    #[arg(long)]
    seed: u64,
}

fn main() {
    let args = Args::parse();
    let scenario = Scenario::from_seed(args.seed);
    println!("{scenario:?}");
    let mut sim = Sim::new(scenario, true);
    let result = panic::catch_unwind(AssertUnwindSafe(|| sim.run()));
    print!("{}", sim.trace());
    match result {
        Ok(()) => println!("seed {}: every invariant held", args.seed),
        Err(_) => std::process::exit(1),
    }
}
