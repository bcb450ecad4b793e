//! Replays one seeded scenario of the ring simulator with a trace:
//! `cargo run -p gateway --example ring_sim -- --seed N [--family F]` (what
//! `cargo xtask sim --seed N [--family F]` runs).
use std::panic::{self, AssertUnwindSafe};

use clap::Parser;
use gateway::cluster::sim::{Family, Scenario, Sim};

/// Command line.
#[derive(Parser)]
struct Args {
    /// The scenario's seed.
    #[arg(long)]
    seed: u64,
    /// Its family: random, quiet-death, comeback, start-up or ack-loss.
    #[arg(long, default_value = "random", value_parser = family)]
    family: Family,
}

fn family(name: &str) -> Result<Family, String> {
    Family::from_name(name).ok_or_else(|| format!("no family {name}"))
}

fn main() {
    let args = Args::parse();
    let scenario = Scenario::of(args.family, args.seed);
    println!("{scenario:?}");
    let mut sim = Sim::new(scenario, true);
    let result = panic::catch_unwind(AssertUnwindSafe(|| sim.run()));
    print!("{}", sim.trace());
    match result {
        Ok(()) => println!("seed {}: every invariant held", args.seed),
        Err(_) => std::process::exit(1),
    }
}
