//! `gateway`: the daemon (`gateway daemon --config FILE`), the check of a configuration
//! (`gateway check --config FILE`), the daemon's control commands, and the node key commands.
use std::{path::PathBuf, process::ExitCode};

use std::net::Ipv4Addr;

use clap::{builder::TypedValueParser, Parser, Subcommand};
use gateway::{
    config::{self, DEFAULT_SOCKET},
    control::{client as cli, views::ConnFilter, Admin, Request},
};

#[derive(Parser)]
#[command(version, about = "XDP load-balancing gateway")]
struct Args {
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground (SIGTERM = clean stop, SIGHUP = reload).
    Daemon {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file as the daemon would before it starts (the node key too):
    /// prints `FILE: ok` or the error; needs no root and changes nothing.
    Check {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Node, interfaces, VIPs.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Services and backends.
    Services {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Connections.
    Conns {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most N.
        #[arg(long)]
        limit: Option<usize>,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only this backend, ADDR or ADDR:PORT.
        #[arg(long)]
        backend: Option<String>,
        /// Only this client address.
        #[arg(long)]
        client: Option<String>,
    },
    /// Counters.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the configuration file.
    Reload,
    /// Stop the daemon.
    Stop {
        /// Leave XDP attached and its maps pinned for the next daemon.
        #[arg(long)]
        keep_datapath: bool,
    },
    /// Move, prefer or pin a VIP (returns once the cluster has done it).
    Vip {
        #[command(subcommand)]
        command: VipCmd,
    },
    /// Close a node (it owns no VIP) or open it again (returns once the cluster has done it).
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// Make or read a node's Ed25519 key (`[node] key`); needs no daemon.
    Key {
        #[command(subcommand)]
        command: KeyCmd,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Write a new key to FILE (mode 0600, never overwritten) and print the `public_key = ...`
    /// line of this node's [[cluster.node]] entry.
    Generate { file: PathBuf },
    /// Print the public key of the key in FILE.
    Public { file: PathBuf },
}

#[derive(Subcommand)]
enum VipCmd {
    /// Give VIP to NODE now.
    Move { vip: Ipv4Addr, node: String },
    /// Make NODE the preferred owner of VIP.
    Prefer { vip: Ipv4Addr, node: String },
    /// Set the placement of VIP: 0 free, 1 sticky to its owner, 3 back to its preferred node.
    Pin {
        vip: Ipv4Addr,
        #[arg(long, default_value_t = 1, value_parser = clap::builder::PossibleValuesParser::new(["0", "1", "3"]).map(|s| s.parse::<u8>().expect("listed values are numbers")))]
        persistence: u8,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Take every VIP away from NODE; it owns none until opened. Refused for the last open
    /// node, whose VIPs nobody could take, unless forced.
    Close {
        node: String,
        /// Close it even when it is the last open node: the cluster then serves no VIP.
        #[arg(long)]
        force: bool,
    },
    /// Let NODE own VIPs again.
    Open { node: String },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (request, json) = match args.command {
        Cmd::Daemon { config } => return daemon(&config),
        Cmd::Check { config } => return check(&config),
        Cmd::Key { command } => return key(command),
        Cmd::Status { json } => (Request::Status, json),
        Cmd::Services { json } => (Request::Services, json),
        Cmd::Conns {
            json,
            limit,
            service,
            backend,
            client,
        } => (
            Request::Conns(ConnFilter {
                limit,
                service,
                backend,
                client,
            }),
            json,
        ),
        Cmd::Stats { json } => (Request::Stats, json),
        Cmd::Reload => (Request::Reload, false),
        Cmd::Stop { keep_datapath } => (Request::Stop { keep_datapath }, false),
        Cmd::Vip { command } => (
            Request::Admin(match command {
                VipCmd::Move { vip, node } => Admin::MoveVip { vip, node },
                VipCmd::Prefer { vip, node } => Admin::PreferVip { vip, node },
                VipCmd::Pin { vip, persistence } => Admin::PinVip { vip, persistence },
            }),
            false,
        ),
        Cmd::Node { command } => (
            Request::Admin(match command {
                NodeCmd::Close { node, force } => Admin::CloseNode { node, force },
                NodeCmd::Open { node } => Admin::OpenNode { node },
            }),
            false,
        ),
    };
    let answer = cli::call(&args.socket, &request).and_then(|data| match request {
        Request::Stop { .. } => cli::wait_for_exit(&data, cli::STOP_WAIT).map(|()| data),
        _ => Ok(data),
    });
    match answer {
        Ok(data) if json => {
            println!("{data}");
            ExitCode::SUCCESS
        }
        Ok(data) => {
            print!("{}", cli::render(&request, &data));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Shows warnings (a node key others may read) on standard error, for the commands that read
/// files without a daemon.
fn warnings_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

/// `check`: every check the daemon makes before it changes anything ([`config::load`]), and
/// nothing else: no kernel, no socket, no file written.
fn check(path: &std::path::Path) -> ExitCode {
    warnings_to_stderr();
    match config::load(path) {
        Ok(c) => {
            let backends: usize = c.services.iter().map(|s| s.backends.len()).sum();
            let cluster = c.cluster.as_ref().map_or("alone".to_string(), |cl| {
                format!("node {} of {} in a cluster", cl.me, cl.nodes.len())
            });
            println!(
                "{}: ok: node {} ({cluster}), {} interfaces, {} VIPs, {} services, {backends} backends",
                path.display(),
                c.name,
                c.interfaces.len(),
                c.vips.len(),
                c.services.len(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::from(1)
        }
    }
}

/// The `key` commands: print the result, or the error and exit 1.
fn key(command: KeyCmd) -> ExitCode {
    warnings_to_stderr();
    let result = match &command {
        KeyCmd::Generate { file } => cli::key_generate(file).inspect(|_| {
            eprintln!(
                "wrote {}; list its public key in this node's [[cluster.node]] entry:",
                file.display()
            )
        }),
        KeyCmd::Public { file } => cli::key_public(file),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn daemon(config: &std::path::Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(gateway::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}
