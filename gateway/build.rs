//! Builds the XDP object (`gateway-ebpf`) with Debian's rustc for `bpfel-unknown-none` and hands
//! its path to the crate as `GATEWAY_EBPF_OBJECT`, so `cargo build` alone yields a daemon with its
//! data path embedded. The toolchain comes from `cargo xtask setup`.
use std::{env, path::PathBuf, process::Command};

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let ebpf_dir = root.join("gateway-ebpf");
    let target_dir = root.join("target").join("ebpf");
    for watched in [
        "gateway-ebpf/src",
        "gateway-ebpf/Cargo.toml",
        "gateway-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    if !PathBuf::from(DEBIAN_RUSTC).exists() {
        panic!("{DEBIAN_RUSTC} is missing: run `cargo xtask setup` to install the eBPF toolchain");
    }
    let mut cmd = Command::new(DEBIAN_CARGO);
    // The outer cargo's settings (rustup toolchain, flags, jobserver) must not leak in.
    for (key, _) in env::vars() {
        if key.starts_with("CARGO") || key.starts_with("RUSTC") || key.starts_with("RUSTUP") {
            cmd.env_remove(key);
        }
    }
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = format!("{home}/.cargo/bin:{}", env::var("PATH").unwrap_or_default());
    let status = cmd
        .current_dir(&ebpf_dir)
        .env("PATH", path)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .status()
        .expect("running Debian's cargo for the eBPF build");
    assert!(status.success(), "building gateway-ebpf failed");
    let object = target_dir.join("bpfel-unknown-none/release/gateway");
    println!("cargo:rustc-env=GATEWAY_EBPF_OBJECT={}", object.display());
}
