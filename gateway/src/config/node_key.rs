//! Per-node Ed25519 keys. Every node signs with its own private key, kept in a PEM file only it
//! can read; the cluster configuration lists every member's public key, so a node accepts a
//! signed configuration only from a member an operator added (a node never adds itself).
use std::{
    fmt, fs::OpenOptions, io::Write, os::unix::fs::OpenOptionsExt, path::Path, str::FromStr,
};

use anyhow::{bail, Context};
use base64::{engine::general_purpose::STANDARD, Engine};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519},
};

use crate::config::Config;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// This node's Ed25519 key pair: it signs what the node tells the cluster with it.
pub struct NodeKey {
    pair: Ed25519KeyPair,
}

/// Shows the public half only, so a logged structure never leaks the private key.
impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.public())
    }
}

impl NodeKey {
    /// Makes a new key and writes it to `path` as PEM (PKCS#8), readable by its owner only,
    /// for `gateway key generate`. An existing file is never overwritten: it may be the key
    /// the cluster knows this node by.
    pub fn generate(path: &Path) -> anyhow::Result<NodeKey> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("the system's random generator failed"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("the key just generated does not load: {e}"))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!(
                        "{}: exists already; a node key is never overwritten (it may be the key \
                         the cluster knows this node by): remove it first to replace it",
                        path.display()
                    )
                } else {
                    anyhow::anyhow!("{}: cannot create the key file: {e}", path.display())
                }
            })?;
        file.write_all(pem(pkcs8.as_ref()).as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("{}: cannot write the key", path.display()))?;
        Ok(NodeKey { pair })
    }

    /// Reads a key written by [`NodeKey::generate`] (or `openssl genpkey -algorithm ed25519`),
    /// at daemon start and for `gateway key public`. Refused when others may read the file.
    pub fn load(path: &Path) -> anyhow::Result<NodeKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the node key", path.display()))?;
        let der = unpem(&text).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            anyhow::anyhow!(
                "{}: not an Ed25519 private key in PKCS#8 ({e}); create one with \
                 `gateway key generate FILE`",
                path.display()
            )
        })?;
        super::private(path).map_err(|m| anyhow::anyhow!("{m}"))?;
        Ok(NodeKey { pair })
    }

    /// The public half, as listed in this node's `[[cluster.node]]` entry.
    pub fn public(&self) -> PublicKey {
        let bytes = self.pair.public_key().as_ref();
        PublicKey(bytes.try_into().expect("Ed25519 public keys are 32 bytes"))
    }

    /// Signs `msg`; [`PublicKey::verify`] of this node's public key checks it.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.pair
            .sign(msg)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }
}

/// The PEM text of a PKCS#8 document: base64 wrapped at 64 columns between the markers.
fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("{PEM_BEGIN}\n");
    for line in body.as_bytes().chunks(64) {
        out += std::str::from_utf8(line).expect("base64 is ASCII");
        out.push('\n');
    }
    out + PEM_END + "\n"
}

/// The DER bytes of a `PRIVATE KEY` PEM block.
fn unpem(text: &str) -> Result<Vec<u8>, String> {
    let not_pem = || format!("not a PEM private key (expected a `{PEM_BEGIN}` block)");
    let start = text.find(PEM_BEGIN).ok_or_else(not_pem)? + PEM_BEGIN.len();
    let end = start + text[start..].find(PEM_END).ok_or_else(not_pem)?;
    let body: String = text[start..end].split_whitespace().collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("{}: bad base64 inside the PEM block: {e}", not_pem()))
}

/// A node's Ed25519 public key: how the cluster configuration names who may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Whether `signature` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, signature)
            .is_ok()
    }
}

/// Standard base64 of the 32 bytes (44 characters, like WireGuard keys): the config's form.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

/// Parses the form [`Display`](fmt::Display) writes.
impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected the node's Ed25519 public key: 44 characters of standard \
                        base64 (32 bytes), as printed by `gateway key public FILE`";
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|_| format!("`{s}` is not base64; {expected}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("`{s}` holds {} bytes; {expected}", b.len()))?;
        Ok(PublicKey(bytes))
    }
}

