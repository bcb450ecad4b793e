//! This node's load as the token carries it: packets and bytes per second through the data
//! path (every packet XDP saw, by its action counters) and how busy the machine's CPUs are (XDP
//! runs in softirq, so the machine's busy share is the data path's cost, not the daemon's);
//! and each VIP's traffic (the packets XDP translated for its services), which tells the ring
//! which VIP to move for load.
use std::{collections::BTreeMap, net::Ipv4Addr, time::Instant};

use gateway_common::Action;

use crate::{
    cluster::{
        message::{Load, VipLoad},
        types::NodeId,
    },
    datapath::maps::Counters,
};

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    cpu_times_of(text.lines().next()?)
}

/// Busy (everything but idle and iowait) and total jiffies of a `cpu ...` line.
fn cpu_times_of(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// One measurement: what the counters said, when.
#[derive(Clone)]
struct Sample {
    at: Instant,
    packets: u64,
    bytes: u64,
    cpu: Option<(u64, u64)>,
    /// Packets translated per VIP, over its services.
    vips: BTreeMap<Ipv4Addr, u64>,
}

/// Turns counter readings into rates.
#[derive(Default)]
pub struct LoadMeter {
    last: Option<Sample>,
}

impl LoadMeter {
    /// Reads the counters now; returns node `node`'s load and the traffic of each VIP with a
    /// service (`services`: each service's VIP, by service index), the rates since the
    /// previous reading (none the first time).
    pub fn sample(
        &mut self,
        counters: &Counters,
        node: NodeId,
        services: &[Ipv4Addr],
    ) -> Option<(Load, Vec<VipLoad>)> {
        let (packets, bytes) = Action::ALL.iter().fold((0, 0), |(p, b), a| {
            let c = Counters::sum(&counters.actions, *a as u32);
            (p + c.packets, b + c.bytes)
        });
        let mut vips = BTreeMap::new();
        for (id, vip) in services.iter().enumerate() {
            *vips.entry(*vip).or_insert(0) +=
                Counters::sum(&counters.service_stats, id as u32).packets;
        }
        let now = Sample {
            at: Instant::now(),
            packets,
            bytes,
            cpu: cpu_times(),
            vips,
        };
        let load = self
            .last
            .as_ref()
            .map(|last| (rates(node, last, &now), vip_rates(last, &now)));
        self.last = Some(now);
        load
    }
}

/// Each VIP's packets per second between two samples.
fn vip_rates(last: &Sample, now: &Sample) -> Vec<VipLoad> {
    let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
    now.vips
        .iter()
        .map(|(vip, packets)| {
            let before = last.vips.get(vip).copied().unwrap_or(*packets);
            VipLoad {
                address: *vip,
                packets_per_s: (packets.saturating_sub(before) as f64 / secs)
                    .min(f64::from(u32::MAX)) as u32,
            }
        })
        .collect()
}

fn rates(node: NodeId, last: &Sample, now: &Sample) -> Load {
    let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
    let per_s = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs) as u64;
    let cpu_permille = match (last.cpu, now.cpu) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            ((b1.saturating_sub(b0)) * 1000 / (t1 - t0)).min(1000) as u16
        }
        _ => 0,
    };
    Load {
        node,
        cpu_permille,
        packets_per_s: per_s(last.packets, now.packets).min(u64::from(u32::MAX)) as u32,
        bytes_per_s: per_s(last.bytes, now.bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn proc_stat_line() {
        let line = "cpu  100 0 50 800 50 0 0 0 0 0";
        assert_eq!(cpu_times_of(line), Some((150, 1000)));
        assert_eq!(cpu_times_of("cpu0 1 2 3 4"), None);
    }

    #[test]
    fn rates_between_samples() {
        let t = Instant::now();
        let a = Sample {
            at: t,
            packets: 1_000,
            bytes: 100_000,
            cpu: Some((150, 1000)),
            vips: BTreeMap::from([(Ipv4Addr::new(10, 0, 0, 100), 40)]),
        };
        let b = Sample {
            at: t + Duration::from_millis(500),
            packets: 1_500,
            bytes: 150_000,
            cpu: Some((400, 2000)),
            vips: BTreeMap::from([(Ipv4Addr::new(10, 0, 0, 100), 240)]),
        };
        assert_eq!(
            rates(NodeId(2), &a, &b),
            Load {
                node: NodeId(2),
                cpu_permille: 250,
                packets_per_s: 1_000,
                bytes_per_s: 100_000,
            }
        );
        assert_eq!(
            vip_rates(&a, &b),
            vec![VipLoad {
                address: Ipv4Addr::new(10, 0, 0, 100),
                packets_per_s: 400,
            }]
        );
    }
}
