//! The control client: sends one request to the daemon and prints the answer as JSON
//! (`--json`) or as a table for people; and the `key` commands, which need no daemon.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde_json::Value;

use crate::config::node_key::NodeKey;
use crate::control::{Admin, Request, Response};

/// Why a command failed, mapped to the documented exit codes.
#[derive(Debug)]
pub enum Failure {
    /// The daemon answered with an error (exit 1).
    Daemon(String),
    /// The daemon could not be reached (exit 3).
    Unreachable(String),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Daemon(_) => 1,
            Failure::Unreachable(_) => 3,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Daemon(e) => write!(f, "daemon: {e}"),
            Failure::Unreachable(e) => write!(f, "daemon not reachable: {e}"),
        }
    }
}

/// `gateway key generate FILE`: writes a new node key to `path` and returns the line to paste
/// into the node's `[[cluster.node]]` entry in every node's file.
pub fn key_generate(path: &Path) -> anyhow::Result<String> {
    let key = NodeKey::generate(path)?;
    Ok(format!("public_key = \"{}\"", key.public()))
}

/// `gateway key public FILE`: the public key of a key file, as `[[cluster.node]] public_key`
/// lists it (to add an existing node, or to check which key a file holds).
pub fn key_public(path: &Path) -> anyhow::Result<String> {
    Ok(NodeKey::load(path)?.public().to_string())
}

/// Sends `request` and returns the daemon's data.
pub fn call(socket: &Path, request: &Request) -> Result<Value, Failure> {
    let unreachable =
        |e: std::io::Error| Failure::Unreachable(format!("{}: {e}", socket.display()));
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    // Reload waits for the maps to be rewritten; big tables take a while.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unreachable)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(unreachable)?;
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| Failure::Unreachable(format!("bad answer from the daemon: {e}")))?;
    match response {
        Response { ok: true, data, .. } => Ok(data),
        Response { error, .. } => Err(Failure::Daemon(error.unwrap_or_default())),
    }
}

/// How long `gateway stop` waits for the daemon to end (its stop detaches XDP or hands the
/// pins over, and waits at most a second for the data-path worker).
pub const STOP_WAIT: Duration = Duration::from_secs(30);

