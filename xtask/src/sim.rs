//! `cargo xtask sim --seed N [--family F]`: replays one scenario of the ring simulator with its trace
//! (gateway's `ring_sim` example).
use crate::step::{self, Steps};
use anyhow::Result;

/// Runs the scenario of `seed` in `family`.
pub fn run(steps: &mut Steps, seed: u64, family: &str) -> Result<()> {
    steps.run(&format!("sim: replay {family} seed {seed}"), || {
        step::status(&mut step::cargo(&[
            "run",
            "--release",
            "-p",
            "gateway",
            "--example",
            "ring_sim",
            "--",
            "--seed",
            &seed.to_string(),
            "--family",
            family,
        ]))
    })
}
