//! The daemon's own directory on bpffs (`[node] pin_dir`), where its maps and XDP links stay
//! pinned between two daemons. It must be the daemon's alone: stopping removes what is pinned
//! there, and two daemons pinning into one directory would adopt each other's links. So it is
//! taken only when it is on bpffs but not a mount's root (`/sys/fs/bpf` itself is every
//! application's), holds nothing but the gateway's own pins, and no other running daemon holds
//! it (an exclusive `flock` on the directory, kept for the daemon's life: bpffs holds no
//! regular files to lock). Stopping removes the gateway's pins by name and then the directories
//! if they are empty, never anything else.
use std::{
    ffi::CString,
    fs::{self, File},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use gateway_common::maps;
use tracing::warn;

/// `statfs` type of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The folders the gateway pins into: its maps by name, its XDP links by interface.
const MAPS: &str = "maps";
const LINKS: &str = "links";

/// The pin directory, taken: held locked until dropped.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    _lock: File,
}

impl PinDir {
    /// Takes `path` as this daemon's pin directory, creating it if missing; fails, touching
    /// nothing, when it may not be the daemon's own.
    pub fn take(path: &Path) -> Result<Self> {
        let shown = path.display();
        let existing = path
            .ancestors()
            .find(|a| a.exists())
            .context("no existing ancestor")?;
        if !on_bpffs(existing)? {
            bail!("pin_dir {shown} is not on bpffs (mounted at /sys/fs/bpf)");
        }
        if existing == path && is_mount_root(path)? {
            bail!(
                "pin_dir {shown} is the root of a bpffs mount, which other applications \
                 share: give the gateway a directory of its own, such as {shown}/gateway/NODE"
            );
        }
        let foreign = foreign_entries(path)?;
        if !foreign.is_empty() {
            bail!(
                "pin_dir {shown} holds {}, which the gateway did not pin: give the gateway a \
                 directory of its own",
                foreign.join(", ")
            );
        }
        for sub in [MAPS, LINKS] {
            fs::create_dir_all(path.join(sub))
                .with_context(|| format!("creating pin directory {shown}"))?;
        }
        let lock = File::open(path).with_context(|| format!("opening {shown}"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("pin_dir {shown} is in use by another running gateway daemon");
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.path.join(MAPS).join(name)
    }

    /// Where the XDP link of interface `iface` is pinned.
    pub fn link(&self, iface: &str) -> PathBuf {
        self.path.join(LINKS).join(iface)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the gateway's pins (its maps by name, and the link pins under `links/`, which
    /// are the gateway's by the rule [`PinDir::take`] applies), then its folders and the
    /// directory where they are empty; whatever else is there stays, with a warning.
    pub fn clean(self) -> Result<()> {
        let links = fs::read_dir(self.path.join(LINKS))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().filter(|e| e.file_type().is_ok_and(|t| !t.is_dir())))
            .map(|e| e.path());
        let pins: Vec<PathBuf> = maps::ALL.iter().map(|m| self.map(m)).chain(links).collect();
        for pin in pins {
            match fs::remove_file(&pin) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", pin.display()));
                }
                _ => {}
            }
        }
        for dir in [
            self.path.join(MAPS),
            self.path.join(LINKS),
            self.path.clone(),
        ] {
            if let Err(e) = fs::remove_dir(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(dir = %dir.display(), "left in place, it holds what the gateway did not pin: {e}");
                }
            }
        }
        if let Some(parent) = self.path.parent().filter(|p| p.ends_with("gateway")) {
            // The shared default parent /sys/fs/bpf/gateway goes too once it is empty.
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }
}

/// Whether `path` is on bpffs.
pub fn on_bpffs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("statfs {}", path.display()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Whether `path` is where a file system is mounted: its device differs from its parent's.
fn is_mount_root(path: &Path) -> Result<bool> {
    let path = fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    let dev = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("reading {}", p.display()))
    };
    Ok(dev(&path)? != dev(parent)?)
}

/// What `path` holds that is not the gateway's: anything but `maps/` with the gateway's map
/// names and `links/` with link pins (of this or an earlier list of interfaces).
fn foreign_entries(path: &Path) -> Result<Vec<String>> {
    let mut foreign = Vec::new();
    let Ok(entries) = fs::read_dir(path) else {
        return Ok(foreign);
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type()?.is_dir();
        match name.as_str() {
            MAPS if is_dir => {
                for map in fs::read_dir(entry.path())? {
                    let map = map?.file_name().to_string_lossy().into_owned();
                    if !maps::ALL.contains(&map.as_str()) {
                        foreign.push(format!("{MAPS}/{map}"));
                    }
                }
            }
            LINKS if is_dir => {
                for link in fs::read_dir(entry.path())? {
                    let link = link?;
                    if link.file_type()?.is_dir() {
                        foreign.push(format!("{LINKS}/{}", link.file_name().to_string_lossy()));
                    }
                }
            }
            _ => foreign.push(name),
        }
    }
    foreign.sort();
    Ok(foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory on bpffs for one test, removed with whatever is left in it.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path = PathBuf::from(format!("/sys/fs/bpf/gwunit-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn refusal(path: &Path) -> String {
        format!("{:#}", PinDir::take(path).unwrap_err())
    }

    #[test]
    fn only_a_directory_of_the_gateways_own_on_bpffs_is_taken() {
        assert!(refusal(Path::new("/sys/fs/bpf")).contains("root of a bpffs mount"));
        assert!(refusal(Path::new("/sys/fs/bpf/")).contains("root of a bpffs mount"));
        assert!(refusal(&std::env::temp_dir().join("gwunit-pins")).contains("not on bpffs"));
        let shared = Scratch::new("shared");
        fs::create_dir_all(shared.0.join("other-app")).unwrap();
        fs::create_dir_all(shared.0.join("maps/GW_UNKNOWN")).unwrap();
        let refused = refusal(&shared.0);
        assert!(
            refused.contains("holds maps/GW_UNKNOWN, other-app, which the gateway did not pin"),
            "{refused}"
        );
        assert!(shared.0.join("other-app").exists(), "nothing touched");
        assert!(!shared.0.join("links").exists(), "nothing created");
    }

    #[test]
    fn one_daemon_holds_it_and_cleaning_leaves_what_is_not_the_gateways() {
        let scratch = Scratch::new("own");
        let pins = PinDir::take(&scratch.0.join("gw1")).unwrap();
        assert!(refusal(&scratch.0.join("gw1")).contains("in use by another running gateway"));
        // Something else appears while the daemon runs: cleaning leaves it, and the directory.
        fs::create_dir(pins.path().join("other-app")).unwrap();
        pins.clean().unwrap();
        let left: Vec<_> = fs::read_dir(scratch.0.join("gw1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["other-app"]);
        // Once cleaned and released, the next daemon takes an empty one.
        fs::remove_dir(scratch.0.join("gw1/other-app")).unwrap();
        let again = PinDir::take(&scratch.0.join("gw1")).unwrap();
        again.clean().unwrap();
        assert!(!scratch.0.join("gw1").exists());
    }
}
