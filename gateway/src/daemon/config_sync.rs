//! The daemon's side of changing the cluster's configuration together (the ring's side is
//! `cluster::config_change`): it holds the signed documents, prepares an operator's offer from
//! the config file, answers other nodes' fetches with documents signed by this node's Ed25519
//! key, verifies the documents it fetched, and, when the ring switches, has the new
//! configuration written into the config file (this node's `[node]`, `[control]` and secrets
//! kept; [`install`], run off the async runtime), so a restart runs what the cluster runs.
//! Everything but [`install`] and [`ConfigSync::start`] works on texts in memory.
//!
//! A document is accepted only when its text has the digest the ring named, its signature
//! verifies with the signer's public key as this node's running configuration lists it, and
//! merged with this node's local part it is a valid configuration that keeps every node at its
//! place in `[[cluster.node]]`.
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{
    cluster::{
        message::{ConfigDoc, ConfigFetch, ConfigId},
        types::NodeId,
    },
    config::{
        self, live,
        node_key::{self, NodeKey},
        shared, Config,
    },
};

/// An operator's new configuration, ready to offer.
#[derive(Debug)]
pub enum Prepared {
    /// The file's cluster-wide part is what the cluster runs: nothing to offer.
    Unchanged(ConfigId),
    /// A new version, staged here, to offer to the ring.
    Offer(ConfigId),
}

/// The documents and the key.
pub struct ConfigSync {
    me: NodeId,
    key: NodeKey,
    path: PathBuf,
    /// The configuration this node runs and its shared text.
    active: (ConfigId, String),
    /// Documents staged (fetched and verified, or prepared here), by configuration.
    staged: BTreeMap<ConfigId, String>,
    /// The configuration this node runs, parsed: whose public keys verify documents.
    running: Config,
    /// The config file as last read or written: whose local part documents are checked with.
    local: String,
}

/// A configuration the ring switched to, to be written into the config file by [`install`].
#[derive(Debug)]
pub struct Activation {
    /// Which configuration.
    pub id: ConfigId,
    path: PathBuf,
    shared_text: String,
    running: Config,
}

/// What [`install`] wrote: the new configuration, the file's text, and the parts that take
/// effect at the next restart.
#[derive(Debug)]
pub struct Installed {
    /// Which configuration.
    pub id: ConfigId,
    /// The file, parsed.
    pub config: Config,
    /// The file's text.
    pub text: String,
    /// The parts that differ from the running configuration and wait for a restart.
    pub later: Vec<&'static str>,
}

/// The identity of a shared text.
fn config_id(shared_text: &str) -> ConfigId {
    ConfigId {
        version: shared::version_of(shared_text),
        digest: shared::digest(shared_text),
    }
}

