//! Prometheus metrics over HTTP (`GET /metrics`, text exposition format
//! 0.0.4), from the same status and counters `lbctl status` and `lbctl
//! stats` show. [`render`] is the pure part; [`serve`] answers scrapes by
//! asking the daemon's owner task, like the control socket does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request as HttpRequest, Response as HttpResponse, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{ApiCall, Request, Response, StatsReport, StatusReport};
// The counter of packets the fast path forwarded sits among the reasons
// but is not one (those packets are also counted by their reason): a family apart.
use crate::dataplane::xdp::FAST_PATH;

/// How long a scrape waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// VRRP states, one series each in `lbctl_vrrp_state` (a state set).
const VRRP_STATES: [&str; 6] = ["MASTER", "BACKUP", "FAULT", "INIT", "STOPPED", "UNKNOWN"];

/// A label value escaped for the exposition format (`\`, `"`, newline).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The metric families, each written whole (HELP, TYPE, its samples).
#[derive(Default)]
struct Families {
    /// Name to (help, type, sample lines), in first-use order of names.
    order: Vec<&'static str>,
    families: BTreeMap<&'static str, (&'static str, &'static str, String)>,
}

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        let (_, _, lines) = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            (help, kind, String::new())
        });
        lines.push_str(name);
        if !labels.is_empty() {
            lines.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    lines.push(',');
                }
                let _ = write!(lines, "{k}=\"{}\"", escape(v));
            }
            lines.push('}');
        }
        let _ = writeln!(lines, " {value}");
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: u64) {
        self.add(name, "gauge", help, labels, v);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: u64) {
        self.add(name, "counter", help, labels, v);
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for name in self.order {
            if let Some((help, kind, lines)) = self.families.get(name) {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                out.push_str(lines);
            }
        }
        out
    }
}

