//! The ring's messages and their byte encoding: the payload the transport carries
//! (`transport.rs` adds authentication, replay protection, acks and fragmentation).
//!
//! Every message starts with a 4-byte preamble, then the fixed body of its kind, then its
//! carriages. All integers are big-endian; node ids are one byte; "none" is `0xff`.
//!
//! ```text
//! preamble   0  u8   version (1)
//!            1  u8   kind: 1 token, 2 probe (911), 3 join, 4 connection copies,
//!                    5 configuration fetch, 6 configuration document
//!            2  u16  number of carriages that follow the body (0 but for tokens)
//! token      4  u64  sequence (64-bit, random start, never wraps)
//!           12  u64  ring epoch (changes when a ring is formed or regenerated)
//!           20  u32  version of the configuration the ring runs
//!           24  u8   sender (the node passing the token)
//!           25  u8   destination
//!           26  u8   member count m (1..=64)
//!           27  m x u8  members in ring order
//! probe      4  u8   origin
//!            5  u8   permission flag (0 or 1)
//!            6  u64  the origin's last sent token sequence
//! join       4  u8   sender
//!            5  u8   size of the sender's current ring (0 when it is in none)
//!            6  u8   lowest node id of that ring (0xff when none)
//!            7  u32  sender's config version
//! copies     4  u8   sender
//!            5  u8   flags: bit 0 set on the first message of a new stream (the receiver
//!                    forgets every copy of the sender's it held); bit 1 set on the last
//!                    message of a comparison (with it the receiver holds the sender's whole
//!                    table as it was)
//!            6  u32  stream number (rises with every new stream; older ones are ignored)
//!           10  u16  n, copies that follow
//!           12  u16  g, connections gone that follow
//!           14  n x 26  copy: u32 client address, u16 client port, u32 VIP, u16 VIP port,
//!                    u8 protocol, u8 TCP state (0 open, 1 FIN, 2 RST), u32 back-end address,
//!                    u16 back-end port, u16 NAT port, u16 back-end index, u8 service index,
//!                    u8 home (the node that translates it, 0xff: the sender; then the
//!                    back-end fields are 0)
//!              g x 13  gone: u32 client address, u16 client port, u32 VIP, u16 VIP port,
//!                    u8 protocol
//! fetch      4  u8   sender
//!            5  u32  configuration version wanted
//!            9  32   its SHA-256 digest
//! document   4  u8   sender (the signer)
//!            5  u32  configuration version
//!            9  32   SHA-256 digest of the text
//!           41  64   Ed25519 signature of the sender over "gateway config v1", 0, the
//!                    version and the digest
//!          105  u32  text length n
//!          109  n    the configuration's cluster-wide part, canonical TOML (UTF-8)
//! carriage   0  u8   kind
//!            1  u8   reserved (0)
//!            2  u16  body length n
//!            4  n    body
//! ```
//!
//! Carriage bodies (repeated records; a reader skips kinds it does not know, so versions can
//! coexist on one ring):
//!
//! ```text
//! 1 VIP table     per VIP: u32 address, u8 owner, u8 preferred, u8 persistence (0/1/3), u8 0
//! 2 loads         per node: u8 node, u8 0, u16 CPU per mille, u32 packets/s, u64 bytes/s
//! 3 closed nodes  per node: u8 node
//! 4 admin asks    per ask: u64 id, u8 origin, u8 op, u32 VIP, u8 node, u8 persistence
//!                 (op: 1 move VIP to node, 2 prefer node for VIP, 3 pin VIP with persistence,
//!                  4 close node (persistence 1: even the last open one), 5 open node; unused
//!                  fields 0)
//! 5 admin done    per answer: u64 id, u8 origin, u8 result (0 done, 1 unknown VIP,
//!                 2 node not a member, 3 node closed, 4 VIP there already, 5 the last open
//!                 node)
//! 6 NAT blocks    per block not with its own node: u8 block's node, u8 holder, u8 returned
//!                 (0: the node is gone and the holder serves its block; 1: the node is back
//!                 and the holder serves only what it took over), u8 leftovers (0: none; 1 +
//!                 the node that held the block before this holder and still serves what it
//!                 took over then)
//! 7 VIP loads     per VIP: u32 address, u32 packets/s its owner translated for it (last
//!                 measured by the owner)
//! 8 configuration 32 bytes: SHA-256 digest of the configuration the ring runs; then, while
//!                 a new one is offered, 37 more: u32 version, 32 digest, u8 offering node
//! 9 member configs per member: u8 node, u8 0, then three (u32 version, u64 first 8 bytes
//!                 of the digest), version 0 for none: the configuration it runs, the one it
//!                 staged, the one it rejected
//! 10 placed VIPs  per VIP: u32 address (an operator moved it there: the count balance
//!                 neither moves nor counts it)
//! 11 unready      per node: u8 node (a member whose tables are not whole yet: it joined
//!                 and holds no full copy of its predecessor's connections; it is given no
//!                 VIP while an open member that is whole can take it)
//! ```
//!
//! Decoding checks every length before reading and never panics (see the seeded random-input
//! test); a bad message is an error the caller counts and drops.
use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
};

