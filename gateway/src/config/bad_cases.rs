//! Bad configuration files, each one edit of an example file, with the field its error names
//! and what the message says. One table for the config's unit tests and for the test that runs
//! `gateway check` on every case (`gateway/tests/check.rs`, which includes this file), so the
//! two cannot drift apart.

/// The example file an edit starts from.
#[derive(Clone, Copy, Debug)]
pub enum Base {
    /// `examples/gateway.toml`: a node alone.
    Alone,
    /// `examples/cluster.toml`: node gw1 of three.
    Cluster,
}

impl Base {
    /// The example's text.
    pub fn text(self) -> &'static str {
        match self {
            Base::Alone => include_str!("../../examples/gateway.toml"),
            Base::Cluster => include_str!("../../examples/cluster.toml"),
        }
    }
}

/// One bad file: `base` with its first `from` replaced by `to`.
#[derive(Debug)]
pub struct Bad {
    pub base: Base,
    pub from: &'static str,
    pub to: &'static str,
    /// The dotted field the error names.
    pub field: &'static str,
    /// Part of the message ("" when any will do).
    pub says: &'static str,
    /// The error is on the line of the last `at` in the bad file, not on `from`'s (a missing
    /// key is reported at its table, a duplicate at its second entry).
    pub at: Option<&'static str>,
}

impl Bad {
    /// The bad file's text.
    pub fn text(&self) -> String {
        let base = self.base.text();
        assert!(
            base.contains(self.from),
            "the example lacks {:?}",
            self.from
        );
        base.replacen(self.from, self.to, 1)
    }

    /// The 1-based line the error names.
    pub fn line(&self) -> usize {
        let text = self.text();
        let offset = match self.at {
            Some(at) => text.rfind(at).expect("`at` is in the bad file"),
            None => self.base.text().find(self.from).expect("checked in text"),
        };
        text[..offset].matches('\n').count() + 1
    }

    /// Says what the message must hold.
    const fn says(self, says: &'static str) -> Bad {
        Bad { says, ..self }
    }

    /// Names the line of the error.
    const fn at(self, at: &'static str) -> Bad {
        Bad {
            at: Some(at),
            ..self
        }
    }
}

const fn alone(from: &'static str, to: &'static str, field: &'static str) -> Bad {
    Bad {
        base: Base::Alone,
        from,
        to,
        field,
        says: "",
        at: None,
    }
}

const fn cluster(from: &'static str, to: &'static str, field: &'static str) -> Bad {
    Bad {
        base: Base::Cluster,
        ..alone(from, to, field)
    }
}

const KEY1: &str = "1 = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"";
const GW2_KEY: &str = "public_key = \"yvkikpfEHECXVLX6w9Rfwn+TRSuVBUd10ir/ss4hfPI=\"";
const GW3_KEY: &str = "public_key = \"TyPI6EjwBemUdRn74kgpihZEbIgAm/nYnviz7WrRkdk=\"";