/// The metrics of a daemon's status and counters, in the text exposition
/// format. VIPs are labelled by name (`vip`) and `addr:port/proto`
/// (`address`); backends by address (`backend`).
pub fn render(status: &StatusReport, stats: &StatsReport) -> String {
    let mut f = Families::default();
    f.gauge(
        "lbctl_config_generation",
        "Configs loaded so far (1 + successful reloads).",
        &[],
        status.config_generation,
    );
    f.counter(
        "lbctl_apply_failures_total",
        "Applies of the desired state to the data plane that failed (each is retried).",
        &[],
        status.apply_failures,
    );
    for v in &status.vips {
        let vl = [("vip", v.name.as_str()), ("address", v.vip.as_str())];
        f.gauge(
            "lbctl_vip_active",
            "Whether this node forwards the VIP (VRRP master, or no VRRP).",
            &vl,
            u64::from(v.active),
        );
        f.counter(
            "lbctl_vip_packets_total",
            "Packets to the VIP.",
            &vl,
            v.packets,
        );
        f.counter("lbctl_vip_bytes_total", "Bytes to the VIP.", &vl, v.bytes);
        for b in &v.backends {
            let bl = [
                ("vip", v.name.as_str()),
                ("address", v.vip.as_str()),
                ("backend", b.address.as_str()),
            ];
            f.gauge(
                "lbctl_backend_up",
                "Whether the backend passes its health check (or has none, or is the sorry server in use).",
                &bl,
                u64::from(b.health.starts_with("up")),
            );
            f.gauge(
                "lbctl_backend_in_ring",
                "Whether the backend takes new flows.",
                &bl,
                u64::from(b.in_ring),
            );
            f.gauge(
                "lbctl_backend_weight",
                "Configured weight of the backend (0: drained).",
                &bl,
                u64::from(b.weight),
            );
            f.counter(
                "lbctl_backend_packets_total",
                "Packets sent to the backend.",
                &bl,
                b.packets,
            );
            f.counter(
                "lbctl_backend_bytes_total",
                "Bytes sent to the backend.",
                &bl,
                b.bytes,
            );
            f.counter(
                "lbctl_backend_checks_total",
                "Health checks of the backend run.",
                &bl,
                b.checks,
            );
            f.counter(
                "lbctl_backend_check_failures_total",
                "Health checks of the backend failed.",
                &bl,
                b.check_failures,
            );
        }
    }
    // Every packet has one reason; a packet to a VIP also has one
    // connection-table outcome (`conn_*`), and a forwarded one may have
    // taken the fast path: families apart, so that a sum over a family's
    // label counts each packet once.
    for (reason, n) in &stats.reasons {
        if reason == FAST_PATH {
            continue;
        }
        match reason.strip_prefix("conn_") {
            Some(outcome) => f.counter(
                "lbctl_xdp_conn_lookups_total",
                "Connection-table outcomes of packets to a VIP (hit, miss, stale, shared; evicted: a flow replaced).",
                &[("outcome", outcome)],
                *n,
            ),
            None => f.counter(
                "lbctl_xdp_packets_total",
                "Packets by what the XDP program did with them (fwd_*, pass_*, drop_*, ...).",
                &[("reason", reason.as_str())],
                *n,
            ),
        }
    }
    if let Some(n) = stats.reasons.get(FAST_PATH) {
        f.counter(
            "lbctl_xdp_fast_path_packets_total",
            "Packets forwarded by the XDP program's fast path for established IPv4 flows (also counted by their reason).",
            &[],
            *n,
        );
    }
    for r in &status.vrrp {
        let il = [("instance", r.name.as_str())];
        for s in VRRP_STATES {
            f.gauge(
                "lbctl_vrrp_state",
                "VRRP state of the instance: 1 for the current state.",
                &[("instance", r.name.as_str()), ("state", s)],
                u64::from(r.state == s),
            );
        }
        f.gauge(
            "lbctl_vrrp_priority",
            "Effective VRRP priority (after tracking), the one advertised.",
            &il,
            u64::from(r.priority),
        );
        if let Some(c) = &r.counters {
            for (name, help, v) in [
                (
                    "lbctl_vrrp_adverts_received_total",
                    "Valid VRRP advertisements received.",
                    c.adverts_received,
                ),
                (
                    "lbctl_vrrp_adverts_sent_total",
                    "VRRP advertisements sent.",
                    c.adverts_sent,
                ),
                (
                    "lbctl_vrrp_adverts_rejected_total",
                    "VRRP advertisements rejected.",
                    c.adverts_rejected,
                ),
                (
                    "lbctl_vrrp_became_master_total",
                    "Transitions into MASTER.",
                    c.became_master,
                ),
                ("lbctl_vrrp_errors_total", "VRRP errors.", c.errors),
            ] {
                f.counter(name, help, &il, v);
            }
        }
    }
    f.finish()
}

/// Asks the owner task and waits, for a place in its queue and for the
/// answer, at most [`ANSWER_TIMEOUT`] in all.
async fn ask(calls: &mpsc::Sender<ApiCall>, request: Request) -> Option<Response> {
    let (reply, rx) = oneshot::channel();
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        calls.send(ApiCall { request, reply }).await.ok()?;
        rx.await.ok()
    })
    .await
    .ok()?
}

/// The answer to one HTTP request.
async fn answer(
    req: HttpRequest<Incoming>,
    calls: mpsc::Sender<ApiCall>,
) -> HttpResponse<Full<Bytes>> {
    let plain = |code: StatusCode, text: &str| {
        let mut r = HttpResponse::new(Full::new(Bytes::from(text.to_owned())));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let (Some(Response::Status(status)), Some(Response::Stats(stats))) = (
        ask(&calls, Request::Status).await,
        ask(&calls, Request::Stats).await,
    ) else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not answer in time\n",
        );
    };
    let mut r = HttpResponse::new(Full::new(Bytes::from(render(&status, &stats))));
    if let Ok(v) = header::HeaderValue::from_str(CONTENT_TYPE) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// Serves `GET /metrics` on `listener` until `cancel`, asking `calls`.
