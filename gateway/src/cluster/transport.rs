//! Reliable, authenticated, replay-protected messages between cluster nodes, without any IO.
//!
//! The daemon feeds datagrams in ([`Transport::handle_datagram`]), fires the timer
//! ([`Transport::handle_timeout`] at [`Transport::poll_timeout`]), sends what
//! [`Transport::poll_transmit`] hands out over UDP and passes [`Transport::poll_event`] to the
//! ring. The same code runs in the simulator over a virtual network.
//!
//! Delivery rules:
//! - A message is cut into fragments of at most `max_datagram - envelope::OVERHEAD` bytes; every
//!   fragment is a datagram (see `envelope`) that the receiver acks with an authenticated ack.
//! - Paths: a peer has one address per subnet, paired with ours by position. The first try goes
//!   out on the primary path (position 0) only; every resend goes out on every path, so a dead
//!   subnet costs one round-trip timeout and never a false "unreachable".
//! - The resend timeout starts at `initial_rto` and doubles per try up to `max_rto`; after
//!   `max_tries` tries without every fragment acked the message is reported
//!   [`TransportEvent::Unreachable`]. [`TransportConfig::give_up_after`] gives the total time.
//! - Message ids rise per (sender, receiver), starting from the boot counter like envelope
//!   counters do, so a receiver suppresses duplicates with a window over ids and each message is
//!   [`TransportEvent::Received`] exactly once, even across a sender's restart. At most
//!   `max_in_flight` messages per peer are unacked at once (further ones wait in order), which
//!   keeps every message that is still being resent inside the receiver's window.
//! - Reassembly buffers are bounded: per sender at most `max_reassemblies` incomplete messages
//!   of at most `max_fragments` fragments. A fragment of a further message is dropped unacked
//!   (the sender resends it later); evicting a buffer instead would lose fragments already acked.
//!   An incomplete message is dropped after `reassembly_timeout`, which is longer than the
//!   sender's give-up time, so its sender has already reported it Unreachable by then.
//! - Every dropped datagram is counted by reason in [`TransportCounters`].
//! - Trust comes from the key, not the source address: acks go back to the address and socket the
//!   data came from, and only datagrams that authenticate, name us as receiver and pass the
//!   sender's replay window are acted on (so a forgery or replay never even draws an ack).
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::envelope::{self, EnvelopeError, Header, Kind, OVERHEAD};
use super::keys::Keyring;
use super::replay::{first_counter, ReplayWindow, WINDOW};
use super::types::NodeId;

/// Identifies one message sent to one peer, so the sender can match Delivered / Unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

/// Timers and bounds of the transport; `Default` is tuned for a LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// First resend timeout: a LAN round trip is well under 1 ms; 3 ms leaves room for a host
    /// that is busy for a scheduler tick or two.
    pub initial_rto: Duration,
    /// Cap of the doubling resend timeout, so the last tries still come quickly.
    pub max_rto: Duration,
    /// Tries (first send included) before a message is reported unreachable.
    pub max_tries: u32,
    /// Largest datagram handed out, envelope included (1472 = 1500-byte MTU minus IP and UDP).
    pub max_datagram: usize,
    /// Largest message in fragments; a longer one is refused by `send`.
    pub max_fragments: u16,
    /// Unacked messages per peer; later sends wait. At most half the replay window.
    pub max_in_flight: usize,
    /// Incomplete incoming messages kept per sender.
    pub max_reassemblies: usize,
    /// How long an incomplete incoming message waits for its missing fragments; longer than
    /// [`TransportConfig::give_up_after`], so no sender still resends a dropped message.
    pub reassembly_timeout: Duration,
}

impl Default for TransportConfig {
    /// 3 + 8 x 6 ms: a dead peer is reported unreachable 51 ms after the send, which bounds
    /// VIP failover; nine tries, each resend on every path, keep a false report rare even with
    /// 20 % loss each way (a try fails with 0.36 on one path, with 0.13 on two; all nine with
    /// about 2e-8).
    fn default() -> Self {
        TransportConfig {
            initial_rto: Duration::from_millis(3),
            max_rto: Duration::from_millis(6),
            max_tries: 9,
            max_datagram: 1472,
            max_fragments: 64,
            max_in_flight: 256,
            max_reassemblies: 8,
            reassembly_timeout: Duration::from_millis(500),
        }
    }
}

impl TransportConfig {
    /// Time from a send to its Unreachable when nothing is ever acked.
    pub fn give_up_after(&self) -> Duration {
        let mut rto = self.initial_rto;
        let mut total = Duration::ZERO;
        for _ in 0..self.max_tries {
            total += rto;
            rto = (rto * 2).min(self.max_rto);
        }
        total
    }

    /// Checks the bounds the transport relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fragment_max = OVERHEAD + usize::from(u16::MAX);
        if self.max_datagram <= OVERHEAD || self.max_datagram > fragment_max {
            return Err(ConfigError::MaxDatagram(self.max_datagram));
        }
        if self.initial_rto.is_zero() || self.max_rto < self.initial_rto {
            return Err(ConfigError::Rto);
        }
        if self.max_tries == 0 {
            return Err(ConfigError::Zero("max_tries"));
        }
        if self.max_fragments == 0 {
            return Err(ConfigError::Zero("max_fragments"));
        }
        if self.max_reassemblies == 0 {
            return Err(ConfigError::Zero("max_reassemblies"));
        }
        if self.max_in_flight == 0 || self.max_in_flight as u64 > WINDOW / 2 {
            return Err(ConfigError::MaxInFlight(self.max_in_flight));
        }
        if self.reassembly_timeout <= self.give_up_after() {
            return Err(ConfigError::ReassemblyTimeout);
        }
        Ok(())
    }

    fn fragment_payload(&self) -> usize {
        self.max_datagram - OVERHEAD
    }
}