/// Waits until the daemon that answered a stop with its `pid` has ended (or is a zombie its
/// parent has not reaped yet), at most `within`.
pub fn wait_for_exit(answer: &Value, within: Duration) -> Result<(), Failure> {
    let Some(pid) = answer["pid"].as_u64() else {
        return Ok(()); // an older daemon: it said "stopping" only
    };
    let started = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        // The state follows the command in parentheses: `Z` is a zombie, `X` dead.
        let ended = stat.as_deref().map_or(true, |s| {
            s.rsplit_once(')').is_some_and(|(_, rest)| {
                matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))
            })
        });
        if ended {
            return Ok(());
        }
        if started.elapsed() >= within {
            return Err(Failure::Daemon(format!(
                "stop: the daemon (pid {pid}) has not exited after {within:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Lays out rows under a header with aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

/// The strings of a JSON array (none for anything else).
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn rows(v: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    v.as_array()
        .map(|list| {
            list.iter()
                .map(|item| fields.iter().map(|f| text(&item[*f])).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// Human rendering of a view.
pub fn render(request: &Request, v: &Value) -> String {
    match request {
        Request::Status => {
            let mut out = format!(
                "node {}  up {}s  xdp {}{}  services {}  connections {}\n\
                 longest shell iteration {} ms ({} ms on CPU, {} ms outside socket sends)  \
                 longest datapath wait {} ms  stalls {} (longest {} ms)\n\n",
                text(&v["node"]),
                v["uptime_s"],
                text(&v["xdp_mode"]),
                if v["adopted"] == Value::Bool(true) {
                    " (adopted)"
                } else {
                    ""
                },
                v["services"],
                v["connections"],
                v["latency"]["longest_shell_iteration_ms"],
                v["latency"]["longest_shell_iteration_cpu_ms"],
                v["latency"]["longest_shell_work_ms"],
                v["latency"]["longest_datapath_wait_ms"],
                v["latency"]["stalls"],
                v["latency"]["longest_stall_ms"]
            );
            if v["latency"]["too_slow"] == Value::Bool(true) {
                out = format!(
                    "WARNING: this node could not act for {} ms in the last 30-60 s; its peers \
                     give up on it after {} ms: the host is too slow for the ring's timers\n{out}",
                    v["latency"]["recent_longest_delay_ms"], v["latency"]["give_up_ms"]
                );
            }
            out += &table(
                &["INTERFACE", "IFINDEX", "ROLE", "MAC", "ADDRESS"],
                &rows(
                    &v["interfaces"],
                    &["name", "ifindex", "role", "mac", "address"],
                ),
            );
            out += "\n";
            out += &table(
                &["VIP", "INTERFACE", "OWNED"],
                &rows(&v["vips"], &["address", "interface", "owned"]),
            );
            if !v["cluster"].is_null() {
                out += "\n";
                out += &render_cluster(&v["cluster"]);
            }
            out
        }
        Request::Services => {
            let mut body = Vec::new();
            for s in v.as_array().into_iter().flatten() {
                for b in s["backends"].as_array().into_iter().flatten() {
                    body.push(vec![
                        text(&s["name"]),
                        format!("{}:{}/{}", text(&s["vip"]), s["port"], text(&s["protocol"])),
                        text(&s["table_size"]),
                        format!("{}:{}", text(&b["address"]), b["port"]),
                        text(&b["weight"]),
                        if b["healthy"] == Value::Bool(true) {
                            "up"
                        } else {
                            "down"
                        }
                        .into(),
                        text(&b["connections"]),
                        text(&b["packets"]),
                        text(&b["bytes"]),
                    ]);
                }
            }
            table(
                &[
                    "SERVICE", "VIP", "TABLE", "BACKEND", "WEIGHT", "HEALTH", "CONNS", "PACKETS",
                    "BYTES",
                ],
                &body,
            )
        }
        Request::Conns(_) => table(
            &[
                "CLIENT", "VIP", "PROTO", "BACKEND", "NAT", "STATE", "AGE_S", "IDLE_S",
            ],
            &rows(
                v,
                &[
                    "client", "vip", "protocol", "backend", "nat_port", "state", "age_s", "idle_s",
                ],
            ),
        ),
        Request::Stats => {
            let mut out = String::new();
            for group in ["actions", "paths", "reasons"] {
                let body: Vec<Vec<String>> = v[group]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, n)| vec![k.clone(), text(n)])
                    .collect();
                out += &table(&[&group.to_uppercase(), "PACKETS"], &body);
                out += "\n";
            }
            if let Some(cluster) = v["cluster"].as_object() {
                let body: Vec<Vec<String>> = cluster
                    .iter()
                    .map(|(k, n)| vec![k.clone(), text(n)])
                    .collect();
                out += &table(&["CLUSTER MESSAGES", "COUNT"], &body);
                out += "\n";
            }
            for group in ["services", "backends"] {
                let body: Vec<Vec<String>> = v[group]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, c)| vec![k.clone(), text(&c["packets"]), text(&c["bytes"])])
                    .collect();
                out += &table(&[&group.to_uppercase(), "PACKETS", "BYTES"], &body);
                out += "\n";
            }
            out
        }
        Request::Reload => "reloaded\n".into(),
        Request::Admin(admin) => match admin {
            Admin::MoveVip { vip, node } => format!("{vip} moved to {node}\n"),
            Admin::PreferVip { vip, node } => format!("{vip} prefers {node}\n"),
            Admin::PinVip { vip, persistence } => format!("{vip} has persistence {persistence}\n"),
            Admin::CloseNode { node, .. } => format!("{node} closed\n"),
            Admin::OpenNode { node } => format!("{node} open\n"),
        },
        Request::Stop { .. } => "stopped\n".into(),
    }
}

/// The cluster part of `status`: this node, the ring in order with loads, the VIP owners, and
/// what the protocol dropped.
fn render_cluster(c: &Value) -> String {
    let faults: Vec<String> = c["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let round = c["token"]["round_ms"]
        .as_f64()
        .map_or("-".to_string(), |ms| format!("{ms:.1}ms"));
    // This node's configuration version, and the ring's when it differs or a new one is on
    // its way.
    let mut config = format!("v{}", c["config_version"]);
    if c["ring_config_version"].is_u64() && c["ring_config_version"] != c["config_version"] {
        config += &format!(" (ring v{})", c["ring_config_version"]);
    }
    if c["config_offer"].is_u64() {
        config += &format!(" (v{} offered)", c["config_offer"]);
    }
    let mut out = format!(
        "cluster: {} (id {}) {}  token seq {}  round {}  config {}  faults: {}\n",
        text(&c["node"]),
        c["node_id"],
        text(&c["state"])
            + if c["quorum_wait"].as_bool() == Some(true) {
                " (takes over no VIP of the members it lost yet)"
            } else {
                ""
            },
        c["token"]["seq"],
        round,
        config,
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(", ")
        }
    );
    let (closed, unready) = (strings(&c["closed"]), strings(&c["unready"]));
    let members: Vec<Vec<String>> = c["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = text(&m["name"]);
            let load = &m["load"];
            vec![
                text(&m["id"]),
                if closed.contains(&name.as_str()) {
                    format!("{name} (closed)")
                } else if unready.contains(&name.as_str()) {
                    format!("{name} (joining: no VIP until its tables are whole)")
                } else {
                    name
                },
                text(&load["bytes_per_s"]),
                text(&load["packets_per_s"]),
                load["cpu_permille"]
                    .as_f64()
                    .map_or("-".to_string(), |p| format!("{:.1}", p / 10.0)),
            ]
        })
        .collect();
    out += &table(&["ID", "MEMBER", "BYTES/S", "PKTS/S", "CPU%"], &members);
    out += "\n";
    out += &table(
        &["VIP", "OWNER", "PREFERRED", "PERSISTENCE", "PKTS/S"],
        &rows(
            &c["vips"],
            &[
                "address",
                "owner",
                "preferred",
                "persistence",
                "packets_per_s",
            ],
        ),
    );
    let t = &c["transport"];
    let mut dropped: Vec<String> = t
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, n)| !DELIVERY_COUNTERS.contains(&k.as_str()) && n.as_u64() > Some(0))
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if let Some(n) = c["send_failed"].as_u64().filter(|n| *n > 0) {
        dropped.push(format!("send_failed {n}"));
    }
    out += &format!(
        "messages: sent {} resent {} acked {} received {}  dropped: {}\n",
        t["sent"],
        t["resent"],
        t["acked"],
        t["received"],
        if dropped.is_empty() {
            "none".to_string()
        } else {
            dropped.join(", ")
        }
    );
    out
}

/// Transport counters that count work done rather than datagrams dropped.
const DELIVERY_COUNTERS: [&str; 7] = [
    "sent",
    "resent",
    "acks_sent",
    "acked",
    "delivered",
    "unreachable",
    "received",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["wide-cell".into(), "1".into()]]);
        assert_eq!(t, "A          LONGER\nwide-cell  1\n");
    }

    #[test]
    fn renders_services() {
        let v = json!([{"name": "web", "vip": "10.0.0.100", "port": 80, "protocol": "tcp",
            "table_size": 211, "backends": [{"address": "10.1.0.11", "port": 8080, "weight": 1,
            "healthy": false, "connections": 3, "packets": 10, "bytes": 600}]}]);
        let out = render(&Request::Services, &v);
        assert!(out.contains("web"));
        assert!(out.contains("10.0.0.100:80/tcp"));
        assert!(out.contains("10.1.0.11:8080"));
        assert!(out.contains("down"));
    }

    #[test]
    fn renders_the_cluster() {
        let v = json!({"node": "gw1", "uptime_s": 3, "xdp_mode": "native", "adopted": false,
            "interfaces": [], "vips": [], "services": 0, "connections": 0,
            "latency": {"longest_shell_iteration_ms": 0.8, "longest_shell_iteration_cpu_ms": 0.3,
                        "longest_shell_work_ms": 0.1,
                        "longest_datapath_wait_ms": 2.5, "stalls": 1, "longest_stall_ms": 120.5},
            "cluster": {"node": "gw1", "node_id": 0, "state": "member",
                "members": [{"id": 0, "name": "gw1", "load": null},
                            {"id": 1, "name": "gw2", "load": {"bytes_per_s": 10,
                             "packets_per_s": 2, "cpu_permille": 55}},
                            {"id": 2, "name": "gw3", "load": null}],
                "token": {"seq": 77, "round_ms": 2.25}, "config_version": 1,
                "vips": [{"address": "10.0.0.100", "owner": "gw2", "preferred": null,
                          "persistence": 0}],
                "closed": ["gw2"], "unready": ["gw3"],
                "faults": ["witness 10.0.0.1 unreachable"],
                "transport": {"sent": 5, "resent": 1, "acked": 4, "received": 6,
                              "bad_auth": 2, "replayed": 0},
                "undecodable": 0}});
        let out = render(&Request::Status, &v);
        assert!(
            out.contains(
                "longest shell iteration 0.8 ms (0.3 ms on CPU, 0.1 ms outside socket sends)  \
                 longest datapath wait 2.5 ms  stalls 1 (longest 120.5 ms)"
            ),
            "{out}"
        );
        assert!(out.contains("token seq 77  round 2.2ms"), "{out}");
        assert!(out.contains("gw2 (closed)"), "{out}");
        assert!(
            out.contains("gw3 (joining: no VIP until its tables are whole)"),
            "{out}"
        );
        assert!(out.contains("10.0.0.100  gw2"), "{out}");
        assert!(
            out.contains("faults: witness 10.0.0.1 unreachable"),
            "{out}"
        );
        assert!(out.contains("dropped: bad_auth 2\n"), "{out}");
    }

    #[test]
    fn key_commands() {
        let dir = crate::config::node_key::tests::TempDir::new("cli");
        let path = dir.0.join("node.key");
        let line = key_generate(&path).unwrap();
        let public = key_public(&path).unwrap();
        assert_eq!(line, format!("public_key = \"{public}\""));
        assert!(public.parse::<crate::config::node_key::PublicKey>().is_ok());
        assert!(key_generate(&path)
            .unwrap_err()
            .to_string()
            .contains("exists already"));
        assert!(key_public(&dir.0.join("none.key")).is_err());
    }

    #[test]
    fn unreachable_socket_is_exit_3() {
        let e = call(Path::new("/nonexistent/gateway.sock"), &Request::Status).unwrap_err();
        assert_eq!(e.exit_code(), 3);
    }
}
