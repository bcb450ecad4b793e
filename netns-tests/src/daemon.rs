//! The gateway daemon in the testbed: its configuration (the format of docs/interfaces.md),
//! starting it in the gateway namespace, driving it through its CLI, and stopping it.
use crate::binaries;
use crate::process::Process;
use crate::testbed::Testbed;
use crate::topology::{
    self, BACKEND_HTTP_PORT, BACKEND_UDP_PORT, EXT_IF, INTERNAL_VIP, INT_IF, VIP,
};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The port of the HTTP service on the VIP.
pub const WEB_PORT: u16 = 80;
/// The port of the UDP echo service on the VIP.
pub const ECHO_PORT: u16 = 5000;
/// How long a starting daemon may take to become ready (its control socket answers).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A health check of a service.
#[derive(Clone, Debug)]
pub struct Health {
    /// `none`, `tcp` or `http`.
    pub kind: &'static str,
    /// Duration strings, as in the config file.
    pub interval: &'static str,
    /// See `interval`.
    pub timeout: &'static str,
    /// Successes to come back up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
}

/// A service of the generated config.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Service name.
    pub name: String,
    /// Service port on the VIP.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// Health check; `None` keeps the daemon's default.
    pub health: Option<Health>,
    /// Back-ends: address, port, weight.
    pub backends: Vec<(Ipv4Addr, u16, u32)>,
}

impl ServiceConfig {
    /// The HTTP service `web` on VIP:80, one back-end per weight (b1, b2, ...) on port 8080,
    /// HTTP health checks every 200 ms (down after 2 failures).
    pub fn web(weights: &[u32]) -> Self {
        Self {
            name: "web".to_owned(),
            port: WEB_PORT,
            protocol: "tcp",
            health: Some(Health {
                kind: "http",
                interval: "200ms",
                timeout: "150ms",
                rise: 2,
                fall: 2,
            }),
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, w)| (topology::backend_addr(i), BACKEND_HTTP_PORT, *w))
                .collect(),
        }
    }

    /// The UDP echo service `echo` on VIP:5000 over every back-end's port 9000.
    pub fn echo() -> Self {
        Self {
            name: "echo".to_owned(),
            port: ECHO_PORT,
            protocol: "udp",
            health: None,
            backends: (0..topology::BACKENDS.len())
                .map(|i| (topology::backend_addr(i), BACKEND_UDP_PORT, 1))
                .collect(),
        }
    }
}

impl ServiceConfig {
    /// The service as a `[[service]]` table on `vip`, with its health check and back-ends.
    pub fn to_toml(&self, vip: Ipv4Addr) -> String {
        let mut s = format!(
            "\n[[service]]\nname = \"{}\"\nvip = \"{vip}\"\nport = {}\nprotocol = \"{}\"\n",
            self.name, self.port, self.protocol
        );
        if let Some(h) = &self.health {
            // Writing to a String cannot fail.
            let _ = write!(
                s,
                "\n[service.health]\nkind = \"{}\"\npath = \"/\"\ninterval = \"{}\"\ntimeout = \"{}\"\nrise = {}\nfall = {}\n",
                h.kind, h.interval, h.timeout, h.rise, h.fall
            );
        }
        for (addr, port, weight) in &self.backends {
            let _ = write!(
                s,
                "\n[[service.backend]]\naddress = \"{addr}\"\nport = {port}\nweight = {weight}\n"
            );
        }
        s
    }
}

/// The daemon's configuration for the gateway topology.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where the daemon pins its maps and link; unique per testbed.
    pub pin_dir: PathBuf,
    /// The control socket; unique per testbed.
    pub socket: PathBuf,
    /// The file the config is written to.
    pub path: PathBuf,
    /// This node's NAT port block.
    pub nat_ports: &'static str,
    /// `tcp_closing` idle timeout, also written as `tcp_time_wait` (so a benchmark that sets
    /// the kernel's conntrack TIME_WAIT to it compares like with like).
    pub tcp_closing: &'static str,
    /// The services.
    pub services: Vec<ServiceConfig>,
}

