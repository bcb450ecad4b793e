//! The configuration file: parsed with serde + toml, then checked as a whole, so a bad file is
//! rejected with its file, line and field before anything is changed.
mod cluster;
pub mod live;
pub mod maglev;
pub mod node_key;
pub mod shared;

pub use cluster::{Cluster, ClusterNode, Key, Monitor, Persistence, Timers, DEFAULT_PORT};

use std::{
    collections::HashSet,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use gateway_common::{MAGLEV_MAX, MAX_BACKENDS, MAX_IFACES, MAX_SERVICES, MAX_VIPS};
use serde::Deserialize;
use toml::Spanned;

/// A configuration error, pointing at the place in the file that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line of the offending value (0 when the file could not be read).
    pub line: usize,
    /// Dotted path of the field, e.g. `service[0].backend[1].weight`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Whether XDP runs in the driver or in the generic (skb) hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver: the fast path.
    #[default]
    Native,
    /// In the kernel's generic hook: works everywhere, slow.
    Generic,
}

impl XdpMode {
    /// The name used in the file and in `status`.
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// Which side of the gateway a NIC faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Clients and the upstream router.
    External,
    /// Back-end servers.
    Internal,
}

impl Role {
    /// The name used in the file and in `status`.
    pub fn name(self) -> &'static str {
        match self {
            Role::External => "external",
            Role::Internal => "internal",
        }
    }
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name used in the file and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IP protocol number used in map keys.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => gateway_common::proto::TCP,
            Protocol::Udp => gateway_common::proto::UDP,
        }
    }
}

/// How a backend's health is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// Never checked: always up.
    None,
    /// Up when a TCP connection opens.
    Tcp,
    /// Up when `GET path` answers 2xx or 3xx.
    Http,
}

/// The health check of a service's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// What is checked.
    pub kind: HealthKind,
    /// Path of the HTTP GET.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive successes that bring a backend up.
    pub rise: u32,
    /// Consecutive failures that bring a backend down.
    pub fall: u32,
}

/// One back-end server of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its address.
    pub address: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Share of new connections; 0 = drained.
    pub weight: u32,
}

/// One service, VIP:port/protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// The VIP it is served on.
    pub vip: Ipv4Addr,
    /// The port it is served on.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// How its backends are checked.
    pub health: Health,
    /// Its backends.
    pub backends: Vec<Backend>,
}

/// A cluster NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name of the link.
    pub name: String,
    /// Which side it faces.
    pub role: Role,
}

/// A VIP and the NIC whose subnet it lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// The address.
    pub address: Ipv4Addr,
    /// Name of the NIC (one of `interfaces`).
    pub interface: String,
    /// The cluster node it starts on and, with persistence 3, returns to.
    pub preferred: Option<String>,
    /// How the ring places it.
    pub persistence: Persistence,
}

/// Idle timeouts of connection entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP with no FIN/RST seen.
    pub tcp_established: Duration,
    /// TCP after FIN or RST.
    pub tcp_closing: Duration,
    /// How long the NAT port of a connection the back-end closed stays taken (its reply entry
    /// kept) after the connection entry went: the back-end holds the 4-tuple in TIME_WAIT,
    /// and refuses a new connection of the same client address on the same port until then.
    pub tcp_time_wait: Duration,
    /// UDP flows.
    pub udp: Duration,
}

/// Node-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// New connections per second for the node; 0 = unlimited.
    pub new_connections_per_second: u32,
    /// Capacity of the connection tables.
    pub max_connections: u32,
}

/// Gratuitous ARP announcements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Packets per burst.
    pub garp_count: u32,
    /// Gap between the packets of a burst.
    pub garp_interval: Duration,
    /// Delay of the second burst.
    pub garp_second_burst: Duration,
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (reload reads it again).
    pub path: PathBuf,
    /// Node name.
    pub name: String,
    /// This node's NAT port block, inclusive.
    pub nat_ports: (u16, u16),
    /// Where maps and links are pinned.
    pub pin_dir: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Whether the ring's threads run at real-time priority and the daemon locks its memory
    /// (`[node] realtime`, on by default), as corosync does.
    pub realtime: bool,
    /// This node's Ed25519 key file (`[node] key`), required in a cluster; read at daemon
    /// start ([`crate::config::node_key::load_node_key`]), not by the parser.
    pub key: Option<PathBuf>,
    /// The control socket.
    pub socket: PathBuf,
    /// Cluster NICs.
    pub interfaces: Vec<Interface>,
    /// VIPs.
    pub vips: Vec<Vip>,
    /// Services.
    pub services: Vec<Service>,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// Gratuitous ARP.
    pub arp: Arp,
    /// The cluster; `None` runs alone, owning every VIP with a lease that never runs out.
    pub cluster: Option<Cluster>,
}

