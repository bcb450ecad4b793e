//! The daemon: the tokio program around the other rooms. It loads the config and the data
//! path, fills the maps, hands the tables to the datapath worker, starts the ring's shell (in a
//! cluster) or announces every VIP (alone), runs the health checks and serves the control
//! socket until told to stop. The main loop owns what changes the daemon's life: signals,
//! `stop`, and `reload` on a node alone (docs/architecture.md, "Rooms").
pub mod config_sync;
pub mod deadlines;
pub mod faults;
pub mod health;
pub mod host;
pub mod link;
pub mod load;
pub mod realtime;
pub mod shell;
pub mod stall;

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
};
use tracing::{error, info, warn};

use self::shell::{ShellCommand, ShellHandle, ShellParts};
use crate::{
    config::{self, live, Config},
    control::{
        server::{self, Answer, Command},
        views::{ShellLatency, Sources},
        Admin,
    },
    datapath::{
        garp,
        loader::{self, Datapath},
        maps::{ControlMaps, Maps},
        netlink::{self, Nic},
        worker::{self, DatapathHandle},
    },
};

/// The signals the daemon acts on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// IPv4 forwarding, turned on for the data path: translated packets whose neighbour is unknown
/// go through the kernel's forwarding path. Holds the value found, so a failed start and a
/// stop that removes the data path put it back (docs/architecture.md, "Start and stop").
struct Forwarding {
    /// The value found, when this daemon changed it.
    before: Option<String>,
}

impl Forwarding {
    fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(IP_FORWARD)
            .context("reading net.ipv4.ip_forward")?
            .trim()
            .to_string();
        if before == "1" {
            return Ok(Self { before: None });
        }
        std::fs::write(IP_FORWARD, "1").context("enabling net.ipv4.ip_forward")?;
        info!("set net.ipv4.ip_forward = 1 (was {before})");
        Ok(Self {
            before: Some(before),
        })
    }

    /// Puts the value found back; a failure is logged, as the data path is gone already.
    fn restore(self) {
        let Some(before) = self.before else { return };
        match std::fs::write(IP_FORWARD, &before) {
            Ok(()) => info!("restored net.ipv4.ip_forward = {before}"),
            Err(e) => error!("restoring net.ipv4.ip_forward = {before}: {e}"),
        }
    }
}

/// How the node takes part: in a ring, through its shell, or alone, where the main loop owns
/// the control maps and the running configuration.
enum Mode {
    Ring(ShellHandle),
    Alone {
        maps: Box<ControlMaps>,
        running: watch::Sender<Arc<Config>>,
    },
}

