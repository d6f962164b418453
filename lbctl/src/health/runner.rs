//! Runs one backend's check periodically in its own tokio task and reports
//! Up/Down transitions on a channel.
//!
//! Scheduling: the first check runs at a random offset within one interval
//! (so checks of many backends started together spread out), later checks
//! start one interval ±10% (random) after the previous check *finished*, so
//! checks of one backend never overlap. Each check is bounded by the spec's
//! timeout. Detection time of a dead backend is therefore at most about
//! `fall × (1.1 × interval + timeout)` (plus up to one interval for the
//! check that was running when it died).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::check::{CheckKind, run_check};
use super::state::{HealthState, Status, Transition};

/// Relative jitter of the interval between checks (±10%).
pub const JITTER: f64 = 0.1;
/// Shortest interval between checks; smaller ones are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Everything needed to check one backend. Plain data: the config layer
/// maps its own types onto this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// What to check.
    pub kind: CheckKind,
    /// Time between checks (jittered by ±[`JITTER`]).
    pub interval: Duration,
    /// Hard limit of one check.
    pub timeout: Duration,
    /// Consecutive successes for a Down backend to come Up.
    pub rise: u32,
    /// Consecutive failures for an Up backend to go Down.
    pub fall: u32,
    /// Status before the first check (see [`super::state`] for the trade-off).
    pub initial: Status,
}

/// A health transition of one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent<T> {
    /// The caller's id of the checked backend.
    pub target: T,
    /// New status: `true` for Up.
    pub up: bool,
    /// Why, for logs and status output (the last check error when going Down).
    pub reason: String,
}

/// Counters of one running check, readable while it runs.
#[derive(Debug, Default)]
struct Shared {
    checks: AtomicU64,
    failures: AtomicU64,
    up: AtomicBool,
}

/// A snapshot of a check's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CheckStats {
    /// Checks completed.
    pub checks: u64,
    /// Checks that failed.
    pub failures: u64,
    /// Current status.
    pub up: bool,
}

/// Handle of a running check task. Dropping it stops the check.
#[derive(Debug)]
pub struct CheckHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl CheckHandle {
    /// Current counters and status.
    pub fn stats(&self) -> CheckStats {
        CheckStats {
            checks: self.shared.checks.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            up: self.shared.up.load(Ordering::Relaxed),
        }
    }

    /// Asks the task to stop (an in-flight check is abandoned; a script's
    /// process is killed on drop).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Stops the task and waits until it has ended.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Err(error) = (&mut self.task).await
            && error.is_panic()
        {
            tracing::error!(%error, "health check task panicked");
        }
    }
}

impl Drop for CheckHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts checking one backend in a new tokio task.
///
/// Transitions are sent on `events` as [`HealthEvent`]s carrying `target`;
/// none is sent for `spec.initial`. The task ends when `cancel` (or a parent
/// of it) is cancelled, when the returned handle is dropped or stopped, or
/// when the receiver of `events` is gone.
pub fn spawn_check<T>(
    target: T,
    spec: CheckSpec,
    events: mpsc::Sender<HealthEvent<T>>,
    cancel: &CancellationToken,
) -> CheckHandle
where
    T: Clone + Debug + Send + Sync + 'static,
{
    let cancel = cancel.child_token();
    let shared = Arc::new(Shared {
        up: AtomicBool::new(spec.initial.is_up()),
        ..Shared::default()
    });
    let task = tokio::spawn(run(
        target,
        spec,
        events,
        cancel.clone(),
        Arc::clone(&shared),
    ));
    CheckHandle {
        cancel,
        task,
        shared,
    }
}

/// `interval` scaled by a random factor in `[1 - JITTER, 1 + JITTER)`.
fn jittered(interval: Duration) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * fastrand::f64();
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(interval)
}

/// A random offset in `[0, interval)` for the first check.
fn first_offset(interval: Duration) -> Duration {
    Duration::try_from_secs_f64(interval.as_secs_f64() * fastrand::f64()).unwrap_or_default()
}

