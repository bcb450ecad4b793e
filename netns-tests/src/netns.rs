//! One named network namespace (`/run/netns/NAME`), deleted on drop, and running code inside it
//! on a thread of this process.
use crate::cmd;
use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;

/// A network namespace this process created; dropping it deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        cmd::run("ip", &["netns", "add", name])?;
        let netns = Self {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name, as `ip netns` and `/run/netns` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Runs any program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        cmd::run_in(&self.name, program, args)
    }

    /// Sets a sysctl of the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Runs `f` on a new thread that has entered this namespace, and waits for it: sockets
    /// created by `f` live in the namespace (and stay there when handed to other threads).
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.spawn(f).join().expect("namespace thread panicked")
    }

    /// Like [`Netns::run`], without waiting: for background traffic.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<R> + Send + 'static,
    ) -> std::thread::JoinHandle<Result<R>> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name)?;
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::run("ip", &["netns", "del", &self.name]) {
            eprintln!("testbed cleanup: {e:#}");
        }
    }
}

/// Moves the calling thread (only it) into the named network namespace.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: a plain syscall on a valid file descriptor; it affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}