/// Re-reads the config file on a node alone and applies what applies live; a change of a
/// part that needs a restart is refused, changing nothing. The health checks restart when the
/// new configuration is published.
async fn reload_alone(
    maps: &mut ControlMaps,
    running: &watch::Sender<Arc<Config>>,
    datapath: &DatapathHandle,
) -> Result<(), String> {
    let old = running.borrow().clone();
    let path = old.path.clone();
    let new = tokio::task::spawn_blocking(move || config::load(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let later = live::restart_needed(&old, &new);
    if !later.is_empty() {
        return Err(format!(
            "{}: changes of {} need a restart",
            new.path.display(),
            later.join(", ")
        ));
    }
    let new = Arc::new(live::apply_live(&old, &new));
    maps.write_settings(&new)
        .map_err(|e| format!("writing the maps: {e:#}"))?;
    let apply = new.clone();
    datapath
        .call(move |worker| worker.apply_config(apply))
        .await
        .map_err(|e| e.to_string())??;
    info!(config = %new.path.display(), "reloaded");
    running.send_replace(new);
    Ok(())
}

/// Hands a reload to the cluster shell with the file's text (it answers once every member
/// runs it), or runs it here when the node is alone.
async fn reload(mode: &mut Mode, config: &Config, datapath: &DatapathHandle, answer: Answer) {
    match mode {
        Mode::Ring(shell) => match tokio::fs::read_to_string(&config.path).await {
            Ok(text) => forward(shell, ShellCommand::Reload(text, answer)).await,
            Err(e) => {
                let _ = answer.send(Err(format!("{}: {e}", config.path.display())));
            }
        },
        Mode::Alone { maps, running } => {
            let result = reload_alone(maps, running, datapath).await;
            if let Err(e) = &result {
                error!("reload refused: {e}");
            }
            let _ = answer.send(result);
        }
    }
}

/// Hands an operator command to the ring.
async fn forward(shell: &ShellHandle, command: ShellCommand) {
    if let Err(e) = shell.commands.send(command).await {
        let (ShellCommand::Admin(_, answer) | ShellCommand::Reload(_, answer)) = e.0;
        let _ = answer.send(Err("the cluster shell has stopped".into()));
    }
}

/// Hands a VIP or node command to the ring; alone, there is none.
async fn admin(mode: &Mode, request: Admin, answer: Answer) {
    match mode {
        Mode::Ring(shell) => forward(shell, ShellCommand::Admin(request, answer)).await,
        Mode::Alone { .. } => {
            let _ = answer.send(Err(
                "this node runs alone: the config has no [cluster] section".into(),
            ));
        }
    }
}

/// Starts the health checkers again, on the services of `config`.
fn restart_checks(config: &Config, datapath: &DatapathHandle, checks: &mut JoinSet<()>) {
    checks.abort_all();
    health::spawn_all(config, datapath, checks);
}

/// Runs the daemon until a signal or a `stop` command. Everything that can be checked is
/// checked before the first change to the kernel; a step that fails after one undoes them.
pub async fn run(config_path: &Path) -> Result<()> {
    let path = config_path.to_path_buf();
    let config = tokio::task::spawn_blocking(move || config::load(&path)).await??;
    loader::check_root()?;
    if config.realtime {
        realtime::lock_memory();
    }
    if let Some((lo, hi)) = config::ephemeral_ports() {
        if config.nat_ports.0 <= hi && lo <= config.nat_ports.1 {
            warn!(
                "nat_ports {:?} overlap the kernel's ephemeral ports {lo}-{hi}",
                config.nat_ports
            );
        }
    }
    let names: Vec<String> = config.interfaces.iter().map(|i| i.name.clone()).collect();
    let nics = netlink::nics(&names).await?;
    server::ensure_free(&config.socket)?;
    // Installed before anything is attached, so an early SIGTERM still stops cleanly.
    let signals = Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
    };
    let forwarding = Forwarding::enable()?;
    let mut dp = match Datapath::load(&config) {
        Ok(dp) => dp,
        Err(e) => {
            forwarding.restore();
            return Err(e);
        }
    };
    match serve(&config, nics, &mut dp, signals).await {
        // XDP kept for the next daemon still hands the kernel what it cannot forward itself.
        Ok(true) => dp.stop(true),
        Ok(false) => {
            let stopped = dp.stop(false);
            forwarding.restore();
            stopped
        }
        Err(e) => {
            // A failed takeover leaves the previous data path serving; a fresh one goes.
            let adopted = dp.adopted;
            dp.abandon()?;
            if !adopted {
                forwarding.restore();
            }
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
    let Maps {
        control: mut maps,
        mut tables,
        counters,
    } = Maps::take(dp.ebpf_mut())?;
    maps.write_nics_and_vips(config, &nics)?;
    maps.write_settings(config)?;
    tables.write_services(config, &HashMap::new())?;
    let config = Arc::new(config.clone());
    let counters = Arc::new(counters);
    let (datapath, datapath_thread) =
        worker::spawn(tables, config.clone()).context("starting the datapath worker")?;
    let (running, config_rx) = watch::channel(config.clone());
    let (cluster_tx, cluster_rx) = watch::channel(None);
    let (owned_tx, owned_rx) = watch::channel(BTreeSet::new());
    let shell_latency = Arc::new(ShellLatency::default());
    let mut background = JoinSet::new();
    // In a cluster the ring decides which VIPs this node owns and announces them; alone, it
    // owns and announces all of them now.
    let mut mode = match config.cluster {
        Some(_) => {
            let parts = ShellParts {
                config: config.clone(),
                running,
                nics: nics.clone(),
                maps,
                datapath: datapath.clone(),
                counters: counters.clone(),
                view: cluster_tx,
                owned: owned_tx,
                latency: shell_latency.clone(),
            };
            Mode::Ring(shell::spawn(&mut background, parts).await?)
        }
        None => {
            let targets = config
                .vips
                .iter()
                .filter_map(|v| {
                    let nic = nics.iter().find(|n| n.name == v.interface)?;
                    Some((nic.ifindex, nic.mac, v.address))
                })
                .collect();
            owned_tx.send_replace(config.vips.iter().map(|v| v.address).collect());
            let announcer = Arc::new(garp::Announcer::open().context("gratuitous ARP socket")?);
            background.spawn(garp::announce(announcer, config.arp, targets, |_| true));
            Mode::Alone {
                maps: Box::new(maps),
                running,
            }
        }
    };
    let mut checks = JoinSet::new();
    health::spawn_all(&config, &datapath, &mut checks);

    let socket = server::bind(&config.socket)?;
    let (tx, mut commands) = mpsc::channel(8);
    let sources = Arc::new(Sources {
        config: config_rx.clone(),
        nics,
        started: Instant::now(),
        adopted: dp.adopted,
        owned: owned_rx,
        cluster: cluster_rx,
        datapath: datapath.clone(),
        counters,
        shell_latency,
    });
    background.spawn(server::serve(socket, sources, tx));
    info!(node = %config.name, socket = %config.socket.display(), adopted = dp.adopted, "ready");

    let mut config_rx = config_rx;
    let keep = loop {
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM: stopping"); break false; }
            _ = signals.int.recv() => { info!("SIGINT: stopping"); break false; }
            _ = signals.hup.recv() => {
                let (answer, outcome) = oneshot::channel();
                let running = config_rx.borrow().clone();
                reload(&mut mode, &running, &datapath, answer).await;
                // In a cluster the outcome comes later; the shell logs it (Action::ConfigDone).
                drop(outcome);
            }
            Ok(()) = config_rx.changed() => {
                let running = config_rx.borrow_and_update().clone();
                restart_checks(&running, &datapath, &mut checks);
            }
            command = commands.recv() => match command {
                Some(Command::Reload(answer)) => {
                    let running = config_rx.borrow().clone();
                    reload(&mut mode, &running, &datapath, answer).await;
                }
                Some(Command::Admin(request, answer)) => admin(&mode, request, answer).await,
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
    if let Mode::Ring(shell) = mode {
        shell.stop().await;
    }
    // The last handle gone, the worker ends and closes the tables. A control client that
    // never sent its request may still hold a handle: the wait is bounded, and the process's
    // exit closes the tables then.
    drop(datapath);
    let joined = tokio::task::spawn_blocking(move || datapath_thread.join());
    let _ = tokio::time::timeout(Duration::from_secs(1), joined).await;
    Ok(keep)
}
