//! The baseline of the end-to-end benchmark: the gateway host doing what a user would
//! otherwise configure, kernel nftables DNAT of the VIP to the back-ends with conntrack, the
//! VIPs as ordinary local addresses, replies routed back through it (no masquerade).
use crate::netns::Netns;
use crate::topology::{self, BACKEND_HTTP_PORT, EXT_IF, INTERNAL_VIP, INT_IF, VIP};
use anyhow::Result;
use std::net::Ipv4Addr;

/// The nftables table the baseline installs.
const TABLE: &str = "gateway_baseline";

/// One DNAT service of a [`ruleset`]: `proto` port `port` of the VIPs to every back-end's
/// `backend_port`.
#[derive(Clone, Copy, Debug)]
pub struct Dnat {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The service port on the VIPs.
    pub port: u16,
    /// The port on the back-ends.
    pub backend_port: u16,
}

/// The nftables ruleset (table `table`) that DNATs each service of `services` on any of `vips`
/// to the back-ends in turn (new connections round robin; conntrack keeps a connection on its
/// back-end and un-NATs the replies). Shared by the one-node baseline and the keepalived
/// cluster, so both measure the same kernel path.
pub fn ruleset(table: &str, vips: &[Ipv4Addr], services: &[Dnat]) -> String {
    let backends: Vec<String> = (0..topology::BACKENDS.len())
        .map(|i| format!("{i} : {}", topology::backend_addr(i)))
        .collect();
    let vips: Vec<String> = vips.iter().map(Ipv4Addr::to_string).collect();
    let mut rules = format!(
        "table ip {table} {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n"
    );
    for s in services {
        rules += &format!(
            "  ip daddr {{ {} }} {} dport {} dnat to numgen inc mod {} map {{ {} }} : {}\n",
            vips.join(", "),
            s.proto,
            s.port,
            backends.len(),
            backends.join(", "),
            s.backend_port
        );
    }
    rules + " }\n}\n"
}

/// Loads an nftables ruleset into network namespace `netns` (through a file, `nft -f`).
pub fn load(netns: &str, rules: &str) -> Result<()> {
    let file = std::env::temp_dir().join(format!("{netns}.nft"));
    std::fs::write(&file, rules)?;
    let loaded = crate::cmd::run_in(netns, "nft", &["-f", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    loaded.map(drop)
}

/// The installed baseline; dropping it removes the rules and addresses again.
pub struct NftBaseline<'a> {
    gw: &'a Netns,
}

impl<'a> NftBaseline<'a> {
    /// Installs DNAT of VIP:`port`/tcp to every back-end (round robin), and the VIPs as local
    /// addresses so the kernel answers ARP for them. `time_wait` is conntrack's TIME_WAIT
    /// timeout in seconds (set like the gateway's `tcp_closing`, for a fair comparison).
    pub fn install(gw: &'a Netns, port: u16, time_wait: u32) -> Result<Self> {
        let baseline = Self { gw };
        gw.ip(&["addr", "add", &format!("{VIP}/32"), "dev", EXT_IF])?;
        gw.ip(&["addr", "add", &format!("{INTERNAL_VIP}/24"), "dev", INT_IF])?;
        let dnat = Dnat {
            proto: "tcp",
            port,
            backend_port: BACKEND_HTTP_PORT,
        };
        load(gw.name(), &ruleset(TABLE, &[VIP], &[dnat]))?;
        gw.sysctl(&format!(
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait={time_wait}"
        ))?;
        Ok(baseline)
    }
}

impl Drop for NftBaseline<'_> {
    fn drop(&mut self) {
        let steps = [
            self.gw
                .exec("nft", &["delete", "table", "ip", TABLE])
                .map(drop),
            self.gw
                .ip(&["addr", "del", &format!("{VIP}/32"), "dev", EXT_IF])
                .map(drop),
            self.gw
                .ip(&["addr", "del", &format!("{INTERNAL_VIP}/24"), "dev", INT_IF])
                .map(drop),
        ];
        for e in steps.into_iter().filter_map(Result::err) {
            eprintln!("baseline cleanup: {e:#}");
        }
    }
}
