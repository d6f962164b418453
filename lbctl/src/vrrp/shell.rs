//! The async I/O shell of one VRRP instance: it owns the raw sockets, the
//! timers, the virtual addresses and the announcements, and drives a
//! [`Machine`].
//!
//! One tokio task per instance ([`spawn_instance`]) runs a loop over:
//! received packets (decode, check, count, feed the machine), the two VRRP
//! timers (deadlines read back from the machine after every input, so a
//! re-armed or cancelled timer needs no bookkeeping), tracking events
//! (interface link state over rtnetlink, `vrrp_script` runners, backend
//! health from the daemon) and cancellation.
//!
//! On a transition **to Master** the shell, in this order: calls the
//! [`StateHook`], waiting for its [`HookAck`] when it hands one back (the
//! daemon switches the data plane's active flag in this step), publishes
//! the new state on the watch channel, adds the VIPs (rtnetlink; IPv6 with `nodad`),
//! starts the gratuitous ARP / unsolicited NA schedule, and runs the notify
//! script. When the acknowledgement reports that the data plane could not
//! take over (the daemon's apply failed), none of that happens (MASTER is
//! not even published): the instance goes to FAULT at once (priority 0 sent, so a peer takes over
//! without waiting for Master_Down), keeps the error as
//! [`InstanceHandle::last_error`], counts it, and lifts the fault after
//! [`retry_delay`] of the consecutive failures to try again. A Master that answers a lower-priority advertisement
//! ([`Action::Announce`]) restarts that schedule. **Leaving Master**: stops the announcements, removes the VIPs,
//! publishes the new state (data plane inactive, acknowledged), notifies.
//! The order keeps one invariant: while a VIP is a local address of this
//! node, the data plane forwards it. Otherwise a packet of an established
//! flow that reaches the node in between (the peers still have its MAC)
//! would meet the kernel's TCP stack, which has no socket for it and
//! answers with a reset. On shutdown (cancellation) the
//! machine's Shutdown sends priority 0 when Master and the VIPs are
//! removed. At startup VIPs left behind by a killed predecessor are
//! removed before anything else.
//!
//! A start that fails (interface missing, no raw socket, VRID already
//! taken, no primary address) is logged at error level, published as
//! FAULT with [`InstanceHandle::last_error`], and tried again after
//! [`retry_delay`] (1 s doubling to 30 s) until it succeeds or the
//! instance is stopped. When the start failed because an interface is
//! missing, the wait also ends as soon as that interface appears (a
//! `RTM_NEWLINK` for its name).
//!
//! The raw sockets and the VIPs are bound to interface indexes, looked up
//! at start. An interface deleted and re-created (`ip link del`, a network
//! manager re-creating a bond or VLAN) keeps its name but gets a new
//! index, so a run cannot follow it: when the instance's interface or a
//! VIP's `dev` is deleted (`RTM_DELLINK` of the index it bound to; the own
//! interface is also tracked with weight 0, so the instance goes to FAULT
//! at once) or shows up under a new index, the run ends as for a fault
//! (priority 0 when Master, VIPs removed, hook and notify FAULT), the
//! instance shows FAULT with [`InstanceHandle::last_error`] saying why,
//! counts [`ShellCounters::restarts`], and starts again at once, with the
//! backoff reset since the run had started fine. If the interface is not
//! back yet, that start fails and waits for it as above. The lookup at
//! start is checked again once the link monitor runs, so a change during
//! start-up (up to [`PRIMARY_WAIT`] for the primary address) is not missed.
//! The receive socket shared with other instances is keyed by interface
//! index too (see [`super::rx`]), so a restarted instance never joins the
//! dead socket that instances not yet restarted still hold.
//!
//! Nothing a packet carries can stop the loop: every rejected packet is
//! counted (in [`Counters`] or [`ShellCounters`]) and logged at debug.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::health::HealthEvent;

use super::codec::{self, RxMeta};
use super::garp::Announcer;
use super::netlink::{LinkEvent, Netlink, NetlinkError, watch_links};
use super::notify::{Notifier, NotifyStats};
use super::rx::{ReceiverStats, Receivers, RxPacket, Subscription, source_allowed};
use super::scripts::{ScriptRunners, ScriptSubscription};
use super::socket::{SocketError, TxSocket};
use super::spec::{GarpConfig, InstanceSpec};
use super::track::{Tracked, TrackedKind, Tracking};
use super::{
    Action, Counters, Family, Input, InstanceParams, Machine, ParamsError, ReceivedAdvert, State,
    Timer,
};

/// How long the shell waits for the interface to have a usable primary
/// address (IPv6 link-local addresses are tentative during DAD).
pub const PRIMARY_WAIT: Duration = Duration::from_secs(30);
/// Poll period while waiting for the primary address.
const PRIMARY_POLL: Duration = Duration::from_millis(100);
/// The wait before the first retry of an instance that could not start.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two start attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long to wait before the next start attempt after `failures`
/// consecutive failed ones (1 for the first failure): [`RETRY_FIRST`],
/// doubling, at most [`RETRY_MAX`]. Zero failures: no wait.
pub fn retry_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    RETRY_FIRST.saturating_mul(factor).min(RETRY_MAX)
}

/// Why an instance could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// A netlink operation failed.
    #[error("instance {instance}: {source}")]
    Netlink {
        /// Instance name.
        instance: String,
        /// The failure.
        #[source]
        source: NetlinkError,
    },
    /// The raw sockets could not be opened.
    #[error("instance {instance}: {source}")]
    Socket {
        /// Instance name.
        instance: String,
        /// The failure.
        #[source]
        source: SocketError,
    },
    /// The interface has no address to send adverts from.
    #[error(
        "instance {instance}: no usable {family:?} primary address on {interface} after {waited:?}"
    )]
    NoPrimaryAddress {
        /// Instance name.
        instance: String,
        /// Interface.
        interface: String,
        /// Family looked for.
        family: Family,
        /// How long we waited.
        waited: Duration,
    },
    /// The parameters with the resolved primary address are invalid.
    #[error("instance {instance}: {source}")]
    Params {
        /// Instance name.
        instance: String,
        /// The failure.
        #[source]
        source: ParamsError,
    },
    /// The instance task panicked or was aborted.
    #[error("instance {0}: task ended abnormally")]
    Task(String),
}

/// The published state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateInfo {
    /// Protocol state.
    pub state: State,
    /// Effective priority.
    pub priority: u8,
}