use super::types::{NodeId, Persistence, VipEntry, MAX_NODES};

/// The encoding's version.
pub const VERSION: u8 = 1;
const NONE: u8 = 0xff;
const KIND_TOKEN: u8 = 1;
const KIND_PROBE: u8 = 2;
const KIND_JOIN: u8 = 3;
const CARRIAGE_VIPS: u8 = 1;
const CARRIAGE_LOADS: u8 = 2;
const CARRIAGE_CLOSED: u8 = 3;
const CARRIAGE_ASKS: u8 = 4;
const CARRIAGE_DONE: u8 = 5;
const CARRIAGE_BLOCKS: u8 = 6;
const CARRIAGE_VIP_LOADS: u8 = 7;
const CARRIAGE_CONFIG: u8 = 8;
const CARRIAGE_MEMBER_CONFIGS: u8 = 9;
const CARRIAGE_PLACED: u8 = 10;
const CARRIAGE_UNREADY: u8 = 11;
const KIND_COPIES: u8 = 4;
const KIND_CONFIG_FETCH: u8 = 5;
const KIND_CONFIG_DOC: u8 = 6;
const CONFIG_TAG_LEN: usize = 12;
const MEMBER_CONFIG_LEN: usize = 2 + 3 * CONFIG_TAG_LEN;
const COPY_LEN: usize = 26;
const GONE_LEN: usize = 13;

/// A ring message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The token and its train.
    Token(Box<Token>),
    /// A 911: the token-loss probe.
    Probe(Probe),
    /// A non-member asks to join.
    Join(Join),
    /// Copies of the sender's connections for its successor in the ring, which takes them
    /// over should the sender die (not a ring message: the daemon keeps them).
    Copies(Copies),
    /// A request for a configuration document (not a ring message: the daemon answers).
    ConfigFetch(ConfigFetch),
    /// A signed configuration document, the answer to a fetch.
    ConfigDoc(ConfigDoc),
}

/// A configuration as the ring names it: its version and the SHA-256 digest of its text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigId {
    /// Rises with every change the cluster applies.
    pub version: u32,
    /// SHA-256 of the canonical text: two documents of one version may differ.
    pub digest: [u8; 32],
}

impl ConfigId {
    /// The short form members report on the token.
    pub fn tag(&self) -> ConfigTag {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.digest[..8]);
        ConfigTag {
            version: self.version,
            digest_start: u64::from_be_bytes(first),
        }
    }
}

/// A configuration's version and the first 8 bytes of its digest: enough to tell one
/// member's report from another's; version 0 means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigTag {
    /// The version (0: none).
    pub version: u32,
    /// The digest's first 8 bytes, big-endian.
    pub digest_start: u64,
}

/// A new configuration offered to the ring, waiting for every member to stage it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigOffer {
    /// Which configuration.
    pub config: ConfigId,
    /// The member that offered it (and serves it).
    pub from: NodeId,
}

/// Where one member stands with the configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberConfig {
    /// The member.
    pub node: NodeId,
    /// The configuration it runs.
    pub active: ConfigTag,
    /// The one it fetched, verified and keeps ready to switch to.
    pub staged: ConfigTag,
    /// The latest one it refused (bad signature or digest, or not a valid configuration).
    pub rejected: ConfigTag,
}

/// The configuration's part of the token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigState {
    /// Digest of the configuration the ring runs (its version is the token's
    /// `config_version`).
    pub active_digest: [u8; 32],
    /// A new configuration on its way in.
    pub offer: Option<ConfigOffer>,
    /// Each member's report, written by the member itself.
    pub members: Vec<MemberConfig>,
}

/// A request for the document of one configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigFetch {
    /// The node asking (the answer goes there).
    pub from: NodeId,
    /// Which configuration.
    pub config: ConfigId,
}

/// A configuration's cluster-wide text, signed by the node that sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDoc {
    /// The signer.
    pub from: NodeId,
    /// Which configuration (the digest is the text's).
    pub config: ConfigId,
    /// The sender's Ed25519 signature of [`ConfigDoc::signed_bytes`].
    pub signature: [u8; 64],
    /// The canonical TOML text.
    pub text: Vec<u8>,
}

impl ConfigDoc {
    /// What the signature covers: a context string, the version and the digest (the digest
    /// covers the text).
    pub fn signed_bytes(config: &ConfigId) -> Vec<u8> {
        let mut out = b"gateway config v1\0".to_vec();
        out.extend_from_slice(&config.version.to_be_bytes());
        out.extend_from_slice(&config.digest);
        out
    }
}

