//! The trivial `xdp_pass` program on the far ends of the gateway's veths: native-mode
//! `XDP_TX`/`XDP_REDIRECT` frames on a veth are dropped unless the peer runs an XDP program.
use crate::netns::Netns;
use anyhow::{anyhow, Context, Result};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use gateway_common::programs::PASS;

/// The loaded program and its attachments; dropping it detaches them.
pub struct PassPrograms {
    _ebpf: Ebpf,
}

impl std::fmt::Debug for PassPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassPrograms")
    }
}

/// Attaches `xdp_pass` in native mode to `interfaces` of `netns`. aya resolves interface names
/// and attaches in the namespace of the calling thread, so this runs on a thread inside `netns`.
pub fn attach(netns: &Netns, interfaces: &[String]) -> Result<PassPrograms> {
    let name = netns.name().to_owned();
    let interfaces = interfaces.to_vec();
    netns.run(move || {
        let mut ebpf =
            Ebpf::load(gateway::datapath::ebpf_object::BYTES).context("load the XDP object")?;
        let program: &mut Xdp = ebpf
            .program_mut(PASS)
            .ok_or_else(|| anyhow!("no program {PASS} in the XDP object"))?
            .try_into()?;
        program.load().context("load xdp_pass")?;
        for interface in &interfaces {
            program
                .attach(interface, XdpMode::Driver)
                .with_context(|| format!("attach xdp_pass to {interface} in {name}"))?;
        }
        Ok(PassPrograms { _ebpf: ebpf })
    })
}
