//! Running every `[[vrrp_instance]]` of a config: what the daemon calls.
//!
//! ```text
//! let cancel = CancellationToken::new();
//! let hook: StateHook = Arc::new(|instance, state| {
//!     /* flip the data plane's active flag; return Some(ack) if another task does it */
//!     None
//! });
//! let instances = vrrp::run_instances(&cfg, Some(hook), &cancel).await?;
//! let mut rx = instances.get("VI_1").unwrap().subscribe();   // watch::Receiver<StateInfo>
//! instances.get("VI_1").unwrap().set_backends_healthy(false); // track_backends
//! ...
//! instances.shutdown().await;  // priority 0 from masters, VIPs removed
//! ```

use tokio_util::sync::CancellationToken;

use crate::config::Config;

use super::shell::{InstanceHandle, SharedIo, ShellError, StateHook, spawn_instance_shared};
use super::spec::{InstanceSpec, SpecError};

/// The running instances of a config.
#[derive(Debug)]
pub struct Instances {
    handles: Vec<InstanceHandle>,
    io: SharedIo,
}

impl Instances {
    /// The receive sockets and script runners the instances share.
    pub fn shared_io(&self) -> &SharedIo {
        &self.io
    }

    /// The instance named `name`.
    pub fn get(&self, name: &str) -> Option<&InstanceHandle> {
        self.handles.iter().find(|h| h.name() == name)
    }

    /// All instances, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &InstanceHandle> {
        self.handles.iter()
    }

    /// Stop every instance cleanly and wait for them; returns the errors of
    /// instances that never started (the last start error) or whose task
    /// ended abnormally.
    pub async fn shutdown(self) -> Vec<ShellError> {
        let mut errors = Vec::new();
        for h in self.handles {
            if let Err(e) = h.stop().await {
                errors.push(e);
            }
        }
        errors
    }
}

/// Start one task per `[[vrrp_instance]]` of `cfg`. Every spec is built
/// first, so a config error starts nothing. `hook` is called on every
/// transition of every instance (see [`StateHook`]). The instances stop
/// when `cancel` is cancelled or [`Instances::shutdown`] is called. An
/// instance that cannot start (missing interface, no address, no raw
/// socket) logs the error, shows [`super::State::Fault`] with
/// [`InstanceHandle::last_error`], and retries with a growing wait
/// ([`super::shell::retry_delay`]); the others are not affected.
pub async fn run_instances(
    cfg: &Config,
    hook: Option<StateHook>,
    cancel: &CancellationToken,
) -> Result<Instances, SpecError> {
    let specs = cfg
        .vrrp_instances
        .iter()
        .map(|i| InstanceSpec::from_config(i, &cfg.vrrp_scripts))
        .collect::<Result<Vec<_>, _>>()?;
    // One receive socket per (interface, family) and one runner per
    // vrrp_script, shared by all the instances.
    let io = SharedIo::default();
    let handles = specs
        .into_iter()
        .map(|s| spawn_instance_shared(s, hook.clone(), cancel, &io))
        .collect();
    Ok(Instances { handles, io })
}
