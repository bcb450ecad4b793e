//! Sums the per-CPU counters of the data path into the `stats` view.
use aya::maps::{MapData, PerCpuArray};
use gateway_common::{Action, Counter, Path, Reason};
use serde_json::{json, Map, Value};

use crate::daemon::State;

/// The sum over CPUs of one counter (zero when the index is out of range).
pub fn sum(map: &PerCpuArray<MapData, Counter>, index: u32) -> Counter {
    map.get(&index, 0).map_or(Counter::default(), |values| {
        values.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        })
    })
}

fn named(
    map: &PerCpuArray<MapData, Counter>,
    names: impl Iterator<Item = (u32, &'static str)>,
) -> Value {
    Value::Object(
        names
            .map(|(i, name)| (name.to_string(), json!(sum(map, i).packets)))
            .collect(),
    )
}

fn traffic(c: Counter) -> Value {
    json!({"packets": c.packets, "bytes": c.bytes})
}

/// The `stats` JSON: counters by action, path and reason, per service and per backend, and
/// the cluster protocol's messages (sent, resent, dropped by reason; `null` when alone).
pub fn view(state: &State) -> Value {
    let maps = &state.maps;
    let mut services = Map::new();
    let mut backends = Map::new();
    let mut backend_id = 0u32;
    for (id, s) in state.config.services.iter().enumerate() {
        services.insert(s.name.clone(), traffic(sum(&maps.service_stats, id as u32)));
        for b in &s.backends {
            let c = sum(&maps.backend_stats, backend_id);
            backend_id += 1;
            let entry = backends
                .entry(format!("{}:{}", b.address, b.port))
                .or_insert_with(|| traffic(Counter::default()));
            for (field, add) in [("packets", c.packets), ("bytes", c.bytes)] {
                entry[field] = json!(entry[field].as_u64().unwrap_or(0) + add);
            }
        }
    }
    json!({
        "actions": named(&maps.actions, Action::ALL.iter().map(|a| (*a as u32, a.name()))),
        "paths": named(&maps.paths, Path::ALL.iter().map(|p| (*p as u32, p.name()))),
        "reasons": named(&maps.reasons, Reason::ALL.iter().map(|r| (*r as u32, r.name()))),
        "services": services,
        "backends": backends,
        "cluster": state.cluster.as_ref().map(|c| {
            let mut counters = json!(c.transport);
            counters["undecodable"] = json!(c.undecodable);
            counters
        }),
    })
}
