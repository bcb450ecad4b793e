//! A gateway cluster on the cluster testbed: one daemon per node with the same node map, keys,
//! VIPs and services; starting, killing, hanging and isolating nodes as the tests need; and
//! reading the cluster's state through each node's CLI. Field order is drop order: daemons,
//! back-end servers, testbed.
use crate::arp::{ArpWatch, Mac};
use crate::client::{Traffic, UdpFlow};
use crate::cluster_topology::{
    self, external_addr, internal_addr, EXTERNAL_VIPS, NODES, ROUTER_ADDR,
};
use crate::daemon::{Daemon, ServiceConfig, ECHO_PORT, WEB_PORT};
use crate::failover;
use crate::host_death::{self, DeadHost};
use crate::netns::Netns;
use crate::packet;
use crate::process::Process;
use crate::testbed::Testbed;
use crate::topology::{self, EXT_IF, INTERNAL_VIP, INT_IF};
use anyhow::{bail, Context, Result};
use gateway::config::node_key::{NodeKey, PublicKey};
use gateway::control::views::ClusterView;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cluster protocol's UDP port (the configs leave `[cluster] port` at its default).
pub const CLUSTER_PORT: u16 = gateway::config::DEFAULT_PORT;

/// The HMAC key every node of the test cluster shares (key id 1).
pub const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Every VIP the cluster owns: the external ones, then the back-ends' gateway.
pub fn all_vips() -> Vec<Ipv4Addr> {
    let mut vips = EXTERNAL_VIPS.to_vec();
    vips.push(INTERNAL_VIP);
    vips
}

/// Where a VIP starts and how it sticks (`[[vip]] preferred` and `persistence`).
#[derive(Clone, Debug)]
pub struct Placement {
    /// The VIP.
    pub vip: Ipv4Addr,
    /// Index of its preferred node.
    pub preferred: usize,
    /// 0, 1 or 3.
    pub persistence: u8,
}

/// What differs between cluster tests.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// VIP placements; VIPs not listed have neither.
    pub placements: Vec<Placement>,
    /// `[cluster.timers]` lines, e.g. `("token_hold", "5ms")`; empty keeps the defaults.
    pub timers: Vec<(String, String)>,
    /// `[cluster] lease`; `None` keeps the default.
    pub lease: Option<String>,
    /// `[cluster.balance] min_packets_per_s`; `None` keeps the default.
    pub balance_min_pps: Option<u32>,
}

/// One node: its files and, while it runs, its daemon.
pub struct Node {
    /// Its name (`gw1`...), also its testbed host.
    pub name: &'static str,
    /// Its config file.
    pub config: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its bpffs pin directory.
    pub pin_dir: PathBuf,
    /// Its Ed25519 key file (`[node] key`), in the testbed's directory, so the testbed's
    /// cleanup removes it.
    pub key: PathBuf,
    /// The public half of `key`, listed in every node's `[[cluster.node]]` entry for it.
    pub public_key: PublicKey,
    /// The daemon, while it runs.
    pub daemon: Option<Daemon>,
    /// Stopped with SIGSTOP (its CLI would not answer).
    pub paused: bool,
}

/// The daemons of the cluster's nodes, on a testbed someone else owns (the cluster tests'
/// [`Cluster`], or the failover benchmark's shared testbed).
pub struct Gateways {
    /// The nodes, in ring order.
    pub nodes: Vec<Node>,
}

/// The cluster testbed with a daemon on every node; dereferences to its [`Gateways`].
pub struct Cluster {
    /// The daemons.
    pub gateways: Gateways,
    /// The back-end servers.
    pub servers: Vec<Process>,
    /// The testbed.
    pub bed: Testbed,
}

/// The services of every external VIP: HTTP on port 80 and UDP echo on port 5000 over all
/// three back-ends.
fn services() -> Vec<ServiceConfig> {
    vec![ServiceConfig::web(&[1, 1, 1]), ServiceConfig::echo()]
}