/// Loads this node's key for the daemon: `None` without a `[cluster]` section; otherwise the
/// `[node] key` file, which must be the key the node map lists for this node, so a node never
/// signs with a key the others would reject.
pub fn load_node_key(config: &Config) -> anyhow::Result<Option<NodeKey>> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let Some(path) = &config.key else {
        bail!(
            "{}: node.key: a cluster node needs its Ed25519 key",
            config.path.display()
        );
    };
    let key = NodeKey::load(path)?;
    let listed = cluster.nodes[cluster.me].public_key;
    if key.public() != listed {
        bail!(
            "{}: its public key is {}, but {} lists {listed} for this node \
             (cluster.node[{}].public_key): use this node's own key file, or list its key",
            path.display(),
            key.public(),
            config.path.display(),
            cluster.me,
        );
    }
    Ok(Some(key))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A fresh directory under the system's temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "gateway-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn generate_then_load_gives_the_same_key() {
        let dir = TempDir::new("key");
        let path = dir.0.join("node.key");
        let made = NodeKey::generate(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        assert!(text.ends_with("-----END PRIVATE KEY-----\n"), "{text}");
        assert!(text.lines().all(|l| l.len() <= 64), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = NodeKey::load(&path).unwrap();
        assert_eq!(loaded.public(), made.public());
        assert!(format!("{loaded:?}").contains(&made.public().to_string()));
    }

    #[test]
    fn signatures_verify_only_with_the_key_and_message() {
        let dir = TempDir::new("sign");
        let a = NodeKey::generate(&dir.0.join("a.key")).unwrap();
        let b = NodeKey::generate(&dir.0.join("b.key")).unwrap();
        assert_ne!(a.public(), b.public());
        let signature = a.sign(b"config v2");
        assert!(a.public().verify(b"config v2", &signature));
        assert!(!b.public().verify(b"config v2", &signature));
        assert!(!a.public().verify(b"config v3", &signature));
        assert!(!a.public().verify(b"config v2", &signature[..63]));
    }

    #[test]
    fn never_overwrites_a_key() {
        let dir = TempDir::new("overwrite");
        let path = dir.0.join("node.key");
        let first = NodeKey::generate(&path).unwrap();
        let e = NodeKey::generate(&path).unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
        assert!(e.contains("node.key"), "{e}");
        assert_eq!(NodeKey::load(&path).unwrap().public(), first.public());
    }

    #[test]
    fn bad_files_name_the_path_and_the_problem() {
        let dir = TempDir::new("bad");
        let missing = dir.0.join("missing.key");
        let e = format!("{:#}", NodeKey::load(&missing).unwrap_err());
        assert!(
            e.contains("missing.key") && e.contains("cannot read"),
            "{e}"
        );

        let not_pem = dir.0.join("text.key");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let e = NodeKey::load(&not_pem).unwrap_err().to_string();
        assert!(e.contains("text.key") && e.contains("not a PEM"), "{e}");

        let bad_base64 = dir.0.join("b64.key");
        std::fs::write(&bad_base64, format!("{PEM_BEGIN}\n!!!!\n{PEM_END}\n")).unwrap();
        let e = NodeKey::load(&bad_base64).unwrap_err().to_string();
        assert!(e.contains("b64.key") && e.contains("base64"), "{e}");

        let not_ed25519 = dir.0.join("rsa.key");
        std::fs::write(&not_ed25519, pem(b"not a PKCS#8 document")).unwrap();
        let e = NodeKey::load(&not_ed25519).unwrap_err().to_string();
        assert!(e.contains("rsa.key") && e.contains("not an Ed25519"), "{e}");
    }

    #[test]
    fn loads_an_openssl_key() {
        // RFC 8410, section 10.3: a PKCS#8 v1 key as `openssl genpkey -algorithm ed25519`
        // writes it, without the public key; its public key is the one of section 10.1.
        let dir = TempDir::new("openssl");
        let path = dir.0.join("openssl.key");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\n\
             MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
             -----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = NodeKey::load(&path).unwrap();
        assert_eq!(
            key.public().to_string(),
            "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="
        );
    }

    #[test]
    fn the_daemon_loads_the_key_the_node_map_lists() {
        const EXAMPLE: &str = include_str!("../../examples/cluster.toml");
        const GW1: &str = "RIiKafCp1xLUBXVlV2+KVBc50Yb1sc8kzQqWe4XOq1I=";
        let dir = TempDir::new("daemon");
        let path = dir.0.join("gw1.key");
        let key = NodeKey::generate(&path).unwrap();
        let text = EXAMPLE.replacen("/etc/gateway/node.key", path.to_str().unwrap(), 1);
        let parse = |text: &str| crate::config::parse(Path::new("gw1.toml"), text).unwrap();

        let listed = text.replacen(GW1, &key.public().to_string(), 1);
        let loaded = load_node_key(&parse(&listed)).unwrap().unwrap();
        assert_eq!(loaded.public(), key.public());

        let e = load_node_key(&parse(&text)).unwrap_err().to_string();
        assert!(e.contains("gw1.key") && e.contains("gw1.toml"), "{e}");
        assert!(e.contains("cluster.node[0].public_key"), "{e}");
        assert!(
            e.contains(&key.public().to_string()) && e.contains(GW1),
            "{e}"
        );

        let missing = listed.replacen("gw1.key", "gone.key", 1);
        let e = format!("{:#}", load_node_key(&parse(&missing)).unwrap_err());
        assert!(e.contains("gone.key"), "{e}");

        let end = EXAMPLE.find("[cluster]").unwrap();
        let alone = EXAMPLE[..end]
            .replace("preferred = \"gw1\"", "")
            .replace("persistence = 3", "");
        assert!(load_node_key(&parse(&alone)).unwrap().is_none());
    }

    #[test]
    fn public_keys_round_trip_through_base64() {
        let key = PublicKey(core::array::from_fn(|i| i as u8 * 7));
        let text = key.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<PublicKey>(), Ok(key));
        assert_eq!(format!(" {text} ").parse::<PublicKey>(), Ok(key));
        let e = "AAAA".parse::<PublicKey>().unwrap_err();
        assert!(e.contains("3 bytes") && e.contains("44 characters"), "{e}");
        let e = "not base64!".parse::<PublicKey>().unwrap_err();
        assert!(e.contains("not base64"), "{e}");
    }
}
