//! The cluster shell: the loop around the sans-IO ring (`cluster::ring::Node`), driving it
//! together with the cluster link (the transport on UDP sockets), on a thread and a
//! single-threaded runtime of its own, so nothing else the daemon does delays the ring's
//! timers. Ring messages go through the
//! link (encode -> send; received -> decode), and the ring's actions are carried out on the
//! machine: VIP ownership in the XDP maps, gratuitous ARP, answers to waiting CLI commands. The
//! shell also keeps the dead-man lease fresh, turns XDP's ARP claims and the fault monitor's
//! verdicts into ring events, and publishes the ring's status for the control socket. It
//! serves and fetches configuration documents for the ring (`config_sync`) and hands each
//! configuration the ring switches to to the daemon.
//!
//! Timekeeping: one `Instant` clock; the loop sleeps until the earliest of the transport's
//! timeout, the ring's timers, the lease renewal and the pending CLI deadlines. No iteration
//! blocks: the connection tables are the datapath worker's (jobs go there, results come back
//! as [`Completion`]s), file I/O runs on the blocking pool, and each iteration's length is
//! measured (docs/architecture.md, "The ring's shell").
use std::{
    collections::{BTreeSet, HashSet},
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{
    config_sync::{self, ConfigSync, Installed, Prepared},
    deadlines::Pending,
    faults::Fault,
    host::Host,
    link::{Datagram, Link, Transmitted},
    load::LoadMeter,
    realtime,
    stall::{RecentDelay, StallWatch},
};
use crate::{
    cluster::{
        copies::{CopyPacing, CopyStep, CopyStore, Readiness},
        driver::{Lease, Outcomes, Rivals, Takeover, Takeovers, Timers},
        events::{Action, ConfigResult, Event, Sent, TimerKind},
        handoff::HolderTable,
        message::{
            AdminOp, AdminResult, BlockHolder, ConfigDoc, ConfigFetch, ConfigId, Copies, Message,
        },
        token_ring::{Node, RingConfig, RingStatus},
        transport::TransportEvent,
        types::{NodeId, VipEntry},
    },
    config::{self, live, Cluster, Config, Persistence},
    control::{
        server::Answer,
        views::{
            BlockView, ClusterView, CopiesView, LoadView, MemberView, ShellLatency, TokenView,
            VipView,
        },
        Admin,
    },
    datapath::{
        maps::{ControlMaps, Counters},
        netlink::Nic,
        worker::DatapathHandle,
    },
};

/// How long a CLI command may wait for the ring to carry it out.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often this node measures its load for the token.
const LOAD_INTERVAL: Duration = Duration::from_secs(1);

/// How often the other nodes' neighbour entries are refreshed (well inside the kernel's
/// reachable time, so the entries never go stale between refreshes).
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);

/// The other nodes' primary addresses with the NIC of this node on the same path.
fn peer_neighbours(cluster: &Cluster, nics: &[Nic]) -> Vec<(u32, Ipv4Addr)> {
    cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cluster.me)
        .flat_map(|(_, node)| {
            nics.iter()
                .zip(&node.addresses)
                .map(|(nic, a)| (nic.ifindex, *a))
        })
        .collect()
}

/// An iteration of the shell's loop longer than this is logged: a peer gives up on a silent
/// node after about 51 ms with the default timers.
const SLOW_ITERATION: Duration = Duration::from_millis(10);

/// What the operator asks of the cluster, with where the answer goes.
#[derive(Debug)]
pub enum ShellCommand {
    /// A VIP or node command for the ring.
    Admin(Admin, Answer),
    /// Hand the config file's cluster-wide part (the file's text, read by the caller) to every
    /// node (`gateway reload`).
    Reload(String, Answer),
}

/// Work the shell handed off, done: results of the datapath worker's jobs and of the file
/// I/O on the blocking pool.
#[derive(Debug)]
pub enum Completion {
    /// The copy stream's messages for the successor.
    Copies(NodeId, Vec<Copies>),
    /// The connections of dead nodes whose blocks this node holds are installed.
    TakenOver,
    /// The configuration the ring switched to is in the config file (or could not be).
    Installed(ConfigId, Box<Result<Installed, String>>),
}

/// What the shell is given to work with.
pub struct ShellParts {
    /// The configuration the daemon started with.
    pub config: Arc<Config>,
    /// Where the shell publishes the configuration it runs (it alone changes it).
    pub running: watch::Sender<Arc<Config>>,
    /// The cluster NICs, in `[[interface]]` order.
    pub nics: Vec<Nic>,
    /// The control maps, the shell's to write.
    pub maps: ControlMaps,
    /// The tables' owner.
    pub datapath: DatapathHandle,
    /// The data path's counters, for the load on the token.
    pub counters: Arc<Counters>,
    /// Where the shell publishes the cluster as it sees it.
    pub view: watch::Sender<Option<ClusterView>>,
    /// Where the host publishes the VIPs XDP answers for.
    pub owned: watch::Sender<BTreeSet<Ipv4Addr>>,
    /// Where the shell records its longest loop iterations.
    pub latency: Arc<ShellLatency>,
}

