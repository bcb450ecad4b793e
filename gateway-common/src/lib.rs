//! Map keys, map values and constants shared by the XDP programs (`gateway-ebpf`) and the
//! daemon (`gateway`). Everything here is `#[repr(C)]` with explicit padding so both sides agree
//! byte for byte; there is no logic.
//!
//! Byte order: addresses and ports inside keys and values are stored as they appear on the wire
//! (network byte order), so the data path never swaps bytes; fields documented as "host order"
//! are the exception. Times are `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`).
#![no_std]

/// Largest number of services (VIP:port/proto) one node serves.
pub const MAX_SERVICES: u32 = 32;
/// Largest number of backends over all services.
pub const MAX_BACKENDS: u32 = 1024;
/// Slots reserved for one half of one service's Maglev table. The daemon picks a prime table
/// size > 100 x backends, at most this (so a service has at most 655 backends).
pub const MAGLEV_MAX: u32 = 65537;
/// Entries of the flat Maglev array: every service has two halves (active and staging), so a
/// new table is written beside the live one and switched in with one `SERVICES` update.
pub const MAGLEV_ENTRIES: u32 = MAX_SERVICES * 2 * MAGLEV_MAX;
/// Default capacity of the connection tables (`CONNS` and `REPLIES`); the daemon may resize.
pub const CONN_TABLE_SIZE: u32 = 262_144;
/// Largest number of cluster interfaces.
pub const MAX_IFACES: u32 = 16;
/// Largest number of VIPs.
pub const MAX_VIPS: u32 = 256;
/// Largest number of cluster nodes.
pub const MAX_NODES: u32 = 64;
/// Entries of `PEERS`: every node's primary address on every cluster NIC.
pub const MAX_PEER_ADDRS: u32 = MAX_NODES * MAX_IFACES;
/// How long a next hop cached in a connection entry stays valid before `bpf_fib_lookup` is
/// asked again, so neighbour changes are picked up without a lookup per packet.
pub const NEXT_HOP_TTL_NS: u64 = 1_000_000_000;
/// How many NAT ports the data path tries for one new connection before giving up.
pub const NAT_PORT_PROBES: u32 = 8;

/// Map names, as the daemon and the tests look them up and pin them.
pub mod maps {
    /// `HashMap<u32 ifindex, Iface>`: the cluster NICs this program runs on.
    pub const IFACES: &str = "IFACES";
    /// `HashMap<u32 VIP address, Vip>`: every VIP of the cluster, with this node's ownership.
    pub const VIPS: &str = "VIPS";
    /// `HashMap<ServiceKey, Service>`: services by VIP:port/proto.
    pub const SERVICES: &str = "SERVICES";
    /// `Array<u32 backend index>`, `MAGLEV_ENTRIES` long: the Maglev lookup tables.
    pub const MAGLEV: &str = "MAGLEV";
    /// `Array<Backend>`, `MAX_BACKENDS` long.
    pub const BACKENDS: &str = "BACKENDS";
    /// `LruHashMap<FlowKey client->VIP, Conn>`: connections by their client-side 5-tuple.
    pub const CONNS: &str = "CONNS";
    /// `LruHashMap<FlowKey backend->client NAT port, Reply>`: the same connections by the
    /// 5-tuple of the back-end's replies.
    pub const REPLIES: &str = "REPLIES";
    /// `Array<Settings>`, one entry.
    pub const SETTINGS: &str = "SETTINGS";
    /// `PerCpuArray<RateWindow>`, one entry: the new-connection rate limiter.
    pub const RATE: &str = "RATE";
    /// `PerCpuArray<Counter>` indexed by XDP action code (`Action`).
    pub const ACTIONS: &str = "ACTIONS";
    /// `PerCpuArray<Counter>` indexed by `Path`.
    pub const PATHS: &str = "PATHS";
    /// `PerCpuArray<Counter>` indexed by `Reason`.
    pub const REASONS: &str = "REASONS";
    /// `PerCpuArray<Counter>` indexed by service id.
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    /// `PerCpuArray<Counter>` indexed by backend index.
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    /// `Array<u64>`, one entry: the daemon's lease, `CLOCK_MONOTONIC` ns until which the data
    /// path may answer ARP for owned VIPs and open connections on them (the dead-man switch:
    /// a crashed or hung daemon loses its VIPs to the cluster, while established connections
    /// keep flowing). 0 means expired.
    pub const LEASE: &str = "LEASE";
    /// `LruHashMap<u32 VIP address, ArpClaim>`: another station answered or announced a VIP this
    /// node owns (split brain); the daemon reads and clears it.
    pub const ARP_CLAIMS: &str = "ARP_CLAIMS";
    /// `HashMap<u32 address, u32 node index>`: the primary addresses of the configured cluster
    /// nodes; cluster-protocol datagrams from any other address are dropped.
    pub const PEERS: &str = "PEERS";
    /// `Array<u32>` indexed by port: 1 + the index of the node that serves the port's NAT
    /// block (its own node, or the one that took it over), 0 for this node's own ports and
    /// ports of no block (distributed NAT); `nat_home::LEFTOVERS` may be set on top.
    pub const NAT_HOMES: &str = "NAT_HOMES";
    /// `HashMap<HomeKey, HomeHop>`: where a reply for another node's NAT port goes, per node
    /// and ingress NIC (that node's primary address on the same subnet).
    pub const HOME_HOPS: &str = "HOME_HOPS";
    /// Every map the daemon pins, so a restarted daemon finds them again.
    pub const ALL: [&str; 19] = [
        IFACES,
        VIPS,
        SERVICES,
        MAGLEV,
        BACKENDS,
        CONNS,
        REPLIES,
        SETTINGS,
        RATE,
        ACTIONS,
        PATHS,
        REASONS,
        SERVICE_STATS,
        BACKEND_STATS,
        LEASE,
        ARP_CLAIMS,
        PEERS,
        NAT_HOMES,
        HOME_HOPS,
    ];
}

