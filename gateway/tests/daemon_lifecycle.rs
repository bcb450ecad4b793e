//! The daemon's life in a throwaway namespace with two veth pairs: start, query, stop keeping
//! the data path, adopt it, reload (good and bad files), SIGTERM, a start that fails, and
//! nothing left behind.
//! Needs root; everything it creates is uniquely named and removed by guards.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed_kit::{cmd, Netns};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");
const EXAMPLE: &str = include_str!("../examples/gateway.toml");

/// The example config's NICs; the bed's namespace is private, so their names are free.
const EXT: &str = "ext0";
const INT: &str = "int0";

/// Namespace, temp dir, pin dir and daemon of one test; all removed on drop.
struct Bed {
    dir: PathBuf,
    pin_dir: PathBuf,
    daemon: Option<Child>,
    // Last: the namespace goes once the daemon has.
    ns: Netns,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bed {
    fn new() -> Self {
        let ns = Netns::unique("gwlc").unwrap();
        let bed = Bed {
            dir: std::env::temp_dir().join(ns.name()),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/gwtest-{}", ns.name())),
            daemon: None,
            ns,
        };
        std::fs::create_dir_all(&bed.dir).unwrap();
        for nic in [EXT, INT] {
            let peer = format!("p{nic}");
            bed.ns
                .ip(&["link", "add", nic, "type", "veth", "peer", "name", &peer])
                .unwrap();
            bed.ns.ip(&["link", "set", nic, "up"]).unwrap();
            bed.ns.ip(&["link", "set", &peer, "up"]).unwrap();
        }
        bed.ns
            .ip(&["addr", "add", "10.0.0.1/24", "dev", EXT])
            .unwrap();
        bed.ns
            .ip(&["addr", "add", "10.1.0.254/24", "dev", INT])
            .unwrap();
        bed.write_config("");
        bed
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/gateway.sock")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    /// The example config, renamed for this bed, without health checks, plus `extra`.
    fn write_config(&self, extra: &str) {
        self.write(&(self.config_text() + extra));
    }

    fn write(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    /// The example config renamed for this bed, without health checks.
    fn config_text(&self) -> String {
        EXAMPLE
            .replace("/sys/fs/bpf/gateway/gw1", self.pin_dir.to_str().unwrap())
            .replace("/run/gateway/gateway.sock", self.socket().to_str().unwrap())
            .replace("kind = \"http\"", "kind = \"none\"")
    }

    fn start(&mut self) {
        self.start_with(Stdio::inherit());
    }

    /// Starts the daemon with its log (tracing writes to standard output) going to `log`.
    fn start_with(&mut self, log: impl Into<Stdio>) {
        let child = cmd::command_in(self.ns.name(), GATEWAY)
            .args(["daemon", "--config"])
            .arg(self.config())
            .stdout(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket().exists() {
            assert!(Instant::now() < deadline, "daemon not ready in 20s");
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early: {status}");
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the daemon to exit and returns its exit code.
    fn wait_exit(&mut self) -> i32 {
        let mut child = self.daemon.take().expect("a running daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(GATEWAY)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// How many of the bed's two links have an XDP program attached.
    fn xdp_links(&self) -> usize {
        [EXT, INT]
            .iter()
            .filter(|l| {
                let out = self.ns.ip(&["-d", "link", "show", "dev", l]).unwrap();
                out.contains("prog/xdp")
            })
            .count()
    }
}

fn pins(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("links")).map_or(0, |d| d.count())
}

#[test]
fn start_adopt_reload_and_clean_stop() {
    let mut bed = Bed::new();
    assert_eq!(
        bed.cli(&["status"]).status.code(),
        Some(3),
        "no daemon yet: exit 3"
    );

    bed.start();
    let status = bed.json(&["status", "--json"]);
    assert_eq!(status["node"], "gw1");
    assert_eq!(status["adopted"], false);
    assert_eq!(status["xdp_mode"], "native");
    assert_eq!(status["interfaces"].as_array().unwrap().len(), 2);
    assert_eq!(status["interfaces"][0]["address"], "10.0.0.1");
    assert_eq!(status["vips"][0]["owned"], true);
    let services = bed.json(&["services", "--json"]);
    assert_eq!(services[0]["table_size"], 211);
    assert_eq!(services[0]["backends"][1]["healthy"], true);
    let stats = bed.json(&["stats", "--json"]);
    assert!(stats["actions"]["pass"].is_u64());
    assert!(stats["services"]["web"]["packets"].is_u64());
    assert_eq!(
        bed.json(&["conns", "--json", "--limit", "5"]),
        Value::Array(vec![])
    );
    assert_eq!(
        bed.cli(&["conns", "--service", "nope"]).status.code(),
        Some(1)
    );
    assert_eq!(bed.xdp_links(), 2);

    // Upgrade path: leave the data path behind, then adopt it.
    assert!(bed.cli(&["stop", "--keep-datapath"]).status.success());
    assert_eq!(bed.wait_exit(), 0);
    assert_eq!(bed.xdp_links(), 2, "XDP stays attached between daemons");
    assert_eq!(pins(&bed.pin_dir), 2);
    assert!(!bed.socket().exists());
    bed.start();
    assert_eq!(bed.json(&["status", "--json"])["adopted"], true);
    assert_eq!(bed.xdp_links(), 2);

    // Reload: a new backend grows the table; a bad file changes nothing.
    bed.write_config("[[service.backend]]\naddress = \"10.1.0.13\"\nport = 8080\nweight = 2\n");
    assert!(bed.cli(&["reload"]).status.success());
    let services = bed.json(&["services", "--json"]);
    assert_eq!(services[0]["backends"].as_array().unwrap().len(), 3);
    assert_eq!(services[0]["table_size"], 307);
    bed.write_config("[[service.backend]]\naddress = \"10.1.0.13\"\nport = 8080\nweight = 500\n");
    let bad = bed.cli(&["reload"]);
    assert_eq!(bad.status.code(), Some(1));
    let message = String::from_utf8_lossy(&bad.stderr);
    // The weight is the fourth line of what was appended to the example.
    let line = bed.config_text().lines().count() + 4;
    assert!(
        message.contains(&format!(
            "gateway.toml:{line}: service[0].backend[2].weight"
        )),
        "{message}"
    );
    assert_eq!(bed.json(&["services", "--json"]), services);

    // SIGTERM: nothing of the gateway is left in the kernel.
    let pid = bed.daemon.as_ref().unwrap().id() as i32;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(bed.wait_exit(), 0);
    assert_eq!(bed.xdp_links(), 0);
    assert!(!bed.pin_dir.exists());
    assert!(!bed.socket().exists());
}

/// A daemon run to its end on `config`: its exit code and log.
fn run_daemon(bed: &Bed, config: &str) -> (Option<i32>, String) {
    let path = bed.dir.join("other.toml");
    std::fs::write(&path, config).unwrap();
    // A cluster node's file holds the cluster's keys: refused unless private.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = cmd::command_in(bed.ns.name(), GATEWAY)
        .args(["daemon", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 12, finding 1: `stop` removed any `pin_dir` the file named, `/sys/fs/bpf` itself
/// accepted (another application's pins went), and two daemons sharing one adopted each
/// other's links.
#[test]
fn the_pin_dir_is_the_daemons_own() {
    let mut bed = Bed::new();
    let ours = bed.pin_dir.to_str().unwrap().to_string();
    let text = bed.config_text();
    let on = |pin_dir: &str| text.replace(&ours, pin_dir);
    for (pin_dir, refusal) in [
        ("/sys/fs/bpf", "is the root of a bpffs mount"),
        ("/tmp/gateway-pins", "is not on bpffs"),
    ] {
        let (code, log) = run_daemon(&bed, &on(pin_dir));
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains(refusal), "{log}");
        assert_eq!(bed.xdp_links(), 0);
    }
    // Another application's pins in the directory: refused, and left alone.
    let other = bed.pin_dir.join("other-app");
    std::fs::create_dir_all(&other).unwrap();
    let (code, log) = run_daemon(&bed, &on(&ours));
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("holds other-app, which the gateway did not pin"),
        "{log}"
    );
    assert!(other.exists());
    std::fs::remove_dir(&other).unwrap();

    // A second daemon (its own socket) on a running one's directory: refused, and the first
    // one's data path is untouched.
    bed.start();
    let second = on(&ours).replace(
        bed.socket().to_str().unwrap(),
        bed.dir.join("run/second.sock").to_str().unwrap(),
    );
    let (code, log) = run_daemon(&bed, &second);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("in use by another running gateway daemon"),
        "{log}"
    );
    assert_eq!(pins(&bed.pin_dir), 2);
    assert_eq!(bed.xdp_links(), 2);

    // Something appears in the directory while the daemon runs: stop removes the gateway's
    // pins only.
    std::fs::create_dir(&other).unwrap();
    assert!(bed.cli(&["stop"]).status.success());
    assert_eq!(bed.wait_exit(), 0);
    assert_eq!(bed.xdp_links(), 0);
    let left: Vec<_> = std::fs::read_dir(&bed.pin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["other-app"]);
}

/// `net.ipv4.ip_forward` in the bed's namespace.
fn ip_forward(bed: &Bed) -> String {
    cmd::run_in(bed.ns.name(), "cat", &["/proc/sys/net/ipv4/ip_forward"])
        .unwrap()
        .trim()
        .to_string()
}

/// Issue 12, finding 9: the node key and the transport's timers were checked after
/// `ip_forward = 1` and the XDP attach, an attach failing on a later NIC left XDP and pins on
/// the earlier ones (which the next start adopted), and `ip_forward` was never restored.
#[test]
fn a_failed_start_leaves_nothing_behind() {
    let mut bed = Bed::new();
    assert_eq!(ip_forward(&bed), "0", "a new namespace does not forward");
    let nothing_left = |bed: &Bed, log: &str| {
        assert_eq!(bed.xdp_links(), 0, "{log}");
        assert!(!bed.pin_dir.exists(), "{log}");
        assert_eq!(ip_forward(bed), "0", "{log}");
    };

    // Refused by the checks, before anything changed, naming the line.
    let missing_key = include_str!("../examples/cluster.toml")
        .replace(
            "[node]\n",
            &format!("[node]\npin_dir = \"{}\"\n", bed.pin_dir.display()),
        )
        .replace("/run/gateway/gateway.sock", bed.socket().to_str().unwrap())
        .replace("/etc/gateway/node.key", "/nonexistent/gw1.key");
    let key_line = missing_key[..missing_key.find("key = ").unwrap()]
        .matches('\n')
        .count()
        + 1;
    let (code, log) = run_daemon(&bed, &missing_key);
    assert_eq!(code, Some(1), "{log}");
    let refusal = format!("other.toml:{key_line}: node.key: /nonexistent/gw1.key: cannot read");
    assert!(log.contains(&refusal), "{log}");
    nothing_left(&bed, &log);
    let slow = missing_key.replace("resend = \"20ms\"", "resend = \"5s\"");
    let (code, log) = run_daemon(&bed, &slow);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(": cluster.timers.resend: must be between 1ms and 1s"),
        "{log}"
    );
    nothing_left(&bed, &log);

    // The second NIC cannot take XDP in the driver (a bridge has no XDP support): the first
    // one loses its attachment and pin, and forwarding is off again.
    bed.ns
        .ip(&["link", "add", "br0", "type", "bridge"])
        .unwrap();
    bed.ns.ip(&["link", "set", "br0", "up"]).unwrap();
    let bridged = bed.config_text().replace("\"int0\"", "\"br0\"");
    let (code, log) = run_daemon(&bed, &bridged);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("attaching XDP (native) to br0"), "{log}");
    nothing_left(&bed, &log);

    // A step after the whole data path is up fails (the control socket's directory cannot
    // be made): the same.
    let blocked = bed.dir.join("file");
    std::fs::write(&blocked, "").unwrap();
    let unbindable = bed.config_text().replace(
        bed.socket().to_str().unwrap(),
        blocked.join("gateway.sock").to_str().unwrap(),
    );
    let (code, log) = run_daemon(&bed, &unbindable);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("binding"), "{log}");
    nothing_left(&bed, &log);

    // A start turns forwarding on, a plain stop off again. A stop keeping the data path
    // leaves it on, since the kept XDP hands the kernel what it cannot forward itself; the
    // daemon that adopts it found it on, and leaves it on.
    bed.start();
    assert_eq!(ip_forward(&bed), "1");
    assert!(bed.cli(&["stop"]).status.success());
    assert_eq!(bed.wait_exit(), 0);
    nothing_left(&bed, "after a plain stop");
    bed.start();
    assert!(bed.cli(&["stop", "--keep-datapath"]).status.success());
    assert_eq!(bed.wait_exit(), 0);
    assert_eq!(ip_forward(&bed), "1", "the kept data path still forwards");
    bed.start();
    assert!(bed.cli(&["stop"]).status.success());
    assert_eq!(bed.wait_exit(), 0);
    assert_eq!(bed.xdp_links(), 0);
    assert_eq!(ip_forward(&bed), "1");
}

/// A field of `/proc/PID/status` in kB (`VmRSS`) or as a count.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Issue 12, finding 10: the control socket read an unbounded line before the root check
/// (256 MiB took the daemon to 283 MB), had no idle timeout and no limit on clients (20,000
/// idle ones made `status` time out), and on EMFILE its accept loop spun, writing 683 MB of
/// log in 10 s.
#[test]
fn a_control_client_costs_the_daemon_a_bounded_line_slot_and_time() {
    let mut bed = Bed::new();
    let log_path = bed.dir.join("daemon.log");
    bed.start_with(std::fs::File::create(&log_path).unwrap());
    let pid = bed.daemon.as_ref().unwrap().id();
    bed.json(&["status", "--json"]);
    let rss_before = proc_status(pid, "VmRSS:");

    // 64 MiB with no newline: refused after 64 KiB, and the daemon does not hold it.
    let mut client = UnixStream::connect(bed.socket()).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        if client.write_all(&chunk).is_err() {
            break; // the daemon answered and closed
        }
    }
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("at most 65536 bytes"), "{answer}");
    let rss_after = proc_status(pid, "VmRSS:");
    println!("RSS {rss_before} kB before the long line, {rss_after} kB after");
    assert!(rss_after < rss_before + 16 * 1024, "{rss_after} kB");

    // Idle clients beyond the limit of clients served at once, with the daemon's file
    // descriptors about to run out: accept fails while they hold them, and `status` answers
    // again once the idle ones timed out (2 s), with one log line of the failures, not a
    // flood.
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = (fds + 40).to_string();
    let prlimit = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(prlimit.success());
    let log_before = std::fs::read_to_string(&log_path).unwrap().lines().count();
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(bed.socket()).unwrap())
        .collect();
    sleep(Duration::from_secs(3));
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = bed.cli(&["status", "--json"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status still refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    let accept_lines = log
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("control socket accept"))
        .count();
    println!("{accept_lines} accept failures logged");
    assert!(
        (1..=2).contains(&accept_lines),
        "{accept_lines} lines of accept failures (at least one: the descriptors ran out)"
    );
    assert!(bed.daemon.as_mut().unwrap().try_wait().unwrap().is_none());
}

/// Polls `services --json` until backend `index` of the first service has health `up`.
fn wait_health(bed: &Bed, index: usize, up: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let services = bed.json(&["services", "--json"]);
        if services[0]["backends"][index]["healthy"] == up {
            return services;
        }
        assert!(
            Instant::now() < deadline,
            "backend {index} never became {up}: {services}"
        );
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn http_health_checks_drive_the_maglev_table() {
    let mut bed = Bed::new();
    // Backend 0 (10.1.0.11) does not exist; backend 1 is a real HTTP server in the namespace.
    let text = bed
        .config_text()
        .replace("kind = \"none\"", "kind = \"http\"")
        .replace("interval = \"500ms\"", "interval = \"100ms\"")
        .replace("address = \"10.1.0.12\"", "address = \"10.1.0.254\"");
    bed.write(&text);
    let mut server = ChildGuard(
        cmd::command_in(bed.ns.name(), "python3")
            .args(["-m", "http.server", "--bind", "10.1.0.254", "8080"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    bed.start();
    wait_health(&bed, 0, false);
    // The server may start after the daemon: it comes (back) up after `rise` checks.
    let services = wait_health(&bed, 1, true);
    assert_eq!(services[0]["backends"][0]["healthy"], false, "{services}");
    assert_eq!(
        services[0]["table_size"], 211,
        "one healthy backend fills the table"
    );

    // The server dies: the last backend goes down and the table empties.
    server.stop();
    let services = wait_health(&bed, 1, false);
    assert_eq!(services[0]["table_size"], 0, "{services}");
    assert!(bed.cli(&["stop"]).status.success());
    assert_eq!(bed.wait_exit(), 0);
    assert_eq!(bed.xdp_links(), 0);
}

/// A helper process killed when the test ends, however it ends.
struct ChildGuard(Child);

impl ChildGuard {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
