//! Running helper programs (`ip`, `ethtool`, `nft`, `bpftool`, ...) with errors that say what
//! failed and what the program printed.
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs `program args...` to completion and returns its stdout; a non-zero exit is an error
/// carrying the command line and stderr, so a broken testbed step explains itself.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (is it installed? `cargo xtask setup`)"))?;
    if !output.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            program,
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `program args...` inside the named network namespace (`ip netns exec`), for tools that
/// have no `-n`/`-netns` option of their own.
pub fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}