/// The token: the ring's state, passed from member to member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Token {
    /// Rises by one at every pass; a lower one than a node has seen is stale.
    pub seq: u64,
    /// Which formation of the ring this token belongs to.
    pub epoch: u64,
    /// The configuration version the ring runs.
    pub config_version: u32,
    /// The member passing it.
    pub from: NodeId,
    /// The member it is passed to.
    pub to: NodeId,
    /// Members in ring order.
    pub members: Vec<NodeId>,
    /// Who owns which VIP.
    pub vips: Vec<VipEntry>,
    /// Each member's latest load.
    pub loads: Vec<Load>,
    /// Nodes an operator closed: members that own nothing.
    pub closed: Vec<NodeId>,
    /// Members whose tables are not whole yet (they joined, and hold no full copy of their
    /// predecessor's connections): given a VIP only when no whole open member can take it.
    pub unready: Vec<NodeId>,
    /// Operator commands waiting to be carried out.
    pub asks: Vec<AdminAsk>,
    /// Commands carried out (or refused), travelling back to the node that asked.
    pub done: Vec<AdminDone>,
    /// NAT port blocks served by another node than their own (a dead node's, taken over).
    pub blocks: Vec<BlockHolder>,
    /// Each owned VIP's traffic as its owner measured it: which VIP to move for load.
    pub vip_loads: Vec<VipLoad>,
    /// The configuration the ring runs, a new one offered, and each member's standing (boxed:
    /// it would make every message as large as the token).
    pub config: Box<ConfigState>,
}

impl Token {
    /// The configuration the ring runs.
    pub fn active_config(&self) -> ConfigId {
        ConfigId {
            version: self.config_version,
            digest: self.config.active_digest,
        }
    }
}

/// One VIP's traffic, measured by its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipLoad {
    /// The VIP.
    pub address: Ipv4Addr,
    /// Packets per second the owner translated for the VIP's services (both directions).
    pub packets_per_s: u32,
}

/// A NAT port block (and the connections translated with it) served by another node than the
/// one it is configured for (docs/architecture.md, "Node death and NAT block take-over").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHolder {
    /// The node whose block it is.
    pub block: NodeId,
    /// The node serving its connections: the dead node's successor, which held copies.
    pub holder: NodeId,
    /// The block's node is back and translates with its block again; the holder keeps
    /// serving the connections it took over until they end.
    pub returned: bool,
    /// The node that held the block before this holder (while its node was away before)
    /// and still serves the connections it took over then: a reply of the block that the
    /// holder does not know goes there.
    pub leftovers: Option<NodeId>,
}

impl BlockHolder {
    /// Whether `before` (the list as a node followed it last) does not name this block at
    /// all: news of a take-over, even when the block's node is back already. A new holder of
    /// a block whose node is back is no news: the holder before it died, and what it served
    /// follows its own block's entry (re-pointing what went to the block's node sent the
    /// connections that node opened since its return to a holder that has none of them).
    pub fn is_news(&self, before: &[BlockHolder]) -> bool {
        // (`leftovers` is no news either: it changes nothing this holder took over.)
        !before.iter().any(|b| b.block == self.block)
    }
}

/// A batch of connection copies from one node to its successor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copies {
    /// The node whose connections these are.
    pub from: NodeId,
    /// The first batch of a new stream: forget the sender's earlier copies.
    pub reset: bool,
    /// The last batch of a comparison: with it the receiver holds the sender's whole table
    /// as it was then.
    pub complete: bool,
    /// Which stream (a new one each time the sender's successor changes).
    pub stream: u32,
    /// Connections opened (or changed) since the last batch.
    pub copies: Vec<ConnCopy>,
    /// Connections ended since the last batch.
    pub gone: Vec<ConnId>,
}

/// A connection as its client sees it: the key of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    /// The client's address and port.
    pub client: SocketAddrV4,
    /// The VIP and service port.
    pub vip: SocketAddrV4,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
}

/// A copy of one connection: everything another node needs to translate it as its home did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCopy {
    /// Which connection.
    pub id: ConnId,
    /// TCP progress of the client's direction (0 open, 1 FIN, 2 RST).
    pub state: u8,
    /// The back-end's address and port.
    pub backend: SocketAddrV4,
    /// The client's port as the back-end sees it.
    pub nat_port: u16,
    /// The back-end's index in the data path's tables (the same on every node of one config).
    pub backend_index: u16,
    /// The service's index.
    pub service_index: u8,
    /// The node that translates it when that is not the sender (a forwarding entry: the
    /// sender hands its packets there).
    pub home: Option<NodeId>,
}

/// A 911.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The node that lost the token and sent the probe.
    pub origin: NodeId,
    /// True until a node that sent a newer token than `seq` sees it; false stays false.
    pub permit: bool,
    /// The sequence of the last token the origin sent.
    pub seq: u64,
}

/// A request to join, with what the sender knows of its own ring (so the better ring absorbs
/// the other one, never both at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Join {
    /// The node asking.
    pub from: NodeId,
    /// Members of the ring the sender is in (0: none).
    pub ring_size: u8,
    /// The lowest node id of that ring.
    pub ring_low: Option<NodeId>,
    /// The sender's configuration version.
    pub config_version: u32,
}

/// A member's load as it reported it on the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// The member.
    pub node: NodeId,
    /// CPU busy, per mille.
    pub cpu_permille: u16,
    /// Packets per second through its data path.
    pub packets_per_s: u32,
    /// Bytes per second through its data path.
    pub bytes_per_s: u64,
}

