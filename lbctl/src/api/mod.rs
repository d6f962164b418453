//! The local control socket: `{state_dir}/lbctl.sock`, mode 0600.
//!
//! Protocol: line-delimited JSON. Each request is one line
//! (`{"cmd":"status"}`, `{"cmd":"stats"}`, `{"cmd":"reload"}`), answered by
//! one line holding a [`Response`]. A connection may carry several
//! requests. The server hands requests to the daemon's owner task over a
//! channel ([`ApiCall`]), which answers on a oneshot channel.

pub mod metrics;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::stat::{Mode, umask};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// File name of the socket inside `state_dir`.
pub const SOCKET_NAME: &str = "lbctl.sock";
/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// How long the client waits for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the control socket for `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Socket I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("{0}: another lbctl daemon is running (its control socket answers)")]
    InUse(PathBuf),
    /// The answer was not valid JSON.
    #[error("bad answer from the daemon: {0}")]
    Decode(#[from] serde_json::Error),
    /// The daemon closed the connection without answering.
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
    /// No answer in time.
    #[error("no answer from the daemon within {0:?}")]
    Timeout(Duration),
}

/// A request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// VIPs, backends, health, VRRP.
    Status,
    /// Counters.
    Stats,
    /// Re-read the config file.
    Reload,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(StatusReport),
    /// Answer to [`Request::Stats`].
    Stats(StatsReport),
    /// The new config is running.
    Reloaded(ReloadReport),
    /// The request failed (a refused reload: the diagnostics, one per line).
    Error {
        /// What went wrong.
        message: String,
    },
}

/// The daemon's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Config file in use.
    pub config: String,
    /// Interface the program runs on.
    pub interface: String,
    /// Data plane running: "xdp" or "ipvs".
    #[serde(default)]
    pub dataplane: String,
    /// Why the data plane differs from the configured one (`auto` fell
    /// back to IPVS).
    #[serde(default)]
    pub dataplane_note: Option<String>,
    /// XDP attach mode actually used ("driver" / "skb"; "adopted" when
    /// taken over); "-" with IPVS.
    pub xdp_mode: String,
    /// IPVS: services in the kernel that lbctl does not own (left alone).
    #[serde(default)]
    pub foreign_services: Vec<String>,
    /// Configs loaded so far (1 + successful reloads).
    pub config_generation: u64,
    /// Applies of the desired state to the data plane that failed since
    /// the daemon started (each is retried until one succeeds).
    #[serde(default)]
    pub apply_failures: u64,
    /// The error of the last apply while it has not succeeded since: the
    /// data plane then holds part of the desired state (retried).
    #[serde(default)]
    pub apply_error: Option<String>,
    /// VIPs in config order.
    pub vips: Vec<VipStatus>,
    /// VRRP instances.
    pub vrrp: Vec<VrrpStatus>,
}

/// One VIP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    /// Name.
    pub name: String,
    /// `addr:port/proto`.
    pub vip: String,
    /// "dr" / "ipip" / "nat" (IPVS only).
    pub forwarding: String,
    /// Forwarded by this node.
    pub active: bool,
    /// VRRP instance gating it.
    pub vrrp_instance: Option<String>,
    /// Packets to the VIP.
    pub packets: u64,
    /// Bytes to the VIP.
    pub bytes: u64,
    /// IPVS: the kernel's virtual service (`None` with XDP, or when the
    /// kernel has none for this VIP).
    #[serde(default)]
    pub ipvs: Option<IpvsServiceView>,
    /// Backends (a sorry server in use is listed last).
    pub backends: Vec<BackendStatus>,
}

/// The kernel's IPVS virtual service of a VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsServiceView {
    /// As `ipvsadm -Ln` names it ("TCP 10.0.0.1:80").
    pub service: String,
    /// lbctl created it; `false`: it belongs to someone else and is left alone.
    pub owned: bool,
    /// Scheduler ("mh", "wrr", ...).
    pub scheduler: String,
    /// Scheduler and service flags ("mh-port", "persistent", ...).
    pub flags: Vec<String>,
    /// Persistence timeout (s) of a persistent service.
    pub persistence: Option<u32>,
    /// Connections scheduled.
    pub connections: u64,
    /// Packets client to server.
    pub in_packets: u64,
    /// Packets server to client (NAT only; 0 for DR and tunnel).
    pub out_packets: u64,
    /// Bytes client to server.
    pub in_bytes: u64,
    /// Bytes server to client.
    pub out_bytes: u64,
}

