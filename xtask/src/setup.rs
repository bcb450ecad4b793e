//! `cargo xtask setup`: idempotent installation of what building and testing need. Each part
//! is checked first and skipped when present.
use crate::step::{self, Steps};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Debian packages: Debian's rustc built with LLVM 22 and its library source (the eBPF build),
/// LLVM 22 (bpf-linker), and the tools the testbed, the tests and the benchmarks run.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "iputils-ping",
    "ethtool",
    "tcpdump",
    "nftables",
    "bpftool",
    "wrk",
    "util-linux",
    "procps",
    "python3",
    "keepalived",
    "iputils-arping",
];

/// Runs every setup step.
pub fn run(steps: &mut Steps) -> Result<()> {
    steps.run("setup: Debian packages", packages)?;
    steps.run("setup: bpf-linker", bpf_linker)?;
    steps.run("setup: bpffs on /sys/fs/bpf", bpffs)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("    all {} present", PACKAGES.len());
        return Ok(());
    }
    eprintln!("    installing {}", missing.join(" "));
    step::status(Command::new("apt-get").arg("update"))?;
    step::status(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpf_linker() -> Result<()> {
    let home = std::env::var("HOME").context("HOME is not set")?;
    let linker = PathBuf::from(&home).join(".cargo/bin/bpf-linker");
    if linker.exists() {
        eprintln!("    present: {}", linker.display());
        return Ok(());
    }
    // bpf-linker links against Debian's LLVM 22; without its bin directory first on PATH the
    // link fails with `unable to find library -lLLVM`.
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    step::status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path)
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
    )
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        eprintln!("    mounted");
        return Ok(());
    }
    step::status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