/// Default path of the control socket, shared by daemon and CLI.
pub const DEFAULT_SOCKET: &str = "/run/gateway/gateway.sock";

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: S<RawNode>,
    #[serde(default)]
    control: Option<RawControl>,
    #[serde(default)]
    interface: Vec<RawInterface>,
    #[serde(default)]
    vip: Vec<RawVip>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    timeouts: Option<RawTimeouts>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    arp: Option<RawArp>,
    #[serde(default)]
    cluster: Option<S<cluster::RawCluster>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: S<String>,
    nat_ports: S<String>,
    pin_dir: Option<String>,
    #[serde(default)]
    xdp_mode: XdpMode,
    #[serde(default = "on")]
    realtime: bool,
    key: Option<S<String>>,
}

fn on() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: S<String>,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: S<Ipv4Addr>,
    interface: S<String>,
    preferred: Option<S<String>>,
    persistence: Option<S<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: S<String>,
    vip: S<Ipv4Addr>,
    port: S<u16>,
    protocol: Protocol,
    health: Option<RawHealth>,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    kind: Option<HealthKind>,
    path: Option<String>,
    interval: Option<S<String>>,
    timeout: Option<S<String>>,
    rise: Option<S<u32>>,
    fall: Option<S<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: S<Ipv4Addr>,
    port: S<u16>,
    weight: Option<S<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp_established: Option<S<String>>,
    tcp_closing: Option<S<String>>,
    tcp_time_wait: Option<S<String>>,
    udp: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    new_connections_per_second: Option<u32>,
    max_connections: Option<S<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArp {
    garp_count: Option<S<u32>>,
    garp_interval: Option<S<String>>,
    garp_second_burst: Option<S<String>>,
}

/// Parses a duration with a unit: `500ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s or m)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{text}` has unit `{unit}`; use ms, s or m")),
    }
}

/// Turns byte offsets into errors with line numbers.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn at(
        &self,
        offset: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.line(offset),
            field: field.into(),
            message: message.into(),
        }
    }

    fn err<T>(
        &self,
        value: &S<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.at(value.span().start, field, message)
    }

    fn duration(
        &self,
        value: &Option<S<String>>,
        field: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).map_err(|m| self.err(v, field, m)),
        }
    }
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        field: "-".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and checks configuration text; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let loc = Locator { file: path, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let message = e.message().to_string();
        let field = key_at(text, offset)
            .or_else(|| field_of_message(&message))
            .unwrap_or_else(|| "-".into());
        loc.at(offset, field, message)
    })?;
    check(&loc, raw)
}

/// The field a serde message names, like "missing field `port`".
fn field_of_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

/// The key on the line holding `offset`, when that line is `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    Some(key.trim().to_string())
}

pub(crate) fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

/// The kernel's ephemeral port range, to warn when the NAT block overlaps it.
pub fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|p| p.parse().ok());
    Some((it.next()??, it.next()??))
}

