//! The daemon: loads the config and the data path, fills the maps, starts health checks,
//! the conntrack sweep and GARP, then serves the control socket until told to stop.
pub mod config_sync;
pub mod deadlines;
pub mod faults;
pub mod health;
pub mod host;
pub mod link;
pub mod load;
pub mod shell;
pub mod stall;

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
    task::JoinSet,
};
use tracing::{error, info, warn};

use self::{
    deadlines::Answer,
    shell::{AdminRequest, Request},
};
use crate::{
    config::{self, Backend, Config, HealthKind, Service},
    control::{self, Command},
    datapath::{
        conntrack, garp,
        loader::{self, Datapath},
        maps::{BackendKey, Maps},
        netlink::{self, Nic},
    },
};

/// How often idle connections are swept.
const GC_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the daemon's tasks share.
pub struct State {
    /// The active configuration.
    pub config: Config,
    /// The cluster NICs as the kernel reports them, in config order.
    pub nics: Vec<Nic>,
    /// The XDP maps.
    pub maps: Maps,
    /// Health verdicts of checked backends (absent = healthy).
    pub healthy: HashMap<BackendKey, bool>,
    /// When the daemon started.
    pub started: Instant,
    /// Whether it took over a pinned data path.
    pub adopted: bool,
    /// The cluster as the shell last saw it; `None` while alone or before the first update.
    pub cluster: Option<crate::control::views::ClusterView>,
}

/// The state behind a lock, shared by the tasks.
pub type Shared = Arc<Mutex<State>>;

impl State {
    /// Whether a backend may take new connections.
    pub fn is_healthy(&self, s: &Service, b: &Backend) -> bool {
        self.healthy
            .get(&(s.name.clone(), b.address, b.port))
            .copied()
            .unwrap_or(true)
    }

    /// Records a health change and rewrites that service's Maglev table.
    pub fn set_health(&mut self, key: &BackendKey, up: bool) -> Result<()> {
        self.healthy.insert(key.clone(), up);
        let Some(id) = self.config.services.iter().position(|s| s.name == key.0) else {
            return Ok(());
        };
        let service = self.config.services[id].clone();
        self.maps
            .write_service(&self.config, id as u32, &service, &self.healthy)
    }

    /// Applies a new config's services, backends, checks, timeouts and limits. Interfaces,
    /// VIPs and the node section need a restart; a change there is refused.
    fn apply(&mut self, new: Config) -> Result<(), String> {
        self.check_restart_free(&new)?;
        self.apply_live(new)
    }

    /// Refuses a config that changes what only a restart applies.
    fn check_restart_free(&self, new: &Config) -> Result<(), String> {
        let old = &self.config;
        if (
            &new.name,
            new.nat_ports,
            &new.pin_dir,
            new.xdp_mode,
            &new.socket,
            &new.interfaces,
            &new.vips,
            &new.cluster,
        ) != (
            &old.name,
            old.nat_ports,
            &old.pin_dir,
            old.xdp_mode,
            &old.socket,
            &old.interfaces,
            &old.vips,
            &old.cluster,
        ) {
            return Err(format!(
                "{}: [node], [control], [[interface]], [[vip]] and [cluster] changes need a restart",
                new.path.display()
            ));
        }
        Ok(())
    }

    /// Applies a configuration the cluster switched to: what applies live (services, back-ends,
    /// checks, timeouts, limits, ARP) at once; the rest of the running configuration stays
    /// until the daemon restarts (the file already holds it, and the shell logged which).
    pub fn apply_from_cluster(&mut self, new: Config) -> Result<(), String> {
        let mut running = self.config.clone();
        running.services = new.services;
        running.timeouts = new.timeouts;
        running.limits = new.limits;
        running.arp = new.arp;
        if let (Some(now), Some(next)) = (&mut running.cluster, &new.cluster) {
            now.config_version = next.config_version;
        }
        self.apply_live(running)
    }

    /// Writes a config's services into the maps and makes it the running one.
    fn apply_live(&mut self, new: Config) -> Result<(), String> {
        let old = &self.config;
        if new.limits.max_connections != old.limits.max_connections {
            warn!("limits.max_connections takes effect at the next restart");
        }
        // Keep verdicts of backends still checked; new or unchecked backends are healthy.
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
        self.maps
            .write_services(&new, &keep)
            .map_err(|e| format!("writing the maps: {e:#}"))?;
        self.healthy = keep;
        self.config = new;
        Ok(())
    }
}

/// The signals the daemon acts on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// Turns on IPv4 forwarding: translated packets whose neighbour is unknown go through the
/// kernel's forwarding path.
fn enable_forwarding() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH)?.trim() != "1" {
        std::fs::write(PATH, "1").context("enabling net.ipv4.ip_forward")?;
        info!("set net.ipv4.ip_forward = 1");
    }
    Ok(())
}

/// Re-reads the config file and applies it, restarting the health checkers (a node that
/// runs alone; in a cluster the shell offers the file to the ring).
fn reload(shared: &Shared, checks: &mut JoinSet<()>) -> Result<(), String> {
    let path = shared.lock().unwrap().config.path.clone();
    let new = config::load(&path).map_err(|e| e.to_string())?;
    shared.lock().unwrap().apply(new)?;
    restart_checks(shared, checks);
    info!(config = %path.display(), "reloaded");
    Ok(())
}

/// Starts the health checkers again, on the services of the running config.
fn restart_checks(shared: &Shared, checks: &mut JoinSet<()>) {
    checks.abort_all();
    health::spawn_all(shared, checks);
}

