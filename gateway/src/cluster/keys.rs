//! The cluster's shared HMAC keys, by key id, so keys can rotate without a flag day.
//!
//! Rotation: add the new key to every node's list (all listed keys are accepted), then make it
//! the active (sending) key everywhere, then remove the old one. Key material never appears in
//! `Debug` output, errors or logs; only key ids do.
use std::collections::BTreeMap;
use std::fmt;

use ring::hmac;

/// Bytes of one key: HMAC-SHA256 wants a key as long as its output.
pub const KEY_LEN: usize = 32;

/// Key id -> HMAC-SHA256 key; one active key signs, every listed key verifies.
#[derive(Clone)]
pub struct Keyring {
    active: u8,
    keys: BTreeMap<u8, hmac::Key>,
}

/// Why a keyring cannot be built; names the key id, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// No key listed at all.
    Empty,
    /// The active key id is not among the listed keys.
    ActiveMissing(u8),
    /// The same key id is listed twice.
    DuplicateId(u8),
    /// A key is not hexadecimal; `position` is the offending character's index.
    NotHex { id: u8, position: usize },
    /// A key does not have exactly [`KEY_LEN`] bytes (`2 * KEY_LEN` hex digits).
    WrongLength { id: u8, bytes: usize },
    /// A key of only zero bytes: a placeholder that was never replaced.
    AllZero(u8),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "no cluster key configured"),
            KeyError::ActiveMissing(id) => {
                write!(f, "active key id {id} is not among the listed keys")
            }
            KeyError::DuplicateId(id) => write!(f, "key id {id} is listed twice"),
            KeyError::NotHex { id, position } => write!(
                f,
                "key {id}: character {position} is not a hexadecimal digit"
            ),
            KeyError::WrongLength { id, bytes } => write!(
                f,
                "key {id}: {bytes} bytes, expected {KEY_LEN} ({} hex digits)",
                2 * KEY_LEN
            ),
            KeyError::AllZero(id) => write!(f, "key {id} is all zeros; generate a real key"),
        }
    }
}

impl std::error::Error for KeyError {}

impl Keyring {
    /// Builds a keyring from raw keys; `active` signs what this node sends.
    pub fn new(
        active: u8,
        keys: impl IntoIterator<Item = (u8, [u8; KEY_LEN])>,
    ) -> Result<Self, KeyError> {
        let mut map = BTreeMap::new();
        for (id, bytes) in keys {
            if bytes.iter().all(|&b| b == 0) {
                return Err(KeyError::AllZero(id));
            }
            let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
            if map.insert(id, key).is_some() {
                return Err(KeyError::DuplicateId(id));
            }
        }
        if map.is_empty() {
            return Err(KeyError::Empty);
        }
        if !map.contains_key(&active) {
            return Err(KeyError::ActiveMissing(active));
        }
        Ok(Keyring { active, keys: map })
    }

    /// Builds a keyring from the configuration's hex strings (64 hex digits per key).
    pub fn from_hex<'a>(
        active: u8,
        keys: impl IntoIterator<Item = (u8, &'a str)>,
    ) -> Result<Self, KeyError> {
        let decoded = keys
            .into_iter()
            .map(|(id, text)| Ok((id, decode_hex(id, text)?)))
            .collect::<Result<Vec<_>, KeyError>>()?;
        Self::new(active, decoded)
    }

    /// The key id and key that sign outgoing envelopes.
    pub fn active(&self) -> (u8, &hmac::Key) {
        (self.active, &self.keys[&self.active])
    }

    /// The key with this id, if listed: every listed key is accepted on receipt.
    pub fn get(&self, id: u8) -> Option<&hmac::Key> {
        self.keys.get(&id)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn decode_hex(id: u8, text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim();
    if let Some(position) = text.chars().position(|c| !c.is_ascii_hexdigit()) {
        return Err(KeyError::NotHex { id, position });
    }
    if text.len() != 2 * KEY_LEN {
        return Err(KeyError::WrongLength {
            id,
            bytes: text.len() / 2,
        });
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        // Every character is an ASCII hex digit, so byte slicing and parsing cannot fail.
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| KeyError::NotHex {
            id,
            position: 2 * i,
        })?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_A: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn hex_keys_build_a_keyring() {
        let keyring = Keyring::from_hex(2, [(1, HEX_A), (2, &HEX_A.replace('0', "1"))]).unwrap();
        assert_eq!(keyring.active().0, 2);
        assert!(keyring.get(1).is_some());
        assert!(keyring.get(3).is_none());
    }

    #[test]
    fn bad_hex_is_named_by_id_and_position() {
        let bad = HEX_A.replacen('a', "g", 1);
        let position = bad.find('g').unwrap();
        assert_eq!(
            Keyring::from_hex(1, [(1, bad.as_str())]).unwrap_err(),
            KeyError::NotHex { id: 1, position }
        );
        assert_eq!(
            Keyring::from_hex(1, [(1, "abcd")]).unwrap_err(),
            KeyError::WrongLength { id: 1, bytes: 2 }
        );
        assert_eq!(
            Keyring::from_hex(1, [(1, "é")]).unwrap_err(),
            KeyError::NotHex { id: 1, position: 0 }
        );
    }

    #[test]
    fn keyring_shape_errors() {
        assert_eq!(
            Keyring::new(1, std::iter::empty()).unwrap_err(),
            KeyError::Empty
        );
        assert_eq!(
            Keyring::new(2, [(1, [1; 32])]).unwrap_err(),
            KeyError::ActiveMissing(2)
        );
        assert_eq!(
            Keyring::new(1, [(1, [1; 32]), (1, [2; 32])]).unwrap_err(),
            KeyError::DuplicateId(1)
        );
        assert_eq!(
            Keyring::new(1, [(1, [0; 32])]).unwrap_err(),
            KeyError::AllZero(1)
        );
    }

    #[test]
    fn debug_and_errors_never_show_key_material() {
        let keyring = Keyring::from_hex(1, [(1, HEX_A)]).unwrap();
        let shown = format!("{keyring:?}");
        assert!(!shown.contains("8899"), "{shown}");
        let err = Keyring::from_hex(1, [(1, &HEX_A[..10])]).unwrap_err();
        assert!(!err.to_string().contains("0011"));
    }
}