/// The kernel's IPVS real server of a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsDestView {
    /// Weight in the kernel (0 while drained or down).
    pub weight: u32,
    /// "Route", "Tunnel" or "Masq" (as ipvsadm prints).
    pub forwarding: String,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inactive_conns: u32,
    /// Persistence templates.
    pub persistent_conns: u32,
    /// Connections scheduled.
    pub connections: u64,
    /// Packets client to server.
    pub in_packets: u64,
    /// Packets server to client.
    pub out_packets: u64,
    /// Bytes client to server.
    pub in_bytes: u64,
    /// Bytes server to client.
    pub out_bytes: u64,
}

/// One backend of a VIP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Address.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// "up", "down", "up (no check)" (a backend without a health check),
    /// or "up (sorry)" (the VIP's sorry server, in use while no backend can
    /// take new flows).
    pub health: String,
    /// Takes new flows.
    pub in_ring: bool,
    /// MAC of the next hop, when resolved.
    pub mac: Option<String>,
    /// VLAN ID its frames are tagged with (XDP; none: untagged).
    pub vlan: Option<u16>,
    /// Neighbour resolution detail when not resolved.
    pub neighbour: Option<String>,
    /// This is the VIP's sorry server.
    pub sorry_server: bool,
    /// Health checks run.
    pub checks: u64,
    /// Health checks failed.
    pub check_failures: u64,
    /// Packets sent to it.
    pub packets: u64,
    /// Bytes sent to it.
    pub bytes: u64,
    /// IPVS: the kernel's real server (`None` with XDP, or when the kernel
    /// has none: removed while unhealthy, see `on_unhealthy`).
    #[serde(default)]
    pub ipvs: Option<IpvsDestView>,
}

/// One VRRP instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStatus {
    /// Name.
    pub name: String,
    /// "MASTER", "BACKUP", "FAULT", "INIT" (starting), "STOPPED" (the
    /// instance ended with an error, see the log), or "UNKNOWN" before the
    /// first report of an external VRRP driver.
    pub state: String,
    /// Whether its VIPs have healthy backends (`track_backends` input).
    pub backends_healthy: bool,
    /// Virtual router id.
    #[serde(default)]
    pub vrid: u8,
    /// Interface adverts are sent on.
    #[serde(default)]
    pub interface: String,
    /// VRRP version (2 or 3).
    #[serde(default)]
    pub version: u8,
    /// Configured priority.
    #[serde(default)]
    pub base_priority: u8,
    /// Effective priority (after tracking), the one advertised.
    #[serde(default)]
    pub priority: u8,
    /// Counters; `None` when the daemon does not run the instance itself.
    #[serde(default)]
    pub counters: Option<VrrpCounters>,
    /// Why the instance could not start (it is retried with backoff and
    /// shows FAULT meanwhile); `None` once it runs.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A summary of one VRRP instance's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpCounters {
    /// Valid advertisements received.
    pub adverts_received: u64,
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Advertisements rejected (every reason; the log at debug says which).
    pub adverts_rejected: u64,
    /// Priority-0 advertisements received (a master stepping down).
    pub priority_zero_received: u64,
    /// Priority-0 advertisements sent.
    pub priority_zero_sent: u64,
    /// Transitions into MASTER.
    pub became_master: u64,
    /// Transitions into BACKUP.
    pub became_backup: u64,
    /// Transitions into FAULT.
    pub became_fault: u64,
    /// Gratuitous ARPs / unsolicited NAs sent.
    pub garp_sent: u64,
    /// Errors: sending adverts, adding/removing VIPs, announcements,
    /// receive socket, failed starts, activations the data plane refused.
    pub errors: u64,
    /// Runs restarted because an interface was deleted or re-created.
    #[serde(default)]
    pub restarts: u64,
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Per VIP.
    pub vips: Vec<VipStats>,
    /// Every pass/drop/forward reason.
    pub reasons: BTreeMap<String, u64>,
}

