//! The JSON views of the daemon's state served over the control socket (`status`,
//! `services`, `conns`, `stats`), in the shapes docs/interfaces.md fixes. Each is built from
//! what the state's owners publish ([`Sources`]): a view never walks a table or takes a lock
//! an owner waits on; `conns`, which lists the table, asks the datapath worker for it.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use gateway_common::{Action, Counter, Path, Reason};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::{
    cluster::transport::TransportCounters,
    config::Config,
    datapath::{
        conntrack,
        maps::Counters,
        netlink::{mac_string, Nic},
        worker::{DatapathHandle, TableView},
    },
};

/// Where the views read the daemon's state: what each owner publishes, and the few facts fixed
/// at start.
pub struct Sources {
    /// The running configuration (the daemon's main loop alone, the ring's shell in a cluster).
    pub config: watch::Receiver<Arc<Config>>,
    /// The cluster NICs, in config order.
    pub nics: Vec<Nic>,
    /// When the daemon started.
    pub started: Instant,
    /// Whether it took over a pinned data path.
    pub adopted: bool,
    /// The VIPs XDP answers for.
    pub owned: watch::Receiver<BTreeSet<Ipv4Addr>>,
    /// The cluster as the ring's shell last saw it; `None` alone.
    pub cluster: watch::Receiver<Option<ClusterView>>,
    /// The tables' owner, and what it published.
    pub datapath: DatapathHandle,
    /// The per-CPU counters.
    pub counters: Arc<Counters>,
    /// The ring shell's longest loop iterations so far (0 alone).
    pub shell_latency: Arc<ShellLatency>,
}

/// The ring shell's longest loop iteration, written by the shell and read by `status`: as
/// elapsed (what a peer waiting for this node sees), as the shell thread's CPU time (its
/// work, plus, under the kernel's tick accounting, the softirq work that ran on its CPU
/// meanwhile; the rest of an elapsed iteration the CPU spent elsewhere), and as that CPU time
/// outside the socket sends (the shell's own work: on a testbed a send also runs the receiving
/// namespaces' packet path). Also the times the whole process did not run long enough for its
/// peers to give up on it.
#[derive(Debug, Default)]
pub struct ShellLatency {
    elapsed_us: AtomicU64,
    on_cpu_us: AtomicU64,
    work_us: AtomicU64,
    stalls: AtomicU64,
    longest_stall_us: AtomicU64,
    recent_delay_us: AtomicU64,
    give_up_us: AtomicU64,
}

impl ShellLatency {
    /// Keeps the longest of each.
    pub fn record(&self, elapsed: Duration, on_cpu: Duration, sending: Duration) {
        self.elapsed_us
            .fetch_max(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.on_cpu_us
            .fetch_max(on_cpu.as_micros() as u64, Ordering::Relaxed);
        self.work_us.fetch_max(
            on_cpu.saturating_sub(sending).as_micros() as u64,
            Ordering::Relaxed,
        );
    }

    /// Counts a time the process did not run for as long as a peer waits for it (the ring
    /// was told: it rejoins), keeping the longest.
    pub fn stalled(&self, stopped: Duration) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
        self.longest_stall_us
            .fetch_max(stopped.as_micros() as u64, Ordering::Relaxed);
    }

    /// The longest elapsed iteration, the most CPU time one iteration used, and the most it
    /// used outside the socket sends (not necessarily the same iterations).
    pub fn longest(&self) -> (Duration, Duration, Duration) {
        let read = |us: &AtomicU64| Duration::from_micros(us.load(Ordering::Relaxed));
        (
            read(&self.elapsed_us),
            read(&self.on_cpu_us),
            read(&self.work_us),
        )
    }

    /// Publishes the longest time this process could not act in the last 30-60 s
    /// (`daemon::stall::RecentDelay`), and how long peers wait for it before they give up.
    pub fn delayed(&self, recent: Duration, give_up: Duration) {
        self.recent_delay_us
            .store(recent.as_micros() as u64, Ordering::Relaxed);
        self.give_up_us
            .store(give_up.as_micros() as u64, Ordering::Relaxed);
    }

    /// The longest recent delay and the peers' give-up time ([`ShellLatency::delayed`]).
    pub fn recent_delay(&self) -> (Duration, Duration) {
        let read = |us: &AtomicU64| Duration::from_micros(us.load(Ordering::Relaxed));
        (read(&self.recent_delay_us), read(&self.give_up_us))
    }