/// An operator command, as it travels on the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminAsk {
    /// Chosen by the origin; answers name it.
    pub id: u64,
    /// The node whose CLI asked.
    pub origin: NodeId,
    /// What to do.
    pub op: AdminOp,
}

/// What an operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Give the VIP to the node now.
    Move(Ipv4Addr, NodeId),
    /// Make the node the VIP's preferred owner.
    Prefer(Ipv4Addr, NodeId),
    /// Set the VIP's persistence.
    Pin(Ipv4Addr, Persistence),
    /// The node gives away its VIPs and takes none; `true` also when it is the last open
    /// member (the cluster then serves no VIP).
    Close(NodeId, bool),
    /// The node may own VIPs again.
    Open(NodeId),
}

/// The outcome of an operator command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminDone {
    /// The command's id.
    pub id: u64,
    /// The node whose CLI waits for it.
    pub origin: NodeId,
    /// What happened.
    pub result: AdminResult,
}

/// Why a command was carried out or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminResult {
    /// Carried out.
    Done,
    /// No such VIP in the cluster.
    UnknownVip,
    /// The node is not a live member.
    NotMember,
    /// The node is closed and may own nothing.
    Closed,
    /// The VIP is on that node already: nothing moved.
    AlreadyThere,
    /// The node is the last open member: closing it would leave every VIP without an owner.
    LastOpen,
}

impl AdminResult {
    fn code(self) -> u8 {
        match self {
            Self::Done => 0,
            Self::UnknownVip => 1,
            Self::NotMember => 2,
            Self::Closed => 3,
            Self::AlreadyThere => 4,
            Self::LastOpen => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Done,
            1 => Self::UnknownVip,
            2 => Self::NotMember,
            3 => Self::Closed,
            4 => Self::AlreadyThere,
            5 => Self::LastOpen,
            _ => return None,
        })
    }
}

