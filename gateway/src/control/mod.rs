//! The operator's side of the daemon: one vocabulary of requests and answers (here), the
//! root-only socket that carries them (`server`), the JSON views answered from the daemon's
//! snapshots (`views`) and the CLI client (`client`).
pub mod client;
pub mod server;
pub mod views;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Node, NICs, VIPs, counts.
    Status,
    /// Services and their backends.
    Services,
    /// Connections matching the filters.
    Conns(views::ConnFilter),
    /// Counters.
    Stats,
    /// Re-read the config file.
    Reload,
    /// Stop the daemon.
    Stop {
        /// Leave XDP attached and the maps pinned.
        keep_datapath: bool,
    },
    /// Change the cluster; answered once the ring has carried it out.
    Admin(Admin),
}

/// A cluster change asked for by an operator. The daemon answers only once the change was seen
/// on the token (or with the reason it was not), so a script can rely on the exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Admin {
    /// Give `vip` to `node` now.
    MoveVip {
        /// The VIP.
        vip: Ipv4Addr,
        /// Name of the node that takes it.
        node: String,
    },
    /// Make `node` the preferred owner of `vip` (where persistence 3 returns it).
    PreferVip {
        /// The VIP.
        vip: Ipv4Addr,
        /// Name of the preferred node.
        node: String,
    },
    /// Set how `vip` is placed: 0 free, 1 sticky, 3 back to its preferred node.
    PinVip {
        /// The VIP.
        vip: Ipv4Addr,
        /// 0, 1 or 3.
        persistence: u8,
    },
    /// Take every VIP away from `node` and give it none until opened.
    CloseNode {
        /// The node's name.
        node: String,
        /// Close it even when it is the last open node (the cluster then serves no VIP).
        #[serde(default)]
        force: bool,
    },
    /// Let a closed `node` own VIPs again.
    OpenNode {
        /// The node's name.
        node: String,
    },
}

impl std::fmt::Display for Admin {
    /// The command as the CLI spells it, for answers that name what they refer to.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Admin::MoveVip { vip, node } => write!(f, "vip move {vip} {node}"),
            Admin::PreferVip { vip, node } => write!(f, "vip prefer {vip} {node}"),
            Admin::PinVip { vip, persistence } => {
                write!(f, "vip pin {vip} --persistence {persistence}")
            }
            Admin::CloseNode { node, .. } => write!(f, "node close {node}"),
            Admin::OpenNode { node } => write!(f, "node open {node}"),
        }
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result (a view), when `ok`.
    #[serde(default)]
    pub data: Value,
    /// What went wrong, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Result<Value, String>> for Response {
    fn from(r: Result<Value, String>) -> Self {
        match r {
            Ok(data) => Self {
                ok: true,
                data,
                error: None,
            },
            Err(e) => Self {
                ok: false,
                data: Value::Null,
                error: Some(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r: Request = serde_json::from_str(r#"{"cmd":"stop","keep_datapath":true}"#).unwrap();
        assert_eq!(
            r,
            Request::Stop {
                keep_datapath: true
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"cmd":"conns","limit":5,"service":"web"}"#).unwrap();
        let Request::Conns(f) = r else { panic!() };
        assert_eq!((f.limit, f.service.as_deref()), (Some(5), Some("web")));
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        let r: Request = serde_json::from_str(
            r#"{"cmd":"admin","op":"move_vip","vip":"10.0.0.100","node":"gw2"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Admin(Admin::MoveVip {
                vip: Ipv4Addr::new(10, 0, 0, 100),
                node: "gw2".into()
            })
        );
        let close = Admin::CloseNode {
            node: "gw3".into(),
            force: false,
        };
        assert_eq!(
            serde_json::to_string(&Request::Admin(close.clone())).unwrap(),
            r#"{"cmd":"admin","op":"close_node","node":"gw3","force":false}"#
        );
        // An older CLI's request, without the flag.
        let r: Request =
            serde_json::from_str(r#"{"cmd":"admin","op":"close_node","node":"gw3"}"#).unwrap();
        assert_eq!(r, Request::Admin(close.clone()));
        assert_eq!(close.to_string(), "node close gw3");
        let bad: Response = Err("nope".to_string()).into();
        assert_eq!(
            serde_json::to_string(&bad).unwrap(),
            r#"{"ok":false,"data":null,"error":"nope"}"#
        );
    }
}
