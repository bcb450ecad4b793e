//! Named steps with their durations, and running cargo and other programs from the
//! workspace root.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The steps run so far, for the closing summary.
pub struct Steps {
    done: Vec<(String, Duration)>,
    started: Instant,
}

impl Steps {
    /// No steps yet.
    pub fn new() -> Self {
        Self {
            done: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Runs one named step, printing its name, outcome and duration; stops at the first error.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("==> {name}");
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        match &result {
            Ok(_) => eprintln!("<== {name}: ok ({took:.1?})"),
            Err(e) => eprintln!("<== {name}: FAILED after {took:.1?}: {e:#}"),
        }
        self.done.push((name.to_owned(), took));
        result.with_context(|| format!("step `{name}` failed"))
    }

    /// Prints every step with its duration and the total.
    pub fn summary(&self) {
        eprintln!("\nsteps:");
        for (name, took) in &self.done {
            eprintln!("  {:>8.1?}  {name}", took);
        }
        eprintln!("  {:>8.1?}  total", self.started.elapsed());
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// A `cargo` command in the workspace root, with the cargo that runs xtask.
pub fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(root());
    command
}

/// Runs a command with inherited output; a failure names the command.
pub fn status(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} exited with {status}");
    }
    Ok(())
}