/// Called synchronously by the shell on every transition, right before the
/// VIPs are added (to Master) or right after they were removed (from
/// Master): the place to flip the data plane's active flag. Arguments:
/// instance name, new state. Must not block: a hook whose effect is applied
/// elsewhere (another task) returns a [`HookAck`], and the shell waits for
/// it, at most [`HOOK_ACK_TIMEOUT`], before it goes on.
pub type StateHook = Arc<dyn Fn(&str, State) -> Option<HookAck> + Send + Sync>;

/// Resolved with `Ok` once the effect of a [`StateHook`] call is in place,
/// with `Err(why)` when it could not be put in place, or dropped (nobody
/// will apply it). A failed activation (transition to Master) puts the
/// instance in FAULT without adding its VIPs; see [`ShellStats::dataplane_failures`].
pub type HookAck = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// The longest the shell waits for a [`HookAck`]; past it, it logs and goes
/// on (a stuck data plane must not stop the protocol).
pub const HOOK_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// Shell-level counters (packet-level ones are in [`Counters`]).
#[derive(Debug, Default)]
pub struct ShellStats {
    /// Our own packets seen (source is our primary address), ignored.
    pub own_packets: AtomicU64,
    /// Advertisements that could not be encoded or sent.
    pub send_errors: AtomicU64,
    /// VIP additions or removals that failed.
    pub address_errors: AtomicU64,
    /// Gratuitous ARPs / unsolicited NAs sent.
    pub garp_sent: AtomicU64,
    /// Gratuitous ARPs / unsolicited NAs that failed.
    pub garp_errors: AtomicU64,
    /// Start attempts that failed (each is retried, see [`retry_delay`]).
    pub start_failures: AtomicU64,
    /// Transitions to Master whose [`HookAck`] reported that the data plane
    /// could not take over the VIPs: each put the instance in FAULT, lifted
    /// again after [`retry_delay`] of the consecutive failures.
    pub dataplane_failures: AtomicU64,
    /// Runs ended because an interface they were bound to was deleted or
    /// re-created (each followed by a new start).
    pub restarts: AtomicU64,
    /// Notify scripts.
    pub notify: NotifyStats,
}

/// A snapshot of [`ShellStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShellCounters {
    /// See [`ShellStats::own_packets`].
    pub own_packets: u64,
    /// Packets with an unusable IP header or missing ancillary data, on
    /// the receive socket this instance shares with the others on its
    /// (interface, family) (see [`super::rx`]).
    pub bad_ip_header: u64,
    /// Receive errors of that shared socket.
    pub recv_errors: u64,
    /// Packets on that shared socket whose VRID no instance on it owns
    /// (each counted once, for the socket; every instance sharing it
    /// reports the same value).
    pub socket_unknown_vrid: u64,
    /// Packets on that shared socket too short to carry a VRID.
    pub socket_too_short: u64,
    /// Packets for this socket's instances dropped on a full queue.
    pub socket_queue_full: u64,
    /// See [`ShellStats::send_errors`].
    pub send_errors: u64,
    /// See [`ShellStats::address_errors`].
    pub address_errors: u64,
    /// See [`ShellStats::garp_sent`].
    pub garp_sent: u64,
    /// See [`ShellStats::garp_errors`].
    pub garp_errors: u64,
    /// See [`ShellStats::start_failures`].
    pub start_failures: u64,
    /// See [`ShellStats::dataplane_failures`].
    pub dataplane_failures: u64,
    /// See [`ShellStats::restarts`].
    pub restarts: u64,
    /// Notify scripts started.
    pub notify_started: u64,
    /// Notify scripts failed.
    pub notify_failed: u64,
}

