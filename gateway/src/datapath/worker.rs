//! The datapath worker: one thread that alone owns the connection and service tables
//! ([`Tables`]) and does all table-sized work on them: the sweep of idle connections (a chunk
//! at a time, serving requests between chunks), the copy stream's diff, the take-over of a
//! dead node's connections, re-pointing forwarding entries, Maglev writes on a health change or
//! a new configuration, and whole-table reads for `gateway conns`. Everyone else sends it jobs
//! through a [`DatapathHandle`] and reads what it publishes ([`TableView`]), so nothing on the
//! async runtime waits for a table walk and nothing the ring's timers wait on holds a lock
//! (docs/architecture.md, "One owner per kind of state").
//!
//! The thread runs under `SCHED_IDLE`: it takes only the CPU time the rest of the host leaves,
//! and any other thread that wakes (the ring's shell above all) preempts it at once, so a walk
//! of a big table never delays the ring's timers. (A nice value is not enough: the scheduler
//! lets a running low-priority thread finish its slice, several milliseconds, first.)
use std::{
    collections::HashMap,
    io,
    net::SocketAddrV4,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::{
    cluster::{
        copies::{Catalogue, CopyStream, HeldCopies, Offered},
        message::Copies,
        types::NodeId,
    },
    config::{Config, HealthKind},
    datapath::{
        batch,
        conntrack::{self, monotonic_ns, Census, Entry, Orphans, Sweep, TakenOver},
        maps::{BackendKey, Tables},
    },
};

/// What connection copies may name under `config` (`Catalogue`): its services with the data
/// path's numbering of their back-ends (`Tables::write_services`), its node map and blocks.
fn catalogue(config: &Config) -> Catalogue {
    let mut first_backend = 0u16;
    let services = config
        .services
        .iter()
        .map(|s| {
            let offered = Offered {
                vip: SocketAddrV4::new(s.vip, s.port),
                proto: s.protocol.number(),
                backends: s
                    .backends
                    .iter()
                    .map(|b| SocketAddrV4::new(b.address, b.port))
                    .collect(),
                first_backend,
            };
            first_backend += s.backends.len() as u16;
            offered
        })
        .collect();
    let (nodes, blocks) = match &config.cluster {
        Some(cluster) => (
            cluster.nodes.len(),
            cluster
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    if i == cluster.me {
                        Some(config.nat_ports)
                    } else {
                        n.nat_ports
                    }
                })
                .collect(),
        ),
        None => (0, None),
    };
    Catalogue::new(services, nodes, blocks)
}

/// How often idle connections are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What the worker publishes after each sweep and each change of the services.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableView {
    /// The last sweep's count of connections, in all and per back-end.
    pub census: Census,
    /// Health verdicts of checked back-ends (absent = healthy).
    pub healthy: HashMap<BackendKey, bool>,
    /// Each service's live Maglev table size (0 = no healthy back-end), by service name.
    pub table_sizes: HashMap<String, u32>,
}

impl TableView {
    /// Whether a back-end may take new connections.
    pub fn is_healthy(&self, key: &BackendKey) -> bool {
        self.healthy.get(key).copied().unwrap_or(true)
    }
}

/// A request for the worker: runs on its thread with the tables.
type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The worker's state, on its thread.
pub struct Worker {
    tables: Tables,
    /// The running configuration: services, timeouts.
    config: Arc<Config>,
    /// Health verdicts of checked back-ends (absent = healthy).
    healthy: HashMap<BackendKey, bool>,
    /// This node's connections as its successor holds them.
    copy_stream: CopyStream,
    census: Census,
    view: watch::Sender<TableView>,
}

/// The way to the worker: cheap to clone, one per task that needs the tables.
#[derive(Clone)]
pub struct DatapathHandle {
    jobs: mpsc::Sender<(Instant, Job)>,
    view: watch::Receiver<TableView>,
    /// Longest time a job waited for the worker, in microseconds.
    longest_wait_us: Arc<AtomicU64>,
}

/// The worker thread has ended (the daemon is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the datapath worker has stopped")
    }
}

impl DatapathHandle {
    /// Queues `job`; it runs after every job queued before it.
    pub fn submit(&self, job: impl FnOnce(&mut Worker) + Send + 'static) {
        // A worker that ended took the tables with it: the daemon is stopping.
        let _ = self.jobs.send((Instant::now(), Box::new(job)));
    }

    /// Runs `job` on the worker and waits for its result without blocking the runtime.
    pub async fn call<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Worker) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.submit(move |worker| {
            let _ = tx.send(job(worker));
        });
        rx.await.map_err(|_| Stopped)
    }

    /// What the worker published last.
    pub fn view(&self) -> TableView {
        self.view.borrow().clone()
    }

    /// The longest time a job waited in the queue since the worker started.
    pub fn longest_wait(&self) -> Duration {
        Duration::from_micros(self.longest_wait_us.load(Ordering::Relaxed))
    }
}

/// Starts the worker on `tables`, whose services `config` already wrote. The thread ends once
/// every handle is dropped.
pub fn spawn(tables: Tables, config: Arc<Config>) -> io::Result<(DatapathHandle, JoinHandle<()>)> {
    let (jobs, queue) = mpsc::channel();
    let (view_tx, view) = watch::channel(TableView::default());
    let longest_wait_us = Arc::new(AtomicU64::new(0));
    let mut worker = Worker {
        copy_stream: CopyStream::default(),
        tables,
        config,
        healthy: HashMap::new(),
        census: Census::default(),
        view: view_tx,
    };
    worker.publish();
    let longest = longest_wait_us.clone();
    let thread = std::thread::Builder::new()
        .name("datapath".into())
        .spawn(move || {
            lower_priority();
            worker.run(&queue, &longest);
        })?;
    Ok((
        DatapathHandle {
            jobs,
            view,
            longest_wait_us,
        },
        thread,
    ))
}