/// Why bytes are not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its fields say.
    Truncated,
    /// A version this node does not speak.
    Version(u8),
    /// An unknown message kind.
    Kind(u8),
    /// A field out of its range (named).
    Invalid(&'static str),
    /// Bytes left after the last carriage.
    Trailing,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "message truncated"),
            Self::Version(v) => write!(f, "unknown message version {v}"),
            Self::Kind(k) => write!(f, "unknown message kind {k}"),
            Self::Invalid(what) => write!(f, "invalid {what}"),
            Self::Trailing => write!(f, "bytes after the last carriage"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Bounds-checked big-endian reads.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn node(&mut self) -> Result<NodeId, DecodeError> {
        let n = self.u8()?;
        if (n as usize) < MAX_NODES {
            Ok(NodeId(n))
        } else {
            Err(DecodeError::Invalid("node id"))
        }
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    fn maybe_node(&mut self) -> Result<Option<NodeId>, DecodeError> {
        match self.u8()? {
            NONE => Ok(None),
            n if (n as usize) < MAX_NODES => Ok(Some(NodeId(n))),
            _ => Err(DecodeError::Invalid("node id")),
        }
    }

    fn addr(&mut self) -> Result<Ipv4Addr, DecodeError> {
        Ok(Ipv4Addr::from(self.array::<4>()?))
    }

    fn persistence(&mut self) -> Result<Persistence, DecodeError> {
        Persistence::from_number(self.u8()?).ok_or(DecodeError::Invalid("persistence"))
    }

    /// Reads fixed-size records until the slice ends.
    fn records<T>(
        mut self,
        size: usize,
        mut one: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        if !self.bytes.len().is_multiple_of(size) {
            return Err(DecodeError::Invalid("carriage length"));
        }
        let mut out = Vec::with_capacity(self.bytes.len() / size);
        while !self.bytes.is_empty() {
            out.push(one(&mut self)?);
        }
        Ok(out)
    }
}

fn maybe_node(node: Option<NodeId>) -> u8 {
    node.map_or(NONE, |n| n.0)
}

fn carriage(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

impl Message {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, 0, 0, 0];
        match self {
            Message::Token(t) => {
                out[1] = KIND_TOKEN;
                out[2..4].copy_from_slice(&11u16.to_be_bytes());
                out.extend_from_slice(&t.seq.to_be_bytes());
                out.extend_from_slice(&t.epoch.to_be_bytes());
                out.extend_from_slice(&t.config_version.to_be_bytes());
                out.extend_from_slice(&[t.from.0, t.to.0, t.members.len() as u8]);
                out.extend(t.members.iter().map(|m| m.0));
                let mut body = Vec::new();
                for v in &t.vips {
                    body.extend_from_slice(&v.address.octets());
                    body.extend_from_slice(&[
                        maybe_node(v.owner),
                        maybe_node(v.preferred),
                        v.persistence.number(),
                        maybe_node(v.previous),
                    ]);
                }
                carriage(&mut out, CARRIAGE_VIPS, &body);
                body.clear();
                for l in &t.loads {
                    body.extend_from_slice(&[l.node.0, 0]);
                    body.extend_from_slice(&l.cpu_permille.to_be_bytes());
                    body.extend_from_slice(&l.packets_per_s.to_be_bytes());
                    body.extend_from_slice(&l.bytes_per_s.to_be_bytes());
                }
                carriage(&mut out, CARRIAGE_LOADS, &body);
                body.clear();
                body.extend(t.closed.iter().map(|n| n.0));
                carriage(&mut out, CARRIAGE_CLOSED, &body);
                body.clear();
                for a in &t.asks {
                    let (op, vip, node, persistence) = match a.op {
                        AdminOp::Move(vip, node) => (1, vip, node.0, 0),
                        AdminOp::Prefer(vip, node) => (2, vip, node.0, 0),
                        AdminOp::Pin(vip, p) => (3, vip, 0, p.number()),
                        AdminOp::Close(node, force) => {
                            (4, Ipv4Addr::UNSPECIFIED, node.0, u8::from(force))
                        }
                        AdminOp::Open(node) => (5, Ipv4Addr::UNSPECIFIED, node.0, 0),
                    };
                    body.extend_from_slice(&a.id.to_be_bytes());
                    body.extend_from_slice(&[a.origin.0, op]);
                    body.extend_from_slice(&vip.octets());
                    body.extend_from_slice(&[node, persistence]);
                }
                carriage(&mut out, CARRIAGE_ASKS, &body);
                body.clear();
                for d in &t.done {
                    body.extend_from_slice(&d.id.to_be_bytes());
                    body.extend_from_slice(&[d.origin.0, d.result.code()]);
                }
                carriage(&mut out, CARRIAGE_DONE, &body);
                body.clear();
                for b in &t.blocks {
                    let leftovers = b.leftovers.map_or(0, |n| n.0 + 1);
                    body.extend_from_slice(&[
                        b.block.0,
                        b.holder.0,
                        u8::from(b.returned),
                        leftovers,
                    ]);
                }
                carriage(&mut out, CARRIAGE_BLOCKS, &body);
                body.clear();
                for v in &t.vip_loads {
                    body.extend_from_slice(&v.address.octets());
                    body.extend_from_slice(&v.packets_per_s.to_be_bytes());
                }
                carriage(&mut out, CARRIAGE_VIP_LOADS, &body);
                body.clear();
                body.extend_from_slice(&t.config.active_digest);
                if let Some(o) = &t.config.offer {
                    body.extend_from_slice(&o.config.version.to_be_bytes());
                    body.extend_from_slice(&o.config.digest);
                    body.push(o.from.0);
                }
                carriage(&mut out, CARRIAGE_CONFIG, &body);
                body.clear();
                for m in &t.config.members {
                    body.extend_from_slice(&[m.node.0, 0]);
                    for tag in [m.active, m.staged, m.rejected] {
                        body.extend_from_slice(&tag.version.to_be_bytes());
                        body.extend_from_slice(&tag.digest_start.to_be_bytes());
                    }
                }
                carriage(&mut out, CARRIAGE_MEMBER_CONFIGS, &body);
                body.clear();
                for v in t.vips.iter().filter(|v| v.placed) {
                    body.extend_from_slice(&v.address.octets());
                }
                carriage(&mut out, CARRIAGE_PLACED, &body);
                body.clear();
                body.extend(t.unready.iter().map(|n| n.0));
                carriage(&mut out, CARRIAGE_UNREADY, &body);
            }
            Message::Probe(p) => {
                out[1] = KIND_PROBE;
                out.extend_from_slice(&[p.origin.0, u8::from(p.permit)]);
                out.extend_from_slice(&p.seq.to_be_bytes());
            }
            Message::Join(j) => {
                out[1] = KIND_JOIN;
                out.extend_from_slice(&[j.from.0, j.ring_size, maybe_node(j.ring_low)]);
                out.extend_from_slice(&j.config_version.to_be_bytes());
            }
            Message::Copies(c) => {
                out[1] = KIND_COPIES;
                out.extend_from_slice(&[c.from.0, u8::from(c.reset) | u8::from(c.complete) << 1]);
                out.extend_from_slice(&c.stream.to_be_bytes());
                out.extend_from_slice(&(c.copies.len() as u16).to_be_bytes());
                out.extend_from_slice(&(c.gone.len() as u16).to_be_bytes());
                for copy in &c.copies {
                    write_conn_id(&mut out, &copy.id);
                    out.push(copy.state);
                    out.extend_from_slice(&copy.backend.ip().octets());
                    out.extend_from_slice(&copy.backend.port().to_be_bytes());
                    out.extend_from_slice(&copy.nat_port.to_be_bytes());
                    out.extend_from_slice(&copy.backend_index.to_be_bytes());
                    out.extend_from_slice(&[copy.service_index, maybe_node(copy.home)]);
                }
                for id in &c.gone {
                    write_conn_id(&mut out, id);
                }
            }
            Message::ConfigFetch(f) => {
                out[1] = KIND_CONFIG_FETCH;
                out.push(f.from.0);
                write_config_id(&mut out, &f.config);
            }
            Message::ConfigDoc(d) => {
                out[1] = KIND_CONFIG_DOC;
                out.push(d.from.0);
                write_config_id(&mut out, &d.config);
                out.extend_from_slice(&d.signature);
                out.extend_from_slice(&(d.text.len() as u32).to_be_bytes());
                out.extend_from_slice(&d.text);
            }
        }
        out
    }

    /// Parses a message; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { bytes };
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = r.u8()?;
        let carriages = r.u16()?;
        let message = match kind {
            KIND_TOKEN => {
                let mut t = Token {
                    seq: r.u64()?,
                    epoch: r.u64()?,
                    config_version: r.u32()?,
                    from: r.node()?,
                    to: r.node()?,
                    ..Token::default()
                };
                let count = r.u8()? as usize;
                if count == 0 || count > MAX_NODES {
                    return Err(DecodeError::Invalid("member count"));
                }
                for _ in 0..count {
                    t.members.push(r.node()?);
                }
                let mut placed: Vec<Ipv4Addr> = Vec::new();
                for _ in 0..carriages {
                    let kind = r.u8()?;
                    let _reserved = r.u8()?;
                    let len = r.u16()? as usize;
                    let body = Reader {
                        bytes: r.take(len)?,
                    };
                    match kind {
                        CARRIAGE_VIPS => {
                            t.vips = body.records(8, |r| {
                                Ok(VipEntry {
                                    address: r.addr()?,
                                    owner: r.maybe_node()?,
                                    preferred: r.maybe_node()?,
                                    persistence: r.persistence()?,
                                    placed: false,
                                    previous: r.maybe_node()?,
                                })
                            })?
                        }
                        CARRIAGE_LOADS => {
                            t.loads = body.records(16, |r| {
                                let node = r.node()?;
                                r.u8()?;
                                Ok(Load {
                                    node,
                                    cpu_permille: r.u16()?,
                                    packets_per_s: r.u32()?,
                                    bytes_per_s: r.u64()?,
                                })
                            })?
                        }
                        CARRIAGE_CLOSED => t.closed = body.records(1, Reader::node)?,
                        CARRIAGE_UNREADY => t.unready = body.records(1, Reader::node)?,
                        CARRIAGE_PLACED => placed = body.records(4, Reader::addr)?,
                        CARRIAGE_ASKS => t.asks = body.records(16, read_ask)?,
                        CARRIAGE_DONE => {
                            t.done = body.records(10, |r| {
                                Ok(AdminDone {
                                    id: r.u64()?,
                                    origin: r.node()?,
                                    result: AdminResult::from_code(r.u8()?)
                                        .ok_or(DecodeError::Invalid("admin result"))?,
                                })
                            })?
                        }
                        CARRIAGE_BLOCKS => {
                            t.blocks = body.records(4, |r| {
                                let (block, holder) = (r.node()?, r.node()?);
                                let returned = r.flag("returned flag")?;
                                let leftovers = match r.u8()? {
                                    0 => None,
                                    n if usize::from(n) <= MAX_NODES => Some(NodeId(n - 1)),
                                    _ => return Err(DecodeError::Invalid("leftovers node")),
                                };
                                Ok(BlockHolder {
                                    block,
                                    holder,
                                    returned,
                                    leftovers,
                                })
                            })?
                        }
                        CARRIAGE_VIP_LOADS => {
                            t.vip_loads = body.records(8, |r| {
                                Ok(VipLoad {
                                    address: r.addr()?,
                                    packets_per_s: r.u32()?,
                                })
                            })?
                        }
                        CARRIAGE_CONFIG => read_config_state(body, &mut t.config)?,
                        CARRIAGE_MEMBER_CONFIGS => {
                            t.config.members = body.records(MEMBER_CONFIG_LEN, |r| {
                                let node = r.node()?;
                                r.u8()?;
                                Ok(MemberConfig {
                                    node,
                                    active: read_config_tag(r)?,
                                    staged: read_config_tag(r)?,
                                    rejected: read_config_tag(r)?,
                                })
                            })?
                        }
                        _ => {} // a newer version's carriage: skipped
                    }
                }
                for v in t.vips.iter_mut() {
                    v.placed = placed.contains(&v.address);
                }
                Message::Token(Box::new(t))
            }
            KIND_PROBE => Message::Probe(Probe {
                origin: r.node()?,
                permit: r.flag("permission flag")?,
                seq: r.u64()?,
            }),
            KIND_JOIN => Message::Join(Join {
                from: r.node()?,
                ring_size: r.u8()?,
                ring_low: r.maybe_node()?,
                config_version: r.u32()?,
            }),
            KIND_COPIES => Message::Copies(read_copies(&mut r)?),
            KIND_CONFIG_FETCH => Message::ConfigFetch(ConfigFetch {
                from: r.node()?,
                config: read_config_id(&mut r)?,
            }),
            KIND_CONFIG_DOC => {
                let from = r.node()?;
                let config = read_config_id(&mut r)?;
                let signature = r.array()?;
                let len = r.u32()? as usize;
                Message::ConfigDoc(ConfigDoc {
                    from,
                    config,
                    signature,
                    text: r.take(len)?.to_vec(),
                })
            }
            other => return Err(DecodeError::Kind(other)),
        };
        if !r.bytes.is_empty() {
            return Err(DecodeError::Trailing);
        }
        Ok(message)
    }
}

