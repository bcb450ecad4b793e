//! Which changes of the file a running daemon applies at once and which wait for its restart:
//! one table, [`PARTS`], read by `gateway reload` on a node alone (which refuses a file that
//! changes a restart-only part) and by a cluster's configuration switch (which applies the
//! live parts and logs the others).
use tracing::warn;

use super::Config;

/// How a running daemon takes a change of one part of the file.
enum Apply {
    /// At once: copies the part from the new configuration into the running one.
    Live(fn(&mut Config, &Config)),
    /// At the daemon's next restart (the maps' sizes, the sockets, the ring's timers, ...).
    AtRestart,
}

/// One part of the file.
struct Part {
    /// As the operator knows it (a table name).
    name: &'static str,
    apply: Apply,
    /// Whether two configurations differ in it.
    differs: fn(&Config, &Config) -> bool,
}

/// Whether both configurations have a `[cluster]` and `part` of it differs; a cluster added or
/// removed is the `cluster` part's.
fn cluster_differs<T: PartialEq>(a: &Config, b: &Config, part: fn(&super::Cluster) -> T) -> bool {
    matches!((&a.cluster, &b.cluster), (Some(x), Some(y)) if part(x) != part(y))
}

/// Every part of the file, in the file's order. `limits.max_connections` sizes the connection
/// tables and takes effect at the restart; [`apply_live`] warns of it.
const PARTS: &[Part] = &[
    Part {
        name: "node",
        apply: Apply::AtRestart,
        differs: |a, b| {
            (
                &a.name,
                a.nat_ports,
                &a.pin_dir,
                a.xdp_mode,
                a.realtime,
                &a.key,
            ) != (
                &b.name,
                b.nat_ports,
                &b.pin_dir,
                b.xdp_mode,
                b.realtime,
                &b.key,
            )
        },
    },
    Part {
        name: "control",
        apply: Apply::AtRestart,
        differs: |a, b| a.socket != b.socket,
    },
    Part {
        name: "interface",
        apply: Apply::AtRestart,
        differs: |a, b| a.interfaces != b.interfaces,
    },
    Part {
        name: "vip",
        apply: Apply::AtRestart,
        differs: |a, b| a.vips != b.vips,
    },
    Part {
        name: "service",
        apply: Apply::Live(|running, new| running.services.clone_from(&new.services)),
        differs: |a, b| a.services != b.services,
    },
    Part {
        name: "timeouts",
        apply: Apply::Live(|running, new| running.timeouts = new.timeouts),
        differs: |a, b| a.timeouts != b.timeouts,
    },
    Part {
        name: "limits",
        apply: Apply::Live(|running, new| running.limits = new.limits),
        differs: |a, b| a.limits != b.limits,
    },
    Part {
        name: "arp",
        apply: Apply::Live(|running, new| running.arp = new.arp),
        differs: |a, b| a.arp != b.arp,
    },
    Part {
        name: "cluster",
        apply: Apply::AtRestart,
        differs: |a, b| {
            a.cluster.is_some() != b.cluster.is_some()
                || cluster_differs(a, b, |c| (c.port, c.lease, c.monitor.witness.clone()))
        },
    },
    Part {
        name: "cluster.keys",
        apply: Apply::Live(|running, new| {
            if let (Some(now), Some(next)) = (&mut running.cluster, &new.cluster) {
                now.keys.clone_from(&next.keys);
                now.active_key = next.active_key;
            }
        }),
        differs: |a, b| cluster_differs(a, b, |c| (c.keys.clone(), c.active_key)),
    },
    Part {
        name: "cluster.config_version",
        apply: Apply::Live(|running, new| {
            if let (Some(now), Some(next)) = (&mut running.cluster, &new.cluster) {
                now.config_version = next.config_version;
            }
        }),
        differs: |a, b| cluster_differs(a, b, |c| c.config_version),
    },
    Part {
        name: "cluster.node",
        apply: Apply::AtRestart,
        differs: |a, b| cluster_differs(a, b, |c| c.nodes.clone()),
    },
    Part {
        name: "cluster.timers",
        apply: Apply::AtRestart,
        differs: |a, b| cluster_differs(a, b, |c| c.timers),
    },
    Part {
        name: "cluster.balance",
        apply: Apply::AtRestart,
        differs: |a, b| cluster_differs(a, b, |c| c.balance),
    },
    Part {
        name: "cluster.monitor",
        apply: Apply::AtRestart,
        differs: |a, b| {
            cluster_differs(a, b, |c| {
                let m = &c.monitor;
                (m.witness_interval, m.witness_misses, m.link_interval)
            })
        },
    },
];

/// The parts that differ between `old` and `new` and take effect only when the daemon
/// restarts, by name, in the file's order.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    PARTS
        .iter()
        .filter(|p| matches!(p.apply, Apply::AtRestart) && (p.differs)(old, new))
        .map(|p| p.name)
        .collect()
}

/// `running` with every part of `new` that applies at once; the rest stays as it runs until
/// the restart.
pub fn apply_live(running: &Config, new: &Config) -> Config {
    if new.limits.max_connections != running.limits.max_connections {
        warn!("limits.max_connections takes effect at the next restart");
    }
    let mut next = running.clone();
    for part in PARTS {
        if let Apply::Live(copy) = part.apply {
            copy(&mut next, new);
        }
    }
    next
}
