//! A uniquely named network namespace the current thread enters, deleted on drop.
use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The namespace; while it lives the creating thread is inside it.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
    home: File,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>` and moves the calling thread into it.
    pub fn enter(prefix: &str) -> Result<Self> {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let home = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        run("ip", &["netns", "add", &name])?;
        // From here on, dropping the guard removes the namespace whatever fails next.
        let ns = Self { name, home };
        let target = File::open(format!("/run/netns/{}", ns.name))?;
        // SAFETY: plain syscall on a valid namespace file descriptor.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(ns)
    }

    /// Runs `ip -n <ns> args…`.
    pub fn ip(&self, args: &str) -> Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        run("ip", &all)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        run(
            "ip",
            &["netns", "exec", &self.name, "sysctl", "-qw", setting],
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // SAFETY: plain syscall on the namespace we came from.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