/// A transport setting out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `max_datagram` must leave room for a payload and fit the 16-bit length field.
    MaxDatagram(usize),
    /// `initial_rto` must be non-zero and not above `max_rto`.
    Rto,
    /// The named setting must be at least 1.
    Zero(&'static str),
    /// `max_in_flight` must be 1..=512 so resent messages stay inside the receiver's window.
    MaxInFlight(usize),
    /// `reassembly_timeout` must exceed the give-up time of senders.
    ReassemblyTimeout,
    /// The node needs at least one local address.
    NoLocalAddress,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MaxDatagram(n) => write!(
                f,
                "max_datagram {n} must be above {OVERHEAD} and at most {}",
                OVERHEAD + usize::from(u16::MAX)
            ),
            ConfigError::Rto => write!(f, "initial_rto must be non-zero and at most max_rto"),
            ConfigError::Zero(name) => write!(f, "{name} must be at least 1"),
            ConfigError::MaxInFlight(n) => {
                write!(f, "max_in_flight {n} must be between 1 and {}", WINDOW / 2)
            }
            ConfigError::ReassemblyTimeout => write!(
                f,
                "reassembly_timeout must be longer than the give-up time (tries times timeouts)"
            ),
            ConfigError::NoLocalAddress => write!(f, "no local cluster address"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a message cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The destination is not a configured peer.
    UnknownPeer(NodeId),
    /// The payload needs more than `max_fragments` fragments.
    TooLarge { len: usize, max: usize },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownPeer(id) => write!(f, "node {} is not a configured peer", id.0),
            SendError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Another node and its address on each subnet path, in the same order as ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The node.
    pub id: NodeId,
    /// Its address per path; position 0 is the primary path.
    pub addrs: Vec<SocketAddr>,
}

/// A datagram for the daemon to send from one of its sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Local address (socket) to send from.
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// The sealed envelope.
    pub bytes: Vec<u8>,
}

/// What the transport tells the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A whole message arrived; exactly once per message.
    Received { from: NodeId, payload: Vec<u8> },
    /// The peer acked every fragment of the message.
    Delivered { to: NodeId, id: MessageId },
    /// No full ack after `max_tries` on every path, or the peer was removed meanwhile.
    Unreachable { to: NodeId, id: MessageId },
}

/// What the transport did and what it dropped, by reason; for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCounters {
    /// Data datagrams sent for the first time.
    pub sent: u64,
    /// Data datagrams sent again after a timeout (one per path).
    pub resent: u64,
    /// Ack datagrams sent.
    pub acks_sent: u64,
    /// Fragments of our messages acked by their receiver (first ack only).
    pub acked: u64,
    /// Messages fully acked.
    pub delivered: u64,
    /// Messages given up on.
    pub unreachable: u64,
    /// Messages received and handed to the ring.
    pub received: u64,
    /// Dropped: not an envelope (size, magic, kind, reserved byte, length, fragment fields).
    pub malformed: u64,
    /// Dropped: an envelope version this node does not speak.
    pub bad_version: u64,
    /// Dropped: key id not in the keyring.
    pub unknown_key: u64,
    /// Dropped: tag mismatch (forged, corrupted or wrong key).
    pub bad_auth: u64,
    /// Dropped: authenticated, but the sender is not a configured peer.
    pub unknown_sender: u64,
    /// Dropped: authenticated, but meant for another node.
    pub wrong_receiver: u64,
    /// Dropped: counter seen before or older than the window. A replay, or a datagram the
    /// network duplicated (the copy carries the same counter; its original was handled).
    pub replayed: u64,
    /// Dropped: a message of more fragments than `max_fragments`.
    pub oversized: u64,
    /// Dropped: a fragment disagreeing with earlier ones of its message, or an ack with
    /// fragment fields that do not match the message it names.
    pub inconsistent: u64,
    /// Re-acked, not delivered again: a fragment of a message already received or held.
    pub duplicates: u64,
    /// Ignored: an ack for a fragment already acked or a message no longer in flight.
    pub stale_acks: u64,
    /// Incomplete incoming messages dropped after `reassembly_timeout`.
    pub reassembly_expired: u64,
    /// Dropped unacked: a fragment of a new message while `max_reassemblies` are incomplete.
    pub reassembly_full: u64,
}

/// The transport of one node.
pub struct Transport {
    me: NodeId,
    my_addrs: Vec<SocketAddr>,
    config: TransportConfig,
    sealer: Sealer,
    /// Every node ever configured; state of removed ones is kept so ids and windows keep rising.
    peers: BTreeMap<NodeId, PeerState>,
    /// Message id base for peers first seen later.
    first_message_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TransportEvent>,
    counters: TransportCounters,
}

/// Signs outgoing envelopes with the active key and a fresh counter each.
struct Sealer {
    me: NodeId,
    keys: Keyring,
    next_counter: u64,
}

impl Sealer {
    fn seal(
        &mut self,
        kind: Kind,
        to: NodeId,
        id: u64,
        frag: (u16, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let (key_id, key) = self.keys.active();
        let header = Header {
            kind,
            key_id,
            sender: self.me,
            receiver: to,
            counter: self.next_counter,
            message_id: id,
            fragment_index: frag.0,
            fragment_count: frag.1,
        };
        self.next_counter = self.next_counter.saturating_add(1);
        envelope::seal(&header, payload, key)
    }
}

struct PeerState {
    /// Addresses per path; empty once the peer is removed from the configuration.
    addrs: Vec<SocketAddr>,
    /// Envelope counters seen from this peer (anti-replay).
    counters: ReplayWindow,
    /// Message ids from this peer already handed to the ring (exactly once).
    delivered: ReplayWindow,
    reassembly: BTreeMap<u64, Reassembly>,
    next_message_id: u64,
    in_flight: BTreeMap<u64, Outgoing>,
    waiting: VecDeque<(u64, Vec<u8>)>,
}

impl PeerState {
    fn new(first_message_id: u64) -> Self {
        PeerState {
            addrs: Vec::new(),
            counters: ReplayWindow::default(),
            delivered: ReplayWindow::default(),
            reassembly: BTreeMap::new(),
            next_message_id: first_message_id,
            in_flight: BTreeMap::new(),
            waiting: VecDeque::new(),
        }
    }
}

/// A message of ours not yet fully acked.
struct Outgoing {
    fragments: Vec<Vec<u8>>,
    acked: Vec<bool>,
    unacked: usize,
    tries: u32,
    rto: Duration,
    deadline: Instant,
}

/// An incoming message missing some fragments.
struct Reassembly {
    fragments: Vec<Option<Vec<u8>>>,
    missing: usize,
    expires: Instant,
}

impl Transport {
    /// A transport for node `me`, reachable at `my_addrs` (one per path, primary first).
    ///
    /// `boot_counter` must rise across restarts of this node (the daemon passes the unix time in
    /// milliseconds); envelope counters and message ids start from it. An entry for `me` among
    /// `peers` is ignored.
    pub fn new(
        me: NodeId,
        my_addrs: Vec<SocketAddr>,
        peers: Vec<Peer>,
        keys: Keyring,
        config: TransportConfig,
        boot_counter: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if my_addrs.is_empty() {
            return Err(ConfigError::NoLocalAddress);
        }
        let first = first_counter(boot_counter);
        let mut transport = Transport {
            me,
            my_addrs,
            config,
            sealer: Sealer {
                me,
                keys,
                next_counter: first,
            },
            peers: BTreeMap::new(),
            first_message_id: first,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: TransportCounters::default(),
        };
        transport.set_peers(peers);
        Ok(transport)
    }

