//! One daemon per state directory: `{state_dir}/lbctl.lock`; and one
//! daemon keeping a pinned XDP data plane per interface name:
//! `/run/lock/lbctl-pins-<iface>.lock` (the pins, on bpffs, are named by the
//! interface, not by the state directory: see [`acquire_pins`]).
//!
//! `lbctl run` takes an exclusive `flock` on the lock file before anything
//! touches the data plane, and holds it for its whole life (the kernel
//! releases it when the process ends, however it ends). A second daemon on
//! the same config fails here, before it could adopt, re-pin or detach the
//! running daemon's data plane. The file holds the holder's pid, for the
//! error message only; it is never removed (removing it would let a third
//! daemon lock a new file while the first still holds the old one).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// File name of the lock inside `state_dir`.
pub const LOCK_NAME: &str = "lbctl.lock";

/// Errors of taking the daemon lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds the lock.
    #[error(
        "another lbctl daemon{} is running with this state_dir: it holds the lock {}; stop it first (nothing was changed)",
        holder.map_or_else(String::new, |p| format!(" (pid {p})")),
        path.display()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Pid written by the holder, when readable.
        holder: Option<u32>,
    },
    /// Another daemon keeps the pinned data plane of this interface (a
    /// config with another `state_dir`, or one run in another network
    /// namespace with an interface of the same name).
    #[error(
        "another lbctl daemon keeps a pinned data plane on interface {iface}: it holds the lock {}; stop it first (nothing was changed)",
        path.display()
    )]
    PinsHeld {
        /// The lock file.
        path: PathBuf,
        /// The interface.
        iface: String,
    },
    /// The state directory or the lock file cannot be created or locked.
    #[error("lock file {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DaemonLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl DaemonLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of `state_dir`.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LOCK_NAME)
}

/// Opens (creates, mode 0600) a lock file without truncating what a holder
/// wrote in it.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Takes the daemon lock of `state_dir` (created with mode 0700 when
/// missing) without waiting.
///
/// # Errors
/// [`LockError::Held`] when another daemon holds it, I/O errors otherwise.
pub fn acquire(state_dir: &Path) -> Result<DaemonLock, LockError> {
    let path = lock_path(state_dir);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    if !state_dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io)?;
    }
    let file = open_lock_file(&path).map_err(io)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(LockError::Held { path, holder });
        }
        Err((_, e)) => return Err(io(e.into())),
    };
    // The pid is for the message of a second daemon only: failing to write
    // it does not matter.
    let _ = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(*file, "{}", std::process::id()));
    Ok(DaemonLock { _file: file, path })
}

/// Where the pins locks live.
pub const PINS_LOCK_DIR: &str = "/run/lock";

/// The pins lock file of `iface` in `dir` (like the state directory's lock,
/// never removed by lbctl; a test or a demo that made up the interface
/// removes it with the rest).
pub fn pins_lock_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("lbctl-pins-{iface}.lock"))
}

/// The held pins lock of an interface; released when dropped.
#[derive(Debug)]
pub struct PinsLock {
    _file: Flock<File>,
}

/// Takes the lock on the pinned data plane of `iface` (the file
/// `lbctl-pins-<iface>.lock` in `dir`, normally [`PINS_LOCK_DIR`]) without
/// waiting. A daemon holds it while it keeps a pinned data plane, and takes
/// it before it removes pins it found, so it never unpins (and so detaches)
/// the program of a daemon that runs.
///
/// # Errors
/// [`LockError::PinsHeld`] when another daemon holds it, I/O errors otherwise.
pub fn acquire_pins(dir: &Path, iface: &str) -> Result<PinsLock, LockError> {
    let path = pins_lock_path(dir, iface);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = open_lock_file(&path).map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => Ok(PinsLock { _file: f }),
        Err((_, Errno::EWOULDBLOCK)) => Err(LockError::PinsHeld {
            path,
            iface: iface.to_owned(),
        }),
        Err((_, e)) => Err(io(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("lbctl-lock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = dir.join("state");
        let first = acquire(&state).unwrap_or_else(|e| panic!("first lock: {e}"));
        assert_eq!(first.path(), state.join(LOCK_NAME));
        match acquire(&state) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    matches!(e, LockError::Held { holder: Some(p), .. } if p == std::process::id()),
                    "{e:?}"
                );
                assert!(
                    msg.contains("another lbctl daemon")
                        && msg.contains(&format!("pid {}", std::process::id()))
                        && msg.contains("lbctl.lock"),
                    "{msg}"
                );
            }
            Ok(l) => panic!("second lock taken: {l:?}"),
        }
        drop(first);
        let again = acquire(&state).unwrap_or_else(|e| panic!("lock after release: {e}"));
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pins_of_an_interface_have_one_keeper() {
        let dir = std::env::temp_dir().join(format!("lbctl-pins-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = acquire_pins(&dir, "lb0").unwrap_or_else(|e| panic!("first lock: {e}"));
        match acquire_pins(&dir, "lb0") {
            Err(e @ LockError::PinsHeld { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("interface lb0") && msg.contains("lbctl-pins-lb0.lock"),
                    "{msg}"
                );
            }
            other => panic!("second pins lock: {other:?}"),
        }
        // Another interface is another lock.
        let other = acquire_pins(&dir, "lb1").unwrap_or_else(|e| panic!("lb1: {e}"));
        drop((first, other));
        let again = acquire_pins(&dir, "lb0").unwrap_or_else(|e| panic!("after release: {e}"));
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
