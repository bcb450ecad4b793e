//! The load of a chaos run, from the client namespace through every external VIP: kept-alive
//! HTTP connections that each ask every [`REQUEST_EVERY`] and must always be answered by their
//! first back-end, and a stream of new connections (open, one request, close) from the client
//! addresses in turn. Every failure is kept with its time, so the report can say which fault
//! it fell into.
use crate::client::{http_get, KeepAlive};
use crate::cluster::Cluster;
use crate::cluster_topology::EXTERNAL_VIPS;
use crate::topology::client_addrs;
use anyhow::{bail, Result};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Kept-alive connections per external VIP.
pub const KEPT_PER_VIP: usize = 20;
/// How often each kept-alive connection asks.
pub const REQUEST_EVERY: Duration = Duration::from_millis(100);
/// The pause between two new connections of one VIP's stream (about 100 a second per VIP
/// when nothing fails).
const NEW_EVERY: Duration = Duration::from_millis(10);

/// A kept-alive connection that broke (a request that failed: error, timeout, reset, closed,
/// or an answer from another back-end than the connection's first), or a new connection that
/// failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When the failed request was sent, or the new connection opened.
    pub at: Instant,
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The client address it came from.
    pub src: Ipv4Addr,
    /// What went wrong.
    pub error: String,
}

/// What the load saw.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Kept-alive connections opened (a broken one is replaced by a new one, which counts too).
    pub kept_opened: u64,
    /// Requests answered on kept-alive connections.
    pub kept_requests: u64,
    /// The kept-alive connections that broke.
    pub breaks: Vec<Failure>,
    /// New connections that succeeded.
    pub new_ok: u64,
    /// New connections that failed.
    pub new_failures: Vec<Failure>,
}

impl LoadReport {
    /// New connections tried.
    pub fn new_total(&self) -> u64 {
        self.new_ok + self.new_failures.len() as u64
    }

    fn merge(&mut self, other: LoadReport) {
        self.kept_opened += other.kept_opened;
        self.kept_requests += other.kept_requests;
        self.breaks.extend(other.breaks);
        self.new_ok += other.new_ok;
        self.new_failures.extend(other.new_failures);
    }
}

/// The running load; [`Load::stop`] ends it and reports.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<LoadReport>>>,
    /// Each kept-alive connection that broke, as it breaks: its client address and port.
    broken: mpsc::Receiver<SocketAddrV4>,
}

impl Load {
    /// Starts the load on every external VIP of `cluster`; returns once every kept-alive
    /// connection has had its first answer.
    pub fn start(cluster: &Cluster) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let srcs = client_addrs();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (broken_tx, broken) = mpsc::channel();
        let mut threads = Vec::new();
        for (v, vip) in EXTERNAL_VIPS.into_iter().enumerate() {
            let dst = Cluster::web(vip);
            for k in 0..KEPT_PER_VIP {
                let src = srcs[(v * KEPT_PER_VIP + k) % srcs.len()];
                let (stop, ready, broken) = (stop.clone(), ready_tx.clone(), broken_tx.clone());
                threads.push(
                    cluster
                        .client()
                        .spawn(move || kept_alive(src, dst, &stop, &ready, &broken)),
                );
            }
            let (stop, srcs) = (stop.clone(), srcs.clone());
            threads.push(
                cluster
                    .client()
                    .spawn(move || new_stream(&srcs, dst, &stop)),
            );
        }
        let load = Self {
            stop,
            threads,
            broken,
        };
        for _ in 0..EXTERNAL_VIPS.len() * KEPT_PER_VIP {
            if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                // Dropping the load stops what did start.
                bail!("a kept-alive connection got no first answer");
            }
        }
        Ok(load)
    }

    /// The kept-alive connections that broke since the last call (client address and port).
    pub fn broken(&self) -> Vec<SocketAddrV4> {
        self.broken.try_iter().collect()
    }

    /// Stops the load and reports what it saw.
    pub fn stop(mut self) -> Result<LoadReport> {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = LoadReport::default();
        for thread in self.threads.drain(..) {
            report.merge(thread.join().expect("load thread panicked")?);
        }
        Ok(report)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Opens a kept-alive connection and asks once; returns it with its back-end.
fn open(src: Ipv4Addr, dst: SocketAddrV4) -> Result<(KeepAlive, String)> {
    let mut conn = KeepAlive::connect(src, dst)?;
    let backend = conn.get()?;
    Ok((conn, backend))
}

/// One kept-alive connection slot: a connection that asks on a fixed schedule; one that
/// breaks is recorded and replaced (retried each tick until one opens), so the load stays the
/// same through every fault.
fn kept_alive(
    src: Ipv4Addr,
    dst: SocketAddrV4,
    stop: &AtomicBool,
    ready: &mpsc::Sender<()>,
    broken: &mpsc::Sender<SocketAddrV4>,
) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut current = Some(open(src, dst)?);
    report.kept_opened += 1;
    let _ = ready.send(());
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        next += REQUEST_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let Some((conn, backend)) = current.as_mut() else {
            if let Ok(opened) = open(src, dst) {
                current = Some(opened);
                report.kept_opened += 1;
            }
            continue;
        };
        let at = Instant::now();
        let port = conn.local_port().unwrap_or(0);
        let error = match conn.get() {
            Ok(body) if body == *backend => {
                report.kept_requests += 1;
                continue;
            }
            Ok(body) => format!("answered by {body}"),
            Err(e) => format!("{e:#}"),
        };
        report.breaks.push(Failure {
            at,
            vip: *dst.ip(),
            src,
            error: format!("(port {port}, on {backend}) {error}"),
        });
        let _ = broken.send(SocketAddrV4::new(src, port));
        current = None;
    }
    Ok(report)
}

/// New connections to `dst`, one after another from each of `srcs` in turn.
fn new_stream(srcs: &[Ipv4Addr], dst: SocketAddrV4, stop: &AtomicBool) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    for &src in srcs.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let at = Instant::now();
        match http_get(src, dst) {
            Ok(_) => report.new_ok += 1,
            Err(e) => report.new_failures.push(Failure {
                at,
                vip: *dst.ip(),
                src,
                error: format!("{e:#}"),
            }),
        }
        std::thread::sleep(NEW_EVERY);
    }
    Ok(report)
}
