//! The baseline of the end-to-end benchmark: the gateway host doing what a user would
//! otherwise configure, kernel nftables DNAT of the VIP to the back-ends with conntrack, the
//! VIPs as ordinary local addresses, replies routed back through it (no masquerade).
use crate::netns::Netns;
use crate::topology::{self, BACKEND_HTTP_PORT, EXT_IF, INTERNAL_VIP, INT_IF, VIP};
use anyhow::Result;

/// The nftables table the baseline installs.
const TABLE: &str = "gateway_baseline";

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
        let backends: Vec<String> = (0..topology::BACKENDS.len())
            .map(|i| format!("{i} : {}", topology::backend_addr(i)))
            .collect();
        let rules = format!(
            "table ip {TABLE} {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  \
             ip daddr {VIP} tcp dport {port} dnat to numgen inc mod {} map {{ {} }} : {BACKEND_HTTP_PORT}\n }}\n}}\n",
            backends.len(),
            backends.join(", ")
        );
        let file = std::env::temp_dir().join(format!("{}.nft", gw.name()));
        std::fs::write(&file, rules)?;
        let loaded = gw.exec("nft", &["-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        loaded?;
        gw.sysctl(
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
            &time_wait.to_string(),
        )?;
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