impl Gateways {
    /// Writes every node's config for `bed`, starts a daemon on each, and waits until the
    /// ring has formed, every VIP has one owner and the table has settled.
    pub fn start(bed: &Testbed, options: &ClusterOptions) -> Result<Self> {
        let nodes = NODES
            .iter()
            .map(|name| {
                let key = bed.dir().join(format!("{name}.key"));
                Ok(Node {
                    name,
                    config: bed.dir().join(format!("{name}.toml")),
                    socket: bed.dir().join(format!("{name}.sock")),
                    pin_dir: Path::new("/sys/fs/bpf").join(format!("{}-{name}", bed.prefix())),
                    public_key: node_key(&key)?,
                    key,
                    daemon: None,
                    paused: false,
                })
            })
            .collect::<Result<_>>()?;
        let mut gateways = Self { nodes };
        for i in 0..gateways.nodes.len() {
            let path = &gateways.nodes[i].config;
            std::fs::write(path, gateways.config_text(i, options))?;
            // It holds the cluster's keys: the daemon refuses it unless private.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        for i in 0..gateways.nodes.len() {
            gateways.start_daemon(bed, i)?;
        }
        gateways.wait_converged(Duration::from_secs(20))?;
        // The count balance moves VIPs for a few hundred milliseconds after the ring formed;
        // tests and the benchmark start from the table it ends with.
        gateways.wait_settled(Duration::from_secs(20))?;
        Ok(gateways)
    }

    /// The config file of node `i`.
    pub fn config_text(&self, i: usize, options: &ClusterOptions) -> String {
        let node = &self.nodes[i];
        let mut s = format!(
            "[node]\nname = \"{name}\"\nnat_ports = \"{nat}\"\npin_dir = \"{pin}\"\nxdp_mode = \"native\"\n\
             key = \"{key}\"\n\n\
             [control]\nsocket = \"{socket}\"\n\n\
             [[interface]]\nname = \"{EXT_IF}\"\nrole = \"external\"\n\n\
             [[interface]]\nname = \"{INT_IF}\"\nrole = \"internal\"\n",
            name = node.name,
            nat = nat_block(i),
            pin = node.pin_dir.display(),
            key = node.key.display(),
            socket = node.socket.display(),
        );
        let vips = EXTERNAL_VIPS
            .iter()
            .map(|v| (*v, EXT_IF))
            .chain([(INTERNAL_VIP, INT_IF)]);
        for (vip, ifname) in vips {
            let _ = write!(
                s,
                "\n[[vip]]\naddress = \"{vip}\"\ninterface = \"{ifname}\"\n"
            );
            if let Some(p) = options.placements.iter().find(|p| p.vip == vip) {
                let _ = write!(
                    s,
                    "preferred = \"{}\"\npersistence = {}\n",
                    NODES[p.preferred], p.persistence
                );
            }
        }
        for vip in EXTERNAL_VIPS {
            for service in services() {
                let named = ServiceConfig {
                    name: format!("{}-{vip}", service.name),
                    ..service
                };
                s += &named.to_toml(vip);
            }
        }
        let _ = write!(
            s,
            "\n[timeouts]\ntcp_established = \"300s\"\ntcp_closing = \"10s\"\nudp = \"30s\"\n\
             \n[cluster]\nwitness = [\"{ROUTER_ADDR}\"]\n"
        );
        if let Some(lease) = &options.lease {
            let _ = writeln!(s, "lease = \"{lease}\"");
        }
        let _ = write!(s, "\n[cluster.keys]\n1 = \"{KEY}\"\n");
        if let Some(min) = options.balance_min_pps {
            let _ = write!(s, "\n[cluster.balance]\nmin_packets_per_s = {min}\n");
        }
        if !options.timers.is_empty() {
            s += "\n[cluster.timers]\n";
            for (key, value) in &options.timers {
                let _ = writeln!(s, "{key} = \"{value}\"");
            }
        }
        for (j, node) in self.nodes.iter().enumerate() {
            let _ = write!(
                s,
                "\n[[cluster.node]]\nname = \"{}\"\naddresses = [\"{}\", \"{}\"]\nnat_ports = \"{}\"\n\
                 public_key = \"{}\"\n",
                node.name,
                external_addr(j),
                internal_addr(j),
                nat_block(j),
                node.public_key,
            );
        }
        s
    }