/// The operator's answer for an offer of a new configuration.
fn config_answer(cluster: &Cluster, result: ConfigResult) -> Result<(), String> {
    let name = |id: NodeId| {
        cluster
            .nodes
            .get(usize::from(id.0))
            .map_or_else(|| format!("node{}", id.0), |n| n.name.clone())
    };
    match result {
        ConfigResult::Active => Ok(()),
        ConfigResult::Busy => Err("another configuration change is under way; try again".into()),
        ConfigResult::Outdated(v) => Err(format!(
            "the cluster runs configuration version {v} already; try again"
        )),
        ConfigResult::Rejected(n) => Err(format!(
            "{} refused the configuration (its log says why); nothing changed",
            name(n)
        )),
        ConfigResult::TimedOut(nodes) => Err(format!(
            "not staged in time by {}; nothing changed",
            nodes.into_iter().map(name).collect::<Vec<_>>().join(", ")
        )),
        ConfigResult::NotMember => Err("this node is not a ring member now".into()),
    }
}

/// The ring's configuration from the file: node map, VIP table, timers.
pub fn ring_config(config: &Config, cluster: &Cluster) -> RingConfig {
    let t = &cluster.timers;
    let nodes = (0..cluster.nodes.len()).map(|i| NodeId(i as u8)).collect();
    let vips = config
        .vips
        .iter()
        .map(|v| VipEntry {
            address: v.address,
            owner: None,
            previous: None,
            preferred: v
                .preferred
                .as_deref()
                .and_then(|p| cluster.node_index(p))
                .map(|i| NodeId(i as u8)),
            persistence: v.persistence,
            placed: false,
        })
        .collect();
    let mut settings = RingConfig::new(nodes, vips);
    settings.hold = t.token_hold.unwrap_or(settings.hold);
    settings.loss_timeout = t.token_loss.unwrap_or(settings.loss_timeout);
    settings.probe_interval = t.probe_911.unwrap_or(settings.probe_interval);
    settings.unreachable_after = cluster.timers.transport().give_up_after();
    settings.balance_min_pps = cluster.balance.min_packets_per_s;
    settings.balance_hold = cluster.balance.hold;
    // The token sequence starts at a random point (docs/architecture.md, "Stale tokens"): a
    // restarted node never reuses the numbers of its previous life.
    let mut seed = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).is_ok() {
        settings.initial_seq = u64::from_be_bytes(seed) >> 8;
    }
    settings
}

/// An answer that comes to `answer` as an error with `note` appended, whatever the outcome:
/// a reload that applied what it could and names what waits for a restart.
fn with_note(answer: Answer, note: String) -> Answer {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let outcome = rx
            .await
            .unwrap_or_else(|_| Err("the cluster shell has stopped".into()));
        let message = match outcome {
            Ok(()) => format!("applied what applies at once; {note}"),
            Err(e) => format!("{e}; {note}"),
        };
        let _ = answer.send(Err(message));
    });
    tx
}

/// The ring's operator command for a CLI request, node names resolved.
fn admin_op(cluster: &Cluster, admin: &Admin) -> Result<AdminOp, String> {
    let node = |name: &str| {
        cluster
            .node_index(name)
            .map(|i| NodeId(i as u8))
            .ok_or_else(|| format!("no node named `{name}` in [[cluster.node]]"))
    };
    Ok(match admin {
        Admin::MoveVip { vip, node: n } => AdminOp::Move(*vip, node(n)?),
        Admin::PreferVip { vip, node: n } => AdminOp::Prefer(*vip, node(n)?),
        Admin::PinVip { vip, persistence } => AdminOp::Pin(
            *vip,
            Persistence::from_number(*persistence)
                .ok_or_else(|| format!("persistence {persistence}: use 0, 1 or 3"))?,
        ),
        Admin::CloseNode { node: n, force } => AdminOp::Close(node(n)?, *force),
        Admin::OpenNode { node: n } => AdminOp::Open(node(n)?),
    })
}

