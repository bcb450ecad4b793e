//! The optional `[cluster]` section: the node map in ring order with each member's Ed25519
//! public key, the protocol's keys, port, timers, dead-man lease, local fault monitor and the
//! version of the cluster-wide configuration. Checked as a whole like the rest of the file,
//! so a bad cluster section is rejected with file, line and field before anything changes.
use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::Ipv4Addr,
    ops::RangeInclusive,
    time::Duration,
};

use serde::Deserialize;

pub use crate::cluster::types::Persistence;
use crate::{
    cluster::{transport::TransportConfig, types::MAX_NODES},
    config::node_key::PublicKey,
};

use super::{parse_port_range, Locator, POSITIVE, S};

/// Bounds of the dead-man lease. At least 50 ms, eight token hops of the default ring: it is
/// renewed every lease/5 (10 ms then), and a shorter one lapses whenever the daemon's thread
/// runs a few milliseconds late, each lapse silencing this node's VIPs. At most a minute: a
/// daemon that hangs before the ring caps the lease keeps its XDP answering ARP that long.
const LEASE: RangeInclusive<Duration> = Duration::from_millis(50)..=Duration::from_secs(60);

/// Bounds of `token_hold`: a round of 64 nodes then takes at most about a minute.
const TOKEN_HOLD: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(1);

/// Bounds of `token_loss` and `probe_911`: beyond 10 s a lost token is no longer noticed in
/// a time any failover wants.
const RING_TIMER: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(10);

/// Bounds of `resend`: with 32 tries a dead peer is then given up after at most 63 s.
const RESEND: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(1);

/// Default UDP port of the cluster protocol.
pub const DEFAULT_PORT: u16 = 7400;

/// A 32-byte HMAC-SHA256 key of the cluster protocol. `Debug` never shows the bytes, so a
/// logged config does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// One member of the node map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its `[node] name`.
    pub name: String,
    /// Its primary address on each cluster NIC, in `[[interface]]` order (one per subnet path).
    pub addresses: Vec<Ipv4Addr>,
    /// Its NAT port block, when listed (checked disjoint from every other block).
    pub nat_ports: Option<(u16, u16)>,
    /// Its Ed25519 public key: what it signs with, so only listed members are believed.
    pub public_key: PublicKey,
}

/// Overrides of the ring protocol's timers; `None` keeps the protocol's documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timers {
    /// How long a node holds the token before passing it on.
    pub token_hold: Option<Duration>,
    /// Silence after which a node suspects the token is lost and sends a 911.
    pub token_loss: Option<Duration>,
    /// How long a 911 originator waits for its probe to come back.
    pub probe_911: Option<Duration>,
    /// First resend timeout of the reliable message layer (doubles on each try).
    pub resend: Option<Duration>,
    /// Tries of the reliable message layer before a peer is reported unreachable.
    pub tries: Option<u32>,
}

impl Timers {
    /// The transport's settings: LAN-tuned defaults with these overrides.
    pub fn transport(&self) -> TransportConfig {
        let defaults = TransportConfig::default();
        let mut config = TransportConfig {
            initial_rto: self.resend.unwrap_or(defaults.initial_rto),
            // The cap keeps its ratio to the first timeout, so a slower LAN setting stays valid.
            max_rto: self
                .resend
                .map_or(defaults.max_rto, |r| defaults.max_rto.max(r * 2)),
            max_tries: self.tries.unwrap_or(defaults.max_tries),
            ..defaults
        };
        // A partial message must outlive every resend of its fragments, however slow.
        config.reassembly_timeout = defaults.reassembly_timeout.max(config.give_up_after() * 2);
        config
    }
}

/// The local fault monitor: what makes this node give its VIPs away and leave the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// Hosts (the upstream router) that must answer ping; none = no witness check.
    pub witness: Vec<Ipv4Addr>,
    /// Time between pings of each witness.
    pub witness_interval: Duration,
    /// Consecutive unanswered pings that make a witness unreachable.
    pub witness_misses: u32,
    /// Time between checks of the NICs' link state and of the XDP attachment.
    pub link_interval: Duration,
}

