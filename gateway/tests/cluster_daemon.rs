//! Two daemons in two namespaces on one bridge, with a router namespace as their witness: they
//! form a ring, every VIP is owned (and answered by ARP) by exactly one of them, and `gateway vip
//! move` returns only once the VIP has moved. Needs root; everything it creates is uniquely named
//! and removed by the guard, even when an assertion fails.
use std::{
    path::PathBuf,
    process::{Child, Command, Output},
    thread::sleep,
    time::{Duration, Instant},
};

use gateway::config::node_key::{NodeKey, PublicKey};
use serde_json::Value;
use testbed_kit::{cmd, Netns};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");
const VIPS: [&str; 3] = ["10.0.0.100", "10.0.0.101", "10.0.0.102"];
const KEY: &str = "5a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70717273747576777879";

/// One gateway node: its namespace, files and daemon.
struct Member {
    name: &'static str,
    ns: Netns,
    address: &'static str,
    daemon: Option<Child>,
}

/// A switch namespace with a bridge, a router namespace and the members; removed on drop.
struct Cluster {
    tag: String,
    dir: PathBuf,
    members: Vec<Member>,
    switch: Netns,
    router: Netns,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.daemon.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for m in &self.members {
            let _ = std::fs::remove_dir_all(self.pin_dir(m));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespaces go with the fields, once the daemons have.
    }
}

impl Cluster {
    fn new() -> Self {
        let tag = testbed_kit::netns::unique_name("gwcl");
        let ns = |name: &str| Netns::create(&format!("{tag}-{name}")).unwrap();
        let member = |name, address| Member {
            name,
            ns: ns(name),
            address,
            daemon: None,
        };
        let cluster = Cluster {
            dir: std::env::temp_dir().join(&tag),
            members: vec![member("gw1", "10.0.0.2"), member("gw2", "10.0.0.3")],
            switch: ns("sw"),
            router: ns("rt"),
            tag,
        };
        std::fs::create_dir_all(&cluster.dir).unwrap();
        let sw = &cluster.switch;
        sw.ip("link add br0 type bridge").unwrap();
        sw.ip("link set br0 up").unwrap();
        let hosts = cluster
            .members
            .iter()
            .map(|m| (&m.ns, m.address))
            .chain([(&cluster.router, "10.0.0.1")]);
        for (i, (ns, address)) in hosts.enumerate() {
            let port = format!("p{i}");
            sw.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "ext0",
                "netns",
                ns.name(),
            ])
            .unwrap();
            sw.ip(&["link", "set", &port, "master", "br0", "up"])
                .unwrap();
            ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "ext0"])
                .unwrap();
            ns.ip("link set ext0 up").unwrap();
        }
        cluster
    }

    fn pin_dir(&self, m: &Member) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}-{}", self.tag, m.name))
    }

    fn socket(&self, m: &Member) -> PathBuf {
        self.dir.join(format!("{}.sock", m.name))
    }

    /// Member `m`'s node key file and public key; made in the guard's directory, which is
    /// removed with it, on first use.
    fn key(&self, m: &Member) -> (PathBuf, PublicKey) {
        let path = self.dir.join(format!("{}.key", m.name));
        let key = if path.exists() {
            NodeKey::load(&path)
        } else {
            NodeKey::generate(&path)
        };
        (path, key.unwrap().public())
    }

    /// The config of member `m`: one external NIC, three VIPs, both nodes in ring order.
    fn config(&self, m: &Member) -> String {
        let mut text =
            format!(
            "[node]\nname = \"{}\"\nnat_ports = \"{}\"\npin_dir = \"{}\"\nxdp_mode = \"generic\"\n\
             key = \"{}\"\n\
             [control]\nsocket = \"{}\"\n\
             [[interface]]\nname = \"ext0\"\nrole = \"external\"\n",
            m.name,
            if m.name == "gw1" { "20000-29999" } else { "30000-39999" },
            self.pin_dir(m).display(),
            self.key(m).0.display(),
            self.socket(m).display(),
        );
        for vip in VIPS {
            text += &format!("[[vip]]\naddress = \"{vip}\"\ninterface = \"ext0\"\n");
        }
        text += &format!("[cluster]\nwitness = [\"10.0.0.1\"]\n[cluster.keys]\n1 = \"{KEY}\"\n");
        for n in &self.members {
            text += &format!(
                "[[cluster.node]]\nname = \"{}\"\naddresses = [\"{}\"]\npublic_key = \"{}\"\n",
                n.name,
                n.address,
                self.key(n).1
            );
        }
        text
    }

    fn start(&mut self, i: usize) {
        let m = &self.members[i];
        let path = self.dir.join(format!("{}.toml", m.name));
        std::fs::write(&path, self.config(m)).unwrap();
        // It holds the cluster's keys: the daemon refuses it unless private.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let child = cmd::command_in(m.ns.name(), GATEWAY)
            .args(["daemon", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap();
        let socket = self.socket(m);
        self.members[i].daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "daemon {i} not ready in 20s");
            if let Some(status) = self.members[i].daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon {i} exited early: {status}");
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, i: usize, args: &[&str]) -> Output {
        Command::new(GATEWAY)
            .arg("--socket")
            .arg(self.socket(&self.members[i]))
            .args(args)
            .output()
            .unwrap()
    }

    fn status(&self, i: usize) -> Value {
        let out = self.cli(i, &["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Which member's maps own `vip`, as the data path sees it.
    fn owners(&self, vip: &str) -> Vec<&'static str> {
        (0..self.members.len())
            .filter(|i| {
                self.status(*i)["vips"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["address"] == vip && v["owned"] == true)
            })
            .map(|i| self.members[i].name)
            .collect()
    }

    /// The MACs that answer an ARP request for `vip` from the router namespace.
    fn arp_answers(&self, vip: &str) -> Vec<String> {
        // Its exit status says whether every request was answered in time: not asked here.
        let out = cmd::command_in(self.router.name(), "arping")
            .args(["-c", "3", "-w", "2", "-I", "ext0", vip])
            .output()
            .unwrap();
        let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_lowercase()))
            .collect();
        macs.sort();
        macs.dedup();
        macs
    }

    fn mac(&self, i: usize) -> String {
        self.status(i)["interfaces"][0]["mac"]
            .as_str()
            .unwrap()
            .to_lowercase()
    }
}

