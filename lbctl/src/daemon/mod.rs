//! `lbctl run`: the daemon.
//!
//! One owner task holds the config, the inputs of the reconciler (health,
//! VRRP roles, neighbour MACs) and the data plane. Health checks, the
//! neighbour resolver, the control socket, signals and the VRRP shell send it
//! events; after each it recomputes the [`DesiredState`]
//! ([`reconcile::desired_state`], pure) and hands it to the data plane, which
//! writes only what changed. Nothing else writes maps. The data plane is XDP
//! or kernel IPVS (`node.dataplane`, see [`plane`]).
//!
//! VRRP: by default ([`run`] with `vrrp: None`) the daemon runs the
//! config's `[[vrrp_instance]]`s itself ([`crate::vrrp::run_instances`]),
//! wired through the same hook an external driver would use:
//! [`vrrp_channel`] gives a [`VrrpPort`] for the VRRP I/O shell (report role
//! changes per instance with [`VrrpPort::state_changed`] or, to learn when
//! the data plane follows, [`VrrpPort::state_changed_acked`]; read
//! per-instance backend health for `track_backends` from
//! [`VrrpPort::backends_healthy`]) and a [`VrrpHook`] for the owner task.
//! [`state_hook`] turns a port into the shell's [`StateHook`]: on a
//! transition to MASTER the shell waits until the owner has made the
//! instance's VIPs active before it adds the addresses and sends gratuitous
//! ARP; leaving MASTER it removes the addresses first. On exit the
//! instances stop cleanly (priority 0, addresses removed) before the data
//! plane is detached or kept.

