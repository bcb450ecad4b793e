//! The control socket: a root-only Unix socket carrying one JSON request line and one JSON
//! response line per connection. The daemon binds it only once the data path is ready. Views
//! are answered here from the daemon's snapshots; commands that change something go to the
//! daemon's main loop.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use super::{
    views::{self, Sources},
    Admin, Request, Response,
};

/// Where the answer to a command that changes something goes: `Ok` once it is done.
pub type Answer = oneshot::Sender<Result<(), String>>;

/// Requests the main loop must handle (they change the daemon's life, not just read state).
pub enum Command {
    /// Reload the config; the answer says whether it was applied.
    Reload(Answer),
    /// Stop, possibly keeping the data path.
    Stop {
        /// Leave XDP attached and pinned.
        keep_datapath: bool,
    },
    /// A cluster change; the answer comes once the ring carried it out or gave up.
    Admin(Admin, Answer),
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
pub async fn serve(socket: Socket, sources: Arc<Sources>, commands: mpsc::Sender<Command>) {
    loop {
        let stream = match socket.listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("control socket accept: {e}");
                continue;
            }
        };
        let (sources, commands) = (sources.clone(), commands.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &sources, commands).await {
                debug!("control client: {e:#}");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    sources: &Sources,
    commands: mpsc::Sender<Command>,
) -> Result<()> {
    let root = stream.peer_cred().map(|c| c.uid() == 0).unwrap_or(false);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response: Response = if !root {
        Err("permission denied: the control socket is root-only".to_string()).into()
    } else {
        match serde_json::from_str::<Request>(&line) {
            Err(e) => Err(format!("bad request: {e}")).into(),
            Ok(request) => answer(request, sources, &commands).await.into(),
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

async fn answer(
    request: Request,
    sources: &Sources,
    commands: &mpsc::Sender<Command>,
) -> Result<Value, String> {
    fn gone<E>(_: E) -> String {
        "the daemon is stopping".to_string()
    }
    match request {
        Request::Status => Ok(views::status(sources)),
        Request::Services => Ok(views::services(sources)),
        Request::Conns(filter) => views::conns(sources, filter).await,
        Request::Stats => Ok(views::stats(sources)),
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
            // The CLI waits for this process to end before it says so.
            Ok(serde_json::json!({ "pid": std::process::id() }))
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
