//! Finding the binaries the testbed starts: the gateway (another package of the workspace) and
//! this package's own `testsrv`.
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Finds a binary of the workspace's target directory: beside the running executable (a
/// binary of this package) or one level up (a test executable in `target/<profile>/deps`).
/// `GATEWAY_BIN_DIR` overrides the directory.
pub fn find(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("GATEWAY_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_owned());
        if let Some(up) = dir.parent() {
            dirs.push(up.to_owned());
        }
    }
    for dir in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "binary `{name}` not found in {dirs:?}; build the workspace first (`cargo build`, or `cargo xtask build`)"
    )
}
