//! `cargo xtask demo`: builds, then runs the demo scenario (netns-tests' `demo` binary), which
//! tears its testbed down on success, failure and Ctrl-C.
use crate::step::{self, Steps};
use anyhow::Result;
use std::process::Command;

/// Builds the binaries and runs the demo.
pub fn run(steps: &mut Steps) -> Result<()> {
    steps.run("build: binaries", || {
        step::status(&mut step::cargo(&["build", "--workspace", "--bins"]))
    })?;
    steps.run("demo", || {
        // Ctrl-C reaches the demo too; xtask waits for it to tear down instead of dying first.
        // SAFETY: setting a signal disposition to SIG_IGN has no memory-safety preconditions.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
        let result = step::status(&mut Command::new(step::root().join("target/debug/demo")));
        // SAFETY: as above, restoring the default disposition.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
        result
    })
}
