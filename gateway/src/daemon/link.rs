//! The cluster link: the sans-IO transport (`cluster::transport::Transport`) on real UDP sockets,
//! one bound to each of this node's primary addresses. It reads datagrams into the transport,
//! writes the transport's datagrams out of the socket of the address it chose, and sets the
//! transport up from the `[cluster]` section (keys, peers' addresses, timers, a boot counter
//! that rises across restarts). The cluster shell drives it together with the ring.
use std::{
    collections::HashMap,
    net::{SocketAddr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context, Result};
use tokio::{net::UdpSocket, sync::mpsc, task::JoinSet};
use tracing::{debug, warn};

use crate::{
    cluster::{
        keys::Keyring,
        transport::{MessageId, Peer, SendError, Transport, TransportCounters, TransportEvent},
        types::NodeId,
    },
    config::Cluster,
};

/// Largest datagram read from a cluster socket.
const MAX_DATAGRAM: usize = 65_536;

/// Datagrams queued between the socket readers and the transport.
const QUEUE: usize = 1024;

/// Most datagrams handed to the transport per [`Link::take_in`]: each is authenticated (an
/// HMAC over up to a packet), so a burst (a new successor's connection copies: thousands of
/// datagrams) is taken in over several iterations of the shell's loop, never in one long one.
const PER_RECEIVE: usize = 128;

/// The kernel's receive buffer of each cluster socket: room for a burst of connection copies
/// while the shell takes them in a slice at a time, so the token's datagrams are not dropped
/// behind them.
const RECEIVE_BUFFER: usize = 8 << 20;

/// The kernel's default `unres_qlen_bytes`, for a host whose sysctl cannot be read.
const UNRESOLVED_QUEUE: usize = 212_992;

/// Send-buffer room for the datagrams to peers that are alive, beyond the queues of dead ones.
const SEND_HEADROOM: usize = 1 << 20;

/// A datagram read from one of our sockets.
pub struct Datagram {
    local: SocketAddr,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The transport on this node's sockets.
pub struct Link {
    transport: Transport,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    datagrams: mpsc::Receiver<Datagram>,
    readers: JoinSet<()>,
    /// Datagrams a socket refused (a full send buffer, no route): the transport resends them.
    send_failed: u64,
}

/// Every node's socket addresses (primary address and cluster port), by node id.
pub fn addresses(cluster: &Cluster) -> Vec<Vec<SocketAddr>> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            n.addresses
                .iter()
                .map(|a| SocketAddr::V4(SocketAddrV4::new(*a, cluster.port)))
                .collect()
        })
        .collect()
}

/// The transport's keys of `[cluster.keys]` and `active_key`.
fn keyring(cluster: &Cluster) -> Result<Keyring> {
    Keyring::new(
        cluster.active_key,
        cluster.keys.iter().map(|(id, k)| (*id, k.0)),
    )
    .map_err(|e| anyhow!("[cluster.keys]: {e}"))
}