fn check(loc: &Locator, raw: RawFile) -> Result<Config, ConfigError> {
    let node_span = raw.node.span();
    let node = raw.node.into_inner();
    let name = node.name.get_ref().trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(loc.err(
            &node.name,
            "node.name",
            "must be non-empty letters, digits, - or _",
        ));
    }
    let nat_ports = parse_port_range(node.nat_ports.get_ref()).ok_or_else(|| {
        loc.err(
            &node.nat_ports,
            "node.nat_ports",
            "must be `FIRST-LAST` with 1 <= FIRST <= LAST <= 65535",
        )
    })?;

    if raw.interface.is_empty() {
        return Err(loc.at(0, "interface", "at least one [[interface]] is required"));
    }
    if raw.interface.len() > MAX_IFACES as usize {
        return Err(loc.err(
            &raw.interface[MAX_IFACES as usize].name,
            "interface",
            format!("more than {MAX_IFACES} interfaces"),
        ));
    }
    let mut interfaces = Vec::new();
    let mut seen = HashSet::new();
    for (i, iface) in raw.interface.iter().enumerate() {
        let n = iface.name.get_ref();
        if !seen.insert(n.clone()) {
            return Err(loc.err(
                &iface.name,
                format!("interface[{i}].name"),
                format!("duplicate interface `{n}`"),
            ));
        }
        interfaces.push(Interface {
            name: n.clone(),
            role: iface.role,
        });
    }

    let cluster = match &raw.cluster {
        None => None,
        Some(c) => Some(cluster::check(
            loc,
            c,
            &cluster::Context {
                me: &name,
                nat_ports,
                interfaces: interfaces.len(),
            },
        )?),
    };
    let key = match &node.key {
        Some(k) if k.get_ref().trim().is_empty() => {
            return Err(loc.err(k, "node.key", "must be the path of a key file"))
        }
        Some(k) => Some(PathBuf::from(k.get_ref().trim())),
        None if cluster.is_some() => {
            return Err(loc.at(
                node_span.start,
                "node.key",
                "a cluster node needs its Ed25519 key: create one with \
                 `gateway key generate FILE`",
            ))
        }
        None => None,
    };

    if raw.vip.len() > MAX_VIPS as usize {
        return Err(loc.err(
            &raw.vip[MAX_VIPS as usize].address,
            "vip",
            format!("more than {MAX_VIPS} VIPs"),
        ));
    }
    let mut vips = Vec::new();
    let mut seen_vips = HashSet::new();
    for (i, vip) in raw.vip.iter().enumerate() {
        if !seen.contains(vip.interface.get_ref()) {
            return Err(loc.err(
                &vip.interface,
                format!("vip[{i}].interface"),
                format!(
                    "`{}` is not a configured [[interface]]",
                    vip.interface.get_ref()
                ),
            ));
        }
        if !seen_vips.insert(*vip.address.get_ref()) {
            return Err(loc.err(
                &vip.address,
                format!("vip[{i}].address"),
                format!("duplicate VIP {}", vip.address.get_ref()),
            ));
        }
        let (preferred, persistence) = cluster::vip_placement(
            loc,
            vip.preferred.as_ref(),
            vip.persistence.as_ref(),
            cluster.as_ref(),
            i,
        )?;
        vips.push(Vip {
            address: *vip.address.get_ref(),
            interface: vip.interface.get_ref().clone(),
            preferred,
            persistence,
        });
    }

    let services = check_services(loc, &raw.service, &seen_vips)?;

    let t = raw.timeouts.as_ref();
    let timeouts = Timeouts {
        tcp_established: loc.duration(
            &t.and_then(|t| t.tcp_established.clone()),
            "timeouts.tcp_established",
            Duration::from_secs(300),
        )?,
        tcp_closing: loc.duration(
            &t.and_then(|t| t.tcp_closing.clone()),
            "timeouts.tcp_closing",
            Duration::from_secs(10),
        )?,
        tcp_time_wait: loc.duration(
            &t.and_then(|t| t.tcp_time_wait.clone()),
            "timeouts.tcp_time_wait",
            Duration::from_secs(60),
        )?,
        udp: loc.duration(
            &t.and_then(|t| t.udp.clone()),
            "timeouts.udp",
            Duration::from_secs(30),
        )?,
    };

    let l = raw.limits.as_ref();
    let max_connections = match l.and_then(|l| l.max_connections.as_ref()) {
        None => gateway_common::CONN_TABLE_SIZE,
        Some(v) if (1024..=(1 << 26)).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return Err(loc.err(
                v,
                "limits.max_connections",
                "must be between 1024 and 67108864",
            ))
        }
    };
    let limits = Limits {
        new_connections_per_second: l
            .and_then(|l| l.new_connections_per_second)
            .unwrap_or(1_000_000),
        max_connections,
    };

    let a = raw.arp.as_ref();
    let garp_count = match a.and_then(|a| a.garp_count.as_ref()) {
        None => 3,
        Some(v) if *v.get_ref() <= 100 => *v.get_ref(),
        Some(v) => return Err(loc.err(v, "arp.garp_count", "must be at most 100")),
    };
    let arp = Arp {
        garp_count,
        garp_interval: loc.duration(
            &a.and_then(|a| a.garp_interval.clone()),
            "arp.garp_interval",
            Duration::from_millis(50),
        )?,
        garp_second_burst: loc.duration(
            &a.and_then(|a| a.garp_second_burst.clone()),
            "arp.garp_second_burst",
            Duration::from_secs(1),
        )?,
    };

    Ok(Config {
        path: loc.file.to_path_buf(),
        pin_dir: node
            .pin_dir
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/sys/fs/bpf/gateway/{name}"))),
        name,
        nat_ports,
        xdp_mode: node.xdp_mode,
        realtime: node.realtime,
        key,
        socket: raw
            .control
            .and_then(|c| c.socket)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        interfaces,
        vips,
        services,
        timeouts,
        limits,
        arp,
        cluster,
    })
}

