//! Katran-style fixtures for the XDP data path: a table of rows (input packet, expected output
//! packet, action, counter deltas) run in order through `BPF_PROG_TEST_RUN` against the real
//! program, in a private namespace whose routes and static neighbours make `bpf_fib_lookup`
//! deterministic. Rows are stateful: later rows use the connections earlier rows opened.
//!
//! Needs root. Run with `cargo test -p gateway --test xdp_fixtures`.
mod support;

use anyhow::{ensure, Context, Result};
use aya::maps::{Array, HashMap};
use etherparse::{Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use gateway_common::{
    maps, nat_home, programs, proto, tcp_state, vip_flags, Action, ArpClaim, Conn, FlowKey, Path,
    Reason, Reply, Settings,
};
use support::{
    packets::{self, arp, tcp, tcp_with, udp, udp_with, Flags, Flow, ACK, FIN, RST, SYN},
    testbed::*,
};

/// What a row expects to come out.
enum Expect {
    /// The input, byte for byte.
    Unchanged,
    /// Nothing (dropped).
    Dropped,
    /// This packet, built once the row has run (NAT ports are chosen by the data path).
    Packet(Build),
}

/// Builds a packet from the state left by earlier rows.
type Build = Box<dyn Fn(&Testbed) -> Result<Vec<u8>>>;
type Hook = Box<dyn Fn(&mut Testbed) -> Result<()>>;

/// One fixture.
struct Row {
    name: String,
    nic: Nic,
    /// Built when the row runs: a backend's reply depends on the NAT port earlier rows chose.
    input: Build,
    expect: Expect,
    action: Action,
    path: Option<Path>,
    reason: Option<Reason>,
    /// Service and backend counters this packet bumps.
    service: Option<u32>,
    backend: Option<u32>,
    /// Runs before the packet (e.g. settings) and after it (e.g. map contents).
    before: Option<Hook>,
    after: Option<Hook>,
}

impl Row {
    fn new(name: impl Into<String>, nic: Nic, input: Vec<u8>, action: Action) -> Self {
        Self {
            name: name.into(),
            nic,
            input: Box::new(move |_| Ok(input.clone())),
            expect: if action == Action::Drop {
                Expect::Dropped
            } else {
                Expect::Unchanged
            },
            action,
            path: None,
            reason: None,
            service: None,
            backend: None,
            before: None,
            after: None,
        }
    }
    fn path(mut self, path: Path) -> Self {
        self.path = Some(path);
        self
    }
    fn reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }
    fn counts(mut self, service: u32, backend: Option<u32>) -> Self {
        self.service = Some(service);
        self.backend = backend;
        self
    }
    fn input(mut self, f: impl Fn(&Testbed) -> Result<Vec<u8>> + 'static) -> Self {
        self.input = Box::new(f);
        self
    }
    fn expect(mut self, f: impl Fn(&Testbed) -> Result<Vec<u8>> + 'static) -> Self {
        self.expect = Expect::Packet(Box::new(f));
        self
    }
    fn before(mut self, f: impl Fn(&mut Testbed) -> Result<()> + 'static) -> Self {
        self.before = Some(Box::new(f));
        self
    }
    fn after(mut self, f: impl Fn(&mut Testbed) -> Result<()> + 'static) -> Self {
        self.after = Some(Box::new(f));
        self
    }
}

const CLIENT_PORT: u16 = 40000;
const COUNTER_MAPS: [&str; 5] = [
    maps::ACTIONS,
    maps::PATHS,
    maps::REASONS,
    maps::SERVICE_STATS,
    maps::BACKEND_STATS,
];

fn be(addr: [u8; 4]) -> u32 {
    u32::from_ne_bytes(addr)
}

/// A client's packet to `VIP:port` from `CLIENT:sport`, as it arrives on the external NIC.
fn to_vip(sport: u16, port: u16) -> Flow {
    Flow {
        src_mac: CLIENT_MAC,
        dst_mac: EXT_MAC,
        src: CLIENT,
        dst: VIP,
        sport,
        dport: port,
    }
}

fn client_key(flow: &Flow, l4: u8) -> FlowKey {
    FlowKey {
        src_addr: be(flow.src),
        dst_addr: be(flow.dst),
        src_port: flow.sport.to_be(),
        dst_port: flow.dport.to_be(),
        proto: l4,
        _pad: [0; 3],
    }
}

fn conn(bed: &Testbed, flow: &Flow, l4: u8) -> Result<Conn> {
    let map: HashMap<_, FlowKey, Conn> = HashMap::try_from(bed.ebpf.map(maps::CONNS).unwrap())?;
    map.get(&client_key(flow, l4), 0)
        .with_context(|| format!("no CONNS entry for {flow:?}"))
}

fn reply_key(flow: &Flow, l4: u8, backend: [u8; 4], nat_port: u16) -> FlowKey {
    FlowKey {
        src_addr: be(backend),
        dst_addr: be(flow.src),
        src_port: BACKEND_PORT.to_be(),
        dst_port: nat_port.to_be(),
        proto: l4,
        _pad: [0; 3],
    }
}

fn reply(bed: &Testbed, flow: &Flow, l4: u8, backend: [u8; 4]) -> Result<Reply> {
    let nat = nat_port(bed, flow, l4)?;
    let map: HashMap<_, FlowKey, Reply> = HashMap::try_from(bed.ebpf.map(maps::REPLIES).unwrap())?;
    map.get(&reply_key(flow, l4, backend, nat), 0)
        .context("no REPLIES entry")
}

fn nat_port(bed: &Testbed, flow: &Flow, l4: u8) -> Result<u16> {
    Ok(u16::from_be(conn(bed, flow, l4)?.nat_port))
}

/// `flow` after translation to `backend`, leaving by `macs` (None: MACs untouched).
fn translated(
    bed: &Testbed,
    flow: &Flow,
    l4: u8,
    backend: usize,
    macs: Option<([u8; 6], [u8; 6])>,
) -> Result<Flow> {
    let nat = nat_port(bed, flow, l4)?;
    let (src_mac, dst_mac) = macs.unwrap_or((flow.src_mac, flow.dst_mac));
    Ok(Flow {
        src_mac,
        dst_mac,
        src: flow.src,
        dst: BACKENDS[backend],
        sport: nat,
        dport: BACKEND_PORT,
    })
}

