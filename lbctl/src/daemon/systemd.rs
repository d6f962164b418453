//! systemd's service protocol (`sd_notify`, via the `sd-notify` crate), so
//! that `lbctl run` works as a `Type=notify` unit (and, from systemd 253, a
//! `Type=notify-reload` one):
//! `READY=1` once the daemon serves (data plane attached, control socket
//! and metrics listening, first apply done), `RELOADING=1` and `READY=1`
//! around a reload, `STOPPING=1` at shutdown, `STATUS=` lines on the way,
//! and `WATCHDOG=1` from the owner's event loop every half `WatchdogSec`, so
//! that a daemon whose loop hangs is restarted. Outside systemd (no
//! `NOTIFY_SOCKET`), and for a daemon run in-process as a library (the
//! [`Default`], disabled), every call does nothing.
//!
//! The environment is left as it is (changing it with threads running is
//! unsound); the programs lbctl runs get it without these variables (see
//! [`program`]).

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Variables of systemd's protocol, kept from the programs lbctl runs
/// (checks, notify scripts): they would otherwise talk to systemd as if
/// they were the daemon.
pub const SYSTEMD_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// A command for a program lbctl runs (a check, a notify script), with the
/// daemon's environment less [`SYSTEMD_ENV`].
pub fn program(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for var in SYSTEMD_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// This daemon's link to its service manager.
#[derive(Debug, Default)]
pub struct Systemd {
    /// Whether to talk to systemd at all (`lbctl run`, not a library user).
    enabled: bool,
    /// How often to ping the watchdog: half of `WATCHDOG_USEC` (systemd's
    /// advice), `None` when the unit has no watchdog for this process.
    watchdog: Option<Duration>,
}

impl Systemd {
    /// `lbctl run`'s link: the notify socket and watchdog settings the
    /// environment names (none: disabled).
    pub fn from_env() -> Self {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Self::default();
        }
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2))
            .filter(|d| !d.is_zero());
        if let Some(every) = watchdog {
            debug!(?every, "systemd watchdog enabled");
        }
        Self {
            enabled: true,
            watchdog,
        }
    }

    /// How often [`Systemd::watchdog`] must be called, if at all.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Start-up (or a reload) is done; `status` says what runs.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins (with the time, as `Type=notify-reload` requires).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Shutdown begins.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// The event loop is alive.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    fn send(&self, state: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        // A send error (the manager gone) must not stop the daemon:
        // forwarding goes on without systemd's bookkeeping.
        if let Err(e) = sd_notify::notify(false, state) {
            warn!(error = %e, "notifying systemd failed");
        }
    }
}
