//! Issue 12, finding 9: `gateway check --config FILE` refuses every bad file of the
//! configuration tests (the shared table of `config/bad_cases.rs`) with exit 1 and the
//! file:line: field of the error, and passes good files with exit 0, as a user without
//! privileges, changing nothing: no control socket, no pins, `ip_forward` as it was.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

#[path = "../src/config/bad_cases.rs"]
mod bad_cases;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

/// A directory for one test, readable by everybody (the check runs as `nobody`), removed on
/// drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gwcheck-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `gateway check --config path`, as `nobody` when the test runs as root: the check needs no
/// privilege.
fn check(path: &Path) -> Output {
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", GATEWAY]);
        c
    } else {
        Command::new(GATEWAY)
    };
    command.args(["check", "--config"]).arg(path);
    command.output().unwrap()
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
}

#[test]
fn every_bad_file_is_refused_with_its_line_and_field() {
    let dir = Dir::new("bad");
    for (i, case) in bad_cases::BAD.iter().enumerate() {
        let path = dir.0.join(format!("bad{i}.toml"));
        std::fs::write(&path, case.text()).unwrap();
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case:?}: {stderr}");
        let place = format!("{}:{}: {}: ", path.display(), case.line(), case.field);
        assert!(
            stderr.contains(&place),
            "{case:?}: wanted {place}, got {stderr}"
        );
        assert!(stderr.contains(case.says), "{case:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{case:?}");
    }
}

#[test]
fn good_files_pass_and_change_nothing() {
    let dir = Dir::new("good");
    let socket = dir.0.join("run/gateway.sock");
    let pin_dir = format!("/sys/fs/bpf/gwcheck-{}", std::process::id());
    let local = |text: &str| {
        text.replace("/run/gateway/gateway.sock", socket.to_str().unwrap())
            .replace("/sys/fs/bpf/gateway/gw1", &pin_dir)
    };
    let forward = ip_forward();

    let alone = dir.0.join("alone.toml");
    std::fs::write(&alone, local(bad_cases::Base::Alone.text())).unwrap();
    let out = check(&alone);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}: ok: node gw1 (alone), 2 interfaces, 2 VIPs, 1 services, 2 backends\n",
            alone.display()
        )
    );

    // A cluster node's file names its key, which must be the one the node map lists.
    let key = dir.0.join("gw1.key");
    let made = Command::new(GATEWAY)
        .args(["key", "generate"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
    let line = String::from_utf8(made.stdout).unwrap();
    let public = line
        .trim()
        .trim_start_matches("public_key = ")
        .trim_matches('"');
    let text = local(bad_cases::Base::Cluster.text())
        .replace("/etc/gateway/node.key", key.to_str().unwrap())
        .replace("RIiKafCp1xLUBXVlV2+KVBc50Yb1sc8kzQqWe4XOq1I=", public);
    let cluster = dir.0.join("cluster.toml");
    std::fs::write(&cluster, text).unwrap();
    std::os::unix::fs::chown(&cluster, Some(65534), Some(65534)).unwrap();
    // It holds the cluster's keys: refused while its group or others have access.
    let mode = |m| {
        std::fs::set_permissions(&cluster, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    mode(0o644);
    let out = check(&cluster);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(": cluster.keys: ") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    mode(0o600);
    let out = check(&cluster);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: node gw1 (node 0 of 3 in a cluster)"),
        "{out:?}"
    );

    assert!(!socket.exists() && !socket.parent().unwrap().exists());
    assert!(!Path::new(&pin_dir).exists());
    assert_eq!(ip_forward(), forward);
}