/// Puts the calling thread under `SCHED_IDLE`.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the sched_param we own; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        warn!(
            "lowering the datapath worker's priority: {}",
            io::Error::last_os_error()
        );
    }
}

impl Worker {
    /// Serves jobs and sweeps every [`SWEEP_INTERVAL`] until every handle is gone.
    fn run(&mut self, queue: &mpsc::Receiver<(Instant, Job)>, longest: &AtomicU64) {
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        let mut sweep: Option<Sweep> = None;
        loop {
            let job = match &mut sweep {
                Some(s) => {
                    match s.step(&self.tables, &self.config.timeouts) {
                        Ok(None) => {}
                        Ok(Some(census)) => {
                            self.census = census;
                            self.publish();
                            sweep = None;
                        }
                        Err(e) => {
                            warn!("conntrack sweep: {e}");
                            sweep = None;
                        }
                    }
                    match queue.try_recv() {
                        Ok(job) => Some(job),
                        Err(mpsc::TryRecvError::Empty) => None,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                None => {
                    let wait = next_sweep.saturating_duration_since(Instant::now());
                    match queue.recv_timeout(wait) {
                        Ok(job) => Some(job),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            next_sweep = Instant::now() + SWEEP_INTERVAL;
                            sweep = Some(Sweep::new(monotonic_ns()));
                            None
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            // Between two chunks of a sweep, every job queued meanwhile runs.
            let mut next = job;
            while let Some((queued, job)) = next.take() {
                let waited = queued.elapsed().as_micros() as u64;
                longest.fetch_max(waited, Ordering::Relaxed);
                job(self);
                next = queue.try_recv().ok();
            }
        }
    }

    /// Publishes the census, the verdicts and the live table sizes.
    fn publish(&self) {
        let table_sizes = self
            .config
            .services
            .iter()
            .map(|s| (s.name.clone(), self.tables.table_size(s)))
            .collect();
        self.view.send_replace(TableView {
            census: self.census.clone(),
            healthy: self.healthy.clone(),
            table_sizes,
        });
    }

    /// Writes a new configuration's services (health verdicts of back-ends still checked
    /// kept; new or unchecked ones healthy) and makes it the one the sweep uses.
    pub fn apply_config(&mut self, new: Arc<Config>) -> Result<(), String> {
        let keep: HashMap<BackendKey, bool> = new
            .services
            .iter()
            .filter(|s| s.health.kind != HealthKind::None)
            .flat_map(|s| {
                s.backends
                    .iter()
                    .map(move |b| (s.name.clone(), b.address, b.port))
            })
            .filter_map(|k| self.healthy.get(&k).map(|up| (k, *up)))
            .collect();
        self.tables
            .write_services(&new, &keep)
            .map_err(|e| format!("writing the maps: {e:#}"))?;
        self.healthy = keep;
        self.config = new;
        self.publish();
        Ok(())
    }

    /// Records a health verdict and rewrites that service's Maglev table.
    pub fn set_health(&mut self, key: BackendKey, up: bool) {
        self.healthy.insert(key.clone(), up);
        let config = self.config.clone();
        if let Some(id) = config.services.iter().position(|s| s.name == key.0) {
            let service = &config.services[id];
            if let Err(e) = self
                .tables
                .write_service(&config, id as u32, service, &self.healthy)
            {
                warn!("updating the Maglev table of {}: {e:#}", key.0);
            }
        }
        self.publish();
    }

    /// The messages that bring `successor`'s copies of this node's connections up to date.
    pub fn copies_for(&mut self, me: NodeId, successor: NodeId) -> Vec<Copies> {
        match batch::entries(&self.tables.conns) {
            Ok(conns) => self
                .copy_stream
                .sync(me, successor, &conntrack::copies(&conns)),
            Err(e) => {
                warn!("reading the connection table for the successor's copies: {e}");
                Vec::new()
            }
        }
    }

    /// Forgets the successor: the next one gets every connection.
    pub fn stop_copies(&mut self) {
        self.copy_stream.stop();
    }

    /// Follows a node, `gone`, that left the ring and whose NAT block `holder` now serves:
    /// this node's forwarding entries to it point at the holder, and when the holder is this
    /// node, `me`, the dead node's connections are installed from `copies`.
    /// Copies that name no service, back-end, NAT block or node of this configuration are
    /// left out, logged.
    pub fn take_over(&mut self, gone: NodeId, holder: NodeId, me: NodeId, copies: HeldCopies) {
        let (copies, unfit) = catalogue(&self.config).admit(copies.into_vec());
        if let Some((copy, why)) = unfit.first() {
            warn!(node = gone.0, refused = unfit.len(), example = ?copy.id, why = why.name(),
                  "connection copies that do not fit the configuration left out");
        }
        match conntrack::take_over(&self.tables, me, gone, holder, &copies) {
            Ok(done) if done == TakenOver::default() => {}
            Ok(done) => info!(
                node = gone.0,
                holder = holder.0,
                forwarding_dropped = done.removed,
                forwarding_repointed = done.rehomed,
                connections = done.installed,
                "followed a node that left the ring"
            ),
            Err(e) => warn!(node = gone.0, "taking over connections: {e}"),
        }
    }

    /// Every connection with its reply direction, and replies without one.
    pub fn connections(&self) -> io::Result<(Vec<Entry>, Orphans)> {
        conntrack::walk(&self.tables)
    }
}