/// The back-end's reply to `flow` (a client flow translated to `backend`), arriving on the
/// internal NIC.
fn from_backend(bed: &Testbed, flow: &Flow, l4: u8, backend: usize) -> Result<Flow> {
    let nat = nat_port(bed, flow, l4)?;
    Ok(Flow {
        src_mac: BACKEND_MACS[backend],
        dst_mac: INT_MAC,
        src: BACKENDS[backend],
        dst: flow.src,
        sport: BACKEND_PORT,
        dport: nat,
    })
}

/// The reply as the client must see it.
fn to_client(flow: &Flow, client_mac: [u8; 6]) -> Flow {
    Flow {
        src_mac: EXT_MAC,
        dst_mac: client_mac,
        src: VIP,
        dst: flow.src,
        sport: flow.dport,
        dport: flow.sport,
    }
}

fn state_after(flow: Flow, l4: u8, conn_state: u8) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        let c = conn(bed, &flow, l4)?;
        ensure!(
            c.state == conn_state,
            "CONNS state {} != {conn_state}",
            c.state
        );
        Ok(())
    }
}

fn reply_state_after(
    flow: Flow,
    l4: u8,
    backend: usize,
    state: u8,
) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        let r = reply(bed, &flow, l4, BACKENDS[backend])?;
        ensure!(r.state == state, "REPLIES state {} != {state}", r.state);
        Ok(())
    }
}

/// Both directions of the TCP test connection are open again after a reopening SYN.
fn reopened(flow: Flow) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        state_after(flow, proto::TCP, tcp_state::OPEN)(bed)?;
        reply_state_after(flow, proto::TCP, 0, tcp_state::OPEN)(bed)
    }
}

/// Checks a new connection's two entries against each other and the settings.
fn check_entries(
    flow: Flow,
    l4: u8,
    backend: usize,
    nat_range: (u16, u16),
) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        let c = conn(bed, &flow, l4)?;
        ensure!(
            c.backend_addr == be(BACKENDS[backend]) && c.backend_port == BACKEND_PORT.to_be(),
            "backend {c:?}"
        );
        ensure!(
            c.backend_id == backend as u32 && c.state == tcp_state::OPEN,
            "conn {c:?}"
        );
        let nat = u16::from_be(c.nat_port);
        ensure!(
            (nat_range.0..=nat_range.1).contains(&nat),
            "NAT port {nat} outside {nat_range:?}"
        );
        ensure!(
            c.created_ns != 0 && c.last_seen_ns >= c.created_ns,
            "times {c:?}"
        );
        let r = reply(bed, &flow, l4, BACKENDS[backend])?;
        ensure!(
            r.vip == be(VIP)
                && r.vip_port == flow.dport.to_be()
                && r.client_port == flow.sport.to_be(),
            "reply {r:?}"
        );
        ensure!(r.service_id == c.service_id, "service ids differ");
        Ok(())
    }
}

/// The expected output of `flow`'s TCP packet with `flags` once translated to backend
/// `backend` (one with a static neighbour) and sent out of the internal NIC.
fn tcp_out(flow: Flow, backend: usize, flags: Flags) -> impl Fn(&Testbed) -> Result<Vec<u8>> {
    move |bed| {
        let macs = Some((INT_MAC, BACKEND_MACS[backend]));
        Ok(tcp(
            &translated(bed, &flow, proto::TCP, backend, macs)?,
            flags,
        ))
    }
}

/// A TCP packet of `flow` with `flags` to the service on `PORT_TCP`, translated to `backend`
/// along `path`.
fn tcp_fwd(name: &str, flow: Flow, flags: Flags, path: Path, backend: usize) -> Row {
    Row::new(name, Nic::External, tcp(&flow, flags), Action::Redirect)
        .path(path)
        .counts(0, Some(backend as u32))
        .expect(tcp_out(flow, backend, flags))
}

/// Rows for a connection's lifetime (TCP): open, use, reply, close, reopen, reset.
fn tcp_rows(rows: &mut Vec<Row>) {
    let flow = to_vip(CLIENT_PORT, PORT_TCP);
    let fwd = |name: &str, flags: Flags, path: Path| tcp_fwd(name, flow, flags, path, 0);
    rows.push(
        fwd("tcp syn opens a connection", SYN, Path::NewConn).after(check_entries(
            flow,
            proto::TCP,
            0,
            (NAT_MIN, NAT_MAX),
        )),
    );
    rows.push(fwd("tcp ack uses the connection", ACK, Path::Established));
    rows.push(fwd(
        "tcp syn retransmit on an open entry",
        SYN,
        Path::Established,
    ));
    rows.push(reply_row(
        "tcp reply from the backend",
        flow,
        proto::TCP,
        0,
        ACK,
        CLIENT_MAC,
    ));
    rows.push(
        fwd("tcp fin from the client", FIN, Path::Established).after(state_after(
            flow,
            proto::TCP,
            tcp_state::FIN,
        )),
    );
    rows.push(
        reply_row(
            "tcp fin from the backend",
            flow,
            proto::TCP,
            0,
            FIN,
            CLIENT_MAC,
        )
        .after(reply_state_after(flow, proto::TCP, 0, tcp_state::FIN)),
    );
    rows.push(fwd("tcp syn reopens a finished entry", SYN, Path::NewConn).after(reopened(flow)));
    rows.push(
        fwd("tcp rst from the client", RST, Path::Established).after(state_after(
            flow,
            proto::TCP,
            tcp_state::RST,
        )),
    );
    rows.push(fwd("tcp syn reopens a reset entry", SYN, Path::NewConn).after(reopened(flow)));
    rows.push(
        reply_row(
            "tcp rst from the backend",
            flow,
            proto::TCP,
            0,
            RST,
            CLIENT_MAC,
        )
        .after(reply_state_after(flow, proto::TCP, 0, tcp_state::RST)),
    );
}