/// Program names in the object file.
pub mod programs {
    /// The gateway's data path, attached to every cluster NIC.
    pub const GATEWAY: &str = "gateway";
    /// A trivial `XDP_PASS` program: the benchmark baseline, and what the testbed attaches to
    /// the far end of veths so native-mode `XDP_TX`/`XDP_REDIRECT` frames are received.
    pub const PASS: &str = "xdp_pass";
}

/// The role of a cluster NIC.
pub mod role {
    /// Faces clients and the upstream router.
    pub const EXTERNAL: u8 = 1;
    /// Faces the back-end servers.
    pub const INTERNAL: u8 = 2;
}

/// A cluster NIC, keyed by ifindex in `IFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    /// The NIC's MAC address, the source of ARP replies sent from it.
    pub mac: [u8; 6],
    /// `role::EXTERNAL` or `role::INTERNAL`.
    pub role: u8,
    /// `iface_flags` bits.
    pub flags: u8,
    /// The NIC's primary IPv4 address (network order).
    pub addr: u32,
}

/// Bits of `Iface::flags`.
pub mod iface_flags {
    /// This node owns a VIP on the NIC's subnet: it also acts on frames there addressed to
    /// another station, as a switch floods them when a dead owner's port went down (the
    /// other nodes leave them alone, so nothing is served twice).
    pub const OWNS_VIP: u8 = 1;
}

/// Bits of `Vip::flags`.
pub mod vip_flags {
    /// This node owns the VIP: it answers ARP for it and serves it.
    pub const OWNED: u32 = 1;
    /// `Vip::previous` is a live member: a datagram of a flow the owner does not know is first
    /// offered to it (it may be one of its UDP flows), and comes back when it is new.
    pub const PREVIOUS_LIVE: u32 = 2;
}