fn check_services(
    loc: &Locator,
    raw: &[RawService],
    vips: &HashSet<Ipv4Addr>,
) -> Result<Vec<Service>, ConfigError> {
    if raw.len() > MAX_SERVICES as usize {
        return Err(loc.err(
            &raw[MAX_SERVICES as usize].name,
            "service",
            format!("more than {MAX_SERVICES} services"),
        ));
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut total_backends = 0usize;
    let mut services = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let f = |name: &str| format!("service[{i}].{name}");
        let name = s.name.get_ref().clone();
        if name.is_empty() || !names.insert(name.clone()) {
            return Err(loc.err(
                &s.name,
                f("name"),
                format!("service name `{name}` is empty or used twice"),
            ));
        }
        if !vips.contains(s.vip.get_ref()) {
            return Err(loc.err(
                &s.vip,
                f("vip"),
                format!("{} is not a configured [[vip]]", s.vip.get_ref()),
            ));
        }
        if *s.port.get_ref() == 0 {
            return Err(loc.err(&s.port, f("port"), "must be 1-65535"));
        }
        if !keys.insert((*s.vip.get_ref(), *s.port.get_ref(), s.protocol)) {
            return Err(loc.err(
                &s.port,
                f("port"),
                "another service has the same VIP, port and protocol",
            ));
        }
        let health = check_health(loc, s, i)?;
        let mut backends = Vec::new();
        let mut seen = HashSet::new();
        for (j, b) in s.backend.iter().enumerate() {
            let bf = |name: &str| format!("service[{i}].backend[{j}].{name}");
            if *b.port.get_ref() == 0 {
                return Err(loc.err(&b.port, bf("port"), "must be 1-65535"));
            }
            if !seen.insert((*b.address.get_ref(), *b.port.get_ref())) {
                return Err(loc.err(
                    &b.address,
                    bf("address"),
                    "backend listed twice in this service",
                ));
            }
            let weight = match &b.weight {
                None => 1,
                Some(w) if *w.get_ref() <= 100 => *w.get_ref(),
                Some(w) => return Err(loc.err(w, bf("weight"), "must be 0-100")),
            };
            backends.push(Backend {
                address: *b.address.get_ref(),
                port: *b.port.get_ref(),
                weight,
            });
        }
        if maglev::table_size(backends.len()) > MAGLEV_MAX {
            return Err(loc.err(
                &s.name,
                f("backend"),
                format!("too many backends: the Maglev table would exceed {MAGLEV_MAX} slots"),
            ));
        }
        total_backends += backends.len();
        if total_backends > MAX_BACKENDS as usize {
            return Err(loc.err(
                &s.name,
                f("backend"),
                format!("more than {MAX_BACKENDS} backends in all"),
            ));
        }
        services.push(Service {
            name,
            vip: *s.vip.get_ref(),
            port: *s.port.get_ref(),
            protocol: s.protocol,
            health,
            backends,
        });
    }
    Ok(services)
}