/// A backend's reply to `flow` and the packet the client must get.
fn reply_row(
    name: &str,
    flow: Flow,
    l4: u8,
    backend: usize,
    flags: Flags,
    client_mac: [u8; 6],
) -> Row {
    let build = move |bed: &Testbed, back: bool| -> Result<Vec<u8>> {
        let f = if back {
            from_backend(bed, &flow, l4, backend)?
        } else {
            to_client(&flow, client_mac)
        };
        Ok(match l4 {
            proto::TCP => tcp(&f, flags),
            // UDP rows use `syn` to mean "with a checksum".
            _ => udp(&f, flags.syn),
        })
    };
    let mut row = Row::new(name, Nic::Internal, Vec::new(), Action::Redirect)
        .path(Path::Reply)
        .input(move |bed| build(bed, true))
        .expect(move |bed| build(bed, false));
    row.service = Some(backend as u32);
    row
}

/// UDP both ways, with a checksum and with checksum 0 (which must stay 0).
fn udp_rows(rows: &mut Vec<Row>) {
    for (port, checksum) in [(41000, true), (41001, false)] {
        let flow = to_vip(port, PORT_UDP);
        let what = if checksum {
            "with checksum"
        } else {
            "checksum 0"
        };
        let out = move |bed: &Testbed| -> Result<Vec<u8>> {
            Ok(udp(
                &translated(bed, &flow, proto::UDP, 1, Some((INT_MAC, BACKEND_MACS[1])))?,
                checksum,
            ))
        };
        let fwd = |event: &str, path| {
            Row::new(
                format!("udp {what} {event}"),
                Nic::External,
                udp(&flow, checksum),
                Action::Redirect,
            )
            .path(path)
            .counts(1, Some(1))
            .expect(out)
        };
        rows.push(
            fwd("opens a connection", Path::NewConn).after(check_entries(
                flow,
                proto::UDP,
                1,
                (NAT_MIN, NAT_MAX),
            )),
        );
        rows.push(fwd("established", Path::Established));
        let flags = Flags {
            syn: checksum,
            ..Flags::default()
        };
        rows.push(reply_row(
            &format!("udp {what} reply"),
            flow,
            proto::UDP,
            1,
            flags,
            CLIENT_MAC,
        ));
    }
}

/// A client reusing the ports of a finished connection after its backend left the Maglev
/// table: the new SYN gets a fresh pick, and the old reply entry is gone.
fn reuse_rows(rows: &mut Vec<Row>) {
    let flow = to_vip(48000, PORT_TCP);
    let fwd =
        |name: &str, flags: Flags, path: Path, backend| tcp_fwd(name, flow, flags, path, backend);
    rows.push(fwd("reuse: syn opens on backend 0", SYN, Path::NewConn, 0));
    rows.push(
        fwd("reuse: fin closes it", FIN, Path::Established, 0).after(state_after(
            flow,
            proto::TCP,
            tcp_state::FIN,
        )),
    );
    rows.push(
        fwd(
            "reuse: syn after backend 0 left picks afresh",
            SYN,
            Path::NewConn,
            1,
        )
        .before(|bed| bed.set_maglev(0, 1))
        .after(move |bed| {
            check_entries(flow, proto::TCP, 1, (NAT_MIN, NAT_MAX))(bed)?;
            ensure!(
                reply(bed, &flow, proto::TCP, BACKENDS[0]).is_err(),
                "the finished connection's reply entry is still there"
            );
            bed.set_maglev(0, 0)
        }),
    );
}

/// `ARP_CLAIMS` holds the other station's claim on the VIP, seen `count` times.
fn claimed(count: u32) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        let claims: HashMap<_, u32, ArpClaim> =
            HashMap::try_from(bed.ebpf.map(maps::ARP_CLAIMS).unwrap())?;
        let claim = claims.get(&be(VIP), 0).context("no ARP_CLAIMS entry")?;
        ensure!(
            claim.mac == PEER_MAC && claim.count == count && claim.ifindex == bed.ext_ifindex,
            "claim {claim:?}"
        );
        Ok(())
    }
}

/// The cluster's rows: the dead-man switch and the cluster protocol's sender filter.
fn cluster_rows(rows: &mut Vec<Row>) {
    const BCAST: [u8; 6] = [0xff; 6];
    let flow = to_vip(49000, PORT_TCP);
    rows.push(tcp_fwd(
        "lease: syn opens while the lease runs",
        flow,
        SYN,
        Path::NewConn,
        0,
    ));
    rows.push(
        tcp_fwd(
            "lease: established packets flow after it ran out",
            flow,
            ACK,
            Path::Established,
            0,
        )
        .before(|bed| bed.set_lease(1)),
    );
    rows.push(drop_row(
        "lease: no new connection after it ran out",
        tcp(&to_vip(49001, PORT_TCP), SYN),
        Reason::LeaseExpired,
    ));
    rows.push(
        drop_row(
            "lease: no arp answer for an owned vip after it ran out",
            arp(
                (&CLIENT_MAC, &BCAST),
                false,
                CLIENT_MAC,
                CLIENT,
                [0; 6],
                VIP,
            ),
            Reason::LeaseExpired,
        )
        .after(|bed| bed.set_lease(u64::MAX)),
    );

    let cluster = |src| Flow {
        src_mac: PEER_MAC,
        src,
        dst: EXT_ADDR,
        sport: CLUSTER_PORT,
        dport: CLUSTER_PORT,
        ..to_vip(0, 0)
    };
    rows.push(pass_row(
        "cluster protocol from a peer",
        Nic::External,
        udp(&cluster(PEER), true),
    ));
    rows.push(drop_row(
        "cluster protocol from a stranger",
        udp(&cluster(CLIENT), true),
        Reason::NotPeer,
    ));
}