/// A VIP, keyed by its address (network order) in `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vip {
    /// `vip_flags` bits.
    pub flags: u32,
    /// ifindex of the NIC whose subnet the VIP belongs to (ARP is answered only there).
    pub ifindex: u32,
    /// 1 + the node index of the VIP's owner in this node's VIP table; 0 when unplaced. A
    /// node that no longer owns the VIP sends a datagram the owner offered it, and that opens
    /// no flow here, back to the owner.
    pub owner: u32,
    /// 1 + the node index of the VIP's previous holder, 0 for none: the connections it opened
    /// before the VIP moved are still its own (connection hand-off), so the owner sends it the
    /// packets it has no connection entry for instead of dropping them.
    pub previous: u32,
    /// First and last port (host order; both 0 for none) of the NAT block of a dead node
    /// whose connections on this VIP this node took over: a TCP packet of no connection here
    /// that opens none is taken for one the dead node opened after its last copy, and the
    /// connection is rebuilt as that node opened it (the same Maglev pick and NAT port probe).
    pub rebuild_min: u16,
    pub rebuild_max: u16,
    pub _pad: u32,
    /// When this node last took the VIP (`CLOCK_MONOTONIC_COARSE` ns, as XDP reads the clock;
    /// 0 while it does not own it). An own entry of a finished TCP connection last used
    /// before then may be stale: while the VIP was elsewhere, the client may have reused its
    /// ports for a connection another node opened. Its first packet is offered to the
    /// previous holder, which sends back what is no connection of its own.
    pub owned_since_ns: u64,
}

/// IP protocol numbers used in keys.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// Key of `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// VIP (network order).
    pub vip: u32,
    /// Service port (network order).
    pub port: u16,
    /// `proto::TCP` or `proto::UDP`.
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index of the service, below `MAX_SERVICES`: its Maglev tables and its counters.
    pub id: u32,
    /// Size of the active Maglev table (a prime); 0 means no healthy backend.
    pub table_size: u32,
    /// Which half (0 or 1) of the service's Maglev slots is active.
    pub half: u32,
    pub _pad: u32,
}

/// A backend, at its index in `BACKENDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Address (network order).
    pub addr: u32,
    /// Port (network order).
    pub port: u16,
    pub _pad: u16,
}

/// A 5-tuple: key of `CONNS` and `REPLIES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// The next hop of one direction of a connection, cached from `bpf_fib_lookup`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Output ifindex; 0 means not resolved yet.
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// When it was looked up; stale after `NEXT_HOP_TTL_NS`.
    pub stamp_ns: u64,
}

/// TCP progress of one direction, in `Conn::state` and `Reply::state`.
pub mod tcp_state {
    /// Opened (SYN seen) or UDP.
    pub const OPEN: u8 = 0;
    /// A FIN was seen in this direction.
    pub const FIN: u8 = 1;
    /// A RST was seen in this direction.
    pub const RST: u8 = 2;
}

/// Value of `CONNS`: a connection seen from the client side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// Backend address (network order).
    pub backend_addr: u32,
    /// Backend port (network order).
    pub backend_port: u16,
    /// The client's source port is translated to this NAT port (network order).
    pub nat_port: u16,
    /// Index of the backend in `BACKENDS` (for counters).
    pub backend_id: u32,
    /// Service id (for counters).
    pub service_id: u32,
    /// `tcp_state` of the client-to-backend direction.
    pub state: u8,
    pub _pad: [u8; 3],
    /// 1 + the index of the node that translates this connection, 0 for this node: a
    /// forwarding entry (connection hand-off), whose packets go to that node untranslated.
    /// One that replaced a stale own entry (`Vip::owned_since_ns`) keeps its translation
    /// (`nat_port` != 0) and its reply entry: the entry is this node's again when that node
    /// sends a packet back.
    pub home: u32,
    /// When the connection was opened.
    pub created_ns: u64,
    /// Last packet from the client.
    pub last_seen_ns: u64,
    /// Where client packets go after translation.
    pub next_hop: NextHop,
}

/// Value of `REPLIES`: how to translate a back-end's reply back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// The VIP the client connected to (network order): the reply's new source address.
    pub vip: u32,
    /// The service port (network order): the reply's new source port.
    pub vip_port: u16,
    /// The client's own port (network order): the reply's new destination port.
    pub client_port: u16,
    /// Service id (for counters).
    pub service_id: u32,
    /// `tcp_state` of the backend-to-client direction.
    pub state: u8,
    pub _pad: [u8; 3],
    /// Last packet from the backend.
    pub last_seen_ns: u64,
    /// Where replies go after translation.
    pub next_hop: NextHop,
}