/// Hands a reload to the cluster shell (which answers once every member runs it), or runs it
/// here when the node is alone.
async fn reload_command(
    ring: Option<&mpsc::Sender<AdminRequest>>,
    shared: &Shared,
    checks: &mut JoinSet<()>,
    answer: Answer,
) {
    match ring {
        Some(ring) => {
            if let Err(e) = ring.send((Request::Reload, answer)).await {
                let (_, answer) = e.0;
                let _ = answer.send(Err("the cluster shell has stopped".into()));
            }
        }
        None => {
            let result = reload(shared, checks);
            if let Err(e) = &result {
                error!("reload refused: {e}");
            }
            let _ = answer.send(result);
        }
    }
}

/// Runs the daemon until a signal or a `stop` command.
pub async fn run(config_path: &Path) -> Result<()> {
    let config = config::load(config_path)?;
    loader::check_root()?;
    if let Some((lo, hi)) = config::ephemeral_ports() {
        if config.nat_ports.0 <= hi && lo <= config.nat_ports.1 {
            warn!(
                "nat_ports {:?} overlap the kernel's ephemeral ports {lo}-{hi}",
                config.nat_ports
            );
        }
    }
    enable_forwarding()?;
    let names: Vec<String> = config.interfaces.iter().map(|i| i.name.clone()).collect();
    let nics = netlink::nics(&names).await?;
    control::ensure_free(&config.socket)?;
    // Installed before anything is attached, so an early SIGTERM still stops cleanly.
    let signals = Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
    };
    let mut dp = Datapath::load(&config)?;
    match serve(&config, nics, &mut dp, signals).await {
        Ok(keep) => dp.stop(keep),
        Err(e) => {
            // A failed takeover leaves the previous data path serving; a fresh one goes.
            let keep = dp.adopted;
            dp.stop(keep)?;
            Err(e)
        }
    }
}

/// Fills the maps and serves until stopped; returns whether to keep the data path.
async fn serve(
    config: &Config,
    nics: Vec<Nic>,
    dp: &mut Datapath,
    mut signals: Signals,
) -> Result<bool> {
    let mut maps = Maps::take(dp.ebpf_mut())?;
    maps.write_nics_and_vips(config, &nics)?;
    maps.write_services(config, &HashMap::new())?;
    let garp_targets = config
        .vips
        .iter()
        .filter_map(|v| {
            let nic = nics.iter().find(|n| n.name == v.interface)?;
            Some((nic.ifindex, nic.mac, v.address))
        })
        .collect();
    let cluster_nics = nics.clone();
    let shared: Shared = Arc::new(Mutex::new(State {
        config: config.clone(),
        nics,
        maps,
        healthy: HashMap::new(),
        started: Instant::now(),
        adopted: dp.adopted,
        cluster: None,
    }));
    let mut background = JoinSet::new();
    // The shell applies each configuration the cluster switches to and asks for new checks.
    let (activations_tx, mut activations) = mpsc::unbounded_channel::<()>();
    // In a cluster the ring decides which VIPs this node owns and announces them; alone, it
    // owns and announces all of them now.
    let ring = match config.cluster {
        Some(_) => Some(
            crate::daemon::shell::spawn(&mut background, &shared, cluster_nics, activations_tx)
                .await?,
        ),
        None => {
            // Alone, every VIP stays this node's.
            let announcer =
                std::sync::Arc::new(garp::Announcer::open().context("gratuitous ARP socket")?);
            background.spawn(garp::announce(announcer, config.arp, garp_targets, |_| {
                true
            }));
            None
        }
    };
    let gc = shared.clone();
    background.spawn(async move {
        let mut ticker = tokio::time::interval(GC_INTERVAL);
        loop {
            ticker.tick().await;
            let mut state = gc.lock().unwrap();
            let timeouts = state.config.timeouts;
            if let Err(e) = conntrack::sweep(&mut state.maps, &timeouts) {
                warn!("conntrack sweep: {e}");
            }
        }
    });
    let mut checks = JoinSet::new();
    health::spawn_all(&shared, &mut checks);

    let socket = control::bind(&config.socket)?;
    let (tx, mut commands) = mpsc::channel(8);
    background.spawn(control::serve(socket, shared.clone(), tx));
    info!(node = %config.name, socket = %config.socket.display(), adopted = dp.adopted, "ready");

    let keep = loop {
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM: stopping"); break false; }
            _ = signals.int.recv() => { info!("SIGINT: stopping"); break false; }
            _ = signals.hup.recv() => {
                let (answer, outcome) = tokio::sync::oneshot::channel();
                reload_command(ring.as_ref(), &shared, &mut checks, answer).await;
                // In a cluster the outcome comes later; the shell logs it (Action::ConfigDone).
                drop(outcome);
            }
            Some(()) = activations.recv() => restart_checks(&shared, &mut checks),
            command = commands.recv() => match command {
                Some(Command::Reload(answer)) => {
                    reload_command(ring.as_ref(), &shared, &mut checks, answer).await;
                }
                Some(Command::Admin(request, answer)) => match &ring {
                    Some(ring) => {
                        if let Err(e) = ring.send((Request::Admin(request), answer)).await {
                            let (_, answer) = e.0;
                            let _ = answer.send(Err("the cluster shell has stopped".into()));
                        }
                    }
                    None => {
                        let _ = answer.send(Err(
                            "this node runs alone: the config has no [cluster] section".into(),
                        ));
                    }
                },
                Some(Command::Stop { keep_datapath }) => {
                    info!(keep_datapath, "stop requested");
                    break keep_datapath;
                }
                None => break false,
            },
        }
    };
    // The answer to `stop` is written by its client task; give it a moment to flush.
    tokio::time::sleep(Duration::from_millis(50)).await;
    background.shutdown().await;
    checks.shutdown().await;
    Ok(keep)
}
