//! The configuration file: parsed with serde + toml, then checked as a whole, so a bad file is
//! rejected with its file, line and field before anything is changed.
#[cfg(test)]
mod bad_cases;
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
    ops::RangeInclusive,
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
    /// This node's Ed25519 key file (`[node] key`), required in a cluster; read and checked
    /// by [`load`], not by [`parse`].
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
    path: Option<S<String>>,
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

/// The longest duration a setting may have: a week. No setting needs more (conntrack keeps an
/// idle established connection 5 days), and it keeps every `Instant + duration` far from
/// overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Any duration a setting may take.
const ANY: RangeInclusive<Duration> = Duration::ZERO..=MAX_DURATION;

/// A duration above zero.
const POSITIVE: RangeInclusive<Duration> = Duration::from_millis(1)..=MAX_DURATION;

/// Idle timeouts of connection entries: the sweep runs once a second, so a shorter timeout
/// deletes a flow between two of its packets (0 deleted every flow at each sweep).
const TIMEOUT: RangeInclusive<Duration> = Duration::from_secs(1)..=MAX_DURATION;

/// Parses a duration with a unit: `500ms`, `2s`, `1m`; at most [`MAX_DURATION`], so a huge
/// number is an error rather than an overflow.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s or m)"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` does not start with a whole number"));
    }
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        _ => return Err(format!("`{text}` has unit `{unit}`; use ms, s or m")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis))
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("`{text}` is too long: at most {}", show(MAX_DURATION)))
}

/// A duration as the file writes it, in the largest unit that shows it whole.
fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".into(),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Why `address` cannot be one host's address, if it cannot; with `on_a_nic`, also when it
/// cannot be reached over a NIC (a VIP, a backend; nodes may run on loopback in a test).
fn not_unicast(address: Ipv4Addr, on_a_nic: bool) -> Option<&'static str> {
    if address.is_unspecified() {
        Some("is 0.0.0.0, which names no host")
    } else if on_a_nic && address.is_loopback() {
        Some("is a loopback address, which never leaves a host")
    } else if address.is_broadcast() {
        Some("is the broadcast address")
    } else if address.is_multicast() {
        Some("is a multicast address")
    } else {
        None
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

    /// A duration setting, which must lie in `range`; `None` when the file leaves it out.
    fn duration_in(
        &self,
        value: Option<&S<String>>,
        field: &str,
        range: RangeInclusive<Duration>,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = value else { return Ok(None) };
        let d = parse_duration(v.get_ref()).map_err(|m| self.err(v, field, m))?;
        if !range.contains(&d) {
            let bounds = match (*range.start(), *range.end()) {
                (Duration::ZERO, hi) => format!("at most {}", show(hi)),
                (lo, MAX_DURATION) => format!("at least {}", show(lo)),
                (lo, hi) => format!("between {} and {}", show(lo), show(hi)),
            };
            return Err(self.err(v, field, format!("must be {bounds}")));
        }
        Ok(Some(d))
    }

    /// A duration setting in `range`, `default` when left out.
    fn duration(
        &self,
        value: Option<&S<String>>,
        field: &str,
        range: RangeInclusive<Duration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self.duration_in(value, field, range)?.unwrap_or(default))
    }

    /// An address that must be one host's (a node, a witness).
    fn unicast(
        &self,
        value: &S<Ipv4Addr>,
        field: impl Into<String>,
    ) -> Result<Ipv4Addr, ConfigError> {
        self.address(value, field, false)
    }

    /// An address that must be one host's, reached over a NIC (a VIP, a backend).
    fn on_a_nic(
        &self,
        value: &S<Ipv4Addr>,
        field: impl Into<String>,
    ) -> Result<Ipv4Addr, ConfigError> {
        self.address(value, field, true)
    }

    fn address(
        &self,
        value: &S<Ipv4Addr>,
        field: impl Into<String>,
        on_a_nic: bool,
    ) -> Result<Ipv4Addr, ConfigError> {
        match not_unicast(*value.get_ref(), on_a_nic) {
            Some(why) => Err(self.err(value, field, format!("{} {why}", value.get_ref()))),
            None => Ok(*value.get_ref()),
        }
    }
}