    /// How many stalls, and the longest.
    pub fn stalls(&self) -> (u64, Duration) {
        (
            self.stalls.load(Ordering::Relaxed),
            Duration::from_micros(self.longest_stall_us.load(Ordering::Relaxed)),
        )
    }
}

/// The cluster as this node sees it: `status --json` key `cluster`. Built by the cluster shell
/// from the ring's status in the daemon's own terms (node names, not ids), so the documented
/// shape does not follow every change inside the protocol.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// Its node id (index in the node map).
    pub node_id: u8,
    /// Its membership: `starting` (waiting for a token or to run alone), `member` (of a ring,
    /// possibly alone) or `outside` (removed, or left after a local fault; asking to join).
    pub state: String,
    /// Its ring lost a majority of its members at once (or a better ring asks for this node):
    /// it takes over none of their VIPs yet (docs/architecture.md, "Quorum").
    #[serde(default)]
    pub quorum_wait: bool,
    /// The members in ring order.
    pub members: Vec<MemberView>,
    /// The token as last seen here.
    pub token: TokenView,
    /// The version of the cluster-wide configuration this node runs.
    pub config_version: u32,
    /// The version the ring runs (this node's differs only while it switches, or when it
    /// refused the ring's).
    pub ring_config_version: u32,
    /// A version this node staged, waiting for the ring to switch.
    pub config_staged: Option<u32>,
    /// A version offered to the ring, waiting for every member to stage it.
    pub config_offer: Option<u32>,
    /// Configuration documents this node refused: a signature that does not verify with the
    /// signer's listed key, a text that does not match its digest, or an invalid configuration.
    pub config_refused: u64,
    /// Configuration documents dropped because this node did not ask for them.
    pub config_unwanted: u64,
    /// The VIP table: every VIP, its owner and placement.
    pub vips: Vec<VipView>,
    /// Nodes closed by an operator (they own no VIP).
    pub closed: Vec<String>,
    /// Members whose tables are not whole yet (they just joined, and the copies of their
    /// predecessor's connections are still coming in): given a VIP only when no other open
    /// member can take it.
    #[serde(default)]
    pub unready: Vec<String>,
    /// What the local fault monitor reports now (empty = healthy).
    pub faults: Vec<String>,
    /// The reliable message layer's counters, drops by reason included.
    pub transport: TransportCounters,
    /// Datagrams of the transport that a socket refused (a full send buffer, no route).
    #[serde(default)]
    pub send_failed: u64,
    /// Authenticated ring payloads that did not decode (another protocol version).
    pub undecodable: u64,
    /// NAT blocks served by another node than their own (node death without breaking
    /// connections).
    #[serde(default)]
    pub blocks: Vec<BlockView>,
    /// Copies of other nodes' connections held here, per node (this node takes them over if
    /// that node dies).
    #[serde(default)]
    pub copies: Vec<CopiesView>,
}

/// A NAT block away from its node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockView {
    /// The node whose block it is.
    pub block: String,
    /// The node serving the connections translated with it.
    pub holder: String,
    /// `gone` while the block's node is away, `back` once it translates with its block again
    /// (the holder serves what it took over until it ends).
    pub state: String,
}

/// The copies held of one node's connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CopiesView {
    /// The node whose connections they are.
    pub node: String,
    /// How many.
    pub connections: usize,
}

/// One member of the ring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: u8,
    /// Node name.
    pub name: String,
    /// Its load as carried on the token (bytes/s, packets/s, CPU), when known.
    #[serde(default)]
    pub load: Option<LoadView>,
}

/// A member's load as carried on the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadView {
    /// Bytes per second through its NICs.
    pub bytes_per_s: u64,
    /// Packets per second.
    pub packets_per_s: u64,
    /// CPU busy, per mille.
    pub cpu_permille: u16,
}

/// The token as last seen on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its 64-bit sequence number (one token in the ring = one rising sequence).
    pub seq: u64,
    /// The latest time of one round of the ring, in milliseconds.
    pub round_ms: Option<f64>,
    /// Whether this node holds the token now.
    #[serde(default)]
    pub holding: bool,
    /// Tokens this node dropped as stale (a second token would show here).
    #[serde(default)]
    pub stale: u64,
}

