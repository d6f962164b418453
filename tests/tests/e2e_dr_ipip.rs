//! End to end in network namespaces, with real TCP and HTTP: a client, an
//! LB node running the daemon (`lbctl::daemon::run` in a thread inside the
//! LB namespace) and three real servers with HTTP responders, all on one
//! bridge. DR (servers hold the VIP on loopback with ARP suppressed) and
//! IPIP (servers decapsulate with `lbctl decap`'s code path).
//!
//! Each test: weighted spread over hundreds of connections; kill a backend →
//! it leaves within the health-check bound, new connections succeed, open
//! connections to survivors are not reset; bring it back → it rejoins;
//! reload with changed weights → the spread follows. The restart test keeps
//! the data plane over a daemon restart during a transfer, and refuses a
//! second daemon on the same config. The apply test reloads a config the
//! data plane cannot take and checks the error, the retries and recovery.
//!
//! Needs root. Namespaces are named `lbt-e2e-<test>-<pid>-*` and removed on
//! drop, also when a test fails.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lbctl::api::{self, Request, Response, StatusReport};
use lbctl::daemon;
use lbctl::dataplane::xdp::AttachMode;
use nix::sched::{CloneFlags, setns};
use tests::netns::PassHolder;
use tokio_util::sync::CancellationToken;

const LB_IP: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.10";
const SERVER_IPS: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];
const VIP: &str = "10.77.1.100";
const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const FALL: u64 = 2;

// ---------------------------------------------------------------------------
// Minimal private netns harness (to be consolidated with tests/src/netns.rs).

fn run(cmd: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_quiet(cmd: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread in {ns} panicked"))
    })
}