/// The running shell: the ring, the link it talks over, and the host it acts on.
pub struct Shell {
    /// The configuration this node runs; the shell publishes it to `running`.
    config: Arc<Config>,
    running: watch::Sender<Arc<Config>>,
    cluster: Cluster,
    node: Node,
    link: Link,
    host: Host,
    timers: Timers<TimerKind>,
    pending: Pending,
    faults: Vec<Fault>,
    /// Ring payloads that did not decode (the transport authenticated them: a version mismatch).
    undecodable: u64,
    /// When the lease is renewed and ARP claims are read next.
    next_tick: Instant,
    /// The dead-man lease as last written.
    lease: Lease,
    /// What each message in the transport's hands was, for the ring's outcome events (message
    /// ids are numbered per peer).
    sent: Outcomes,
    /// The rival rings heard of, for ARP conflicts.
    rivals: Rivals,
    /// This node's standing and the members, as last logged.
    logged_ring: (String, Vec<String>),
    /// Notices when the process did not run (stopped, starved).
    stall_watch: StallWatch,
    /// The longest recent time this process could not act, for `status`.
    recent_delay: RecentDelay,
    /// This node's load, measured every [`LOAD_INTERVAL`] for the token.
    load: LoadMeter,
    /// When the load is measured next.
    next_load: Instant,
    /// How long the transport tries a peer: a stall of about that length may have got this
    /// node removed.
    give_up: Duration,
    /// Who holds each VIP's connections, as last told to XDP.
    holders: HolderTable,
    /// Copies of other nodes' connections.
    copy_store: CopyStore,
    /// When the copy stream to the successor is compared and sent (the worker owns the
    /// stream itself, beside the table it diffs).
    copy_pacing: CopyPacing,
    /// Whether this node's tables are whole yet, so the ring may give it VIPs.
    readiness: Readiness,
    /// The NAT blocks away from their nodes, as the ring last listed them, and this node's
    /// take-overs of their connections in progress.
    takeovers: Takeovers,
    /// The cluster NICs, in `[[interface]]` order.
    nics: Vec<Nic>,
    /// The configuration documents and this node's signing key.
    sync: ConfigSync,
    /// Configurations being written into the file; answers to the operator wait for them.
    installing: usize,
    /// Operators' answers held until the configuration this node switched to is applied.
    held_answers: Vec<(Answer, Result<(), String>)>,
    /// Configuration documents refused (signature, digest or content).
    config_refused: u64,
    /// Configuration documents the ring named no configuration for, dropped.
    config_unwanted: u64,
    /// The tables' owner.
    datapath: DatapathHandle,
    /// The data path's counters (load).
    counters: Arc<Counters>,
    /// Where finished hand-offs come back.
    completions: (
        mpsc::UnboundedSender<Completion>,
        mpsc::UnboundedReceiver<Completion>,
    ),
    /// Where the cluster view goes.
    view: watch::Sender<Option<ClusterView>>,
    /// The longest loop iterations so far.
    latency: Arc<ShellLatency>,
}

impl Shell {
    /// Sets the cluster up from the shared config: the link (keys, transport, sockets bound on
    /// the primary addresses) and the ring node, whose first actions are carried out at once.
    /// Fails, changing nothing in the maps, when a key or a socket is unusable.
    pub async fn start(parts: ShellParts) -> Result<Self> {
        let ShellParts {
            config,
            running,
            nics,
            maps,
            datapath,
            counters,
            view,
            owned,
            latency,
        } = parts;
        let cluster = config.cluster.clone().context("no [cluster] section")?;
        let realtime = config.realtime;
        let give_up = cluster.timers.transport().give_up_after();
        let me = NodeId(cluster.me as u8);
        let mine = &cluster.nodes[cluster.me].addresses;
        for (nic, addr) in nics.iter().zip(mine) {
            if nic.address != Some(*addr) {
                warn!(nic = %nic.name, configured = %addr, kernel = ?nic.address,
                      "the node map's primary address is not the NIC's first address");
            }
        }
        let sync = ConfigSync::start(&config, me)?;
        let link = Link::open(&cluster).await?;
        let host = Host::new(&config, &nics, maps, owned).context("gratuitous ARP socket")?;
        let now = Instant::now();
        let mut settings = ring_config(&config, &cluster);
        settings.config = sync.active();
        let (node, actions) = Node::new(settings, me, now);
        info!(node = %config.name, id = me.0, addresses = ?mine, port = cluster.port,
              "cluster shell started");
        let copy_store = CopyStore::new(config.limits.max_connections as usize);
        let lease = Lease::new(now, cluster.lease);
        let mut shell = Shell {
            config,
            running,
            cluster,
            node,
            link,
            host,
            timers: Timers::default(),
            pending: Pending::new(ADMIN_TIMEOUT),
            faults: Vec::new(),
            undecodable: 0,
            next_tick: now,
            lease,
            sent: Outcomes::default(),
            rivals: Rivals::default(),
            logged_ring: Default::default(),
            stall_watch: StallWatch::start(realtime).context("starting the stall watch")?,
            recent_delay: RecentDelay::new(now),
            load: LoadMeter::default(),
            next_load: now,
            give_up,
            holders: HolderTable::default(),
            copy_store,
            copy_pacing: CopyPacing::new(now),
            readiness: Readiness::default(),
            takeovers: Takeovers::default(),
            nics,
            sync,
            installing: 0,
            held_answers: Vec::new(),
            config_refused: 0,
            config_unwanted: 0,
            datapath,
            counters,
            completions: mpsc::unbounded_channel(),
            view,
            latency,
        };
        shell.perform(now, actions);
        shell.on_time(now);
        shell.flush(now);
        Ok(shell)
    }

