//! The cluster-wide part of a configuration file, which every node of a cluster runs the same:
//! everything but the node-local `[node]` and `[control]` tables and the secrets
//! (`[cluster.keys]` and `active_key`, which stay on each node: the cluster's messages are
//! authenticated, not encrypted, so no secret ever travels in them). The cluster distributes it as
//! canonical TOML text, so that equal configurations have equal bytes, one digest and one
//! signature whatever the comments, layout or key order of the file it came from.
use ring::digest;
use toml::{Table, Value};

use super::Config;

/// The tables that belong to one node; everything else in a file is shared.
const LOCAL_TABLES: [&str; 2] = ["node", "control"];

/// The keys of `[cluster]` that stay on each node: the HMAC secrets.
const SECRETS: [&str; 2] = ["keys", "active_key"];

/// Takes this node's secrets out of `table`'s `[cluster]`.
fn take_secrets(table: &mut Table) -> Table {
    let Some(cluster) = table.get_mut("cluster").and_then(Value::as_table_mut) else {
        return Table::new();
    };
    SECRETS
        .iter()
        .filter_map(|k| Some((k.to_string(), cluster.remove(*k)?)))
        .collect()
}

fn parse_table(text: &str) -> Result<Table, String> {
    toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))
}

/// `value` with the keys of every table in sorted order, so the text does not depend on
/// whether the `toml` map keeps insertion order.
fn sorted(value: Value) -> Value {
    match value {
        Value::Table(table) => Value::Table(sorted_table(table)),
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn sorted_table(table: Table) -> Table {
    let mut entries: Vec<(String, Value)> = table.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect()
}

/// The canonical text of a shared table. An empty top-level array means the same as an
/// absent one in this file (`service = []`), and would otherwise be written as a bare key
/// that lands in whatever table precedes it in a merged file, so it is dropped.
fn canonical(mut table: Table) -> Result<String, String> {
    table.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
    toml::to_string(&sorted_table(table)).map_err(|e| format!("cannot write TOML: {e}"))
}

/// The canonical TOML of the shared part of the config file `full`: what the cluster signs
/// and distributes. Semantically equal files give identical text.
pub fn shared_text(full: &str) -> Result<String, String> {
    let mut table = parse_table(full)?;
    for local in LOCAL_TABLES {
        table.remove(local);
    }
    take_secrets(&mut table);
    canonical(table)
}

/// SHA-256 of a shared text: names a configuration version in the cluster's messages.
pub fn digest(shared: &str) -> [u8; 32] {
    digest::digest(&digest::SHA256, shared.as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 digests are 32 bytes")
}

/// The canonical shared text with `[cluster] config_version = version`: how a node stamps the
/// configuration it hands the cluster.
pub fn with_version(shared: &str, version: u32) -> Result<String, String> {
    if version == 0 {
        return Err("configuration versions start at 1".into());
    }
    let mut table = parse_table(shared)?;
    let cluster = table
        .get_mut("cluster")
        .and_then(Value::as_table_mut)
        .ok_or("the configuration has no [cluster] section to carry its version")?;
    cluster.insert("config_version".into(), Value::Integer(version.into()));
    canonical(table)
}

/// The `[cluster] config_version` of a shared text; 1, the version a file starts at, when it
/// is absent (or the text is not TOML, which a shared text made here always is).
pub fn version_of(shared: &str) -> u32 {
    parse_table(shared)
        .ok()
        .and_then(|t| t.get("cluster")?.get("config_version")?.as_integer())
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(1)
}

/// The full file a node writes when it activates a shared part received from the cluster:
/// its own `[node]` and `[control]` tables as written in `local_full` (comments kept), a
/// comment saying where the rest came from, then `shared` with this node's secrets put back
/// into its `[cluster]`. Checked: the result has exactly the local tables and secrets of
/// `local_full` and the shared part of `shared`.
pub fn merge(local_full: &str, shared: &str) -> Result<String, String> {
    let shared_only = parse_table(shared).map_err(|e| format!("shared part: {e}"))?;
    if let Some(local) = LOCAL_TABLES.iter().find(|t| shared_only.contains_key(**t)) {
        return Err(format!(
            "shared part: has a [{local}] table, which belongs to each node alone"
        ));
    }
    if !take_secrets(&mut shared_only.clone()).is_empty() {
        return Err("shared part: carries secrets ([cluster.keys], active_key)".into());
    }
    let mut local_table = parse_table(local_full).map_err(|e| format!("this node's file: {e}"))?;
    let secrets = take_secrets(&mut local_table);
    let mut with_secrets = shared_only.clone();
    if let Some(cluster) = with_secrets
        .get_mut("cluster")
        .and_then(Value::as_table_mut)
    {
        cluster.extend(secrets.clone());
    }
    let mut doc: toml_edit::DocumentMut = local_full
        .parse()
        .map_err(|e| format!("this node's file: not valid TOML: {e}"))?;
    doc.as_table_mut()
        .retain(|key, _| LOCAL_TABLES.contains(&key));
    // What follows the last local table was written about the shared part, which is replaced.
    doc.set_trailing("");
    let merged = format!(
        "{}\n\n# Everything below is the cluster-wide configuration, version {}, the same on every node:\n\
         # written by the gateway daemon when the cluster applied it. Edit it on one node and run\n\
         # `gateway reload` there to hand a new version to every node.\n\n{}",
        doc.to_string().trim_end(),
        version_of(shared),
        canonical(with_secrets)?.trim_start()
    );

    // The check: the merged file's local tables, secrets and shared part are what went in.
    let mut check = parse_table(&merged).map_err(|e| format!("merged file: {e}"))?;
    for table in LOCAL_TABLES {
        if check.remove(table).as_ref() != local_table.get(table) {
            return Err(format!(
                "merged file: its [{table}] differs from this node's"
            ));
        }
    }
    if take_secrets(&mut check) != secrets {
        return Err("merged file: its secrets differ from this node's".into());
    }
    if canonical(check)? != canonical(shared_only)? {
        return Err("merged file: its shared part differs from the one received".into());
    }
    Ok(merged)
}

/// Refuses a configuration from the cluster that would renumber nodes: node ids are positions
/// in `[[cluster.node]]`, so every existing node must keep its name at its index; nodes may
/// only be appended, or removed from the end.
pub fn refuse(old: &Config, new: &Config) -> Result<(), String> {
    let (old, new) = match (&old.cluster, &new.cluster) {
        (Some(old), Some(new)) => (old, new),
        (Some(_), None) => {
            return Err(
                "the new configuration has no [cluster] section: a cluster cannot \
                        configure itself away; remove it from each node's file and restart"
                    .into(),
            )
        }
        (None, _) => return Ok(()),
    };
    let why = "node ids are positions in [[cluster.node]]: existing nodes keep their place, \
               new ones are appended, and only the last ones may be removed";
    for (i, node) in old.nodes.iter().enumerate() {
        let Some(now) = new.nodes.get(i) else {
            // Removed from the end; the rest of the old list is beyond the new one too.
            break;
        };
        if now.name == node.name {
            continue;
        }
        return Err(match new.node_index(&node.name) {
            Some(j) => format!(
                "node `{}` moved from position {i} to {j} of [[cluster.node]]; {why}",
                node.name
            ),
            None if i + 1 < old.nodes.len() && new.node_index(&old.nodes[i + 1].name).is_some() => {
                format!(
                    "node `{}` removed from position {i} of [[cluster.node]], before the end; {why}",
                    node.name
                )
            }
            None => format!(
                "node `{}` at position {i} of [[cluster.node]] renamed to `{}`; {why}",
                node.name, now.name
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{live::restart_needed, parse};

    const EXAMPLE: &str = include_str!("../../examples/cluster.toml");

    fn config(text: &str) -> Config {
        parse(Path::new("test.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The example as node gw2 writes it: another [node] and [control], other comments,
    /// layout and key order, inline tables, the same content.
    fn gw2_file() -> String {
        let start = EXAMPLE.find("[[interface]]").unwrap();
        let reordered = EXAMPLE[start..]
            .replace(
                "name = \"web\"\nvip = \"10.0.0.100\"\nport = 80\nprotocol = \"tcp\"",
                "protocol = \"tcp\" # reordered\nport = 80\n  vip   =   \"10.0.0.100\"\nname = 'web'",
            )
            .replace(
                "[[service.backend]]\naddress = \"10.1.0.11\"\nport = 8080\n",
                "backend = [ { port = 8080, address = \"10.1.0.11\" } ]\n",
            )
            .replace("# ", "# reworded: ");
        assert_ne!(reordered, EXAMPLE[start..], "the variant differs in text");
        format!(
            "# node gw2\n[control]\nsocket = \"/run/gw2.sock\"  # its own socket\n\n\
             [node]\nname = \"gw2\"\nnat_ports = \"30000-39999\"\npin_dir = \"/sys/fs/bpf/gw2\"\n\
             key = \"/etc/gateway/gw2.key\"\n\n{reordered}"
        )
    }

    #[test]
    fn equal_content_gives_equal_text() {
        let a = shared_text(EXAMPLE).unwrap();
        let b = shared_text(&gw2_file()).unwrap();
        assert_eq!(a, b);
        assert_eq!(digest(&a), digest(&b));
        assert!(!a.contains("[node]") && !a.contains("[control]"), "{a}");
        assert!(!a.contains('#'), "comments are not content: {a}");
        assert_eq!(
            shared_text(&a).unwrap(),
            a,
            "canonical text is a fixed point"
        );
        // Without the keys' order of the map, the text is still sorted.
        assert!(a.find("[[cluster.node]]").unwrap() < a.find("[[interface]]").unwrap());

        let heavier = EXAMPLE.replace("port = 8080\n", "port = 8080\nweight = 2\n");
        let c = shared_text(&heavier).unwrap();
        assert_ne!(a, c);
        assert_ne!(digest(&a), digest(&c));

        let empty = format!("{EXAMPLE}\n[other]\nx = []\n");
        assert!(
            shared_text(&empty).unwrap().contains("x = []"),
            "only top-level arrays drop"
        );
        assert!(shared_text("[node\n")
            .unwrap_err()
            .contains("not valid TOML"));
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            digest("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "FIPS 180-2 test vector"
        );
    }

    #[test]
    fn versions() {
        let shared = shared_text(EXAMPLE).unwrap();
        assert_eq!(version_of(&shared), 1);
        assert_eq!(
            version_of(&shared_text(&EXAMPLE.replace("config_version = 1 ", "")).unwrap()),
            1,
            "absent is 1"
        );
        let v7 = with_version(&shared, 7).unwrap();
        assert_eq!(version_of(&v7), 7);
        assert_eq!(shared_text(&v7).unwrap(), v7, "canonical");
        assert_ne!(digest(&v7), digest(&shared));
        assert_eq!(with_version(&v7, 1).unwrap(), shared);
        assert!(with_version(&shared, 0).is_err());
        let alone = shared_text("[[interface]]\nname = \"a\"\nrole = \"external\"\n").unwrap();
        assert!(with_version(&alone, 2).unwrap_err().contains("[cluster]"));
        assert_eq!(version_of("not toml ["), 1);
    }

    #[test]
    fn merge_keeps_the_local_tables_and_takes_the_shared_part() {
        let heavier = EXAMPLE.replace("port = 8080\n", "port = 8080\nweight = 5\n");
        let shared = with_version(&shared_text(&heavier).unwrap(), 4).unwrap();
        let local = gw2_file();
        let merged = merge(&local, &shared).unwrap();
        assert!(
            merged.contains("# its own socket"),
            "local comments kept: {merged}"
        );
        assert!(merged.contains("version 4"), "{merged}");
        assert!(
            !merged.contains("reworded"),
            "the old shared part is gone: {merged}"
        );

        let c = parse(Path::new("gw2.toml"), &merged).unwrap_or_else(|e| panic!("{e}\n{merged}"));
        assert_eq!(c.name, "gw2");
        assert_eq!(c.nat_ports, (30000, 39999));
        assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/gw2"));
        assert_eq!(c.socket, Path::new("/run/gw2.sock"));
        assert_eq!(c.key.as_deref(), Some(Path::new("/etc/gateway/gw2.key")));
        assert_eq!(c.services[0].backends[0].weight, 5);
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.me, 1);
        assert_eq!(cluster.config_version, 4);
        assert_eq!(shared_text(&merged).unwrap(), shared);

        // Merging again replaces the cluster's part and its comment, and nothing piles up.
        assert_eq!(merge(&merged, &shared).unwrap(), merged);
        let v5 = with_version(&shared, 5).unwrap();
        let again = merge(&merged, &v5).unwrap();
        assert_eq!(
            again.matches("cluster-wide configuration").count(),
            1,
            "{again}"
        );
        assert!(again.contains("version 5"), "{again}");

        assert!(merge(&local, "[node]\nname = \"x\"\n")
            .unwrap_err()
            .contains("[node]"));
        assert!(merge("[node\n", &shared).unwrap_err().contains("this node"));
    }

    /// The example with `from` replaced by `to` (which must be there).
    fn changed(from: &str, to: &str) -> Config {
        assert!(EXAMPLE.contains(from), "example lacks {from}");
        config(&EXAMPLE.replacen(from, to, 1))
    }

    #[test]
    fn what_needs_a_restart() {
        let old = config(EXAMPLE);
        let cases: [(&str, &str, &[&str]); 12] = [
            ("port = 8080\n", "port = 8080\nweight = 3\n", &[]),
            (
                "interval = \"100ms\"",
                "interval = \"200ms\"",
                &["cluster.monitor"],
            ),
            ("config_version = 1 ", "config_version = 9 ", &[]),
            (
                "[cluster.monitor]",
                "[cluster.balance]\nhold = \"9s\"\n[cluster.monitor]",
                &["cluster.balance"],
            ),
            ("role = \"internal\"", "role = \"external\"", &["interface"]),
            ("persistence = 1", "persistence = 0", &["vip"]),
            ("lease = \"500ms\"", "lease = \"300ms\"", &["cluster"]),
            ("witness = [\"10.0.0.1\"]", "witness = []", &["cluster"]),
            ("active_key = 1 ", "active_key = 2 ", &[]),
            ("tries = 4", "tries = 5", &["cluster.timers"]),
            (
                "addresses = [\"10.0.0.4\", \"10.1.0.4\"]",
                "addresses = [\"10.0.0.5\", \"10.1.0.5\"]",
                &["cluster.node"],
            ),
            ("port = 7400 ", "port = 7401 ", &["cluster"]),
        ];
        for (from, to, expected) in cases {
            assert_eq!(restart_needed(&old, &changed(from, to)), expected, "{to}");
        }
        let mut both = changed("tries = 4", "tries = 5");
        both.interfaces.reverse();
        assert_eq!(restart_needed(&old, &both), ["interface", "cluster.timers"]);
        let mut alone = old.clone();
        alone.cluster = None;
        assert_eq!(restart_needed(&old, &alone), ["cluster"]);
        assert!(restart_needed(&alone, &alone).is_empty());
    }

    #[test]
    fn nodes_keep_their_place() {
        let old = config(EXAMPLE);
        let gw4 = "\n[[cluster.node]]\nname = \"gw4\"\naddresses = [\"10.0.0.5\", \"10.1.0.5\"]\n\
                   public_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";
        let appended = config(&format!("{EXAMPLE}{gw4}"));
        assert_eq!(refuse(&old, &appended), Ok(()));
        assert_eq!(refuse(&appended, &old), Ok(()), "the last node may go");
        assert_eq!(refuse(&old, &old), Ok(()));

        let mut swapped = config(EXAMPLE);
        let nodes = &mut swapped.cluster.as_mut().unwrap().nodes;
        nodes.swap(1, 2);
        let e = refuse(&old, &swapped).unwrap_err();
        assert!(e.contains("`gw2` moved from position 1 to 2"), "{e}");
        assert!(e.contains("node ids are positions"), "{e}");

        let renamed = config(&EXAMPLE.replacen("name = \"gw3\"", "name = \"gw9\"", 1));
        let e = refuse(&old, &renamed).unwrap_err();
        assert!(
            e.contains("`gw3` at position 2") && e.contains("renamed to `gw9`"),
            "{e}"
        );

        let mut middle = appended.clone();
        middle.cluster.as_mut().unwrap().nodes.remove(1);
        let e = refuse(&appended, &middle).unwrap_err();
        assert!(e.contains("`gw2` removed from position 1"), "{e}");

        let mut alone = old.clone();
        alone.cluster = None;
        assert!(refuse(&old, &alone).unwrap_err().contains("no [cluster]"));
        assert_eq!(refuse(&alone, &old), Ok(()));
    }
}