    /// Starts node `i`'s daemon (it must not run) and waits until its CLI answers. A daemon
    /// that was killed starts again on its pins, as a restarted daemon does.
    pub fn start_daemon(&mut self, bed: &Testbed, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        match node.daemon.as_mut() {
            Some(d) if d.running() => bail!("{} runs already", node.name),
            Some(d) => {
                d.launch()?;
            }
            None => {
                let daemon =
                    Daemon::start_in(bed, node.name, &node.config, &node.socket, &node.pin_dir)?;
                node.daemon = Some(daemon);
            }
        }
        Ok(())
    }

    /// Node `i`'s daemon.
    pub fn daemon(&self, i: usize) -> Result<&Daemon> {
        self.nodes[i]
            .daemon
            .as_ref()
            .with_context(|| format!("{} has no daemon", self.nodes[i].name))
    }

    /// `gateway status --json` of node `i`.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        self.daemon(i)?.json(&["status"])
    }

    /// The cluster as node `i` sees it.
    pub fn view(&self, i: usize) -> Result<ClusterView> {
        let status = self.status(i)?;
        serde_json::from_value(status["cluster"].clone())
            .with_context(|| format!("cluster view of {}: {status}", self.nodes[i].name))
    }

    /// The VIPs node `i`'s XDP answers for (its maps).
    pub fn owned(&self, i: usize) -> Result<Vec<Ipv4Addr>> {
        let status = self.status(i)?;
        let vips = status["vips"].as_array().context("no vips")?;
        Ok(vips
            .iter()
            .filter(|v| v["owned"] == true)
            .filter_map(|v| v["address"].as_str()?.parse().ok())
            .collect())
    }

    /// Indexes of the nodes whose daemon runs and answers its CLI.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                !self.nodes[i].paused
                    && self.nodes[i].daemon.as_ref().is_some_and(Daemon::running)
                    && self.status(i).is_ok()
            })
            .collect()
    }

    /// Checks the converged state once: every live node is a member of one ring of exactly
    /// the live nodes, all agree on the VIP table, every VIP has an owner among them, and each
    /// node's maps answer for exactly the VIPs the table gives it. Returns the owners by VIP.
    pub fn converged(&self) -> Result<Vec<(Ipv4Addr, usize)>> {
        let live = self.live();
        let names: Vec<&str> = live.iter().map(|&i| self.nodes[i].name).collect();
        let mut table = None;
        for &i in &live {
            let view = self.view(i)?;
            let members: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
            if view.state != "member" || members != names {
                bail!(
                    "{}: {} of {members:?}, live {names:?}",
                    view.node,
                    view.state
                );
            }
            let owners: Vec<(String, Option<String>)> = view
                .vips
                .iter()
                .map(|v| (v.address.clone(), v.owner.clone()))
                .collect();
            match &table {
                None => table = Some(owners),
                Some(t) if *t == owners => {}
                Some(t) => bail!("{} sees {owners:?}, another node {t:?}", view.node),
            }
        }
        let table = table.context("no live node")?;
        let mut out = Vec::new();
        for (address, owner) in table {
            let vip: Ipv4Addr = address.parse()?;
            let owner = owner.with_context(|| format!("{vip} has no owner"))?;
            let i = NODES
                .iter()
                .position(|n| *n == owner)
                .with_context(|| format!("{vip} owned by unknown {owner}"))?;
            if !live.contains(&i) {
                bail!("{vip} owned by {owner}, which is not live");
            }
            out.push((vip, i));
        }
        for &i in &live {
            let mut owned = self.owned(i)?;
            owned.sort();
            let mut wanted: Vec<Ipv4Addr> = out
                .iter()
                .filter(|(_, o)| *o == i)
                .map(|(v, _)| *v)
                .collect();
            wanted.sort();
            if owned != wanted {
                bail!(
                    "{} answers for {owned:?}, the table gives it {wanted:?}",
                    NODES[i]
                );
            }
        }
        Ok(out)
    }

    /// Moves `vip` to node `to` with `gateway vip move` unless it is there, once the ring has
    /// converged, and waits until it has converged again.
    pub fn place(&self, vip: Ipv4Addr, to: usize) -> Result<()> {
        self.wait_converged(Duration::from_secs(5))?;
        let owner = self.owner(vip)?;
        if owner != to {
            self.daemon(owner)?
                .cli(&["vip", "move", &vip.to_string(), NODES[to]])?;
        }
        self.wait_converged(Duration::from_secs(5))?;
        Ok(())
    }

    /// Waits until [`Cluster::converged`] holds; returns how long that took.
    pub fn wait_converged(&self, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            match self.converged() {
                Ok(_) => return Ok(started.elapsed()),
                Err(e) if started.elapsed() > within => {
                    bail!("no converged cluster after {within:?}: {e:#}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The node that owns `vip` in the converged table.
    pub fn owner(&self, vip: Ipv4Addr) -> Result<usize> {
        self.converged()?
            .into_iter()
            .find(|(v, _)| *v == vip)
            .map(|(_, i)| i)
            .with_context(|| format!("{vip} not in the table"))
    }

    /// Stops node `i`'s daemon with `gateway stop [--keep-datapath]` (`Daemon::stop`: it
    /// returns once the daemon has exited); returns how long that took.
    pub fn stop_daemon(&mut self, i: usize, keep_datapath: bool) -> Result<Duration> {
        self.nodes[i]
            .daemon
            .as_mut()
            .context("no daemon")?
            .stop(keep_datapath)
    }

    /// Node `i`'s daemon alone is killed with SIGKILL; its host, NICs and XDP (pinned) stay
    /// up, so its XDP answers until the lease runs out.
    pub fn kill_daemon(&mut self, i: usize) -> Result<()> {
        self.nodes[i].daemon.as_mut().context("no daemon")?.kill()
    }

    /// Hangs node `i`'s daemon (SIGSTOP), as a stuck process does; its XDP keeps running.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGSTOP)?;
        self.nodes[i].paused = true;
        Ok(())
    }

    /// Resumes node `i`'s daemon (SIGCONT).
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGCONT)?;
        self.nodes[i].paused = false;
        Ok(())
    }

    fn signal(&mut self, i: usize, signal: i32) -> Result<()> {
        self.nodes[i]
            .daemon
            .as_mut()
            .context("no daemon")?
            .signal(signal)
    }
}