/// Distributed NAT: a back-end's reply for another node's NAT port reaches this node (it owns
/// the back-ends' gateway VIP) and goes on to that node untouched but for the MACs.
fn home_rows(rows: &mut Vec<Row>) {
    let reply = |dport| Flow {
        src_mac: BACKEND_MACS[0],
        dst_mac: INT_MAC,
        src: BACKENDS[0],
        dst: CLIENT,
        sport: BACKEND_PORT,
        dport,
    };
    let home = reply(HOME_PORT);
    rows.push(
        Row::new(
            "tcp reply for another node's nat port goes to that node",
            Nic::Internal,
            tcp(&home, ACK),
            Action::Redirect,
        )
        .path(Path::ToHome)
        .expect(move |_| Ok(tcp(&home.macs(INT_MAC, HOME_MAC), ACK))),
    );
    rows.push(
        Row::new(
            "udp reply for another node's nat port goes to that node",
            Nic::Internal,
            udp(&home, true),
            Action::Redirect,
        )
        .path(Path::ToHome)
        .expect(move |_| Ok(udp(&home.macs(INT_MAC, HOME_MAC), true))),
    );
    rows.push(
        Row::new(
            "reply for a node whose mac is unresolved is dropped, never routed untranslated",
            Nic::Internal,
            tcp(&reply(HOME_UNRESOLVED_PORT), ACK),
            Action::Drop,
        )
        .reason(Reason::HomeUnresolved),
    );
    rows.push(pass_row(
        "a port of no node's block is not a reply",
        Nic::Internal,
        tcp(&reply(32000), ACK),
    ));
}

/// Connection hand-off: after a VIP moved here from node 2 (`PEER` on the external subnet), a
/// packet of no connection here goes to node 2 untranslated, one TTL less; once the VIP moved
/// on to node 2, this node keeps serving its own connections and sends back the datagrams node
/// 2 offers it that are no flow of its own.
fn handoff_rows(rows: &mut Vec<Row>) {
    const NODE2: u32 = 2;
    let moved_here = |live: bool| {
        let flags = vip_flags::OWNED | if live { vip_flags::PREVIOUS_LIVE } else { 0 };
        move |bed: &mut Testbed| bed.set_vip(flags, 1, NODE2)
    };
    let moved_away = |bed: &mut Testbed| bed.set_vip(0, NODE2, 0);
    let from_node2 = |flow: Flow| flow.macs(PEER_MAC, EXT_MAC);
    let to_node2 = |flow: Flow| flow.macs(EXT_MAC, PEER_MAC);
    let ttl = |ttl: u8| move |ip: &mut Ipv4Header| ip.time_to_live = ttl;
    // A datagram as it leaves for node 2: MACs rewritten, one TTL spent.
    let udp_to_node2 = |flow: Flow| udp_with(&to_node2(flow), true, ttl(63));

    // A packet sent on to another node, untranslated but for its MACs and one TTL.
    let handed = |name: &str, input: Vec<u8>, path: Path, out: Vec<u8>| {
        Row::new(name, Nic::External, input, Action::Redirect)
            .path(path)
            .expect(move |_| Ok(out.clone()))
    };
    // A datagram translated here, to backend 1.
    let served = |name: &str, input: Vec<u8>, path: Path, flow: Flow| {
        Row::new(name, Nic::External, input, Action::Redirect)
            .path(path)
            .counts(1, Some(1))
            .expect(move |bed: &Testbed| {
                let macs = Some((INT_MAC, BACKEND_MACS[1]));
                Ok(udp(&translated(bed, &flow, proto::UDP, 1, macs)?, true))
            })
    };

    let stray = to_vip(46100, PORT_TCP);
    let stray_out = tcp_with(&to_node2(stray), ACK, ttl(63));
    rows.push(
        handed(
            "tcp of no connection goes to the vip's previous holder",
            tcp(&stray, ACK),
            Path::ToPrevious,
            stray_out.clone(),
        )
        .before(moved_here(false)),
    );
    rows.push(
        handed(
            "its next packets go there by the forwarding entry it left",
            tcp(&stray, ACK),
            Path::ToPrevious,
            stray_out,
        )
        .before(move |bed| {
            let c = conn(bed, &stray, proto::TCP)?;
            ensure!(c.home == NODE2, "forwarding entry {c:?}");
            bed.set_vip(vip_flags::OWNED, 1, 0)
        }),
    );
    rows.push(drop_row(
        "tcp of no connection back from the previous holder is dropped",
        tcp(&from_node2(stray), ACK),
        Reason::NotOpening,
    ));
    rows.push(drop_row(
        "tcp of no connection with no ttl left is not handed on",
        tcp_with(&stray, ACK, ttl(1)),
        Reason::HopLimit,
    ));
    let opened = to_vip(46101, PORT_TCP);
    rows.push(tcp_fwd(
        "tcp syn after a move opens here",
        opened,
        SYN,
        Path::NewConn,
        0,
    ));
    let datagram = to_vip(46102, PORT_UDP);
    rows.push(
        handed(
            "udp of no flow is offered to a live previous holder",
            udp(&datagram, true),
            Path::ToPrevious,
            udp_to_node2(datagram),
        )
        .before(moved_here(true)),
    );
    rows.push(served(
        "udp the previous holder sends back opens here",
        udp(&from_node2(datagram), true),
        Path::NewConn,
        datagram,
    ));
    let unoffered = to_vip(46103, PORT_UDP);
    rows.push(
        served(
            "udp of no flow opens here when the previous holder is not a member",
            udp(&unoffered, true),
            Path::NewConn,
            unoffered,
        )
        .before(moved_here(false)),
    );
    rows.push(
        tcp_fwd(
            "a node keeps serving its connections after the vip moved on",
            opened,
            ACK,
            Path::Established,
            0,
        )
        .before(moved_away),
    );
    rows.push(served(
        "its udp flows too",
        udp(&datagram, true),
        Path::Established,
        datagram,
    ));
    let new_flow = to_vip(46104, PORT_UDP);
    rows.push(handed(
        "a datagram the owner offers that is no flow here goes back to the owner",
        udp(&from_node2(new_flow), true),
        Path::ToOwner,
        udp_to_node2(new_flow),
    ));
    rows.push(handed(
        "a datagram from a sender whose arp entry is stale goes to the vip's owner",
        udp(&new_flow, true),
        Path::ToOwner,
        udp_to_node2(new_flow),
    ));
    rows.push(drop_row(
        "tcp the owner offers that is no connection here is dropped",
        tcp(&from_node2(to_vip(46105, PORT_TCP)), ACK),
        Reason::NotOwner,
    ));
    let syn = to_vip(46106, PORT_TCP);
    rows.push(
        handed(
            "so does a syn",
            tcp(&syn, SYN),
            Path::ToOwner,
            tcp_with(&to_node2(syn), SYN, ttl(63)),
        )
        .after(|bed| bed.set_vip(vip_flags::OWNED, 0, 0)),
    );
}