/// One row of the VIP table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VipView {
    /// The VIP.
    pub address: String,
    /// Name of its owner; `None` while nobody owns it.
    pub owner: Option<String>,
    /// Name of its preferred owner.
    pub preferred: Option<String>,
    /// 0 free, 1 sticky, 3 back to the preferred owner.
    pub persistence: u8,
    /// Packets per second its owner translated for it, as last carried on the token.
    #[serde(default)]
    pub packets_per_s: Option<u32>,
}

/// Filters of `conns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnFilter {
    /// At most this many entries.
    pub limit: Option<usize>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this backend: `ADDR` or `ADDR:PORT`.
    pub backend: Option<String>,
    /// Only this client address.
    pub client: Option<String>,
}

/// Milliseconds with three decimals, for JSON.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The `status` view.
pub fn status(sources: &Sources) -> Value {
    let c = sources.config.borrow().clone();
    let interfaces: Vec<Value> = sources
        .nics
        .iter()
        .zip(&c.interfaces)
        .map(|(n, i)| {
            json!({"name": n.name, "ifindex": n.ifindex, "role": i.role.name(),
                   "mac": mac_string(&n.mac), "address": n.address.map(|a| a.to_string())})
        })
        .collect();
    let owned = sources.owned.borrow().clone();
    let vips: Vec<Value> = c
        .vips
        .iter()
        .map(|v| {
            json!({"address": v.address.to_string(), "interface": v.interface,
                   "owned": owned.contains(&v.address)})
        })
        .collect();
    let (iteration, iteration_on_cpu, iteration_work) = sources.shell_latency.longest();
    let (stalls, longest_stall) = sources.shell_latency.stalls();
    let (recent_delay, give_up) = sources.shell_latency.recent_delay();
    // Half the peers' patience: a host this slow is one hiccup away from this node's removal.
    let too_slow = !give_up.is_zero() && recent_delay * 2 >= give_up;
    // Cloned in a statement of its own: the borrow (a read lock the ring's shell writes
    // through) ends here, not after the whole view is built.
    let cluster = sources.cluster.borrow().clone();
    json!({
        "node": c.name,
        "uptime_s": sources.started.elapsed().as_secs(),
        "xdp_mode": c.xdp_mode.name(),
        "adopted": sources.adopted,
        "interfaces": interfaces,
        "vips": vips,
        "services": c.services.len(),
        "connections": sources.datapath.view().census.connections,
        "latency": {
            "longest_shell_iteration_ms": millis(iteration),
            "longest_shell_iteration_cpu_ms": millis(iteration_on_cpu),
            "longest_shell_work_ms": millis(iteration_work),
            "longest_datapath_wait_ms": millis(sources.datapath.longest_wait()),
            "stalls": stalls,
            "longest_stall_ms": millis(longest_stall),
            "recent_longest_delay_ms": millis(recent_delay),
            "give_up_ms": millis(give_up),
            "too_slow": too_slow,
        },
        "cluster": cluster,
    })
}

/// The `services` view; connection counts are the last sweep's.
pub fn services(sources: &Sources) -> Value {
    let config = sources.config.borrow().clone();
    let tables: TableView = sources.datapath.view();
    let counters = &sources.counters;
    let mut backend_id = 0u32;
    let list: Vec<Value> = config
        .services
        .iter()
        .map(|s| {
            let backends: Vec<Value> = s
                .backends
                .iter()
                .map(|b| {
                    let c = Counters::sum(&counters.backend_stats, backend_id);
                    backend_id += 1;
                    let connections = tables
                        .census
                        .per_backend
                        .get(&(b.address, b.port))
                        .copied()
                        .unwrap_or(0);
                    let healthy = tables.is_healthy(&(s.name.clone(), b.address, b.port));
                    json!({"address": b.address.to_string(), "port": b.port, "weight": b.weight,
                           "healthy": healthy, "connections": connections,
                           "packets": c.packets, "bytes": c.bytes})
                })
                .collect();
            let table_size = tables.table_sizes.get(&s.name).copied().unwrap_or(0);
            json!({"name": s.name, "vip": s.vip.to_string(), "port": s.port,
                   "protocol": s.protocol.name(), "table_size": table_size,
                   "backends": backends})
        })
        .collect();
    Value::Array(list)
}