impl Cluster {
    /// Builds the testbed, starts the back-ends and a daemon on every node, and waits until
    /// the ring has formed and every VIP has one owner.
    pub fn start(options: &ClusterOptions) -> Result<Self> {
        let started = Instant::now();
        let bed = cluster_topology::build()?;
        let servers = topology::start_backends(&bed)?;
        let gateways = Gateways::start(&bed, options)?;
        println!(
            "cluster {} ready in {:.2?}",
            bed.prefix(),
            started.elapsed()
        );
        Ok(Self {
            gateways,
            servers,
            bed,
        })
    }

    /// Starts node `i`'s daemon again (see [`Gateways::start_daemon`]).
    pub fn start_daemon(&mut self, i: usize) -> Result<()> {
        self.gateways.start_daemon(&self.bed, i)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> &Netns {
        self.bed.ns(self.nodes[i].name).expect("node host")
    }

    /// The router's namespace (the VIPs' L2 neighbour, where ARP is watched).
    pub fn router(&self) -> &Netns {
        self.bed.ns(topology::ROUTER).expect("router host")
    }

    /// An ARP watch in the router asking for every external VIP every 10 ms.
    pub fn watch_arp(&self) -> Result<ArpWatch> {
        ArpWatch::start(
            self.router(),
            EXT_IF,
            &EXTERNAL_VIPS,
            Some(Duration::from_millis(10)),
        )
    }

    /// The client namespace.
    pub fn client(&self) -> &Netns {
        self.bed.ns(topology::CLIENT).expect("client host")
    }

    /// The MAC of node `i`'s external NIC.
    pub fn mac(&self, i: usize, ifname: &str) -> Result<Mac> {
        Ok(packet::link_identity(self.ns(i), ifname)?.0)
    }

    /// Node `i` dies as a host dies ([`host_death::kill`]), its daemon with it; returns once
    /// the others have converged without it.
    pub fn die(&mut self, i: usize) -> Result<DeadHost> {
        let dead = host_death::kill(&self.bed, NODES[i], &[EXT_IF, INT_IF])?;
        self.gateways.kill_daemon(i)?;
        self.wait_converged(Duration::from_secs(5))?;
        Ok(dead)
    }

    /// Node `i` dies as a host dies: its daemon is killed with SIGKILL and its links go down.
    pub fn kill_host(&mut self, i: usize) -> Result<()> {
        self.gateways.kill_daemon(i)?;
        self.set_links(i, "down")
    }

    /// Node `i`'s links come back up (its daemon is started separately).
    pub fn revive_links(&self, i: usize) -> Result<()> {
        self.set_links(i, "up")
    }

    /// Sets node `i`'s NICs `up` or `down`; up again, the default route (which went with the
    /// link) is restored.
    pub fn set_links(&self, i: usize, state: &str) -> Result<()> {
        for ifname in [EXT_IF, INT_IF] {
            self.ns(i).ip(&["link", "set", ifname, state])?;
        }
        if state == "up" {
            let router = ROUTER_ADDR.to_string();
            self.ns(i)
                .ip(&["route", "replace", "default", "via", &router])?;
        }
        Ok(())
    }

    /// Installs `chains` (nftables chain definitions) as table `inet gwtest` in node `i`'s
    /// namespace: the tests' loss and partitions (there is no netem).
    pub fn nft(&self, i: usize, chains: &str) -> Result<()> {
        let file = self.bed.dir().join(format!("{}-gwtest.nft", NODES[i]));
        std::fs::write(&file, format!("table inet gwtest {{\n{chains}\n}}\n"))?;
        self.ns(i)
            .exec("nft", &["-f", &file.to_string_lossy()])
            .map(drop)
    }

    /// Removes node `i`'s table `inet gwtest` ([`Cluster::nft`]).
    pub fn nft_clear(&self, i: usize) -> Result<()> {
        self.ns(i)
            .exec("nft", &["delete", "table", "inet", "gwtest"])
            .map(drop)
    }

    /// The UDP echo service of `vip`.
    pub fn echo(vip: Ipv4Addr) -> SocketAddrV4 {
        SocketAddrV4::new(vip, ECHO_PORT)
    }

    /// The HTTP service of `vip`.
    pub fn web(vip: Ipv4Addr) -> SocketAddrV4 {
        SocketAddrV4::new(vip, WEB_PORT)
    }

    /// Traffic through `vip` from the client namespace: `long_lived` kept-alive HTTP
    /// connections and a stream of new ones ([`Traffic`]), and `udp` flows that each keep
    /// their source port ([`UdpFlow`]).
    pub fn traffic(
        &self,
        vip: Ipv4Addr,
        long_lived: usize,
        udp: usize,
    ) -> Result<(Traffic, Vec<UdpFlow>)> {
        let srcs = topology::client_addrs();
        let traffic = Traffic::start(self.client(), &srcs, Self::web(vip), long_lived)?;
        let flows = UdpFlow::start_many(self.client(), &srcs, Self::echo(vip), udp)?;
        Ok((traffic, flows))
    }
}

impl std::ops::Deref for Cluster {
    type Target = Gateways;