/// Settings of this node (node 1) with `block_previous`.
fn cluster_settings(block_previous: u16) -> Settings {
    Settings {
        nat_port_min: NAT_MIN,
        nat_port_max: NAT_MAX,
        cluster_port: CLUSTER_PORT,
        node: 1,
        block_previous,
        ..Settings::default()
    }
}

/// Points `port` of `NAT_HOMES` at `value`.
fn set_home(bed: &mut Testbed, port: u16, value: u32) -> Result<()> {
    let mut homes: Array<_, u32> = Array::try_from(bed.ebpf.map_mut(maps::NAT_HOMES).unwrap())?;
    homes.set(u32::from(port), value, 0)?;
    Ok(())
}

/// Writes the `REPLIES` entry of a connection from `CLIENT:client_port` to `VIP:PORT_TCP`
/// translated to backend 0 with `nat_port`, as a node that takes a connection over does.
fn take_over(bed: &mut Testbed, client_port: u16, nat_port: u16) -> Result<()> {
    let mut replies: HashMap<_, FlowKey, Reply> =
        HashMap::try_from(bed.ebpf.map_mut(maps::REPLIES).unwrap())?;
    let client = to_vip(client_port, PORT_TCP);
    let value = Reply {
        vip: be(VIP),
        vip_port: PORT_TCP.to_be(),
        client_port: client_port.to_be(),
        ..Reply::default()
    };
    replies.insert(
        reply_key(&client, proto::TCP, BACKENDS[0], nat_port),
        value,
        0,
    )?;
    Ok(())
}

/// Node death without breaking connections: this node (node 1) took over node 3's NAT block
/// (31000-31999) with the connections it held copies of, and serves the leftovers of node 2's
/// block (30000-30999), whose node is back; and once this node is back from being away, the
/// replies of its own block that it does not know go to node 2, which served it meanwhile.
fn block_rows(rows: &mut Vec<Row>) {
    const TAKEN: (u16, u16) = (46200, 31005);
    const LEFTOVER: (u16, u16) = (46201, 30007);
    let reply = |dport| Flow {
        src_mac: BACKEND_MACS[0],
        dst_mac: INT_MAC,
        src: BACKENDS[0],
        dst: CLIENT,
        sport: BACKEND_PORT,
        dport,
    };
    let translated_back = |client_port| {
        move |_: &Testbed| {
            Ok(tcp(
                &to_client(&to_vip(client_port, PORT_TCP), CLIENT_MAC),
                ACK,
            ))
        }
    };
    let translate_row = |name: &str, nat_port: u16, client_port: u16| {
        let mut row = Row::new(
            name,
            Nic::Internal,
            tcp(&reply(nat_port), ACK),
            Action::Redirect,
        )
        .path(Path::Reply)
        .expect(translated_back(client_port));
        row.service = Some(0);
        row
    };
    rows.push(
        translate_row(
            "a reply of a block this node took over is translated here",
            TAKEN.1,
            TAKEN.0,
        )
        .before(|bed| {
            bed.set_settings(cluster_settings(0))?;
            for port in [TAKEN.1, TAKEN.1 + 1] {
                set_home(bed, port, 1)?;
            }
            set_home(bed, LEFTOVER.1, 2 | nat_home::LEFTOVERS)?;
            take_over(bed, TAKEN.0, TAKEN.1)?;
            take_over(bed, LEFTOVER.0, LEFTOVER.1)
        }),
    );
    rows.push(pass_row(
        "a reply of a taken-over block that is no connection here is not translated",
        Nic::Internal,
        tcp(&reply(TAKEN.1 + 1), ACK),
    ));
    rows.push(translate_row(
        "a reply of a connection taken over from a node that is back is translated here",
        LEFTOVER.1,
        LEFTOVER.0,
    ));
    let other = reply(LEFTOVER.1 + 1);
    rows.push(
        Row::new(
            "a reply of a returned block that is no leftover goes to the block's node",
            Nic::Internal,
            tcp(&other, ACK),
            Action::Redirect,
        )
        .path(Path::ToHome)
        .expect(move |_| Ok(tcp(&other.macs(INT_MAC, HOME_MAC), ACK))),
    );
    let own = reply(NAT_MIN + 7);
    rows.push(
        Row::new(
            "a reply of this node's block it does not know goes to the node that served the \
             block while it was away",
            Nic::Internal,
            tcp(&own, ACK),
            Action::Redirect,
        )
        .path(Path::ToHome)
        .before(|bed| bed.set_settings(cluster_settings(2)))
        .expect(move |_| {
            Ok(tcp_with(&own.macs(INT_MAC, HOME_MAC), ACK, |ip| {
                ip.time_to_live = 63
            }))
        }),
    );
    rows.push(
        pass_row(
            "unless that node sent it",
            Nic::Internal,
            tcp(&own.macs(HOME_MAC, INT_MAC), ACK),
        )
        .after(|bed| {
            bed.set_settings(cluster_settings(0))?;
            for port in [TAKEN.1, TAKEN.1 + 1] {
                set_home(bed, port, 3)?;
            }
            set_home(bed, LEFTOVER.1, 2)
        }),
    );
}

/// A client behind the router: translated replies go back to the router's MAC.
fn routed_rows(rows: &mut Vec<Row>) {
    let flow = Flow {
        src_mac: ROUTER_MAC,
        src: REMOTE_CLIENT,
        ..to_vip(42000, PORT_TCP)
    };
    rows.push(tcp_fwd(
        "tcp syn from a routed client",
        flow,
        SYN,
        Path::NewConn,
        0,
    ));
    rows.push(reply_row(
        "tcp reply to a routed client",
        flow,
        proto::TCP,
        0,
        ACK,
        ROUTER_MAC,
    ));
}