/// Every bad case.
pub const BAD: &[Bad] = &[
    // The node, its NICs, VIPs and services.
    alone(
        "nat_ports = \"20000-29999\"",
        "nat_ports = \"30000-2\"",
        "node.nat_ports",
    ),
    alone(
        "interface = \"ext0\"",
        "interface = \"eth9\"",
        "vip[0].interface",
    ),
    alone(
        "vip = \"10.0.0.100\"",
        "vip = \"10.0.0.99\"",
        "service[0].vip",
    ),
    alone(
        "weight = 1",
        "weight = 1000",
        "service[0].backend[0].weight",
    ),
    alone(
        "interval = \"500ms\"",
        "interval = \"5 parsecs\"",
        "service[0].health.interval",
    ),
    alone("udp = \"30s\"", "udp = \"30\"", "timeouts.udp"),
    alone(
        "tcp_time_wait = \"60s\"",
        "tcp_time_wait = \"a minute\"",
        "timeouts.tcp_time_wait",
    ),
    alone("rise = 2", "rise = 0", "service[0].health.rise"),
    alone("name = \"int0\"", "name = \"ext0\"", "interface[1].name"),
    alone(
        "address = \"10.1.0.1\"",
        "address = \"10.0.0.100\"",
        "vip[1].address",
    ),
    alone("port = 8080", "port = 70000", "port"),
    alone("role = \"internal\"", "role = \"sideways\"", "role"),
    alone("garp_count = 3", "garp_cuont = 3", "garp_cuont"),
    alone(
        "[timeouts]",
        "[[service]]\nname = \"web\"\nvip = \"10.0.0.100\"\nport = 81\nprotocol = \"tcp\"\n\n\
         [timeouts]",
        "service[1].name",
    )
    .says("used twice")
    .at("name = \"web\""),
    // Durations: bounded, and never an overflow.
    alone("udp = \"30s\"", "udp = \"0s\"", "timeouts.udp").says("must be at least 1s"),
    alone(
        "tcp_established = \"300s\"",
        "tcp_established = \"500ms\"",
        "timeouts.tcp_established",
    )
    .says("at least 1s"),
    alone(
        "tcp_closing = \"10s\"",
        "tcp_closing = \"307445734561825861m\"",
        "timeouts.tcp_closing",
    )
    .says("too long: at most 10080m"),
    alone(
        "tcp_closing = \"10s\"",
        "tcp_closing = \"99999999999999999999999s\"",
        "timeouts.tcp_closing",
    )
    .says("too long"),
    alone(
        "tcp_time_wait = \"60s\"",
        "tcp_time_wait = \"10081m\"",
        "timeouts.tcp_time_wait",
    )
    .says("too long"),
    alone(
        "timeout = \"300ms\"",
        "timeout = \"0ms\"",
        "service[0].health.timeout",
    )
    .says("at least 1ms"),
    // Addresses a VIP, a backend, a node or a witness cannot be.
    alone(
        "address = \"10.0.0.100\"",
        "address = \"0.0.0.0\"",
        "vip[0].address",
    )
    .says("0.0.0.0"),
    alone(
        "address = \"10.0.0.100\"",
        "address = \"224.0.0.18\"",
        "vip[0].address",
    )
    .says("multicast"),
    alone(
        "address = \"10.0.0.100\"",
        "address = \"255.255.255.255\"",
        "vip[0].address",
    )
    .says("broadcast"),
    alone(
        "address = \"10.0.0.100\"",
        "address = \"127.0.0.1\"",
        "vip[0].address",
    )
    .says("loopback"),
    alone(
        "address = \"10.1.0.11\"",
        "address = \"0.0.0.0\"",
        "service[0].backend[0].address",
    )
    .says("0.0.0.0"),
    // What goes into an HTTP check's request line.
    alone(
        "path = \"/\"",
        "path = \"/\\r\\nHost: evil\"",
        "service[0].health.path",
    )
    .says("control characters"),
    alone("path = \"/\"", "path = \"/a b\"", "service[0].health.path").says("spaces"),
    alone(
        "path = \"/\"",
        "path = \"health\"",
        "service[0].health.path",
    )
    .says("start with /"),
    // The cluster section.
    cluster(KEY1, "1 = \"0001\"", "cluster.keys.1"),
    cluster(
        KEY1,
        "1 = \"zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
        "cluster.keys.1",
    ),
    cluster(
        KEY1,
        "x = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
        "cluster.keys.x",
    ),
    cluster(
        KEY1,
        "1 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
        "cluster.keys.1",
    ),
    cluster("active_key = 1", "active_key = 9", "cluster.active_key"),
    cluster("active_key = 1 ", "", "cluster.active_key")
        .says("several keys")
        .at("[cluster.keys]"),
    cluster("port = 7400", "port = 0", "cluster.port"),
    cluster("lease = \"500ms\"", "lease = \"0ms\"", "cluster.lease"),
    cluster("lease = \"500ms\"", "lease = \"soon\"", "cluster.lease"),
    cluster("lease = \"500ms\"", "lease = \"1ms\"", "cluster.lease").says("between 50ms and 1m"),
    cluster("lease = \"500ms\"", "lease = \"525600m\"", "cluster.lease").says("too long"),
    cluster("lease = \"500ms\"", "lease = \"61s\"", "cluster.lease").says("between 50ms and 1m"),
    cluster(
        "token_loss = \"150ms\"",
        "token_loss = \"150\"",
        "cluster.timers.token_loss",
    ),
    cluster(
        "token_loss = \"150ms\"",
        "token_loss = \"11s\"",
        "cluster.timers.token_loss",
    )
    .says("between 1ms and 10s"),
    cluster(
        "token_hold = \"10ms\"",
        "token_hold = \"2s\"",
        "cluster.timers.token_hold",
    )
    .says("between 1ms and 1s"),
    cluster(
        "resend = \"20ms\"",
        "resend = \"0ms\"",
        "cluster.timers.resend",
    ),
    cluster(
        "resend = \"20ms\"",
        "resend = \"2s\"",
        "cluster.timers.resend",
    )
    .says("between 1ms and 1s"),
    cluster("tries = 4", "tries = 0", "cluster.timers.tries"),
    cluster(
        "witness_misses = 3",
        "witness_misses = 0",
        "cluster.monitor.witness_misses",
    ),
    cluster("name = \"gw3\"", "name = \"gw2\"", "cluster.node[2].name"),
    cluster(
        "addresses = [\"10.0.0.3\", \"10.1.0.3\"]",
        "addresses = [\"10.0.0.3\"]",
        "cluster.node[1].addresses",
    ),
    cluster(
        "addresses = [\"10.0.0.4\", \"10.1.0.4\"]",
        "addresses = [\"10.0.0.4\", \"10.1.0.2\"]",
        "cluster.node[2].addresses[1]",
    ),
    cluster(
        "addresses = [\"10.0.0.4\", \"10.1.0.4\"]",
        "addresses = [\"10.0.0.4\", \"224.0.0.1\"]",
        "cluster.node[2].addresses[1]",
    )
    .says("multicast"),
    cluster(
        "nat_ports = \"40000-49999\"",
        "nat_ports = \"39000-49999\"",
        "cluster.node[2].nat_ports",
    ),
    cluster(
        "nat_ports = \"30000-39999\"",
        "nat_ports = \"3-1\"",
        "cluster.node[1].nat_ports",
    ),
    cluster(
        "nat_ports = \"20000-29999\"             # optional",
        "nat_ports = \"20000-20999\" # optional",
        "cluster.node[0].nat_ports",
    ),
    cluster(
        "preferred = \"gw1\"",
        "preferred = \"gw9\"",
        "vip[0].preferred",
    ),
    cluster("persistence = 1", "persistence = 2", "vip[1].persistence"),
    cluster("persistence = 1", "persistence = 3", "vip[1].persistence"),
    cluster(
        "address = \"10.0.0.101\"",
        "address = \"10.0.0.3\"",
        "vip[1].address",
    )
    .says("primary address of node `gw2`"),
    cluster("witness = [", "witnes = [", "witnes"),
    cluster(
        "witness = [\"10.0.0.1\"]",
        "witness = [\"0.0.0.0\"]",
        "cluster.witness[0]",
    )
    .says("0.0.0.0"),
    cluster(
        GW2_KEY,
        "public_key = \"yvkikpfEHECXVLX6w9Rfwn+TRSuVBUd10ir/ss4hfP=\"",
        "cluster.node[1].public_key",
    ),
    cluster(
        GW2_KEY,
        "public_key = \"AAAA\"",
        "cluster.node[1].public_key",
    ),
    cluster(GW3_KEY, GW2_KEY, "cluster.node[2].public_key").says("same key as node `gw2`"),
    cluster(GW2_KEY, "", "cluster.node[1].public_key")
        .says("gateway key public FILE")
        .at("name = \"gw2\""),
    cluster(
        "config_version = 1 ",
        "config_version = 0 ",
        "cluster.config_version",
    ),
    cluster("key = \"/etc/gateway/node.key\"", "key = \" \"", "node.key"),
    cluster("key = \"/etc/gateway/node.key\"", "", "node.key")
        .says("gateway key generate FILE")
        .at("[node]\n"),
    cluster(
        "name = \"gw1\"\naddresses",
        "name = \"gw0\"\naddresses",
        "cluster.node",
    )
    .says("gw1")
    .at("[cluster]\n"),
];