    fn deref(&self) -> &Gateways {
        &self.gateways
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Gateways {
        &mut self.gateways
    }
}

/// The public key of the node key at `path`, made there first unless the testbed has it
/// already (the failover benchmark may start the cluster more than once on one testbed).
fn node_key(path: &Path) -> Result<PublicKey> {
    let key = if path.exists() {
        NodeKey::load(path)?
    } else {
        NodeKey::generate(path)?
    };
    Ok(key.public())
}

/// Node `i`'s NAT port block: 10000-16999, 17000-23999, 24000-30999, all below the kernel's
/// ephemeral ports (32768-60999), which the nodes' own connections (health checks) use: a
/// reply to one of those must not look like another node's NAT port.
pub fn nat_block(i: usize) -> String {
    let first = 10_000 + 7_000 * i;
    format!("{first}-{}", first + 6_999)
}

/// The gateway cluster as a system of the failover benchmark, on the benchmark's testbed: three
/// daemons with the default timers, the prober's VIP being the first external one.
pub struct GatewaySystem {
    options: ClusterOptions,
    gateways: Option<Gateways>,
}

impl GatewaySystem {
    /// The cluster with `options` (defaults: the default timers).
    pub fn new(options: ClusterOptions) -> Self {
        Self {
            options,
            gateways: None,
        }
    }

