//! A testbed built from a description: hosts (network namespaces), bridges (in a private
//! "switch" namespace, so nothing touches the root namespace), veth links with addresses,
//! routes and sysctls. Dropping the testbed removes all of it, even when a test panics.
use crate::cmd;
use crate::netns::{self, Netns};
use crate::process::Process;
use crate::xdp_pass::{self, PassPrograms};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

/// A host of the testbed: one network namespace.
#[derive(Clone, Debug, Default)]
pub struct HostSpec {
    name: String,
    sysctls: Vec<(String, String)>,
    routes: Vec<(String, String)>,
}

impl HostSpec {
    /// A host named `name` (unique within the testbed).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Sets a sysctl once the links exist (e.g. `net.ipv4.ip_forward`).
    pub fn sysctl(mut self, key: &str, value: &str) -> Self {
        self.sysctls.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a route to `dest` (a prefix or `default`) via `via`.
    pub fn route(mut self, dest: &str, via: &str) -> Self {
        self.routes.push((dest.to_owned(), via.to_owned()));
        self
    }
}

/// One end of a veth link inside a host.
#[derive(Clone, Debug)]
pub struct End {
    host: String,
    ifname: String,
    addrs: Vec<String>,
}

impl End {
    /// Interface `ifname` in `host` with addresses in CIDR form.
    pub fn new(host: &str, ifname: &str, addrs: &[&str]) -> Self {
        Self {
            host: host.to_owned(),
            ifname: ifname.to_owned(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// What the other end of a veth link is.
#[derive(Clone, Debug)]
pub enum Peer {
    /// A port of a bridge; `xdp_pass` attaches the trivial XDP program to the port, which the
    /// host end needs when it transmits with native XDP.
    Bridge { bridge: String, xdp_pass: bool },
    /// Another host, directly.
    Host(End),
}

/// A veth link.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    end: End,
    peer: Peer,
}

/// The description of a testbed.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    hosts: Vec<HostSpec>,
    bridges: Vec<String>,
    links: Vec<LinkSpec>,
}

impl Spec {
    /// Adds a host.
    pub fn host(mut self, host: HostSpec) -> Self {
        self.hosts.push(host);
        self
    }

    /// Adds a bridge.
    pub fn bridge(mut self, name: &str) -> Self {
        self.bridges.push(name.to_owned());
        self
    }

    /// Plugs `end` into `bridge`; with `xdp_pass` the bridge port runs the pass program.
    pub fn port(mut self, end: End, bridge: &str, xdp_pass: bool) -> Self {
        self.links.push(LinkSpec {
            end,
            peer: Peer::Bridge {
                bridge: bridge.to_owned(),
                xdp_pass,
            },
        });
        self
    }

    /// Links two hosts directly.
    pub fn wire(mut self, a: End, b: End) -> Self {
        self.links.push(LinkSpec {
            end: a,
            peer: Peer::Host(b),
        });
        self
    }
}

/// The start of testbed names, `nt<pid>x<n>` ([`netns::unique_name`]).
const PREFIX: &str = "nt";

/// Whether process `pid` runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Removes namespaces (and their processes), scratch directories and bpffs pins of testbeds
/// whose process no longer runs: a test killed by a signal cannot clean up after itself.
fn sweep_stale() {
    let stale = |name: &str| netns::owner_pid(PREFIX, name).is_some_and(|pid| !running(pid));
    let namespaces = cmd::run("ip", &["netns", "list"]).unwrap_or_default();
    for name in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if !stale(name) {
            continue;
        }
        let pids = cmd::run("ip", &["netns", "pids", name]).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) on a process left in a stale testbed namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Err(e) = cmd::run("ip", &["netns", "del", name]) {
            eprintln!("stale testbed: {e:#}");
        }
    }
    for dir in [std::env::temp_dir(), PathBuf::from("/sys/fs/bpf")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if stale(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Name of the namespace holding the bridges.
const SWITCH: &str = "sw";

/// A built testbed. Field order is drop order: programs, then hosts, then the switch.
#[derive(Debug)]
pub struct Testbed {
    pass: Option<PassPrograms>,
    hosts: Vec<(String, Netns)>,
    switch: Option<Netns>,
    prefix: String,
    dir: PathBuf,
}

impl Testbed {
    /// Builds the testbed described by `spec`; on error, what was built is removed again.
    /// The first testbed of a process also removes what killed runs left behind.
    pub fn build(spec: &Spec) -> Result<Self> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale);
        let prefix = netns::unique_name(PREFIX);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut bed = Self {
            pass: None,
            hosts: Vec::new(),
            switch: None,
            prefix,
            dir,
        };
        bed.switch = Some(Netns::create(&bed.netns_name(SWITCH))?);
        for bridge in &spec.bridges {
            let switch = bed.switch();
            switch.ip(&["link", "add", bridge, "type", "bridge"])?;
            switch.ip(&["link", "set", bridge, "up"])?;
        }
        for host in &spec.hosts {
            let netns = Netns::create(&bed.netns_name(&host.name))?;
            bed.hosts.push((host.name.clone(), netns));
        }
        let mut pass_ports = Vec::new();
        for (i, link) in spec.links.iter().enumerate() {
            if let Some(port) = bed.add_link(i, link)? {
                pass_ports.push(port);
            }
        }
        for host in &spec.hosts {
            let netns = bed.ns(&host.name)?;
            for (key, value) in &host.sysctls {
                netns.sysctl(&format!("{key}={value}"))?;
            }
            for (dest, via) in &host.routes {
                netns.ip(&["route", "add", dest, "via", via])?;
            }
        }
        if !pass_ports.is_empty() {
            bed.pass = Some(xdp_pass::attach(bed.switch(), &pass_ports)?);
        }
        Ok(bed)
    }

    /// Creates link number `i` in the switch namespace, moves its ends to their hosts and
    /// configures them. Returns the bridge port name if it needs the pass program.
    fn add_link(&self, i: usize, link: &LinkSpec) -> Result<Option<String>> {
        let (a, b) = (format!("v{i}a"), format!("v{i}b"));
        let switch = self.switch();
        switch.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        self.place(&a, &link.end)?;
        match &link.peer {
            Peer::Host(end) => {
                self.place(&b, end)?;
                Ok(None)
            }
            Peer::Bridge { bridge, xdp_pass } => {
                switch.ip(&["link", "set", &b, "master", bridge])?;
                switch.exec("ethtool", &["-K", &b, "tx", "off"])?;
                switch.ip(&["link", "set", &b, "up"])?;
                Ok(xdp_pass.then_some(b))
            }
        }
    }

    /// Moves veth end `veth` from the switch namespace into its host, renames it, turns tx
    /// checksum offload off (XDP rewrites packets incrementally), adds addresses, brings it up.
    fn place(&self, veth: &str, end: &End) -> Result<()> {
        let netns = self.ns(&end.host)?;
        self.switch()
            .ip(&["link", "set", veth, "netns", netns.name()])?;
        netns.ip(&["link", "set", veth, "name", &end.ifname])?;
        netns.exec("ethtool", &["-K", &end.ifname, "tx", "off"])?;
        for addr in &end.addrs {
            netns.ip(&["addr", "add", addr, "dev", &end.ifname])?;
        }
        netns.ip(&["link", "set", &end.ifname, "up"])?;
        Ok(())
    }

    fn switch(&self) -> &Netns {
        self.switch.as_ref().expect("switch namespace exists")
    }

    /// The namespace name of `host` (unique per testbed).
    pub fn netns_name(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> Result<&Netns> {
        self.hosts
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, netns)| netns)
            .ok_or_else(|| anyhow!("no host {host} in the testbed"))
    }