fn drop_row(name: &str, input: Vec<u8>, reason: Reason) -> Row {
    Row::new(name, Nic::External, input, Action::Drop).reason(reason)
}

fn pass_row(name: &str, nic: Nic, input: Vec<u8>) -> Row {
    Row::new(name, nic, input, Action::Pass).path(Path::PassThrough)
}

/// Everything that is not a translated connection: ARP, other traffic, bad packets.
fn edge_rows(rows: &mut Vec<Row>) {
    const BCAST: [u8; 6] = [0xff; 6];
    let request = |tpa| {
        arp(
            (&CLIENT_MAC, &BCAST),
            false,
            CLIENT_MAC,
            CLIENT,
            [0; 6],
            tpa,
        )
    };
    rows.push(
        Row::new(
            "arp request for an owned vip",
            Nic::External,
            request(VIP),
            Action::Tx,
        )
        .path(Path::ArpReply)
        .expect(|_| {
            Ok(arp(
                (&EXT_MAC, &CLIENT_MAC),
                true,
                EXT_MAC,
                VIP,
                CLIENT_MAC,
                CLIENT,
            ))
        }),
    );
    rows.push(drop_row(
        "arp request for a foreign vip",
        request(FOREIGN_VIP),
        Reason::ArpForeignVip,
    ));
    rows.push(
        Row::new(
            "arp request for an owned vip on the wrong nic",
            Nic::Internal,
            request(VIP),
            Action::Drop,
        )
        .reason(Reason::ArpForeignVip),
    );
    rows.push(pass_row(
        "arp request for a non-vip",
        Nic::External,
        request(EXT_ADDR),
    ));
    let claim = |reply, tpa| arp((&PEER_MAC, &BCAST), reply, PEER_MAC, VIP, [0; 6], tpa);
    rows.push(
        drop_row(
            "arp reply from another station for an owned vip",
            claim(true, CLIENT),
            Reason::ArpClaimed,
        )
        .after(claimed(1)),
    );
    rows.push(
        drop_row(
            "gratuitous arp from another station for an owned vip",
            claim(false, VIP),
            Reason::ArpClaimed,
        )
        .after(claimed(2)),
    );
    rows.push(pass_row(
        "arp reply for a foreign vip",
        Nic::External,
        arp(
            (&PEER_MAC, &BCAST),
            true,
            PEER_MAC,
            FOREIGN_VIP,
            [0; 6],
            FOREIGN_VIP,
        ),
    ));

    let host = Flow {
        dst: EXT_ADDR,
        dport: 22,
        ..to_vip(CLIENT_PORT, 0)
    };
    rows.push(pass_row(
        "tcp to the gateway itself",
        Nic::External,
        tcp(&host, SYN),
    ));
    rows.push(pass_row(
        "tcp to a nat port with no entry",
        Nic::Internal,
        tcp(
            &Flow {
                dst_mac: INT_MAC,
                dport: NAT_MIN + 1,
                ..host
            },
            ACK,
        ),
    ));
    let flooded = |dst| Flow {
        dst,
        ..to_vip(CLIENT_PORT, PORT_TCP).macs(CLIENT_MAC, PEER_MAC)
    };
    rows.push(
        Row::new(
            "a frame for another station's mac (flooded by a switch) for a vip another node \
             owns is left to the kernel",
            Nic::External,
            tcp(&flooded(FOREIGN_VIP), SYN),
            Action::Pass,
        )
        .reason(Reason::OtherHost),
    );
    rows.push(tcp_fwd(
        "the owner acts on a flooded frame for its vip",
        flooded(VIP),
        ACK,
        Path::Established,
        0,
    ));
    rows.push(
        Row::new(
            "a reply in a frame for another station is left to the kernel",
            Nic::Internal,
            tcp(
                &Flow {
                    src_mac: BACKEND_MACS[0],
                    dst_mac: HOME_MAC,
                    src: BACKENDS[0],
                    dst: CLIENT,
                    sport: BACKEND_PORT,
                    dport: NAT_MIN + 3,
                },
                ACK,
            ),
            Action::Pass,
        )
        .reason(Reason::OtherHost),
    );
    rows.push(drop_row(
        "tcp to a vip on an unserved port",
        tcp(&to_vip(CLIENT_PORT, 443), SYN),
        Reason::NoService,
    ));
    rows.push(drop_row(
        "udp to a vip on a tcp-only port",
        udp(&to_vip(CLIENT_PORT, PORT_TCP), true),
        Reason::NoService,
    ));
    rows.push(drop_row(
        "tcp to a foreign vip",
        tcp(
            &Flow {
                dst: FOREIGN_VIP,
                ..to_vip(CLIENT_PORT, PORT_TCP)
            },
            SYN,
        ),
        Reason::NotOwner,
    ));
    let vip = to_vip(43000, PORT_TCP);
    rows.push(drop_row(
        "first fragment to a vip",
        tcp_with(&vip, SYN, |ip| {
            ip.dont_fragment = false;
            ip.more_fragments = true;
        }),
        Reason::Fragment,
    ));
    rows.push(drop_row(
        "later fragment to a vip",
        tcp_with(&vip, SYN, |ip| {
            ip.dont_fragment = false;
            ip.fragment_offset = etherparse::IpFragOffset::try_new(100).unwrap();
        }),
        Reason::Fragment,
    ));
    rows.push(drop_row(
        "ip options to a vip",
        tcp_with(&vip, SYN, |ip| {
            ip.options = [1, 1, 1, 0][..].try_into().unwrap()
        }),
        Reason::IpOptions,
    ));
    rows.push(drop_row(
        "tcp ack with no connection",
        tcp(&vip, ACK),
        Reason::NotOpening,
    ));
    rows.push(drop_row(
        "tcp syn to a service with no healthy backend",
        tcp(&to_vip(43001, PORT_NO_BACKEND), SYN),
        Reason::NoBackend,
    ));

    let mut icmp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, packets::PAYLOAD)
        .unwrap();
    rows.push(drop_row(
        "icmp echo to a vip",
        icmp,
        Reason::UnsupportedProto,
    ));
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv6([1; 16], [2; 16], 64)
        .udp(1, 2)
        .write(&mut v6, packets::PAYLOAD)
        .unwrap();
    rows.push(pass_row("ipv6", Nic::External, v6));
    let mut vlan = tcp(&vip, SYN);
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    rows.push(pass_row("vlan-tagged packet to a vip", Nic::External, vlan));

    let with = |f: fn(&mut Vec<u8>)| {
        let mut p = tcp(&vip, SYN);
        f(&mut p);
        p
    };
    rows.push(drop_row(
        "ihl below 5 to a vip",
        with(|p| p[14] = 0x44),
        Reason::BadIhl,
    ));
    rows.push(drop_row(
        "ihl beyond total length to a vip",
        with(|p| p[14] = 0x4f),
        Reason::BadIhl,
    ));
    rows.push(drop_row(
        "total length beyond the packet to a vip",
        with(|p| p[16..18].copy_from_slice(&1000u16.to_be_bytes())),
        Reason::BadIhl,
    ));
    rows.push(drop_row(
        "ip version 5 to a vip",
        with(|p| p[14] = 0x55),
        Reason::BadIhl,
    ));
    rows.push(
        Row::new(
            "ihl below 5 to a non-vip",
            Nic::External,
            tcp_with(&host, SYN, |_| {})
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 14 { 0x44 } else { b })
                .collect(),
            Action::Pass,
        )
        .reason(Reason::BadIhl),
    );
}