    /// Replaces the keys: envelopes are sealed with the new active key from now on, and only
    /// the new keys open what arrives (a key removed is refused at once: rotation, or a key
    /// that leaked, without a restart).
    pub fn set_keys(&mut self, keys: Keyring) {
        self.sealer.keys = keys;
    }

    /// Replaces the set of peers (membership or configuration change).
    ///
    /// Peers that stay keep their messages in flight (with their new addresses); messages to a
    /// removed peer are reported Unreachable at once and its incomplete messages are dropped.
    pub fn set_peers(&mut self, peers: Vec<Peer>) {
        let mut wanted: BTreeMap<NodeId, Vec<SocketAddr>> = peers
            .into_iter()
            .filter(|p| p.id != self.me)
            .map(|p| (p.id, p.addrs))
            .collect();
        for (&id, state) in self.peers.iter_mut() {
            if let Some(addrs) = wanted.remove(&id) {
                state.addrs = addrs;
                continue;
            }
            state.addrs.clear();
            state.reassembly.clear();
            let gone = std::mem::take(&mut state.in_flight).into_keys();
            let waiting = std::mem::take(&mut state.waiting)
                .into_iter()
                .map(|(m, _)| m);
            for m in gone.chain(waiting) {
                self.counters.unreachable += 1;
                self.events.push_back(TransportEvent::Unreachable {
                    to: id,
                    id: MessageId(m),
                });
            }
        }
        for (id, addrs) in wanted {
            let state = self
                .peers
                .entry(id)
                .or_insert_with(|| PeerState::new(self.first_message_id));
            state.addrs = addrs;
        }
    }

    /// Queues `payload` for reliable delivery to `to`; split into fragments if needed.
    pub fn send(
        &mut self,
        now: Instant,
        to: NodeId,
        payload: Vec<u8>,
    ) -> Result<MessageId, SendError> {
        let per_fragment = self.config.fragment_payload();
        let max = per_fragment * usize::from(self.config.max_fragments);
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let peer = match self.peers.get_mut(&to) {
            Some(p) if !p.addrs.is_empty() => p,
            _ => return Err(SendError::UnknownPeer(to)),
        };
        let id = peer.next_message_id;
        peer.next_message_id += 1;
        if peer.in_flight.len() < self.config.max_in_flight {
            self.start(now, to, id, payload);
        } else {
            peer.waiting.push_back((id, payload));
        }
        Ok(MessageId(id))
    }

