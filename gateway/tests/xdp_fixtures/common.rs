//! What several features' rows share: the test flows, lookups of the connection tables, the
//! checks of a connection's entries, and the common shapes of a row.
use anyhow::{ensure, Context, Result};
use aya::maps::HashMap;
use gateway_common::{
    maps, programs, proto, tcp_state, Action, Conn, FlowKey, Path, Reason, Reply, Settings,
};

use crate::{
    support::{
        packets::{arp, tcp, udp, Flags, Flow, ACK, SYN},
        testbed::*,
    },
    Row,
};

pub const CLIENT_PORT: u16 = 40000;
pub const BCAST: [u8; 6] = [0xff; 6];

/// A client's packet to `VIP:port` from `CLIENT:sport`, as it arrives on the external NIC.
pub fn to_vip(sport: u16, port: u16) -> Flow {
    Flow {
        src_mac: CLIENT_MAC,
        dst_mac: EXT_MAC,
        src: CLIENT,
        dst: VIP,
        sport,
        dport: port,
    }
}

/// A client's packet to the gateway's own address on the external NIC (ssh), no VIP.
pub fn to_gateway() -> Flow {
    Flow {
        dst: EXT_ADDR,
        dport: 22,
        ..to_vip(CLIENT_PORT, 0)
    }
}

/// Backend 0's packet from its service port to `CLIENT:dport`, as it arrives on the internal
/// NIC (a reply when `dport` is a NAT port).
pub fn backend_reply(dport: u16) -> Flow {
    Flow {
        src_mac: BACKEND_MACS[0],
        dst_mac: INT_MAC,
        src: BACKENDS[0],
        dst: CLIENT,
        sport: BACKEND_PORT,
        dport,
    }
}

/// A client's broadcast ARP request for `tpa`.
pub fn arp_request(tpa: [u8; 4]) -> Vec<u8> {
    arp(
        (&CLIENT_MAC, &BCAST),
        false,
        CLIENT_MAC,
        CLIENT,
        [0; 6],
        tpa,
    )
}

pub fn client_key(flow: &Flow, l4: u8) -> FlowKey {
    FlowKey {
        src_addr: be(flow.src),
        dst_addr: be(flow.dst),
        src_port: flow.sport.to_be(),
        dst_port: flow.dport.to_be(),
        proto: l4,
        _pad: [0; 3],
    }
}

pub fn conn(bed: &Testbed, flow: &Flow, l4: u8) -> Result<Conn> {
    let map: HashMap<_, FlowKey, Conn> = HashMap::try_from(bed.ebpf.map(maps::CONNS).unwrap())?;
    map.get(&client_key(flow, l4), 0)
        .with_context(|| format!("no CONNS entry for {flow:?}"))
}

/// Removes `flow`'s two entries, as if its connection had never been opened here.
pub fn forget(bed: &mut Testbed, flow: &Flow, l4: u8) -> Result<()> {
    forget_reply(bed, flow, l4)?;
    let mut conns: HashMap<_, FlowKey, Conn> =
        HashMap::try_from(bed.ebpf.map_mut(maps::CONNS).unwrap())?;
    conns.remove(&client_key(flow, l4))?;
    Ok(())
}

/// Removes `flow`'s `REPLIES` entry, as the sweep does with one it finds idle.
pub fn forget_reply(bed: &mut Testbed, flow: &Flow, l4: u8) -> Result<()> {
    let c = conn(bed, flow, l4)?;
    let reply = FlowKey {
        src_addr: c.backend_addr,
        dst_addr: be(flow.src),
        src_port: c.backend_port,
        dst_port: c.nat_port,
        proto: l4,
        _pad: [0; 3],
    };
    let mut replies: HashMap<_, FlowKey, Reply> =
        HashMap::try_from(bed.ebpf.map_mut(maps::REPLIES).unwrap())?;
    replies.remove(&reply)?;
    Ok(())
}

pub fn reply_key(flow: &Flow, l4: u8, backend: [u8; 4], nat_port: u16) -> FlowKey {
    FlowKey {
        src_addr: be(backend),
        dst_addr: be(flow.src),
        src_port: BACKEND_PORT.to_be(),
        dst_port: nat_port.to_be(),
        proto: l4,
        _pad: [0; 3],
    }
}

pub fn reply(bed: &Testbed, flow: &Flow, l4: u8, backend: [u8; 4]) -> Result<Reply> {
    let nat = nat_port(bed, flow, l4)?;
    let map: HashMap<_, FlowKey, Reply> = HashMap::try_from(bed.ebpf.map(maps::REPLIES).unwrap())?;
    map.get(&reply_key(flow, l4, backend, nat), 0)
        .context("no REPLIES entry")
}