impl ConfigSync {
    /// Loads this node's key (it must be the one the node map lists) and names the running
    /// configuration from the config file.
    pub fn start(config: &Config, me: NodeId) -> Result<Self> {
        let key = node_key::load_node_key(config)?.context("no [cluster] section")?;
        let text = std::fs::read_to_string(&config.path)
            .with_context(|| format!("reading {}", config.path.display()))?;
        let shared = shared::shared_text(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
        Ok(Self {
            me,
            key,
            path: config.path.clone(),
            active: (config_id(&shared), shared),
            staged: BTreeMap::new(),
            running: config.clone(),
            local: text,
        })
    }

    /// The configuration this node runs.
    pub fn active(&self) -> ConfigId {
        self.active.0
    }

    /// Takes the config file's `text` (read by the caller) for an offer: the cluster-wide
    /// part, valid and keeping every node at its place, stamped with the next version after
    /// `ring_version` and what this node runs, and staged here.
    pub fn prepare(&mut self, text: &str, ring_version: u32) -> Result<Prepared, String> {
        let new = config::parse(&self.path, text).map_err(|e| e.to_string())?;
        shared::refuse(&self.running, &new)?;
        let shared_text =
            shared::shared_text(text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.local = text.to_owned();
        let unversioned = |t: &str| shared::with_version(t, 1);
        if unversioned(&shared_text)? == unversioned(&self.active.1)? {
            return Ok(Prepared::Unchanged(self.active.0));
        }
        let version = ring_version
            .max(self.active.0.version)
            .max(shared::version_of(&shared_text))
            + 1;
        let stamped = shared::with_version(&shared_text, version)?;
        let id = config_id(&stamped);
        self.staged.insert(id, stamped);
        Ok(Prepared::Offer(id))
    }

    /// The signed document of `fetch`'s configuration, when this node has it.
    pub fn answer(&self, fetch: &ConfigFetch) -> Option<ConfigDoc> {
        let text = if self.active.0 == fetch.config {
            &self.active.1
        } else {
            self.staged.get(&fetch.config)?
        };
        Some(ConfigDoc {
            from: self.me,
            config: fetch.config,
            signature: self.key.sign(&ConfigDoc::signed_bytes(&fetch.config)),
            text: text.as_bytes().to_vec(),
        })
    }

    /// Verifies a fetched document and stages it; the error says why it was refused.
    pub fn receive(&mut self, doc: &ConfigDoc) -> Result<(), String> {
        let cluster = self
            .running
            .cluster
            .as_ref()
            .ok_or("this node runs alone")?;
        let signer = cluster
            .nodes
            .get(usize::from(doc.from.0))
            .ok_or_else(|| format!("signed by node {}, not in [[cluster.node]]", doc.from.0))?;
        if !signer
            .public_key
            .verify(&ConfigDoc::signed_bytes(&doc.config), &doc.signature)
        {
            return Err(format!(
                "the signature does not verify with {}'s public key",
                signer.name
            ));
        }
        let text = std::str::from_utf8(&doc.text).map_err(|_| "the text is not UTF-8")?;
        if shared::digest(text) != doc.config.digest {
            return Err("the text does not match its digest".into());
        }
        if shared::version_of(text) != doc.config.version {
            return Err(format!(
                "the text says version {}, the ring {}",
                shared::version_of(text),
                doc.config.version
            ));
        }
        let (_, new) = self.merged(text)?;
        shared::refuse(&self.running, &new)?;
        self.staged.insert(doc.config, text.to_owned());
        Ok(())
    }

    /// This node's config file with `shared_text` as its cluster-wide part, and its parse.
    fn merged(&self, shared_text: &str) -> Result<(String, Config), String> {
        merge(&self.path, &self.local, shared_text)
    }

    /// Switches to the staged configuration `id`; what the file is to be written with.
    pub fn activate(&mut self, id: ConfigId) -> Result<Activation, String> {
        let text = self
            .staged
            .remove(&id)
            .ok_or_else(|| format!("configuration version {} is not staged", id.version))?;
        // Older documents are of no more use.
        self.staged.retain(|staged, _| staged.version > id.version);
        self.active = (id, text.clone());
        Ok(Activation {
            id,
            path: self.path.clone(),
            shared_text: text,
            running: self.running.clone(),
        })
    }

    /// Takes in what [`install`] wrote: the configuration this node now runs.
    pub fn installed(&mut self, installed: &Installed) {
        self.running = installed.config.clone();
        self.local.clone_from(&installed.text);
    }
}

/// `local` (the text of the config file at `path`) with `shared_text` as its cluster-wide
/// part, and its parse.
fn merge(path: &Path, local: &str, shared_text: &str) -> Result<(String, Config), String> {
    let full = shared::merge(local, shared_text)?;
    let new = config::parse(path, &full).map_err(|e| e.to_string())?;
    Ok((full, new))
}

/// Writes an activated configuration into the config file as it is now (an operator's edits
/// of this node's own part are kept) and parses it. The file it replaces is kept beside it as
/// `FILE.previous`, with its mode: a rewrite loses nothing the operator wrote. Blocking file
/// I/O (read, write, fsync): run it off the async runtime.
pub fn install(activation: Activation) -> Result<Installed, String> {
    let path = &activation.path;
    let local = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (text, config) = merge(path, &local, &activation.shared_text)?;
    if text != local {
        let backup = beside(path, "previous");
        write_atomically(&backup, &local, path)
            .map_err(|e| format!("keeping the previous file as {}: {e:#}", backup.display()))?;
    }
    write_atomically(path, &text, path)
        .map_err(|e| format!("writing {}: {e:#}", path.display()))?;
    let later = live::restart_needed(&activation.running, &config);
    Ok(Installed {
        id: activation.id,
        config,
        text,
        later,
    })
}

/// `path` with `.suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    name.into()
}

/// Replaces `path` with `text` so that a reader sees the old file or the new one, never a
/// part: a temporary file beside it, flushed, renamed over it. It gets the permissions of
/// `mode_of` (the config file: it holds secrets).
fn write_atomically(path: &Path, text: &str, mode_of: &Path) -> Result<()> {
    let tmp = beside(path, "new");
    let mut file = std::fs::File::create(&tmp)?;
    if let Ok(meta) = std::fs::metadata(mode_of) {
        file.set_permissions(meta.permissions())?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node_key::tests::TempDir;

    const EXAMPLE: &str = include_str!("../../examples/cluster.toml");
    const EXAMPLE_KEYS: [&str; 3] = [
        "RIiKafCp1xLUBXVlV2+KVBc50Yb1sc8kzQqWe4XOq1I=",
        "yvkikpfEHECXVLX6w9Rfwn+TRSuVBUd10ir/ss4hfPI=",
        "TyPI6EjwBemUdRn74kgpihZEbIgAm/nYnviz7WrRkdk=",
    ];

    /// Two nodes of the example cluster, gw1 and gw2, each with its own key and file.
    struct Pair {
        dir: TempDir,
        syncs: Vec<ConfigSync>,
    }

    impl Pair {
        fn new() -> Self {
            let dir = TempDir::new("sync");
            let keys: Vec<NodeKey> = (0..3)
                .map(|i| NodeKey::generate(&dir.0.join(format!("gw{}.key", i + 1))).unwrap())
                .collect();
            let mut shared = EXAMPLE.to_owned();
            for (listed, key) in EXAMPLE_KEYS.iter().zip(&keys) {
                shared = shared.replace(listed, &key.public().to_string());
            }
            let syncs = (0..2)
                .map(|i| {
                    let name = format!("gw{}", i + 1);
                    let block = ["20000-29999", "30000-39999"][i];
                    let text = shared
                        .replacen("name = \"gw1\"", &format!("name = \"{name}\""), 1)
                        .replacen(
                            "nat_ports = \"20000-29999\"",
                            &format!("nat_ports = \"{block}\""),
                            1,
                        )
                        .replace(
                            "/etc/gateway/node.key",
                            &dir.0.join(format!("{name}.key")).display().to_string(),
                        );
                    let path = dir.0.join(format!("{name}.toml"));
                    std::fs::write(&path, &text).unwrap();
                    let config = config::parse(&path, &text).unwrap();
                    ConfigSync::start(&config, NodeId(i as u8)).unwrap()
                })
                .collect();
            Pair { dir, syncs }
        }

        /// gw1's file with `from` replaced by `to`, offered: the signed document gw2 fetches.
        fn offer(&mut self, from: &str, to: &str) -> ConfigDoc {
            let path = self.dir.0.join("gw1.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{from}");
            let text = text.replacen(from, to, 1);
            std::fs::write(&path, &text).unwrap();
            let Prepared::Offer(config) = self.syncs[0].prepare(&text, 1).unwrap() else {
                panic!("unchanged");
            };
            self.syncs[0]
                .answer(&ConfigFetch {
                    from: NodeId(1),
                    config,
                })
                .unwrap()
        }
    }

    #[test]
    fn a_signed_document_is_staged_and_activated_into_the_file() {
        let mut pair = Pair::new();
        let doc = pair.offer("port = 8080", "port = 8081");
        assert_eq!(doc.config.version, 2);
        pair.syncs[1].receive(&doc).unwrap();
        let installed = install(pair.syncs[1].activate(doc.config).unwrap()).unwrap();
        pair.syncs[1].installed(&installed);
        assert!(installed.later.is_empty(), "{:?}", installed.later);
        let running = &installed.config;
        assert_eq!(running.name, "gw2", "gw2's own [node] section stays");
        assert_eq!(running.services[0].backends[0].port, 8081);
        let path = pair.dir.0.join("gw2.toml");
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(file.contains("config_version = 2") && file.contains("name = \"gw2\""));
        // The file it replaced is kept, with its mode.
        let previous = std::fs::read_to_string(beside(&path, "previous")).unwrap();
        assert!(previous.contains("port = 8080") && !previous.contains("config_version = 2"));
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode()
        };
        assert_eq!(mode(&beside(&path, "previous")), mode(&path));
        assert_eq!(pair.syncs[1].active(), doc.config);
        // Once gw1 runs it too, its file has nothing new to offer.
        let installed = install(pair.syncs[0].activate(doc.config).unwrap()).unwrap();
        pair.syncs[0].installed(&installed);
        assert!(matches!(
            pair.syncs[0].prepare(&installed.text, 2),
            Ok(Prepared::Unchanged(_))
        ));
    }

    #[test]
    fn forged_altered_and_reordering_documents_are_refused() {
        let mut pair = Pair::new();
        let doc = pair.offer("port = 8080", "port = 8081");

        let mut forged = doc.clone();
        forged.signature[0] ^= 1;
        let e = pair.syncs[1].receive(&forged).unwrap_err();
        assert!(e.contains("signature"), "{e}");

        let mut claimed = doc.clone();
        claimed.from = NodeId(2); // signed by gw1, claimed as gw3's
        assert!(pair.syncs[1].receive(&claimed).is_err());

        let mut altered = doc.clone();
        let at = altered.text.len() - 2;
        altered.text[at] ^= 1;
        let e = pair.syncs[1].receive(&altered).unwrap_err();
        assert!(e.contains("digest"), "{e}");

        // gw1's own file checks refuse moving a node before anything is offered.
        let path = pair.dir.0.join("gw1.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let moved = text.replace("name = \"gw3\"", "name = \"gw9\"");
        assert!(pair.syncs[0].prepare(&moved, 1).is_err());
        // Nothing was staged or written at gw2.
        assert!(pair.syncs[1].activate(doc.config).is_err());
        let file = std::fs::read_to_string(pair.dir.0.join("gw2.toml")).unwrap();
        assert!(!file.contains("config_version = 2"));
    }
}