impl Link {
    /// Builds the transport for this node and binds a socket on each of its primary addresses.
    pub async fn open(cluster: &Cluster) -> Result<Self> {
        let all = addresses(cluster);
        let mine = all[cluster.me].clone();
        let keys = keyring(cluster)?;
        let peers = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != cluster.me)
            .map(|(i, addrs)| Peer {
                id: NodeId(i as u8),
                addrs: addrs.clone(),
            })
            .collect();
        // Unix milliseconds rise across restarts, so peers never see our counters go back.
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let transport = Transport::new(
            NodeId(cluster.me as u8),
            mine.clone(),
            peers,
            keys,
            cluster.timers.transport(),
            boot,
        )
        .map_err(|e| anyhow!("[cluster.timers]: {e}"))?;
        let (tx, datagrams) = mpsc::channel(QUEUE);
        let mut sockets = HashMap::new();
        let mut readers = JoinSet::new();
        let send_buffer = send_buffer(all.len() - 1);
        for addr in mine {
            let socket = Arc::new(UdpSocket::bind(addr).await.with_context(|| {
                format!("binding the cluster socket {addr} (is it this node's primary address?)")
            })?);
            if let Err(e) = force_buffer(&socket, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER) {
                warn!(%addr, "enlarging the cluster socket's receive buffer: {e}");
            }
            if let Err(e) = force_buffer(&socket, libc::SO_SNDBUFFORCE, send_buffer) {
                warn!(%addr, "enlarging the cluster socket's send buffer: {e}");
            }
            sockets.insert(addr, socket.clone());
            readers.spawn(read(addr, socket, tx.clone()));
        }
        Ok(Self {
            transport,
            sockets,
            datagrams,
            readers,
            send_failed: 0,
        })
    }

    /// Waits for the next datagram. Cancel-safe, so it can race timers in a `select!`; the
    /// caller hands it to [`Link::take_in`] once it has started its clock.
    pub async fn arrival(&mut self) -> Datagram {
        match self.datagrams.recv().await {
            Some(first) => first,
            // Every reader ended: nothing will ever arrive.
            None => std::future::pending().await,
        }
    }

    /// Hands `first` and those queued behind it (up to [`PER_RECEIVE`] in all) to the
    /// transport.
    pub fn take_in(&mut self, now: Instant, first: Datagram) {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(d) = next {
            self.transport
                .handle_datagram(now, d.local, d.from, &d.bytes);
            taken += 1;
            next = (taken < PER_RECEIVE)
                .then(|| self.datagrams.try_recv().ok())
                .flatten();
        }
    }

    /// Seals and opens with `cluster`'s keys from now on.
    pub fn set_keys(&mut self, cluster: &Cluster) -> Result<()> {
        self.transport.set_keys(keyring(cluster)?);
        Ok(())
    }

    /// Queues `payload` for reliable delivery to `to`.
    pub fn send(
        &mut self,
        now: Instant,
        to: NodeId,
        payload: Vec<u8>,
    ) -> Result<MessageId, SendError> {
        self.transport.send(now, to, payload)
    }

    /// When the transport next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transport.poll_timeout()
    }

    /// Resends what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.transport.poll_timeout().is_some_and(|t| t <= now) {
            self.transport.handle_timeout(now);
        }
    }

    /// The next delivery, acknowledgement or loss for the ring.
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.transport.poll_event()
    }

    /// Writes every queued datagram out of the socket of the address the transport chose.
    /// Returns how many there were and how long the sends took.
    pub fn transmit(&mut self) -> Transmitted {
        let mut written = Transmitted::default();
        let started = Instant::now();
        while let Some(t) = self.transport.poll_transmit() {
            written.datagrams += 1;
            let Some(socket) = self.sockets.get(&t.from) else {
                warn!(from = %t.from, "transport chose an address without a socket");
                continue;
            };
            // A full buffer or an unreachable path is one lost datagram: the transport resends.
            if let Err(e) = socket.try_send_to(&t.bytes, t.to) {
                self.send_failed += 1;
                debug!(from = %t.from, to = %t.to, "cluster send: {e}");
            }
        }
        written.sending = started.elapsed();
        written
    }

    /// What the transport sent, acked and dropped (by reason).
    pub fn counters(&self) -> &TransportCounters {
        self.transport.counters()
    }

    /// Datagrams the sockets refused so far.
    pub fn send_failed(&self) -> u64 {
        self.send_failed
    }
}

/// What [`Link::transmit`] wrote: datagrams, and the time spent in the socket sends. On a
/// testbed of namespaces on one host, a send also runs the receiving namespaces' packet
/// processing (veth, bridge, XDP, UDP) on the sender's CPU, so that time is mostly not the
/// shell's work.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transmitted {
    /// Datagrams handed to the sockets.
    pub datagrams: usize,
    /// Time from the first send to the last one's return.
    pub sending: Duration,
}

impl std::ops::AddAssign for Transmitted {
    fn add_assign(&mut self, other: Self) {
        self.datagrams += other.datagrams;
        self.sending += other.sending;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.readers.abort_all();
    }
}

/// The send buffer of each cluster socket: the kernel queues datagrams for a neighbour it is
/// still resolving (a dead peer's address, whose ARP never answers) up to `unres_qlen_bytes`
/// per neighbour, and charges them to the sending socket until the resolution fails seconds
/// later. With the default buffer, a node's joins to one dead peer filled it in 1.7 s and every
/// send to the live peers failed until the kernel gave up (the flapping ring of issue 11); room
/// for every peer's queue in full, plus headroom, means a dead peer never silences the others.
/// Memory is used only while datagrams wait.
fn send_buffer(peers: usize) -> usize {
    let queue = std::fs::read_dir("/proc/sys/net/ipv4/neigh")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|dir| std::fs::read_to_string(dir.path().join("unres_qlen_bytes")).ok())
        .filter_map(|text| text.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(UNRESOLVED_QUEUE);
    peers.saturating_mul(queue).saturating_add(SEND_HEADROOM)
}