fn check_health(loc: &Locator, s: &RawService, i: usize) -> Result<Health, ConfigError> {
    let f = |name: &str| format!("service[{i}].health.{name}");
    let h = s.health.as_ref();
    let default_kind = match s.protocol {
        Protocol::Tcp => HealthKind::Tcp,
        Protocol::Udp => HealthKind::None,
    };
    let count = |v: Option<&S<u32>>, name: &str| match v {
        None => Ok(2),
        Some(v) if (1..=100).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(loc.err(v, f(name), "must be 1-100")),
    };
    let health = Health {
        kind: h.and_then(|h| h.kind).unwrap_or(default_kind),
        path: h.and_then(|h| h.path.clone()).unwrap_or_else(|| "/".into()),
        interval: loc.duration(
            &h.and_then(|h| h.interval.clone()),
            &f("interval"),
            Duration::from_secs(1),
        )?,
        timeout: loc.duration(
            &h.and_then(|h| h.timeout.clone()),
            &f("timeout"),
            Duration::from_millis(500),
        )?,
        rise: count(h.and_then(|h| h.rise.as_ref()), "rise")?,
        fall: count(h.and_then(|h| h.fall.as_ref()), "fall")?,
    };
    if health.interval.is_zero() || health.timeout.is_zero() {
        let at = h.and_then(|h| h.interval.as_ref().or(h.timeout.as_ref()));
        let offset = at.map_or(s.name.span().start, |v| v.span().start);
        return Err(loc.at(
            offset,
            f("interval"),
            "interval and timeout must be above zero",
        ));
    }
    if health.kind == HealthKind::Http && !health.path.starts_with('/') {
        return Err(loc.err(&s.name, f("path"), "must start with /"));
    }
    Ok(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/gateway.toml");

    pub(super) fn parse_text(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("test.toml"), text)
    }

    #[test]
    fn example_parses() {
        let c = parse_text(EXAMPLE).unwrap();
        assert_eq!(c.name, "gw1");
        assert_eq!(c.nat_ports, (20000, 29999));
        assert_eq!(c.services[0].backends.len(), 2);
        assert_eq!(c.services[0].health.kind, HealthKind::Http);
        assert_eq!(c.arp.garp_interval, Duration::from_millis(50));
        assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/gateway/gw1"));
        assert!(c.realtime, "real-time scheduling is on by default");
        let off = EXAMPLE.replacen("[node]\n", "[node]\nrealtime = false\n", 1);
        assert!(!parse_text(&off).unwrap().realtime);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("ms").is_err());
    }

    /// Replaces the first `from` in the example and expects an error on `line` naming `field`.
    fn expect_error(from: &str, to: &str, field: &str) {
        expect_error_in(EXAMPLE, from, to, field);
    }

    /// Replaces the first `from` in `base` and expects an error on its line naming `field`.
    pub(super) fn expect_error_in(base: &str, from: &str, to: &str, field: &str) {
        assert!(base.contains(from), "example lacks {from}");
        let text = base.replacen(from, to, 1);
        let line = base[..base.find(from).unwrap()].matches('\n').count() + 1;
        let e = parse_text(&text).unwrap_err();
        assert_eq!(e.file, PathBuf::from("test.toml"));
        assert_eq!(e.line, line, "{e}");
        assert_eq!(e.field, field, "{e}");
        assert!(e
            .to_string()
            .starts_with(&format!("test.toml:{line}: {field}: ")));
    }

    #[test]
    fn errors_name_line_and_field() {
        expect_error(
            "nat_ports = \"20000-29999\"",
            "nat_ports = \"30000-2\"",
            "node.nat_ports",
        );
        expect_error(
            "interface = \"ext0\"",
            "interface = \"eth9\"",
            "vip[0].interface",
        );
        expect_error(
            "vip = \"10.0.0.100\"",
            "vip = \"10.0.0.99\"",
            "service[0].vip",
        );
        expect_error(
            "weight = 1",
            "weight = 1000",
            "service[0].backend[0].weight",
        );
        expect_error(
            "interval = \"500ms\"",
            "interval = \"5 parsecs\"",
            "service[0].health.interval",
        );
        expect_error("udp = \"30s\"", "udp = \"30\"", "timeouts.udp");
        expect_error(
            "tcp_time_wait = \"60s\"",
            "tcp_time_wait = \"a minute\"",
            "timeouts.tcp_time_wait",
        );
        expect_error("rise = 2", "rise = 0", "service[0].health.rise");
        expect_error("name = \"int0\"", "name = \"ext0\"", "interface[1].name");
        expect_error(
            "address = \"10.1.0.1\"",
            "address = \"10.0.0.100\"",
            "vip[1].address",
        );
        expect_error("port = 8080", "port = 70000", "port");
        expect_error("role = \"internal\"", "role = \"sideways\"", "role");
        expect_error("garp_count = 3", "garp_cuont = 3", "garp_cuont");
    }

    #[test]
    fn duplicate_service_names_and_limits() {
        let second = EXAMPLE.replace("name = \"web\"", "name = \"dns\"");
        let start = second.find("[[service]]").unwrap();
        let end = second.find("[timeouts]").unwrap();
        let mut text = EXAMPLE.to_string();
        text.push_str(
            &second[start..end]
                .replace("port = 80\n", "port = 81\n")
                .replace("name = \"dns\"", "name = \"web\""),
        );
        let e = parse_text(&text).unwrap_err();
        assert_eq!(e.field, "service[1].name");

        let mut many = EXAMPLE.to_string();
        for i in 0..700 {
            many.push_str(&format!(
                "[[service.backend]]\naddress = \"10.1.{}.{}\"\nport = 80\n",
                i / 200,
                i % 200 + 1
            ));
        }
        let e = parse_text(&many).unwrap_err();
        assert_eq!(e.field, "service[0].backend");
        assert!(e.message.contains("Maglev"));
    }
}