pub mod lock;
pub mod neigh;
pub mod offload;
pub mod pin;
pub mod plane;
pub mod reconcile;
pub mod systemd;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, ApiCall, Request, Response};
use crate::config::{self, Config, DataplaneKind, OnNoBackend, XdpMode};
use crate::dataplane::xdp::{AttachMode, LoadOptions, XdpDataplane, XdpError, programs};
use crate::dataplane::{DesiredState, L2NextHop};
use crate::health::{CheckHandle, CheckSpec, HealthEvent, spawn_check};
use crate::vrrp::{self, StateHook};
use lb_common::VLAN_UNTAGGED;
use neigh::{Resolution, Resolver};
use reconcile::{BackendKey, Inputs, NeighTarget, VrrpRole};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file is invalid (nothing was applied).
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The config asks for something this daemon does not do.
    #[error("{0}")]
    Unsupported(String),
    /// Netlink / interface lookup.
    #[error("{0}")]
    Neigh(#[from] neigh::NeighError),
    /// The XDP data plane.
    #[error("{0}")]
    Xdp(#[from] XdpError),
    /// Pinning / adoption.
    #[error("{0}")]
    Pin(#[from] pin::PinError),
    /// The IPVS data plane.
    #[error("{0}")]
    Ipvs(#[from] crate::dataplane::ipvs::IpvsError),
    /// Another daemon runs with this state directory (or its lock cannot
    /// be taken).
    #[error("{0}")]
    Lock(#[from] lock::LockError),
    /// The control socket.
    #[error("control socket: {0}")]
    Api(#[from] api::ApiError),
    /// Installing signal handlers.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    /// The metrics listener (`node.metrics_listen`) cannot be bound.
    #[error("metrics_listen {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A `[[vrrp_instance]]` cannot be started.
    #[error("VRRP: {0}")]
    Vrrp(#[from] vrrp::SpecError),
}

/// A VRRP role change reported by the VRRP shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpUpdate {
    /// Instance name.
    pub instance: String,
    /// New role.
    pub role: VrrpRole,
}

/// A role change on its way to the owner task, with whom to tell once the
/// data plane follows.
#[derive(Debug)]
struct VrrpMsg {
    update: VrrpUpdate,
    applied: Option<oneshot::Sender<Result<(), String>>>,
}

/// The VRRP shell's side of the hook.
#[derive(Clone, Debug)]
pub struct VrrpPort {
    updates: mpsc::UnboundedSender<VrrpMsg>,
    backends: watch::Receiver<BTreeMap<String, bool>>,
}

impl VrrpPort {
    /// Reports a role change of `instance`. Never blocks (usable from a
    /// synchronous state hook); ignored once the daemon is gone.
    pub fn state_changed(&self, instance: &str, role: VrrpRole) {
        let _ = self.updates.send(VrrpMsg {
            update: VrrpUpdate {
                instance: instance.to_owned(),
                role,
            },
            applied: None,
        });
    }

    /// [`VrrpPort::state_changed`], and a receiver that resolves once the
    /// owner has applied the new desired state to the data plane (`Ok`), or
    /// has tried to (`Err` with the error; the owner logs it, shows it in
    /// `lbctl status` and retries on a timer and on every event; the VRRP
    /// shell goes to FAULT when that was its activation). It resolves with
    /// a receive error at once when the daemon is gone.
    pub fn state_changed_acked(
        &self,
        instance: &str,
        role: VrrpRole,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        // On a send error the message, and with it the sender, is dropped:
        // the receiver resolves at once.
        let _ = self.updates.send(VrrpMsg {
            update: VrrpUpdate {
                instance: instance.to_owned(),
                role,
            },
            applied: Some(tx),
        });
        rx
    }

    /// Per instance: `false` while a VIP gated by it has no backend that
    /// takes new flows (feed to the instance's `track_backends`).
    pub fn backends_healthy(&self) -> watch::Receiver<BTreeMap<String, bool>> {
        self.backends.clone()
    }
}

/// The daemon's side of the hook (pass to [`run`]).
#[derive(Debug)]
pub struct VrrpHook {
    updates: mpsc::UnboundedReceiver<VrrpMsg>,
    backends: watch::Sender<BTreeMap<String, bool>>,
}

/// The data plane's view of a VRRP protocol state: only MASTER forwards;
/// Initialize counts as Backup.
pub fn role_of(state: vrrp::State) -> VrrpRole {
    match state {
        vrrp::State::Master => VrrpRole::Master,
        vrrp::State::Fault => VrrpRole::Fault,
        vrrp::State::Backup | vrrp::State::Initialize => VrrpRole::Backup,
    }
}

/// The VRRP shell's [`StateHook`] for `port`: every transition is reported
/// with an acknowledgement, so the shell adds a VIP only once the data plane
/// forwards it (see the module docs).
pub fn state_hook(port: VrrpPort) -> StateHook {
    Arc::new(move |instance: &str, state: vrrp::State| {
        Some(port.state_changed_acked(instance, role_of(state)))
    })
}

/// Why a new config's VRRP part cannot be applied by a reload, `None` when it
/// can. Virtual routers are not restarted by a reload: stopping one hands
/// its addresses to the peer (a failover) and a changed VRID, interface or
/// address list could leave two masters, so any change to
/// `[[vrrp_instance]]` or `[[vrrp_script]]` needs a restart. Which VIPs an
/// instance gates (`vip.vrrp_instance`) is not VRRP config: it reloads.
pub fn vrrp_reload_blocker(running: &Config, new: &Config) -> Option<String> {
    if new.vrrp_instances == running.vrrp_instances && new.vrrp_scripts == running.vrrp_scripts {
        return None;
    }
    let names = |c: &Config| -> BTreeSet<String> {
        c.vrrp_instances.iter().map(|i| i.name.clone()).collect()
    };
    let (old_names, new_names) = (names(running), names(new));
    let mut what: Vec<String> = Vec::new();
    for n in new_names.difference(&old_names) {
        what.push(format!("added {n}"));
    }
    for n in old_names.difference(&new_names) {
        what.push(format!("removed {n}"));
    }
    for i in &new.vrrp_instances {
        if running
            .vrrp_instances
            .iter()
            .any(|o| o.name == i.name && o != i)
        {
            what.push(format!("changed {}", i.name));
        }
    }
    if new.vrrp_scripts != running.vrrp_scripts {
        what.push("[[vrrp_script]] changed".into());
    }
    Some(format!(
        "VRRP configuration changed ({}); a reload does not restart virtual routers: restart lbctl to apply it",
        what.join(", ")
    ))
}

/// A connected pair of VRRP hook ends.
pub fn vrrp_channel() -> (VrrpPort, VrrpHook) {
    let (utx, urx) = mpsc::unbounded_channel();
    let (btx, brx) = watch::channel(BTreeMap::new());
    (
        VrrpPort {
            updates: utx,
            backends: brx,
        },
        VrrpHook {
            updates: urx,
            backends: btx,
        },
    )
}

/// The attach mode for a config's `xdp_mode`.
pub fn attach_mode(m: XdpMode) -> AttachMode {
    match m {
        XdpMode::Driver => AttachMode::Driver,
        XdpMode::Skb => AttachMode::Skb,
        XdpMode::Auto => AttachMode::Auto,
    }
}

/// Load-time map sizes for a config.
pub fn load_options(cfg: &Config) -> LoadOptions {
    LoadOptions {
        ring_stride: cfg.vips.iter().map(|v| v.table_size).max().unwrap_or(13),
        max_vips: cfg.node.max_vips,
        conn_table_size: cfg.node.conn_table_size,
    }
}

/// Why a new config cannot be applied to a running data plane (sizes fixed
/// at load time, or the interface), `None` when it can.
pub fn reload_blocker(running: &Config, opts: LoadOptions, new: &Config) -> Option<String> {
    if new.node.interface != running.node.interface {
        return Some(format!(
            "node.interface changed ({} -> {}); restart lbctl to move the data plane",
            running.node.interface, new.node.interface
        ));
    }
    if let Some(v) = new.vips.iter().find(|v| v.table_size > opts.ring_stride) {
        return Some(format!(
            "VIP {}: table_size {} exceeds the loaded maximum {}; restart lbctl",
            v.name, v.table_size, opts.ring_stride
        ));
    }
    if new.node.max_vips != opts.max_vips || new.node.conn_table_size != opts.conn_table_size {
        return Some("node.max_vips / node.conn_table_size changed; restart lbctl".into());
    }
    if new.node.xdp_mode != running.node.xdp_mode {
        return Some(format!(
            "node.xdp_mode changed ({:?} -> {:?}); the program stays attached as it is: restart lbctl to re-attach it",
            running.node.xdp_mode, new.node.xdp_mode
        ));
    }
    // What holds for every data plane.
    ipvs_reload_blocker(running, new)
}

/// Why a new config cannot be applied to a running IPVS data plane, `None`
/// when it can (IPVS has no load-time sizes and is not bound to the
/// interface). These checks hold for the XDP data plane too.
pub fn ipvs_reload_blocker(running: &Config, new: &Config) -> Option<String> {
    if new.node.dataplane != running.node.dataplane {
        return Some("node.dataplane changed; restart lbctl to switch data planes".into());
    }
    if new.node.keep_dataplane_on_exit != running.node.keep_dataplane_on_exit
        || new.node.state_dir != running.node.state_dir
    {
        return Some("node.keep_dataplane_on_exit / node.state_dir changed; restart lbctl".into());
    }
    if new.node.metrics_listen != running.node.metrics_listen {
        return Some("node.metrics_listen changed; restart lbctl to serve metrics there".into());
    }
    None
}

/// Runs the daemon until `shutdown` is cancelled or SIGINT/SIGTERM arrives.
/// SIGHUP reloads the config.
///
/// `vrrp`: `None` runs the config's `[[vrrp_instance]]`s in this daemon
/// (none configured: nothing runs); `Some(hook)` leaves VRRP to an external
/// driver holding the matching [`VrrpPort`] (the daemon starts no instance).
///
/// # Errors
/// A bad config (nothing is applied), data plane, netlink or socket errors
/// during start-up.
pub async fn run(
    config_path: PathBuf,
    shutdown: CancellationToken,
    vrrp: Option<VrrpHook>,
) -> Result<(), DaemonError> {
    run_with(config_path, shutdown, vrrp, systemd::Systemd::default()).await
}

/// [`run`], telling `systemd` about readiness, reloads and liveness (what
/// `lbctl run` does; see [`systemd`]).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    config_path: PathBuf,
    shutdown: CancellationToken,
    vrrp: Option<VrrpHook>,
    systemd: systemd::Systemd,
) -> Result<(), DaemonError> {
    // First of all: from here on SIGHUP, SIGTERM and SIGINT no longer kill
    // the process (their default action, without any cleanup); one that
    // arrives during start-up is handled when the event loop starts.
    let signals = Signals::install()?;
    let cfg = config::load(&config_path)?;
    // One daemon per state directory, checked before anything touches the
    // data plane: a second daemon would adopt and re-pin the running one's
    // XDP link, and detach it when it gives up. Held until `run` returns.
    let daemon_lock = lock::acquire(&cfg.node.state_dir)?;
    info!(lock = %daemon_lock.path().display(), "daemon lock taken");
    let resolver = Resolver::new()?;
    // XDP needs the interface (and its MAC); IPVS is not bound to one.
    let link = match cfg.node.dataplane {
        DataplaneKind::Xdp => Some(resolver.link(&cfg.node.interface).await?),
        DataplaneKind::Auto => match resolver.link(&cfg.node.interface).await {
            Ok(l) => Some(l),
            Err(e) => {
                // XDP will fail to attach too, and IPVS does without.
                warn!(error = %e, interface = %cfg.node.interface, "interface lookup failed");
                None
            }
        },
        DataplaneKind::Ipvs => None,
    };
    let opts = load_options(&cfg);
    let plane::Started {
        plane: dp,
        adopted,
        note: mut dataplane_note,
    } = plane::start(&cfg)?;
    let kernel_resolves = dp.kernel_resolves_next_hops();
    info!(dataplane = dp.kind(), "data plane started");
    if let (Some(link), false) = (&link, kernel_resolves) {
        let has_vlans = match resolver.vlans(link.index).await {
            Ok(v) => !v.is_empty(),
            Err(e) => {
                warn!(error = %e, "listing the VLAN interfaces failed");
                false
            }
        };
        let iface = &cfg.node.interface;
        let rx_vlan = offload::rx_vlan_offload(iface);
        let generic = dp.mode() == "skb";
        if let Some(note) = offload::vlan_offload_note(iface, has_vlans, generic, &rx_vlan) {
            warn!(interface = %iface, "{note}");
            dataplane_note = Some(match dataplane_note {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
        }
    }

    // The metrics listener first: a start that fails on it leaves no
    // control socket behind, not even for a moment.
    let metrics_listener = match cfg.node.metrics_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                info!(%addr, "serving Prometheus metrics at /metrics");
                Some(l)
            }
            Err(source) => {
                dp.abort();
                return Err(DaemonError::Metrics { addr, source });
            }
        },
    };
    let listener = match api::bind(&api::socket_path(&cfg.node.state_dir)).await {
        Ok(l) => l,
        Err(e) => {
            dp.abort();
            return Err(e.into());
        }
    };
    let socket = api::socket_path(&cfg.node.state_dir);
    let cancel = shutdown.child_token();
    let (api_tx, api_rx) = mpsc::channel(16);
    if let Some(l) = metrics_listener {
        tokio::spawn(api::metrics::serve(l, api_tx.clone(), cancel.clone()));
    }
    tokio::spawn(api::serve(listener, api_tx, cancel.clone()));

    let (targets_tx, targets_rx) = watch::channel(reconcile::neigh_targets(&cfg));
    let (neigh_tx, neigh_rx) = watch::channel(BTreeMap::new());
    // Held open while the daemon runs when no resolver owns it (IPVS).
    let _idle_neigh_tx = match (&link, kernel_resolves) {
        (Some(link), false) => {
            tokio::spawn(neigh::run(
                resolver,
                link.index,
                targets_rx,
                neigh_tx,
                cancel.clone(),
            ));
            None
        }
        _ => Some(neigh_tx),
    };

    let (health_tx, health_rx) = mpsc::channel(256);
    // Built-in VRRP: the instances start Backup (their VIPs inactive) and
    // report through the same hook an external driver would use.
    let (hook, builtin) = match vrrp {
        Some(h) => (h, None),
        None => {
            let (port, hook) = vrrp_channel();
            let instances = if cfg.vrrp_instances.is_empty() {
                None
            } else {
                let vrrp_cancel = CancellationToken::new();
                match vrrp::run_instances(&cfg, Some(state_hook(port.clone())), &vrrp_cancel).await
                {
                    Ok(i) => Some(i),
                    Err(e) => {
                        cancel.cancel();
                        let _ = std::fs::remove_file(&socket);
                        dp.abort();
                        return Err(e.into());
                    }
                }
            };
            (
                hook,
                instances.map(|instances| BuiltinVrrp {
                    instances,
                    backends: port.backends_healthy(),
                }),
            )
        }
    };
    let vrrp_rx = Some(hook.updates);
    let vrrp_backends = Some(hook.backends);
    let mut owner = Owner {
        config_path,
        generation: 1,
        cfg,
        opts,
        dataplane_note,
        inputs: Inputs {
            iface_mac: link.as_ref().map_or([0; 6], |l| l.mac),
            kernel_resolves_next_hops: kernel_resolves,
            ..Default::default()
        },
        checks: BTreeMap::new(),
        check_gen: 0,
        resolutions: BTreeMap::new(),
        seeded_hops: BTreeMap::new(),
        dp,
        last: None,
        apply: ApplyRetry::default(),
        targets_tx,
        health_tx,
        cancel: cancel.clone(),
        vrrp_backends,
        vrrp: builtin,
        systemd,
    };
    owner.seed(&adopted);
    let kernel_health = owner.dp.kernel_health(&owner.cfg);
    owner.inputs.health.extend(kernel_health);
    owner.start_checks();
    // A failure is logged, counted and retried by the event loop.
    let _ = owner.reconcile();
    info!(
        config = %owner.config_path.display(),
        interface = %owner.cfg.node.interface,
        dataplane = owner.dp.kind(),
        vips = owner.cfg.vips.len(),
        "lbctl running"
    );
    owner.systemd.ready(&owner.summary());
    let result = owner
        .event_loop(signals, shutdown, health_rx, neigh_rx, vrrp_rx, api_rx)
        .await;
    owner.systemd.stopping();
    // VRRP first: priority 0 from masters and the VIPs removed while the
    // data plane still forwards (the owner loop is gone, so the shell's
    // acknowledgements resolve at once).
    if let Some(v) = owner.vrrp.take() {
        for e in v.instances.shutdown().await {
            warn!(error = %e, "VRRP instance ended with an error");
        }
        info!("VRRP instances stopped");
    }
    cancel.cancel();
    owner.checks.clear();
    let _ = std::fs::remove_file(&socket);
    let Owner { dp, cfg, .. } = owner;
    dp.stop(&cfg);
    drop(daemon_lock);
    result
}

/// The daemon's signal streams, installed first thing in [`run`].
struct Signals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, DaemonError> {
        let on = |k: SignalKind| signal(k).map_err(DaemonError::Signal);
        Ok(Self {
            sigint: on(SignalKind::interrupt())?,
            sigterm: on(SignalKind::terminate())?,
            sighup: on(SignalKind::hangup())?,
        })
    }
}

struct RunningCheck {
    spec: CheckSpec,
    generation: u64,
    handle: CheckHandle,
}

/// What a health event names: the backend and the run of its check (a
/// check restarted by a reload gets a new generation; events of the old run
/// are ignored).
#[derive(Clone, Copy, PartialEq, Eq)]
struct HealthTarget {
    key: BackendKey,
    generation: u64,
}

impl std::fmt::Debug for HealthTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.key)
    }
}

