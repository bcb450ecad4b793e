//! Loads the XDP object, pins its maps and links under `pin_dir` ([`PinDir`]) and attaches it
//! to the cluster NICs; adopts a pinned data path left by `stop --keep-datapath`, so an upgrade
//! drops nothing.
use std::{ffi::CString, path::Path};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use gateway_common::{maps, programs};
use tracing::{info, warn};

use super::pin_dir::{self, PinDir};
use crate::config::{Config, XdpMode as ConfigXdpMode};

const BPF_FS: &str = "/sys/fs/bpf";

/// The loaded data path: the program, its attachments and where they are pinned.
pub struct Datapath {
    ebpf: Ebpf,
    /// Links this daemon created (adopted links are owned by the program instead).
    links: Vec<PinnedLink>,
    pin_dir: PinDir,
    /// Whether a pinned data path was found and taken over.
    pub adopted: bool,
}

/// Mounts bpffs at /sys/fs/bpf unless it is there already, since pins need it.
fn ensure_bpffs() -> Result<()> {
    if pin_dir::on_bpffs(Path::new(BPF_FS)).unwrap_or(false) {
        return Ok(());
    }
    let path = CString::new(BPF_FS)?;
    let fstype = CString::new("bpf")?;
    // SAFETY: all pointers are valid C strings or null data, as mount(2) allows.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("mounting bpffs at /sys/fs/bpf");
    }
    info!("mounted bpffs at {BPF_FS}");
    Ok(())
}

impl Datapath {
    /// Loads the object (reusing pinned maps) and attaches it to `interfaces`, adopting pinned
    /// links where they exist.
    pub fn load(config: &Config) -> Result<Self> {
        ensure_bpffs()?;
        let pin_dir = PinDir::take(&config.pin_dir)?;
        let pins: Vec<_> = maps::ALL.iter().map(|m| pin_dir.map(m)).collect();
        let mut loader = EbpfLoader::new();
        for (name, pin) in maps::ALL.iter().zip(&pins) {
            loader.map_pin_path(name, pin.as_path());
        }
        loader.map_max_entries(maps::CONNS, config.limits.max_connections);
        loader.map_max_entries(maps::REPLIES, config.limits.max_connections);
        let mut ebpf = loader
            .load(crate::datapath::ebpf_object::BYTES)
            .context("loading the XDP object")?;
        let program: &mut Xdp = ebpf
            .program_mut(programs::GATEWAY)
            .with_context(|| {
                format!(
                    "program `{}` missing from the XDP object",
                    programs::GATEWAY
                )
            })?
            .try_into()?;
        program.load().context("verifying the XDP program")?;
        let mode = match config.xdp_mode {
            ConfigXdpMode::Native => XdpMode::Driver,
            ConfigXdpMode::Generic => {
                warn!("xdp_mode = generic: XDP runs in the kernel's slow generic hook");
                XdpMode::Skb
            }
        };
        let mut links = Vec::new();
        let mut adopted = false;
        for iface in &config.interfaces {
            let pin = pin_dir.link(&iface.name);
            if pin.exists() {
                let link = PinnedLink::from_pin(&pin)
                    .with_context(|| format!("opening pinned link {}", pin.display()))?;
                let link = XdpLink::try_from(FdLink::from(link))?;
                program
                    .attach_to_link(link)
                    .with_context(|| format!("replacing the program on {}", iface.name))?;
                info!(interface = %iface.name, "adopted pinned XDP link");
                adopted = true;
            } else {
                let id = program.attach(&iface.name, mode).with_context(|| {
                    format!(
                        "attaching XDP ({}) to {}",
                        config.xdp_mode.name(),
                        iface.name
                    )
                })?;
                let link = FdLink::try_from(program.take_link(id)?)
                    .context("XDP attached without bpf_link (kernel too old?)")?;
                links.push(
                    link.pin(&pin)
                        .with_context(|| format!("pinning link at {}", pin.display()))?,
                );
                info!(interface = %iface.name, mode = config.xdp_mode.name(), "attached XDP");
            }
        }
        Ok(Self {
            ebpf,
            links,
            pin_dir,
            adopted,
        })
    }

    /// The loaded object, so its maps can be taken.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Stops: with `keep`, leaves program, links and maps pinned for the next daemon; without,
    /// removes the gateway's pins so dropping the handles detaches XDP and frees the maps.
    pub fn stop(self, keep: bool) -> Result<()> {
        if keep {
            info!(pin_dir = %self.pin_dir.path().display(), "leaving the data path attached and pinned");
            return Ok(());
        }
        let Self {
            ebpf,
            links,
            pin_dir,
            ..
        } = self;
        for link in links {
            link.unpin().context("unpinning an XDP link")?;
        }
        pin_dir.clean()?;
        drop(ebpf);
        info!("detached XDP and removed the gateway's pins");
        Ok(())
    }
}

/// Fails when XDP cannot work here at all, before anything is changed.
pub fn check_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the daemon must run as root (it loads XDP programs)");
    }
    Ok(())
}