/// Polls until `done` holds, or fails with `what` after `within`.
fn wait_for(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} not reached in {within:?}"
        );
        sleep(Duration::from_millis(100));
    }
}

#[test]

fn two_daemons_form_a_ring_own_each_vip_once_and_move_one() {
    let mut c = Cluster::new();
    c.start(0);
    c.start(1);

    wait_for(Duration::from_secs(15), "a ring of both nodes", || {
        (0..2).all(|i| {
            let members = &c.status(i)["cluster"]["members"];
            members.as_array().map_or(0, Vec::len) == 2
        })
    });
    let status = c.status(0);
    let names: Vec<&str> = status["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gw1", "gw2"], "ring order: {status}");
    assert!(status["cluster"]["token"]["seq"].is_u64(), "{status}");

    // Every VIP: exactly one owner in the maps, the one the ring names, and one ARP answer,
    // once the count balance has settled (both tables name the maps' owner).
    let named = |i: usize, vip: &str| {
        c.status(i)["cluster"]["vips"]
            .as_array()
            .and_then(|t| t.iter().find(|e| e["address"] == vip).cloned())
            .map(|e| e["owner"].clone())
    };
    wait_for(
        Duration::from_secs(5),
        "one owner per VIP, named by both",
        || {
            VIPS.iter().all(|v| {
                let owners = c.owners(v);
                owners.len() == 1 && (0..2).all(|i| named(i, v).is_some_and(|o| o == owners[0]))
            })
        },
    );
    let macs = [c.mac(0), c.mac(1)];
    for vip in VIPS {
        let owner = c.owners(vip)[0];
        for i in 0..2 {
            let table = &c.status(i)["cluster"]["vips"];
            let entry = table
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["address"] == vip)
                .unwrap_or_else(|| panic!("{vip} missing from {table}"));
            assert_eq!(entry["owner"], owner, "node {i} agrees on {vip}");
        }
        let i = c.members.iter().position(|m| m.name == owner).unwrap();
        assert_eq!(c.arp_answers(vip), [macs[i].clone()], "ARP for {vip}");
    }

    // Move one VIP to the node that does not own it: success means it has moved.
    let vip = VIPS[0];
    let from = c.owners(vip)[0];
    let to = if from == "gw1" { "gw2" } else { "gw1" };
    let out = c.cli(0, &["vip", "move", vip, to]);
    assert!(
        out.status.success(),
        "vip move: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(2), "the moved VIP in the maps", || {
        c.owners(vip) == [to]
    });
    let i = c.members.iter().position(|m| m.name == to).unwrap();
    assert_eq!(c.arp_answers(vip), [macs[i].clone()], "ARP after the move");

    // Unknown node and alone-only mistakes fail with a reason and exit 1.
    let out = c.cli(1, &["vip", "move", vip, "gw9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gw9"));

    // The human view names both members and the VIP owners.
    let out = c.cli(0, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gw2") && text.contains(vip), "{text}");

    for i in 0..2 {
        assert!(c.cli(i, &["stop"]).status.success());
    }
}