impl GatewayConfig {
    /// A config for `bed` (interfaces ext0/int0, the two VIPs) with `services`.
    pub fn new(bed: &Testbed, services: Vec<ServiceConfig>) -> Self {
        Self {
            pin_dir: Path::new("/sys/fs/bpf").join(bed.prefix()),
            socket: bed.dir().join("gateway.sock"),
            path: bed.dir().join("gateway.toml"),
            nat_ports: "20000-29999",
            tcp_closing: "10s",
            services,
        }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            r#"[node]
name = "gw"
nat_ports = "{nat}"
pin_dir = "{pin}"
xdp_mode = "native"

[control]
socket = "{socket}"

[[interface]]
name = "{EXT_IF}"
role = "external"

[[interface]]
name = "{INT_IF}"
role = "internal"

[[vip]]
address = "{VIP}"
interface = "{EXT_IF}"

[[vip]]
address = "{INTERNAL_VIP}"
interface = "{INT_IF}"

[timeouts]
tcp_established = "300s"
tcp_closing = "{closing}"
tcp_time_wait = "{closing}"
udp = "30s"
"#,
            nat = self.nat_ports,
            pin = self.pin_dir.display(),
            socket = self.socket.display(),
            closing = self.tcp_closing,
        );
        for service in &self.services {
            s += &service.to_toml(VIP);
        }
        s
    }

    /// Writes the config file.
    pub fn write(&self) -> Result<()> {
        std::fs::write(&self.path, self.to_toml())
            .with_context(|| format!("write {}", self.path.display()))
    }
}

/// A gateway daemon running in the gateway namespace. Dropping it stops the daemon and removes
/// whatever pins are left, so a failed test leaves nothing in bpffs.
pub struct Daemon {
    process: Option<Process>,
    binary: PathBuf,
    host: String,
    netns: String,
    socket: PathBuf,
    config: PathBuf,
    pin_dir: PathBuf,
    log_dir: PathBuf,
    starts: u32,
}

impl Daemon {
    /// Writes `config`, starts the daemon and waits until it is ready.
    pub fn start(bed: &Testbed, config: &GatewayConfig) -> Result<Self> {
        config.write()?;
        Self::start_in(
            bed,
            topology::GATEWAY,
            &config.path,
            &config.socket,
            &config.pin_dir,
        )
    }

    /// Starts a daemon in host `host` of `bed` with the config file at `path` (written by the
    /// caller), which names `socket` and `pin_dir`, and waits until it is ready.
    pub fn start_in(
        bed: &Testbed,
        host: &str,
        path: &Path,
        socket: &Path,
        pin_dir: &Path,
    ) -> Result<Self> {
        let mut daemon = Self {
            process: None,
            binary: binaries::find("gateway")?,
            host: host.to_owned(),
            netns: bed.ns(host)?.name().to_owned(),
            socket: socket.to_owned(),
            config: path.to_owned(),
            pin_dir: pin_dir.to_owned(),
            log_dir: bed.dir().to_owned(),
            starts: 0,
        };
        daemon.launch()?;
        Ok(daemon)
    }

