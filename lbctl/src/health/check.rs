//! Health checkers: TCP connect, HTTP GET, UDP request/reply and scripts.
//!
//! Each checker is an async fn with a hard timeout covering the whole check
//! (connect, request, reply, body, script run). A check passes with `Ok(())`;
//! a failure says why in a [`CheckError`], whose `Display` is meant for logs
//! and `lbctl status`.
//!
//! Checkers connect to literal socket addresses only: no DNS, no proxy
//! (environment variables are ignored), no connection reuse between checks,
//! no redirects followed (a 3xx is judged against the expected statuses).

use std::io;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::task::AbortOnDropHandle;

/// How much of an HTTP body is searched for the expected text.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest UDP reply read.
const MAX_DATAGRAM: usize = 65_535;
/// How long to wait for a killed script to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(1);
/// `User-Agent` of HTTP checks.
const AGENT: &str = concat!("lbctl-health/", env!("CARGO_PKG_VERSION"));

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The peer refused the connection (TCP RST or ICMP port unreachable).
    #[error("connection to {addr} refused")]
    Refused {
        /// Checked address.
        addr: SocketAddr,
    },
    /// Connecting failed for another reason (unreachable network, ...).
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        /// Checked address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The check did not finish within its timeout.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The HTTP request could not be built (bad path or Host header).
    #[error("invalid HTTP request: {0}")]
    InvalidRequest(String),
    /// The HTTP exchange failed (connection closed, malformed response, ...).
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http {
        /// Checked address.
        addr: SocketAddr,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The HTTP status is not one of the expected ones.
    #[error("unexpected HTTP status {status}")]
    BadStatus {
        /// Status received.
        status: u16,
    },
    /// The HTTP body does not contain the expected text.
    #[error("response body does not contain {expected:?} (searched {searched} bytes)")]
    BodyMismatch {
        /// The expected text, lossily as UTF-8.
        expected: String,
        /// How many body bytes were searched (at most [`MAX_BODY_BYTES`]).
        searched: usize,
    },
    /// A UDP socket operation failed.
    #[error("UDP {op} with {addr} failed: {source}")]
    Udp {
        /// `bind`, `connect`, `send` or `recv`.
        op: &'static str,
        /// Checked address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A UDP reply arrived but does not contain the expected bytes.
    #[error("UDP reply from {addr} ({len} bytes) does not contain the expected bytes")]
    ReplyMismatch {
        /// Checked address.
        addr: SocketAddr,
        /// Length of the reply.
        len: usize,
    },
    /// The script could not be started (missing, not executable, ...).
    #[error("script {program} could not start: {source}")]
    ScriptSpawn {
        /// Program path.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Waiting for the script failed.
    #[error("waiting for script {program} failed: {source}")]
    ScriptWait {
        /// Program path.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The script exited with a non-zero code.
    #[error("script {program} exited with code {code}")]
    ScriptExit {
        /// Program path.
        program: String,
        /// Exit code.
        code: i32,
    },
    /// The script was killed by a signal (not by us).
    #[error("script {program} killed by signal {signal}")]
    ScriptSignal {
        /// Program path.
        program: String,
        /// Signal number.
        signal: i32,
    },
    /// The script ran past its timeout; its whole process group was killed.
    #[error("script {program} ran longer than {timeout:?}; process group killed")]
    ScriptTimeout {
        /// Program path.
        program: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// Why a check description is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The URL does not parse.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Parser message.
        reason: String,
    },
    /// Only plain `http://` is checked.
    #[error("URL {0:?} is not plain http:// (no TLS checks)")]
    NotHttp(String),
    /// The URL's host must be an IP literal (checks do no DNS).
    #[error("URL {0:?} must name an IP address, not a host name")]
    HostNotIp(String),
    /// A status set does not parse.
    #[error("invalid HTTP status set {0:?} (expected e.g. \"200,204,300-399\")")]
    InvalidStatusSet(String),
}

/// A set of accepted HTTP status codes, as inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
}

impl StatusSet {
    /// Status codes `lo..=hi` for each given pair.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16)>) -> Self {
        Self {
            ranges: ranges.into_iter().collect(),
        }
    }

    /// Exactly the given codes.
    pub fn codes(codes: impl IntoIterator<Item = u16>) -> Self {
        Self::from_ranges(codes.into_iter().map(|c| (c, c)))
    }

    /// Whether `status` is accepted.
    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| lo <= status && status <= hi)
    }
}