/// Moves the calling thread into namespace `ns`.
fn enter(ns: &str) {
    let f =
        File::open(format!("/var/run/netns/{ns}")).unwrap_or_else(|e| panic!("netns {ns}: {e}"));
    setns(&f, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {ns}: {e}"));
}

/// Namespaces of one test, deleted on drop.
struct Topology {
    prefix: String,
    lb_if: String,
    names: Vec<String>,
    dir: PathBuf,
}

impl Topology {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// client, lb, s1..s3 on a bridge in `br`.
    fn new(test: &str) -> Self {
        let pid = std::process::id();
        let prefix = format!("lbt-e2e-{test}-{pid}");
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut t = Topology {
            // Unique interface name: the pin directory is named after it.
            lb_if: format!("l{}{}", &test[..2.min(test.len())], pid % 1_000_000),
            prefix,
            names: Vec::new(),
            dir,
        };
        for role in ["br", "client", "lb", "s1", "s2", "s3"] {
            let n = t.ns(role);
            run_quiet(&format!("ip netns del {n}"));
            run(&format!("ip netns add {n}"));
            t.names.push(n.clone());
            run(&format!("ip -n {n} link set lo up"));
        }
        let br = t.ns("br");
        run(&format!("ip -n {br} link add br0 type bridge"));
        run(&format!("ip -n {br} link set br0 up"));
        for f in ["iptables", "ip6tables", "arptables"] {
            run_quiet(&format!(
                "ip netns exec {br} sysctl -qw net.bridge.bridge-nf-call-{f}=0"
            ));
        }
        let nodes: Vec<(&str, String, &str)> = vec![
            ("client", "e0".to_owned(), CLIENT_IP),
            ("lb", t.lb_if.clone(), LB_IP),
            ("s1", "e0".to_owned(), SERVER_IPS[0]),
            ("s2", "e0".to_owned(), SERVER_IPS[1]),
            ("s3", "e0".to_owned(), SERVER_IPS[2]),
        ];
        for (role, ifname, ip) in &nodes {
            let n = t.ns(role);
            let port = format!("p{role}");
            run(&format!(
                "ip link add {ifname} netns {n} type veth peer name {port} netns {br}"
            ));
            run(&format!("ip -n {br} link set {port} master br0 up"));
            run(&format!("ip -n {n} addr add {ip}/24 dev {ifname}"));
            run(&format!("ip -n {n} link set {ifname} up"));
            for k in ["all", "default", ifname.as_str()] {
                run_quiet(&format!(
                    "ip netns exec {n} sysctl -qw net.ipv4.conf.{k}.rp_filter=0"
                ));
            }
        }
        // Locally generated packets on veth carry partial checksums, which
        // XDP_TX does not complete: let the client's stack fill them in (real
        // traffic arriving from a wire has full checksums).
        run(&format!(
            "ip netns exec {} ethtool -K e0 tx off",
            t.ns("client")
        ));
        // The client reaches the VIP through the LB.
        run(&format!(
            "ip -n {} route add 10.77.1.0/24 via {LB_IP}",
            t.ns("client")
        ));
        // Real servers hold the VIP on loopback and never answer ARP for it.
        for s in ["s1", "s2", "s3"] {
            let n = t.ns(s);
            run(&format!("ip -n {n} addr add {VIP}/32 dev lo"));
            for k in ["all", "e0"] {
                run(&format!(
                    "ip netns exec {n} sysctl -qw net.ipv4.conf.{k}.arp_ignore=1"
                ));
                run(&format!(
                    "ip netns exec {n} sysctl -qw net.ipv4.conf.{k}.arp_announce=2"
                ));
            }
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        daemon::pin::remove_pins(&daemon::pin::PinDir::for_interface(&self.lb_if));
        let _ = std::fs::remove_file(daemon::lock::pins_lock_path(
            Path::new(daemon::lock::PINS_LOCK_DIR),
            &self.lb_if,
        ));
        for n in &self.names {
            run_quiet(&format!("ip netns del {n}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `lbctl decap` (its code path) inside a namespace, held by a thread until drop.
struct DecapHolder {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DecapHolder {
    /// `lbctl decap` (its code path) on `iface` in `ns`, accepting `addr`.
    fn decap(ns: &str, iface: &str, addr: IpAddr) -> Self {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let ns = ns.to_owned();
        let iface = iface.to_owned();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let cancel = CancellationToken::new();
            let c2 = cancel.clone();
            std::thread::spawn(move || {
                let _ = stop_rx.recv();
                c2.cancel();
            });
            rt.block_on(daemon::run_decap(&iface, &[addr], AttachMode::Auto, cancel))
                .unwrap_or_else(|e| panic!("decap: {e}"));
        });
        Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for DecapHolder {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP responders.

/// An HTTP/1.1 keep-alive responder on port 80 answering with its name;
/// `GET /big` streams 4 MiB slowly (about 2 s).
struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(ns: &str, name: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns = ns.to_owned();
        let name = name.to_owned();
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let l = TcpListener::bind("0.0.0.0:80").expect("bind :80");
            l.set_nonblocking(true).expect("nonblocking");
            let _ = ready_tx.send(());
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || serve_conn(conn, &name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        ready_rx.recv().expect("server ready");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_conn(mut c: TcpStream, name: &str) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 16 * 1024 {
                return;
            }
            continue;
        };
        let req: Vec<u8> = buf.drain(..end + 4).collect();
        if req.starts_with(b"GET /big ") {
            const TOTAL: usize = 4 << 20;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n");
            if c.write_all(head.as_bytes()).is_err() {
                return;
            }
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..TOTAL / block.len() {
                if c.write_all(&block).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        } else {
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            );
            if c.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Where the daemon serves metrics, inside the LB's namespace.
const METRICS: &str = "127.0.0.1:9650";

/// `GET path` from the daemon's metrics listener (from inside the LB's
/// namespace): the status line, the headers (lowercased) and the body.
fn scrape(t: &Topology, path: &str) -> (String, String, String) {
    let path = path.to_owned();
    in_ns(&t.ns("lb"), move || {
        let mut c =
            TcpStream::connect_timeout(&METRICS.parse().expect("addr"), Duration::from_secs(3))
                .expect("connect to the metrics listener");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("send");
        let mut all = String::new();
        c.read_to_string(&mut all).expect("read the answer");
        let (head, body) = all.split_once("\r\n\r\n").expect("a head and a body");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (
            status.to_owned(),
            headers.to_ascii_lowercase(),
            body.to_owned(),
        )
    })
}

/// Sends `GET path` on `c`, returns the body (Content-Length framed).
fn request(c: &mut TcpStream, path: &str) -> std::io::Result<Vec<u8>> {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: vip\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let (hdr_end, len) = loop {
        if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..e]).to_string();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| std::io::Error::other("no content length"))?;
            break (e + 4, len);
        }
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    while buf.len() < hdr_end + len {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf[hdr_end..hdr_end + len].to_vec())
}

fn vip_addr() -> SocketAddr {
    SocketAddr::new(VIP.parse().expect("vip"), 80)
}

fn connect() -> std::io::Result<TcpStream> {
    let c = TcpStream::connect_timeout(&vip_addr(), Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(c)
}

/// `n` one-request connections from the client; answers by server name
/// (failures counted under "error").
fn spread(t: &Topology, n: usize) -> BTreeMap<String, usize> {
    in_ns(&t.ns("client"), || {
        let mut out = BTreeMap::new();
        let mut errors_in_a_row = 0;
        for _ in 0..n {
            let who = connect()
                .and_then(|mut c| request(&mut c, "/"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("error: {e}"));
            if who.starts_with("error") {
                errors_in_a_row += 1;
                *out.entry("error".to_owned()).or_insert(0) += 1;
                // Bounded: stop early when the VIP does not answer at all.
                if errors_in_a_row >= 3 {
                    out.insert(who, 1);
                    break;
                }
                continue;
            }
            errors_in_a_row = 0;
            *out.entry(who).or_insert(0) += 1;
        }
        out
    })
}

// ---------------------------------------------------------------------------
// The daemon, in-process, in the LB namespace.

struct Daemon {
    cancel: CancellationToken,
    thread: Option<JoinHandle<Result<(), String>>>,
    socket: PathBuf,
}

impl Daemon {
    /// The daemon's thread in the LB namespace, and its cancel token.
    fn spawn(t: &Topology, config: &Path) -> (CancellationToken, JoinHandle<Result<(), String>>) {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let ns = t.ns("lb");
        let path = config.to_owned();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(daemon::run(path, c, None))
                .map_err(|e| e.to_string())
        });
        (cancel, thread)
    }

    fn start(t: &Topology, config: &Path) -> Self {
        let (cancel, thread) = Self::spawn(t, config);
        let d = Daemon {
            cancel,
            thread: Some(thread),
            socket: t.dir.join("state").join(api::SOCKET_NAME),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Until the socket takes connections: its file appears at bind(),
        // a moment before listen().
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            assert!(Instant::now() < deadline, "daemon did not start");
            if d.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let mut d = d;
                let r = d.thread.take().map(JoinHandle::join);
                panic!("daemon exited at start: {r:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// Runs a daemon on `config` that must fail at start; its error.
    fn start_error(t: &Topology, config: &Path) -> String {
        let (cancel, thread) = Self::spawn(t, config);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() {
            if Instant::now() > deadline {
                cancel.cancel();
                let r = thread.join();
                panic!("a second daemon started: {r:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match thread.join() {
            Ok(Err(e)) => e,
            other => panic!("a second daemon did not fail: {other:?}"),
        }
    }

    fn call(&self, req: Request) -> Response {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(api::call(&self.socket, req))
            .unwrap_or_else(|e| panic!("api call: {e}"))
    }

    fn status(&self) -> StatusReport {
        match self.call(Request::Status) {
            Response::Status(s) => s,
            other => panic!("status: {other:?}"),
        }
    }

    /// Backends of the VIP that take new flows.
    fn in_ring(&self) -> Vec<String> {
        self.status().vips[0]
            .backends
            .iter()
            .filter(|b| b.in_ring)
            .map(|b| b.address.clone())
            .collect()
    }

    fn wait_in_ring(&self, want: &[&str], limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.in_ring();
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "backends in ring {got:?}, want {want:?} within {limit:?}; status {:#?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> Result<(), String> {
        self.cancel.cancel();
        self.thread.take().map_or(Ok(()), |t| {
            t.join().unwrap_or_else(|_| Err("daemon panicked".into()))
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_config(t: &Topology, forwarding: &str, weights: [u16; 3], keep: bool) -> PathBuf {
    write_config_interval(t, forwarding, weights, keep, INTERVAL_MS)
}

/// [`write_config`] with the health check every `interval_ms`.
fn write_config_interval(
    t: &Topology,
    forwarding: &str,
    weights: [u16; 3],
    keep: bool,
    interval_ms: u64,
) -> PathBuf {
    let check = format!(
        r#"{{ type = "http", path = "/health", interval = "{interval_ms}ms", timeout = "{TIMEOUT_MS}ms", rise = 2, fall = {FALL} }}"#
    );
    let backends = SERVER_IPS
        .iter()
        .zip(weights)
        .map(|(ip, w)| format!("  [[vip.backend]]\n  address = \"{ip}\"\n  weight = {w}\n"));
    write_lb_toml(t, forwarding, keep, &check, backends)
}

/// Writes `lb.toml` in the test's directory: the LB node, one VIP `web` on
/// port 80 forwarded by `forwarding` with `health_check`, then `backends`
/// (each a `[[vip.backend]]` table).
fn write_lb_toml(
    t: &Topology,
    forwarding: &str,
    keep: bool,
    health_check: &str,
    backends: impl Iterator<Item = String>,
) -> PathBuf {
    let mut s = format!(
        r#"[node]
interface = "{lb_if}"
state_dir = "{dir}/state"
max_vips = 4
conn_table_size = 65536
keep_dataplane_on_exit = {keep}
metrics_listen = "{METRICS}"
[ipip]
source_v4 = "{LB_IP}"
[[vip]]
name = "web"
address = "{VIP}"
port = 80
forwarding = "{forwarding}"
table_size = 4099
health_check = {health_check}
"#,
        lb_if = t.lb_if,
        dir = t.dir.display(),
    );
    s.extend(backends);
    let path = t.dir.join("lb.toml");
    std::fs::write(&path, s).expect("write config");
    path
}

fn assert_spread(got: &BTreeMap<String, usize>, weights: &[(&str, u16)], n: usize) {
    assert!(
        !got.keys().any(|k| k.starts_with("error")),
        "failed connections: {got:?}"
    );
    let total: u16 = weights.iter().map(|(_, w)| w).sum();
    for (name, w) in weights {
        let expected = n as f64 * f64::from(*w) / f64::from(total);
        let observed = got.get(*name).copied().unwrap_or(0) as f64;
        let tol = (0.3 * expected).max(20.0);
        assert!(
            (observed - expected).abs() <= tol,
            "{name}: {observed} connections, expected {expected:.0} ± {tol:.0}; spread {got:?}"
        );
    }
    let unexpected: Vec<&String> = got
        .keys()
        .filter(|k| !weights.iter().any(|(n, _)| n == k))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected servers {unexpected:?} in {got:?}"
    );
}

/// Shared scenario of the DR and IPIP tests.
fn scenario(test: &str, forwarding: &str) {
    let t = Topology::new(test);
    let _pass = PassHolder::in_named(&t.ns("br"), "plb").expect("pass on plb");
    let _decaps: Vec<DecapHolder> = if forwarding == "ipip" {
        ["s1", "s2", "s3"]
            .iter()
            .zip(SERVER_IPS)
            .map(|(s, ip)| DecapHolder::decap(&t.ns(s), "e0", ip.parse().expect("ip")))
            .collect()
    } else {
        Vec::new()
    };
    let mut servers: Vec<Option<HttpServer>> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| Some(HttpServer::start(&t.ns(s), s)))
        .collect();
    let cfg = write_config(&t, forwarding, [100, 200, 300], false);
    let d = Daemon::start(&t, &cfg);
    d.wait_in_ring(&SERVER_IPS, Duration::from_secs(10));

    // Weighted spread.
    let n = 600;
    let got = spread(&t, n);
    if got.contains_key("error") {
        eprintln!("stats: {:#?}", d.call(Request::Stats));
    }
    assert_spread(&got, &[("s1", 100), ("s2", 200), ("s3", 300)], n);
    let st = d.status();
    let vip = &st.vips[0];
    assert!(vip.active && vip.packets > 0, "{vip:?}");
    assert!(
        vip.backends
            .iter()
            .all(|b| b.packets > 0 && b.mac.is_some()),
        "{vip:?}"
    );
    let Response::Stats(stats) = d.call(Request::Stats) else {
        panic!("stats")
    };
    let fwd = stats
        .reasons
        .get(&format!("fwd_{forwarding}"))
        .copied()
        .unwrap_or(0);
    assert!(
        fwd >= n as u64,
        "fwd_{forwarding} = {fwd}: {:?}",
        stats.reasons
    );

    // The same figures for Prometheus.
    let (status, headers, body) = scrape(&t, "/metrics");
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let sample = |line_start: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {line_start}:\n{body}"))
    };
    let scraped = sample(&format!(
        "lbctl_xdp_packets_total{{reason=\"fwd_{forwarding}\"}} "
    ));
    assert!(scraped >= fwd, "scraped {scraped}, counted {fwd}");
    let labels = format!("vip=\"web\",address=\"{VIP}:80/tcp\"");
    assert_eq!(sample(&format!("lbctl_vip_active{{{labels}}} ")), 1);
    for ip in SERVER_IPS {
        let b = format!("{labels},backend=\"{ip}\"");
        assert_eq!(sample(&format!("lbctl_backend_up{{{b}}} ")), 1, "{ip}");
        assert!(
            sample(&format!("lbctl_backend_packets_total{{{b}}} ")) > 0,
            "{ip}"
        );
    }
    let (status, _, _) = scrape(&t, "/");
    assert!(status.contains(" 404 "), "{status}");

    // Open connections to the survivors.
    let mut open: Vec<(String, TcpStream)> = in_ns(&t.ns("client"), || {
        let mut v = Vec::new();
        for _ in 0..60 {
            let mut c = connect().expect("connect");
            let who = String::from_utf8_lossy(&request(&mut c, "/").expect("request")).into_owned();
            if who != "s2" {
                v.push((who, c));
            }
        }
        v
    });
    assert!(open.iter().any(|(w, _)| w == "s1") && open.iter().any(|(w, _)| w == "s3"));

    // Kill s2: it leaves within the health-check bound.
    servers[1] = None;
    let bound =
        Duration::from_millis(FALL * (INTERVAL_MS * 11 / 10 + TIMEOUT_MS) + INTERVAL_MS + 250);
    let took = d.wait_in_ring(&[SERVER_IPS[0], SERVER_IPS[2]], bound);
    eprintln!("{test}: s2 left the table after {took:?} (bound {bound:?})");
    let got = spread(&t, 200);
    assert_spread(&got, &[("s1", 100), ("s3", 300)], 200);
    for (who, c) in &mut open {
        let again =
            request(c, "/").unwrap_or_else(|e| panic!("open connection to {who} broke: {e}"));
        assert_eq!(String::from_utf8_lossy(&again), *who, "flow moved");
    }
    drop(open);

    // Bring it back: it rejoins.
    servers[1] = Some(HttpServer::start(&t.ns("s2"), "s2"));
    let took = d.wait_in_ring(&SERVER_IPS, Duration::from_secs(5));
    eprintln!("{test}: s2 rejoined after {took:?}");
    let got = spread(&t, n);
    assert_spread(&got, &[("s1", 100), ("s2", 200), ("s3", 300)], n);

    // Reload with changed weights: the spread follows, checks keep running.
    let cfg = write_config(&t, forwarding, [300, 200, 0], false);
    match d.call(Request::Reload) {
        Response::Reloaded(r) => {
            assert_eq!(
                (r.checks_kept, r.checks_started, r.checks_stopped),
                (3, 0, 0),
                "{r:?}"
            );
        }
        other => panic!("reload: {other:?}"),
    }
    let got = spread(&t, n);
    assert_spread(&got, &[("s1", 300), ("s2", 200)], n);

    // A bad config is refused and the running one stays.
    std::fs::write(&cfg, "[node]\ninterface = 7\n").expect("write");
    match d.call(Request::Reload) {
        Response::Error { message } => {
            assert!(message.contains("lb.toml:2:13:"), "{message}");
        }
        other => panic!("bad reload accepted: {other:?}"),
    }
    assert_eq!(d.status().config_generation, 2);
    let got = spread(&t, 100);
    assert_eq!(got.get("error"), None, "{got:?}");

    // A reload that changes only the checks' interval restarts them, from
    // the backends' current health: no backend leaves the ring meanwhile.
    write_config_interval(&t, forwarding, [300, 200, 0], false, INTERVAL_MS + 100);
    match d.call(Request::Reload) {
        Response::Reloaded(r) => {
            assert_eq!(
                (
                    r.checks_kept,
                    r.checks_started,
                    r.checks_stopped,
                    r.checks_restarted
                ),
                (0, 3, 3, 3),
                "{r:?}"
            );
        }
        other => panic!("reload: {other:?}"),
    }
    let st = d.status();
    assert_eq!(st.config_generation, 3);
    let health: Vec<(&str, &str, bool)> = st.vips[0]
        .backends
        .iter()
        .map(|b| (b.address.as_str(), b.health.as_str(), b.in_ring))
        .collect();
    assert_eq!(
        health,
        vec![
            (SERVER_IPS[0], "up", true),
            (SERVER_IPS[1], "up", true),
            (SERVER_IPS[2], "up", false), // weight 0
        ],
        "right after the reload"
    );
    let got = spread(&t, 200);
    assert_spread(&got, &[("s1", 300), ("s2", 200)], 200);

    d.stop().expect("daemon exit");
    // Detached: the VIP is no longer served.
    let after = in_ns(&t.ns("client"), || {
        TcpStream::connect_timeout(&vip_addr(), Duration::from_millis(500)).is_ok()
    });
    assert!(!after, "VIP still answers after the daemon detached");
}

#[test]
fn dr_spread_kill_rejoin_reload() {
    scenario("dr", "dr");
}

#[test]
fn ipip_spread_kill_rejoin_reload() {
    scenario("ipip", "ipip");
}

#[test]
fn restart_keeps_flows_and_transfers() {
    let t = Topology::new("restart");
    let _pass = PassHolder::in_named(&t.ns("br"), "plb").expect("pass on plb");
    let _servers: Vec<HttpServer> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| HttpServer::start(&t.ns(s), s))
        .collect();
    let cfg = write_config(&t, "dr", [100, 100, 100], true);
    let d = Daemon::start(&t, &cfg);
    d.wait_in_ring(&SERVER_IPS, Duration::from_secs(10));
    let got = spread(&t, 60);
    assert!(!got.keys().any(|k| k.starts_with("error")), "{got:?}");
    let packets_before = d.status().vips[0].packets;

    // Keep-alive connections and a ~2 s download through the VIP.
    let mut open: Vec<(String, TcpStream)> = in_ns(&t.ns("client"), || {
        (0..30)
            .map(|_| {
                let mut c = connect().expect("connect");
                let who = request(&mut c, "/").expect("request");
                (String::from_utf8_lossy(&who).into_owned(), c)
            })
            .collect()
    });
    let client_ns = t.ns("client");
    let transfer = std::thread::spawn(move || {
        enter(&client_ns);
        let mut c = connect().map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        request(&mut c, "/big")
            .map(|b| b.len())
            .map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_millis(300));

    // The daemon exits; the program keeps forwarding on its own.
    d.stop().expect("daemon exit");
    let pins = daemon::pin::PinDir::for_interface(&t.lb_if);
    assert!(pins.link().exists(), "link not pinned");
    let got = spread(&t, 30);
    assert!(
        !got.keys().any(|k| k.starts_with("error")),
        "no forwarding without a daemon: {got:?}"
    );

    // A new daemon adopts it: the table is complete at once.
    let d = Daemon::start(&t, &cfg);
    let st = d.status();
    assert_eq!(st.xdp_mode, "adopted");
    let in_ring: Vec<&str> = st.vips[0]
        .backends
        .iter()
        .filter(|b| b.in_ring)
        .map(|b| b.address.as_str())
        .collect();
    assert_eq!(in_ring, SERVER_IPS, "adopted table incomplete: {st:#?}");
    assert!(st.vips[0].packets > packets_before, "counters restarted");
    assert!(
        pins.link().exists(),
        "the link stays pinned while the daemon runs, so a crash keeps forwarding"
    );

    // Reloading the unchanged config changes no check: the checks of the
    // backends seeded healthy from the adopted plane keep running, and no
    // backend leaves the ring.
    match d.call(Request::Reload) {
        Response::Reloaded(r) => assert_eq!(
            (r.checks_kept, r.checks_started, r.checks_stopped),
            (3, 0, 0),
            "{r:?}"
        ),
        other => panic!("reload: {other:?}"),
    }
    assert_eq!(d.in_ring(), SERVER_IPS, "right after the reload");

    // A second daemon on the same config is refused before it touches the
    // data plane: the running one keeps forwarding, its link stays pinned.
    let err = Daemon::start_error(&t, &cfg);
    assert!(
        err.contains("another lbctl daemon") && err.contains(daemon::lock::LOCK_NAME),
        "{err}"
    );
    assert!(
        pins.link().exists(),
        "a refused second daemon unpinned the running daemon's link"
    );
    let got = spread(&t, 60);
    assert_spread(&got, &[("s1", 100), ("s2", 100), ("s3", 100)], 60);
    assert_eq!(d.in_ring(), SERVER_IPS);

    let len = transfer
        .join()
        .expect("transfer thread")
        .unwrap_or_else(|e| panic!("transfer broke over the restart: {e}"));
    assert_eq!(len, 4 << 20);
    for (who, c) in &mut open {
        let again =
            request(c, "/").unwrap_or_else(|e| panic!("open connection to {who} broke: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&again),
            *who,
            "flow moved over the restart"
        );
    }
    let got = spread(&t, 60);
    assert!(!got.keys().any(|k| k.starts_with("error")), "{got:?}");
    d.stop().expect("daemon exit");
}

/// A config with `n` backends (no checks) from `base` (a /16 routed via s1,
/// so their next hops resolve), forwarded by IPIP.
fn write_many_backends_config(t: &Topology, base: [u8; 2], n: usize) -> PathBuf {
    let backends = (0..n).map(|i| {
        format!(
            "  [[vip.backend]]\n  address = \"{}.{}.{}.{}\"\n",
            base[0],
            base[1],
            i / 250,
            i % 250 + 1
        )
    });
    write_lb_toml(t, "ipip", false, r#"{ type = "none" }"#, backends)
}

/// A reload the data plane cannot apply is answered with an error that
/// says what runs, the apply is retried on a timer and counted in status,
/// and a reload that applies clears the error. Replacing all 2048 backends
/// of a VIP needs 4096 backend ids at once (the new ones are taken before
/// the old ones are released), one more than exist.
#[test]
fn unappliable_reload_is_reported_and_retried() {
    let t = Topology::new("apply");
    run(&format!(
        "ip -n {} route add 10.200.0.0/15 via {}",
        t.ns("lb"),
        SERVER_IPS[0]
    ));
    let n = 2048;
    let cfg = write_many_backends_config(&t, [10, 200], n);
    let d = Daemon::start(&t, &cfg);
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.in_ring().len() < n {
        assert!(Instant::now() < deadline, "backends did not resolve");
        std::thread::sleep(Duration::from_millis(200));
    }

    write_many_backends_config(&t, [10, 201], n);
    match d.call(Request::Reload) {
        Response::Error { message } => assert!(
            message.contains("config generation 2 is loaded")
                && message.contains("more than 4095 backends")
                && message.contains("holds the previous state with part of the new one")
                && message.contains("retried"),
            "{message}"
        ),
        other => panic!("an unappliable reload answered {other:?}"),
    }
    let st = d.status();
    assert_eq!(st.config_generation, 2);
    assert!(
        st.apply_error
            .as_deref()
            .is_some_and(|e| e.contains("4095")),
        "{:?}",
        st.apply_error
    );
    let first = st.apply_failures;
    assert!(first >= 1);
    // Retried on a timer (after 1 s, then 2 s), not only on events.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.status().apply_failures <= first {
        assert!(Instant::now() < deadline, "the failed apply is not retried");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The old backends still serve meanwhile.
    assert_eq!(d.in_ring().len(), n);

    // A config that applies clears the error.
    write_many_backends_config(&t, [10, 200], n);
    match d.call(Request::Reload) {
        Response::Reloaded(r) => assert_eq!(r.config_generation, 3),
        other => panic!("reload back: {other:?}"),
    }
    let st = d.status();
    assert_eq!(st.apply_error, None);
    assert!(st.apply_failures >= 2);
    d.stop().expect("daemon exit");
}