struct Owner {
    config_path: PathBuf,
    generation: u64,
    cfg: Config,
    opts: LoadOptions,
    dataplane_note: Option<String>,
    inputs: Inputs,
    checks: BTreeMap<BackendKey, RunningCheck>,
    check_gen: u64,
    resolutions: BTreeMap<IpAddr, Resolution>,
    /// Next hops of an adopted data plane, used until the resolver has an answer.
    seeded_hops: BTreeMap<IpAddr, L2NextHop>,
    dp: plane::Plane,
    /// The desired state last applied in full.
    last: Option<DesiredState>,
    /// Failed applies and their retry.
    apply: ApplyRetry,
    targets_tx: watch::Sender<BTreeSet<NeighTarget>>,
    health_tx: mpsc::Sender<HealthEvent<HealthTarget>>,
    cancel: CancellationToken,
    vrrp_backends: Option<watch::Sender<BTreeMap<String, bool>>>,
    /// The daemon's own VRRP instances.
    vrrp: Option<BuiltinVrrp>,
    /// The service manager, told about readiness, reloads and liveness.
    systemd: systemd::Systemd,
}

/// First delay before a failed apply is retried.
pub const APPLY_RETRY_MIN: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest delay between retries of a failed apply.
pub const APPLY_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// The delay before the next retry of a failed apply, after `previous`
/// (`None`: the first failure): doubling from [`APPLY_RETRY_MIN`] up to
/// [`APPLY_RETRY_MAX`].
pub fn apply_retry_delay(previous: Option<std::time::Duration>) -> std::time::Duration {
    previous.map_or(APPLY_RETRY_MIN, |d| {
        d.saturating_mul(2).clamp(APPLY_RETRY_MIN, APPLY_RETRY_MAX)
    })
}