impl Default for StatusSet {
    /// Any 2xx.
    fn default() -> Self {
        Self::from_ranges([(200, 299)])
    }
}

impl FromStr for StatusSet {
    type Err = SpecError;

    /// Parses `"200"`, `"200,204"`, `"200-299,302"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SpecError::InvalidStatusSet(s.to_owned());
        let parse = |x: &str| -> Result<u16, SpecError> {
            match x.trim().parse::<u16>() {
                Ok(c) if (100..=999).contains(&c) => Ok(c),
                _ => Err(bad()),
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let r = match part.split_once('-') {
                Some((lo, hi)) => (parse(lo)?, parse(hi)?),
                None => {
                    let c = parse(part)?;
                    (c, c)
                }
            };
            if r.0 > r.1 {
                return Err(bad());
            }
            ranges.push(r);
        }
        Ok(Self { ranges })
    }
}

/// An HTTP GET check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// Where to connect (the backend's address and check port).
    pub addr: SocketAddr,
    /// Request path and query, starting with `/`.
    pub path: String,
    /// `Host` header; `None` sends the address (`10.0.0.1:80`).
    pub host: Option<String>,
    /// Accepted status codes.
    pub status: StatusSet,
    /// Text the body must contain (searched in the first [`MAX_BODY_BYTES`]).
    pub body_contains: Option<Vec<u8>>,
}

impl HttpCheck {
    /// A check of `GET path` on `addr` expecting any 2xx.
    pub fn new(addr: SocketAddr, path: impl Into<String>) -> Self {
        Self {
            addr,
            path: path.into(),
            host: None,
            status: StatusSet::default(),
            body_contains: None,
        }
    }

    /// A check from a plain `http://IP[:PORT]/path?query` URL (port 80 by
    /// default), with an optional `Host` header to send instead of the
    /// URL's authority.
    pub fn from_url(url: &str, host: Option<String>) -> Result<Self, SpecError> {
        let uri: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| SpecError::InvalidUrl {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("http") {
            return Err(SpecError::NotHttp(url.to_owned()));
        }
        let authority = uri.authority().ok_or_else(|| SpecError::InvalidUrl {
            url: url.to_owned(),
            reason: "no host".to_owned(),
        })?;
        let ip_text = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip: std::net::IpAddr = ip_text
            .parse()
            .map_err(|_| SpecError::HostNotIp(url.to_owned()))?;
        // `Authority::port` hides an unparsable port, so read it ourselves.
        let after_userinfo = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, h)| h);
        let rest = after_userinfo.get(authority.host().len()..).unwrap_or("");
        let port = match rest.strip_prefix(':') {
            None | Some("") => 80,
            Some(p) => p.parse::<u16>().map_err(|e| SpecError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("port {p:?}: {e}"),
            })?,
        };
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let mut check = Self::new(SocketAddr::new(ip, port), path);
        check.host = host;
        Ok(check)
    }
}

/// A UDP request/reply check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpCheck {
    /// Where to send.
    pub addr: SocketAddr,
    /// Datagram sent.
    pub payload: Vec<u8>,
    /// Bytes the reply must contain; empty accepts any reply.
    pub expect: Vec<u8>,
}

/// A script check: a program and its arguments, run without a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptCheck {
    /// Program to execute.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// What a health check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP connect to the address.
    Tcp(SocketAddr),
    /// HTTP GET.
    Http(HttpCheck),
    /// UDP request and reply.
    Udp(UdpCheck),
    /// External program; exit code 0 passes.
    Script(ScriptCheck),
}

impl CheckKind {
    /// Short description for logs (`tcp 10.0.0.1:80`, `http 10.0.0.1:80/health`).
    pub fn describe(&self) -> String {
        match self {
            CheckKind::Tcp(a) => format!("tcp {a}"),
            CheckKind::Http(h) => format!("http {}{}", h.addr, h.path),
            CheckKind::Udp(u) => format!("udp {}", u.addr),
            CheckKind::Script(s) => format!("script {}", s.program.display()),
        }
    }
}