/// Balancing VIPs by traffic (`[cluster.balance]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// Packets per second through a member's data path from which VIPs are balanced by
    /// traffic rather than by count; 0 balances by count only.
    pub min_packets_per_s: u32,
    /// Least time between two moves for traffic, and from the traffic's start to the first.
    pub hold: Duration,
}

/// A checked `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// UDP port of the protocol on every node.
    pub port: u16,
    /// Accepted keys by id.
    pub keys: BTreeMap<u8, Key>,
    /// The key id this node signs with.
    pub active_key: u8,
    /// Dead-man switch: how long XDP keeps answering for owned VIPs without a renewal.
    pub lease: Duration,
    /// The node map, in ring order; a node's index is its node id.
    pub nodes: Vec<ClusterNode>,
    /// This node's index in `nodes`.
    pub me: usize,
    /// Protocol timer overrides.
    pub timers: Timers,
    /// The local fault monitor.
    pub monitor: Monitor,
    /// Balancing VIPs by traffic.
    pub balance: Balance,
    /// The version of the cluster-wide part of the file (`[cluster] config_version`, at least
    /// 1): the daemon raises it and rewrites the file when the cluster applies a new
    /// configuration (`gateway reload`); an operator does not need to edit it.
    pub config_version: u32,
}

impl Cluster {
    /// Looks a node up by name; its index is its node id.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The node whose primary address `address` is.
    pub fn node_of(&self, address: Ipv4Addr) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.addresses.contains(&address))
            .map(|n| n.name.as_str())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    port: Option<S<u16>>,
    keys: S<BTreeMap<String, S<String>>>,
    active_key: Option<S<u8>>,
    lease: Option<S<String>>,
    config_version: Option<S<u32>>,
    #[serde(default)]
    witness: Vec<S<Ipv4Addr>>,
    timers: Option<S<RawTimers>>,
    monitor: Option<RawMonitor>,
    balance: Option<RawBalance>,
    #[serde(default)]
    node: Vec<RawClusterNode>,
}

impl RawCluster {
    /// Where `[cluster.keys]` is in the file.
    pub(super) fn keys_at(&self) -> usize {
        self.keys.span().start
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBalance {
    min_packets_per_s: Option<S<u32>>,
    hold: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    token_hold: Option<S<String>>,
    token_loss: Option<S<String>>,
    probe_911: Option<S<String>>,
    resend: Option<S<String>>,
    tries: Option<S<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    witness_interval: Option<S<String>>,
    witness_misses: Option<S<u32>>,
    link_interval: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterNode {
    name: S<String>,
    addresses: S<Vec<S<Ipv4Addr>>>,
    nat_ports: Option<S<String>>,
    public_key: Option<S<String>>,
}

/// Everything of the rest of the file the cluster section is checked against.
pub(super) struct Context<'a> {
    /// `[node] name`.
    pub me: &'a str,
    /// `[node] nat_ports`.
    pub nat_ports: (u16, u16),
    /// Number of `[[interface]]` entries.
    pub interfaces: usize,
}

/// Parses a hex key of exactly 64 characters.
fn parse_key(text: &str) -> Result<Key, String> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "must be 64 hex characters (32 bytes), found {} characters",
            text.len()
        ));
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| "must be hex digits only".to_string())?;
    }
    if key.iter().all(|&b| b == 0) {
        return Err("is all zeros: generate a real key (`openssl rand -hex 32`)".into());
    }
    Ok(Key(key))
}