/// Counters of one VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStats {
    /// Name.
    pub name: String,
    /// `addr:port/proto`.
    pub vip: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Per backend address: (packets, bytes).
    pub backends: Vec<BackendStats>,
}

/// Counters of one backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Address.
    pub address: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Config generation now running.
    pub config_generation: u64,
    /// Health checks started.
    pub checks_started: usize,
    /// Health checks stopped.
    pub checks_stopped: usize,
    /// Health checks kept with their state.
    pub checks_kept: usize,
    /// Of the started and stopped checks: changed checks of a backend that
    /// stays, restarted from its current health (it stays in the ring).
    #[serde(default)]
    pub checks_restarted: usize,
}

/// A request handed to the owner task, with the way back.
#[derive(Debug)]
pub struct ApiCall {
    /// The request.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// Binds the control socket at `path` with mode 0600. A stale socket file is
/// replaced; a live one (another daemon) is an error.
///
/// # Errors
/// [`ApiError::InUse`] or I/O errors.
pub async fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let io = |source| ApiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ApiError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // Created with mode 0600 from the start (no window in which the
    // umask-derived mode lets others connect). The umask is per process:
    // files other threads create meanwhile come out more private, never less.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Serves connections on `listener` until `cancel`, forwarding requests to `calls`.
pub async fn serve(
    listener: UnixListener,
    calls: mpsc::Sender<ApiCall>,
    cancel: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            () = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let calls = calls.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        r = handle(stream, calls) => if let Err(e) = r {
                            debug!(error = %e, "control connection ended");
                        }
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accept on the control socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, calls: mpsc::Sender<ApiCall>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut lines)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_LINE {
            Response::Error {
                message: format!("request longer than {MAX_LINE} bytes"),
            }
        } else {
            match serde_json::from_str::<Request>(line.trim()) {
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                },
                Ok(request) => {
                    let (tx, rx) = oneshot::channel();
                    if calls.send(ApiCall { request, reply: tx }).await.is_err() {
                        return Ok(());
                    }
                    rx.await.unwrap_or(Response::Error {
                        message: "the daemon is shutting down".into(),
                    })
                }
            }
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        w.write_all(&out).await?;
        if line.len() > MAX_LINE {
            return Ok(());
        }
    }
}

/// Sends one request to the daemon at `path` and returns its answer.
///
/// # Errors
/// Connection, timeout or decoding errors.
pub async fn call(path: &Path, request: Request) -> Result<Response, ApiError> {
    let io = |source| ApiError::Io {
        path: path.to_owned(),
        source,
    };
    let fut = async {
        let stream = UnixStream::connect(path).await.map_err(io)?;
        let (r, mut w) = stream.into_split();
        let mut req = serde_json::to_vec(&request)?;
        req.push(b'\n');
        w.write_all(&req).await.map_err(io)?;
        let mut line = String::new();
        let n = BufReader::new(r).read_line(&mut line).await.map_err(io)?;
        if n == 0 {
            return Err(ApiError::NoAnswer);
        }
        Ok(serde_json::from_str(line.trim())?)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, fut)
        .await
        .map_err(|_| ApiError::Timeout(CLIENT_TIMEOUT))?
}

/// Renders a status report as a human table.
pub fn render_status(s: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let plane = match s.dataplane.as_str() {
        "ipvs" => "ipvs".to_owned(),
        // Older daemons did not say: XDP.
        _ => format!("xdp {}", s.xdp_mode),
    };
    let _ = writeln!(
        o,
        "config {} (generation {}), interface {}, dataplane {}",
        s.config, s.config_generation, s.interface, plane
    );
    if let Some(n) = &s.dataplane_note {
        let _ = writeln!(o, "  {n}");
    }
    if let Some(e) = &s.apply_error {
        let _ = writeln!(
            o,
            "  APPLY FAILING ({} failed applies so far, retrying): {e}",
            s.apply_failures
        );
    } else if s.apply_failures > 0 {
        let _ = writeln!(
            o,
            "  {} failed applies so far; the last apply succeeded",
            s.apply_failures
        );
    }
    if s.dataplane == "ipvs" {
        render_ipvs_vips(&mut o, s);
    } else {
        render_xdp_vips(&mut o, s);
    }
    if !s.foreign_services.is_empty() {
        let _ = writeln!(o, "\nIPVS services of others (left alone)");
        for f in &s.foreign_services {
            let _ = writeln!(o, "  {f}");
        }
    }
    render_vrrp(&mut o, s);
    o
}