impl ShellStats {
    fn snapshot(&self, rx: Option<&ReceiverStats>) -> ShellCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let r = |f: fn(&ReceiverStats) -> &AtomicU64| rx.map_or(0, |s| l(f(s)));
        ShellCounters {
            own_packets: l(&self.own_packets),
            bad_ip_header: r(|s| &s.bad_ip_header),
            recv_errors: r(|s| &s.recv_errors),
            socket_unknown_vrid: r(|s| &s.unknown_vrid),
            socket_too_short: r(|s| &s.too_short),
            socket_queue_full: r(|s| &s.queue_full),
            send_errors: l(&self.send_errors),
            address_errors: l(&self.address_errors),
            garp_sent: l(&self.garp_sent),
            garp_errors: l(&self.garp_errors),
            start_failures: l(&self.start_failures),
            dataplane_failures: l(&self.dataplane_failures),
            restarts: l(&self.restarts),
            notify_started: l(&self.notify.started),
            notify_failed: l(&self.notify.failed),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// State shared between the instance task and its handle.
#[derive(Debug, Default)]
struct Shared {
    counters: Mutex<Counters>,
    stats: ShellStats,
    /// The counters of the shared receive socket, once subscribed.
    rx_stats: Mutex<Option<Arc<ReceiverStats>>>,
    /// Why the last start attempt failed, or why the last run ended for
    /// its interface; `None` once a start succeeded.
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Counters are plain integers: a panic while holding the lock
        // cannot leave them inconsistent, so a poisoned lock is still usable.
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_last_error(&self, e: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_rx_stats(&self, stats: Arc<ReceiverStats>) {
        *self
            .rx_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stats);
    }

    fn rx_stats(&self) -> Option<Arc<ReceiverStats>> {
        self.rx_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A running instance.
pub struct InstanceHandle {
    name: String,
    state: watch::Receiver<StateInfo>,
    backends: watch::Sender<bool>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<(), ShellError>>>,
}

impl std::fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceHandle")
            .field("name", &self.name)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl InstanceHandle {
    /// Instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A receiver of state changes (current value: the present state).
    pub fn subscribe(&self) -> watch::Receiver<StateInfo> {
        self.state.clone()
    }

    /// The present state.
    pub fn state(&self) -> StateInfo {
        *self.state.borrow()
    }

    /// Feed backend health: `false` while no VIP of this instance has a
    /// healthy backend (applies the `track_backends` weight; ignored when
    /// the instance does not track backends). Starts `true`.
    pub fn set_backends_healthy(&self, healthy: bool) {
        self.backends.send_replace(healthy);
    }

    /// Packet and transition counters.
    pub fn counters(&self) -> Counters {
        *self.shared.counters()
    }

    /// Shell counters.
    pub fn shell_counters(&self) -> ShellCounters {
        self.shared
            .stats
            .snapshot(self.shared.rx_stats().as_deref())
    }

    /// Why the instance could not start, while it could not, or why its
    /// last run ended (an interface it was bound to was deleted or
    /// re-created): it then publishes [`State::Fault`] and starts again
    /// (see [`retry_delay`]). `None` before the first failure and once a
    /// start succeeded.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error()
    }

    /// Whether the task has ended. An instance that cannot start does not
    /// end: it retries until stopped (see [`InstanceHandle::last_error`]).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop cleanly (priority 0 when Master, VIPs removed) and wait.
    pub async fn stop(mut self) -> Result<(), ShellError> {
        self.cancel.cancel();
        match self.task.take() {
            Some(t) => match t.await {
                Ok(r) => r,
                Err(_) => Err(ShellError::Task(self.name.clone())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for InstanceHandle {
    fn drop(&mut self) {
        // Dropping the handle stops the instance cleanly in the background.
        self.cancel.cancel();
    }
}

/// What instances of one process share: the receive sockets (one per
/// interface and family, dispatched by VRID) and the `vrrp_script`
/// runners (one per script). Cheap to clone. Instances started with
/// different `SharedIo`s share nothing.
#[derive(Debug, Clone, Default)]
pub struct SharedIo {
    /// Receive sockets.
    pub receivers: Receivers,
    /// Script runners.
    pub scripts: ScriptRunners,
}

/// Start one instance in a new tokio task, with its own receive socket and
/// script runners (see [`spawn_instance_shared`] to share them).
/// Cancelling `cancel` (or a parent of it), calling
/// [`InstanceHandle::stop`] or dropping the handle shuts it down cleanly.
/// Must be called inside a tokio runtime; the instance works in the
/// network namespace of the runtime's threads.
pub fn spawn_instance(
    spec: InstanceSpec,
    hook: Option<StateHook>,
    cancel: &CancellationToken,
) -> InstanceHandle {
    spawn_instance_shared(spec, hook, cancel, &SharedIo::default())
}

/// [`spawn_instance`], sharing receive sockets and script runners with the
/// other instances started with the same `io`.
pub fn spawn_instance_shared(
    spec: InstanceSpec,
    hook: Option<StateHook>,
    cancel: &CancellationToken,
    io: &SharedIo,
) -> InstanceHandle {
    let cancel = cancel.child_token();
    let initial = StateInfo {
        state: State::Initialize,
        priority: spec.params.priority,
    };
    let (state_tx, state_rx) = watch::channel(initial);
    let (backends_tx, backends_rx) = watch::channel(true);
    let shared = Arc::new(Shared::default());
    let name = spec.name.clone();
    let task = tokio::spawn(run(
        spec,
        io.clone(),
        hook,
        state_tx,
        backends_rx,
        Arc::clone(&shared),
        cancel.clone(),
    ));
    InstanceHandle {
        name,
        state: state_rx,
        backends: backends_tx,
        shared,
        cancel,
        task: Some(task),
    }
}

/// Sleep until `deadline`, or forever when `None`.
async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// A VIP with its interface resolved.
#[derive(Debug, Clone)]
struct Vip {
    address: IpAddr,
    prefix_len: u8,
    ifindex: u32,
    dev: String,
    /// The address owner's own address, present before the instance
    /// started: never removed.
    keep: bool,
}

/// The running instance (inside its task).
struct Shell {
    name: String,
    params: InstanceParams,
    machine: Machine,
    socket: TxSocket,
    netlink: Netlink,
    destinations: Vec<IpAddr>,
    /// Unicast peers: adverts from anyone else are rejected. Empty in
    /// multicast mode.
    unicast_peers: Vec<IpAddr>,
    vips: Vec<Vip>,
    announcers: Arc<Vec<(Announcer, Vec<IpAddr>)>>,
    garp: GarpConfig,
    garp_task: Option<JoinHandle<()>>,
    notifier: Notifier,
    hook: Option<StateHook>,
    state_tx: watch::Sender<StateInfo>,
    shared: Arc<Shared>,
    tracking: Tracking,
    /// Consecutive activations the data plane failed (reset by one that
    /// works): drives the wait before the next try.
    dataplane_failures: u32,
    /// When the data plane fault (a failed activation) is lifted.
    dataplane_retry: Option<Instant>,
    /// A failed activation changed tracking: feed it to the machine once
    /// the current input's actions are done.
    tracking_changed: bool,
}

/// How a run of the instance ended (see [`run_once`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// Cancelled: the instance is stopping.
    Stopped,
    /// An interface the run was bound to went away: start again.
    Relink(Relink),
}

/// An interface a run is bound to (its own, or a VIP's `dev`) was deleted,
/// or now has another index (it was re-created under the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Relink {
    /// Interface name.
    interface: String,
    /// The index the run bound to.
    old_ifindex: u32,
    /// The index the name has now; `None` when it is gone.
    new_ifindex: Option<u32>,
}

impl Relink {
    /// The change from `old` to `now` (the index `interface` has now, if
    /// any); `None` when there is none.
    fn between(interface: &str, old: u32, now: Option<u32>) -> Option<Relink> {
        (now != Some(old)).then(|| Relink {
            interface: interface.to_owned(),
            old_ifindex: old,
            new_ifindex: now,
        })
    }

    /// What a link event means for a run bound to `bound` (name to index):
    /// a deletion of the bound index, or the name under another index.
    /// Anything else (other names, state changes of the bound index) is
    /// for tracking only.
    fn from_event(bound: &BTreeMap<String, u32>, ev: &LinkEvent) -> Option<Relink> {
        let &old = bound.get(&ev.name)?;
        // The deletion of another index of that name is not ours (the run
        // checks the index after subscribing, so this does not happen, but
        // it would not make the bound index stale).
        if ev.deleted && ev.index != old {
            return None;
        }
        Relink::between(&ev.name, old, (!ev.deleted).then_some(ev.index))
    }
}

impl std::fmt::Display for Relink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.new_ifindex {
            None => write!(
                f,
                "interface {} (ifindex {}) was deleted",
                self.interface, self.old_ifindex
            ),
            Some(new) => write!(
                f,
                "interface {} was re-created (ifindex {} -> {new})",
                self.interface, self.old_ifindex
            ),
        }
    }
}

/// The interface whose absence made a start fail, if that is why.
fn missing_interface(e: &ShellError) -> Option<&str> {
    match e {
        ShellError::Netlink {
            source: NetlinkError::NoSuchInterface(name),
            ..
        } => Some(name),
        _ => None,
    }
}

/// The wait before the next start attempt: `delay`, cut short when
/// `missing` (the interface whose absence made the start fail) appears.
/// Without a link monitor it is just `delay`. Cancel safe: dropping it
/// stops its link monitor.
async fn retry_wait(instance: &str, delay: Duration, missing: Option<&str>) {
    let Some(ifname) = missing else {
        tokio::time::sleep(delay).await;
        return;
    };
    let (mut links, _monitor) = match watch_links() {
        Ok((links, task)) => (links, AbortOnDropHandle::new(task)),
        Err(error) => {
            tracing::warn!(instance = %instance, %error, "no link monitor; waiting the whole retry delay");
            tokio::time::sleep(delay).await;
            return;
        }
    };
    // It may have appeared between the failed start and the subscription.
    let present = match Netlink::connect() {
        Ok(nl) => nl.link(ifname).await.is_ok(),
        Err(_) => false,
    };
    if !present {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = link_appears(&mut links, ifname) => {
                tracing::info!(instance = %instance, interface = %ifname, "missing interface appeared; starting now");
            }
        }
    }
}

/// Returns once `ifname` is created (or changes: any `RTM_NEWLINK`); never
/// if the monitor ends first.
async fn link_appears(links: &mut mpsc::Receiver<LinkEvent>, ifname: &str) {
    while let Some(ev) = links.recv().await {
        if ev.name == ifname && !ev.deleted {
            return;
        }
    }
    std::future::pending().await
}

/// Look the bound interfaces up again (once the link monitor runs, so no
/// later change is missed): a change since the start's lookup, or `None`.
/// Refreshes the tracked up/down status of those interfaces on the way.
async fn check_bound(
    netlink: &Netlink,
    bound: &BTreeMap<String, u32>,
    tracking: &mut Tracking,
) -> Result<Option<Relink>, NetlinkError> {
    for (ifname, &old) in bound {
        let now = match netlink.link(ifname).await {
            Ok(l) => {
                tracking.set(&TrackedKind::Interface(ifname.clone()), l.up);
                Some(l.index)
            }
            Err(NetlinkError::NoSuchInterface(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(r) = Relink::between(ifname, old, now) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// The instance task: [`run_once`], started again after a failed start
/// (missing interface, no permission for raw sockets, VRID already taken,
/// no primary address), with a growing wait ([`retry_delay`], cut short
/// when the missing interface appears, see [`retry_wait`]), and at once
/// after a run that ended because an interface it was bound to was deleted
/// or re-created (counted in [`ShellStats::restarts`]; the backoff starts
/// over). Each failure is logged at error level, counted, kept as the
/// handle's [`InstanceHandle::last_error`] and published as
/// [`State::Fault`] on the watch channel (the state hook is not called: a
/// failed start never became Master, and a run that ended for its
/// interface left as for a fault, hook included). Returns the last start
/// error when stopped while starts are failing.
async fn run(
    spec: InstanceSpec,
    io: SharedIo,
    hook: Option<StateHook>,
    state_tx: watch::Sender<StateInfo>,
    mut backends_rx: watch::Receiver<bool>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<(), ShellError> {
    let fault = StateInfo {
        state: State::Fault,
        priority: spec.params.priority,
    };
    let mut failures: u32 = 0;
    loop {
        let ended = run_once(
            &spec,
            &io,
            hook.clone(),
            state_tx.clone(),
            &mut backends_rx,
            &shared,
            &cancel,
        )
        .await;
        let error = match ended {
            Ok(Ended::Stopped) => return Ok(()),
            Ok(Ended::Relink(r)) => {
                // Not a failed start: the run was fine until its interface
                // changed, so the next start is at once, and a failing one
                // waits from the shortest delay (or for the interface).
                failures = 0;
                bump(&shared.stats.restarts);
                shared.set_last_error(Some(format!("instance {}: {r}; restarting", spec.name)));
                tracing::warn!(
                    instance = %spec.name, interface = %r.interface,
                    old_ifindex = r.old_ifindex, new_ifindex = r.new_ifindex,
                    restarts = shared.stats.restarts.load(Ordering::Relaxed),
                    "interface deleted or re-created; restarting the VRRP instance"
                );
                state_tx.send_replace(fault);
                if cancel.is_cancelled() {
                    return Ok(());
                }
                continue;
            }
            Err(error) => error,
        };
        failures = failures.saturating_add(1);
        let delay = retry_delay(failures);
        bump(&shared.stats.start_failures);
        shared.set_last_error(Some(error.to_string()));
        tracing::error!(
            instance = %spec.name, interface = %spec.interface, %error,
            failures, retry_in = ?delay, "VRRP instance could not start; will retry"
        );
        state_tx.send_replace(fault);
        tokio::select! {
            _ = cancel.cancelled() => return Err(error),
            _ = retry_wait(&spec.name, delay, missing_interface(&error)) => {}
        }
    }
}

/// One start of the instance and, once started, its loop until
/// cancellation or until an interface it bound to (its own, a VIP's `dev`)
/// is deleted or re-created ([`Ended::Relink`]). An error means the start
/// failed (nothing of it is left running); the loop itself does not fail.
async fn run_once(
    spec: &InstanceSpec,
    io: &SharedIo,
    hook: Option<StateHook>,
    state_tx: watch::Sender<StateInfo>,
    backends_rx: &mut watch::Receiver<bool>,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
) -> Result<Ended, ShellError> {
    let name = spec.name.clone();
    let nl_err = |source| ShellError::Netlink {
        instance: name.clone(),
        source,
    };
    let netlink = Netlink::connect().map_err(nl_err)?;
    let link = netlink.link(&spec.interface).await.map_err(nl_err)?;

    // Resolve the VIPs' interfaces and remove leftovers of a killed run.
    let mut links = BTreeMap::new();
    links.insert(spec.interface.clone(), link.clone());
    let mut vips = Vec::new();
    for v in &spec.vips {
        let dev = v.dev.clone().unwrap_or_else(|| spec.interface.clone());
        if !links.contains_key(&dev) {
            let l = netlink.link(&dev).await.map_err(nl_err)?;
            links.insert(dev.clone(), l);
        }
        let ifindex = links.get(&dev).map_or(link.index, |l| l.index);
        vips.push(Vip {
            address: v.address,
            prefix_len: v.prefix_len,
            ifindex,
            dev,
            keep: false,
        });
    }
    if spec.params.is_owner() {
        // The address owner's VIPs are its own real addresses (RFC 5798
        // §1, priority 255): the ones already on the interface stay, now
        // and when the instance stops or faults, unless lbctl added them
        // (a killed run's leftover, marked with its address protocol).
        for v in &mut vips {
            match netlink.addresses(v.ifindex).await {
                Ok(list) => {
                    v.keep = list
                        .iter()
                        .any(|a| a.address == v.address && !a.added_by_lbctl);
                }
                Err(error) => {
                    tracing::warn!(instance = %name, vip = %v.address, %error, "cannot list addresses; the owner's address will be removed on stop")
                }
            }
            if v.keep {
                tracing::info!(instance = %name, vip = %v.address, dev = %v.dev, "address owner: keeping an address the interface already has");
            }
        }
    } else {
        for v in &vips {
            if let Err(error) = netlink.del_address(v.ifindex, v.address).await {
                tracing::warn!(instance = %name, vip = %v.address, %error, "cannot remove stale VIP");
            }
        }
    }

    let primary = match spec.source {
        Some(a) => a,
        None => {
            let vip_addrs: Vec<IpAddr> = vips.iter().map(|v| v.address).collect();
            let found = tokio::select! {
                _ = cancel.cancelled() => return Ok(Ended::Stopped),
                r = wait_primary(&netlink, link.index, spec.params.family, &vip_addrs) => r.map_err(nl_err)?,
            };
            found.ok_or_else(|| ShellError::NoPrimaryAddress {
                instance: name.clone(),
                interface: spec.interface.clone(),
                family: spec.params.family,
                waited: PRIMARY_WAIT,
            })?
        }
    };
    let params = InstanceParams {
        primary_address: primary,
        ..spec.params.clone()
    };
    params.validate().map_err(|source| ShellError::Params {
        instance: name.clone(),
        source,
    })?;
    let sock_err = |source| ShellError::Socket {
        instance: name.clone(),
        source,
    };
    let socket = TxSocket::open(&spec.interface, link.index, primary).map_err(sock_err)?;
    let mut rx_sub: Subscription = io
        .receivers
        .subscribe(
            &spec.interface,
            link.index,
            params.family,
            params.vrid,
            spec.unicast_peers.is_empty(),
        )
        .map_err(sock_err)?;
    shared.set_rx_stats(rx_sub.stats());
    let destinations = if spec.unicast_peers.is_empty() {
        vec![params.multicast_group()]
    } else {
        spec.unicast_peers.clone()
    };

    // One announcer per interface carrying VIPs.
    let mut announcers = Vec::new();
    for (dev, l) in &links {
        let addrs: Vec<IpAddr> = vips
            .iter()
            .filter(|v| &v.dev == dev)
            .map(|v| v.address)
            .collect();
        if addrs.is_empty() {
            continue;
        }
        match l.mac.map(|mac| Announcer::new(l.index, dev, mac, &addrs)) {
            Some(Ok(a)) => announcers.push((a, addrs)),
            Some(Err(error)) => {
                tracing::warn!(instance = %name, %dev, %error, "cannot open announcement sockets; no gratuitous ARP/NA")
            }
            None => {
                tracing::info!(instance = %name, %dev, "no Ethernet address; no gratuitous ARP/NA")
            }
        }
    }

    // Tracking: the own interface (weight 0), configured interfaces,
    // scripts, backends.
    let mut items = vec![Tracked {
        kind: TrackedKind::Interface(spec.interface.clone()),
        weight: 0,
        up: link.up,
    }];
    for (ifname, weight) in &spec.track_interfaces {
        let up = match netlink.link(ifname).await {
            Ok(l) => l.up,
            Err(NetlinkError::NoSuchInterface(_)) => false,
            Err(e) => return Err(nl_err(e)),
        };
        items.push(Tracked {
            kind: TrackedKind::Interface(ifname.clone()),
            weight: *weight,
            up,
        });
    }
    // One runner per script, shared with the other instances tracking it;
    // keepalived assumes a script is up until it fails (no `init_fail`),
    // and a runner already running gives its present status.
    let script_subs: Vec<ScriptSubscription> = spec
        .track_scripts
        .iter()
        .filter_map(|s| io.scripts.subscribe(s))
        .collect();
    for s in &spec.track_scripts {
        let up = script_subs
            .iter()
            .find(|sub| sub.name() == s.name)
            .is_none_or(|sub| sub.watch().borrow().up);
        items.push(Tracked {
            kind: TrackedKind::Script(s.name.clone()),
            weight: s.weight,
            up,
        });
    }
    if let Some(weight) = spec.track_backends {
        items.push(Tracked {
            kind: TrackedKind::Backends,
            weight,
            up: *backends_rx.borrow_and_update(),
        });
    }
    // The data plane (weight 0): FAULT while it could not take over the
    // VIPs. Only with a hook: without one nothing reports it.
    if hook.is_some() {
        items.push(Tracked {
            kind: TrackedKind::Dataplane,
            weight: 0,
            up: true,
        });
    }
    let mut tracking = Tracking::new(spec.params.priority, items);

    let (mut link_rx, link_task) = watch_links().map_err(nl_err)?;
    // What the run is bound to. The lookup above may be a while ago (the
    // primary address can take up to PRIMARY_WAIT): check it again now
    // that every later change arrives as an event.
    let bound: BTreeMap<String, u32> = links
        .iter()
        .map(|(ifname, l)| (ifname.clone(), l.index))
        .collect();
    match check_bound(&netlink, &bound, &mut tracking).await {
        Ok(None) => {}
        Ok(Some(r)) => {
            link_task.abort();
            return Ok(Ended::Relink(r));
        }
        Err(e) => {
            link_task.abort();
            return Err(nl_err(e));
        }
    }
    let (script_tx, mut script_rx) = mpsc::channel::<HealthEvent<String>>(16);
    let scripts_cancel = cancel.child_token();
    let mut script_handles = Vec::new();
    for sub in &script_subs {
        script_handles.push(tokio::spawn(forward_script(
            sub.name().to_owned(),
            sub.watch(),
            script_tx.clone(),
            scripts_cancel.clone(),
        )));
    }
    drop(script_tx);

    let mut machine = Machine::new(&params);
    machine.set_start_as_master(spec.start_as_master);
    let notifier = Notifier::new(&name, spec.notify.clone(), Arc::new(NotifyStats::default()));
    let mut shell = Shell {
        name: name.clone(),
        params,
        machine,
        socket,
        netlink,
        destinations,
        unicast_peers: spec.unicast_peers.clone(),
        vips,
        announcers: Arc::new(announcers),
        garp: spec.garp,
        garp_task: None,
        notifier,
        hook,
        state_tx,
        shared: Arc::clone(shared),
        tracking,
        dataplane_failures: 0,
        dataplane_retry: None,
        tracking_changed: false,
    };
    tracing::info!(
        instance = %name, interface = %spec.interface, vrid = shell.params.vrid,
        priority = shell.params.priority, version = ?shell.params.version,
        primary = %primary, destinations = ?shell.destinations, "VRRP instance starting"
    );
    shared.set_last_error(None);

    shell.apply_tracking(Instant::now()).await;
    shell.input(Instant::now(), Input::Startup).await;

    let mut rx_open = true;
    let mut scripts_open = true;
    let mut links_open = true;
    let mut backends_open = true;
    let mut ended = Ended::Stopped;
    loop {
        let adver = shell.machine.deadline(Timer::Advertisement);
        let down = shell.machine.deadline(Timer::MasterDown);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = sleep_opt(adver) => {
                shell.input(Instant::now(), Input::TimerExpired(Timer::Advertisement)).await;
            }
            _ = sleep_opt(down) => {
                shell.input(Instant::now(), Input::TimerExpired(Timer::MasterDown)).await;
            }
            _ = sleep_opt(shell.dataplane_retry) => {
                shell.dataplane_retry = None;
                if shell.tracking.set(&TrackedKind::Dataplane, true) {
                    tracing::info!(instance = %shell.name, "data plane fault lifted; trying again");
                    shell.apply_tracking(Instant::now()).await;
                }
            }
            pkt = rx_sub.recv(), if rx_open => match pkt {
                Some(pkt) => shell.on_packet(pkt).await,
                None => {
                    tracing::error!(instance = %shell.name, "receive socket closed; no advertisements will be heard");
                    rx_open = false;
                }
            },
            ev = link_rx.recv(), if links_open => match ev {
                Some(ev) => {
                    let relink = Relink::from_event(&bound, &ev);
                    if let Some(r) = &relink
                        && r.new_ifindex.is_none()
                    {
                        // Its addresses went with it: none to remove there.
                        shell.vips.retain(|v| v.ifindex != r.old_ifindex);
                    }
                    // A re-created interface is not this run's: down for it.
                    let up = ev.up && relink.is_none();
                    if shell.tracking.set(&TrackedKind::Interface(ev.name.clone()), up) {
                        tracing::info!(instance = %shell.name, interface = %ev.name, up, "tracked interface changed");
                        shell.apply_tracking(Instant::now()).await;
                    }
                    if let Some(r) = relink {
                        ended = Ended::Relink(r);
                        break;
                    }
                }
                None => {
                    tracing::warn!(instance = %shell.name, "link monitor ended; interface tracking stopped");
                    links_open = false;
                }
            },
            ev = script_rx.recv(), if scripts_open => match ev {
                Some(ev) => {
                    if shell.tracking.set(&TrackedKind::Script(ev.target.clone()), ev.up) {
                        tracing::info!(instance = %shell.name, script = %ev.target, up = ev.up, reason = %ev.reason, "tracked script changed");
                        shell.apply_tracking(Instant::now()).await;
                    }
                }
                None => scripts_open = false,
            },
            r = backends_rx.changed(), if backends_open => match r {
                Ok(()) => {
                    let healthy = *backends_rx.borrow_and_update();
                    if shell.tracking.set(&TrackedKind::Backends, healthy) {
                        tracing::info!(instance = %shell.name, healthy, "backend health changed");
                        shell.apply_tracking(Instant::now()).await;
                    }
                }
                Err(_) => backends_open = false,
            },
        }
    }

    match &ended {
        Ended::Stopped => {
            tracing::info!(instance = %shell.name, "VRRP instance stopping");
            shell.input(Instant::now(), Input::Shutdown).await;
        }
        Ended::Relink(r) => {
            tracing::info!(
                instance = %shell.name, interface = %r.interface,
                old_ifindex = r.old_ifindex, new_ifindex = r.new_ifindex,
                "VRRP instance leaving its run: an interface it is bound to changed"
            );
            // Leave as for a fault (priority 0 when Master, VIPs removed,
            // hook and notify FAULT): FAULT is what the instance shows
            // until it runs again.
            shell.input(Instant::now(), Input::Fault(true)).await;
        }
    }
    // Whatever the state was, leave no VIP behind.
    shell.remove_vips().await;
    scripts_cancel.cancel();
    for h in script_handles {
        let _ = h.await;
    }
    // The runners stop with their last subscriber.
    drop(script_subs);
    drop(rx_sub);
    link_task.abort();
    if let Some(t) = shell.garp_task.take() {
        t.abort();
    }
    Ok(ended)
}

/// Feed a shared script's status changes into this instance's loop.
async fn forward_script(
    name: String,
    mut status: watch::Receiver<super::scripts::ScriptStatus>,
    tx: mpsc::Sender<HealthEvent<String>>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = status.changed() => {
                if r.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                let ev = HealthEvent { target: name.clone(), up: s.up, reason: s.reason };
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Find the primary address: the first IPv4 address of the interface that
/// is not a VIP, or its first usable IPv6 link-local address. Waits up to
/// [`PRIMARY_WAIT`] for one to appear (or finish DAD).
async fn wait_primary(
    nl: &Netlink,
    ifindex: u32,
    family: Family,
    vips: &[IpAddr],
) -> Result<Option<IpAddr>, NetlinkError> {
    let start = Instant::now();
    loop {
        let found = nl.addresses(ifindex).await?.into_iter().find(|a| {
            Family::of(&a.address) == family
                && !a.tentative
                && !vips.contains(&a.address)
                && (family == Family::V4 || a.link_local)
        });
        if let Some(a) = found {
            return Ok(Some(a.address));
        }
        if start.elapsed() >= PRIMARY_WAIT {
            return Ok(None);
        }
        tokio::time::sleep(PRIMARY_POLL).await;
    }
}

fn state_word(s: State) -> &'static str {
    match s {
        State::Master => "MASTER",
        State::Backup => "BACKUP",
        State::Fault => "FAULT",
        State::Initialize => "STOP",
    }
}

impl Shell {
    /// Feed one input and carry out the actions; then, if they changed
    /// tracking (a failed activation), feed the new fault status too.
    async fn input(&mut self, now: Instant, input: Input) {
        let mut next = Some(input);
        // A failed activation sets a fault, and a fault never activates:
        // at most two rounds.
        while let Some(input) = next.take() {
            let actions = self.machine.handle(now, input);
            for a in actions {
                self.shared.counters().record_action(&a);
                self.execute(a).await;
            }
            if std::mem::take(&mut self.tracking_changed) {
                next = Some(Input::Fault(self.tracking.effect().fault));
            }
        }
    }

    async fn execute(&mut self, a: Action) {
        match a {
            Action::SendAdvertisement { priority } => self.send_advert(priority),
            // Deadlines are read back from the machine by the loop.
            Action::SetTimer { .. } | Action::CancelTimer { .. } => {}
            Action::Transition { from, to } => self.transition(from, to).await,
            Action::Announce => {
                // Only a Master holds the VIPs; the machine only asks then.
                if self.machine.state() == State::Master {
                    tracing::info!(instance = %self.name, "lower-priority advertisement answered; announcing the VIPs again");
                    self.start_announcements();
                }
            }
        }
    }

    fn send_advert(&self, priority: u8) {
        for dst in &self.destinations {
            let msg = match self.params.encode_advertisement(priority, *dst) {
                Ok(m) => m,
                Err(error) => {
                    bump(&self.shared.stats.send_errors);
                    tracing::error!(instance = %self.name, %error, "cannot encode advertisement");
                    continue;
                }
            };
            match self.socket.send(&msg, *dst) {
                Ok(()) => self.shared.counters().record_sent(priority),
                Err(error) => {
                    bump(&self.shared.stats.send_errors);
                    tracing::warn!(instance = %self.name, %dst, %error, "cannot send advertisement");
                }
            }
        }
    }

    /// Calls the hook (waiting for its acknowledgement) and publishes the
    /// state on the watch channel.
    ///
    /// # Errors
    /// The hook's acknowledgement says the data plane could not apply the
    /// change (the state is published all the same).
    async fn publish(&self, to: State) -> Result<(), String> {
        let applied = self.ask_hook(to).await;
        self.publish_state(to);
        applied
    }

    /// Publishes the state on the watch channel (`lbctl status`).
    fn publish_state(&self, to: State) {
        self.state_tx.send_replace(StateInfo {
            state: to,
            priority: self.machine.priority(),
        });
    }

    /// Calls the hook and waits for its acknowledgement.
    ///
    /// # Errors
    /// The acknowledgement says the data plane could not apply the change.
    async fn ask_hook(&self, to: State) -> Result<(), String> {
        let mut applied = Ok(());
        if let Some(ack) = self.hook.as_ref().and_then(|h| h(&self.name, to)) {
            let started = Instant::now();
            match tokio::time::timeout(HOOK_ACK_TIMEOUT, ack).await {
                Ok(Ok(Ok(()))) => {
                    tracing::debug!(instance = %self.name, ?to, took = ?started.elapsed(), "state hook acknowledged");
                }
                Ok(Ok(Err(why))) => applied = Err(why),
                // A dropped sender means nobody will apply it (the daemon
                // is stopping): nothing to wait for.
                Ok(Err(_)) => {
                    tracing::debug!(instance = %self.name, ?to, "state hook dropped its acknowledgement");
                }
                Err(_) => {
                    tracing::warn!(instance = %self.name, ?to, timeout = ?HOOK_ACK_TIMEOUT, "state hook not acknowledged in time; going on");
                }
            }
        }
        applied
    }

    /// The data plane could not take over this instance's VIPs: FAULT (the
    /// machine gets it after the current input), so the peers take over,
    /// until [`retry_delay`] of the consecutive failures has passed.
    fn activation_failed(&mut self, why: &str) {
        bump(&self.shared.stats.dataplane_failures);
        self.dataplane_failures = self.dataplane_failures.saturating_add(1);
        let delay = retry_delay(self.dataplane_failures);
        self.shared.set_last_error(Some(format!(
            "the data plane could not take over the VIPs: {why}"
        )));
        tracing::error!(
            instance = %self.name, error = %why, failures = self.dataplane_failures,
            retry_in = ?delay,
            "the data plane could not take over the VIPs; going to FAULT without adding them"
        );
        self.tracking.set(&TrackedKind::Dataplane, false);
        self.dataplane_retry = Instant::now().checked_add(delay);
        self.tracking_changed = true;
    }

    async fn transition(&mut self, from: State, to: State) {
        tracing::info!(instance = %self.name, ?from, ?to, priority = self.machine.priority(), "VRRP transition");
        if to == State::Master {
            // Published only once the data plane took over: `lbctl status`
            // never shows, even for a moment, a MASTER that does not forward.
            if let Err(why) = self.ask_hook(to).await {
                // No VIPs, no announcements, no MASTER notify: the
                // instance leaves Master at once (to FAULT, published).
                self.activation_failed(&why);
                return;
            }
            self.publish_state(to);
            if self.dataplane_failures > 0 {
                tracing::info!(instance = %self.name, failures = self.dataplane_failures, "the data plane took over the VIPs again");
                self.dataplane_failures = 0;
                self.shared.set_last_error(None);
            }
            for v in self.vips.clone() {
                if let Err(error) = self
                    .netlink
                    .add_address(v.ifindex, v.address, v.prefix_len)
                    .await
                {
                    bump(&self.shared.stats.address_errors);
                    tracing::error!(instance = %self.name, vip = %v.address, dev = %v.dev, %error, "cannot add VIP");
                }
            }
            self.start_announcements();
        } else if from == State::Master {
            if let Some(t) = self.garp_task.take() {
                t.abort();
            }
            self.remove_vips().await;
            self.leave(to).await;
        } else {
            self.leave(to).await;
        }
        self.notifier.notify(state_word(to));
    }

    /// Publishes a state other than Master; the data plane failing to
    /// follow is only logged (it would forward a VIP this node no longer
    /// announces, which is harmless, and the daemon retries the apply).
    async fn leave(&self, to: State) {
        if let Err(why) = self.publish(to).await {
            tracing::warn!(instance = %self.name, ?to, error = %why, "the data plane did not follow the state change");
        }
    }

    async fn remove_vips(&self) {
        for v in self.vips.iter().filter(|v| !v.keep) {
            if let Err(error) = self.netlink.del_address(v.ifindex, v.address).await {
                bump(&self.shared.stats.address_errors);
                tracing::error!(instance = %self.name, vip = %v.address, dev = %v.dev, %error, "cannot remove VIP");
            }
        }
    }

    fn start_announcements(&mut self) {
        if let Some(t) = self.garp_task.take() {
            t.abort();
        }
        if self.announcers.is_empty() || self.garp.repeat == 0 {
            return;
        }
        let announcers = Arc::clone(&self.announcers);
        let garp = self.garp;
        let shared = Arc::clone(&self.shared);
        let name = self.name.clone();
        self.garp_task = Some(tokio::spawn(async move {
            announce_schedule(&announcers, garp, &shared, &name).await;
        }));
    }

    async fn on_packet(&mut self, pkt: RxPacket) {
        let src = pkt.meta.src;
        if src == self.params.primary_address {
            bump(&self.shared.stats.own_packets);
            return;
        }
        if !source_allowed(&self.unicast_peers, &src) {
            self.shared.counters().rx_not_unicast_peer += 1;
            tracing::debug!(instance = %self.name, %src, "advertisement from a source that is not a unicast peer rejected");
            return;
        }
        match self.accept(&pkt.payload, &pkt.meta) {
            Ok(adv) => {
                self.input(Instant::now(), Input::Advertisement(adv)).await;
            }
            Err(error) => {
                self.shared.counters().record_rx_error(&error);
                tracing::debug!(instance = %self.name, %src, %error, "advertisement rejected");
            }
        }
    }

    fn accept(&self, payload: &[u8], meta: &RxMeta) -> Result<ReceivedAdvert, codec::RxError> {
        let decoded = codec::decode(payload, meta, &self.params.rx_options())?;
        codec::check(&decoded.advert, &self.params)?;
        self.shared
            .counters()
            .record_received(&decoded, self.params.checksum_mode);
        Ok(ReceivedAdvert::from_advert(&decoded.advert, meta.src))
    }

    async fn apply_tracking(&mut self, now: Instant) {
        let effect = self.tracking.effect();
        if effect.priority != self.machine.priority() {
            tracing::info!(instance = %self.name, priority = effect.priority, "effective priority changed");
            self.input(now, Input::PriorityChanged(effect.priority))
                .await;
            let state = self.machine.state();
            self.state_tx.send_replace(StateInfo {
                state,
                priority: self.machine.priority(),
            });
        }
        self.input(now, Input::Fault(effect.fault)).await;
    }
}

/// Bursts of announcements: one now, one after `master_delay`, then one
/// every `refresh`. Runs until aborted (when leaving Master).
async fn announce_schedule(
    announcers: &[(Announcer, Vec<IpAddr>)],
    garp: GarpConfig,
    shared: &Shared,
    name: &str,
) {
    burst(announcers, garp, shared, name).await;
    if !garp.master_delay.is_zero() {
        tokio::time::sleep(garp.master_delay).await;
        burst(announcers, garp, shared, name).await;
    }
    if let Some(every) = garp.refresh {
        loop {
            tokio::time::sleep(every).await;
            burst(announcers, garp, shared, name).await;
        }
    }
}

async fn burst(
    announcers: &[(Announcer, Vec<IpAddr>)],
    garp: GarpConfig,
    shared: &Shared,
    name: &str,
) {
    for i in 0..garp.repeat {
        for (a, addrs) in announcers {
            for addr in addrs {
                match a.announce(*addr) {
                    Ok(()) => bump(&shared.stats.garp_sent),
                    Err(error) => {
                        bump(&shared.stats.garp_errors);
                        tracing::debug!(instance = %name, vip = %addr, %error, "announcement failed");
                    }
                }
            }
        }
        if i + 1 < garp.repeat && !garp.interval.is_zero() {
            tokio::time::sleep(garp.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Start-up retries: 1 s, doubling, capped at 30 s; never overflows.
    #[test]
    fn retry_backoff_schedule() {
        let s: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(0), Duration::ZERO);
        for n in [31, 32, 33, 64, u32::MAX] {
            assert_eq!(retry_delay(n), RETRY_MAX, "{n} failures");
        }
        // Never shorter than the previous wait.
        for n in 1..100 {
            assert!(retry_delay(n + 1) >= retry_delay(n));
        }
    }

    fn ev(name: &str, index: u32, up: bool, deleted: bool) -> LinkEvent {
        LinkEvent {
            name: name.into(),
            index,
            up,
            deleted,
        }
    }

    fn relink(interface: &str, old: u32, new: Option<u32>) -> Option<Relink> {
        Some(Relink {
            interface: interface.into(),
            old_ifindex: old,
            new_ifindex: new,
        })
    }

    // A run bound to re0 (index 5) and a VIP dev vlan100 (index 8) ends
    // when either is deleted or shows up under a new index; state changes
    // and other interfaces are for tracking only.
    #[test]
    fn relink_only_when_a_bound_index_goes_away() {
        let bound = BTreeMap::from([("re0".to_owned(), 5), ("vlan100".to_owned(), 8)]);
        let from = |e: LinkEvent| Relink::from_event(&bound, &e);
        assert_eq!(from(ev("re0", 5, false, false)), None, "carrier loss");
        assert_eq!(from(ev("re0", 5, true, false)), None, "back up");
        assert_eq!(from(ev("trk0", 9, false, true)), None, "not bound");
        assert_eq!(from(ev("re0", 5, false, true)), relink("re0", 5, None));
        assert_eq!(
            from(ev("vlan100", 8, false, true)),
            relink("vlan100", 8, None)
        );
        // Re-created (its deletion missed): a new index under the name.
        assert_eq!(from(ev("re0", 12, true, false)), relink("re0", 5, Some(12)));
        // The deletion of another index of that name is not ours.
        assert_eq!(from(ev("re0", 3, false, true)), None);
    }

    // The check after subscribing to link events: same index, gone, or
    // another index.
    #[test]
    fn relink_between_lookups() {
        assert_eq!(Relink::between("re0", 5, Some(5)), None);
        assert_eq!(Relink::between("re0", 5, None), relink("re0", 5, None));
        assert_eq!(
            Relink::between("re0", 5, Some(6)),
            relink("re0", 5, Some(6))
        );
        let r = Relink::between("re0", 5, None).map(|r| r.to_string());
        assert_eq!(r.as_deref(), Some("interface re0 (ifindex 5) was deleted"));
        let r = Relink::between("re0", 5, Some(6)).map(|r| r.to_string());
        assert_eq!(
            r.as_deref(),
            Some("interface re0 was re-created (ifindex 5 -> 6)")
        );
    }

    // Only a missing interface makes the retry wait watch for it.
    #[test]
    fn missing_interface_from_start_errors() {
        let e = ShellError::Netlink {
            instance: "VI".into(),
            source: NetlinkError::NoSuchInterface("re0".into()),
        };
        assert_eq!(missing_interface(&e), Some("re0"));
        let e = ShellError::Socket {
            instance: "VI".into(),
            source: SocketError::VridTaken {
                interface: "re0".into(),
                vrid: 1,
            },
        };
        assert_eq!(missing_interface(&e), None);
        assert_eq!(missing_interface(&ShellError::Task("VI".into())), None);
    }

    // The retry wait ends early when the missing interface appears, and
    // only then: other names and deletions do not end it.
    #[tokio::test]
    async fn link_appears_waits_for_the_name() {
        let (tx, mut rx) = mpsc::channel(8);
        for e in [
            ev("other0", 3, true, false),
            ev("re0", 4, false, true),
            ev("re0", 7, false, false),
        ] {
            tx.send(e).await.expect("send");
        }
        tokio::time::timeout(Duration::from_secs(1), link_appears(&mut rx, "re0"))
            .await
            .expect("re0 appeared");
        assert!(rx.try_recv().is_err(), "stopped at re0's creation");
        tx.send(ev("other0", 3, true, false)).await.expect("send");
        drop(tx);
        // Monitor gone, name never seen: only the retry timer ends the wait.
        let r = tokio::time::timeout(Duration::from_millis(50), link_appears(&mut rx, "re0")).await;
        assert!(r.is_err(), "returned without re0");
    }
}