async fn run<T>(
    target: T,
    spec: CheckSpec,
    events: mpsc::Sender<HealthEvent<T>>,
    cancel: CancellationToken,
    shared: Arc<Shared>,
) where
    T: Clone + Debug + Send + Sync + 'static,
{
    let interval = spec.interval.max(MIN_INTERVAL);
    let what = spec.kind.describe();
    let mut state = HealthState::new(spec.rise, spec.fall, spec.initial);
    tracing::debug!(backend = ?target, check = %what, ?interval, timeout = ?spec.timeout, "health check started");

    let mut delay = first_offset(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = run_check(&spec.kind, spec.timeout) => r,
        };
        shared.checks.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = &result {
            shared.failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(backend = ?target, check = %what, %error, "health check failed");
        }
        if let Some(transition) = state.record(result.is_ok()) {
            let up = transition == Transition::Up;
            let reason = match &result {
                Ok(()) => format!("{what}: {} consecutive checks passed", state.rise()),
                Err(e) => format!("{what}: {e} ({} consecutive failures)", state.fall()),
            };
            shared.up.store(up, Ordering::Relaxed);
            if up {
                tracing::info!(backend = ?target, up, %reason, "backend is up");
            } else {
                tracing::warn!(backend = ?target, up, %reason, "backend is down");
            }
            let event = HealthEvent {
                target: target.clone(),
                up,
                reason,
            };
            let sent = tokio::select! {
                _ = cancel.cancelled() => break,
                r = events.send(event) => r,
            };
            if sent.is_err() {
                tracing::debug!(backend = ?target, "health event receiver gone; stopping check");
                break;
            }
        }
        delay = jittered(interval);
    }
    tracing::debug!(backend = ?target, check = %what, "health check stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::net::TcpListener;

    const INTERVAL: Duration = Duration::from_millis(50);
    const TIMEOUT: Duration = Duration::from_millis(100);
    /// Slack for scheduling on a loaded 2-core machine.
    const SLACK: Duration = Duration::from_millis(750);

    fn spec(addr: SocketAddr, rise: u32, fall: u32, initial: Status) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Tcp(addr),
            interval: INTERVAL,
            timeout: TIMEOUT,
            rise,
            fall,
            initial,
        }
    }

    /// Worst case for `n` consecutive results to be gathered.
    fn within(n: u32) -> Duration {
        (INTERVAL.mul_f64(1.0 + JITTER) + TIMEOUT) * (n + 1) + SLACK
    }

    /// Listens on `addr` (port 0 for any) and accepts and drops connections.
    async fn serve(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        (addr, task)
    }

    async fn next(
        rx: &mut mpsc::Receiver<HealthEvent<&'static str>>,
        limit: Duration,
    ) -> (HealthEvent<&'static str>, Duration) {
        let start = Instant::now();
        let ev = tokio::time::timeout(limit, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within {limit:?}"))
            .unwrap();
        (ev, start.elapsed())
    }

    #[tokio::test]
    async fn backend_goes_down_and_comes_back() {
        let (addr, server) = serve(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let (tx, mut rx) = mpsc::channel(8);
        let root = CancellationToken::new();
        let (rise, fall) = (2, 3);
        let handle = spawn_check("web-1", spec(addr, rise, fall, Status::Down), tx, &root);

        let (ev, took) = next(&mut rx, within(rise)).await;
        assert_eq!((ev.target, ev.up), ("web-1", true), "{ev:?}");
        println!("up after {took:?}: {}", ev.reason);
        assert!(handle.stats().up);

        server.abort();
        let _ = server.await; // listener closed: connects are refused
        let (ev, took) = next(&mut rx, within(fall)).await;
        assert!(!ev.up, "{ev:?}");
        assert!(ev.reason.contains("refused"), "{}", ev.reason);
        println!("down after {took:?}: {}", ev.reason);
        let stats = handle.stats();
        assert!(!stats.up);
        assert!(stats.failures >= u64::from(fall), "{stats:?}");
        assert!(stats.checks >= u64::from(rise + fall), "{stats:?}");

        let (_again, server) = serve(addr).await;
        let (ev, took) = next(&mut rx, within(rise)).await;
        assert!(ev.up, "{ev:?}");
        println!("up again after {took:?}");

        handle.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn initial_up_sends_nothing_while_healthy() {
        let (addr, server) = serve(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let (tx, mut rx) = mpsc::channel(8);
        let root = CancellationToken::new();
        let handle = spawn_check("web-2", spec(addr, 1, 1, Status::Up), tx, &root);
        tokio::time::sleep(INTERVAL * 6).await;
        assert!(rx.try_recv().is_err());
        let stats = handle.stats();
        assert!(
            stats.up && stats.checks >= 2 && stats.failures == 0,
            "{stats:?}"
        );

        // Cancelling the parent token ends the task, which closes the channel.
        root.cancel();
        let closed = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(closed, Ok(None)), "{closed:?}");
        drop(handle);
        server.abort();
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_checks() {
        let (addr, server) = serve(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let (tx, mut rx) = mpsc::channel(8);
        let handle = spawn_check(
            "x",
            spec(addr, 1, 1, Status::Down),
            tx,
            &CancellationToken::new(),
        );
        let (ev, _) = next(&mut rx, within(1)).await;
        assert!(ev.up);
        drop(handle);
        let closed = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(closed, Ok(None)), "{closed:?}");
        server.abort();
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let i = Duration::from_millis(1000);
        for _ in 0..1000 {
            let j = jittered(i);
            assert!(
                j >= Duration::from_millis(900) && j <= Duration::from_millis(1100),
                "{j:?}"
            );
            assert!(first_offset(i) < i);
        }
        assert_eq!(first_offset(Duration::ZERO), Duration::ZERO);
        let _ = jittered(Duration::MAX); // must not panic
    }
}
