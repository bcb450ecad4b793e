//! The control socket: a root-only Unix socket carrying one JSON request line and one JSON
//! response line per connection. The daemon binds it only once the data path is ready.
pub mod client;
pub mod views;

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use crate::daemon::Shared;

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
    },
    /// Let a closed `node` own VIPs again.
    OpenNode {
        /// The node's name.
        node: String,
    },
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

/// Requests the main loop must handle (they change the daemon's life, not just read state).
pub enum Command {
    /// Reload the config; the answer says whether it was applied.
    Reload(oneshot::Sender<Result<(), String>>),
    /// Stop, possibly keeping the data path.
    Stop {
        /// Leave XDP attached and pinned.
        keep_datapath: bool,
    },
    /// A cluster change; the answer comes once the ring carried it out or gave up.
    Admin(Admin, oneshot::Sender<Result<(), String>>),
}

/// The bound socket; removes its file when dropped.
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Fails when a daemon already answers on `path`, before anything of it is touched.
pub fn ensure_free(path: &Path) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("{} is in use: another daemon is running", path.display());
    }
    Ok(())
}

/// Binds the socket (0600) in a directory created 0700 if missing, replacing a stale file.
pub fn bind(path: &Path) -> Result<Socket> {
    // A directory we create is 0700; an existing one (shared, e.g. /tmp) is left as it is.
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    ensure_free(path)?;
    if path.exists() {
        fs::remove_file(path)?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(Socket {
        listener,
        path: path.to_path_buf(),
    })
}

/// Serves clients until the task is dropped.
pub async fn serve(socket: Socket, shared: Shared, commands: mpsc::Sender<Command>) {
    loop {
        let stream = match socket.listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("control socket accept: {e}");
                continue;
            }
        };
        let (shared, commands) = (shared.clone(), commands.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, shared, commands).await {
                debug!("control client: {e:#}");
            }
        });
    }
}

async fn handle(stream: UnixStream, shared: Shared, commands: mpsc::Sender<Command>) -> Result<()> {
    let root = stream.peer_cred().map(|c| c.uid() == 0).unwrap_or(false);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response: Response = if !root {
        Err("permission denied: the control socket is root-only".to_string()).into()
    } else {
        match serde_json::from_str::<Request>(&line) {
            Err(e) => Err(format!("bad request: {e}")).into(),
            Ok(request) => answer(request, &shared, &commands).await.into(),
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

async fn answer(
    request: Request,
    shared: &Shared,
    commands: &mpsc::Sender<Command>,
) -> Result<Value, String> {
    fn gone<E>(_: E) -> String {
        "the daemon is stopping".to_string()
    }
    match request {
        Request::Status => Ok(views::status(&shared.lock().unwrap())),
        Request::Services => views::services(&shared.lock().unwrap()),
        Request::Conns(filter) => views::conns(&shared.lock().unwrap(), &filter),
        Request::Stats => Ok(crate::datapath::counters::view(&shared.lock().unwrap())),
        Request::Reload => {
            let (tx, rx) = oneshot::channel();
            commands.send(Command::Reload(tx)).await.map_err(gone)?;
            rx.await.map_err(gone)??;
            Ok(Value::Null)
        }
        Request::Stop { keep_datapath } => {
            commands
                .send(Command::Stop { keep_datapath })
                .await
                .map_err(gone)?;
            Ok(Value::Null)
        }
        Request::Admin(admin) => {
            let (tx, rx) = oneshot::channel();
            commands
                .send(Command::Admin(admin, tx))
                .await
                .map_err(gone)?;
            rx.await.map_err(gone)??;
            Ok(Value::Null)
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
        assert_eq!(
            serde_json::to_string(&Request::Admin(Admin::CloseNode { node: "gw3".into() }))
                .unwrap(),
            r#"{"cmd":"admin","op":"close_node","node":"gw3"}"#
        );
        let bad: Response = Err("nope".to_string()).into();
        assert_eq!(
            serde_json::to_string(&bad).unwrap(),
            r#"{"ok":false,"data":null,"error":"nope"}"#
        );
    }
}
