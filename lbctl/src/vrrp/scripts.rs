//! `vrrp_script` runners shared by the instances that track them.
//!
//! keepalived runs a `vrrp_script` once per interval however many
//! instances track it, and every tracking instance applies its own weight
//! to the one result. [`ScriptRunners`] does the same: the first instance
//! that tracks a script (by name) starts its runner (a
//! [`health::spawn_check`] task); later ones get a [`ScriptSubscription`]
//! to the same status, published on a watch channel (so a late subscriber
//! starts from the current status, not from "up"). The runner stops when
//! the last subscription is dropped.
//!
//! Rise, fall, interval and timeout are the script's (`[[vrrp_script]]`);
//! the weight is the instance's and is not used here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::health::{self, CheckHandle, CheckKind, CheckSpec, CheckStats, ScriptCheck, Status};

use super::spec::ScriptSpec;

/// The status of a script as its runner last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatus {
    /// Up (keepalived assumes up until the script fails `fall` times).
    pub up: bool,
    /// Why, for logs (the last error when down).
    pub reason: String,
}

#[derive(Debug)]
struct Runner {
    status: watch::Receiver<ScriptStatus>,
    check: CheckHandle,
    cancel: CancellationToken,
    subscribers: usize,
}

/// Registry of script runners. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct ScriptRunners {
    inner: Arc<Mutex<HashMap<String, Runner>>>,
}

/// One instance's view of a shared script runner. Dropping it stops the
/// runner when it was the last one.
#[derive(Debug)]
pub struct ScriptSubscription {
    name: String,
    status: watch::Receiver<ScriptStatus>,
    registry: ScriptRunners,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single inserts/removes and counter updates: consistent across a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ScriptSubscription {
    /// Script name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A receiver of the script's status (current value: the present one).
    pub fn watch(&self) -> watch::Receiver<ScriptStatus> {
        self.status.clone()
    }
}

impl Drop for ScriptSubscription {
    fn drop(&mut self) {
        let mut reg = lock(&self.registry.inner);
        let last = match reg.get_mut(&self.name) {
            Some(r) => {
                r.subscribers = r.subscribers.saturating_sub(1);
                r.subscribers == 0
            }
            None => false,
        };
        if last && let Some(r) = reg.remove(&self.name) {
            r.cancel.cancel();
            // Dropping the CheckHandle cancels the check task too.
            drop(r.check);
        }
    }
}

impl ScriptRunners {
    /// A new, empty registry.
    pub fn new() -> ScriptRunners {
        ScriptRunners::default()
    }

    /// Number of running scripts.
    pub fn running(&self) -> usize {
        lock(&self.inner).len()
    }

    /// Counters of the runner of script `name`, if running.
    pub fn stats(&self, name: &str) -> Option<CheckStats> {
        lock(&self.inner).get(name).map(|r| r.check.stats())
    }

    /// Subscribe to script `spec.name`, starting its runner if no instance
    /// runs it yet. `None` when the command is empty (nothing to run).
    /// Must be called inside a tokio runtime.
    pub fn subscribe(&self, spec: &ScriptSpec) -> Option<ScriptSubscription> {
        let mut reg = lock(&self.inner);
        if let Some(r) = reg.get_mut(&spec.name) {
            r.subscribers += 1;
            return Some(ScriptSubscription {
                name: spec.name.clone(),
                status: r.status.clone(),
                registry: self.clone(),
            });
        }
        let (program, args) = spec.command.split_first()?;
        let check = CheckSpec {
            kind: CheckKind::Script(ScriptCheck {
                program: program.into(),
                args: args.to_vec(),
            }),
            interval: spec.interval,
            timeout: spec.timeout,
            rise: spec.rise,
            fall: spec.fall,
            initial: Status::Up,
        };
        let cancel = CancellationToken::new();
        let (events_tx, mut events_rx) = mpsc::channel(16);
        let handle = health::spawn_check(spec.name.clone(), check, events_tx, &cancel);
        let (status_tx, status_rx) = watch::channel(ScriptStatus {
            up: true,
            reason: "not run yet".to_owned(),
        });
        let fan_cancel = cancel.clone();
        let name = spec.name.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = fan_cancel.cancelled() => break,
                    ev = events_rx.recv() => match ev {
                        Some(ev) => {
                            tracing::debug!(script = %name, up = ev.up, reason = %ev.reason, "vrrp_script status");
                            status_tx.send_replace(ScriptStatus { up: ev.up, reason: ev.reason });
                        }
                        None => break,
                    },
                }
            }
        });
        reg.insert(
            spec.name.clone(),
            Runner {
                status: status_rx.clone(),
                check: handle,
                cancel,
                subscribers: 1,
            },
        );
        Some(ScriptSubscription {
            name: spec.name.clone(),
            status: status_rx,
            registry: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(name: &str, command: &[&str]) -> ScriptSpec {
        ScriptSpec {
            name: name.into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            weight: -10,
        }
    }

    #[tokio::test]
    async fn one_runner_per_script_fanned_out() {
        let reg = ScriptRunners::new();
        let a = reg.subscribe(&spec("chk", &["false"])).expect("a");
        let b = reg
            .subscribe(&ScriptSpec {
                weight: 20,
                ..spec("chk", &["false"])
            })
            .expect("b");
        let other = reg.subscribe(&spec("other", &["true"])).expect("other");
        assert_eq!(reg.running(), 2, "chk runs once for both instances");
        let (mut wa, mut wb) = (a.watch(), b.watch());
        for w in [&mut wa, &mut wb] {
            tokio::time::timeout(Duration::from_secs(5), w.wait_for(|s| !s.up))
                .await
                .expect("both see the failure in time")
                .expect("runner alive");
        }
        drop(a);
        assert_eq!(reg.running(), 2, "b still tracks chk");
        assert!(reg.stats("chk").is_some());
        drop(b);
        assert_eq!(reg.running(), 1, "chk stopped with its last subscriber");
        assert!(reg.stats("chk").is_none());
        drop(other);
        assert_eq!(reg.running(), 0);
        assert!(reg.subscribe(&spec("empty", &[])).is_none());
    }
}