/// Rows that change settings: rate limit, unresolved neighbour, NAT port probing.
fn settings_rows(rows: &mut Vec<Row>) {
    let limited = to_vip(44000, PORT_TCP);
    rows.push(
        drop_row(
            "tcp syn over the rate limit",
            tcp(&limited, SYN),
            Reason::RateLimited,
        )
        .before(|bed| {
            bed.set_settings(Settings {
                nat_port_min: NAT_MIN,
                nat_port_max: NAT_MAX,
                new_conns_per_cpu: 5,
                cluster_port: CLUSTER_PORT,
                ..Settings::default()
            })?;
            bed.set_rate_window(5)
        }),
    );
    rows.push(
        tcp_fwd(
            "tcp syn just under the rate limit",
            limited,
            SYN,
            Path::NewConn,
            0,
        )
        .before(|bed| bed.set_rate_window(4))
        .after(|bed| {
            bed.set_settings(Settings {
                nat_port_min: NAT_MIN,
                nat_port_max: NAT_MAX,
                new_conns_per_cpu: 0,
                cluster_port: CLUSTER_PORT,
                ..Settings::default()
            })
        }),
    );

    let unresolved = to_vip(45000, PORT_UNRESOLVED);
    for (name, flags) in [("syn", SYN), ("ack", ACK)] {
        rows.push(
            Row::new(
                format!("tcp {name} to a backend with no neighbour"),
                Nic::External,
                tcp(&unresolved, flags),
                Action::Pass,
            )
            .path(Path::KernelForward)
            .counts(2, Some(2))
            .expect(move |bed| {
                Ok(tcp(
                    &translated(bed, &unresolved, proto::TCP, 2, None)?,
                    flags,
                ))
            }),
        );
    }

    // A two-port NAT block: the second connection from the same client to the same backend
    // must probe past the first one's port; the third finds none free.
    const PORT: u16 = 30000;
    let first = to_vip(46000, PORT_TCP);
    let second = to_vip(46001, PORT_TCP);
    rows.push(
        tcp_fwd(
            "nat: first connection in a two-port block",
            first,
            SYN,
            Path::NewConn,
            0,
        )
        .before(|bed| {
            bed.set_settings(Settings {
                nat_port_min: PORT,
                nat_port_max: PORT + 1,
                new_conns_per_cpu: 0,
                cluster_port: CLUSTER_PORT,
                ..Settings::default()
            })
        })
        .after(check_entries(first, proto::TCP, 0, (PORT, PORT + 1))),
    );
    rows.push(
        tcp_fwd(
            "nat: second connection probes to the other port",
            second,
            SYN,
            Path::NewConn,
            0,
        )
        .after(move |bed| {
            check_entries(second, proto::TCP, 0, (PORT, PORT + 1))(bed)?;
            let (a, b) = (
                nat_port(bed, &first, proto::TCP)?,
                nat_port(bed, &second, proto::TCP)?,
            );
            ensure!(a != b, "both connections got NAT port {a}");
            Ok(())
        }),
    );
    rows.push(
        drop_row(
            "nat: third connection finds the block exhausted",
            tcp(&to_vip(46002, PORT_TCP), SYN),
            Reason::NatExhausted,
        )
        .after(|bed| {
            bed.set_settings(Settings {
                nat_port_min: NAT_MIN,
                nat_port_max: NAT_MAX,
                new_conns_per_cpu: 0,
                cluster_port: CLUSTER_PORT,
                ..Settings::default()
            })
        }),
    );
}