/// Runs one check of any kind within `timeout`.
pub async fn run_check(kind: &CheckKind, timeout: Duration) -> Result<(), CheckError> {
    match kind {
        CheckKind::Tcp(addr) => check_tcp(*addr, timeout).await,
        CheckKind::Http(h) => check_http(h, timeout).await,
        CheckKind::Udp(u) => check_udp(u, timeout).await,
        CheckKind::Script(s) => check_script(s, timeout).await,
    }
}

fn connect_error(addr: SocketAddr, source: io::Error) -> CheckError {
    if source.kind() == io::ErrorKind::ConnectionRefused {
        CheckError::Refused { addr }
    } else {
        CheckError::Connect { addr, source }
    }
}

/// Passes if a TCP connection to `addr` is established within `timeout`.
/// The connection is closed right away.
pub async fn check_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), CheckError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(connect_error(addr, e)),
        Err(_) => Err(CheckError::Timeout(timeout)),
    }
}

/// Passes if `GET path` on `check.addr` answers within `timeout` with an
/// expected status and, if asked, a body containing the expected text.
pub async fn check_http(check: &HttpCheck, timeout: Duration) -> Result<(), CheckError> {
    tokio::time::timeout(timeout, http_exchange(check))
        .await
        .unwrap_or(Err(CheckError::Timeout(timeout)))
}