/// Checks the `[cluster]` section against the rest of the file.
pub(super) fn check(
    loc: &Locator,
    section: &S<RawCluster>,
    cx: &Context,
) -> Result<Cluster, super::ConfigError> {
    let raw = section.get_ref();
    let port = match &raw.port {
        None => DEFAULT_PORT,
        Some(p) if *p.get_ref() == 0 => return Err(loc.err(p, "cluster.port", "must be 1-65535")),
        Some(p) => *p.get_ref(),
    };

    let mut keys = BTreeMap::new();
    for (id, value) in raw.keys.get_ref() {
        let field = format!("cluster.keys.{id}");
        let id: u8 = id
            .parse()
            .map_err(|_| loc.err(value, &field, "key ids must be numbers 0-255"))?;
        let key = parse_key(value.get_ref()).map_err(|m| loc.err(value, &field, m))?;
        keys.insert(id, key);
    }
    let active_key = match (&raw.active_key, keys.len()) {
        (_, 0) => {
            return Err(loc.err(
                &raw.keys,
                "cluster.keys",
                "at least one key is required (id = \"64 hex characters\")",
            ))
        }
        (None, 1) => *keys.keys().next().expect("one key"),
        (None, _) => {
            return Err(loc.err(
                &raw.keys,
                "cluster.active_key",
                "several keys are listed: say which one signs with `active_key = ID`",
            ))
        }
        (Some(a), _) if !keys.contains_key(a.get_ref()) => {
            return Err(loc.err(
                a,
                "cluster.active_key",
                format!("no key with id {} in [cluster.keys]", a.get_ref()),
            ))
        }
        (Some(a), _) => *a.get_ref(),
    };
    let lease = loc.duration(
        raw.lease.as_ref(),
        "cluster.lease",
        LEASE,
        Duration::from_millis(500),
    )?;
    let config_version = match &raw.config_version {
        None => 1,
        Some(v) if *v.get_ref() == 0 => {
            return Err(loc.err(v, "cluster.config_version", "must be at least 1"))
        }
        Some(v) => *v.get_ref(),
    };

    let nodes = check_nodes(loc, section, cx)?;
    let me = nodes.iter().position(|n| n.name == cx.me).ok_or_else(|| {
        loc.err(
            section,
            "cluster.node",
            format!(
                "this node (`[node] name = \"{}\"`) is not in the [[cluster.node]] list",
                cx.me
            ),
        )
    })?;
    let mine = nodes[me].nat_ports;
    if mine.is_some_and(|p| p != cx.nat_ports) {
        let at = raw.node[me].nat_ports.as_ref().expect("listed");
        return Err(loc.err(
            at,
            format!("cluster.node[{me}].nat_ports"),
            "differs from [node] nat_ports of this node",
        ));
    }
    let blocks: Vec<(usize, (u16, u16))> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                i,
                if i == me {
                    Some(cx.nat_ports)
                } else {
                    n.nat_ports
                },
            )
        })
        .filter_map(|(i, p)| Some((i, p?)))
        .collect();
    for (k, (i, a)) in blocks.iter().enumerate() {
        for (j, b) in &blocks[..k] {
            if a.0 <= b.1 && b.0 <= a.1 {
                let field = format!("cluster.node[{i}].nat_ports");
                let message = format!(
                    "{}-{} overlaps the block {}-{} of node `{}`",
                    a.0, a.1, b.0, b.1, nodes[*j].name
                );
                return Err(match &raw.node[*i].nat_ports {
                    Some(at) => loc.err(at, field, message),
                    None => loc.err(&raw.node[*i].name, field, message),
                });
            }
        }
    }

    let t = raw.timers.as_ref().map(|t| t.get_ref());
    let timer = |value: Option<&S<String>>, name: &str, range: RangeInclusive<Duration>| {
        loc.duration_in(value, &format!("cluster.timers.{name}"), range)
    };
    let timers = Timers {
        token_hold: timer(
            t.and_then(|t| t.token_hold.as_ref()),
            "token_hold",
            TOKEN_HOLD,
        )?,
        token_loss: timer(
            t.and_then(|t| t.token_loss.as_ref()),
            "token_loss",
            RING_TIMER,
        )?,
        probe_911: timer(
            t.and_then(|t| t.probe_911.as_ref()),
            "probe_911",
            RING_TIMER,
        )?,
        resend: timer(t.and_then(|t| t.resend.as_ref()), "resend", RESEND)?,
        tries: match t.and_then(|t| t.tries.as_ref()) {
            None => None,
            Some(v) if (1..=32).contains(v.get_ref()) => Some(*v.get_ref()),
            Some(v) => return Err(loc.err(v, "cluster.timers.tries", "must be 1-32")),
        },
    };
    // The transport's own bounds, checked here so the file's line is named, not at start.
    if let (Err(e), Some(at)) = (timers.transport().validate(), &raw.timers) {
        return Err(loc.err(at, "cluster.timers", e.to_string()));
    }

    let m = raw.monitor.as_ref();
    let witness = raw
        .witness
        .iter()
        .enumerate()
        .map(|(i, w)| loc.unicast(w, format!("cluster.witness[{i}]")))
        .collect::<Result<_, _>>()?;
    let monitor = Monitor {
        witness,
        witness_interval: loc.duration(
            m.and_then(|m| m.witness_interval.as_ref()),
            "cluster.monitor.witness_interval",
            POSITIVE,
            Duration::from_millis(100),
        )?,
        witness_misses: match m.and_then(|m| m.witness_misses.as_ref()) {
            None => 3,
            Some(v) if (1..=100).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                return Err(loc.err(v, "cluster.monitor.witness_misses", "must be 1-100"));
            }
        },
        link_interval: loc.duration(
            m.and_then(|m| m.link_interval.as_ref()),
            "cluster.monitor.link_interval",
            POSITIVE,
            Duration::from_millis(50),
        )?,
    };

    let b = raw.balance.as_ref();
    let balance = Balance {
        min_packets_per_s: b
            .and_then(|b| b.min_packets_per_s.as_ref())
            .map_or(20_000, |v| *v.get_ref()),
        hold: loc.duration(
            b.and_then(|b| b.hold.as_ref()),
            "cluster.balance.hold",
            POSITIVE,
            Duration::from_secs(3),
        )?,
    };
    Ok(Cluster {
        port,
        keys,
        active_key,
        lease,
        nodes,
        me,
        timers,
        monitor,
        balance,
        config_version,
    })
}