    fn gateways(&mut self) -> Result<&mut Gateways> {
        self.gateways
            .as_mut()
            .context("the gateway cluster is not started")
    }
}

impl failover::System for GatewaySystem {
    fn name(&self) -> String {
        "gateway".to_owned()
    }

    fn start(&mut self, bed: &Testbed) -> Result<()> {
        self.gateways = Some(Gateways::start(bed, &self.options)?);
        Ok(())
    }

    /// The VIP's owner once the router sends it the VIP's traffic: right after a move the
    /// router may still send to the previous owner (its neighbour entry ignores gratuitous ARP
    /// within `locktime`, one second, of its last update), which then serves the flows it
    /// holds; killing the owner then would time no failover at all.
    fn owner_of_vip(&self, bed: &Testbed) -> Result<Option<usize>> {
        let gateways = self.gateways.as_ref().context("not started")?;
        let vip = EXTERNAL_VIPS[0];
        let owner = gateways.converged().ok().and_then(|table| {
            table
                .into_iter()
                .find(|(v, _)| *v == vip)
                .map(|(_, owner)| owner)
        });
        let Some(owner) = owner else {
            return Ok(None);
        };
        let mac = packet::link_identity(bed.ns(NODES[owner])?, EXT_IF)?.0;
        let router =
            bed.ns(topology::ROUTER)?
                .ip(&["neigh", "show", &vip.to_string(), "dev", EXT_IF])?;
        let follows = router.contains(&gateway::datapath::netlink::mac_string(&mac));
        Ok(follows.then_some(owner))
    }

    fn restart_node(&mut self, bed: &Testbed, dead: DeadHost) -> Result<()> {
        let i = NODES
            .iter()
            .position(|n| *n == dead.host)
            .with_context(|| format!("{} is no node", dead.host))?;
        let gateways = self.gateways()?;
        // Reaps the daemon the host's death killed; its pins stay, as on a rebooted host
        // whose bpffs survived (the restarted daemon adopts them).
        gateways.kill_daemon(i)?;
        dead.revive(bed)?;
        gateways.start_daemon(bed, i)?;
        gateways.wait_settled(Duration::from_secs(20))
    }
}

impl Gateways {
    /// Waits until the cluster has converged and its VIP table stayed the same for two seconds
    /// (the count balance waits a second after a join before it moves a VIP: the moves that
    /// balance the VIPs over a rejoined node are over).
    pub fn wait_settled(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut last: Option<(Vec<(Ipv4Addr, usize)>, Instant)> = None;
        loop {
            match (self.converged(), &last) {
                (Ok(table), Some((seen, since))) if *seen == table => {
                    if since.elapsed() >= Duration::from_secs(2) {
                        return Ok(());
                    }
                }
                (Ok(table), _) => last = Some((table, Instant::now())),
                (Err(_), _) => last = None,
            }
            if Instant::now() > deadline {
                bail!("the cluster did not settle in {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_config_parses_and_lists_its_own_key() {
        let dir = std::env::temp_dir().join(format!("netns-cluster-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = NODES
            .iter()
            .map(|name| {
                let key = dir.join(format!("{name}.key"));
                Node {
                    name,
                    config: dir.join(format!("{name}.toml")),
                    socket: dir.join(format!("{name}.sock")),
                    pin_dir: dir.join(name),
                    public_key: node_key(&key).unwrap(),
                    key,
                    daemon: None,
                    paused: false,
                }
            })
            .collect();
        let gateways = Gateways { nodes };
        let again = node_key(&gateways.nodes[0].key).unwrap();
        assert_eq!(
            again, gateways.nodes[0].public_key,
            "an existing key is kept"
        );
        for (i, node) in gateways.nodes.iter().enumerate() {
            let text = gateways.config_text(i, &ClusterOptions::default());
            let config = gateway::config::parse(&node.config, &text).unwrap();
            let key = gateway::config::node_key::load_node_key(&config)
                .unwrap()
                .unwrap();
            assert_eq!(key.public(), node.public_key, "{}", node.name);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
