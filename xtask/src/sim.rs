//! `cargo xtask sim --seed N`: replays one scenario of the ring simulator with its trace
//! (gateway's `ring_sim` example).
use crate::step::{self, Steps};
use anyhow::Result;

/// Runs the scenario of `seed`.
pub fn run(steps: &mut Steps, seed: u64) -> Result<()> {
    steps.run(&format!("sim: replay seed {seed}"), || {
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
        ]))
    })
}