    /// Runs the cluster until the command channel closes (the daemon stops): datagrams, CLI
    /// commands, fault changes, finished hand-offs and timers, each followed by a flush of what
    /// the transport and the ring want done.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<ShellCommand>,
        mut faults: watch::Receiver<Vec<Fault>>,
    ) {
        loop {
            let waiting_since = Instant::now();
            let deadline = self.deadline();
            let woke = tokio::select! {
                datagram = self.link.arrival() => Woke::Datagram(datagram),
                command = commands.recv() => match command {
                    Some(command) => Woke::Command(command),
                    None => return,
                },
                Ok(()) = faults.changed() => Woke::Faults,
                Some(done) = self.completions.1.recv() => Woke::Completion(done),
                _ = tokio::time::sleep_until(deadline.into()) => Woke::Deadline,
            };
            let now = Instant::now();
            let cpu_at_wake = thread_cpu_time();
            let cause = woke.name();
            match woke {
                Woke::Datagram(first) => self.link.take_in(now, first),
                Woke::Command(command) => self.command(now, command),
                Woke::Faults => {
                    let current = faults.borrow_and_update().clone();
                    self.set_faults(now, current);
                }
                Woke::Completion(done) => self.completed(now, done),
                Woke::Deadline => {}
            }
            let handled = now.elapsed();
            // A deadline already past when the wait began is no lateness of this process.
            let late = now.saturating_duration_since(deadline.max(waiting_since));
            let stopped = self.stall_watch.take();
            let recent = self.recent_delay.record(now, stopped.max(late));
            self.latency.delayed(recent, self.give_up);
            // Stopped (or the runtime late) as long as the others try a silent node before
            // giving up on it: only then may they have removed this one. Tell the ring before
            // it sees anything that waited.
            if stopped.max(late) >= self.give_up {
                warn!(?stopped, ?late, "this process did not run for a while");
                self.latency.stalled(stopped.max(late));
                let actions = self.node.handle(now, Event::Stalled);
                self.perform(now, actions);
            }
            self.on_time(now);
            let timed = now.elapsed();
            let written = self.flush(now);
            let phases = Phases {
                cause,
                handled,
                timed,
                took: now.elapsed(),
                written,
            };
            self.measure(phases, thread_cpu_time().saturating_sub(cpu_at_wake));
        }
    }

    /// Records how long one iteration of the loop took (from its wake-up to the end of its
    /// flush), and warns of a long one, saying what woke it, where the time went and how much
    /// of it the thread ran (the rest the CPU did other work).
    fn measure(&self, phases: Phases, on_cpu: Duration) {
        self.latency
            .record(phases.took, on_cpu, phases.written.sending);
        if phases.took > SLOW_ITERATION {
            warn!(
                woke_by = phases.cause,
                took = ?phases.took,
                ?on_cpu,
                handling = ?phases.handled,
                timers = ?phases.timed.saturating_sub(phases.handled),
                flush = ?phases.took.saturating_sub(phases.timed),
                datagrams = phases.written.datagrams,
                sending = ?phases.written.sending,
                "the cluster shell's loop iteration took long"
            );
        }
    }

    /// The earliest moment something is due.
    fn deadline(&self) -> Instant {
        [
            self.timers.next(),
            self.link.poll_timeout(),
            self.pending.next(),
        ]
        .into_iter()
        .flatten()
        .fold(
            self.next_tick
                .min(self.next_load)
                .min(self.copy_pacing.next()),
            Instant::min,
        )
    }

    /// Fires whatever is due at `now`: transport resends, ring timers, lease and claims, CLI
    /// deadlines.
    fn on_time(&mut self, now: Instant) {
        self.link.handle_timeout(now);
        for kind in self.timers.due(now) {
            let actions = self.node.handle(now, Event::Timer(kind));
            self.perform(now, actions);
        }
        if self.next_tick <= now {
            self.next_tick = now + self.lease.tick();
            let until = self.lease.renew(now, self.node.answer_until());
            self.host.renew_lease(now, until);
            for (vip, claim) in self.host.take_claims() {
                warn!(%vip, mac = %crate::datapath::netlink::mac_string(&claim.mac),
                      count = claim.count, "another station claims a VIP this node owns");
                let members = self.node.status().members;
                let event = self
                    .rivals
                    .conflict(now, vip, &members, self.cluster.nodes.len());
                let actions = self.node.handle(now, event);
                self.perform(now, actions);
            }
        }
        self.send_copies(now);
        if self.next_load <= now {
            self.next_load = now + LOAD_INTERVAL;
            let services: Vec<Ipv4Addr> = self.config.services.iter().map(|s| s.vip).collect();
            let sample = self.load.sample(&self.counters, self.node.id(), &services);
            if let Some((load, vips)) = sample {
                for event in [Event::LocalLoad(load), Event::LocalVipLoads(vips)] {
                    let actions = self.node.handle(now, event);
                    self.perform(now, actions);
                }
            }
        }
        self.pending.expire(now);
    }

    fn set_faults(&mut self, now: Instant, faults: Vec<Fault>) {
        let was_healthy = self.faults.is_empty();
        self.faults = faults;
        let event = match (was_healthy, self.faults.is_empty()) {
            (true, false) => {
                let why: Vec<String> = self.faults.iter().map(ToString::to_string).collect();
                warn!(faults = ?why, "local fault: leaving the ring and releasing every VIP");
                Event::LocalFault
            }
            (false, true) => Event::LocalHealthy,
            _ => return,
        };
        let actions = self.node.handle(now, event);
        self.perform(now, actions);
    }

    fn command(&mut self, now: Instant, command: ShellCommand) {
        let (request, answer) = match command {
            ShellCommand::Admin(admin, answer) => (admin, answer),
            ShellCommand::Reload(text, answer) => return self.offer_config(now, &text, answer),
        };
        let op = match admin_op(&self.cluster, &request) {
            Ok(op) => op,
            Err(e) => {
                let _ = answer.send(Err(format!("{request}: {e}")));
                return;
            }
        };
        let id = self.pending.add(now, answer, request.to_string());
        info!(id, ?request, "admin command");
        let actions = self.node.handle(now, Event::Admin { id, op });
        self.perform(now, actions);
    }

    /// Offers the config file's cluster-wide part (of its `text`) to the ring; the answer
    /// waits for the ring.
    ///
    /// This node's own parts apply here: new `[cluster.keys]` and `active_key` at once
    /// ([`Shell::follow_keys`]). A change that takes effect only at the restart, of this
    /// node's `[node]` or `[control]` or of a cluster-wide part, makes the answer an error
    /// that names it, once the cluster-wide part is through (`gateway reload` exits 1 then).
    fn offer_config(&mut self, now: Instant, text: &str, answer: Answer) {
        let new = match config::parse(&self.config.path, text) {
            Ok(new) => new,
            Err(e) => {
                let _ = answer.send(Err(e.to_string()));
                return;
            }
        };
        self.follow_keys(&new);
        let later = live::restart_needed(&self.config, &new);
        let answer = if later.is_empty() {
            answer
        } else {
            let note = format!(
                "{}: changes of {} need a restart",
                self.config.path.display(),
                later.join(", ")
            );
            warn!("reload: {note}");
            with_note(answer, note)
        };
        // Above what the ring and every member runs.
        match self.sync.prepare(text, self.node.newest_config_version()) {
            Ok(Prepared::Unchanged(id)) => {
                info!(
                    version = id.version,
                    "reload: the cluster-wide configuration is unchanged"
                );
                let _ = answer.send(Ok(()));
            }
            Ok(Prepared::Offer(config)) => {
                let ask = self.pending.add(now, answer, "reload".into());
                info!(
                    version = config.version,
                    "offering a new configuration to the cluster"
                );
                let actions = self.node.handle(now, Event::OfferConfig { ask, config });
                self.perform(now, actions);
            }
            Err(e) => {
                let _ = answer.send(Err(e));
            }
        }
    }

    /// Seals and opens ring messages with the keys of `new` when they changed: a key removed
    /// from `[cluster.keys]` is refused from the next datagram on, not after a restart.
    fn follow_keys(&mut self, new: &Config) {
        let Some(next) = &new.cluster else {
            return;
        };
        if (&next.keys, next.active_key) == (&self.cluster.keys, self.cluster.active_key) {
            return;
        }
        if let Err(e) = self.link.set_keys(next) {
            warn!("changing the cluster's keys: {e:#}");
            return;
        }
        self.cluster.keys.clone_from(&next.keys);
        self.cluster.active_key = next.active_key;
        let mut running = (*self.config).clone();
        running.cluster = running.cluster.map(|c| Cluster {
            keys: next.keys.clone(),
            active_key: next.active_key,
            ..c
        });
        self.config = Arc::new(running);
        let ids: Vec<u8> = next.keys.keys().copied().collect();
        info!(keys = ?ids, active = next.active_key, "the cluster's keys changed");
    }

    /// Switches to a configuration the ring runs now: the file is written on the blocking
    /// pool, then ([`Shell::installed`]) the maps, before an operator waiting for it hears that
    /// it runs, then the daemon's health checks (they follow the published configuration).
    fn activate_config(&mut self, config: ConfigId) {
        let activation = match self.sync.activate(config) {
            Ok(activation) => activation,
            Err(e) => {
                warn!(
                    version = config.version,
                    "cannot switch to the cluster's configuration: {e}"
                );
                return;
            }
        };
        self.installing += 1;
        let done = self.completions.0.clone();
        tokio::task::spawn_blocking(move || {
            let _ = done.send(Completion::Installed(
                config,
                Box::new(config_sync::install(activation)),
            ));
        });
    }

    /// Applies a configuration [`config_sync::install`] wrote: what applies live goes into
    /// the maps (settings here; services, through the worker, after everything queued there),
    /// and answers held for it follow the worker's queue.
    fn installed(&mut self, config: ConfigId, result: Result<Installed, String>) {
        self.installing -= 1;
        match result {
            Ok(installed) => {
                self.sync.installed(&installed);
                let running = Arc::new(live::apply_live(&self.config, &installed.config));
                self.follow_keys(&running);
                self.host.apply_config(&running);
                let apply = running.clone();
                self.datapath.submit(move |worker| {
                    if let Err(e) = worker.apply_config(apply) {
                        warn!("applying the cluster's configuration: {e}");
                    }
                });
                self.config = running.clone();
                self.running.send_replace(running);
                info!(
                    version = config.version,
                    "running the cluster's new configuration"
                );
                if !installed.later.is_empty() {
                    warn!(sections = ?installed.later, version = config.version,
                          "these changes take effect when this daemon restarts");
                }
            }
            Err(e) => warn!(
                version = config.version,
                "cannot switch to the cluster's configuration: {e}"
            ),
        }
        if self.installing == 0 {
            let held = std::mem::take(&mut self.held_answers);
            self.datapath.submit(move |_| {
                for (answer, result) in held {
                    let _ = answer.send(result);
                }
            });
        }
    }

    /// Takes in work the shell handed off, now done.
    fn completed(&mut self, now: Instant, done: Completion) {
        match done {
            Completion::Copies(successor, messages) => {
                self.copy_pacing.diffed(successor, messages);
                self.send_copies_queued(now);
            }
            Completion::TakenOver => {
                self.copy_pacing.hurry(now);
                if let Some(held) = self.takeovers.finished() {
                    self.host
                        .write_homes(&self.cluster, &self.nics, self.takeovers.blocks());
                    self.host.set_holders(&self.cluster, &held);
                }
            }
            Completion::Installed(config, result) => self.installed(config, *result),
        }
    }

    /// Carries out the ring's actions.
    fn perform(&mut self, now: Instant, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, msg } => self.send(now, to, &msg),
                Action::SetTimer { kind, at } => self.timers.set(kind, at),
                Action::ApplyVips(owned) => {
                    info!(vips = ?owned, "answering for");
                    self.host
                        .apply_vips(&owned.into_iter().collect::<HashSet<_>>());
                }
                Action::Garp(vips) => self.host.garp(&vips),
                Action::FetchConfig { from, config } => {
                    let fetch = Message::ConfigFetch(ConfigFetch {
                        from: self.node.id(),
                        config,
                    });
                    if let Err(e) = self.link.send(now, from, fetch.encode()) {
                        warn!(to = from.0, "configuration fetch not sent: {e}");
                    }
                }
                Action::ActivateConfig(config) => self.activate_config(config),
                Action::ConfigDone { ask, result } => {
                    // Logged too: a reload by SIGHUP has nobody waiting for the answer.
                    let answer = config_answer(&self.cluster, result);
                    match &answer {
                        Ok(()) => info!(ask, "the cluster runs the new configuration"),
                        Err(e) => warn!(ask, "configuration change not carried out: {e}"),
                    }
                    // This node's maps hold the new configuration before the operator hears.
                    if let Some(waiting) = self.pending.take(ask) {
                        if self.installing > 0 {
                            self.held_answers.push((waiting, answer));
                        } else {
                            self.datapath.submit(move |_| {
                                let _ = waiting.send(answer);
                            });
                        }
                    }
                }
                Action::AdminDone { id, result } => self.pending.finish(
                    id,
                    match result {
                        AdminResult::Done => Ok(()),
                        AdminResult::UnknownVip => Err("no such VIP in the cluster".into()),
                        AdminResult::NotMember => Err("the node is not a live member".into()),
                        AdminResult::Closed => Err("the node is closed".into()),
                        AdminResult::AlreadyThere => {
                            Err("the VIP is on that node already: nothing moved".into())
                        }
                        AdminResult::LastOpen => Err("it is the last open node: closing it \
                             leaves every VIP without an owner (--force closes it anyway)"
                            .into()),
                    },
                ),
            }
        }
        // A token after a loss lets the lease run again at once, not at the next tick.
        if let Some(until) = self
            .lease
            .renew_early(now, self.node.answer_until(), self.next_tick)
        {
            self.host.renew_lease(now, until);
        }
    }

    /// Sends one of the ring's messages; a refusal is reported to the ring as an undelivered
    /// message.
    fn send(&mut self, now: Instant, to: NodeId, msg: &Message) {
        let link = &mut self.link;
        if let Err(refused) = self.sent.send(to, msg, |bytes| link.send(now, to, bytes)) {
            let (e, outcome) = *refused;
            // The ring learns of it as it would of a dead peer.
            warn!(to = to.0, "cluster send refused: {e}");
            let actions = self.node.handle(now, outcome);
            self.perform(now, actions);
        }
    }

    /// Drains the transport: events to the ring, datagrams to the sockets; then publishes the
    /// status. Ring actions may queue more for the transport, so it loops until both are idle.
    /// Returns what it wrote.
    fn flush(&mut self, now: Instant) -> Transmitted {
        let mut written = Transmitted::default();
        loop {
            let sent = self.link.transmit();
            written += sent;
            let mut busy = sent.datagrams > 0;
            while let Some(event) = self.link.poll_event() {
                busy = true;
                let event = match event {
                    TransportEvent::Received { from, payload } => match Message::decode(&payload) {
                        Ok(Message::Copies(copies)) => {
                            self.copy_store.receive(from, copies);
                            continue;
                        }
                        Ok(Message::ConfigFetch(fetch)) => {
                            if let Some(doc) =
                                self.sync.answer(&fetch).filter(|_| fetch.from == from)
                            {
                                if let Err(e) =
                                    self.link.send(now, from, Message::ConfigDoc(doc).encode())
                                {
                                    warn!(to = from.0, "configuration document not sent: {e}");
                                }
                            }
                            continue;
                        }
                        Ok(Message::ConfigDoc(doc)) => match self.on_config_doc(from, &doc) {
                            Some(event) => event,
                            None => continue,
                        },
                        Ok(msg) => {
                            self.rivals.hear(now, &msg);
                            Event::Received { from, msg }
                        }
                        Err(e) => {
                            self.undecodable += 1;
                            warn!(from = from.0, "undecodable ring message: {e:?}");
                            continue;
                        }
                    },
                    TransportEvent::Delivered { to, .. }
                    | TransportEvent::Unreachable { to, .. } => {
                        if self.copy_pacing.settle(&event) {
                            self.send_copies(now);
                            continue;
                        }
                        let Some(outcome) = self.sent.settle(&event) else {
                            continue;
                        };
                        // Joins go to every configured node, the dead ones too: not worth a line.
                        if let Event::Outcome {
                            what,
                            delivered: false,
                            ..
                        } = outcome
                        {
                            if what != Sent::Join {
                                warn!(to = to.0, ?what, "ring message undelivered: no ack in time");
                            }
                        }
                        outcome
                    }
                };
                let actions = self.node.handle(now, event);
                self.perform(now, actions);
            }
            if !busy {
                break;
            }
        }
        self.publish(now);
        written
    }

    /// Checks a configuration document a node sent: one the ring fetches is verified and
    /// staged, or refused; others are dropped. Both are counted.
    fn on_config_doc(&mut self, from: NodeId, doc: &ConfigDoc) -> Option<Event> {
        if doc.from != from || !self.node.awaits_config(doc.config) {
            self.config_unwanted += 1;
            return None;
        }
        let version = doc.config.version;
        Some(match self.sync.receive(doc) {
            Ok(()) => {
                info!(version, from = from.0, "staged a new configuration");
                Event::ConfigStaged(doc.config)
            }
            Err(e) => {
                self.config_refused += 1;
                warn!(version, from = from.0, "refused a configuration: {e}");
                Event::ConfigRejected(doc.config)
            }
        })
    }

    /// Moves the copy stream to the successor on (`CopyPacing`): asks the worker for the
    /// connections new and ended since the last diff when one is due, or to forget the
    /// successor (none, outside a ring or alone in one, or a message to it was lost); sends what
    /// is queued.
    fn send_copies(&mut self, now: Instant) {
        let me = self.node.id();
        match self.copy_pacing.due(now) {
            CopyStep::Wait => {}
            CopyStep::Stop => self.datapath.submit(|worker| worker.stop_copies()),
            CopyStep::Diff(successor) => {
                let done = self.completions.0.clone();
                self.datapath.submit(move |worker| {
                    let messages = worker.copies_for(me, successor);
                    let _ = done.send(Completion::Copies(successor, messages));
                });
            }
        }
        self.send_copies_queued(now);
    }

    /// Hands queued copy stream messages to the transport, as many as `CopyPacing` lets go.
    fn send_copies_queued(&mut self, now: Instant) {
        let link = &mut self.link;
        for (to, e) in self
            .copy_pacing
            .transmit(|to, bytes| link.send(now, to, bytes))
        {
            warn!(to = to.0, "connection copies not sent: {e}");
        }
    }

    /// Follows the ring's list of NAT blocks away from their nodes (`Takeovers`): the worker
    /// re-points the forwarding entries to each newly dead node and, where this node holds its
    /// block, takes its connections over (from the copies it kept); the data path's NAT homes
    /// point at the blocks' holders once those connections are in.
    fn take_over_blocks(&mut self, blocks: &[BlockHolder], members: &[NodeId]) {
        let me = self.node.id();
        let followed = self
            .takeovers
            .follow(me, blocks, members, &mut self.copy_store);
        let Some(new) = followed else {
            return;
        };
        for Takeover {
            gone,
            holder,
            copies,
        } in new
        {
            let done = (holder == me).then(|| self.completions.0.clone());
            self.datapath.submit(move |worker| {
                worker.take_over(gone, holder, me, copies);
                if let Some(done) = done {
                    let _ = done.send(Completion::TakenOver);
                }
            });
        }
        if self.takeovers.settled() {
            self.host.write_homes(&self.cluster, &self.nics, blocks);
        }
    }

    /// Publishes the ring's status, in the daemon's terms, for the control socket, and logs
    /// every change of this node's standing or of the member list.
    fn publish(&mut self, now: Instant) {
        let status = self.node.status();
        self.copy_pacing.follow(&status, self.node.id());
        if self
            .readiness
            .follow(&status, self.node.id(), &self.copy_store)
        {
            info!("tables whole: the ring may give this node VIPs");
            let actions = self.node.handle(now, Event::TablesWhole);
            self.perform(now, actions);
        }
        // A ring waiting for its quorum may be this node cut off: the blocks and connections
        // of the members it lost are still served where they were, so its data path follows
        // none of it (no take-over, no forwarding entry dropped, no rebuild) until the ring
        // may take over their VIPs too.
        if !status.quorum_wait {
            self.take_over_blocks(&status.blocks, &status.members);
            let changed = self.takeovers.gate(self.holders.update(
                now,
                &status.vips,
                &status.members,
                &status.blocks,
            ));
            if !changed.is_empty() {
                self.host.set_holders(&self.cluster, &changed);
            }
        }
        let view = self.view(&status);
        let standing: (String, Vec<String>) = (
            view.state.clone(),
            view.members.iter().map(|m| m.name.clone()).collect(),
        );
        if standing != self.logged_ring {
            info!(state = %standing.0, members = ?standing.1, epoch = status.epoch,
                  seq = view.token.seq, "ring changed");
            self.logged_ring = standing;
        }
        self.view.send_replace(Some(view));
    }

    fn view(&self, status: &RingStatus) -> ClusterView {
        let name = |id: NodeId| {
            self.cluster
                .nodes
                .get(usize::from(id.0))
                .map_or_else(|| format!("node{}", id.0), |n| n.name.clone())
        };
        ClusterView {
            node: name(NodeId(self.cluster.me as u8)),
            node_id: self.cluster.me as u8,
            state: format!("{:?}", status.membership).to_lowercase(),
            quorum_wait: status.quorum_wait,
            members: status
                .members
                .iter()
                .map(|id| MemberView {
                    id: id.0,
                    name: name(*id),
                    load: status
                        .loads
                        .iter()
                        .find(|l| l.node == *id)
                        .map(|l| LoadView {
                            bytes_per_s: l.bytes_per_s,
                            packets_per_s: u64::from(l.packets_per_s),
                            cpu_permille: l.cpu_permille,
                        }),
                })
                .collect(),
            token: TokenView {
                seq: status.seq,
                round_ms: status.round.map(|r| r.as_secs_f64() * 1000.0),
                holding: status.holding,
                stale: status.stale_tokens,
            },
            config_version: status.config.version,
            ring_config_version: status.ring_config_version,
            config_staged: status.config_staged.map(|c| c.version),
            config_offer: status.ring_config.offer.map(|o| o.config.version),
            config_refused: self.config_refused,
            config_unwanted: self.config_unwanted,
            vips: status
                .vips
                .iter()
                .map(|v| VipView {
                    address: v.address.to_string(),
                    owner: v.owner.map(name),
                    preferred: v.preferred.map(name),
                    persistence: v.persistence.number(),
                    packets_per_s: status
                        .vip_loads
                        .iter()
                        .find(|l| l.address == v.address)
                        .map(|l| l.packets_per_s),
                })
                .collect(),
            closed: status.closed.iter().map(|id| name(*id)).collect(),
            unready: status.unready.iter().map(|id| name(*id)).collect(),
            blocks: status
                .blocks
                .iter()
                .map(|b| BlockView {
                    block: name(b.block),
                    holder: name(b.holder),
                    state: if b.returned { "back" } else { "gone" }.into(),
                })
                .collect(),
            copies: self
                .copy_store
                .per_node()
                .into_iter()
                .map(|(n, connections)| CopiesView {
                    node: name(n),
                    connections,
                })
                .collect(),
            faults: self.faults.iter().map(ToString::to_string).collect(),
            transport: self.link.counters().clone(),
            send_failed: self.link.send_failed(),
            undecodable: self.undecodable,
        }
    }
}