fn write_config_id(out: &mut Vec<u8>, id: &ConfigId) {
    out.extend_from_slice(&id.version.to_be_bytes());
    out.extend_from_slice(&id.digest);
}

fn read_config_id(r: &mut Reader<'_>) -> Result<ConfigId, DecodeError> {
    Ok(ConfigId {
        version: r.u32()?,
        digest: r.array()?,
    })
}

fn read_config_tag(r: &mut Reader<'_>) -> Result<ConfigTag, DecodeError> {
    Ok(ConfigTag {
        version: r.u32()?,
        digest_start: r.u64()?,
    })
}

/// The configuration carriage: the active digest, then the offer if any.
fn read_config_state(mut r: Reader<'_>, state: &mut ConfigState) -> Result<(), DecodeError> {
    state.active_digest = r.array()?;
    state.offer = match r.bytes.len() {
        0 => None,
        37 => Some(ConfigOffer {
            config: read_config_id(&mut r)?,
            from: r.node()?,
        }),
        _ => return Err(DecodeError::Invalid("configuration carriage length")),
    };
    Ok(())
}

fn write_conn_id(out: &mut Vec<u8>, id: &ConnId) {
    out.extend_from_slice(&id.client.ip().octets());
    out.extend_from_slice(&id.client.port().to_be_bytes());
    out.extend_from_slice(&id.vip.ip().octets());
    out.extend_from_slice(&id.vip.port().to_be_bytes());
    out.push(id.proto);
}