pub async fn serve(listener: TcpListener, calls: mpsc::Sender<ApiCall>, cancel: CancellationToken) {
    loop {
        let conn = tokio::select! {
            () = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, peer)) => {
                let calls = calls.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let calls = calls.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, calls).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        r = conn => if let Err(e) = r {
                            debug!(%peer, error = %e, "metrics connection ended");
                        }
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accept on the metrics listener failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendStatus, VipStatus, VrrpCounters, VrrpStatus};

    fn report() -> (StatusReport, StatsReport) {
        let status = StatusReport {
            config_generation: 2,
            apply_failures: 1,
            vips: vec![VipStatus {
                name: "web \"eu\"".into(),
                vip: "10.0.0.100:80/tcp".into(),
                active: true,
                packets: 10,
                bytes: 1000,
                backends: vec![
                    BackendStatus {
                        address: "10.0.1.1".into(),
                        weight: 100,
                        health: "up".into(),
                        in_ring: true,
                        packets: 7,
                        bytes: 700,
                        checks: 5,
                        check_failures: 1,
                        ..Default::default()
                    },
                    BackendStatus {
                        address: "10.0.1.2".into(),
                        weight: 50,
                        health: "down".into(),
                        packets: 3,
                        bytes: 300,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            vrrp: vec![VrrpStatus {
                name: "VI_1".into(),
                state: "MASTER".into(),
                priority: 150,
                counters: Some(VrrpCounters {
                    adverts_sent: 42,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let stats = StatsReport {
            reasons: [
                ("fwd_dr".to_owned(), 10),
                ("pass_not_vip".to_owned(), 4),
                ("conn_hit".to_owned(), 9),
                ("fast_path".to_owned(), 8),
                ("fwd_ipip".to_owned(), 2),
            ]
            .into(),
            ..Default::default()
        };
        (status, stats)
    }

    #[test]
    fn every_family_has_help_and_type_once_before_its_samples() {
        let (status, stats) = report();
        let text = render(&status, &stats);
        let mut seen = std::collections::BTreeSet::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(seen.insert(name.to_owned()), "{name} twice:\n{text}");
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(rest.starts_with(current), "{line}");
                assert!(
                    rest.ends_with(" counter") || rest.ends_with(" gauge"),
                    "{line}"
                );
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(name, current, "sample outside its family:\n{text}");
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
        for name in [
            "lbctl_vip_packets_total",
            "lbctl_backend_up",
            "lbctl_xdp_packets_total",
            "lbctl_vrrp_state",
        ] {
            assert!(seen.contains(name), "{name} missing:\n{text}");
        }
    }

    #[test]
    fn samples_carry_the_values_and_escaped_labels() {
        let (status, stats) = report();
        let text = render(&status, &stats);
        for want in [
            "lbctl_config_generation 2",
            "lbctl_apply_failures_total 1",
            r#"lbctl_vip_packets_total{vip="web \"eu\"",address="10.0.0.100:80/tcp"} 10"#,
            r#"lbctl_backend_up{vip="web \"eu\"",address="10.0.0.100:80/tcp",backend="10.0.1.1"} 1"#,
            r#"lbctl_backend_up{vip="web \"eu\"",address="10.0.0.100:80/tcp",backend="10.0.1.2"} 0"#,
            r#"lbctl_backend_in_ring{vip="web \"eu\"",address="10.0.0.100:80/tcp",backend="10.0.1.2"} 0"#,
            r#"lbctl_backend_packets_total{vip="web \"eu\"",address="10.0.0.100:80/tcp",backend="10.0.1.1"} 7"#,
            r#"lbctl_backend_check_failures_total{vip="web \"eu\"",address="10.0.0.100:80/tcp",backend="10.0.1.1"} 1"#,
            r#"lbctl_xdp_packets_total{reason="fwd_dr"} 10"#,
            r#"lbctl_xdp_conn_lookups_total{outcome="hit"} 9"#,
            "lbctl_xdp_fast_path_packets_total 8",
            r#"lbctl_vrrp_state{instance="VI_1",state="MASTER"} 1"#,
            r#"lbctl_vrrp_state{instance="VI_1",state="BACKUP"} 0"#,
            r#"lbctl_vrrp_priority{instance="VI_1"} 150"#,
            r#"lbctl_vrrp_adverts_sent_total{instance="VI_1"} 42"#,
        ] {
            assert!(text.lines().any(|l| l == want), "no line {want}:\n{text}");
        }
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
