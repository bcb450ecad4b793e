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

/// Loads the object, its maps pinned in (or taken from) `pin_dir`, and verifies the program.
fn load_program(config: &Config, pin_dir: &PinDir) -> Result<Ebpf> {
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
    program(&mut ebpf)?
        .load()
        .context("verifying the XDP program")?;
    Ok(ebpf)
}

/// The gateway's XDP program in the object.
fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(programs::GATEWAY)
        .with_context(|| {
            format!(
                "program `{}` missing from the XDP object",
                programs::GATEWAY
            )
        })?
        .try_into()?)
}

impl Datapath {
    /// Loads the object (reusing pinned maps) and attaches it to `interfaces`, adopting pinned
    /// links where they exist.
    pub fn load(config: &Config) -> Result<Self> {
        ensure_bpffs()?;
        let pin_dir = PinDir::take(&config.pin_dir)?;
        let ebpf = match load_program(config, &pin_dir) {
            Ok(ebpf) => ebpf,
            Err(e) => {
                // The maps it pinned go too, unless a kept data path serves with them.
                let kept = config
                    .interfaces
                    .iter()
                    .any(|i| pin_dir.link(&i.name).exists());
                if !kept {
                    if let Err(undo) = pin_dir.clean() {
                        warn!("removing the maps the failed start pinned: {undo:#}");
                    }
                }
                return Err(e);
            }
        };
        let mut datapath = Self {
            ebpf,
            links: Vec::new(),
            pin_dir,
            adopted: false,
        };
        if let Err(e) = datapath.attach(config) {
            // A later NIC failed: the earlier ones lose what this start gave them.
            if let Err(undo) = datapath.abandon() {
                warn!("removing what the failed start attached: {undo:#}");
            }
            return Err(e);
        }
        Ok(datapath)
    }

    /// Attaches the loaded program to every NIC of `config`, adopting pinned links.
    fn attach(&mut self, config: &Config) -> Result<()> {
        let program = program(&mut self.ebpf)?;
        let mode = match config.xdp_mode {
            ConfigXdpMode::Native => XdpMode::Driver,
            ConfigXdpMode::Generic => {
                warn!("xdp_mode = generic: XDP runs in the kernel's slow generic hook");
                XdpMode::Skb
            }
        };
        for iface in &config.interfaces {
            let pin = self.pin_dir.link(&iface.name);
            if pin.exists() {
                let link = PinnedLink::from_pin(&pin)
                    .with_context(|| format!("opening pinned link {}", pin.display()))?;
                let link = XdpLink::try_from(FdLink::from(link))?;
                program
                    .attach_to_link(link)
                    .with_context(|| format!("replacing the program on {}", iface.name))?;
                info!(interface = %iface.name, "adopted pinned XDP link");
                self.adopted = true;
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
                self.links.push(
                    link.pin(&pin)
                        .with_context(|| format!("pinning link at {}", pin.display()))?,
                );
                info!(interface = %iface.name, mode = config.xdp_mode.name(), "attached XDP");
            }
        }
        Ok(())
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
        self.remove(true)
    }

    /// Undoes a start that failed: detaches the links this start attached, and removes the
    /// maps too unless a previous daemon's data path was adopted, which still serves with them.
    pub fn abandon(self) -> Result<()> {
        let clean = !self.adopted;
        self.remove(clean)
    }

    /// Unpins this daemon's links (dropping them detaches XDP), and with `clean` every pin.
    fn remove(self, clean: bool) -> Result<()> {
        let Self {
            ebpf,
            links,
            pin_dir,
            ..
        } = self;
        for link in links {
            link.unpin().context("unpinning an XDP link")?;
        }
        if clean {
            pin_dir.clean()?;
        }
        drop(ebpf);
        info!(clean, "detached this daemon's XDP links");
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
