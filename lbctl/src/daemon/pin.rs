//! Restart without loss (`node.keep_dataplane_on_exit = true`).
//!
//! While running, every map of the data plane and the XDP link itself are
//! pinned under `/sys/fs/bpf/lbctl/<iface>/` (bpffs is mounted when it is
//! not), and the user-space bookkeeping (which backend id belongs to which
//! VIP) is saved to `{state_dir}/dataplane-<iface>.json` after every change.
//! So the data plane outlives the daemon however it ends: a clean exit for an
//! upgrade, or a crash or SIGKILL. A dead daemon's node then keeps forwarding
//! with its last tables and connection table, as LVS's kernel table outlives
//! keepalived: established connections are not reset while VRRP moves the
//! VIP to another node.
//!
//! The next `lbctl run` loads the object reusing the pinned maps, restores
//! the bookkeeping (checked against the maps), and replaces the program in
//! the pinned link with its own in one `BPF_LINK_UPDATE`: there is no moment
//! without a program, and the connection table, counters and tables stay.
//! If anything does not match, the pins are removed and the data plane
//! starts fresh (a short gap, logged).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::dataplane::VipSpec;
use crate::dataplane::xdp::{
    AdoptedBackend, AttachMode, LoadOptions, MAP_LAYOUT, Snapshot, XdpDataplane, XdpError, programs,
};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Root of lbctl's pins on bpffs.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/lbctl";

/// Errors of pinning and adoption.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The data plane.
    #[error("{0}")]
    Xdp(#[from] XdpError),
    /// bpffs is not mounted and mounting it failed.
    #[error("mounting bpffs at {BPFFS}: {0}")]
    Mount(nix::Error),
    /// Saving or reading the bookkeeping file.
    #[error("{path}: {reason}")]
    State {
        /// File.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The pins of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    dir: PathBuf,
    iface: String,
}

impl PinDir {
    /// `/sys/fs/bpf/lbctl/<iface>/`.
    pub fn for_interface(iface: &str) -> Self {
        Self {
            dir: Path::new(BPFFS_ROOT).join(iface),
            iface: iface.to_owned(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pinned XDP link.
    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }

    /// The bookkeeping file under `state_dir`.
    pub fn snapshot_file(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(format!("dataplane-{}.json", self.iface))
    }
}

/// A started data plane.
pub struct Started {
    /// The data plane, attached.
    pub dp: XdpDataplane,
    /// "driver", "skb" or "adopted".
    pub mode: String,
    /// Backends found in adopted maps (empty when started fresh).
    pub adopted: BTreeMap<(VipSpec, IpAddr), AdoptedBackend>,
}

/// Mounts bpffs at [`BPFFS`] unless it is mounted.
///
/// # Errors
/// [`PinError::Mount`].
pub fn ensure_bpffs() -> Result<(), PinError> {
    let mounted = nix::sys::statfs::statfs(BPFFS)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).map_err(|e| {
        PinError::Mount(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    })?;
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(PinError::Mount)?;
    info!(path = BPFFS, "mounted bpffs");
    Ok(())
}

/// Starts the data plane with pinned maps, adopting a kept one when there is
/// one (see the module docs).
///
/// # Errors
/// bpffs, load or attach errors of the fresh start.
pub fn start_pinned(
    pins: &PinDir,
    opts: LoadOptions,
    mode: AttachMode,
    state_dir: &Path,
) -> Result<Started, PinError> {
    ensure_bpffs()?;
    let snap_file = pins.snapshot_file(state_dir);
    if pins.link().exists() {
        match adopt(pins, opts, &snap_file) {
            Ok(s) => return Ok(s),
            Err(e) => {
                warn!(error = %e, dir = %pins.dir().display(), "cannot adopt the kept data plane; starting fresh (forwarding pauses briefly)");
            }
        }
    }
    let _ = std::fs::remove_file(&snap_file);
    remove_pins(pins);
    let mut dp = XdpDataplane::load_pinned(opts, pins.dir())?;
    let m = dp.attach(programs::LB, &pins.iface, mode)?;
    save_record(&snap_file, &dp)?;
    dp.pin_link(programs::LB, &pins.iface, &pins.link())?;
    Ok(Started {
        dp,
        mode: format!("{m:?}").to_lowercase(),
        adopted: BTreeMap::new(),
    })
}

/// Saves the bookkeeping the next run adopts (written to a temporary file
/// and renamed, so a crash never leaves half a record).
///
/// # Errors
/// Serialisation or file errors.
pub fn save_record(snap_file: &Path, dp: &XdpDataplane) -> Result<(), PinError> {
    let err = |reason: String| PinError::State {
        path: snap_file.to_owned(),
        reason,
    };
    let text = serde_json::to_string(&dp.snapshot()).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = snap_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = snap_file.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, snap_file).map_err(|e| err(e.to_string()))
}

fn adopt(pins: &PinDir, opts: LoadOptions, snap_file: &Path) -> Result<Started, PinError> {
    let state_err = |reason: String| PinError::State {
        path: snap_file.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(snap_file).map_err(|e| state_err(e.to_string()))?;
    let snap: Snapshot = serde_json::from_str(&text).map_err(|e| state_err(e.to_string()))?;
    check_layout(&snap).map_err(state_err)?;
    let mut dp = XdpDataplane::load_pinned(opts, pins.dir())?;
    let adopted = dp.restore(&snap)?;
    dp.adopt_link(programs::LB, &pins.iface, &pins.link())?;
    // Pinned again at once: the data plane must outlive this run too.
    dp.pin_link(programs::LB, &pins.iface, &pins.link())?;
    info!(
        vips = snap.vips.len(),
        "adopted the data plane left by the previous lbctl run"
    );
    Ok(Started {
        dp,
        mode: "adopted".into(),
        adopted,
    })
}

/// Refuses a record of maps laid out for another lbctl version (checked
/// before the pinned maps are opened: they would not fit this program).
fn check_layout(snap: &Snapshot) -> Result<(), String> {
    if snap.layout == MAP_LAYOUT {
        return Ok(());
    }
    Err(format!(
        "the kept data plane has map layout {} and this lbctl needs {MAP_LAYOUT} (left by another lbctl version)",
        snap.layout
    ))
}

/// Leaves the data plane attached: saves the bookkeeping, and pins the link
/// unless it already is (it is pinned from the start).
///
/// # Errors
/// Pinning or file errors (the caller then detaches).
pub fn keep(pins: &PinDir, dp: &mut XdpDataplane, state_dir: &Path) -> Result<(), PinError> {
    save_record(&pins.snapshot_file(state_dir), dp)?;
    if !pins.link().exists() {
        dp.pin_link(programs::LB, &pins.iface, &pins.link())?;
    }
    Ok(())
}

/// Removes every pin of `pins` (the link first: that detaches a kept program).
pub fn remove_pins(pins: &PinDir) {
    let _ = std::fs::remove_file(pins.link());
    if let Ok(entries) = std::fs::read_dir(pins.dir()) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(pins.dir());
    // The shared root goes too once no interface uses it (fails while one does).
    let _ = std::fs::remove_dir(BPFFS_ROOT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_other_map_layouts_are_not_adopted() {
        // A record written before the layout field existed.
        let old: Snapshot =
            serde_json::from_str(r#"{"ring_stride":65537,"vips":[]}"#).expect("old record parses");
        assert_eq!(old.layout, 0);
        let e = check_layout(&old).expect_err("old layout refused");
        assert!(e.contains("map layout 0"), "{e}");
        let current = Snapshot {
            layout: MAP_LAYOUT,
            ..old
        };
        assert!(check_layout(&current).is_ok());
    }
}