    /// The testbed's unique prefix, for names of pins, sockets and the like.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The testbed's scratch directory (configs, sockets, logs); removed on a clean drop and
    /// kept, with a note, when the test failed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies the logs and configs of the scratch directory (which a clean drop removes) to
    /// `to`, so that a run that went on after something broke keeps the daemons' account of
    /// it; returns how many files were copied.
    pub fn save_logs(&self, to: &Path) -> Result<usize> {
        std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
        let mut copied = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path
                .extension()
                .is_some_and(|e| e == "log" || e == "toml" || e == "pcap")
            {
                let target = to.join(path.file_name().unwrap_or_default());
                std::fs::copy(&path, &target)
                    .with_context(|| format!("copy {} to {}", path.display(), to.display()))?;
                copied += 1;
            }
        }
        Ok(copied)
    }

    /// Starts `program args...` in `host`; its output goes to `<dir>/<log_name>.log`.
    pub fn spawn(
        &self,
        host: &str,
        program: &Path,
        args: &[String],
        log_name: &str,
    ) -> Result<Process> {
        let log = self.dir.join(format!("{log_name}.log"));
        Process::spawn(self.ns(host)?.name(), program, args, &log)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.pass = None;
        self.hosts.clear();
        self.switch = None;
        if std::thread::panicking() {
            eprintln!(
                "testbed {}: logs kept in {}",
                self.prefix,
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("testbed cleanup: {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs() {
        assert!(running(std::process::id()));
    }
}