/// Value of `SETTINGS[0]`: knobs the daemon sets for the data path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// First port of this node's NAT port block (host order).
    pub nat_port_min: u16,
    /// Last port of this node's NAT port block, inclusive (host order).
    pub nat_port_max: u16,
    /// New connections each CPU may open per second; 0 means no limit.
    pub new_conns_per_cpu: u32,
    /// UDP port of the cluster protocol (host order); 0 when the node runs alone, so no
    /// datagram is filtered.
    pub cluster_port: u16,
    /// 1 + this node's index in the node map (as in `NAT_HOMES`); 0 alone.
    pub node: u16,
    /// 1 + the index of the node that served this node's NAT block while it was away and
    /// still serves the connections it took over: replies this node does not know go there.
    /// 0 for none.
    pub block_previous: u16,
    pub _pad: [u8; 2],
}

/// Values of `NAT_HOMES`.
pub mod nat_home {
    /// Set on the ports of a block whose connections this node took over while the block's
    /// node was away: their replies are looked up here before going to the block's node.
    pub const LEFTOVERS: u32 = 1 << 31;
}

/// Number of entries of `NAT_HOMES`: one per port.
pub const PORTS: u32 = 65_536;

/// Key of `HOME_HOPS`: a node of the cluster, seen from one of this node's NICs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HomeKey {
    /// 1 + the node's index in the cluster's node map (as in `NAT_HOMES`).
    pub node: u32,
    /// The NIC the reply arrived on.
    pub ifindex: u32,
}

/// Value of `HOME_HOPS`: the node's primary address on that NIC's subnet and the cached MAC
/// rewrite towards it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HomeHop {
    /// The node's primary address on the subnet (network order).
    pub addr: u32,
    pub _pad: u32,
    /// The next hop to it, from `bpf_fib_lookup`.
    pub next_hop: NextHop,
}

/// Value of `ARP_CLAIMS`: the latest ARP packet in which another station claimed a VIP this
/// node owns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArpClaim {
    /// The other station's MAC address (the ARP sender hardware address).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The NIC it was seen on.
    pub ifindex: u32,
    /// Claims seen since the daemon last cleared the entry.
    pub count: u32,
    /// When the latest was seen.
    pub last_ns: u64,
}

/// Value of `RATE[0]` (per CPU): new connections counted in the current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    pub window_start_ns: u64,
    pub count: u32,
    pub _pad: u32,
}

/// A packet and byte counter (per CPU in the maps; the daemon sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Defines a counter index enum with its names, so the daemon prints what XDP counts.
macro_rules! counter_index {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr => $text:expr,)+ }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Number of map entries the counter map needs.
            pub const COUNT: u32 = $name::ALL.len() as u32;

            /// Stable snake_case name, used in CLI output and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

counter_index! {
    /// What the program did with a packet, indexed by the XDP return code.
    Action {
        Aborted = 0 => "aborted",
        Drop = 1 => "drop",
        Pass = 2 => "pass",
        Tx = 3 => "tx",
        Redirect = 4 => "redirect",
    }
}

counter_index! {
    /// Which way through the data path a packet took.
    Path {
        /// Opened a connection: new entry, translated, sent to a backend.
        NewConn = 0 => "new_conn",
        /// Matched a connection entry: translated, sent to its backend.
        Established = 1 => "established",
        /// A back-end's reply, translated back and sent to the client.
        Reply = 2 => "reply",
        /// Not for the gateway's data path: handed to the kernel untouched.
        PassThrough = 3 => "pass_through",
        /// An ARP request for an owned VIP, answered with XDP_TX.
        ArpReply = 4 => "arp_reply",
        /// Translated, but the next hop's MAC is unknown: handed to the kernel to resolve it.
        KernelForward = 5 => "kernel_forward",
        /// A back-end's reply for another node's NAT port, sent on to that node (its home)
        /// untranslated, by MAC rewrite.
        ToHome = 6 => "to_home",
        /// A client packet sent on untranslated to the node that translates its connection
        /// (a forwarding entry), or of no connection here (or of a stale own one, see
        /// `Vip::owned_since_ns`) to the VIP's previous holder, whose connection it may be
        /// (connection hand-off).
        ToPrevious = 7 => "to_previous",
        /// A client packet for a VIP another node owns, of no connection here, sent on to
        /// the owner: the sender's ARP entry is stale, or the owner offered a datagram that
        /// opens no flow here.
        ToOwner = 8 => "to_owner",
        /// A TCP packet of no connection here, on a VIP whose dead previous holder's block
        /// this node took over: the connection it opened after its last copy, rebuilt with
        /// its back-end and NAT port, translated.
        Rebuilt = 9 => "rebuilt",
        /// A client packet of a connection this node translated before it last took the VIP,
        /// offered to the previous holder and sent back by it (no connection of its own):
        /// translated here as before.
        Reclaimed = 10 => "reclaimed",
    }
}