    /// Handles one datagram that arrived on our address `local` from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let opened = match envelope::open(bytes, &self.sealer.keys) {
            Ok(opened) => opened,
            Err(err) => {
                self.count_bad(err);
                return;
            }
        };
        let header = opened.header;
        if header.receiver != self.me {
            self.counters.wrong_receiver += 1;
            return;
        }
        let Some(peer) = self
            .peers
            .get_mut(&header.sender)
            .filter(|p| !p.addrs.is_empty())
        else {
            self.counters.unknown_sender += 1;
            return;
        };
        if peer.counters.accept(header.counter).is_err() {
            self.counters.replayed += 1;
            return;
        }
        match header.kind {
            Kind::Data => self.on_data(now, local, from, &header, opened.payload),
            Kind::Ack => self.on_ack(now, &header),
        }
    }

    /// Resends what timed out, gives up on what ran out of tries, drops stale reassemblies.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(NodeId, u64)> = self
            .peers
            .iter()
            .flat_map(|(&peer, state)| {
                state
                    .in_flight
                    .iter()
                    .filter(|(_, out)| out.deadline <= now)
                    .map(move |(&id, _)| (peer, id))
            })
            .collect();
        for (peer, id) in due {
            self.resend_or_give_up(now, peer, id);
        }
        for state in self.peers.values_mut() {
            let before = state.reassembly.len();
            state.reassembly.retain(|_, r| r.expires > now);
            self.counters.reassembly_expired += (before - state.reassembly.len()) as u64;
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the ring, if any.
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    /// When [`Transport::handle_timeout`] must be called next, if anything is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|state| {
                let resends = state.in_flight.values().map(|o| o.deadline);
                let expiries = state.reassembly.values().map(|r| r.expires);
                resends.chain(expiries)
            })
            .min()
    }

    /// What was sent, delivered and dropped so far.
    pub fn counters(&self) -> &TransportCounters {
        &self.counters
    }

    fn count_bad(&mut self, err: EnvelopeError) {
        let counter = match err {
            EnvelopeError::UnsupportedVersion(_) => &mut self.counters.bad_version,
            EnvelopeError::UnknownKey(_) => &mut self.counters.unknown_key,
            EnvelopeError::BadAuth => &mut self.counters.bad_auth,
            EnvelopeError::TooShort { .. }
            | EnvelopeError::BadMagic
            | EnvelopeError::UnknownKind(_)
            | EnvelopeError::ReservedNotZero(_)
            | EnvelopeError::LengthMismatch { .. }
            | EnvelopeError::BadFragment { .. }
            | EnvelopeError::AckWithPayload => &mut self.counters.malformed,
        };
        *counter += 1;
    }

    /// Sends every fragment of a new message on the primary path and arms its timer.
    fn start(&mut self, now: Instant, to: NodeId, id: u64, payload: Vec<u8>) {
        let fragments: Vec<Vec<u8>> = if payload.is_empty() {
            vec![Vec::new()]
        } else {
            payload
                .chunks(self.config.fragment_payload())
                .map(<[u8]>::to_vec)
                .collect()
        };
        let count = fragments.len();
        let out = Outgoing {
            acked: vec![false; count],
            unacked: count,
            fragments,
            tries: 1,
            rto: self.config.initial_rto,
            deadline: now + self.config.initial_rto,
        };
        self.transmit_fragments(to, id, &out, 1);
        self.counters.sent += count as u64;
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.in_flight.insert(id, out);
        }
    }

    /// Seals the unacked fragments of `out` and queues them on the first `paths` paths.
    fn transmit_fragments(&mut self, to: NodeId, id: u64, out: &Outgoing, paths: usize) -> u64 {
        let Some(peer) = self.peers.get(&to) else {
            return 0;
        };
        let count = out.fragments.len() as u16;
        let mut queued = 0;
        for (local, remote) in self.my_addrs.iter().zip(&peer.addrs).take(paths) {
            for (index, fragment) in out.fragments.iter().enumerate() {
                if out.acked[index] {
                    continue;
                }
                let bytes = self
                    .sealer
                    .seal(Kind::Data, to, id, (index as u16, count), fragment);
                self.transmits.push_back(Transmit {
                    from: *local,
                    to: *remote,
                    bytes,
                });
                queued += 1;
            }
        }
        queued
    }

    fn resend_or_give_up(&mut self, now: Instant, to: NodeId, id: u64) {
        let Some(peer) = self.peers.get_mut(&to) else {
            return;
        };
        let Some(mut out) = peer.in_flight.remove(&id) else {
            return;
        };
        if out.tries >= self.config.max_tries {
            self.counters.unreachable += 1;
            self.events.push_back(TransportEvent::Unreachable {
                to,
                id: MessageId(id),
            });
            self.start_waiting(now, to);
            return;
        }
        out.tries += 1;
        out.rto = (out.rto * 2).min(self.config.max_rto);
        out.deadline = now + out.rto;
        self.counters.resent += self.transmit_fragments(to, id, &out, usize::MAX);
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.in_flight.insert(id, out);
        }
    }

    /// Starts queued messages to `to` while in-flight slots are free.
    fn start_waiting(&mut self, now: Instant, to: NodeId) {
        loop {
            let Some(peer) = self.peers.get_mut(&to) else {
                return;
            };
            if peer.in_flight.len() >= self.config.max_in_flight {
                return;
            }
            let Some((id, payload)) = peer.waiting.pop_front() else {
                return;
            };
            self.start(now, to, id, payload);
        }
    }

    fn on_data(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        header: &Header,
        payload: &[u8],
    ) {
        if header.fragment_count > self.config.max_fragments {
            self.counters.oversized += 1;
            return;
        }
        let Some(peer) = self.peers.get_mut(&header.sender) else {
            return;
        };
        let id = header.message_id;
        let index = usize::from(header.fragment_index);
        let count = usize::from(header.fragment_count);
        let mut complete = None;
        if peer.delivered.check(id).is_err() {
            // Received before (our ack was lost), or older than the id window: the in-flight
            // bound means such a message was received or given up long ago. Ack, never deliver.
            self.counters.duplicates += 1;
        } else if count == 1 {
            complete = Some(payload.to_vec());
        } else {
            if !peer.reassembly.contains_key(&id)
                && peer.reassembly.len() >= self.config.max_reassemblies
            {
                self.counters.reassembly_full += 1;
                return;
            }
            let entry = peer.reassembly.entry(id).or_insert_with(|| Reassembly {
                fragments: vec![None; count],
                missing: count,
                expires: now + self.config.reassembly_timeout,
            });
            if entry.fragments.len() != count {
                self.counters.inconsistent += 1;
                return;
            }
            match &mut entry.fragments[index] {
                Some(_) => self.counters.duplicates += 1,
                slot => {
                    *slot = Some(payload.to_vec());
                    entry.missing -= 1;
                }
            }
            if entry.missing == 0 {
                complete = peer
                    .reassembly
                    .remove(&id)
                    .map(|r| r.fragments.into_iter().flatten().flatten().collect());
            }
        }
        if let Some(message) = complete {
            // The id passed `check` above and nothing else touched the window since.
            let _ = peer.delivered.accept(id);
            self.counters.received += 1;
            self.events.push_back(TransportEvent::Received {
                from: header.sender,
                payload: message,
            });
        }
        let ack = self.sealer.seal(
            Kind::Ack,
            header.sender,
            id,
            (header.fragment_index, header.fragment_count),
            &[],
        );
        self.counters.acks_sent += 1;
        self.transmits.push_back(Transmit {
            from: local,
            to: from,
            bytes: ack,
        });
    }

    fn on_ack(&mut self, now: Instant, header: &Header) {
        let to = header.sender;
        let Some(out) = self
            .peers
            .get_mut(&to)
            .and_then(|p| p.in_flight.get_mut(&header.message_id))
        else {
            self.counters.stale_acks += 1;
            return;
        };
        let index = usize::from(header.fragment_index);
        if usize::from(header.fragment_count) != out.fragments.len() {
            self.counters.inconsistent += 1;
            return;
        }
        if out.acked[index] {
            self.counters.stale_acks += 1;
            return;
        }
        out.acked[index] = true;
        out.unacked -= 1;
        self.counters.acked += 1;
        if out.unacked > 0 {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.in_flight.remove(&header.message_id);
        }
        self.counters.delivered += 1;
        self.events.push_back(TransportEvent::Delivered {
            to,
            id: MessageId(header.message_id),
        });
        self.start_waiting(now, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const KEY: [u8; 32] = [0x5a; 32];

    fn keys() -> Keyring {
        Keyring::new(1, [(1, KEY)]).unwrap()
    }

    /// Node `node`'s address on subnet path `path`.
    fn addr(node: u8, path: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, path, 0, node + 1)), 7946)
    }

    fn addrs(node: u8, paths: u8) -> Vec<SocketAddr> {
        (0..paths).map(|p| addr(node, p)).collect()
    }

    fn is_ack(t: &Transmit) -> bool {
        t.bytes[5] == 2
    }

    /// What the virtual network does with one datagram.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Fate {
        Deliver,
        Drop,
        /// Delivered twice.
        Duplicate,
        /// Delivered after the rest of its batch (reordering).
        Late,
    }

    /// Nodes 0..n over an in-memory network with zero latency and a fake clock.
    struct Net {
        start: Instant,
        now: Instant,
        nodes: Vec<Transport>,
        paths: u8,
        /// Events per node with the time they appeared.
        events: Vec<Vec<(Duration, TransportEvent)>>,
        /// Every datagram handed out by any node, for replay attacks.
        wire: Vec<Transmit>,
    }

    impl Net {
        fn new(n: u8, paths: u8, config: TransportConfig) -> Self {
            let start = Instant::now();
            let nodes = (0..n)
                .map(|i| node(i, n, paths, config.clone(), 1_000))
                .collect();
            Net {
                start,
                now: start,
                nodes,
                paths,
                events: vec![Vec::new(); n as usize],
                wire: Vec::new(),
            }
        }

        fn send(&mut self, from: u8, to: u8, payload: Vec<u8>) -> MessageId {
            self.nodes[from as usize]
                .send(self.now, NodeId(to), payload)
                .unwrap()
        }

        fn deliver(&mut self, t: &Transmit) {
            let target =
                (0..self.nodes.len() as u8).find(|&i| (0..self.paths).any(|p| addr(i, p) == t.to));
            if let Some(i) = target {
                self.nodes[i as usize].handle_datagram(self.now, t.to, t.from, &t.bytes);
            }
        }

        fn collect_events(&mut self) {
            let at = self.now - self.start;
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while let Some(e) = node.poll_event() {
                    self.events[i].push((at, e));
                }
            }
        }

        /// Moves datagrams and fires timers until nothing is left or `limit` has passed.
        fn run(&mut self, limit: Duration, mut fate: impl FnMut(&Transmit) -> Fate) {
            let end = self.now + limit;
            loop {
                let mut batch = Vec::new();
                for node in &mut self.nodes {
                    while let Some(t) = node.poll_transmit() {
                        batch.push(t);
                    }
                }
                self.wire.extend(batch.iter().cloned());
                if !batch.is_empty() {
                    let mut late = Vec::new();
                    for t in batch {
                        match fate(&t) {
                            Fate::Deliver => self.deliver(&t),
                            Fate::Drop => {}
                            Fate::Duplicate => {
                                self.deliver(&t);
                                self.deliver(&t);
                            }
                            Fate::Late => late.push(t),
                        }
                    }
                    for t in late.iter().rev() {
                        self.deliver(t);
                    }
                    self.collect_events();
                    continue;
                }
                let next = self.nodes.iter().filter_map(Transport::poll_timeout).min();
                match next {
                    Some(at) if at <= end => {
                        self.now = self.now.max(at);
                        for node in &mut self.nodes {
                            node.handle_timeout(self.now);
                        }
                        self.collect_events();
                    }
                    _ => return,
                }
            }
        }

        fn received(&self, node: u8) -> Vec<(NodeId, Vec<u8>)> {
            self.events[node as usize]
                .iter()
                .filter_map(|(_, e)| match e {
                    TransportEvent::Received { from, payload } => Some((*from, payload.clone())),
                    _ => None,
                })
                .collect()
        }

        fn events_of(&self, node: u8) -> Vec<TransportEvent> {
            self.events[node as usize]
                .iter()
                .filter(|(_, e)| !matches!(e, TransportEvent::Received { .. }))
                .map(|(_, e)| e.clone())
                .collect()
        }

        fn counters(&self, node: u8) -> &TransportCounters {
            self.nodes[node as usize].counters()
        }
    }

    fn node(i: u8, n: u8, paths: u8, config: TransportConfig, boot: u64) -> Transport {
        let peers = (0..n)
            .map(|j| Peer {
                id: NodeId(j),
                addrs: addrs(j, paths),
            })
            .collect();
        Transport::new(NodeId(i), addrs(i, paths), peers, keys(), config, boot).unwrap()
    }

    /// xorshift64: a seeded, deterministic source of loss patterns and garbage.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    #[test]
    fn default_config_gives_up_within_60ms() {
        let config = TransportConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.give_up_after(), Duration::from_millis(51));
        assert_eq!(config.fragment_payload(), 1408);
    }

    #[test]
    fn bad_config_is_refused() {
        let bad = |f: fn(&mut TransportConfig)| {
            let mut c = TransportConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(
            bad(|c| c.max_datagram = OVERHEAD),
            ConfigError::MaxDatagram(OVERHEAD)
        );
        assert_eq!(bad(|c| c.max_tries = 0), ConfigError::Zero("max_tries"));
        assert_eq!(
            bad(|c| c.max_rto = Duration::from_millis(1)),
            ConfigError::Rto
        );
        assert_eq!(
            bad(|c| c.max_in_flight = 513),
            ConfigError::MaxInFlight(513)
        );
        let none = Transport::new(
            NodeId(0),
            vec![],
            vec![],
            keys(),
            TransportConfig::default(),
            1,
        );
        assert!(matches!(none, Err(ConfigError::NoLocalAddress)));
    }

    #[test]
    fn a_message_is_received_once_and_delivered() {
        let mut net = Net::new(2, 1, TransportConfig::default());
        let id = net.send(0, 1, b"token".to_vec());
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        assert_eq!(net.received(1), vec![(NodeId(0), b"token".to_vec())]);
        assert_eq!(
            net.events_of(0),
            vec![TransportEvent::Delivered { to: NodeId(1), id }]
        );
        let (a, b) = (net.counters(0), net.counters(1));
        assert_eq!((a.sent, a.resent, a.acked, a.delivered), (1, 0, 1, 1));
        assert_eq!((b.received, b.acks_sent), (1, 1));
        assert!(net.nodes[0].poll_timeout().is_none(), "no timer left");
    }

    #[test]
    fn empty_and_exactly_full_messages_are_one_fragment() {
        let mut net = Net::new(2, 1, TransportConfig::default());
        net.send(0, 1, Vec::new());
        net.send(0, 1, payload(1408));
        net.send(0, 1, payload(1409));
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        let got = net.received(1);
        assert_eq!(got.len(), 3);
        assert!(got[0].1.is_empty());
        assert_eq!(got[1].1, payload(1408));
        assert_eq!(got[2].1, payload(1409));
        assert_eq!(net.counters(0).sent, 1 + 1 + 2);
    }

    #[test]
    fn lost_data_and_acks_are_resent_and_received_once() {
        let mut net = Net::new(2, 1, TransportConfig::default());
        let id = net.send(0, 1, b"hop".to_vec());
        // Lose the first data datagram and the first two acks.
        let (mut data_lost, mut acks_lost) = (0, 0);
        net.run(Duration::from_secs(1), |t| {
            if is_ack(t) && acks_lost < 2 {
                acks_lost += 1;
                Fate::Drop
            } else if !is_ack(t) && data_lost < 1 {
                data_lost += 1;
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        assert_eq!(net.received(1).len(), 1);
        assert_eq!(
            net.events_of(0),
            vec![TransportEvent::Delivered { to: NodeId(1), id }]
        );
        assert_eq!(net.counters(0).resent, 3);
        assert_eq!(net.counters(1).duplicates, 2);
        assert_eq!(net.counters(1).acks_sent, 3);
    }

    #[test]
    fn multi_fragment_messages_survive_loss_reordering_and_duplication() {
        let mut net = Net::new(2, 2, TransportConfig::default());
        let big = payload(20_000); // 15 fragments
        let small = b"after".to_vec();
        net.send(0, 1, big.clone());
        net.send(0, 1, small.clone());
        let mut n = 0u32;
        net.run(Duration::from_secs(2), |_| {
            n += 1;
            match n % 5 {
                0 => Fate::Drop,
                1 => Fate::Duplicate,
                2 => Fate::Late,
                _ => Fate::Deliver,
            }
        });
        let mut got = net.received(1);
        got.sort_by_key(|(_, p)| p.len());
        assert_eq!(got, vec![(NodeId(0), small), (NodeId(0), big)]);
        assert_eq!(net.counters(0).delivered, 2);
        assert!(net.counters(1).duplicates > 0);
        assert!(
            net.counters(1).replayed > 0,
            "network copies carry the same counter"
        );
    }

    #[test]
    fn dead_peer_is_unreachable_after_the_give_up_time() {
        let config = TransportConfig::default();
        let mut net = Net::new(3, 2, config.clone());
        let id = net.send(0, 2, payload(3000));
        let ok = net.send(0, 1, b"alive".to_vec());
        net.run(Duration::from_secs(1), |t| {
            if (0..2).any(|p| t.to == addr(2, p)) {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        let unreachable: Vec<_> = net.events[0]
            .iter()
            .filter(|(_, e)| matches!(e, TransportEvent::Unreachable { .. }))
            .collect();
        assert_eq!(unreachable.len(), 1);
        assert_eq!(
            unreachable[0].1,
            TransportEvent::Unreachable { to: NodeId(2), id }
        );
        assert_eq!(unreachable[0].0, config.give_up_after());
        assert!(net.events_of(0).contains(&TransportEvent::Delivered {
            to: NodeId(1),
            id: ok
        }));
        let c = net.counters(0);
        assert_eq!(c.unreachable, 1);
        // 3 fragments: 3 first sends on one path, then 7 resends of 3 fragments on 2 paths.
        let resends = u64::from(config.max_tries - 1);
        assert_eq!((c.sent, c.resent), (3 + 1, resends * 3 * 2));
    }

    #[test]
    fn resends_take_every_path_when_the_primary_is_down() {
        let mut net = Net::new(2, 2, TransportConfig::default());
        let id = net.send(0, 1, b"via secondary".to_vec());
        net.run(Duration::from_secs(1), |t| {
            if t.to.ip() == addr(1, 0).ip() || t.to.ip() == addr(0, 0).ip() {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        assert_eq!(
            net.events[0],
            vec![(
                TransportConfig::default().initial_rto,
                TransportEvent::Delivered { to: NodeId(1), id }
            )]
        );
        assert_eq!(net.received(1).len(), 1);
    }

    #[test]
    fn acks_return_on_the_path_the_data_came_in() {
        let mut net = Net::new(2, 2, TransportConfig::default());
        net.send(0, 1, b"x".to_vec());
        let mut acks = Vec::new();
        net.run(Duration::from_secs(1), |t| {
            if is_ack(t) {
                acks.push((t.from, t.to));
            }
            Fate::Deliver
        });
        assert_eq!(acks, vec![(addr(1, 0), addr(0, 0))]);
    }

    #[test]
    fn forged_wrongly_keyed_and_misdirected_datagrams_are_dropped_and_counted() {
        let mut net = Net::new(3, 1, TransportConfig::default());
        let header = |key_id, sender, receiver| Header {
            kind: Kind::Data,
            key_id,
            sender: NodeId(sender),
            receiver: NodeId(receiver),
            counter: u64::MAX / 2,
            message_id: u64::MAX / 2,
            fragment_index: 0,
            fragment_count: 1,
        };
        let other_key = Keyring::new(1, [(1, [0x77; 32])]).unwrap();
        let right_key = keys();
        let cases = [
            // forged: right key id, wrong key
            envelope::seal(&header(1, 0, 1), b"evil", other_key.active().1),
            // wrongly keyed: unknown key id
            envelope::seal(&header(4, 0, 1), b"evil", right_key.active().1),
            // meant for node 2
            envelope::seal(&header(1, 0, 2), b"evil", right_key.active().1),
            // from a node that is not a peer
            envelope::seal(&header(1, 9, 1), b"evil", right_key.active().1),
            // garbage
            b"GWCL\x01garbage".to_vec(),
            // another version
            {
                let mut v = envelope::seal(&header(1, 0, 1), b"evil", right_key.active().1);
                v[4] = 2;
                v
            },
        ];
        let now = net.now;
        for bytes in &cases {
            net.nodes[1].handle_datagram(now, addr(1, 0), addr(0, 0), bytes);
        }
        let c = net.counters(1).clone();
        assert_eq!(
            (
                c.bad_auth,
                c.unknown_key,
                c.wrong_receiver,
                c.unknown_sender,
                c.malformed,
                c.bad_version
            ),
            (1, 1, 1, 1, 1, 1)
        );
        assert_eq!((c.received, c.acks_sent), (0, 0));
        assert!(net.nodes[1].poll_transmit().is_none());
        assert!(net.nodes[1].poll_event().is_none());
        // The forged counter did not move node 1's window: node 0's real traffic still passes.
        net.send(0, 1, b"real".to_vec());
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        assert_eq!(net.received(1), vec![(NodeId(0), b"real".to_vec())]);
    }

    #[test]
    fn replayed_datagrams_are_dropped_and_counted() {
        let mut net = Net::new(2, 1, TransportConfig::default());
        net.send(0, 1, b"once".to_vec());
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        let captured = net.wire.clone();
        assert_eq!(captured.len(), 2, "one data, one ack");
        for t in &captured {
            net.deliver(t);
        }
        net.collect_events();
        assert_eq!(net.received(1).len(), 1);
        assert_eq!(net.counters(1).replayed, 1);
        assert_eq!(net.counters(0).replayed, 1);
        assert_eq!(net.counters(1).acks_sent, 1, "a replay is not even acked");
    }

    #[test]
    fn a_restarted_sender_is_heard_and_its_old_datagrams_are_not() {
        let config = TransportConfig::default();
        let mut net = Net::new(2, 1, config.clone());
        net.send(0, 1, b"first life".to_vec());
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        let old = net.wire.clone();
        // Node 0 restarts 5 s later: a higher boot counter, fresh state.
        net.nodes[0] = node(0, 2, 1, config, 6_000);
        net.send(0, 1, b"second life".to_vec());
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        assert_eq!(
            net.received(1),
            vec![
                (NodeId(0), b"first life".to_vec()),
                (NodeId(0), b"second life".to_vec())
            ]
        );
        net.deliver(&old[0]);
        net.collect_events();
        assert_eq!(net.received(1).len(), 2);
        assert_eq!(net.counters(1).replayed, 1);
    }

    #[test]
    fn send_refuses_unknown_peers_and_oversized_messages() {
        let mut net = Net::new(2, 1, TransportConfig::default());
        let now = net.now;
        let t = &mut net.nodes[0];
        assert_eq!(
            t.send(now, NodeId(5), vec![1]),
            Err(SendError::UnknownPeer(NodeId(5)))
        );
        assert_eq!(
            t.send(now, NodeId(0), vec![1]),
            Err(SendError::UnknownPeer(NodeId(0)))
        );
        let max = 1408 * 64;
        assert_eq!(
            t.send(now, NodeId(1), payload(max + 1)),
            Err(SendError::TooLarge { len: max + 1, max })
        );
        assert!(t.send(now, NodeId(1), payload(max)).is_ok());
    }

    #[test]
    fn receiver_drops_messages_of_too_many_fragments() {
        let big = TransportConfig {
            max_fragments: 8,
            ..Default::default()
        };
        let small = TransportConfig {
            max_fragments: 4,
            ..Default::default()
        };
        let mut net = Net::new(2, 1, small);
        net.nodes[0] = node(0, 2, 1, big, 1_000);
        let id = net.send(0, 1, payload(1408 * 6));
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        assert_eq!(
            net.events_of(0),
            vec![TransportEvent::Unreachable { to: NodeId(1), id }]
        );
        // Every try of the 6 fragments is refused.
        assert_eq!(
            net.counters(1).oversized,
            6 * u64::from(TransportConfig::default().max_tries)
        );
        assert!(net.received(1).is_empty());
    }

    #[test]
    fn sends_beyond_the_in_flight_limit_wait_their_turn() {
        let config = TransportConfig {
            max_in_flight: 2,
            ..Default::default()
        };
        let mut net = Net::new(2, 1, config);
        for i in 0..5u8 {
            net.send(0, 1, vec![i]);
        }
        assert_eq!(net.counters(0).sent, 2);
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        let got: Vec<u8> = net.received(1).into_iter().map(|(_, p)| p[0]).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(net.counters(0).delivered, 5);
    }

    #[test]
    fn removing_a_peer_reports_its_messages_unreachable() {
        let config = TransportConfig {
            max_in_flight: 1,
            ..Default::default()
        };
        let mut net = Net::new(2, 1, config);
        let a = net.send(0, 1, b"a".to_vec());
        let b = net.send(0, 1, b"b".to_vec());
        net.nodes[0].set_peers(vec![]);
        // Datagrams already handed out may still arrive; this test wants them lost.
        while net.nodes[0].poll_transmit().is_some() {}
        net.collect_events();
        assert_eq!(
            net.events_of(0),
            vec![
                TransportEvent::Unreachable {
                    to: NodeId(1),
                    id: a
                },
                TransportEvent::Unreachable {
                    to: NodeId(1),
                    id: b
                }
            ]
        );
        assert!(net.nodes[0].poll_timeout().is_none());
        assert_eq!(
            net.nodes[0].send(net.now, NodeId(1), vec![]),
            Err(SendError::UnknownPeer(NodeId(1)))
        );
        // Back in the configuration: ids keep rising, so the peer does not see duplicates.
        net.nodes[0].set_peers(vec![Peer {
            id: NodeId(1),
            addrs: addrs(1, 1),
        }]);
        let c = net.send(0, 1, b"c".to_vec());
        assert!(c > b);
        net.wire.clear();
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        assert_eq!(net.received(1), vec![(NodeId(0), b"c".to_vec())]);
    }

    #[test]
    fn incomplete_messages_are_bounded_and_expire() {
        let config = TransportConfig {
            max_reassemblies: 2,
            ..Default::default()
        };
        let mut net = Net::new(2, 1, config.clone());
        for _ in 0..3 {
            net.send(0, 1, payload(3000));
        }
        // Deliver only fragment 0 of each message, then cut the link.
        net.run(Duration::from_millis(1), |t| {
            if !is_ack(t) && t.bytes[11] == 0 {
                Fate::Deliver
            } else {
                Fate::Drop
            }
        });
        assert_eq!(net.counters(1).reassembly_full, 1);
        assert_eq!(
            net.counters(1).acks_sent,
            2,
            "the refused fragment is not acked"
        );
        net.run(Duration::from_secs(2), |_| Fate::Drop);
        assert_eq!(net.counters(1).reassembly_expired, 2);
        assert_eq!(net.counters(0).unreachable, 3);
        assert!(net.received(1).is_empty());
        assert!(net.nodes[1].poll_timeout().is_none());
    }

    #[test]
    fn a_full_reassembly_table_delays_but_loses_nothing() {
        let config = TransportConfig {
            max_reassemblies: 1,
            ..Default::default()
        };
        let mut net = Net::new(2, 1, config);
        let messages: Vec<Vec<u8>> = (0..4).map(|i| payload(2000 + i)).collect();
        for m in &messages {
            net.send(0, 1, m.clone());
        }
        // The second fragment of every message is lost once, so all four start at once.
        let mut lost = std::collections::HashSet::new();
        net.run(Duration::from_secs(2), |t| {
            if !is_ack(t) && t.bytes[11] == 1 && lost.insert(t.bytes[24..32].to_vec()) {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        let got: Vec<Vec<u8>> = net.received(1).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got.len(), 4);
        for m in &messages {
            assert!(got.contains(m));
        }
        assert!(net.counters(1).reassembly_full > 0);
        assert_eq!(net.counters(0).delivered, 4);
    }

    #[test]
    fn three_nodes_exchange_concurrently_under_loss() {
        let mut net = Net::new(3, 2, TransportConfig::default());
        let mut expected = vec![Vec::new(); 3];
        for round in 0..20u8 {
            for from in 0..3u8 {
                let to = (from + 1 + round % 2) % 3;
                let msg = payload(100 + usize::from(round) * 150);
                net.send(from, to, msg.clone());
                expected[to as usize].push((NodeId(from), msg));
            }
        }
        let mut rng = Rng(0x1234_5678_9abc_def1);
        net.run(Duration::from_secs(5), |_| {
            if rng.next() % 100 < 15 {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        for node in 0..3u8 {
            let mut got = net.received(node);
            let mut want = expected[node as usize].clone();
            got.sort();
            want.sort();
            assert!(got == want, "node {node}: {} of {}", got.len(), want.len());
            assert_eq!(net.counters(node).unreachable, 0);
        }
    }

    #[test]
    fn random_datagrams_never_panic_nor_get_through() {
        let mut net = Net::new(2, 1, TransportConfig::default());
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut next = move || rng.next();
        let now = net.now;
        for _ in 0..3000 {
            let len = (next() % 120) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 && next() % 2 == 0 {
                bytes[..4].copy_from_slice(&envelope::MAGIC);
            }
            net.nodes[1].handle_datagram(now, addr(1, 0), addr(0, 0), &bytes);
        }
        assert!(net.nodes[1].poll_event().is_none());
        assert!(net.nodes[1].poll_transmit().is_none());
        let c = net.counters(1);
        assert_eq!(
            c.malformed + c.bad_version + c.unknown_key + c.bad_auth,
            3000
        );
    }

    /// Many seeded runs of three nodes over a network that loses, duplicates and reorders:
    /// every send ends in exactly one Delivered or Unreachable, a Delivered message was
    /// received exactly once, and no message is ever received twice or made up.
    #[test]
    fn seeded_lossy_runs_keep_the_delivery_contract() {
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut net = Net::new(3, 2, TransportConfig::default());
            let mut sent = BTreeMap::new();
            for n in 0..30u32 {
                let from = (rng.next() % 3) as u8;
                let to = (from + 1 + (rng.next() % 2) as u8) % 3;
                let mut msg = n.to_be_bytes().to_vec();
                msg.resize(4 + (rng.next() % 5000) as usize, from);
                let id = net.send(from, to, msg.clone());
                sent.insert((from, to, id), msg);
            }
            let (loss, dup, late) = (rng.next() % 25, rng.next() % 10, rng.next() % 20);
            net.run(Duration::from_secs(3), |_| {
                let roll = rng.next() % 100;
                if roll < loss {
                    Fate::Drop
                } else if roll < loss + dup {
                    Fate::Duplicate
                } else if roll < loss + dup + late {
                    Fate::Late
                } else {
                    Fate::Deliver
                }
            });
            let mut outcome = BTreeMap::new();
            for from in 0..3u8 {
                for event in net.events_of(from) {
                    let (to, id, delivered) = match event {
                        TransportEvent::Delivered { to, id } => (to, id, true),
                        TransportEvent::Unreachable { to, id } => (to, id, false),
                        TransportEvent::Received { .. } => unreachable!(),
                    };
                    let previous = outcome.insert((from, to.0, id), delivered);
                    assert!(previous.is_none(), "seed {seed}: two outcomes for {id:?}");
                }
            }
            assert_eq!(
                outcome.len(),
                sent.len(),
                "seed {seed}: a send without outcome"
            );
            for ((from, to, id), msg) in &sent {
                let times = net
                    .received(*to)
                    .iter()
                    .filter(|(f, p)| f.0 == *from && p == msg)
                    .count();
                assert!(times <= 1, "seed {seed}: {id:?} received {times} times");
                if outcome[&(*from, *to, *id)] {
                    assert_eq!(times, 1, "seed {seed}: {id:?} delivered but not received");
                }
            }
            for node in 0..3u8 {
                for (from, payload) in net.received(node) {
                    assert!(
                        sent.iter()
                            .any(|((f, t, _), m)| *f == from.0 && *t == node && *m == payload),
                        "seed {seed}: node {node} received a message nobody sent"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_rotate_without_a_flag_day() {
        let mut net = Net::new(2, 1, TransportConfig::default());
        let both = || Keyring::new(2, [(1, KEY), (2, [0x6b; 32])]).unwrap();
        let peers = |paths| {
            (0..2)
                .map(|j| Peer {
                    id: NodeId(j),
                    addrs: addrs(j, paths),
                })
                .collect::<Vec<_>>()
        };
        let config = TransportConfig::default();
        // Node 0 already signs with the new key 2; node 1 still only knows key 1.
        net.nodes[0] =
            Transport::new(NodeId(0), addrs(0, 1), peers(1), both(), config, 2_000).unwrap();
        net.send(0, 1, b"too early".to_vec());
        net.run(Duration::from_millis(1), |_| Fate::Deliver);
        assert_eq!(net.counters(1).unknown_key, 1);
        // Node 1 learns key 2 while it runs (still signing with key 1): both directions work.
        let old_active = Keyring::new(1, [(1, KEY), (2, [0x6b; 32])]).unwrap();
        net.nodes[1].set_keys(old_active);
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        net.send(1, 0, b"old key".to_vec());
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        assert_eq!(net.received(1), vec![(NodeId(0), b"too early".to_vec())]);
        assert_eq!(net.received(0), vec![(NodeId(1), b"old key".to_vec())]);
        // Node 0 drops key 1: what node 1 still seals with it opens nothing there.
        net.nodes[0].set_keys(Keyring::new(2, [(2, [0x6b; 32])]).unwrap());
        let unknown = net.counters(0).unknown_key;
        net.send(1, 0, b"removed key".to_vec());
        net.run(Duration::from_millis(1), |_| Fate::Deliver);
        assert_eq!(net.counters(0).unknown_key, unknown + 1);
    }

    #[test]
    fn resends_follow_a_peers_new_address() {
        let mut net = Net::new(3, 1, TransportConfig::default());
        // Node 0 believes node 1 lives at node 2's address; the first try goes astray.
        net.nodes[0].set_peers(vec![Peer {
            id: NodeId(1),
            addrs: addrs(2, 1),
        }]);
        let id = net.send(0, 1, b"find me".to_vec());
        net.run(Duration::from_millis(1), |_| Fate::Deliver);
        assert_eq!(net.counters(2).wrong_receiver, 1);
        net.nodes[0].set_peers(vec![Peer {
            id: NodeId(1),
            addrs: addrs(1, 1),
        }]);
        net.run(Duration::from_secs(1), |_| Fate::Deliver);
        assert_eq!(net.received(1), vec![(NodeId(0), b"find me".to_vec())]);
        assert_eq!(
            net.events_of(0),
            vec![TransportEvent::Delivered { to: NodeId(1), id }]
        );
    }
}