/// Failed applies of the desired state: counted, shown by `lbctl status`,
/// and retried on a timer until one succeeds (any event retries too).
#[derive(Debug, Default)]
struct ApplyRetry {
    /// Failed applies since the daemon started.
    failures: u64,
    /// The error of the last apply, while it has not succeeded since.
    error: Option<String>,
    /// The delay used for the pending retry.
    delay: Option<std::time::Duration>,
    /// When to retry.
    at: Option<tokio::time::Instant>,
}

/// VRRP instances run by the daemon, and their `track_backends` feed.
struct BuiltinVrrp {
    instances: vrrp::Instances,
    backends: watch::Receiver<BTreeMap<String, bool>>,
}

impl BuiltinVrrp {
    /// Hands per-instance backend health to the instances.
    fn feed_backends(&mut self) {
        let healthy = self.backends.borrow_and_update().clone();
        for (name, up) in healthy {
            if let Some(h) = self.instances.get(&name) {
                h.set_backends_healthy(up);
            }
        }
    }
}

impl Owner {
    async fn event_loop(
        &mut self,
        signals: Signals,
        shutdown: CancellationToken,
        mut health_rx: mpsc::Receiver<HealthEvent<HealthTarget>>,
        mut neigh_rx: watch::Receiver<BTreeMap<IpAddr, Resolution>>,
        mut vrrp_rx: Option<mpsc::UnboundedReceiver<VrrpMsg>>,
        mut api_rx: mpsc::Receiver<ApiCall>,
    ) -> Result<(), DaemonError> {
        let Signals {
            mut sigint,
            mut sigterm,
            mut sighup,
        } = signals;
        // Pings from this loop: a loop that hangs stops them, and systemd
        // restarts the daemon.
        let mut watchdog = self.systemd.watchdog_every().map(tokio::time::interval);
        loop {
            let retry_at = self.apply.at;
            tokio::select! {
                () = shutdown.cancelled() => { info!("shutting down"); return Ok(()) }
                _ = async {
                    match watchdog.as_mut() {
                        Some(w) => w.tick().await,
                        None => std::future::pending().await,
                    }
                } => self.systemd.watchdog(),
                () = async {
                    match retry_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.apply.at = None;
                    info!(failures = self.apply.failures, "retrying the failed apply of the desired state");
                    // A failure schedules the next retry.
                    let _ = self.reconcile();
                }
                _ = sigint.recv() => { info!("SIGINT: shutting down"); return Ok(()) }
                _ = sigterm.recv() => { info!("SIGTERM: shutting down"); return Ok(()) }
                _ = sighup.recv() => {
                    info!("SIGHUP: reloading");
                    // Errors are logged inside.
                    let _ = self.reload();
                }
                Some(ev) = health_rx.recv() => {
                    let HealthTarget { key, generation } = ev.target;
                    if self.checks.get(&key).is_some_and(|c| c.generation == generation) {
                        info!(backend = %key, up = ev.up, reason = %ev.reason, "health changed");
                        self.inputs.health.insert(key, ev.up);
                        let _ = self.reconcile();
                    }
                }
                Ok(()) = neigh_rx.changed() => {
                    self.resolutions = neigh_rx.borrow_and_update().clone();
                    let resolutions = &self.resolutions;
                    self.seeded_hops.retain(|a, _| {
                        matches!(resolutions.get(a), None | Some(Resolution::Pending { .. }))
                    });
                    let mut hops = self.seeded_hops.clone();
                    hops.extend(
                        self.resolutions
                            .iter()
                            .filter_map(|(a, r)| r.next_hop().map(|h| (*a, h))),
                    );
                    self.inputs.next_hops = hops;
                    let _ = self.reconcile();
                }
                Some(msg) = async {
                    match vrrp_rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let VrrpMsg { update: up, applied } = msg;
                    info!(instance = %up.instance, role = ?up.role, "VRRP role changed");
                    self.inputs.vrrp.insert(up.instance, up.role);
                    let applied_now = self.reconcile().map_err(|e| e.to_string());
                    if let Some(tx) = applied {
                        let _ = tx.send(applied_now);
                    }
                }
                Ok(()) = async {
                    match self.vrrp.as_mut() {
                        Some(v) => v.backends.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(v) = self.vrrp.as_mut() {
                        v.feed_backends();
                    }
                }
                Some(call) = api_rx.recv() => {
                    let resp = match call.request {
                        Request::Status => Response::Status(self.status()),
                        Request::Stats => self.stats(),
                        Request::Reload => match self.reload() {
                            Ok(r) => Response::Reloaded(r),
                            Err(message) => Response::Error { message },
                        },
                    };
                    let _ = call.reply.send(resp);
                }
            }
        }
    }

    /// Recomputes the desired state and applies it when it changed (or when
    /// the last apply failed: the data plane may then hold part of it).
    ///
    /// # Errors
    /// The apply failed: it is logged, counted, shown by `lbctl status` and
    /// retried on a timer with backoff ([`apply_retry_delay`]); `last`
    /// stays the last state applied in full.
    fn reconcile(&mut self) -> Result<(), plane::PlaneError> {
        let desired = reconcile::desired_state(&self.cfg, &self.inputs);
        if self.apply.error.is_none() && self.last.as_ref() == Some(&desired) {
            return Ok(());
        }
        // The apply may block (netlink round trips, the table switch's grace
        // wait): let the runtime move other tasks (VRRP timers) elsewhere.
        let dp = &mut self.dp;
        let report = match blocking(|| dp.apply(&desired)) {
            Ok(r) => r,
            Err(e) => {
                let delay = apply_retry_delay(self.apply.delay);
                self.apply.failures += 1;
                self.apply.error = Some(e.to_string());
                self.apply.delay = Some(delay);
                self.apply.at = Some(tokio::time::Instant::now() + delay);
                error!(
                    error = %e,
                    failures = self.apply.failures,
                    retry_in = ?delay,
                    "applying the desired state failed; the data plane may hold part of it"
                );
                return Err(e);
            }
        };
        if self.apply.error.take().is_some() {
            info!(
                failures = self.apply.failures,
                "the desired state is applied again"
            );
        }
        self.apply.delay = None;
        self.apply.at = None;
        if !report.is_empty() {
            info!(?report, "data plane updated");
        }
        let starved = |d: &DesiredState| -> BTreeSet<crate::dataplane::VipSpec> {
            d.vips
                .iter()
                .filter(|v| v.active && !v.backends.iter().any(|b| b.in_ring()))
                .map(|v| v.spec)
                .collect()
        };
        let before = self.last.as_ref().map(starved).unwrap_or_default();
        for spec in starved(&desired).difference(&before) {
            warn!(vip = %spec, "no backend can take new flows");
        }
        if let Some(tx) = &self.vrrp_backends {
            let h = reconcile::instance_backends_healthy(&self.cfg, &desired);
            tx.send_if_modified(|cur| {
                let changed = *cur != h;
                *cur = h;
                changed
            });
        }
        self.last = Some(desired);
        Ok(())
    }

    /// Takes health and next hops from an adopted data plane, so the first
    /// reconcile changes nothing that was forwarding.
    fn seed(
        &mut self,
        adopted: &BTreeMap<
            (crate::dataplane::VipSpec, IpAddr),
            crate::dataplane::xdp::AdoptedBackend,
        >,
    ) {
        for vip in &self.cfg.vips {
            let spec = reconcile::vip_spec(&vip.identity());
            for b in &vip.backends {
                if let Some(a) = adopted.get(&(spec, b.address)) {
                    self.inputs.health.insert(
                        BackendKey {
                            vip: vip.identity(),
                            addr: b.address,
                        },
                        a.alive,
                    );
                    if a.mac != [0; 6] {
                        self.seeded_hops.insert(
                            b.address,
                            L2NextHop {
                                mac: a.mac,
                                vlan: a.vlan,
                            },
                        );
                    }
                }
            }
        }
        self.inputs.next_hops = self.seeded_hops.clone();
    }

    fn start_checks(&mut self) {
        for (key, spec) in reconcile::checks(&self.cfg) {
            self.start_check(key, spec);
        }
    }

    /// Starts the check of `key`. `spec` is the configured check, which is
    /// what the running check records (and a reload compares against); the
    /// run itself starts Up when the backend is known healthy (seeded from
    /// an adopted data plane, or kept over a restart by a reload): it is not
    /// taken out of the table until its check fails `fall` times.
    fn start_check(&mut self, key: BackendKey, spec: CheckSpec) {
        let run = reconcile::restart_initial(&spec, self.inputs.health.get(&key).copied());
        self.check_gen += 1;
        let handle = spawn_check(
            HealthTarget {
                key,
                generation: self.check_gen,
            },
            run,
            self.health_tx.clone(),
            &self.cancel,
        );
        self.checks.insert(
            key,
            RunningCheck {
                spec,
                generation: self.check_gen,
                handle,
            },
        );
    }

    /// Re-reads the config. A bad or unappliable config is refused and the
    /// running one stays.
    fn reload(&mut self) -> Result<api::ReloadReport, String> {
        self.systemd.reloading();
        let result = self.reload_config();
        // Refused or not, the daemon serves again (the old config if refused).
        self.systemd.ready(&self.summary());
        result
    }

    /// What the daemon serves, in a line (systemd's STATUS), with the
    /// failing apply (retried) when there is one.
    fn summary(&self) -> String {
        let mut s = format!(
            "generation {}: {} VIPs on {} ({} data plane)",
            self.generation,
            self.cfg.vips.len(),
            self.cfg.node.interface,
            self.dp.kind()
        );
        if let Some(e) = &self.apply.error {
            s.push_str(&format!(
                "; the data plane holds part of it, the apply is retried: {e}"
            ));
        }
        s
    }

    fn reload_config(&mut self) -> Result<api::ReloadReport, String> {
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reload refused: the running config stays");
                return Err(e.to_string());
            }
        };
        let blocker = match self.dp {
            plane::Plane::Xdp { .. } => reload_blocker(&self.cfg, self.opts, &new),
            plane::Plane::Ipvs(_) => ipvs_reload_blocker(&self.cfg, &new),
        }
        .or_else(|| vrrp_reload_blocker(&self.cfg, &new));
        if let Some(why) = blocker {
            error!(reason = %why, "reload refused: the running config stays");
            return Err(why);
        }
        let running: BTreeMap<BackendKey, CheckSpec> = self
            .checks
            .iter()
            .map(|(k, c)| (*k, c.spec.clone()))
            .collect();
        let wanted = reconcile::checks(&new);
        let plan = reconcile::plan_checks(&running, &wanted);
        // Only a backend that loses its check loses its health. A changed
        // check restarts from the backend's current health (kept in
        // `inputs.health` until the new run reports a transition; events of
        // the old run are ignored by generation).
        for key in &plan.stop {
            self.checks.remove(key);
            self.inputs.health.remove(key);
        }
        for key in &plan.restart {
            self.checks.remove(key);
            if let Some(spec) = wanted.get(key) {
                self.start_check(*key, spec.clone());
            }
        }
        for key in &plan.start {
            // A new check starts down, whatever an earlier run left here.
            self.inputs.health.remove(key);
            if let Some(spec) = wanted.get(key) {
                self.start_check(*key, spec.clone());
            }
        }
        self.cfg = new;
        self.dp.configure(&self.cfg);
        self.generation += 1;
        self.targets_tx
            .send_replace(reconcile::neigh_targets(&self.cfg));
        if let Err(e) = self.reconcile() {
            let retry = self.apply.delay.unwrap_or(APPLY_RETRY_MIN);
            let consistent = match self.dp {
                plane::Plane::Xdp { .. } => " (every VIP it forwards uses a complete table)",
                plane::Plane::Ipvs(_) => "",
            };
            return Err(format!(
                "config generation {} is loaded (its health checks and VRRP gating are in effect), \
                 but applying it to the {} data plane failed: {e}. Running now: the data plane \
                 holds the previous state with part of the new one{consistent}; the apply is \
                 retried in {retry:?} and then with backoff up to {APPLY_RETRY_MAX:?} until it \
                 succeeds (`lbctl status` shows the failures). Fix the cause, or reload a config \
                 that applies.",
                self.generation,
                self.dp.kind()
            ));
        }
        info!(
            generation = self.generation,
            started = plan.start.len(),
            restarted = plan.restart.len(),
            stopped = plan.stop.len(),
            kept = plan.keep.len(),
            "config reloaded"
        );
        // A restarted check is counted as stopped and started too.
        Ok(api::ReloadReport {
            config_generation: self.generation,
            checks_started: plan.start.len() + plan.restart.len(),
            checks_stopped: plan.stop.len() + plan.restart.len(),
            checks_kept: plan.keep.len(),
            checks_restarted: plan.restart.len(),
        })
    }

    fn status(&mut self) -> api::StatusReport {
        let stats = self.dp.stats().ok();
        let ipvs = match self.dp.ipvs_status() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "reading the IPVS table for status failed");
                None
            }
        };
        let ipvs_services: BTreeMap<
            crate::dataplane::ipvs::ServiceKey,
            &crate::dataplane::ipvs::ServiceStatus,
        > = ipvs
            .iter()
            .flat_map(|s| s.services.iter())
            .map(|s| (s.key, s))
            .collect();
        let kernel_resolves = self.inputs.kernel_resolves_next_hops;
        let vips = self
            .cfg
            .vips
            .iter()
            .map(|vip| {
                let spec = reconcile::vip_spec(&vip.identity());
                let desired = self
                    .last
                    .as_ref()
                    .and_then(|d| d.vips.iter().find(|v| v.spec == spec));
                let vc = stats.as_ref().and_then(|s| s.vips.get(&spec)).copied();
                let bstats = stats.as_ref().and_then(|s| s.backends.get(&spec));
                let svc = ipvs_services
                    .get(&crate::dataplane::ipvs::service_key(&spec))
                    .copied();
                let sorry = match vip.on_no_backend {
                    OnNoBackend::SorryServer(a) => Some(a),
                    OnNoBackend::Drop => None,
                };
                let backends = desired
                    .map(|d| d.backends.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(|b| {
                        let key = BackendKey {
                            vip: vip.identity(),
                            addr: b.addr,
                        };
                        let check = self.checks.get(&key).map(|c| c.handle.stats());
                        let configured = vip.backends.iter().find(|cb| cb.address == b.addr);
                        let health = match (configured, check) {
                            (None, _) => "up (sorry)".to_owned(),
                            (Some(_), None) => "up (no check)".to_owned(),
                            (Some(_), Some(_)) if b.healthy => "up".to_owned(),
                            (Some(_), Some(_)) => "down".to_owned(),
                        };
                        let c = bstats
                            .and_then(|m| m.get(&b.addr))
                            .copied()
                            .unwrap_or_default();
                        let dest = svc
                            .filter(|s| s.owned)
                            .and_then(|s| s.dests.iter().find(|d| d.key.addr == b.addr))
                            .map(ipvs_dest_view);
                        api::BackendStatus {
                            address: b.addr.to_string(),
                            weight: b.weight,
                            health,
                            in_ring: b.in_ring(),
                            mac: b
                                .mac
                                .filter(|_| !kernel_resolves)
                                .as_ref()
                                .map(neigh::format_mac),
                            vlan: Some(b.vlan).filter(|v| {
                                !kernel_resolves && b.mac.is_some() && *v != VLAN_UNTAGGED
                            }),
                            neighbour: match self.resolutions.get(&b.addr) {
                                _ if kernel_resolves => None,
                                Some(Resolution::Pending { next_hop }) => {
                                    Some(format!("resolving {next_hop}"))
                                }
                                Some(Resolution::Unusable { reason }) => Some(reason.clone()),
                                None if b.mac.is_none() => Some("not resolved".into()),
                                _ => None,
                            },
                            ipvs: dest,
                            sorry_server: configured.is_none() && sorry == Some(b.addr),
                            checks: check.map_or(0, |c| c.checks),
                            check_failures: check.map_or(0, |c| c.failures),
                            packets: c.packets,
                            bytes: c.bytes,
                        }
                    })
                    .collect();
                api::VipStatus {
                    name: vip.name.clone(),
                    vip: spec.to_string(),
                    forwarding: match vip.forwarding {
                        config::Forwarding::Dr => "dr".into(),
                        config::Forwarding::Ipip => "ipip".into(),
                        config::Forwarding::Nat => "nat".into(),
                    },
                    ipvs: svc.map(ipvs_service_view),
                    active: desired.is_some_and(|d| d.active),
                    vrrp_instance: vip.vrrp_instance.clone(),
                    packets: vc.map_or(0, |c| c.packets),
                    bytes: vc.map_or(0, |c| c.bytes),
                    backends,
                }
            })
            .collect();
        let healthy = self
            .last
            .as_ref()
            .map(|d| reconcile::instance_backends_healthy(&self.cfg, d))
            .unwrap_or_default();
        let vrrp = self
            .cfg
            .vrrp_instances
            .iter()
            .map(|i| {
                let handle = self.vrrp.as_ref().and_then(|v| v.instances.get(&i.name));
                let reported = || {
                    self.inputs
                        .vrrp
                        .get(&i.name)
                        .map_or_else(|| "UNKNOWN".to_owned(), |r| format!("{r:?}").to_uppercase())
                };
                let (state, priority) = match handle {
                    Some(h) if h.is_finished() => ("STOPPED".to_owned(), 0),
                    Some(h) => {
                        let s = h.state();
                        (vrrp_state_word(s.state).to_owned(), s.priority)
                    }
                    None => (reported(), i.priority),
                };
                api::VrrpStatus {
                    name: i.name.clone(),
                    state,
                    backends_healthy: healthy.get(&i.name).copied().unwrap_or(true),
                    vrid: i.virtual_router_id,
                    interface: i.interface.clone(),
                    version: match i.version {
                        config::VrrpVersion::V2 => 2,
                        config::VrrpVersion::V3 => 3,
                    },
                    base_priority: i.priority,
                    priority,
                    counters: handle.map(vrrp_counters),
                    last_error: handle.and_then(|h| h.last_error()),
                }
            })
            .collect();
        api::StatusReport {
            config: self.config_path.display().to_string(),
            interface: self.cfg.node.interface.clone(),
            dataplane: self.dp.kind().to_owned(),
            dataplane_note: self.dataplane_note.clone(),
            xdp_mode: self.dp.mode().to_owned(),
            foreign_services: ipvs
                .iter()
                .flat_map(|s| s.services.iter())
                .filter(|s| !s.owned)
                .map(|s| s.key.to_string())
                .collect(),
            config_generation: self.generation,
            apply_failures: self.apply.failures,
            apply_error: self.apply.error.clone(),
            vips,
            vrrp,
        }
    }

    fn stats(&mut self) -> Response {
        let stats = match self.dp.stats() {
            Ok(s) => s,
            Err(e) => {
                return Response::Error {
                    message: format!("reading counters: {e}"),
                };
            }
        };
        let vips = self
            .cfg
            .vips
            .iter()
            .map(|vip| {
                let spec = reconcile::vip_spec(&vip.identity());
                let c = stats.vips.get(&spec).copied().unwrap_or_default();
                api::VipStats {
                    name: vip.name.clone(),
                    vip: spec.to_string(),
                    packets: c.packets,
                    bytes: c.bytes,
                    backends: stats
                        .backends
                        .get(&spec)
                        .map(|m| {
                            m.iter()
                                .map(|(a, c)| api::BackendStats {
                                    address: a.to_string(),
                                    packets: c.packets,
                                    bytes: c.bytes,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Response::Stats(api::StatsReport {
            vips,
            reasons: stats
                .reasons
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        })
    }
}

/// The status word of a VRRP state.
fn vrrp_state_word(s: vrrp::State) -> &'static str {
    match s {
        vrrp::State::Master => "MASTER",
        vrrp::State::Backup => "BACKUP",
        vrrp::State::Fault => "FAULT",
        vrrp::State::Initialize => "INIT",
    }
}

/// Runs blocking work on the current task: on a multi-threaded runtime the
/// worker hands its other tasks to the rest first
/// (`tokio::task::block_in_place`), so a slow data-plane apply does not hold
/// up VRRP timers or health checks; on a current-thread runtime (tests) it
/// just runs.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The counters summary of a running instance.
fn vrrp_counters(h: &vrrp::InstanceHandle) -> api::VrrpCounters {
    let c = h.counters();
    let s = h.shell_counters();
    api::VrrpCounters {
        adverts_received: c.adverts_received,
        adverts_sent: c.adverts_sent,
        adverts_rejected: c.rx_rejected(),
        priority_zero_received: c.priority_zero_received,
        priority_zero_sent: c.priority_zero_sent,
        became_master: c.became_master,
        became_backup: c.became_backup,
        became_fault: c.became_fault,
        garp_sent: s.garp_sent,
        errors: s.send_errors
            + s.address_errors
            + s.garp_errors
            + s.recv_errors
            + s.bad_ip_header
            + s.socket_queue_full
            + s.start_failures
            + s.dataplane_failures,
        restarts: s.restarts,
    }
}

/// The kernel's IPVS service in the status report's shape.
fn ipvs_service_view(s: &crate::dataplane::ipvs::ServiceStatus) -> api::IpvsServiceView {
    use crate::dataplane::ipvs::codec::svc_flags;
    let c = &s.config;
    let mut flags = Vec::new();
    let sched = c.sched_name.as_str();
    let hashing = matches!(sched, "mh" | "sh");
    if hashing && c.flags & svc_flags::SCHED1 != 0 {
        flags.push(format!("{sched}-fallback"));
    }
    if hashing && c.flags & svc_flags::SCHED2 != 0 {
        flags.push(format!("{sched}-port"));
    }
    if c.flags & svc_flags::ONEPACKET != 0 {
        flags.push("ops".to_owned());
    }
    let persistent = c.flags & svc_flags::PERSISTENT != 0;
    if persistent {
        flags.push("persistent".to_owned());
    }
    api::IpvsServiceView {
        service: s.key.to_string(),
        owned: s.owned,
        scheduler: c.sched_name.clone(),
        flags,
        persistence: persistent.then_some(c.timeout),
        connections: s.stats.conns,
        in_packets: s.stats.inpkts,
        out_packets: s.stats.outpkts,
        in_bytes: s.stats.inbytes,
        out_bytes: s.stats.outbytes,
    }
}

/// The kernel's IPVS real server in the status report's shape.
fn ipvs_dest_view(d: &crate::dataplane::ipvs::DestEntry) -> api::IpvsDestView {
    api::IpvsDestView {
        weight: d.config.weight,
        forwarding: d.config.fwd.ipvsadm_name().to_owned(),
        active_conns: d.active_conns,
        inactive_conns: d.inact_conns,
        persistent_conns: d.persist_conns,
        connections: d.stats.conns,
        in_packets: d.stats.inpkts,
        out_packets: d.stats.outpkts,
        in_bytes: d.stats.inbytes,
        out_bytes: d.stats.outbytes,
    }
}

/// `lbctl decap`: attaches the `decap` program to `iface`, accepts tunnels to
/// `addrs`, runs until SIGINT/SIGTERM or `shutdown`, then detaches.
///
/// # Errors
/// Load, attach or map errors.
pub async fn run_decap(
    iface: &str,
    addrs: &[IpAddr],
    mode: AttachMode,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut dp = XdpDataplane::load(LoadOptions::minimal())?;
    dp.set_decap_addrs(addrs)?;
    let m = dp.attach(programs::DECAP, iface, mode)?;
    info!(iface, mode = ?m, addrs = ?addrs, "decap running");
    tokio::select! {
        () = shutdown.cancelled() => {}
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    dp.detach_all();
    Ok(())
}

/// The control socket path of the config at `path` (for the CLI).
///
/// # Errors
/// The config does not load.
pub fn socket_of_config(path: &Path) -> Result<PathBuf, config::ConfigError> {
    Ok(api::socket_path(&config::load(path)?.node.state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vrrp: &str) -> Config {
        let text = format!(
            r#"[node]
interface = "veth0"
[[vip]]
name = "a"
address = "10.0.0.100"
port = 80
vrrp_instance = "VI_1"
  [[vip.backend]]
  address = "10.0.1.1"
{vrrp}"#
        );
        config::parse(&text, "lb.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    const VI_1: &str = r#"
[[vrrp_instance]]
name = "VI_1"
interface = "veth0"
virtual_router_id = 1
priority = 150
virtual_ipaddress = ["10.0.0.100"]
"#;

    #[test]
    fn vrrp_changes_need_a_restart() {
        let running = cfg(VI_1);
        assert_eq!(vrrp_reload_blocker(&running, &cfg(VI_1)), None);

        // A VIP gated differently is not VRRP config.
        let ungated = config::parse(
            &format!(
                "[node]\ninterface = \"veth0\"\n[[vip]]\nname = \"a\"\naddress = \"10.0.0.100\"\nport = 80\n  [[vip.backend]]\n  address = \"10.0.1.1\"\n{VI_1}"
            ),
            "lb.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(vrrp_reload_blocker(&running, &ungated), None);

        let changed = cfg(&VI_1.replace("priority = 150", "priority = 100"));
        let why = vrrp_reload_blocker(&running, &changed).expect("refused");
        assert!(
            why.contains("changed VI_1") && why.contains("restart lbctl"),
            "{why}"
        );

        let added = cfg(&format!(
            "{VI_1}\n[[vrrp_instance]]\nname = \"VI_2\"\ninterface = \"veth0\"\nvirtual_router_id = 2\nvirtual_ipaddress = [\"10.0.0.101\"]\n"
        ));
        let why = vrrp_reload_blocker(&running, &added).expect("refused");
        assert!(why.contains("added VI_2"), "{why}");
        let why = vrrp_reload_blocker(&added, &running).expect("refused");
        assert!(why.contains("removed VI_2"), "{why}");
    }

    #[test]
    fn node_changes_that_need_a_restart_are_refused() {
        let with_node = |node: &str| {
            config::parse(
                &format!(
                    "[node]\n{node}\n[[vip]]\nname = \"a\"\naddress = \"10.0.0.100\"\nport = 80\n  [[vip.backend]]\n  address = \"10.0.1.1\"\n"
                ),
                "lb.toml",
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let running = with_node("interface = \"veth0\"");
        let opts = load_options(&running);
        assert_eq!(reload_blocker(&running, opts, &running.clone()), None);
        for (change, want) in [
            (
                "interface = \"veth0\"\nxdp_mode = \"skb\"",
                "node.xdp_mode changed (Auto -> Skb)",
            ),
            ("interface = \"veth1\"", "node.interface changed"),
            ("interface = \"veth0\"\nmax_vips = 8", "node.max_vips"),
            (
                "interface = \"veth0\"\nkeep_dataplane_on_exit = true",
                "node.keep_dataplane_on_exit",
            ),
            (
                "interface = \"veth0\"\ndataplane = \"ipvs\"",
                "node.dataplane changed",
            ),
            (
                "interface = \"veth0\"\nmetrics_listen = \"127.0.0.1:9650\"",
                "node.metrics_listen changed",
            ),
        ] {
            let why = reload_blocker(&running, opts, &with_node(change))
                .unwrap_or_else(|| panic!("{change}: reload not refused"));
            assert!(
                why.contains(want) && why.contains("restart lbctl"),
                "{change}: {why}"
            );
        }
        // node.mtu is applied by a reload.
        let mtu = with_node("interface = \"veth0\"\nmtu = 9000");
        assert_eq!(reload_blocker(&running, opts, &mtu), None);
    }

    #[tokio::test]
    async fn signals_during_start_up_wait_for_the_event_loop() {
        // What `run` installs before it loads the config: a signal that
        // arrives before the event loop polls is kept for it, and the
        // process lives on (the default action of all three kills it).
        let mut s = Signals::install().unwrap_or_else(|e| panic!("{e}"));
        for sig in [
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::Signal::SIGTERM,
        ] {
            nix::sys::signal::raise(sig).unwrap_or_else(|e| panic!("raise {sig}: {e}"));
        }
        let limit = std::time::Duration::from_secs(5);
        assert!(tokio::time::timeout(limit, s.sighup.recv()).await.is_ok());
        assert!(tokio::time::timeout(limit, s.sigterm.recv()).await.is_ok());
    }

    #[test]
    fn failed_applies_are_retried_with_a_bounded_backoff() {
        let mut d = apply_retry_delay(None);
        assert_eq!(d, APPLY_RETRY_MIN);
        let mut seen = vec![d];
        for _ in 0..10 {
            d = apply_retry_delay(Some(d));
            seen.push(d);
        }
        assert_eq!(seen[1], APPLY_RETRY_MIN * 2);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&APPLY_RETRY_MAX));
        assert_eq!(
            apply_retry_delay(Some(std::time::Duration::MAX)),
            APPLY_RETRY_MAX
        );
    }

    #[test]
    fn only_master_forwards() {
        assert_eq!(role_of(vrrp::State::Master), VrrpRole::Master);
        assert_eq!(role_of(vrrp::State::Backup), VrrpRole::Backup);
        assert_eq!(role_of(vrrp::State::Initialize), VrrpRole::Backup);
        assert_eq!(role_of(vrrp::State::Fault), VrrpRole::Fault);
    }

    #[tokio::test]
    async fn acked_state_change_resolves_after_the_owner_or_when_it_is_gone() {
        let (port, mut hook) = vrrp_channel();
        let hook_fn = state_hook(port.clone());
        let ack = hook_fn("VI_1", vrrp::State::Master).expect("an ack");
        let msg = hook.updates.recv().await.expect("message");
        assert_eq!(
            msg.update,
            VrrpUpdate {
                instance: "VI_1".into(),
                role: VrrpRole::Master
            }
        );
        let tx = msg.applied.expect("ack sender");
        tx.send(Err("map update failed".into())).expect("send ack");
        assert_eq!(ack.await, Ok(Err("map update failed".to_string())));

        // The owner is gone: the ack resolves at once, with an error.
        drop(hook);
        let ack = port.state_changed_acked("VI_1", VrrpRole::Backup);
        assert!(ack.await.is_err());
    }
}
