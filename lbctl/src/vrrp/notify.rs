//! Notify scripts: a program run on every state change with the instance
//! name and the new state appended as arguments (keepalived's `notify`,
//! without the leading "INSTANCE" argument and without a shell).
//!
//! [`Notifier::notify`] spawns the program and returns at once; a task
//! waits for it (killing it after [`NOTIFY_TIMEOUT`]) and logs and counts
//! failures. The shell is never blocked by a script. A script still running
//! when the runtime shuts down is left to finish (the STOP notification is
//! sent during shutdown).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a notify script may run before it is killed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Counters of notify runs.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Scripts started.
    pub started: AtomicU64,
    /// Scripts that could not be started, exited non-zero, were killed by a
    /// signal or timed out.
    pub failed: AtomicU64,
}

/// Runs one instance's notify program.
#[derive(Debug, Clone)]
pub struct Notifier {
    command: Option<Vec<String>>,
    instance: String,
    stats: Arc<NotifyStats>,
}

impl Notifier {
    /// A notifier for `instance` running `command` (program and leading
    /// arguments; `None` or empty: no notification).
    pub fn new(instance: &str, command: Option<Vec<String>>, stats: Arc<NotifyStats>) -> Self {
        Notifier {
            command: command.filter(|c| !c.is_empty()),
            instance: instance.to_owned(),
            stats,
        }
    }

    /// Start the program with `state` ("MASTER", "BACKUP", "FAULT", "STOP").
    /// Must be called inside a tokio runtime. Never blocks.
    pub fn notify(&self, state: &str) {
        let Some((program, args)) = self.command.as_ref().and_then(|c| c.split_first()) else {
            return;
        };
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let spawned = crate::daemon::systemd::program(program)
            .args(args)
            .arg(&self.instance)
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not killed when the runtime goes away: the STOP notification
            // of a shutdown must outlive the daemon's last moments.
            .kill_on_drop(false)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %self.instance, %program, %error, "cannot start notify script");
                return;
            }
        };
        let stats = Arc::clone(&self.stats);
        let instance = self.instance.clone();
        let program = program.clone();
        let state = state.to_owned();
        tokio::spawn(async move {
            match tokio::time::timeout(NOTIFY_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) if status.success() => {
                    tracing::debug!(%instance, %program, %state, "notify script done");
                }
                Ok(Ok(status)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%instance, %program, %state, %status, "notify script failed");
                }
                Ok(Err(error)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%instance, %program, %state, %error, "notify script wait failed");
                }
                Err(_) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%instance, %program, %state, timeout = ?NOTIFY_TIMEOUT, "notify script timed out, killing it");
                    if let Err(error) = child.kill().await {
                        tracing::debug!(%instance, %program, %error, "notify script already gone");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_name_and_state_and_counts_failures() {
        let dir = std::env::temp_dir().join(format!("lbctl-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let out = dir.join("out");
        let stats = Arc::new(NotifyStats::default());
        // sh is the program here (argument list, no shell parsing by us).
        let n = Notifier::new(
            "VI_1",
            Some(vec![
                "sh".into(),
                "-c".into(),
                format!("echo \"$0 $1\" > {}", out.display()),
            ]),
            Arc::clone(&stats),
        );
        n.notify("MASTER");
        let mut text = String::new();
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            text = std::fs::read_to_string(&out).unwrap_or_default();
            if !text.is_empty() {
                break;
            }
        }
        assert_eq!(text.trim(), "VI_1 MASTER");

        let bad = Notifier::new(
            "VI_1",
            Some(vec!["/nonexistent/lbctl-notify".into()]),
            Arc::clone(&stats),
        );
        bad.notify("BACKUP");
        let failing = Notifier::new("VI_1", Some(vec!["false".into()]), Arc::clone(&stats));
        failing.notify("FAULT");
        for _ in 0..200 {
            if stats.failed.load(Ordering::Relaxed) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.started.load(Ordering::Relaxed), 3);
        assert_eq!(stats.failed.load(Ordering::Relaxed), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
