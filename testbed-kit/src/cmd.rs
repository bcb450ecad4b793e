//! Running helper programs (`ip`, `ethtool`, `nft`, `bpftool`, ...) with errors that say what
//! failed and what the program printed.
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
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

/// A command that runs `program` in the named network namespace and no other
/// (`nsenter --net=/run/netns/NAME --`, so bpffs pins and the file system stay shared), for
/// processes a test starts and keeps: daemons, servers.
pub fn command_in(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(program);
    command
}

/// The words of a command line: a slice, array or vector of words, or one string split at
/// white space (`"link set lo up"`).
pub trait Args {
    /// The words, in order.
    fn words(&self) -> Vec<&str>;
}

impl Args for [&str] {
    fn words(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl<const N: usize> Args for [&str; N] {
    fn words(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl Args for Vec<&str> {
    fn words(&self) -> Vec<&str> {
        self.clone()
    }
}

impl Args for str {
    fn words(&self) -> Vec<&str> {
        self.split_whitespace().collect()
    }
}

impl Args for String {
    fn words(&self) -> Vec<&str> {
        self.as_str().words()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command_and_its_stderr() {
        let e = run("sh", &["-c", "echo oops >&2; exit 3"]).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("`sh -c echo oops >&2; exit 3` failed"),
            "{text}"
        );
        assert!(text.contains("oops"), "{text}");
        assert_eq!(run("echo", &["hi"]).unwrap(), "hi\n");
    }

    #[test]
    fn args_of_every_form() {
        assert_eq!("link  set lo up".words(), ["link", "set", "lo", "up"]);
        assert_eq!(["a", "b c"].words(), ["a", "b c"]);
        assert_eq!(vec!["x"].words(), ["x"]);
    }
}