/// The `conns` view, filtered; an unknown service or a malformed address is an error. The
/// datapath worker reads the table and filters it on its own thread.
pub async fn conns(sources: &Sources, filter: ConnFilter) -> Result<Value, String> {
    let config = sources.config.borrow().clone();
    let service = match &filter.service {
        None => None,
        Some(name) => Some(
            config
                .services
                .iter()
                .position(|s| &s.name == name)
                .ok_or_else(|| format!("no service named `{name}`"))? as u32,
        ),
    };
    let backend = match &filter.backend {
        None => None,
        Some(text) => Some(match text.parse::<SocketAddrV4>() {
            Ok(sa) => (*sa.ip(), Some(sa.port())),
            Err(_) => (
                text.parse::<Ipv4Addr>()
                    .map_err(|_| format!("--backend `{text}` is not ADDR or ADDR:PORT"))?,
                None,
            ),
        }),
    };
    let client = match &filter.client {
        None => None,
        Some(text) => Some(
            text.parse::<Ipv4Addr>()
                .map_err(|_| format!("--client `{text}` is not an IPv4 address"))?,
        ),
    };
    let limit = filter.limit.unwrap_or(usize::MAX);
    sources
        .datapath
        .call(move |worker| {
            let now = conntrack::monotonic_ns();
            let (entries, _) = worker
                .connections()
                .map_err(|e| format!("reading the connection tables: {e}"))?;
            let list: Vec<Value> = entries
                .iter()
                .filter(|e| service.is_none_or(|id| e.conn.service_id == id))
                .filter(|e| {
                    backend.is_none_or(|(a, p)| {
                        Ipv4Addr::from(u32::from_be(e.conn.backend_addr)) == a
                            && p.is_none_or(|p| u16::from_be(e.conn.backend_port) == p)
                    })
                })
                .filter(|e| {
                    client.is_none_or(|c| Ipv4Addr::from(u32::from_be(e.key.src_addr)) == c)
                })
                .take(limit)
                .map(|e| e.view(now))
                .collect();
            Ok(Value::Array(list))
        })
        .await
        .map_err(|e| e.to_string())?
}

/// Each named counter of `map`, by name.
fn named(
    map: &aya::maps::PerCpuArray<aya::maps::MapData, Counter>,
    names: impl Iterator<Item = (u32, &'static str)>,
) -> Value {
    Value::Object(
        names
            .map(|(i, name)| (name.to_string(), json!(Counters::sum(map, i).packets)))
            .collect(),
    )
}

fn traffic(c: Counter) -> Value {
    json!({"packets": c.packets, "bytes": c.bytes})
}

/// The `stats` view: counters by action, path and reason, per service and per backend, and
/// the cluster protocol's messages (sent, resent, dropped by reason; `null` when alone).
pub fn stats(sources: &Sources) -> Value {
    let config = sources.config.borrow().clone();
    let counters = &sources.counters;
    let mut services = Map::new();
    let mut backends = Map::new();
    let mut backend_id = 0u32;
    for (id, s) in config.services.iter().enumerate() {
        let c = Counters::sum(&counters.service_stats, id as u32);
        services.insert(s.name.clone(), traffic(c));
        for b in &s.backends {
            let c = Counters::sum(&counters.backend_stats, backend_id);
            backend_id += 1;
            let entry = backends
                .entry(format!("{}:{}", b.address, b.port))
                .or_insert_with(|| traffic(Counter::default()));
            for (field, add) in [("packets", c.packets), ("bytes", c.bytes)] {
                entry[field] = json!(entry[field].as_u64().unwrap_or(0) + add);
            }
        }
    }
    let cluster = sources.cluster.borrow().clone();
    let cluster = cluster.map(|c| {
        let mut counters = json!(c.transport);
        counters["undecodable"] = json!(c.undecodable);
        counters["send_failed"] = json!(c.send_failed);
        counters
    });
    json!({
        "actions": named(&counters.actions, Action::ALL.iter().map(|a| (*a as u32, a.name()))),
        "paths": named(&counters.paths, Path::ALL.iter().map(|p| (*p as u32, p.name()))),
        "reasons": named(&counters.reasons, Reason::ALL.iter().map(|r| (*r as u32, r.name()))),
        "services": services,
        "backends": backends,
        "cluster": cluster,
    })
}
