//! One named network namespace (`/run/netns/NAME`), deleted on drop even when a test panics:
//! configured with `ip -n`, `ip netns exec` and sysctls, and entered either by threads of its
//! own ([`Netns::run`], [`Netns::spawn`]) or by the calling thread for as long as it lives
//! ([`Netns::enter`]).
use crate::cmd::{self, Args};
use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle, ThreadId};

/// Counts the names [`unique_name`] hands out in this process (tests run in parallel threads).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// `PREFIX<pid>x<n>`: unique within this process, and across processes while it runs; the pid
/// lets a sweep tell namespaces of a killed run ([`owner_pid`]).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid in `name` if [`unique_name`] made it (or its start) with `prefix`.
pub fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split_once('x')?.0.parse().ok()
}

/// A network namespace this process created; dropping it deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Set by [`Netns::enter`]: where the entering thread goes back to on drop.
    home: Option<Home>,
}

/// The namespace a thread was in before [`Netns::enter`] moved it.
#[derive(Debug)]
struct Home {
    netns: File,
    thread: ThreadId,
}

impl Netns {
    /// Creates the namespace `name` and brings its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        cmd::run("ip", &["netns", "add", name])?;
        // From here on, dropping `netns` removes the namespace whatever fails next.
        let netns = Self {
            name: name.to_owned(),
            home: None,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Creates a namespace named [`unique_name`]`(prefix)`.
    pub fn unique(prefix: &str) -> Result<Self> {
        Self::create(&unique_name(prefix))
    }

    /// Creates a uniquely named namespace and moves the calling thread (only it) into it, for
    /// code that must run on this thread (a current-thread runtime, `BPF_PROG_TEST_RUN` against
    /// the namespace's interfaces). Dropping it, on this thread, moves the thread back first.
    pub fn enter(prefix: &str) -> Result<Self> {
        let home = File::open("/proc/thread-self/ns/net").context("open this thread's netns")?;
        let mut netns = Self::unique(prefix)?;
        join(&netns.name)?;
        netns.home = Some(Home {
            netns: home,
            thread: thread::current().id(),
        });
        Ok(netns)
    }

    /// The namespace's name, as `ip netns` and `/run/netns` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args...`; `args` are words (`&["link", "set", "lo", "up"]`) or one
    /// string of them (`"link set lo up"`).
    pub fn ip(&self, args: &(impl Args + ?Sized)) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend(args.words());
        cmd::run("ip", &full)
    }

    /// Runs any program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        cmd::run_in(&self.name, program, args)
    }

    /// Sets a sysctl of the namespace (`net.*` keys are per namespace): `setting` is
    /// `key=value`, as `sysctl -w` takes it.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", setting]).map(drop)
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
    ) -> JoinHandle<Result<R>> {
        let name = self.name.clone();
        thread::spawn(move || {
            join(&name)?;
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            if home.thread == thread::current().id() {
                if let Err(e) = set(&home.netns) {
                    eprintln!("testbed cleanup: back from {}: {e:#}", self.name);
                }
            } else {
                eprintln!(
                    "testbed cleanup: {} dropped on another thread than the one it entered",
                    self.name
                );
            }
        }
        if let Err(e) = cmd::run("ip", &["netns", "del", &self.name]) {
            eprintln!("testbed cleanup: {e:#}");
        }
    }
}

/// Moves the calling thread (only it) into the named network namespace.
fn join(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("open {path}"))?;
    set(&file).with_context(|| format!("setns {path}"))
}

/// Moves the calling thread into the network namespace of `file`.
fn set(file: &File) -> std::io::Result<()> {
    // SAFETY: a plain syscall on a valid file descriptor; it affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// These create namespaces: they need root, like every test that uses the kit.
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn own_netns() -> std::fs::Metadata {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap()
    }

    fn has_link(name: &str) -> bool {
        let name = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
    }

    #[test]
    fn names_are_unique_and_tell_their_owner() {
        let (a, b) = (unique_name("tk"), unique_name("tk"));
        assert_ne!(a, b);
        assert_eq!(owner_pid("tk", &a), Some(std::process::id()));
        assert_eq!(owner_pid("nt", "nt1234x0-gw"), Some(1234));
        assert_eq!(owner_pid("nt", "nt1234x12"), Some(1234));
        assert_eq!(owner_pid("nt", "ntp-foo"), None);
        assert_eq!(owner_pid("nt", "netns1"), None);
        assert_eq!(owner_pid("nt", &a), None);
    }

    #[test]
    fn threads_of_its_own_see_its_links() {
        let netns = Netns::unique("tk").unwrap();
        netns.ip("link add tkv0 type veth peer name tkv0p").unwrap();
        assert!(netns.run(|| Ok(has_link("tkv0"))).unwrap());
        assert!(!has_link("tkv0"));
        netns.sysctl("net.ipv4.ip_forward=1").unwrap();
        let forward = netns.exec("sysctl", &["-n", "net.ipv4.ip_forward"]);
        assert_eq!(forward.unwrap().trim(), "1");
        let path = format!("/run/netns/{}", netns.name());
        drop(netns);
        assert!(!Path::new(&path).exists());
    }

    #[test]
    fn entered_then_left_and_removed_even_on_panic() {
        use std::os::unix::fs::MetadataExt;
        let (tx, rx) = std::sync::mpsc::channel();
        let result = thread::spawn(move || {
            let before = own_netns().ino();
            let netns = Netns::enter("tk").unwrap();
            assert_ne!(own_netns().ino(), before, "the thread is inside");
            netns
                .ip(&[
                    "link", "add", "tkv1", "type", "veth", "peer", "name", "tkv1p",
                ])
                .unwrap();
            assert!(has_link("tkv1"));
            drop(netns);
            assert_eq!(own_netns().ino(), before, "the thread is back");
            let netns = Netns::enter("tk").unwrap();
            tx.send(netns.name().to_owned()).unwrap();
            panic!("a failing test");
        })
        .join();
        assert!(result.is_err());
        let name = rx.recv().unwrap();
        assert!(!Path::new(&format!("/run/netns/{name}")).exists());
    }
}
