//! The local fault monitor: what makes this node give its VIPs away and leave the ring
//! (docs/architecture.md, "Split brain"). It watches the link state of every cluster NIC and that
//! the XDP program is still attached to it (rtnetlink, polled), and pings the witnesses (the
//! upstream router) over a raw ICMP socket. It publishes the current set of faults on a watch
//! channel; the cluster shell turns a change into `LocalFault` / `LocalHealthy` for the ring.
use std::{
    collections::BTreeMap,
    fmt,
    io::Read,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp, XdpAttached};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{io::unix::AsyncFd, sync::watch, time::MissedTickBehavior};
use tracing::{info, warn};

use crate::{config::Monitor, datapath::netlink::Nic};

/// One thing wrong with this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// A cluster NIC is administratively down or has no carrier.
    LinkDown(String),
    /// The XDP program is no longer attached to a cluster NIC.
    XdpDetached(String),
    /// A witness missed the configured number of pings in a row.
    WitnessUnreachable(Ipv4Addr),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::LinkDown(nic) => write!(f, "link {nic} down"),
            Fault::XdpDetached(nic) => write!(f, "XDP detached from {nic}"),
            Fault::WitnessUnreachable(a) => write!(f, "witness {a} unreachable"),
        }
    }
}

/// What one rtnetlink link dump says about a NIC: its faults, if any.
pub fn link_faults(name: &str, link: &LinkMessage) -> Vec<Fault> {
    let mut faults = Vec::new();
    let flags = link.header.flags;
    if !flags.contains(LinkFlags::Up) || !flags.contains(LinkFlags::LowerUp) {
        faults.push(Fault::LinkDown(name.to_string()));
    }
    let attached = link.attributes.iter().any(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().any(|x| match x {
            LinkXdp::Attached(mode) => *mode != XdpAttached::None,
            LinkXdp::ProgId(id) => *id != 0,
            _ => false,
        }),
        _ => false,
    });
    if !attached {
        faults.push(Fault::XdpDetached(name.to_string()));
    }
    faults
}

/// Miss counting of the witnesses: a witness is unreachable once `misses` pings in a row went
/// unanswered, and reachable again with the next answer.
#[derive(Debug, Clone)]
pub struct WitnessTracker {
    misses: u32,
    /// Per witness: pings unanswered in a row, and whether the latest ping was answered.
    state: BTreeMap<Ipv4Addr, (u32, bool)>,
}

impl WitnessTracker {
    /// Tracks `witnesses`, all reachable until they miss `misses` pings.
    pub fn new(witnesses: &[Ipv4Addr], misses: u32) -> Self {
        Self {
            misses,
            state: witnesses.iter().map(|w| (*w, (0, true))).collect(),
        }
    }

    /// A new round of pings goes out: a witness that did not answer the last one missed it.
    pub fn round(&mut self) {
        for (missed, answered) in self.state.values_mut() {
            if !*answered {
                *missed = missed.saturating_add(1);
            }
            *answered = false;
        }
    }

    /// `from` answered the current round.
    pub fn answered(&mut self, from: Ipv4Addr) {
        if let Some((missed, answered)) = self.state.get_mut(&from) {
            *missed = 0;
            *answered = true;
        }
    }

    /// The witnesses that count as unreachable now.
    pub fn unreachable(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.state
            .iter()
            .filter(|(_, (missed, _))| *missed >= self.misses)
            .map(|(w, _)| *w)
    }
}

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request with `id` and `seq`.
pub fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = ICMP_ECHO_REQUEST;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"gateway!");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The sender of an ICMP echo reply with our `id`, from a raw IPv4 packet (header included);
/// `None` for anything else, including truncated packets.
pub fn echo_reply_from(packet: &[u8], id: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    (ihl >= 20 && *icmp.first()? == ICMP_ECHO_REPLY && icmp.get(4..6)? == id.to_be_bytes())
        .then_some(Ipv4Addr::from(src))
}

/// Rtnetlink link dumps of the cluster NICs, for the link and XDP checks.
struct Links {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Links {
    fn open() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        Ok(Self {
            handle,
            task: tokio::spawn(connection),
        })
    }

    async fn faults(&self, nics: &[Nic]) -> Vec<Fault> {
        let mut faults = Vec::new();
        for nic in nics {
            let link = self
                .handle
                .link()
                .get()
                .match_index(nic.ifindex)
                .execute()
                .try_next()
                .await;
            match link {
                Ok(Some(link)) => faults.extend(link_faults(&nic.name, &link)),
                // A NIC that vanished is down, and so is its XDP.
                _ => faults.push(Fault::LinkDown(nic.name.clone())),
            }
        }
        faults
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw ICMP socket for pinging the witnesses.
fn icmp_socket() -> Result<AsyncFd<Socket>> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("opening a raw ICMP socket (needs CAP_NET_RAW)")?;
    socket.set_nonblocking(true)?;
    // SAFETY: the socket owns its descriptor and is moved into the AsyncFd, which never
    // replaces or closes it while registered.
    unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1.into())
}