pub fn nat_port(bed: &Testbed, flow: &Flow, l4: u8) -> Result<u16> {
    Ok(u16::from_be(conn(bed, flow, l4)?.nat_port))
}

/// `flow` after translation to `backend`, leaving by `macs` (None: MACs untouched).
pub fn translated(
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
pub fn to_client(flow: &Flow, client_mac: [u8; 6]) -> Flow {
    Flow {
        src_mac: EXT_MAC,
        dst_mac: client_mac,
        src: VIP,
        dst: flow.src,
        sport: flow.dport,
        dport: flow.sport,
    }
}

pub fn state_after(flow: Flow, l4: u8, conn_state: u8) -> impl Fn(&mut Testbed) -> Result<()> {
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

/// Checks a new connection's two entries against each other and the settings.
pub fn check_entries(
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

/// Opens `flow`'s TCP connection with a SYN: the setup of rows that need one to exist.
pub fn opened(flow: Flow) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        let (action, _, _) = bed.run(programs::GATEWAY, Nic::External, &tcp(&flow, SYN), 1)?;
        ensure!(
            action == Action::Redirect as u32,
            "opening {flow:?}: action {action}"
        );
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
pub fn tcp_fwd(name: &str, flow: Flow, flags: Flags, path: Path, backend: usize) -> Row {
    Row::new(name, Nic::External, tcp(&flow, flags), Action::Redirect)
        .path(path)
        .counts(0, Some(backend as u32))
        .expect(tcp_out(flow, backend, flags))
}

/// A backend's reply to `flow` and the packet the client must get.
pub fn reply_row(
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
    Row::new(name, Nic::Internal, Vec::new(), Action::Redirect)
        .path(Path::Reply)
        .counts(backend as u32, None)
        .input(move |bed| build(bed, true))
        .expect(move |bed| build(bed, false))
}

/// A backend's TCP ACK of `flow` sent on to node `HOME` untouched but for its MACs.
pub fn to_home(name: &str, flow: Flow) -> Row {
    Row::new(name, Nic::Internal, tcp(&flow, ACK), Action::Redirect)
        .path(Path::ToHome)
        .expect(move |_| Ok(tcp(&flow.macs(INT_MAC, HOME_MAC), ACK)))
}

/// A packet from the external NIC dropped for `reason`.
pub fn drop_row(name: &str, input: Vec<u8>, reason: Reason) -> Row {
    Row::new(name, Nic::External, input, Action::Drop).reason(reason)
}

/// A packet that is none of the gateway's business, passed on untouched.
pub fn pass_row(name: &str, nic: Nic, input: Vec<u8>) -> Row {
    Row::new(name, nic, input, Action::Pass).path(Path::PassThrough)
}

/// A packet left to the kernel untouched, counted under `reason`.
pub fn kernel_row(name: impl Into<String>, nic: Nic, input: Vec<u8>, reason: Reason) -> Row {
    Row::new(name, nic, input, Action::Pass).reason(reason)
}

/// `flow` as it arrives from the peer node (`PEER`) on the external subnet.
pub fn from_peer(flow: Flow) -> Flow {
    flow.macs(PEER_MAC, EXT_MAC)
}

/// `flow` as it leaves for the peer node.
pub fn to_peer(flow: Flow) -> Flow {
    flow.macs(EXT_MAC, PEER_MAC)
}

/// A packet sent on to another node along `path`, untranslated but for `out`'s MACs and TTL.
pub fn handed_row(name: &str, input: Vec<u8>, path: Path, out: Vec<u8>) -> Row {
    Row::new(name, Nic::External, input, Action::Redirect)
        .path(path)
        .expect(move |_| Ok(out.clone()))
}

/// A datagram translated here along `path`, to backend 1 (the pick of the UDP fixtures'
/// flows).
pub fn udp_served(name: &str, input: Vec<u8>, path: Path, flow: Flow) -> Row {
    Row::new(name, Nic::External, input, Action::Redirect)
        .path(path)
        .counts(1, Some(1))
        .expect(move |bed: &Testbed| {
            let macs = Some((INT_MAC, BACKEND_MACS[1]));
            Ok(udp(&translated(bed, &flow, proto::UDP, 1, macs)?, true))
        })
}

/// The VIP moved on to node `owner`, this node (node 1) its previous holder.
pub fn the_previous_holder(bed: &mut Testbed, owner: u32) -> Result<()> {
    bed.set_settings(Settings {
        node: 1,
        ..settings()
    })?;
    bed.set_vip(0, owner, 1)
}
