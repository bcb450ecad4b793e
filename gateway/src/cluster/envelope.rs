//! The wire envelope of every cluster datagram: a fixed header, the payload and an HMAC tag.
//!
//! One UDP datagram carries exactly one envelope. All integers are big-endian.
//!
//! ```text
//! offset size field
//!      0    4 magic            b"GWCL": not a cluster datagram otherwise
//!      4    1 version          1; any other value is rejected (no silent reinterpretation)
//!      5    1 kind             1 = data fragment, 2 = ack of one data fragment
//!      6    1 key id           which key of the keyring made the tag (keys rotate)
//!      7    1 sender           NodeId of the node that sealed the envelope
//!      8    1 receiver         NodeId the envelope is meant for (a copy sent elsewhere is dropped)
//!      9    1 reserved         0; non-zero is rejected so the byte can gain a meaning later
//!     10    2 fragment index   0..fragment count
//!     12    2 fragment count   1.. (number of fragments of the whole message)
//!     14    2 payload length   bytes of payload that follow the header; 0 for an ack
//!     16    8 counter          per-sender, strictly rising over all its datagrams (anti-replay)
//!     24    8 message id       per (sender, receiver); an ack repeats the acked message's id
//!     32    n payload          a slice of the message (data) or nothing (ack)
//!   32+n   32 tag              HMAC-SHA256 over bytes 0..32+n, full length, never truncated
//! ```
//!
//! An ack repeats the message id, fragment index and fragment count of the fragment it acks and
//! carries its own counter, so acks are authenticated and replay-protected like data.
//!
//! [`open`] checks the structure with explicit bounds first (never panicking, whatever the
//! bytes), then the key id, then the tag in constant time; only then is the content trusted.
use std::fmt;

use ring::hmac;

use super::keys::Keyring;
use super::types::NodeId;

/// Identifies cluster datagrams; anything else arriving on the port is dropped early.
pub const MAGIC: [u8; 4] = *b"GWCL";
/// The only wire version this code speaks.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;
/// Bytes of the HMAC-SHA256 tag after the payload (the full output, never truncated).
pub const TAG_LEN: usize = 32;
/// Bytes an envelope adds around its payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// What an envelope carries, so the receiver knows whether to reassemble or to settle a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One fragment of a message.
    Data,
    /// The receiver got the named fragment.
    Ack,
}

impl Kind {
    fn to_byte(self) -> u8 {
        match self {
            Kind::Data => 1,
            Kind::Ack => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Kind::Data),
            2 => Some(Kind::Ack),
            _ => None,
        }
    }
}

/// The header fields of an envelope, everything except the payload and the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Data fragment or ack.
    pub kind: Kind,
    /// Key that made (or must make) the tag.
    pub key_id: u8,
    /// Node that sealed the envelope.
    pub sender: NodeId,
    /// Node the envelope is for.
    pub receiver: NodeId,
    /// Per-sender anti-replay counter (see `replay`).
    pub counter: u64,
    /// Message this fragment belongs to, or that the ack settles.
    pub message_id: u64,
    /// Position of the fragment in its message.
    pub fragment_index: u16,
    /// Number of fragments of the message.
    pub fragment_count: u16,
}

/// An authenticated envelope: the header and a view of the payload inside the datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The verified header.
    pub header: Header,
    /// The verified payload (empty for an ack).
    pub payload: &'a [u8],
}

