//! `gateway`: the daemon (`gateway daemon --config FILE`) and its control commands.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gateway::{cli, config::DEFAULT_SOCKET, control::Request, views::ConnFilter};

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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (request, json) = match args.command {
        Cmd::Daemon { config } => return daemon(&config),
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
    };
    match cli::call(&args.socket, &request) {
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