    /// Starts the daemon process (again) and waits until `gateway status` succeeds; returns
    /// how long that took.
    pub fn launch(&mut self) -> Result<Duration> {
        let started = Instant::now();
        self.starts += 1;
        let log = self
            .log_dir
            .join(format!("{}-gateway-{}.log", self.host, self.starts));
        let args = vec![
            "daemon".to_owned(),
            "--config".to_owned(),
            self.config.display().to_string(),
        ];
        let mut process = Process::spawn(&self.netns, &self.binary, &args, &log)?;
        loop {
            if let Some(status) = process.try_status()? {
                bail!(
                    "gateway daemon exited ({status}) before ready:\n{}",
                    process.log_tail(30)
                );
            }
            if self.ready()? {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "gateway daemon not ready after {READY_TIMEOUT:?}:\n{}",
                    process.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process = Some(process);
        Ok(started.elapsed())
    }

    /// Ready means `gateway status --json` succeeds and names the node.
    fn ready(&self) -> Result<bool> {
        let output = self.command(&["status", "--json"])?;
        Ok(output.status.success()
            && serde_json::from_slice::<serde_json::Value>(&output.stdout)
                .is_ok_and(|v| v["node"].is_string()))
    }

    fn command(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.binary)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .with_context(|| format!("run {}", self.binary.display()))
    }

    /// Runs `gateway --socket S args...`; a non-zero exit is an error with its output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let output = self.command(args)?;
        if !output.status.success() {
            bail!(
                "`gateway {}` failed ({}): {}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs a CLI command with `--json` and parses its output.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = args.to_vec();
        full.push("--json");
        let text = self.cli(&full)?;
        serde_json::from_str(&text)
            .with_context(|| format!("parse output of gateway {}: {text}", args.join(" ")))
    }

    /// Stops the daemon with `gateway stop [--keep-datapath]`, which returns once the daemon
    /// has exited (checked).
    pub fn stop(&mut self, keep_datapath: bool) -> Result<Duration> {
        let started = Instant::now();
        let mut args = vec!["stop"];
        if keep_datapath {
            args.push("--keep-datapath");
        }
        self.cli(&args)?;
        let mut process = self.process.take().context("daemon not running")?;
        if process.try_status()?.is_none() {
            bail!("`gateway stop` returned while the daemon still ran");
        }
        let status = process.wait_exit(Duration::from_secs(10))?;
        if !status.success() {
            bail!("daemon exited with {status}:\n{}", process.log_tail(30));
        }
        Ok(started.elapsed())
    }

    /// Stops the daemon with SIGTERM (a clean stop) and waits for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut process = self.process.take().context("daemon not running")?;
        process.signal(libc::SIGTERM)?;
        let status = process.wait_exit(timeout)?;
        if !status.success() {
            bail!("daemon exited with {status}:\n{}", process.log_tail(30));
        }
        Ok(started.elapsed())
    }

    /// Sends `signal` to the running daemon (SIGSTOP / SIGCONT to hang and resume it).
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        self.process
            .as_mut()
            .context("daemon not running")?
            .signal(signal)
    }

    /// Kills the daemon with SIGKILL, as a crash does, and reaps it. Its XDP program stays
    /// attached (the link is pinned) and keeps serving until its lease runs out.
    pub fn kill(&mut self) -> Result<()> {
        let mut process = self.process.take().context("daemon not running")?;
        process.signal(libc::SIGKILL)?;
        process.wait_exit(Duration::from_secs(5))?;
        Ok(())
    }

    /// Whether a daemon process is running (not killed or stopped by the test).
    pub fn running(&self) -> bool {
        self.process.is_some()
    }

    /// The running daemon's process id (for CPU accounting).
    pub fn pid(&self) -> Result<u32> {
        Ok(self.process.as_ref().context("daemon not running")?.pid())
    }

    /// The daemon's pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The last lines of the current daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(process) = &self.process {
            if std::thread::panicking() {
                eprintln!("gateway daemon log:\n{}", process.log_tail(40));
            }
        }
        self.process = None;
        if self.pin_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_dir) {
                eprintln!("testbed cleanup: {}: {e}", self.pin_dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_is_the_contract_format() {
        let config = GatewayConfig {
            pin_dir: "/sys/fs/bpf/x".into(),
            socket: "/tmp/x/gateway.sock".into(),
            path: "/tmp/x/gateway.toml".into(),
            nat_ports: "20000-29999",
            tcp_closing: "10s",
            services: vec![ServiceConfig::web(&[1, 2, 3]), ServiceConfig::echo()],
        };
        let value: toml::Value = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(value["node"]["pin_dir"].as_str(), Some("/sys/fs/bpf/x"));
        assert_eq!(value["interface"].as_array().unwrap().len(), 2);
        assert_eq!(value["vip"][0]["address"].as_str(), Some("10.0.0.100"));
        let web = &value["service"][0];
        assert_eq!(web["protocol"].as_str(), Some("tcp"));
        assert_eq!(web["health"]["fall"].as_integer(), Some(2));
        let weights: Vec<i64> = web["backend"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_integer().unwrap())
            .collect();
        assert_eq!(weights, [1, 2, 3]);
        assert_eq!(
            value["service"][1]["backend"][2]["port"].as_integer(),
            Some(9000)
        );
        assert!(value["service"][1].get("health").is_none());
    }
}
