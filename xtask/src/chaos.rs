//! `cargo xtask chaos --seconds N [--seed S] [--json FILE] [--storm] [--capture]`: builds the binaries,
//! then runs the chaos run (netns-tests' `chaos` binary: random faults from a seed against the
//! three-node cluster under load), which removes its testbed whatever happens and keeps the
//! daemons' logs in target/chaos/seed-S.
use crate::step::{self, Steps};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;

/// What `cargo xtask chaos` passes on to the run.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// How long to inject faults, in seconds.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// The seed (default: from the clock; the run prints it and a replay command).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where to write the result rows (`{"name","value","unit"}`).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// After the faults, a storm of new connections across a kill -9 of their home.
    #[arg(long)]
    pub storm: bool,
    /// Capture the web traffic at the client, the router and the back-ends (pcap files in
    /// target/chaos/seed-S).
    #[arg(long)]
    pub capture: bool,
}

/// Builds the debug binaries (the namespace tests' build) and runs the chaos run.
pub fn run(steps: &mut Steps, args: &Args) -> Result<()> {
    steps.run("build: binaries", || {
        step::status(&mut step::cargo(&["build", "--workspace", "--bins"]))
    })?;
    steps.run("chaos", || passes("debug", args))
}

/// Runs `target/<profile>/chaos` with `args`; an error unless nothing broke.
pub fn passes(profile: &str, args: &Args) -> Result<()> {
    match run_binary(profile, args)? {
        Outcome::Passed => Ok(()),
        Outcome::Missed => bail!("the chaos run missed its targets (see its report)"),
    }
}

/// How a chaos run ended, when it ran to its report.
pub enum Outcome {
    /// Nothing broke.
    Passed,
    /// A kept-alive connection broke or two owners answered beyond the resolution time.
    Missed,
}

/// Runs `target/<profile>/chaos` with `args`; an error if the run itself failed (exit 2).
pub fn run_binary(profile: &str, args: &Args) -> Result<Outcome> {
    let root = step::root();
    let mut command = Command::new(root.join("target").join(profile).join("chaos"));
    command
        .arg("--seconds")
        .arg(args.seconds.to_string())
        .arg("--logs")
        .arg(root.join("target/chaos"))
        .current_dir(&root);
    if let Some(seed) = args.seed {
        command.arg("--seed").arg(seed.to_string());
    }
    if let Some(json) = &args.json {
        command.arg("--json").arg(absolute(json));
    }
    if args.storm {
        command.arg("--storm");
    }
    if args.capture {
        command.arg("--capture");
    }
    let status = command.status()?;
    match status.code() {
        Some(0) => Ok(Outcome::Passed),
        Some(1) => Ok(Outcome::Missed),
        _ => bail!("{command:?} exited with {status}"),
    }
}

/// `path` from where xtask was started (the run works in the workspace root).
fn absolute(path: &Path) -> std::path::PathBuf {
    std::env::current_dir()
        .map(|dir| dir.join(path))
        .unwrap_or_else(|_| path.to_owned())
}
