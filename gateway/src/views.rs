//! The JSON views of the daemon's state served over the control socket (`status`,
//! `services`, `conns`), in the shapes docs/interfaces.md fixes.
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{conntrack, daemon::State, netlink::mac_string, stats};

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
    let vips: Vec<Value> = c
        .vips
        .iter()
        .map(|v| json!({"address": v.address.to_string(), "interface": v.interface, "owned": true}))
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
                    let c = stats::sum(&state.maps.backend_stats, backend_id);
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