async fn http_exchange(check: &HttpCheck) -> Result<(), CheckError> {
    let addr = check.addr;
    if !check.path.starts_with('/') {
        return Err(CheckError::InvalidRequest(format!(
            "path {:?} does not start with '/'",
            check.path
        )));
    }
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let request = http::Request::get(check.path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, AGENT)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| CheckError::InvalidRequest(e.to_string()))?;

    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(addr, e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| CheckError::Http { addr, source })?;
    // Aborted when dropped: the hyper connection driver ends with the check.
    let _driver = AbortOnDropHandle::new(tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%addr, %error, "http check connection ended with an error");
        }
    }));

    let response = sender
        .send_request(request)
        .await
        .map_err(|source| CheckError::Http { addr, source })?;
    let status = response.status().as_u16();
    if !check.status.contains(status) {
        return Err(CheckError::BadStatus { status });
    }
    let Some(needle) = check.body_contains.as_deref() else {
        return Ok(());
    };
    let mut body = response.into_body();
    let mut seen: Vec<u8> = Vec::new();
    if contains(&seen, needle) {
        return Ok(());
    }
    while seen.len() < MAX_BODY_BYTES {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|source| CheckError::Http { addr, source })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        // Only the new bytes plus a needle-sized overlap need searching.
        let start = seen.len().saturating_sub(needle.len().saturating_sub(1));
        let room = MAX_BODY_BYTES - seen.len();
        seen.extend_from_slice(&data[..data.len().min(room)]);
        if contains(&seen[start..], needle) {
            return Ok(());
        }
    }
    Err(CheckError::BodyMismatch {
        expected: String::from_utf8_lossy(needle).into_owned(),
        searched: seen.len(),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Passes if, within `timeout`, a reply to `check.payload` arrives from
/// `check.addr` that contains `check.expect`. A reply without it fails
/// at once; an ICMP port unreachable fails as [`CheckError::Refused`].
pub async fn check_udp(check: &UdpCheck, timeout: Duration) -> Result<(), CheckError> {
    tokio::time::timeout(timeout, udp_exchange(check))
        .await
        .unwrap_or(Err(CheckError::Timeout(timeout)))
}

async fn udp_exchange(check: &UdpCheck) -> Result<(), CheckError> {
    let addr = check.addr;
    let udp = |op: &'static str| {
        move |source: io::Error| {
            if source.kind() == io::ErrorKind::ConnectionRefused {
                CheckError::Refused { addr }
            } else {
                CheckError::Udp { op, addr, source }
            }
        }
    };
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(udp("bind"))?;
    // A connected socket only receives from the backend and reports ICMP
    // port unreachable as ECONNREFUSED.
    socket.connect(addr).await.map_err(udp("connect"))?;
    socket.send(&check.payload).await.map_err(udp("send"))?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let len = socket.recv(&mut buf).await.map_err(udp("recv"))?;
    if contains(&buf[..len], &check.expect) {
        Ok(())
    } else {
        Err(CheckError::ReplyMismatch { addr, len })
    }
}

/// Kills a script's process group when dropped, unless disarmed.
struct GroupGuard {
    /// Group to kill; `None` once the leader is reaped or the group killed.
    pgid: Option<i32>,
    program: String,
}

impl GroupGuard {
    /// Sends SIGKILL to the whole group (once).
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take()
            && let Err(errno) = killpg(Pid::from_raw(pgid), Signal::SIGKILL)
        {
            tracing::warn!(program = %self.program, pgid, %errno, "could not kill script process group");
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the script in a process group of its own, without a shell, with
/// stdin/stdout/stderr on `/dev/null`. Exit code 0 passes. Past `timeout`
/// the whole process group is killed (SIGKILL) and reaped.
///
/// Processes a script leaves running in the background after it exits on
/// its own are not tracked.
pub async fn check_script(check: &ScriptCheck, timeout: Duration) -> Result<(), CheckError> {
    let program = check.program.display().to_string();
    let mut child = crate::daemon::systemd::program(&check.program)
        .args(&check.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CheckError::ScriptSpawn {
            program: program.clone(),
            source,
        })?;
    // With process_group(0) the group id is the child's pid.
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    // If this future is dropped mid-run (the runner was cancelled), the
    // guard kills the group; `kill_on_drop` alone would spare grandchildren.
    let mut guard = GroupGuard {
        pgid,
        program: program.clone(),
    };

    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if let Ok(Ok(_)) = waited {
        // The leader has been reaped: its pid may be recycled, so the group
        // id must no longer be signalled.
        guard.pgid = None;
    }
    match waited {
        Ok(Ok(status)) => match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(code), _) => Err(CheckError::ScriptExit { program, code }),
            (None, Some(signal)) => Err(CheckError::ScriptSignal { program, signal }),
            (None, None) => Err(CheckError::ScriptExit { program, code: -1 }),
        },
        Ok(Err(source)) => Err(CheckError::ScriptWait { program, source }),
        Err(_) => {
            // The leader has not been reaped (we stopped waiting on it), so
            // its pid still names this group: no risk of hitting a recycled
            // group id.
            guard.kill();
            if let Err(error) = child.start_kill() {
                tracing::debug!(%program, %error, "script leader already gone");
            }
            if tokio::time::timeout(REAP_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(%program, ?pgid, "killed script not reaped in time");
            }
            Err(CheckError::ScriptTimeout { program, timeout })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_millis(500);

    fn localhost(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A port that nothing listens on (bound, then released).
    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind(localhost(0)).await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn tcp_ok_and_refused() {
        let l = TcpListener::bind(localhost(0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        check_tcp(addr, T).await.unwrap();
        drop(l);
        let err = check_tcp(addr, T).await.unwrap_err();
        assert!(matches!(err, CheckError::Refused { .. }), "{err}");
    }

    /// A listener whose accept queue is full, so further SYNs are dropped and
    /// connects hang. Returns it with the connections that filled it.
    async fn full_listener() -> (std::net::TcpListener, Vec<TcpStream>) {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&localhost(0).into()).unwrap();
        sock.listen(0).unwrap();
        let listener: std::net::TcpListener = sock.into();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                _ => return (listener, fillers),
            }
        }
        panic!("accept queue never filled");
    }

    #[tokio::test]
    async fn tcp_times_out() {
        let (listener, _fillers) = full_listener().await;
        let start = Instant::now();
        let err = check_tcp(listener.local_addr().unwrap(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, CheckError::Timeout(_)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    /// Serves one canned HTTP response per connection and reports each request head.
    async fn http_server(
        response: &'static str,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind(localhost(0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                    let _ = s.write_all(response.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn http_ok_sends_path_and_custom_host() {
        let (addr, mut reqs) =
            http_server("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nhealthy").await;
        let url = format!("http://{addr}/health?deep=1");
        let mut c = HttpCheck::from_url(&url, Some("app.example".into())).unwrap();
        c.body_contains = Some(b"health".to_vec());
        check_http(&c, T).await.unwrap();
        let head = reqs.recv().await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /health?deep=1 http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nhost: app.example\r\n"), "{head}");
    }

    #[tokio::test]
    async fn http_default_host_is_the_address() {
        let (addr, mut reqs) = http_server("HTTP/1.1 204 No Content\r\n\r\n").await;
        check_http(&HttpCheck::new(addr, "/"), T).await.unwrap();
        let head = reqs.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
    }

    #[tokio::test]
    async fn http_bad_status() {
        let (addr, _r) =
            http_server("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let err = check_http(&HttpCheck::new(addr, "/"), T).await.unwrap_err();
        assert!(
            matches!(err, CheckError::BadStatus { status: 503 }),
            "{err}"
        );
        // ... unless 503 is expected.
        let mut c = HttpCheck::new(addr, "/");
        c.status = "200-299,503".parse().unwrap();
        check_http(&c, T).await.unwrap();
    }

    #[tokio::test]
    async fn http_redirect_is_not_followed() {
        let (addr, _r) = http_server(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let err = check_http(&HttpCheck::new(addr, "/"), T).await.unwrap_err();
        assert!(
            matches!(err, CheckError::BadStatus { status: 302 }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn http_body_mismatch() {
        // No content-length: body ends at close.
        let (addr, _r) = http_server("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nstarting").await;
        let mut c = HttpCheck::new(addr, "/");
        c.body_contains = Some(b"ready".to_vec());
        let err = check_http(&c, T).await.unwrap_err();
        assert!(
            matches!(err, CheckError::BodyMismatch { searched: 8, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn http_refused_garbage_and_timeout() {
        let addr = closed_port().await;
        let err = check_http(&HttpCheck::new(addr, "/"), T).await.unwrap_err();
        assert!(matches!(err, CheckError::Refused { .. }), "{err}");

        let (addr, _r) = http_server("SSH-2.0-OpenSSH\r\n\r\n").await;
        let err = check_http(&HttpCheck::new(addr, "/"), T).await.unwrap_err();
        assert!(matches!(err, CheckError::Http { .. }), "{err}");

        // Accepts but never answers.
        let l = TcpListener::bind(localhost(0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let start = Instant::now();
        let err = check_http(&HttpCheck::new(addr, "/"), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, CheckError::Timeout(_)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn http_from_url() {
        let c = HttpCheck::from_url("http://10.0.0.1/", None).unwrap();
        assert_eq!(c.addr, "10.0.0.1:80".parse().unwrap());
        assert_eq!(c.path, "/");
        let c = HttpCheck::from_url("http://[2001:db8::1]:8080/x?y=z", Some("h".into())).unwrap();
        assert_eq!(c.addr, "[2001:db8::1]:8080".parse().unwrap());
        assert_eq!(c.path, "/x?y=z");
        assert_eq!(c.host.as_deref(), Some("h"));
        let c = HttpCheck::from_url("http://10.0.0.1:81", None).unwrap();
        assert_eq!(c.path, "/");
        assert!(matches!(
            HttpCheck::from_url("https://10.0.0.1/", None),
            Err(SpecError::NotHttp(_))
        ));
        assert!(matches!(
            HttpCheck::from_url("http://backend.local/", None),
            Err(SpecError::HostNotIp(_))
        ));
        assert!(matches!(
            HttpCheck::from_url("http://10.0.0.1:99999/", None),
            Err(SpecError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn status_sets() {
        let s: StatusSet = "200, 204,300-399".parse().unwrap();
        for c in [200, 204, 300, 350, 399] {
            assert!(s.contains(c), "{c}");
        }
        for c in [201, 299, 400, 503] {
            assert!(!s.contains(c), "{c}");
        }
        assert!(StatusSet::default().contains(299));
        assert!(!StatusSet::default().contains(300));
        for bad in ["", "abc", "300-200", "99", "200-", "1000"] {
            assert!(bad.parse::<StatusSet>().is_err(), "{bad:?}");
        }
    }

    async fn udp_responder(reply: &'static [u8]) -> SocketAddr {
        let s = UdpSocket::bind(localhost(0)).await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(reply, from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn udp_checks() {
        let addr = udp_responder(b"+PONG ok").await;
        let mut c = UdpCheck {
            addr,
            payload: b"PING".to_vec(),
            expect: b"PONG".to_vec(),
        };
        check_udp(&c, T).await.unwrap();
        c.expect = b"NOPE".to_vec();
        let err = check_udp(&c, T).await.unwrap_err();
        assert!(
            matches!(err, CheckError::ReplyMismatch { len: 8, .. }),
            "{err}"
        );

        // Bound but silent: timeout.
        let silent = UdpSocket::bind(localhost(0)).await.unwrap();
        c.addr = silent.local_addr().unwrap();
        let err = check_udp(&c, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, CheckError::Timeout(_)), "{err}");

        // Closed port: ICMP port unreachable on loopback -> refused.
        c.addr = silent.local_addr().unwrap();
        drop(silent);
        let err = check_udp(&c, T).await.unwrap_err();
        assert!(matches!(err, CheckError::Refused { .. }), "{err}");
    }

    fn script(program: &str, args: &[&str]) -> ScriptCheck {
        ScriptCheck {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn script_exit_codes() {
        check_script(&script("/bin/true", &[]), T).await.unwrap();
        let err = check_script(&script("/bin/false", &[]), T)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CheckError::ScriptExit { code: 1, .. }),
            "{err}"
        );
        let err = check_script(&script("/bin/sh", &["-c", "exit 2"]), T)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CheckError::ScriptExit { code: 2, .. }),
            "{err}"
        );
        let err = check_script(&script("/bin/sh", &["-c", "kill -TERM $$"]), T)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CheckError::ScriptSignal { signal: 15, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn script_that_cannot_start_fails() {
        let err = check_script(&script("/nonexistent/lbctl-check", &[]), T)
            .await
            .unwrap_err();
        assert!(matches!(err, CheckError::ScriptSpawn { .. }), "{err}");
    }

    #[tokio::test]
    async fn script_args_are_not_shell_interpreted() {
        // With a shell, `;` would run `false` after `true`.
        check_script(&script("/bin/echo", &["ok;", "false", "$(false)"]), T)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn slow_script_is_killed() {
        let start = Instant::now();
        let err = check_script(&script("/bin/sleep", &["10"]), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, CheckError::ScriptTimeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    /// Live (non-zombie) processes whose process group is `pgid`.
    fn live_members(pgid: i32) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...; comm may contain spaces.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
                found.push(stat);
            }
        }
        found
    }

    /// Starts `sh` that records its pid (= pgid), backgrounds a grandchild in
    /// its group and waits. The check future is dropped after `cut` if it has
    /// not finished by then. Returns its result (if any) and the pgid.
    async fn run_group_script(
        name: &str,
        check_timeout: Duration,
        cut: Duration,
    ) -> (Option<Result<(), CheckError>>, i32) {
        let dir = std::env::temp_dir().join(format!("lbctl-health-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pgid");
        let cmd = format!("echo $$ > {}; sleep 10 & sleep 10; wait", pidfile.display());
        let check = script("/bin/sh", &["-c", &cmd]);
        let result = tokio::time::timeout(cut, check_script(&check, check_timeout))
            .await
            .ok();
        let pgid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (result, pgid)
    }

    async fn assert_group_gone(pgid: i32) {
        // SIGKILL is delivered at once, but give the kernel a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let live = live_members(pgid);
            if live.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "still running: {live:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let (result, pgid) = run_group_script(
            "timeout",
            Duration::from_millis(300),
            Duration::from_secs(5),
        )
        .await;
        let err = result.expect("check returned").unwrap_err();
        assert!(matches!(err, CheckError::ScriptTimeout { .. }), "{err}");
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn cancelled_check_kills_the_whole_process_group() {
        let (result, pgid) =
            run_group_script("cancel", Duration::from_secs(5), Duration::from_millis(300)).await;
        assert!(result.is_none(), "check finished unexpectedly: {result:?}");
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn http_path_must_be_absolute() {
        let err = check_http(&HttpCheck::new(localhost(1), "health"), T)
            .await
            .unwrap_err();
        assert!(matches!(err, CheckError::InvalidRequest(_)), "{err}");
    }
}