/// Runs the checks forever, publishing the sorted fault set on `faults` whenever it changes.
pub async fn run(monitor: Monitor, nics: Vec<Nic>, faults: watch::Sender<Vec<Fault>>) {
    if let Err(e) = watch_all(&monitor, &nics, &faults).await {
        // Without its monitor the node cannot tell a dead router from a live one: it must not
        // keep VIPs it may no longer be reachable for.
        warn!("fault monitor failed: {e:#}");
        let _ = faults.send(vec![Fault::WitnessUnreachable(Ipv4Addr::UNSPECIFIED)]);
    }
}

async fn watch_all(
    monitor: &Monitor,
    nics: &[Nic],
    faults: &watch::Sender<Vec<Fault>>,
) -> Result<()> {
    let links = Links::open()?;
    let icmp = if monitor.witness.is_empty() {
        None
    } else {
        Some(icmp_socket()?)
    };
    let id = (std::process::id() & 0xffff) as u16;
    let mut witnesses = WitnessTracker::new(&monitor.witness, monitor.witness_misses);
    let mut link_tick = tokio::time::interval(monitor.link_interval);
    let mut ping_tick = tokio::time::interval(monitor.witness_interval);
    for tick in [&mut link_tick, &mut ping_tick] {
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut link_faults = Vec::new();
    let mut seq = 0u16;
    let mut buf = [0u8; 1500];
    loop {
        tokio::select! {
            _ = link_tick.tick() => link_faults = links.faults(nics).await,
            _ = ping_tick.tick(), if icmp.is_some() => {
                witnesses.round();
                seq = seq.wrapping_add(1);
                let request = echo_request(id, seq);
                let socket = icmp.as_ref().expect("guarded").get_ref();
                for w in &monitor.witness {
                    let to = SocketAddrV4::new(*w, 0).into();
                    if let Err(e) = socket.send_to(&request, &to) {
                        // Counted as a miss; the error itself says why (no route, link down).
                        tracing::debug!(witness = %w, "ping: {e}");
                    }
                }
            }
            ready = async { icmp.as_ref().expect("guarded").readable().await }, if icmp.is_some() => {
                let mut guard = ready?;
                match guard.try_io(|s| (&mut s.get_ref()).read(&mut buf)) {
                    Ok(Ok(n)) => {
                        if let Some(from) = echo_reply_from(&buf[..n], id) {
                            witnesses.answered(from);
                        }
                    }
                    Ok(Err(e)) => warn!("reading ICMP: {e}"),
                    Err(_would_block) => {}
                }
                continue;
            }
        }
        let mut now: Vec<Fault> = link_faults
            .iter()
            .cloned()
            .chain(witnesses.unreachable().map(Fault::WitnessUnreachable))
            .collect();
        now.sort();
        faults.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            let list: Vec<String> = now.iter().map(ToString::to_string).collect();
            if list.is_empty() {
                info!("local faults cleared");
            } else {
                warn!(faults = ?list, "local faults");
            }
            *current = now;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_misses_in_a_row() {
        let w = Ipv4Addr::new(10, 0, 0, 1);
        let mut t = WitnessTracker::new(&[w], 3);
        for _ in 0..3 {
            t.round();
            assert_eq!(t.unreachable().count(), 0);
        }
        t.round(); // the third unanswered ping is now counted
        assert_eq!(t.unreachable().collect::<Vec<_>>(), [w]);
        t.answered(w);
        assert_eq!(t.unreachable().count(), 0);
        t.round();
        t.answered(Ipv4Addr::new(10, 9, 9, 9)); // a stranger changes nothing
        t.round();
        t.round();
        assert_eq!(t.unreachable().count(), 0, "two misses of three");
    }

    #[test]
    fn echo_round_trip() {
        let request = echo_request(0x1234, 7);
        assert_eq!(checksum(&request), 0, "checksum covers the packet");
        // The reply as a raw socket sees it: an IPv4 header, then the echoed ICMP.
        let mut packet = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let mut reply = request;
        reply[0] = ICMP_ECHO_REPLY;
        packet.extend_from_slice(&reply);
        assert_eq!(
            echo_reply_from(&packet, 0x1234),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(echo_reply_from(&packet, 0x1235), None, "someone else's id");
        packet[20] = ICMP_ECHO_REQUEST;
        assert_eq!(echo_reply_from(&packet, 0x1234), None, "not a reply");
        for len in 0..packet.len() {
            assert_eq!(echo_reply_from(&packet[..len], 0x1234), None);
        }
        assert_eq!(echo_reply_from(&[0x41; 30], 0x4141), None, "IHL below 5");
    }

    #[test]
    fn link_flags_and_xdp() {
        let mut link = LinkMessage::default();
        assert_eq!(
            link_faults("ext0", &link),
            [
                Fault::LinkDown("ext0".into()),
                Fault::XdpDetached("ext0".into())
            ]
        );
        link.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        link.attributes
            .push(LinkAttribute::Xdp(vec![LinkXdp::Attached(
                XdpAttached::Driver,
            )]));
        assert_eq!(link_faults("ext0", &link), []);
        link.header.flags = LinkFlags::Up;
        assert_eq!(link_faults("ext0", &link), [Fault::LinkDown("ext0".into())]);
    }
}
