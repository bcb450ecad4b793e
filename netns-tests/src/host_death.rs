//! Killing a node "as a host dies", the same way for every system the failover benchmark
//! compares: its links go down at once (it vanishes from the network, whatever still runs in
//! its kernel, such as pinned XDP programs or conntrack) and every process in its namespace is
//! killed without a chance to say goodbye (no VRRP priority-0 advert, no leave message). And
//! bringing it back the way a rebooted host's network comes back.
use crate::cmd;
use crate::testbed::Testbed;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// A node killed by [`kill`]; [`DeadHost::revive`] brings its links back.
#[derive(Debug)]
#[must_use = "a dead host stays down unless revived"]
pub struct DeadHost {
    /// The node's host name in the testbed.
    pub host: String,
    /// The instant its links were down (just after the `ip` command that set them down
    /// returned): from then on nothing can pass through it. Failover times count from here.
    pub died: Instant,
    netns: String,
    links: Vec<String>,
    routes: Vec<String>,
}

/// Runs `ip -n NETNS -batch FILE` with `commands`, so several link changes happen in one
/// process, within microseconds of each other.
fn ip_batch(bed: &Testbed, netns: &str, name: &str, commands: &[String]) -> Result<()> {
    let file = bed.dir().join(format!("{name}.ip"));
    std::fs::write(&file, commands.join("\n") + "\n")?;
    let result = cmd::run("ip", &["-n", netns, "-batch", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    result.map(drop)
}

/// The pids of the processes in network namespace `netns`.
fn pids(netns: &str) -> Result<Vec<i32>> {
    Ok(cmd::run("ip", &["netns", "pids", netns])?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Kills `host` as a host dies: sets `links` down (one `ip -batch`), then SIGKILLs every
/// process in its namespace until none is left. The routes that going down removes (those not
/// added by the kernel for an address) are remembered for [`DeadHost::revive`].
pub fn kill(bed: &Testbed, host: &str, links: &[&str]) -> Result<DeadHost> {
    let netns = bed.ns(host)?.name().to_owned();
    let routes = cmd::run("ip", &["-n", &netns, "route", "show"])?
        .lines()
        .filter(|l| !l.contains("proto kernel"))
        // `linkdown` is a state `ip` reports, not a route attribute it accepts.
        .map(|l| l.replace(" linkdown", ""))
        .collect();
    let down: Vec<String> = links
        .iter()
        .map(|l| format!("link set dev {l} down"))
        .collect();
    ip_batch(bed, &netns, &format!("{host}-down"), &down)?;
    let died = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids(&netns)?;
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} in {host} survive SIGKILL");
        }
        for pid in pids {
            // SAFETY: kill(2) on a process of the testbed's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(DeadHost {
        host: host.to_owned(),
        died,
        netns,
        links: links.iter().map(|l| l.to_string()).collect(),
        routes,
    })
}

impl DeadHost {
    /// Brings the links back up and restores the routes they lost, as a rebooted host's
    /// network configuration would. Starting its software again is the system's business
    /// ([`crate::failover::System::restart_node`]).
    pub fn revive(self, bed: &Testbed) -> Result<()> {
        let mut commands: Vec<String> = self
            .links
            .iter()
            .map(|l| format!("link set dev {l} up"))
            .collect();
        commands.extend(self.routes.iter().map(|r| format!("route replace {r}")));
        ip_batch(bed, &self.netns, &format!("{}-up", self.host), &commands)
            .with_context(|| format!("revive {}", self.host))
    }
}