fn read_conn_id(r: &mut Reader<'_>) -> Result<ConnId, DecodeError> {
    Ok(ConnId {
        client: SocketAddrV4::new(r.addr()?, r.u16()?),
        vip: SocketAddrV4::new(r.addr()?, r.u16()?),
        proto: r.u8()?,
    })
}

fn read_copies(r: &mut Reader<'_>) -> Result<Copies, DecodeError> {
    let from = r.node()?;
    let flags = r.u8()?;
    if flags > 3 {
        return Err(DecodeError::Invalid("copies flags"));
    }
    let stream = r.u32()?;
    let (n, g) = (r.u16()? as usize, r.u16()? as usize);
    let copies = Reader {
        bytes: r.take(n * COPY_LEN)?,
    }
    .records(COPY_LEN, |r| {
        let copy = ConnCopy {
            id: read_conn_id(r)?,
            state: r.u8()?,
            backend: SocketAddrV4::new(r.addr()?, r.u16()?),
            nat_port: r.u16()?,
            backend_index: r.u16()?,
            service_index: r.u8()?,
            home: r.maybe_node()?,
        };
        Ok(copy)
    })?;
    let gone = Reader {
        bytes: r.take(g * GONE_LEN)?,
    }
    .records(GONE_LEN, read_conn_id)?;
    Ok(Copies {
        from,
        reset: flags & 1 != 0,
        complete: flags & 2 != 0,
        stream,
        copies,
        gone,
    })
}

