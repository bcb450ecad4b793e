//! The control socket: a root-only Unix socket carrying one JSON request line and one JSON
//! response line per connection. The daemon binds it only once the data path is ready. Views
//! are answered here from the daemon's snapshots; commands that change something go to the
//! daemon's main loop.
//!
//! What a client can cost the daemon is bounded: a caller that is not root is answered before
//! anything is read; a request line is read up to `MAX_REQUEST` bytes within
//! `REQUEST_TIMEOUT`, and the answer written within `ANSWER_TIMEOUT`; at most `MAX_CLIENTS`
//! are served at once, and one more is told the daemon is busy and closed at once; a failing
//! accept (out of file descriptors) waits before the next try and is logged once per
//! `LOG_EVERY` ([`AcceptBackoff`]).
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
    time::timeout,
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

/// The longest request line read: the largest real request (`conns` with a filter) is a few
/// hundred bytes.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a client has to send its whole request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client has to take its answer (a `conns` listing of a full table is the
/// largest).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients served at once.
const MAX_CLIENTS: usize = 64;
/// The first wait after a failed accept; it doubles with each failure in a row, up to
/// `MAX_ACCEPT_WAIT`.
const FIRST_ACCEPT_WAIT: Duration = Duration::from_millis(10);
const MAX_ACCEPT_WAIT: Duration = Duration::from_secs(1);
/// Accept failures are logged at most once per this, with the count of those not logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves clients until the task is dropped.
pub async fn serve(socket: Socket, sources: Arc<Sources>, commands: mpsc::Sender<Command>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = match socket.listener.accept().await {
            Ok((stream, _)) => {
                backoff.accepted();
                stream
            }
            Err(e) => {
                let (wait, log) = backoff.failed(Instant::now());
                if let Some(unlogged) = log {
                    warn!(unlogged, wait = ?wait, "control socket accept: {e}");
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // A small answer fits the socket's buffer: written without waiting, or not at all.
            let busy = format!("the daemon serves {MAX_CLIENTS} clients already: try again");
            let _ = stream.try_write(&encode(&Err::<Value, _>(busy).into()));
            continue;
        };
        let (sources, commands) = (sources.clone(), commands.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &sources, commands).await {
                debug!("control client: {e:#}");
            }
            drop(slot);
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
    let response: Response = if !root {
        Err("permission denied: the control socket is root-only".to_string()).into()
    } else {
        match read_request(read).await {
            Err(e) => Err(e).into(),
            Ok(request) => answer(request, sources, &commands).await.into(),
        }
    };
    timeout(ANSWER_TIMEOUT, write.write_all(&encode(&response)))
        .await
        .context("the client took no answer")??;
    Ok(())
}

/// Reads one request line, bounded in length and time.
async fn read_request(read: impl tokio::io::AsyncRead + Unpin) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    match timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => return Err(format!("no request line within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST {
        return Err(format!("a request is at most {MAX_REQUEST} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| format!("bad request: {e}"))
}

/// A response as its line on the socket.
fn encode(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Failed accepts in a row: how long to wait before the next try (a listener out of file
/// descriptors fails at once, every time, while its backlog holds a client) and whether to
/// log this one.
#[derive(Debug)]
struct AcceptBackoff {
    wait: Duration,
    logged: Option<Instant>,
    unlogged: u64,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self {
            wait: FIRST_ACCEPT_WAIT,
            logged: None,
            unlogged: 0,
        }
    }
}

impl AcceptBackoff {
    /// An accept failed at `now`: the wait before the next, and, when it is to be logged,
    /// how many failures since the last logged one were not.
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let wait = self.wait;
        self.wait = (self.wait * 2).min(MAX_ACCEPT_WAIT);
        let log = self.logged.is_none_or(|at| now >= at + LOG_EVERY);
        if !log {
            self.unlogged += 1;
            return (wait, None);
        }
        self.logged = Some(now);
        (wait, Some(std::mem::take(&mut self.unlogged)))
    }

    /// An accept succeeded: the next failure waits briefly again.
    fn accepted(&mut self) {
        self.wait = FIRST_ACCEPT_WAIT;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_back_off_and_are_logged_once_per_interval() {
        let t0 = Instant::now();
        let mut backoff = AcceptBackoff::default();
        let ms = Duration::from_millis;
        assert_eq!(backoff.failed(t0), (ms(10), Some(0)));
        assert_eq!(backoff.failed(t0 + ms(10)), (ms(20), None));
        for _ in 0..10 {
            backoff.failed(t0 + ms(100));
        }
        assert_eq!(backoff.failed(t0 + ms(200)).0, MAX_ACCEPT_WAIT);
        // The next logged one says how many were not.
        assert_eq!(backoff.failed(t0 + LOG_EVERY), (MAX_ACCEPT_WAIT, Some(12)));
        backoff.accepted();
        assert_eq!(backoff.failed(t0 + LOG_EVERY + ms(1)), (ms(10), None));
    }

    #[tokio::test]
    async fn a_request_line_is_bounded_in_length_and_time() {
        let long = vec![b'x'; MAX_REQUEST + 10];
        let err = read_request(&long[..]).await.unwrap_err();
        assert!(err.contains("at most 65536 bytes"), "{err}");
        let ok = read_request(&b"{\"cmd\":\"status\"}\n"[..]).await;
        assert!(matches!(ok, Ok(Request::Status)), "{ok:?}");
        // A client that sends nothing and keeps the socket open.
        let (_client, server) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let err = read_request(server).await.unwrap_err();
        assert!(err.contains("no request line"), "{err}");
        assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(1));
    }
}