/// Every cut of a packet inside its headers (the kernel refuses runs shorter than Ethernet).
fn truncated_rows(rows: &mut Vec<Row>) {
    const BCAST: [u8; 6] = [0xff; 6];
    let vip = to_vip(47000, PORT_TCP);
    let host = Flow {
        dst: EXT_ADDR,
        ..vip
    };
    let cases = [
        ("tcp to vip", tcp(&vip, SYN), true),
        ("udp to vip", udp(&to_vip(47000, PORT_UDP), true), true),
        ("tcp to host", tcp(&host, SYN), false),
    ];
    for (what, full, to_vip) in cases {
        let headers = full.len() - packets::PAYLOAD.len();
        for cut in 14..headers {
            let raw = full[..cut].to_vec();
            let row = if cut < 34 {
                Row::new(
                    format!("{what} cut at {cut}"),
                    Nic::External,
                    raw,
                    Action::Pass,
                )
                .reason(Reason::TruncatedIp)
            } else if to_vip {
                drop_row(&format!("{what} cut at {cut}"), raw.clone(), Reason::BadIhl)
            } else {
                Row::new(
                    format!("{what} cut at {cut}"),
                    Nic::External,
                    raw,
                    Action::Pass,
                )
                .reason(Reason::BadIhl)
            };
            rows.push(row);
            if cut >= 34 {
                // The same cut with a consistent IPv4 total length: the L4 header is short.
                let mut consistent = full[..cut].to_vec();
                consistent[16..18].copy_from_slice(&((cut - 14) as u16).to_be_bytes());
                let mut ip = etherparse::Ipv4Header::from_slice(&consistent[14..])
                    .unwrap()
                    .0;
                ip.header_checksum = ip.calc_header_checksum();
                consistent[24..26].copy_from_slice(&ip.header_checksum.to_be_bytes());
                let name = format!("{what} cut at {cut} with a consistent length");
                rows.push(if to_vip {
                    drop_row(&name, consistent, Reason::TruncatedL4)
                } else {
                    pass_row(&name, Nic::External, consistent)
                });
            }
        }
    }
    let full = arp(
        (&CLIENT_MAC, &BCAST),
        false,
        CLIENT_MAC,
        CLIENT,
        [0; 6],
        VIP,
    );
    for cut in 14..full.len() {
        rows.push(
            Row::new(
                format!("arp cut at {cut}"),
                Nic::External,
                full[..cut].to_vec(),
                Action::Pass,
            )
            .reason(Reason::TruncatedArp),
        );
    }
}

/// Verifies every checksum of an output packet independently of the data path.
fn verify_checksums(packet: &[u8]) -> Result<()> {
    let headers = PacketHeaders::from_ethernet_slice(packet).context("output does not parse")?;
    let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
        return Ok(());
    };
    ensure!(
        ip.header_checksum == ip.calc_header_checksum(),
        "bad IPv4 header checksum"
    );
    let payload = headers.payload.slice();
    match &headers.transport {
        Some(TransportHeader::Tcp(tcp)) => {
            ensure!(
                tcp.checksum == tcp.calc_checksum_ipv4(ip, payload)?,
                "bad TCP checksum"
            )
        }
        Some(TransportHeader::Udp(udp)) if udp.checksum != 0 => {
            ensure!(
                udp.checksum == udp.calc_checksum_ipv4(ip, payload)?,
                "bad UDP checksum"
            )
        }
        _ => {}
    }
    Ok(())
}

fn snapshot(bed: &Testbed) -> Result<Vec<Vec<u64>>> {
    COUNTER_MAPS.iter().map(|m| bed.counters(m)).collect()
}

/// The counters a row expects to have moved by one.
fn expected_deltas(row: &Row) -> Vec<(usize, u32)> {
    let mut deltas = vec![(0, row.action as u32)];
    deltas.extend(row.path.map(|p| (1, p as u32)));
    deltas.extend(row.reason.map(|r| (2, r as u32)));
    deltas.extend(row.service.map(|s| (3, s)));
    deltas.extend(row.backend.map(|b| (4, b)));
    deltas
}

fn run_row(bed: &mut Testbed, row: &Row) -> Result<()> {
    if let Some(before) = &row.before {
        before(bed)?;
    }
    let input = (row.input)(bed)?;
    let before = snapshot(bed)?;
    let (action, output, _) = bed.run(programs::GATEWAY, row.nic, &input, 1)?;
    ensure!(
        action == row.action as u32,
        "action {action}, expected {:?}",
        row.action
    );
    let after = snapshot(bed)?;
    let expected = expected_deltas(row);
    for (m, (old, new)) in before.iter().zip(&after).enumerate() {
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            let want = expected
                .iter()
                .filter(|(em, ei)| *em == m && *ei as usize == i)
                .count() as u64;
            ensure!(
                n - o == want,
                "{}[{i}] moved by {}, expected {want}",
                COUNTER_MAPS[m],
                n - o
            );
        }
    }
    match &row.expect {
        Expect::Dropped => {}
        Expect::Unchanged => ensure!(
            output == input,
            "packet changed:\n in  {input:02x?}\n out {output:02x?}"
        ),
        Expect::Packet(build) => {
            let want = build(bed)?;
            ensure!(
                output == want,
                "wrong output:\n got  {output:02x?}\n want {want:02x?}"
            );
            verify_checksums(&output)?;
        }
    }
    if let Some(after) = &row.after {
        after(bed)?;
    }
    Ok(())
}

#[test]
fn xdp_fixtures() -> Result<()> {
    let mut bed = Testbed::new("gwfx", &[programs::GATEWAY])?;
    let mut rows = Vec::new();
    tcp_rows(&mut rows);
    udp_rows(&mut rows);
    reuse_rows(&mut rows);
    cluster_rows(&mut rows);
    routed_rows(&mut rows);
    home_rows(&mut rows);
    edge_rows(&mut rows);
    settings_rows(&mut rows);
    truncated_rows(&mut rows);
    handoff_rows(&mut rows);
    block_rows(&mut rows);
    let mut failures = Vec::new();
    for row in &rows {
        if let Err(e) = run_row(&mut bed, row) {
            failures.push(format!("{}: {e:#}", row.name));
        }
    }
    // The kernel refuses to run XDP on less than an Ethernet header, so `TruncatedEth` is only
    // reachable from real NICs; check the refusal rather than skip the cuts silently.
    for cut in 0..14 {
        let packet = tcp(&to_vip(CLIENT_PORT, PORT_TCP), SYN);
        if bed
            .run(programs::GATEWAY, Nic::External, &packet[..cut], 1)
            .is_ok()
        {
            failures.push(format!(
                "cut at {cut}: the kernel ran a frame shorter than Ethernet"
            ));
        }
    }
    println!("{} rows, {} failed", rows.len(), failures.len());
    assert!(
        failures.is_empty(),
        "failed rows:
{}",
        failures.join(
            "
"
        )
    );
    Ok(())
}