/// The CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    // SAFETY: clock_gettime writes into the timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One loop iteration's time line, from its wake-up: what woke it, and when handling that,
/// firing the due timers (`on_time`) and the flush ended; and what the flush wrote.
struct Phases {
    cause: &'static str,
    handled: Duration,
    timed: Duration,
    took: Duration,
    written: Transmitted,
}

/// What ended the shell loop's wait.
enum Woke {
    Datagram(Datagram),
    Command(ShellCommand),
    Faults,
    Completion(Completion),
    Deadline,
}

impl Woke {
    /// For the log of a slow iteration.
    fn name(&self) -> &'static str {
        match self {
            Woke::Datagram(_) => "datagram",
            Woke::Command(_) => "command",
            Woke::Faults => "faults",
            Woke::Completion(_) => "completion",
            Woke::Deadline => "deadline",
        }
    }
}

/// The running shell, seen from the daemon: where operator commands go, and its thread.
pub struct ShellHandle {
    /// Operator commands for the ring; dropping it stops the shell.
    pub commands: mpsc::Sender<ShellCommand>,
    thread: std::thread::JoinHandle<()>,
}

impl ShellHandle {
    /// Stops the shell and waits for its thread (its runtime drops the link and the pending
    /// announcements) without blocking the caller's runtime.
    pub async fn stop(self) {
        drop(self.commands);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Starts the cluster shell (link bound, ring started) on a thread of its own, and the fault
/// monitor and the neighbour keeper feeding it into `background`. Fails before the control
/// socket exists, so a daemon that cannot join its cluster never reports ready.
pub async fn spawn(
    background: &mut tokio::task::JoinSet<()>,
    parts: ShellParts,
) -> Result<ShellHandle> {
    let cluster = parts
        .config
        .cluster
        .clone()
        .context("no [cluster] section")?;
    let peers = peer_neighbours(&cluster, &parts.nics);
    let (fault_tx, fault_rx) = watch::channel(Vec::new());
    let (commands, command_rx) = mpsc::channel(16);
    let (started_tx, started) = oneshot::channel();
    let nics = parts.nics.clone();
    let thread = std::thread::Builder::new()
        .name("ring".into())
        .spawn(move || {
            if parts.config.realtime {
                realtime::raise(realtime::RING_PRIORITY, "ring");
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match Shell::start(parts).await {
                    Ok(shell) => {
                        let _ = started_tx.send(Ok(()));
                        shell.run(command_rx, fault_rx).await;
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            });
        })
        .context("starting the ring's thread")?;
    started
        .await
        .context("the ring's thread ended while starting")??;
    background.spawn(async move {
        if let Err(e) = crate::datapath::netlink::keep_neighbours(peers, NEIGHBOUR_REFRESH).await {
            warn!("keeping the other nodes' neighbour entries: {e:#}");
        }
    });
    background.spawn(super::faults::run(cluster.monitor, nics, fault_tx));
    Ok(ShellHandle { commands, thread })
}
