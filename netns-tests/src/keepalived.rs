//! The failover baseline: keepalived (VRRP) on the nodes of the cluster testbed, serving the
//! same VIPs as the gateway cluster would, with kernel nftables DNAT to the back-ends on every
//! node. This is what a user would otherwise deploy, and what the gateway's failover time is
//! compared against.
//!
//! One `vrrp_sync_group` holds two instances, the external VIPs on `ext0` and the internal VIP
//! (the back-ends' default gateway) on `int0`, so both move together: a back-end's reply must
//! come back through the node that holds the connection's conntrack state. Priorities follow
//! the node order (gw1 highest) and preemption is keepalived's default, so gw1 takes the VIPs
//! back when it returns. Every instance starts in BACKUP state, so a restarted node never takes
//! over before it has heard the current master.
use crate::cluster_topology::{EXTERNAL_VIPS, NODES};
use crate::cmd;
use crate::daemon::{ECHO_PORT, WEB_PORT};
use crate::failover::System;
use crate::host_death::DeadHost;
use crate::nft_baseline::{self, Dnat};
use crate::process::Process;
use crate::testbed::Testbed;
use crate::topology::{BACKEND_HTTP_PORT, BACKEND_UDP_PORT, EXT_IF, INTERNAL_VIP, INT_IF};
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The nftables table of the DNAT rules on each node.
const TABLE: &str = "keepalived_dnat";

/// The VRRP router ids of the two instances (one per interface, so they may even be equal;
/// distinct ones make captures easier to read).
const EXT_VRID: u8 = 51;
/// See [`EXT_VRID`].
const INT_VRID: u8 = 52;

/// How long keepalived may take to settle (the default timers need about 3.5 s per election).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// keepalived's timer settings, the two ends of what users run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timers {
    /// keepalived's defaults: VRRPv2, one advert per second, so a backup takes over after
    /// three missed adverts plus its skew, about 3.6 s.
    Default,
    /// VRRPv3 with adverts every 100 ms, the fastest setting that stays sane on a loaded host:
    /// takeover after about 0.36 s.
    Fast,
}

impl Timers {
    /// The profile's name in result rows.
    pub fn name(self) -> &'static str {
        match self {
            Timers::Default => "default",
            Timers::Fast => "fast",
        }
    }

    /// The profile of `name` (`default` or `fast`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "default" => Ok(Timers::Default),
            "fast" => Ok(Timers::Fast),
            _ => bail!("unknown keepalived timer profile `{name}` (default, fast)"),
        }
    }
}

/// The VRRP priority of node `i`: gw1 highest.
fn priority(i: usize) -> u32 {
    150 - 50 * i as u32
}

/// The keepalived configuration of node `i`. (Several keepalived processes share the machine
/// thanks to per-node pid files on the command line; 2.2.7 has no `instance` keyword.)
pub fn config(i: usize, timers: Timers) -> String {
    let mut conf = String::new();
    let _ = writeln!(conf, "global_defs {{\n  router_id {}", NODES[i]);
    if timers == Timers::Fast {
        conf += "  vrrp_version 3\n";
    }
    conf += "}\n\nvrrp_sync_group VIPS {\n  group {\n    EXT\n    INT\n  }\n}\n";
    let external: Vec<String> = EXTERNAL_VIPS
        .iter()
        .map(|vip| format!("{vip}/32 dev {EXT_IF}"))
        .collect();
    let internal = vec![format!("{INTERNAL_VIP}/24 dev {INT_IF}")];
    for (name, ifname, vrid, vips) in [
        ("EXT", EXT_IF, EXT_VRID, external),
        ("INT", INT_IF, INT_VRID, internal),
    ] {
        let _ = write!(
            conf,
            "\nvrrp_instance {name} {{\n  state BACKUP\n  interface {ifname}\n  \
             virtual_router_id {vrid}\n  priority {}\n",
            priority(i)
        );
        if timers == Timers::Fast {
            conf += "  advert_int 0.1\n";
        }
        let _ = writeln!(
            conf,
            "  virtual_ipaddress {{\n    {}\n  }}\n}}",
            vips.join("\n    ")
        );
    }
    conf
}

/// One node's keepalived.
#[derive(Debug)]
struct Node {
    netns: String,
    process: Option<Process>,
    starts: u32,
}