/// Reads and checks a configuration file, and the files it names (the node key): every check
/// the daemon makes before it changes anything, and all `gateway check` runs.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        field: "-".into(),
        message: format!("cannot read: {e}"),
    })?;
    let loc = Locator {
        file: path,
        text: &text,
    };
    let (config, at) = parse_at(&loc)?;
    if let Some(keys_at) = at.cluster_keys {
        private(path).map_err(|m| loc.at(keys_at, "cluster.keys", m))?;
    }
    node_key::load_node_key(&config).map_err(|e| loc.at(at.key, "node.key", format!("{e:#}")))?;
    Ok(config)
}

/// Where [`load`]'s checks of the files point their errors: `[node] key` (or the node's name
/// when it has none) and `[cluster.keys]`.
struct FileChecksAt {
    key: usize,
    cluster_keys: Option<usize>,
}

/// Refuses a file that holds secrets when its group or others may read or write it: one key
/// read by a local user lets it speak for every node (issue 12, finding 2). The message says
/// how to fix it.
pub fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} holds secrets but its group or others have access (mode {:o}): `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// Parses and checks configuration text; `path` names it in errors. Reads no file, so a
/// document from another node can be checked as it is.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_at(&Locator { file: path, text }).map(|(config, _)| config)
}

/// Parses and checks `loc`'s text; also returns where [`load`]'s checks of files point.
fn parse_at(loc: &Locator) -> Result<(Config, FileChecksAt), ConfigError> {
    let text = loc.text;
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let message = e.message().to_string();
        let field = key_at(text, offset)
            .or_else(|| field_of_message(&message))
            .unwrap_or_else(|| "-".into());
        loc.at(offset, field, message)
    })?;
    let node = raw.node.get_ref();
    let at = FileChecksAt {
        key: node.key.as_ref().unwrap_or(&node.name).span().start,
        cluster_keys: raw.cluster.as_ref().map(|c| c.get_ref().keys_at()),
    };
    Ok((check(loc, raw)?, at))
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
        let field = format!("vip[{i}].address");
        let address = loc.on_a_nic(&vip.address, &field)?;
        if !seen_vips.insert(address) {
            return Err(loc.err(&vip.address, field, format!("duplicate VIP {address}")));
        }
        if let Some(node) = cluster.as_ref().and_then(|c| c.node_of(address)) {
            return Err(loc.err(
                &vip.address,
                field,
                format!(
                    "{address} is a primary address of node `{node}`: a VIP is an address of \
                     its own, moved between the nodes"
                ),
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
            address,
            interface: vip.interface.get_ref().clone(),
            preferred,
            persistence,
        });
    }

    let services = check_services(loc, &raw.service, &seen_vips)?;

    let t = raw.timeouts.as_ref();
    let timeout = |value: Option<&S<String>>, name: &str, default: u64| {
        loc.duration(
            value,
            &format!("timeouts.{name}"),
            TIMEOUT,
            Duration::from_secs(default),
        )
    };
    let timeouts = Timeouts {
        tcp_established: timeout(
            t.and_then(|t| t.tcp_established.as_ref()),
            "tcp_established",
            300,
        )?,
        tcp_closing: timeout(t.and_then(|t| t.tcp_closing.as_ref()), "tcp_closing", 10)?,
        tcp_time_wait: timeout(
            t.and_then(|t| t.tcp_time_wait.as_ref()),
            "tcp_time_wait",
            60,
        )?,
        udp: timeout(t.and_then(|t| t.udp.as_ref()), "udp", 30)?,
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
            a.and_then(|a| a.garp_interval.as_ref()),
            "arp.garp_interval",
            ANY,
            Duration::from_millis(50),
        )?,
        garp_second_burst: loc.duration(
            a.and_then(|a| a.garp_second_burst.as_ref()),
            "arp.garp_second_burst",
            ANY,
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
            let address = loc.on_a_nic(&b.address, bf("address"))?;
            if !seen.insert((address, *b.port.get_ref())) {
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
                address,
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
        path: match h.and_then(|h| h.path.as_ref()) {
            None => "/".into(),
            Some(p) => http_path(loc, p, &f("path"))?,
        },
        interval: loc.duration(
            h.and_then(|h| h.interval.as_ref()),
            &f("interval"),
            POSITIVE,
            Duration::from_secs(1),
        )?,
        timeout: loc.duration(
            h.and_then(|h| h.timeout.as_ref()),
            &f("timeout"),
            POSITIVE,
            Duration::from_millis(500),
        )?,
        rise: count(h.and_then(|h| h.rise.as_ref()), "rise")?,
        fall: count(h.and_then(|h| h.fall.as_ref()), "fall")?,
    };
    Ok(health)
}

/// The path of an HTTP check, which goes into the request line as it is: a space, CR or LF
/// in it would end the line early or add a header of the file's choosing.
fn http_path(loc: &Locator, path: &S<String>, field: &str) -> Result<String, ConfigError> {
    let text = path.get_ref();
    if !text.starts_with('/') {
        return Err(loc.err(path, field, "must start with /"));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(loc.err(
            path,
            field,
            "must hold no spaces or control characters (CR, LF, tab, ...): it is sent in \
             the request line; escape them as %20, %0D, ...",
        ));
    }
    Ok(text.clone())
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

    /// Every bad file of the shared table: its error names the file, the line and the field.
    #[test]
    fn errors_name_line_and_field() {
        for case in bad_cases::BAD {
            let e = parse_text(&case.text()).unwrap_err();
            let line = case.line();
            assert_eq!(
                (e.file.as_path(), e.line, e.field.as_str()),
                (Path::new("test.toml"), line, case.field),
                "{case:?}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("test.toml:{line}: {}: ", case.field)),
                "{e}"
            );
            assert!(e.message.contains(case.says), "{case:?}: {e}");
        }
    }

    #[test]
    fn durations_are_bounded_and_never_overflow() {
        assert_eq!(parse_duration("10080m"), Ok(MAX_DURATION));
        for text in [
            "10081m",
            "307445734561825861m",
            "18446744073709551615ms",
            "99999999999999999999999s",
        ] {
            assert!(
                parse_duration(text).unwrap_err().contains("too long"),
                "{text}"
            );
        }
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(MAX_DURATION), "10080m");
    }

    /// `load` reads the node key the file names and checks it against the node map, naming
    /// the `key` line; `parse` reads no file.
    #[test]
    fn load_checks_the_node_key_file() {
        use node_key::{tests::TempDir, NodeKey};
        use std::os::unix::fs::PermissionsExt;
        let example = include_str!("../../examples/cluster.toml");
        let dir = TempDir::new("load");
        let key_path = dir.0.join("gw1.key");
        let key = NodeKey::generate(&key_path).unwrap();
        let text = example
            .replacen("/etc/gateway/node.key", key_path.to_str().unwrap(), 1)
            .replacen(
                "RIiKafCp1xLUBXVlV2+KVBc50Yb1sc8kzQqWe4XOq1I=",
                &key.public().to_string(),
                1,
            );
        let file = dir.0.join("gw1.toml");
        std::fs::write(&file, &text).unwrap();
        // It holds the cluster's keys: refused while others may read it.
        let keys_line = text[..text.find("[cluster.keys]").unwrap()]
            .matches('\n')
            .count()
            + 1;
        let e = load(&file).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (keys_line, "cluster.keys"),
            "{e}"
        );
        assert!(e.message.contains("chmod 600"), "{e}");
        let private = |path: &Path| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap()
        };
        private(&file);
        assert_eq!(load(&file).unwrap().name, "gw1");
        // So is a node key others may read.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&file).unwrap_err();
        assert!(e.message.contains("mode 640"), "{e}");
        private(&key_path);

        let key_line = text[..text.find("key = ").unwrap()].matches('\n').count() + 1;
        std::fs::remove_file(&key_path).unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (key_line, "node.key"), "{e}");
        assert!(e.message.contains("cannot read the node key"), "{e}");
        assert!(parse(&file, &text).is_ok(), "parse reads no key file");

        NodeKey::generate(&key_path).unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (key_line, "node.key"), "{e}");
        assert!(e.message.contains("cluster.node[0].public_key"), "{e}");
    }

    #[test]
    fn too_many_backends() {
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