/// Why a datagram is not a valid envelope; each variant maps to a drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than a header and a tag.
    TooShort { len: usize },
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// A version this code does not speak.
    UnsupportedVersion(u8),
    /// A kind byte with no meaning.
    UnknownKind(u8),
    /// The reserved byte is not zero.
    ReservedNotZero(u8),
    /// The payload length field disagrees with the datagram's size.
    LengthMismatch { declared: usize, actual: usize },
    /// Fragment count zero, or index not below the count.
    BadFragment { index: u16, count: u16 },
    /// An ack with a payload.
    AckWithPayload,
    /// The key id is not in the keyring.
    UnknownKey(u8),
    /// The tag does not match: forged, corrupted or made with another key.
    BadAuth,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::TooShort { len } => write!(
                f,
                "datagram of {len} bytes is shorter than an empty envelope ({OVERHEAD})"
            ),
            EnvelopeError::BadMagic => write!(f, "not a cluster datagram (bad magic)"),
            EnvelopeError::UnsupportedVersion(v) => {
                write!(f, "envelope version {v} not supported (expected {VERSION})")
            }
            EnvelopeError::UnknownKind(k) => write!(f, "unknown envelope kind {k}"),
            EnvelopeError::ReservedNotZero(b) => write!(f, "reserved header byte is {b}, not 0"),
            EnvelopeError::LengthMismatch { declared, actual } => write!(
                f,
                "header declares {declared} payload bytes but the datagram holds {actual}"
            ),
            EnvelopeError::BadFragment { index, count } => {
                write!(f, "fragment {index} of {count} is impossible")
            }
            EnvelopeError::AckWithPayload => write!(f, "an ack must not carry a payload"),
            EnvelopeError::UnknownKey(id) => write!(f, "key id {id} is not in the keyring"),
            EnvelopeError::BadAuth => write!(f, "authentication tag does not match"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// Builds the datagram for `header` and `payload`, tagged with `key`.
///
/// The caller keeps `payload` within `u16::MAX` bytes (the transport's fragment size is far
/// below); the length field is the single source of truth for the receiver, so a longer payload
/// would be a bug, caught here in debug builds.
pub fn seal(header: &Header, payload: &[u8], key: &hmac::Key) -> Vec<u8> {
    debug_assert!(payload.len() <= usize::from(u16::MAX));
    let mut out = Vec::with_capacity(OVERHEAD + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(header.kind.to_byte());
    out.push(header.key_id);
    out.push(header.sender.0);
    out.push(header.receiver.0);
    out.push(0);
    out.extend_from_slice(&header.fragment_index.to_be_bytes());
    out.extend_from_slice(&header.fragment_count.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&header.counter.to_be_bytes());
    out.extend_from_slice(&header.message_id.to_be_bytes());
    out.extend_from_slice(payload);
    let tag = hmac::sign(key, &out);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Parses and authenticates a datagram with the keys of `keys`.
///
/// Structure errors come before key errors, which come before the tag check, so the counters
/// tell garbage, unknown keys and forgeries apart. Never panics.
pub fn open<'a>(bytes: &'a [u8], keys: &Keyring) -> Result<Opened<'a>, EnvelopeError> {
    let (header, payload) = parse(bytes)?;
    let key = keys
        .get(header.key_id)
        .ok_or(EnvelopeError::UnknownKey(header.key_id))?;
    let signed_len = HEADER_LEN + payload.len();
    let (signed, tag) = bytes.split_at(signed_len);
    hmac::verify(key, signed, tag).map_err(|_| EnvelopeError::BadAuth)?;
    Ok(Opened { header, payload })
}

/// Reads the header and locates the payload, checking every bound; no authentication.
fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), EnvelopeError> {
    if bytes.len() < OVERHEAD {
        return Err(EnvelopeError::TooShort { len: bytes.len() });
    }
    let (head, rest) = bytes.split_at(HEADER_LEN);
    if head[0..4] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if head[4] != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(head[4]));
    }
    let kind = Kind::from_byte(head[5]).ok_or(EnvelopeError::UnknownKind(head[5]))?;
    if head[9] != 0 {
        return Err(EnvelopeError::ReservedNotZero(head[9]));
    }
    let be16 = |at: usize| u16::from_be_bytes([head[at], head[at + 1]]);
    let be64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let fragment_index = be16(10);
    let fragment_count = be16(12);
    let declared = usize::from(be16(14));
    let actual = rest.len() - TAG_LEN;
    if declared != actual {
        return Err(EnvelopeError::LengthMismatch { declared, actual });
    }
    if fragment_count == 0 || fragment_index >= fragment_count {
        return Err(EnvelopeError::BadFragment {
            index: fragment_index,
            count: fragment_count,
        });
    }
    if kind == Kind::Ack && declared != 0 {
        return Err(EnvelopeError::AckWithPayload);
    }
    let header = Header {
        kind,
        key_id: head[6],
        sender: NodeId(head[7]),
        receiver: NodeId(head[8]),
        counter: be64(16),
        message_id: be64(24),
        fragment_index,
        fragment_count,
    };
    Ok((header, &rest[..declared]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keys::Keyring;

    fn keyring() -> Keyring {
        Keyring::new(7, [(7, [0x11; 32]), (9, [0x22; 32])]).unwrap()
    }

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            key_id: 7,
            sender: NodeId(3),
            receiver: NodeId(5),
            counter: 0x0102_0304_0506_0708,
            message_id: 42,
            fragment_index: 1,
            fragment_count: 3,
        }
    }

    fn sealed(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let keys = keyring();
        seal(&header(kind), payload, keys.active().1)
    }

    #[test]
    fn round_trip_data_and_ack() {
        let keys = keyring();
        let data = sealed(Kind::Data, b"hello cluster");
        assert_eq!(data.len(), OVERHEAD + 13);
        let opened = open(&data, &keys).unwrap();
        assert_eq!(opened.header, header(Kind::Data));
        assert_eq!(opened.payload, b"hello cluster");

        let ack = sealed(Kind::Ack, b"");
        let opened = open(&ack, &keys).unwrap();
        assert_eq!(opened.header, header(Kind::Ack));
        assert!(opened.payload.is_empty());
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let data = sealed(Kind::Data, b"xy");
        assert_eq!(&data[0..4], b"GWCL");
        assert_eq!(data[4..10], [1, 1, 7, 3, 5, 0]);
        assert_eq!(data[10..16], [0, 1, 0, 3, 0, 2]);
        assert_eq!(data[16..24], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(data[24..32], [0, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(&data[32..34], b"xy");
    }

    #[test]
    fn every_truncation_is_rejected() {
        let keys = keyring();
        let data = sealed(Kind::Data, b"some payload bytes");
        for len in 0..data.len() {
            assert!(open(&data[..len], &keys).is_err(), "truncated to {len}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(open(&longer, &keys).is_err());
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let keys = keyring();
        let data = sealed(Kind::Data, b"payload");
        for byte in 0..data.len() {
            for bit in 0..8 {
                let mut bad = data.clone();
                bad[byte] ^= 1 << bit;
                assert!(open(&bad, &keys).is_err(), "flip byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn unknown_key_id_is_named() {
        let keys = keyring();
        let mut h = header(Kind::Data);
        h.key_id = 8;
        let data = seal(&h, b"p", keys.active().1);
        assert_eq!(open(&data, &keys), Err(EnvelopeError::UnknownKey(8)));
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let keys = keyring();
        let other = Keyring::new(7, [(7, [0x33; 32])]).unwrap();
        let forged = seal(&header(Kind::Data), b"p", other.active().1);
        assert_eq!(open(&forged, &keys), Err(EnvelopeError::BadAuth));
        // Right key id, but the tag was made with the other listed key.
        let mut h = header(Kind::Data);
        h.key_id = 9;
        let swapped = seal(&h, b"p", keys.get(7).unwrap());
        assert_eq!(open(&swapped, &keys), Err(EnvelopeError::BadAuth));
    }

    #[test]
    fn structural_errors_are_typed() {
        let keys = keyring();
        let good = sealed(Kind::Data, b"abc");
        let with = |at: usize, value: u8| {
            let mut b = good.clone();
            b[at] = value;
            open(&b, &keys).map(|o| o.header)
        };
        assert_eq!(with(0, b'X'), Err(EnvelopeError::BadMagic));
        assert_eq!(with(4, 2), Err(EnvelopeError::UnsupportedVersion(2)));
        assert_eq!(with(5, 9), Err(EnvelopeError::UnknownKind(9)));
        assert_eq!(with(9, 1), Err(EnvelopeError::ReservedNotZero(1)));
        assert_eq!(
            with(15, 4),
            Err(EnvelopeError::LengthMismatch {
                declared: 4,
                actual: 3
            })
        );
        assert_eq!(
            with(13, 0),
            Err(EnvelopeError::BadFragment { index: 1, count: 0 })
        );
        assert_eq!(
            with(11, 3),
            Err(EnvelopeError::BadFragment { index: 3, count: 3 })
        );
        assert_eq!(with(5, 2), Err(EnvelopeError::AckWithPayload));
        assert_eq!(
            open(&good[..10], &keys),
            Err(EnvelopeError::TooShort { len: 10 })
        );
    }

    /// CI's stand-in for the fuzzer: deterministic pseudo-random inputs, some of them mutations
    /// of a valid envelope so the parser gets past the magic, must never panic or authenticate.
    #[test]
    fn random_inputs_never_panic_nor_authenticate() {
        let keys = keyring();
        let valid = sealed(Kind::Data, b"a valid envelope to mutate");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            // xorshift64*: small, seeded, good enough to spread bytes.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        for round in 0..5000 {
            let input: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 200) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut m = valid.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % m.len();
                    m[at] = next() as u8;
                }
                m.truncate(m.len() - (next() % 3) as usize);
                m
            };
            if input != valid {
                assert!(open(&input, &keys).is_err(), "round {round} authenticated");
            }
        }
    }
}