/// Sets a buffer of `socket` (`SO_RCVBUFFORCE` or `SO_SNDBUFFORCE`) to `bytes`, past the
/// `net.core` maxima (the daemon runs as root).
fn force_buffer(socket: &UdpSocket, option: libc::c_int, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt reads an int from a pointer to a live local of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads datagrams from `socket` into `tx` until the link is gone.
async fn read(local: SocketAddr, socket: Arc<UdpSocket>, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let d = Datagram {
                    local,
                    from,
                    bytes: buf[..n].to_vec(),
                };
                if tx.send(d).await.is_err() {
                    return;
                }
            }
            // ICMP errors from earlier sends surface here; the transport copes with the loss.
            Err(e) => debug!(%local, "cluster socket: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A two-node cluster on loopback addresses, seen from node `me`.
    fn cluster(me: &str, port: u16, key: &str) -> Cluster {
        let text = format!(
            "[node]\nname = \"{me}\"\nnat_ports = \"{}\"\nkey = \"/unread/{me}.key\"\n\
             [[interface]]\nname = \"lo\"\nrole = \"external\"\n\
             [cluster]\nport = {port}\n[cluster.keys]\n1 = \"{key}\"\n\
             [[cluster.node]]\nname = \"a\"\naddresses = [\"127.0.0.31\"]\nnat_ports = \"20000-20999\"\n\
             public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
             [[cluster.node]]\nname = \"b\"\naddresses = [\"127.0.0.32\"]\nnat_ports = \"21000-21999\"\n\
             public_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\n",
            if me == "a" { "20000-20999" } else { "21000-21999" }
        );
        crate::config::parse(Path::new("link.toml"), &text)
            .unwrap()
            .cluster
            .unwrap()
    }

    /// Pumps both links until `a` has an event, or fails after a second.
    async fn event(a: &mut Link, b: &mut Link) -> TransportEvent {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            for link in [&mut *a, &mut *b] {
                link.handle_timeout(Instant::now());
                link.transmit();
            }
            if let Some(e) = a.poll_event() {
                return e;
            }
            assert!(Instant::now() < deadline, "no event in time");
            tokio::select! {
                d = a.arrival() => a.take_in(Instant::now(), d),
                d = b.arrival() => b.take_in(Instant::now(), d),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }

    #[tokio::test]
    async fn messages_cross_real_sockets_and_a_wrong_key_is_dropped() {
        let key = "11".repeat(32);
        let port = 17_000 + (std::process::id() % 20_000) as u16;
        let mut a = Link::open(&cluster("a", port, &key)).await.unwrap();
        let mut b = Link::open(&cluster("b", port, &key)).await.unwrap();

        let big = vec![7u8; 5000]; // split over several datagrams
        let id = a.send(Instant::now(), NodeId(1), big.clone()).unwrap();
        match event(&mut b, &mut a).await {
            TransportEvent::Received { from, payload } => {
                assert_eq!((from, payload), (NodeId(0), big));
            }
            other => panic!("b got {other:?}"),
        }
        assert_eq!(
            event(&mut a, &mut b).await,
            TransportEvent::Delivered { to: NodeId(1), id }
        );

        // A node with another key: its datagrams are dropped and counted, never delivered.
        drop(b);
        // The aborted readers release b's socket once the runtime has dropped them.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut stranger = Link::open(&cluster("b", port, &"22".repeat(32)))
            .await
            .unwrap();
        let id = stranger.send(Instant::now(), NodeId(0), vec![1]).unwrap();
        assert_eq!(
            event(&mut stranger, &mut a).await,
            TransportEvent::Unreachable { to: NodeId(0), id }
        );
        assert!(a.counters().bad_auth > 0, "{:?}", a.counters());
        assert_eq!(a.counters().received, 0, "{:?}", a.counters());
    }
}