/// keepalived on every node of the cluster testbed, as a [`System`] of the failover
/// benchmark. Dropping it stops keepalived and removes the rules, VIPs and files, even on
/// panic.
#[derive(Debug)]
pub struct KeepalivedSystem {
    timers: Timers,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl KeepalivedSystem {
    /// keepalived with `timers`, not started yet ([`System::start`]).
    pub fn new(timers: Timers) -> Self {
        Self {
            timers,
            dir: PathBuf::new(),
            nodes: Vec::new(),
        }
    }

    fn file(&self, i: usize, suffix: &str) -> PathBuf {
        self.dir.join(format!("keepalived-{}{suffix}", NODES[i]))
    }

    /// Writes node `i`'s configuration and starts its keepalived (VRRP only, in the
    /// foreground, logging to its log file, with its own pid files).
    fn start_node(&mut self, bed: &Testbed, i: usize) -> Result<()> {
        let conf = self.file(i, ".conf");
        std::fs::write(&conf, config(i, self.timers))?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let args: Vec<String> = vec![
            "--dont-fork".into(),
            "--log-console".into(),
            "--log-detail".into(),
            "--no-syslog".into(),
            "--vrrp".into(),
            "--use-file".into(),
            path(&conf),
            "--pid".into(),
            path(&self.file(i, ".pid")),
            "--vrrp_pid".into(),
            path(&self.file(i, "-vrrp.pid")),
        ];
        let node = &mut self.nodes[i];
        node.starts += 1;
        let log = format!("keepalived-{}-{}", NODES[i], node.starts);
        node.process = Some(bed.spawn(NODES[i], Path::new("keepalived"), &args, &log)?);
        Ok(())
    }

    /// Whether node `i` has `vip` on `ifname` with the link up.
    fn holds(&self, i: usize, ifname: &str, vip: &str) -> Result<bool> {
        let netns = &self.nodes[i].netns;
        let addrs = cmd::run(
            "ip",
            &["-n", netns, "-o", "-4", "addr", "show", "dev", ifname, "up"],
        )?;
        Ok(addrs.split_whitespace().any(|w| w == vip))
    }

    /// Waits until gw1, the highest priority, holds both the external and the internal VIPs
    /// and no other node holds either: the state keepalived keeps while nothing fails.
    fn wait_settled(&mut self) -> Result<()> {
        let ext = format!("{}/32", EXTERNAL_VIPS[0]);
        let int = format!("{INTERNAL_VIP}/24");
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut holders = Vec::new();
            for i in 0..self.nodes.len() {
                holders.push((self.holds(i, EXT_IF, &ext)?, self.holds(i, INT_IF, &int)?));
            }
            if holders[0] == (true, true) && holders[1..].iter().all(|h| *h == (false, false)) {
                return Ok(());
            }
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if let Some(process) = node.process.as_mut() {
                    if let Some(status) = process.try_status()? {
                        bail!(
                            "keepalived on {} exited ({status}): {}",
                            NODES[i],
                            process.log_tail(20)
                        );
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("keepalived did not settle in {SETTLE_TIMEOUT:?}: (ext, int) VIPs held per node {holders:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes the VIPs from node `i` if it still has them (a killed keepalived leaves them).
    fn remove_vips(&self, i: usize) {
        let netns = &self.nodes[i].netns;
        let mut vips: Vec<(String, &str)> = EXTERNAL_VIPS
            .iter()
            .map(|v| (format!("{v}/32"), EXT_IF))
            .collect();
        vips.push((format!("{INTERNAL_VIP}/24"), INT_IF));
        for (vip, ifname) in vips {
            if self.holds_any(i, ifname, &vip) {
                if let Err(e) = cmd::run("ip", &["-n", netns, "addr", "del", &vip, "dev", ifname]) {
                    eprintln!("keepalived cleanup: {e:#}");
                }
            }
        }
    }

    /// Whether node `i` has `vip` on `ifname`, link up or not.
    fn holds_any(&self, i: usize, ifname: &str, vip: &str) -> bool {
        cmd::run(
            "ip",
            &[
                "-n",
                &self.nodes[i].netns,
                "-o",
                "-4",
                "addr",
                "show",
                "dev",
                ifname,
            ],
        )
        .is_ok_and(|addrs| addrs.split_whitespace().any(|w| w == vip))
    }
}

impl System for KeepalivedSystem {
    fn name(&self) -> String {
        format!("keepalived_{}", self.timers.name())
    }

    /// Installs the DNAT rules on every node, starts every keepalived and waits until gw1
    /// serves the VIPs.
    fn start(&mut self, bed: &Testbed) -> Result<()> {
        self.dir = bed.dir().to_owned();
        self.nodes = NODES
            .iter()
            .map(|node| {
                Ok(Node {
                    netns: bed.ns(node)?.name().to_owned(),
                    process: None,
                    starts: 0,
                })
            })
            .collect::<Result<_>>()?;
        let services = [
            Dnat {
                proto: "udp",
                port: ECHO_PORT,
                backend_port: BACKEND_UDP_PORT,
            },
            Dnat {
                proto: "tcp",
                port: WEB_PORT,
                backend_port: BACKEND_HTTP_PORT,
            },
        ];
        let rules = nft_baseline::ruleset(TABLE, &EXTERNAL_VIPS, &services);
        for node in &self.nodes {
            nft_baseline::load(&node.netns, &rules)?;
        }
        for i in 0..NODES.len() {
            self.start_node(bed, i)?;
        }
        self.wait_settled()
    }

    /// The live node (link up) holding the first external VIP, if exactly one does.
    fn owner_of_vip(&self, _bed: &Testbed) -> Result<Option<usize>> {
        let vip = format!("{}/32", EXTERNAL_VIPS[0]);
        let mut owners = Vec::new();
        for i in 0..self.nodes.len() {
            if self.holds(i, EXT_IF, &vip)? {
                owners.push(i);
            }
        }
        Ok(match owners[..] {
            [owner] => Some(owner),
            _ => None,
        })
    }

    /// A rebooted host has no VIPs: they are removed while the links are still down, then the
    /// links come back, keepalived starts, and gw1 takes the VIPs back (preemption).
    fn restart_node(&mut self, bed: &Testbed, dead: DeadHost) -> Result<()> {
        let Some(i) = NODES.iter().position(|n| *n == dead.host) else {
            bail!("{} is not a node", dead.host);
        };
        // Its keepalived was SIGKILLed with the host; reap it.
        self.nodes[i].process = None;
        // Nor any run-time files: keepalived refuses to start while its pid files name a
        // process that still exists, and the killed one may linger as a zombie.
        for suffix in [".pid", "-vrrp.pid"] {
            let _ = std::fs::remove_file(self.file(i, suffix));
        }
        self.remove_vips(i);
        dead.revive(bed)?;
        self.start_node(bed, i)?;
        self.wait_settled()
    }
}

impl Drop for KeepalivedSystem {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            // SIGTERM: keepalived removes its VIPs as it exits.
            node.process = None;
        }
        for i in 0..self.nodes.len() {
            self.remove_vips(i);
            let netns = &self.nodes[i].netns;
            if let Err(e) = cmd::run_in(netns, "nft", &["delete", "table", "ip", TABLE]) {
                eprintln!("keepalived cleanup: {e:#}");
            }
            for suffix in [".conf", ".pid", "-vrrp.pid"] {
                let _ = std::fs::remove_file(self.file(i, suffix));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_uses_keepalived_defaults() {
        let conf = config(1, Timers::Default);
        assert!(!conf.contains("advert_int"), "{conf}");
        assert!(!conf.contains("vrrp_version"), "{conf}");
        assert!(conf.contains("router_id gw2"), "{conf}");
        assert!(conf.contains("priority 100"), "{conf}");
        assert!(conf.contains("10.0.0.100/32 dev ext0"), "{conf}");
        assert!(conf.contains("10.1.0.1/24 dev int0"), "{conf}");
    }

    #[test]
    fn fast_profile_is_vrrp3_at_100ms() {
        let conf = config(0, Timers::Fast);
        assert!(conf.contains("vrrp_version 3"), "{conf}");
        assert_eq!(conf.matches("advert_int 0.1").count(), 2, "{conf}");
        assert!(conf.contains("priority 150"), "{conf}");
    }

    #[test]
    fn priorities_fall_with_the_node_order() {
        assert!(priority(0) > priority(1) && priority(1) > priority(2) && priority(2) > 0);
    }
}
