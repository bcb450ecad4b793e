//! The control client: sends one request to the daemon and prints the answer as JSON
//! (`--json`) or as a table for people.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde_json::Value;

use crate::control::{Request, Response};

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
                "node {}  up {}s  xdp {}{}  services {}  connections {}\n\n",
                text(&v["node"]),
                v["uptime_s"],
                text(&v["xdp_mode"]),
                if v["adopted"] == Value::Bool(true) {
                    " (adopted)"
                } else {
                    ""
                },
                v["services"],
                v["connections"]
            );
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
        Request::Stop { .. } => "stopping\n".into(),
    }
}

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
    fn unreachable_socket_is_exit_3() {
        let e = call(Path::new("/nonexistent/gateway.sock"), &Request::Status).unwrap_err();
        assert_eq!(e.exit_code(), 3);
    }
}