fn vip_header(v: &VipStatus) -> String {
    let gate = v
        .vrrp_instance
        .as_ref()
        .map_or_else(String::new, |i| format!(" vrrp {i}"));
    format!(
        "\nVIP {} {} {} {}{}",
        v.name,
        v.vip,
        v.forwarding,
        if v.active { "active" } else { "inactive" },
        gate
    )
}

fn backend_label(b: &BackendStatus) -> String {
    if b.sorry_server {
        format!("{} (sorry)", b.address)
    } else {
        b.address.clone()
    }
}

/// The IPVS view: per VIP its service (scheduler, flags, connections,
/// counters), per backend configured and kernel weight, method and
/// connection counts.
fn render_ipvs_vips(o: &mut String, s: &StatusReport) {
    use std::fmt::Write as _;
    for v in &s.vips {
        let svc = match &v.ipvs {
            None => "  no IPVS service".to_owned(),
            Some(i) => {
                let mut sched = i.scheduler.clone();
                for f in &i.flags {
                    sched.push(' ');
                    sched.push_str(f);
                }
                if let Some(p) = i.persistence {
                    let _ = write!(sched, " {p}s");
                }
                format!(
                    "  {}{} {}  conns {} packets {} bytes {}",
                    i.service,
                    if i.owned {
                        ""
                    } else {
                        " (NOT lbctl's: left alone)"
                    },
                    sched,
                    i.connections,
                    i.in_packets,
                    i.in_bytes
                )
            }
        };
        let _ = writeln!(o, "{}{svc}", vip_header(v));
        let _ = writeln!(
            o,
            "  {:<40} {:>6} {:<14} {:>7} {:<6} {:>6} {:>8} {:>10} {:>12}",
            "BACKEND",
            "WEIGHT",
            "HEALTH",
            "KWEIGHT",
            "FWD",
            "ACTIVE",
            "INACTIVE",
            "PACKETS",
            "BYTES"
        );
        for b in &v.backends {
            let (kw, fwd, act, inact) = match &b.ipvs {
                Some(d) => (
                    d.weight.to_string(),
                    d.forwarding.clone(),
                    d.active_conns.to_string(),
                    d.inactive_conns.to_string(),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                o,
                "  {:<40} {:>6} {:<14} {:>7} {:<6} {:>6} {:>8} {:>10} {:>12}",
                backend_label(b),
                b.weight,
                b.health,
                kw,
                fwd,
                act,
                inact,
                b.packets,
                b.bytes
            );
        }
    }
}

fn render_xdp_vips(o: &mut String, s: &StatusReport) {
    use std::fmt::Write as _;
    for v in &s.vips {
        let _ = writeln!(
            o,
            "{}  packets {} bytes {}",
            vip_header(v),
            v.packets,
            v.bytes
        );
        let _ = writeln!(
            o,
            "  {:<40} {:>6} {:<14} {:<5} {:<17} {:>4} {:>10} {:>12}",
            "BACKEND", "WEIGHT", "HEALTH", "RING", "MAC", "VLAN", "PACKETS", "BYTES"
        );
        for b in &v.backends {
            let addr = backend_label(b);
            let mac = b
                .mac
                .clone()
                .or_else(|| b.neighbour.clone())
                .unwrap_or_else(|| "-".into());
            let vlan = b.vlan.map_or_else(|| "-".into(), |v| v.to_string());
            let _ = writeln!(
                o,
                "  {:<40} {:>6} {:<14} {:<5} {:<17} {:>4} {:>10} {:>12}",
                addr,
                b.weight,
                b.health,
                if b.in_ring { "yes" } else { "no" },
                mac,
                vlan,
                b.packets,
                b.bytes
            );
        }
    }
}

fn render_vrrp(o: &mut String, s: &StatusReport) {
    use std::fmt::Write as _;
    if !s.vrrp.is_empty() {
        let _ = writeln!(o, "\nVRRP");
        let _ = writeln!(
            o,
            "  {:<20} {:<8} {:>4} {:<12} {:>9} {:<9} COUNTERS",
            "INSTANCE", "STATE", "VRID", "INTERFACE", "PRIO", "BACKENDS"
        );
        for i in &s.vrrp {
            let prio = if i.priority == i.base_priority {
                i.priority.to_string()
            } else {
                format!("{}/{}", i.priority, i.base_priority)
            };
            let counters = i.counters.as_ref().map_or_else(
                || "-".to_owned(),
                |c| {
                    format!(
                        "adverts rx {} tx {} rejected {}, master {}x backup {}x fault {}x, garp {}, errors {}, restarts {}",
                        c.adverts_received,
                        c.adverts_sent,
                        c.adverts_rejected,
                        c.became_master,
                        c.became_backup,
                        c.became_fault,
                        c.garp_sent,
                        c.errors,
                        c.restarts
                    )
                },
            );
            let _ = writeln!(
                o,
                "  {:<20} {:<8} {:>4} {:<12} {:>9} {:<9} {}",
                i.name,
                i.state,
                i.vrid,
                i.interface,
                prio,
                if i.backends_healthy {
                    "healthy"
                } else {
                    "unhealthy"
                },
                counters
            );
            if let Some(e) = &i.last_error {
                let _ = writeln!(o, "    start failed (retrying): {e}");
            }
        }
    }
}

/// Renders counters as text.
pub fn render_stats(s: &StatsReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for v in &s.vips {
        let _ = writeln!(
            o,
            "VIP {} {}  packets {} bytes {}",
            v.name, v.vip, v.packets, v.bytes
        );
        for b in &v.backends {
            let _ = writeln!(
                o,
                "  {:<40} packets {:>10} bytes {:>12}",
                b.address, b.packets, b.bytes
            );
        }
    }
    let _ = writeln!(o, "reasons");
    for (k, v) in &s.reasons {
        let _ = writeln!(o, "  {k:<24} {v}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"reload"}"#).unwrap(),
            Request::Reload
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format_disk"}"#).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::Error {
            message: "lb.toml:3:1: bad".into(),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"type":"error","message":"lb.toml:3:1: bad"}"#);
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
    }

    #[test]
    fn failing_applies_are_shown() {
        let mut s = StatusReport {
            apply_failures: 3,
            apply_error: Some("more than 4095 backends".into()),
            ..StatusReport::default()
        };
        let text = render_status(&s);
        assert!(
            text.contains(
                "APPLY FAILING (3 failed applies so far, retrying): more than 4095 backends"
            ),
            "{text}"
        );
        s.apply_error = None;
        let text = render_status(&s);
        assert!(
            text.contains("3 failed applies so far; the last apply succeeded"),
            "{text}"
        );
        s.apply_failures = 0;
        assert!(
            !render_status(&s).contains("appl"),
            "nothing when all went well"
        );
    }

    #[test]
    fn vrrp_status_renders_and_reads_old_answers() {
        let s = StatusReport {
            vrrp: vec![VrrpStatus {
                name: "VI_1".into(),
                state: "MASTER".into(),
                backends_healthy: false,
                vrid: 51,
                interface: "eth0".into(),
                version: 3,
                base_priority: 150,
                priority: 100,
                counters: Some(VrrpCounters {
                    adverts_sent: 7,
                    became_master: 1,
                    garp_sent: 5,
                    ..VrrpCounters::default()
                }),
                last_error: Some("interface lb0: not found".into()),
            }],
            ..StatusReport::default()
        };
        let text = render_status(&s);
        assert!(
            text.contains("start failed (retrying): interface lb0: not found"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.contains("VI_1"))
            .expect("instance line");
        for want in [
            "MASTER",
            "51",
            "eth0",
            "100/150",
            "unhealthy",
            "tx 7",
            "master 1x",
            "garp 5",
        ] {
            assert!(line.contains(want), "{want:?} missing in {line:?}");
        }
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), s);
        // An answer of a daemon without the new fields still decodes.
        let old: VrrpStatus =
            serde_json::from_str(r#"{"name":"VI_1","state":"BACKUP","backends_healthy":true}"#)
                .unwrap();
        assert_eq!((old.vrid, old.counters, old.last_error), (0, None, None));
    }

    #[test]
    fn ipvs_status_renders_kernel_weights_and_connections() {
        let s = StatusReport {
            config: "lb.toml".into(),
            interface: "eth0".into(),
            dataplane: "ipvs".into(),
            dataplane_note: Some("auto: XDP unavailable (no BPF); using IPVS".into()),
            xdp_mode: "-".into(),
            config_generation: 2,
            apply_failures: 0,
            apply_error: None,
            foreign_services: vec!["TCP 192.0.2.9:443".into()],
            vips: vec![VipStatus {
                name: "web".into(),
                vip: "10.0.0.1:80/tcp".into(),
                forwarding: "dr".into(),
                active: true,
                ipvs: Some(IpvsServiceView {
                    service: "TCP 10.0.0.1:80".into(),
                    owned: true,
                    scheduler: "mh".into(),
                    flags: vec!["mh-port".into()],
                    connections: 7,
                    ..Default::default()
                }),
                backends: vec![
                    BackendStatus {
                        address: "10.0.1.1".into(),
                        weight: 100,
                        health: "down".into(),
                        ipvs: Some(IpvsDestView {
                            weight: 0,
                            forwarding: "Route".into(),
                            active_conns: 3,
                            inactive_conns: 4,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    BackendStatus {
                        address: "10.0.1.2".into(),
                        weight: 5,
                        health: "down".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            vrrp: vec![],
        };
        let text = render_status(&s);
        assert!(
            text.contains("dataplane ipvs\n  auto: XDP unavailable"),
            "{text}"
        );
        assert!(
            text.contains("TCP 10.0.0.1:80 mh mh-port  conns 7"),
            "{text}"
        );
        let row = |addr: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(addr))
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(
            row("10.0.1.1"),
            ["10.0.1.1", "100", "down", "0", "Route", "3", "4", "0", "0"]
        );
        assert_eq!(
            row("10.0.1.2"),
            ["10.0.1.2", "5", "down", "-", "-", "-", "-", "0", "0"]
        );
        assert!(text.contains("left alone)\n  TCP 192.0.2.9:443"), "{text}");
        // An older daemon's JSON (no IPVS fields) still decodes.
        let old = r#"{"config":"c","interface":"eth0","xdp_mode":"skb","config_generation":1,"vips":[],"vrrp":[]}"#;
        let st: StatusReport = serde_json::from_str(old).unwrap();
        assert!(render_status(&st).contains("dataplane xdp skb"));
    }

    #[tokio::test]
    async fn socket_is_private_and_answers() {
        let dir = std::env::temp_dir().join(format!("lbctl-api-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = socket_path(&dir);
        let before = umask(Mode::from_bits_truncate(0o022));
        let listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The process umask is restored.
        assert_eq!(umask(before), Mode::from_bits_truncate(0o022));
        assert!(matches!(bind(&path).await, Err(ApiError::InUse(_))));
        let (tx, mut rx) = mpsc::channel::<ApiCall>(4);
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, tx, cancel.clone()));
        let owner = tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let _ = c.reply.send(match c.request {
                    Request::Stats => Response::Stats(StatsReport::default()),
                    _ => Response::Error {
                        message: "nope".into(),
                    },
                });
            }
        });
        assert_eq!(
            call(&path, Request::Stats).await.unwrap(),
            Response::Stats(StatsReport::default())
        );
        assert_eq!(
            call(&path, Request::Reload).await.unwrap(),
            Response::Error {
                message: "nope".into()
            }
        );
        cancel.cancel();
        server.await.unwrap();
        owner.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