fn read_ask(r: &mut Reader<'_>) -> Result<AdminAsk, DecodeError> {
    let id = r.u64()?;
    let origin = r.node()?;
    let op = r.u8()?;
    let vip = r.addr()?;
    let node = r.u8()?;
    let persistence = r.u8()?;
    let node_id = || {
        ((node as usize) < MAX_NODES)
            .then_some(NodeId(node))
            .ok_or(DecodeError::Invalid("node id"))
    };
    let op = match op {
        1 => AdminOp::Move(vip, node_id()?),
        2 => AdminOp::Prefer(vip, node_id()?),
        3 => AdminOp::Pin(
            vip,
            Persistence::from_number(persistence).ok_or(DecodeError::Invalid("persistence"))?,
        ),
        4 => AdminOp::Close(node_id()?, persistence == 1),
        5 => AdminOp::Open(node_id()?),
        _ => return Err(DecodeError::Invalid("admin op")),
    };
    Ok(AdminAsk { id, origin, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            seq: 0x0102_0304_0506_0708,
            epoch: 9,
            config_version: 3,
            from: NodeId(1),
            to: NodeId(2),
            members: vec![NodeId(0), NodeId(1), NodeId(2)],
            vips: vec![
                VipEntry {
                    address: Ipv4Addr::new(10, 0, 0, 100),
                    owner: Some(NodeId(1)),
                    previous: Some(NodeId(2)),
                    preferred: Some(NodeId(0)),
                    persistence: Persistence::Home,
                    placed: false,
                },
                VipEntry {
                    address: Ipv4Addr::new(10, 0, 0, 101),
                    owner: None,
                    previous: None,
                    preferred: None,
                    persistence: Persistence::Free,
                    placed: true,
                },
            ],
            loads: vec![Load {
                node: NodeId(2),
                cpu_permille: 250,
                packets_per_s: 10_000,
                bytes_per_s: 1 << 33,
            }],
            closed: vec![NodeId(5)],
            unready: vec![NodeId(2)],
            asks: vec![
                AdminAsk {
                    id: 7,
                    origin: NodeId(0),
                    op: AdminOp::Move(Ipv4Addr::new(10, 0, 0, 100), NodeId(2)),
                },
                AdminAsk {
                    id: 8,
                    origin: NodeId(1),
                    op: AdminOp::Pin(Ipv4Addr::new(10, 0, 0, 101), Persistence::Sticky),
                },
                AdminAsk {
                    id: 9,
                    origin: NodeId(1),
                    op: AdminOp::Close(NodeId(5), true),
                },
            ],
            done: vec![AdminDone {
                id: 6,
                origin: NodeId(2),
                result: AdminResult::NotMember,
            }],
            blocks: vec![BlockHolder {
                block: NodeId(4),
                holder: NodeId(0),
                returned: true,
                leftovers: None,
            }],
            vip_loads: vec![VipLoad {
                address: Ipv4Addr::new(10, 0, 0, 100),
                packets_per_s: 12_345,
            }],
            config: Box::new(ConfigState {
                active_digest: [7; 32],
                offer: Some(ConfigOffer {
                    config: config_id(4, 9),
                    from: NodeId(2),
                }),
                members: vec![MemberConfig {
                    node: NodeId(1),
                    active: config_id(3, 7).tag(),
                    staged: config_id(4, 9).tag(),
                    rejected: ConfigTag::default(),
                }],
            }),
        }
    }

    fn config_id(version: u32, fill: u8) -> ConfigId {
        ConfigId {
            version,
            digest: [fill; 32],
        }
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Token(Box::new(token())),
            Message::Probe(Probe {
                origin: NodeId(3),
                permit: true,
                seq: 42,
            }),
            Message::Join(Join {
                from: NodeId(63),
                ring_size: 0,
                ring_low: None,
                config_version: 1,
            }),
            Message::Copies(Copies {
                from: NodeId(2),
                reset: true,
                complete: true,
                stream: 77,
                copies: vec![ConnCopy {
                    id: ConnId {
                        client: "192.0.2.7:40001".parse().unwrap(),
                        vip: "10.0.0.100:80".parse().unwrap(),
                        proto: 6,
                    },
                    state: 1,
                    backend: "10.1.0.10:8080".parse().unwrap(),
                    nat_port: 17003,
                    backend_index: 2,
                    service_index: 1,
                    home: Some(NodeId(3)),
                }],
                gone: vec![ConnId {
                    client: "192.0.2.8:5353".parse().unwrap(),
                    vip: "10.0.0.101:53".parse().unwrap(),
                    proto: 17,
                }],
            }),
            Message::ConfigFetch(ConfigFetch {
                from: NodeId(4),
                config: config_id(5, 1),
            }),
            Message::ConfigDoc(ConfigDoc {
                from: NodeId(0),
                config: config_id(5, 1),
                signature: [3; 64],
                text: b"[cluster]\nconfig_version = 5\n".to_vec(),
            }),
        ]
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn token_layout() {
        let bytes = Message::Token(Box::new(token())).encode();
        assert_eq!(&bytes[..4], &[VERSION, KIND_TOKEN, 0, 11]);
        assert_eq!(&bytes[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[24..30], &[1, 2, 3, 0, 1, 2]);
        // The VIP table carriage: kind, reserved, length 16, then 10.0.0.100 owned by 1,
        // preferred 0, persistence 3, previously owned by 2.
        assert_eq!(&bytes[30..34], &[CARRIAGE_VIPS, 0, 0, 16]);
        assert_eq!(&bytes[34..42], &[10, 0, 0, 100, 1, 0, 3, 2]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for m in samples() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn unknown_carriages_are_skipped() {
        let mut bytes = Message::Token(Box::new(token())).encode();
        bytes[3] += 1; // one more carriage
        bytes.extend_from_slice(&[200, 0, 0, 3, 1, 2, 3]);
        assert_eq!(
            Message::decode(&bytes),
            Ok(Message::Token(Box::new(token())))
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let mut bytes = Message::Token(Box::new(token())).encode();
        bytes[24] = 64;
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::Invalid("node id"))
        );
        let mut bytes = Message::Token(Box::new(token())).encode();
        bytes[40] = 2;
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::Invalid("persistence"))
        );
        assert_eq!(Message::decode(&[2, 1, 0, 0]), Err(DecodeError::Version(2)));
        assert_eq!(Message::decode(&[1, 9, 0, 0]), Err(DecodeError::Kind(9)));
        let mut bytes = Message::Join(Join {
            from: NodeId(1),
            ring_size: 2,
            ring_low: Some(NodeId(0)),
            config_version: 1,
        })
        .encode();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(DecodeError::Trailing));
    }

    /// A deterministic stream of random and mutated inputs never panics the decoder.
    #[test]
    fn random_inputs_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = Message::Token(Box::new(token())).encode();
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 96) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                b
            };
            let _ = Message::decode(&bytes);
        }
    }
}