counter_index! {
    /// Why a packet left the fast path: dropped, or passed untouched to the kernel.
    Reason {
        /// Shorter than an Ethernet header (passed).
        TruncatedEth = 0 => "truncated_eth",
        /// Shorter than its IPv4 header (passed).
        TruncatedIp = 1 => "truncated_ip",
        /// IHL below 5 or total length inconsistent (passed).
        BadIhl = 2 => "bad_ihl",
        /// IPv4 options on a packet to a VIP (dropped).
        IpOptions = 3 => "ip_options",
        /// A fragment to a VIP (dropped).
        Fragment = 4 => "fragment",
        /// TCP/UDP header cut short on a packet to a VIP (dropped).
        TruncatedL4 = 5 => "truncated_l4",
        /// ARP request for a VIP another node owns (dropped).
        ArpForeignVip = 6 => "arp_foreign_vip",
        /// To a VIP, but no service on that port/protocol (dropped).
        NoService = 7 => "no_service",
        /// The service has no healthy backend (dropped).
        NoBackend = 8 => "no_backend",
        /// Over the new-connection rate limit (dropped).
        RateLimited = 9 => "rate_limited",
        /// No connection entry and not an opening packet (dropped).
        NotOpening = 10 => "not_opening",
        /// No free NAT port for a new connection (dropped).
        NatExhausted = 11 => "nat_exhausted",
        /// `bpf_fib_lookup` found no route (dropped).
        NoRoute = 12 => "no_route",
        /// To a VIP with a protocol other than TCP/UDP (dropped).
        UnsupportedProto = 13 => "unsupported_proto",
        /// The VIP is not owned by this node, and the packet cannot go to its owner (dropped).
        NotOwner = 14 => "not_owner",
        /// An ARP frame shorter than an IPv4-over-Ethernet ARP packet (passed).
        TruncatedArp = 15 => "truncated_arp",
        /// ARP for an owned VIP, or a new connection to one, after the daemon's lease ran out
        /// (dropped: the dead-man switch).
        LeaseExpired = 16 => "lease_expired",
        /// Another station's ARP claims a VIP this node owns (recorded in `ARP_CLAIMS`, dropped).
        ArpClaimed = 17 => "arp_claimed",
        /// A cluster-protocol datagram from an address that is no configured node (dropped).
        NotPeer = 18 => "not_peer",
        /// A reply for another node's NAT port whose home has no resolved MAC yet (dropped:
        /// the kernel would route it on untranslated).
        HomeUnresolved = 19 => "home_unresolved",
        /// A packet handed between nodes (connection hand-off) whose TTL ran out: the nodes'
        /// views of a VIP disagreed long enough to loop it (dropped).
        HopLimit = 20 => "hop_limit",
        /// A frame addressed to another station's MAC, as a switch floods unicast for a port
        /// it lost, for a VIP (or subnet) this node owns nothing of (passed: the kernel drops
        /// it; the owner acts on it).
        OtherHost = 21 => "other_host",
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are `#[repr(C)]` plain data with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for Iface {}
    unsafe impl aya::Pod for Vip {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Conn {}
    unsafe impl aya::Pod for Reply {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for HomeKey {}
    unsafe impl aya::Pod for HomeHop {}
    unsafe impl aya::Pod for ArpClaim {}
    unsafe impl aya::Pod for RateWindow {}
    unsafe impl aya::Pod for Counter {}
}
