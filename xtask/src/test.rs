//! `cargo xtask test`: everything CI checks, in order, stopping at the first failure.
use crate::step::{self, Steps};
use anyhow::Result;

/// Format, lints, build, unit tests, XDP fixtures, daemon tests, namespace end-to-end tests,
/// the chaos run.
pub fn run(steps: &mut Steps) -> Result<()> {
    steps.run("format", || {
        step::status(&mut step::cargo(&["fmt", "--all", "--", "--check"]))
    })?;
    steps.run("clippy", || {
        step::status(&mut step::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    crate::build::run(steps)?;
    steps.run("unit tests", || {
        step::status(&mut step::cargo(&[
            "test",
            "--workspace",
            "--lib",
            "--bins",
        ]))
    })?;
    steps.run("XDP fixtures (BPF_PROG_TEST_RUN)", || {
        step::status(&mut step::cargo(&[
            "test",
            "-p",
            "gateway",
            "--test",
            "xdp_fixtures",
        ]))
    })?;
    steps.run("ring simulator: seeded scenarios (release)", || {
        step::status(&mut step::cargo(&[
            "test",
            "--release",
            "-p",
            "gateway",
            "--test",
            "ring_sim",
        ]))
    })?;
    for name in daemon_tests()? {
        steps.run(&format!("daemon tests: {name}"), || {
            step::status(&mut step::cargo(&[
                "test", "-p", "gateway", "--test", &name,
            ]))
        })?;
    }
    // Every namespace test binary runs even when one fails, so one report shows all of them.
    steps.run("end-to-end tests in network namespaces", || {
        step::status(&mut step::cargo(&[
            "test",
            "-p",
            "netns-tests",
            "--no-fail-fast",
            "--test",
            "*",
        ]))
    })?;
    // Issue 11's chaos run, 120 s with a seed from the clock (each CI run tries other fault
    // sequences; a failure prints the seed and the command that replays it).
    steps.run("chaos run: 120 s of seeded faults under load", || {
        let args = crate::chaos::Args {
            seconds: 120,
            seed: None,
            json: None,
            storm: false,
            capture: false,
        };
        crate::chaos::passes("debug", &args)
    })
}

/// The gateway's integration test files (gateway/tests/*.rs; the XDP fixtures are a folder of
/// their own, and the simulator runs in release).
fn daemon_tests() -> Result<Vec<String>> {
    let dir = step::root().join("gateway/tests");
    let mut names = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "rs") {
                let name = path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if name != "ring_sim" {
                    names.push(name);
                }
            }
        }
    }
    names.sort();
    Ok(names)
}
