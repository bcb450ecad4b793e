//! The JSON views of the daemon's state served over the control socket (`status`,
//! `services`, `conns`), in the shapes docs/interfaces.md fixes.
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    cluster::transport::TransportCounters, daemon::State, datapath::conntrack, datapath::counters,
    datapath::netlink::mac_string,
};

/// The cluster as this node sees it: `status --json` key `cluster`. Built by the cluster shell
/// from the ring's status in the daemon's own terms (node names, not ids), so the documented
/// shape does not follow every change inside the protocol.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// Its node id (index in the node map).
    pub node_id: u8,
    /// Its membership: `alone`, `member` or `removed` (as the ring reports it).
    pub state: String,
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
    /// What the local fault monitor reports now (empty = healthy).
    pub faults: Vec<String>,
    /// The reliable message layer's counters, drops by reason included.
    pub transport: TransportCounters,
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

/// The `status` view.
pub fn status(state: &State) -> Value {
    let c = &state.config;
    let interfaces: Vec<Value> = state
        .nics
        .iter()
        .zip(&c.interfaces)
        .map(|(n, i)| {
            json!({"name": n.name, "ifindex": n.ifindex, "role": i.role.name(),
                   "mac": mac_string(&n.mac), "address": n.address.map(|a| a.to_string())})
        })
        .collect();
    let owned = state.maps.owned();
    let vips: Vec<Value> = c
        .vips
        .iter()
        .map(|v| {
            json!({"address": v.address.to_string(), "interface": v.interface,
                   "owned": owned.contains(&v.address)})
        })
        .collect();
    json!({
        "node": c.name,
        "uptime_s": state.started.elapsed().as_secs(),
        "xdp_mode": c.xdp_mode.name(),
        "adopted": state.adopted,
        "interfaces": interfaces,
        "vips": vips,
        "services": c.services.len(),
        "connections": state.maps.conns.keys().filter(Result::is_ok).count(),
        "cluster": state.cluster,
    })
}

/// The `services` view.
pub fn services(state: &State) -> Result<Value, String> {
    let (entries, _) = read_connections(state)?;
    let mut backend_id = 0u32;
    let list: Vec<Value> = state
        .config
        .services
        .iter()
        .map(|s| {
            let backends: Vec<Value> = s
                .backends
                .iter()
                .map(|b| {
                    let c = counters::sum(&state.maps.backend_stats, backend_id);
                    backend_id += 1;
                    let (addr, port) = (u32::from(b.address).to_be(), b.port.to_be());
                    let connections = entries
                        .iter()
                        .filter(|e| e.conn.backend_addr == addr && e.conn.backend_port == port)
                        .count();
                    json!({"address": b.address.to_string(), "port": b.port, "weight": b.weight,
                           "healthy": state.is_healthy(s, b), "connections": connections,
                           "packets": c.packets, "bytes": c.bytes})
                })
                .collect();
            json!({"name": s.name, "vip": s.vip.to_string(), "port": s.port,
                   "protocol": s.protocol.name(), "table_size": state.maps.table_size(s),
                   "backends": backends})
        })
        .collect();
    Ok(Value::Array(list))
}

/// The `conns` view, filtered; an unknown service or a malformed address is an error.
pub fn conns(state: &State, filter: &ConnFilter) -> Result<Value, String> {
    let service = match &filter.service {
        None => None,
        Some(name) => Some(
            state
                .config
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
    let now = conntrack::monotonic_ns();
    let (entries, _) = read_connections(state)?;
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| service.is_none_or(|id| e.conn.service_id == id))
        .filter(|e| {
            backend.is_none_or(|(a, p)| {
                Ipv4Addr::from(u32::from_be(e.conn.backend_addr)) == a
                    && p.is_none_or(|p| u16::from_be(e.conn.backend_port) == p)
            })
        })
        .filter(|e| client.is_none_or(|c| Ipv4Addr::from(u32::from_be(e.key.src_addr)) == c))
        .take(filter.limit.unwrap_or(usize::MAX))
        .map(|e| e.view(now))
        .collect();
    Ok(Value::Array(list))
}

/// Both connection tables, or the reason they could not be read.
fn read_connections(state: &State) -> Result<(Vec<conntrack::Entry>, conntrack::Orphans), String> {
    conntrack::walk(&state.maps).map_err(|e| format!("reading the connection tables: {e}"))
}
