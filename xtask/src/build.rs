//! `cargo xtask build`: the whole workspace, the XDP object included (gateway/build.rs).
use crate::step::{self, Steps};
use anyhow::Result;

/// Builds every target of the workspace in the debug profile.
pub fn run(steps: &mut Steps) -> Result<()> {
    steps.run("build: workspace", || {
        step::status(&mut step::cargo(&["build", "--workspace", "--all-targets"]))
    })
}