fn check_nodes(
    loc: &Locator,
    section: &S<RawCluster>,
    cx: &Context,
) -> Result<Vec<ClusterNode>, super::ConfigError> {
    let raw = section.get_ref();
    if raw.node.is_empty() {
        return Err(loc.err(
            section,
            "cluster.node",
            "list the cluster's nodes in ring order as [[cluster.node]] entries",
        ));
    }
    if raw.node.len() > MAX_NODES {
        return Err(loc.err(
            &raw.node[MAX_NODES].name,
            "cluster.node",
            format!("more than {MAX_NODES} nodes"),
        ));
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut nodes: Vec<ClusterNode> = Vec::new();
    for (i, n) in raw.node.iter().enumerate() {
        let f = |name: &str| format!("cluster.node[{i}].{name}");
        let name = n.name.get_ref().trim().to_string();
        if name.is_empty() || !names.insert(name.clone()) {
            return Err(loc.err(
                &n.name,
                f("name"),
                format!("node name `{name}` is empty or listed twice"),
            ));
        }
        if n.addresses.get_ref().len() != cx.interfaces {
            return Err(loc.err(
                &n.addresses,
                f("addresses"),
                format!(
                    "needs one primary address per [[interface]] ({}), in the same order; found {}",
                    cx.interfaces,
                    n.addresses.get_ref().len()
                ),
            ));
        }
        for (j, a) in n.addresses.get_ref().iter().enumerate() {
            let field = format!("cluster.node[{i}].addresses[{j}]");
            if !addresses.insert(loc.unicast(a, &field)?) {
                return Err(loc.err(
                    a,
                    field,
                    format!("{} is listed for two nodes or twice", a.get_ref()),
                ));
            }
        }
        let nat_ports = match &n.nat_ports {
            None => None,
            Some(p) => Some(parse_port_range(p.get_ref()).ok_or_else(|| {
                loc.err(
                    p,
                    f("nat_ports"),
                    "must be `FIRST-LAST` with 1 <= FIRST <= LAST <= 65535",
                )
            })?),
        };
        let public_key = match &n.public_key {
            None => {
                return Err(loc.err(
                    &n.name,
                    f("public_key"),
                    format!(
                        "node `{name}` has no public_key: run `gateway key public FILE` on it \
                         and list the key it prints"
                    ),
                ))
            }
            Some(k) => k
                .get_ref()
                .parse::<PublicKey>()
                .map_err(|m| loc.err(k, f("public_key"), m))?,
        };
        if let Some(other) = nodes.iter().find(|o| o.public_key == public_key) {
            let at = n.public_key.as_ref().expect("given");
            return Err(loc.err(
                at,
                f("public_key"),
                format!(
                    "the same key as node `{}`: every node has its own key",
                    other.name
                ),
            ));
        }
        nodes.push(ClusterNode {
            name,
            addresses: n.addresses.get_ref().iter().map(|a| *a.get_ref()).collect(),
            nat_ports,
            public_key,
        });
    }
    Ok(nodes)
}

/// Checks a VIP's `preferred` and `persistence` against the node map (`None` without a
/// `[cluster]` section, where neither may be given).
pub(super) fn vip_placement(
    loc: &Locator,
    preferred: Option<&S<String>>,
    persistence: Option<&S<u8>>,
    cluster: Option<&Cluster>,
    i: usize,
) -> Result<(Option<String>, Persistence), super::ConfigError> {
    let given_persistence = persistence;
    let persistence = match persistence {
        None => Persistence::Free,
        Some(p) => Persistence::from_number(*p.get_ref()).ok_or_else(|| {
            loc.err(
                p,
                format!("vip[{i}].persistence"),
                "must be 0 (free), 1 (sticky) or 3 (back to the preferred node)",
            )
        })?,
    };
    let preferred = match (preferred, cluster) {
        (None, _) => None,
        (Some(p), None) => {
            return Err(loc.err(
                p,
                format!("vip[{i}].preferred"),
                "names a cluster node, but there is no [cluster] section",
            ))
        }
        (Some(p), Some(c)) if c.node_index(p.get_ref()).is_none() => {
            return Err(loc.err(
                p,
                format!("vip[{i}].preferred"),
                format!("`{}` is not a [[cluster.node]]", p.get_ref()),
            ))
        }
        (Some(p), Some(_)) => Some(p.get_ref().clone()),
    };
    if persistence == Persistence::Home && preferred.is_none() {
        let at = given_persistence.expect("given");
        return Err(loc.err(
            at,
            format!("vip[{i}].persistence"),
            "3 returns the VIP to its preferred node: set `preferred` too",
        ));
    }
    Ok((preferred, persistence))
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse_text;
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/cluster.toml");

    #[test]
    fn example_parses() {
        let c = parse_text(EXAMPLE).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.port, 7400);
        assert_eq!(cluster.me, 0);
        assert_eq!(cluster.active_key, 1);
        assert_eq!(cluster.keys[&1].0[31], 0x1f);
        assert_eq!(cluster.keys[&2].0[0], 0xf0);
        assert_eq!(cluster.lease, Duration::from_millis(500));
        assert_eq!(cluster.nodes[2].name, "gw3");
        assert_eq!(
            cluster.nodes[1].addresses,
            [Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 1, 0, 3)]
        );
        assert_eq!(cluster.nodes[1].nat_ports, Some((30000, 39999)));
        assert_eq!(
            cluster.nodes[1].public_key.to_string(),
            "yvkikpfEHECXVLX6w9Rfwn+TRSuVBUd10ir/ss4hfPI="
        );
        assert_eq!(cluster.config_version, 1);
        assert_eq!(
            c.key.as_deref(),
            Some(std::path::Path::new("/etc/gateway/node.key"))
        );
        assert_eq!(cluster.monitor.witness, [Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(cluster.monitor.witness_misses, 3);
        assert_eq!(cluster.timers.token_loss, Some(Duration::from_millis(150)));
        assert_eq!(cluster.timers.tries, Some(4));
        assert_eq!(c.vips[0].preferred.as_deref(), Some("gw1"));
        assert_eq!(c.vips[0].persistence, Persistence::Home);
        assert_eq!(c.vips[1].persistence, Persistence::Sticky);
        assert_eq!(c.vips[2].persistence, Persistence::Free);
    }

    #[test]
    fn defaults_and_the_node_found_by_name() {
        let start = EXAMPLE.find("[cluster]").unwrap();
        let nodes = EXAMPLE.find("\n[[cluster.node]]").unwrap() + 1;
        let minimal = format!(
            "{}[cluster]\nkeys = {{ 7 = \"{}\" }}\n{}",
            &EXAMPLE[..start],
            "ab".repeat(32),
            &EXAMPLE[nodes..]
        )
        .replace(
            "name = \"gw1\"                          #",
            "name = \"gw2\" #",
        )
        .replace(
            "nat_ports = \"20000-29999\"             # this",
            "nat_ports = \"30000-39999\" #",
        )
        .replace("preferred = \"gw1\"", "preferred = \"gw3\"");
        let c = parse_text(&minimal).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.me, 1, "gw2 is second in ring order");
        assert_eq!(cluster.port, DEFAULT_PORT);
        assert_eq!(cluster.active_key, 7, "the only key signs");
        assert_eq!(cluster.timers, Timers::default());
        assert!(cluster.monitor.witness.is_empty());
        assert_eq!(cluster.monitor.link_interval, Duration::from_millis(50));
        assert_eq!(cluster.lease, Duration::from_millis(500));
        assert_eq!(cluster.config_version, 1);
    }

    #[test]
    fn no_cluster_section_means_alone() {
        let end = EXAMPLE.find("[cluster]").unwrap();
        let alone = EXAMPLE[..end]
            .replace("preferred = \"gw1\"", "")
            .replace("persistence = 3", "");
        assert_eq!(parse_text(&alone).unwrap().cluster, None);
        // Placement names cluster nodes, so it needs the section.
        let e = parse_text(&EXAMPLE[..end]).unwrap_err();
        assert_eq!(e.field, "vip[0].preferred");
    }

    /// The transport's bounds are the config's: a slow resend (50 ms and more failed at
    /// start, after XDP was attached) keeps partial messages as long as it resends them.
    #[test]
    fn slow_timers_give_a_valid_transport() {
        let slow = EXAMPLE.replacen("resend = \"20ms\"", "resend = \"1s\"", 1);
        let slow = slow.replacen("tries = 4", "tries = 32", 1);
        let timers = parse_text(&slow).unwrap().cluster.unwrap().timers;
        let transport = timers.transport();
        assert_eq!(transport.validate(), Ok(()));
        assert_eq!(transport.give_up_after(), Duration::from_secs(63));
        assert!(transport.reassembly_timeout > transport.give_up_after());
        assert_eq!(Timers::default().transport(), TransportConfig::default());
        // `token_loss` counts from the end of a round, which holds every hold: a hold above
        // it is no mistake (cluster_token runs a 200 ms hold against the 40 ms default).
        let long_hold = EXAMPLE.replacen("token_hold = \"10ms\"", "token_hold = \"1s\"", 1);
        assert!(parse_text(&long_hold).is_ok());
    }

    #[test]
    fn alone_a_node_needs_no_key_and_may_name_one() {
        let end = EXAMPLE.find("[cluster]").unwrap();
        let alone = EXAMPLE[..end]
            .replace("preferred = \"gw1\"", "")
            .replace("persistence = 3", "");
        assert!(parse_text(&alone).unwrap().key.is_some());
        let keyless = alone.replacen("key = \"/etc/gateway/node.key\"", "", 1);
        assert_eq!(parse_text(&keyless).unwrap().key, None);
    }

    #[test]
    fn keys_are_not_printed() {
        let c = parse_text(EXAMPLE).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("0, 1, 2, 3"), "key bytes in Debug output");
        assert!(printed.contains("<redacted>"));
    }
}
