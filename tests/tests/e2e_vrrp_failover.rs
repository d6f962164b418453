//! Two lbctl nodes with VRRP: a TCP connection through the VIP survives the
//! loss of the master, because both nodes pick the same backend (identical
//! config → identical Maglev tables), something LVS without its sync daemon
//! does not do.
//!
//! Topology, all on one bridge (namespace `br`): a client, two LB nodes
//! (`lb1`, priority 150, and `lb2`, priority 100, each running the daemon
//! in-process on a thread inside its namespace, VRRPv3 every 100 ms,
//! `track_backends`), two real servers running a TCP echo server and holding
//! the VIP on `lo` with ARP suppressed (DR). The VIP is on the client's
//! subnet: the client ARPs for it, the master answers, and the new master's
//! gratuitous ARP moves it.
//!
//! The scenario:
//! 1. lb1 becomes MASTER, lb2 BACKUP; the client opens one connection and
//!    echoes 512-byte blocks through it in a loop (bounded in time).
//! 2. lb1 dies: it is taken off the bridge (its port stays up, so lb1 sees
//!    no carrier loss) and its daemon's runtime is dropped: no priority 0,
//!    no cleanup, the VIP stays on lb1's interface, like a crashed node. lb2 must become MASTER within Master_Down_Interval plus a
//!    tolerance and forward the connection to the same server: no reset,
//!    data keeps flowing. Among the live nodes only lb2 holds the VIP.
//! 3. lb1 comes back (cable in, daemon restarted): it removes the VIP its
//!    crash left behind, waits for its backends (track_backends), preempts,
//!    and the connection survives that handover too; afterwards exactly one
//!    node holds the VIP.
//!
//! Prints the failover time, the stall seen by the connection and the bytes
//! echoed before and after. Needs root. Namespaces are `lbt-vf-<role>-<pid>`,
//! removed on drop, also when the test fails.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use lbctl::api::{self, Request, Response, StatusReport};
use lbctl::daemon;
use tests::netns::{NetNs, PassHolder, bridge, unique_name, veth_pair, wait_until};
use tokio_util::sync::CancellationToken;

const LB_IPS: [&str; 2] = ["10.78.0.1", "10.78.0.2"];
const PRIORITIES: [u8; 2] = [150, 100];
const CLIENT_IP: &str = "10.78.0.10";
const SERVER_IPS: [&str; 2] = ["10.78.0.11", "10.78.0.12"];
const VIP: &str = "10.78.0.100";
const PORT: u16 = 8080;
const ADVERT_MS: u64 = 100;
const BLOCK: usize = 512;
const POLL: Duration = Duration::from_millis(10);

/// Master_Down_Interval of the backup (RFC 5798 §6.1): 3 × interval + skew,
/// skew = (256 − priority) × interval / 256.
fn master_down_interval(priority: u8) -> Duration {
    Duration::from_micros(
        3 * ADVERT_MS * 1000 + (256 - u64::from(priority)) * ADVERT_MS * 1000 / 256,
    )
}

// ---------------------------------------------------------------------------
// Topology.

struct Topology {
    br: NetNs,
    client: NetNs,
    lbs: [NetNs; 2],
    servers: [NetNs; 2],
    /// LB interface names: unique, since pins are named after them.
    lb_ifs: [String; 2],
    dir: PathBuf,
}

impl Topology {
    /// `tag` (one short word per test) keeps the names of tests running in
    /// parallel apart.
    fn new(tag: &str) -> Result<Topology> {
        let pid = std::process::id();
        let test = format!("vf{tag}");
        let test = test.as_str();
        let dir = std::env::temp_dir().join(unique_name(test, "dir"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).context("temp dir")?;
        let t = Topology {
            br: NetNs::new(&unique_name(test, "br"))?,
            client: NetNs::new(&unique_name(test, "client"))?,
            lbs: [
                NetNs::new(&unique_name(test, "lb1"))?,
                NetNs::new(&unique_name(test, "lb2"))?,
            ],
            servers: [
                NetNs::new(&unique_name(test, "s1"))?,
                NetNs::new(&unique_name(test, "s2"))?,
            ],
            lb_ifs: [
                format!("va{tag}{}", pid % 1_000_000),
                format!("vb{tag}{}", pid % 1_000_000),
            ],
            dir,
        };
        for k in ["iptables", "ip6tables", "arptables"] {
            // Not every kernel has br_netfilter: best effort.
            let _ =
                t.br.exec(&["sysctl", "-qw", &format!("net.bridge.bridge-nf-call-{k}=0")]);
        }
        let mut ports = Vec::new();
        let mut nodes: Vec<(&NetNs, &str, &str, String)> =
            vec![(&t.client, "e0", CLIENT_IP, "pc".into())];
        for i in 0..2 {
            nodes.push((&t.lbs[i], &t.lb_ifs[i], LB_IPS[i], format!("plb{}", i + 1)));
            nodes.push((&t.servers[i], "e0", SERVER_IPS[i], format!("ps{}", i + 1)));
        }
        for (ns, ifname, ip, port) in &nodes {
            veth_pair(ns, ifname, &t.br, port)?;
            ns.addr_add(ifname, &format!("{ip}/24"))?;
            ns.link_up(ifname)?;
            for k in ["all", "default", ifname] {
                ns.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
            }
            ports.push(port.clone());
        }
        let port_refs: Vec<&str> = ports.iter().map(String::as_str).collect();
        bridge(&t.br, "br0", &port_refs)?;
        // Locally generated packets on veth carry partial checksums, which
        // XDP_TX does not complete: the client's stack fills them in.
        t.client.run(&["ethtool", "-K", "e0", "tx", "off"])?;
        // DR: real servers hold the VIP on loopback and never answer ARP for it.
        for s in &t.servers {
            s.addr_add("lo", &format!("{VIP}/32"))?;
            for k in ["all", "e0"] {
                s.sysctl(&format!("net.ipv4.conf.{k}.arp_ignore"), "1")?;
                s.sysctl(&format!("net.ipv4.conf.{k}.arp_announce"), "2")?;
            }
        }
        Ok(t)
    }

    fn config(&self, i: usize, keep: bool) -> Result<PathBuf> {
        let dir = self.dir.join(format!("lb{}", i + 1));
        std::fs::create_dir_all(&dir).context("state dir")?;
        // Identical but for the interface name, the state directory and the
        // priority: same VIP, backends, weights and table size.
        let text = format!(
            r#"[node]
interface = "{iface}"
state_dir = "{state}"
max_vips = 4
conn_table_size = 65536
keep_dataplane_on_exit = {keep}
[[vip]]
name = "echo"
address = "{VIP}"
port = {PORT}
forwarding = "dr"
table_size = 4099
vrrp_instance = "VI_E"
health_check = {{ type = "tcp", interval = "200ms", timeout = "100ms", rise = 1, fall = 2 }}
  [[vip.backend]]
  address = "{s1}"
  weight = 100
  [[vip.backend]]
  address = "{s2}"
  weight = 100
[[vrrp_instance]]
name = "VI_E"
interface = "{iface}"
virtual_router_id = 42
priority = {prio}
advert_int = "{ADVERT_MS}ms"
version = 3
virtual_ipaddress = ["{VIP}/32"]
track_backends = {{ weight = -50 }}
garp_master_repeat = 3
garp_interval = "10ms"
garp_master_delay = "1s"
"#,
            iface = self.lb_ifs[i],
            state = dir.join("state").display(),
            s1 = SERVER_IPS[0],
            s2 = SERVER_IPS[1],
            prio = PRIORITIES[i],
        );
        let path = dir.join("lb.toml");
        std::fs::write(&path, text).context("write config")?;
        Ok(path)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for i in &self.lb_ifs {
            daemon::pin::remove_pins(&daemon::pin::PinDir::for_interface(i));
            let _ = std::fs::remove_file(daemon::lock::pins_lock_path(
                std::path::Path::new(daemon::lock::PINS_LOCK_DIR),
                i,
            ));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Echo servers: every byte read is written back; echoed bytes are counted.

struct EchoServer {
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl EchoServer {
    fn start(ns: &NetNs) -> Result<EchoServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (s, e) = (Arc::clone(&stop), Arc::clone(&echoed));
        let thread = ns.enter_thread(move || {
            let l = match TcpListener::bind(("0.0.0.0", PORT)).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(l) => l,
                Err(err) => {
                    let _ = ready_tx.send(Err(err.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let mut conns = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (s, e) = (Arc::clone(&s), Arc::clone(&e));
                        conns.push(std::thread::spawn(move || echo(c, &s, &e)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("echo server")?
            .map_err(|e| anyhow!("bind :{PORT}: {e}"))?;
        Ok(EchoServer {
            stop,
            echoed,
            thread: Some(thread),
        })
    }
}

fn echo(mut c: TcpStream, stop: &AtomicBool, echoed: &AtomicU64) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
                echoed.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The long connection: the client writes a numbered block, reads it back,
// pauses, again, until told to stop or its time is up.

#[derive(Default)]
struct Progress {
    /// (when, total bytes echoed back so far) after every block.
    samples: Vec<(Instant, u64)>,
    /// Why it ended early.
    error: Option<String>,
}

struct Stream {
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Stream {
    fn start(client: &NetNs, limit: Duration) -> Result<Stream> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(Progress::default()));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&progress));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = client.enter_thread(move || {
            let vip = SocketAddr::new(VIP.parse().expect("VIP literal"), PORT);
            let mut c =
                match TcpStream::connect_timeout(&vip, Duration::from_secs(2)).and_then(|c| {
                    // Long enough to ride out a failover and TCP's retransmissions.
                    c.set_read_timeout(Some(Duration::from_secs(5)))?;
                    c.set_nodelay(true)?;
                    Ok(c)
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
            let _ = ready_tx.send(Ok(()));
            let start = Instant::now();
            let mut total = 0u64;
            let mut block = [0u8; BLOCK];
            let mut back = [0u8; BLOCK];
            // Bounded in time (limit) and count.
            for n in 0u64..1_000_000 {
                if s.load(Ordering::Relaxed) || start.elapsed() > limit {
                    break;
                }
                for (i, b) in block.iter_mut().enumerate() {
                    *b = (n as usize).wrapping_add(i) as u8;
                }
                let r = c.write_all(&block).and_then(|()| c.read_exact(&mut back));
                let mut g = p.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match r {
                    Ok(()) if back == block => {
                        total += BLOCK as u64;
                        g.samples.push((Instant::now(), total));
                    }
                    Ok(()) => {
                        g.error = Some(format!("block {n} came back altered"));
                        break;
                    }
                    Err(e) => {
                        g.error = Some(format!("block {n}: {e} ({:?})", e.kind()));
                        break;
                    }
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(5));
            }
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("stream thread")?
            .map_err(|e| anyhow!("connect to the VIP: {e}"))?;
        Ok(Stream {
            stop,
            progress,
            thread: Some(thread),
        })
    }

    fn bytes(&self) -> u64 {
        self.lock().samples.last().map_or(0, |s| s.1)
    }

    fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes echoed back at `t` (the last sample before it).
    fn bytes_at(&self, t: Instant) -> u64 {
        self.lock()
            .samples
            .iter()
            .take_while(|s| s.0 <= t)
            .last()
            .map_or(0, |s| s.1)
    }

    /// The longest time without an echoed block after `from` (until the
    /// last sample).
    fn max_stall_after(&self, from: Instant) -> Duration {
        let g = self.lock();
        let mut prev = from;
        let mut max = Duration::ZERO;
        for (t, _) in g.samples.iter().filter(|s| s.0 > from) {
            max = max.max(t.duration_since(prev));
            prev = *t;
        }
        max
    }

    /// Waits until `bytes` more were echoed (or the stream ended / `limit`).
    fn wait_more(&self, bytes: u64, limit: Duration) -> Result<()> {
        let target = self.bytes() + bytes;
        wait_until(limit, POLL, || {
            self.bytes() >= target || self.error().is_some()
        });
        if let Some(e) = self.error() {
            bail!("the connection broke: {e}");
        }
        ensure!(
            self.bytes() >= target,
            "the connection stalled: {} bytes, wanted {target} within {limit:?}",
            self.bytes()
        );
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The daemon, in-process, in an LB namespace, on its own runtime.

enum Cmd {
    /// Clean stop (priority 0, VIPs removed, data plane detached).
    Stop,
    /// Drop the daemon and its runtime without polling them again: no
    /// priority 0, the VIP stays on the interface (a crash).
    Kill,
}

struct Daemon {
    cancel: CancellationToken,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<String>>>,
    socket: PathBuf,
}

impl Daemon {
    fn start(ns: &NetNs, config: &Path) -> Result<Daemon> {
        let cancel = CancellationToken::new();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let path = config.to_owned();
        let state = config.parent().context("config dir")?.join("state");
        let socket = api::socket_path(&state);
        // A killed predecessor leaves its socket file behind.
        let _ = std::fs::remove_file(&socket);
        let c = cancel.clone();
        let thread = ns.enter_thread(move || -> String {
            // One thread: once `block_on` returns nothing of the daemon runs
            // again, so dropping it is a crash, not a shutdown.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return format!("runtime: {e}"),
            };
            let how = rt.block_on(async move {
                tokio::select! {
                    r = daemon::run(path, c, None) => match r {
                        Ok(()) => "stopped".to_owned(),
                        Err(e) => format!("daemon error: {e}"),
                    },
                    Ok(()) = kill_rx => "killed".to_owned(),
                }
            });
            drop(rt);
            how
        })?;
        let mut d = Daemon {
            cancel,
            kill: Some(kill_tx),
            thread: Some(thread),
            socket,
        };
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            d.socket.exists() || d.thread.as_ref().is_some_and(JoinHandle::is_finished)
        });
        if up.is_none() || !d.socket.exists() {
            d.cancel.cancel();
            let why = d.finish();
            bail!("daemon did not start: {why:?}");
        }
        Ok(d)
    }

    fn call(&self, req: Request) -> Result<Response> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(api::call(&self.socket, req))?)
    }

    fn status(&self) -> Result<StatusReport> {
        match self.call(Request::Status)? {
            Response::Status(s) => Ok(s),
            other => bail!("status: {other:?}"),
        }
    }

    /// Polls until the instance is in `state` with its full priority and the
    /// VIP's activity matches.
    fn wait_state(&self, state: &str, limit: Duration) -> Result<Duration> {
        let want_active = state == "MASTER";
        wait_until(limit, POLL, || {
            self.status().is_ok_and(|s| {
                s.vrrp.first().is_some_and(|v| {
                    v.state == state && v.priority == v.base_priority && v.backends_healthy
                }) && s.vips.first().is_some_and(|v| v.active == want_active)
            })
        })
        .with_context(|| {
            format!(
                "not {state} within {limit:?}: {:#?}",
                self.status().map(|s| (s.vrrp, s.vips))
            )
        })
    }

    fn send(&mut self, c: Cmd) -> Result<String> {
        match c {
            Cmd::Stop => self.cancel.cancel(),
            Cmd::Kill => {
                if let Some(k) = self.kill.take() {
                    let _ = k.send(());
                }
            }
        }
        self.finish()
    }

    /// Waits for the daemon thread (after a stop or kill was asked).
    fn finish(&mut self) -> Result<String> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("daemon thread panicked"))?,
            None => Ok("already gone".into()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = self.finish();
    }
}

// ---------------------------------------------------------------------------

/// The failover tests measure timings against Master_Down_Interval: run them
/// one at a time (four daemons at 100 ms adverts on two CPUs otherwise).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn connection_survives_master_loss() -> Result<()> {
    let _serial = serial();
    let t = Topology::new("n")?;
    let _pass = [
        PassHolder::new(&t.br, "plb1")?,
        PassHolder::new(&t.br, "plb2")?,
    ];
    let servers = [
        EchoServer::start(&t.servers[0])?,
        EchoServer::start(&t.servers[1])?,
    ];
    let cfgs = [t.config(0, false)?, t.config(1, false)?];

    // 1. lb1 master, lb2 backup.
    let mut lb1 = Daemon::start(&t.lbs[0], &cfgs[0])?;
    lb1.wait_state("MASTER", Duration::from_secs(10))?;
    let lb2 = Daemon::start(&t.lbs[1], &cfgs[1])?;
    lb2.wait_state("BACKUP", Duration::from_secs(10))?;
    ensure!(
        t.lbs[0].has_addr(VIP) && !t.lbs[1].has_addr(VIP),
        "VIP placement before"
    );

    let stream = Stream::start(&t.client, Duration::from_secs(60))?;
    stream.wait_more(64 * BLOCK as u64, Duration::from_secs(5))?;
    let served: Vec<u64> = servers
        .iter()
        .map(|s| s.echoed.load(Ordering::Relaxed))
        .collect();
    ensure!(
        served.iter().filter(|&&b| b > 0).count() == 1,
        "one server carries the connection: {served:?}"
    );
    let lb1_st = lb1.status()?;
    ensure!(
        lb1_st.vips[0].packets > 0,
        "lb1 forwarded nothing: {lb1_st:#?}"
    );

    // 2. lb1 dies: cable pulled, daemon gone without priority 0.
    let before = stream.bytes();
    let lb2_packets_before = lb2.status()?.vips[0].packets;
    // Off the bridge, its port still up: lb1 keeps its carrier, so nothing
    // on lb1 notices (a crash runs no fault handling).
    t.br.run(&["ip", "link", "set", "plb1", "nomaster"])?;
    let t_kill = Instant::now();
    let how = lb1.send(Cmd::Kill)?;
    ensure!(how == "killed", "lb1 daemon: {how}");
    let mdi = master_down_interval(PRIORITIES[1]);
    let tolerance = Duration::from_millis(400);
    lb2.wait_state("MASTER", mdi + tolerance + Duration::from_secs(2))?;
    let failover = t_kill.elapsed();
    ensure!(
        t.lbs[1].has_addr(VIP),
        "lb2 is MASTER but does not hold the VIP"
    );
    // The connection goes on, through lb2, to the same server.
    stream.wait_more(64 * BLOCK as u64, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(500));
    let after = stream.bytes() - stream.bytes_at(t_kill);
    let stall = stream.max_stall_after(t_kill);
    eprintln!(
        "e2e_vrrp_failover: lb2 MASTER {failover:?} after lb1 died (Master_Down_Interval {mdi:?}); \
         connection stalled {stall:?}; echoed {before} bytes before, {after} bytes after"
    );
    ensure!(
        failover <= mdi + tolerance,
        "failover took {failover:?}, more than Master_Down_Interval {mdi:?} + {tolerance:?}"
    );
    if let Some(e) = stream.error() {
        bail!("the connection broke over the failover: {e}");
    }
    let lb2_st = lb2.status()?;
    ensure!(
        lb2_st.vips[0].active && lb2_st.vips[0].packets > lb2_packets_before,
        "lb2 does not forward the connection: {lb2_st:#?}"
    );
    let served2: Vec<u64> = servers
        .iter()
        .map(|s| s.echoed.load(Ordering::Relaxed))
        .collect();
    ensure!(
        served2
            .iter()
            .zip(&served)
            .all(|(now, then)| (*then == 0) == (*now == 0)),
        "the connection moved to another server: {served:?} -> {served2:?}"
    );
    // Of the live nodes, only lb2 holds the VIP (lb1's crash left it on lb1,
    // which is off the network).
    ensure!(t.lbs[1].has_addr(VIP), "VIP on lb2");
    ensure!(
        t.lbs[0].has_addr(VIP),
        "the crash was expected to leave the VIP on lb1"
    );
    let v = &lb2_st.vrrp[0];
    ensure!(
        v.vrid == 42
            && v.interface == t.lb_ifs[1]
            && v.counters
                .as_ref()
                .is_some_and(|c| c.became_master == 1 && c.garp_sent > 0),
        "lb2 VRRP status: {v:#?}"
    );
    eprint!("{}", api::render_status(&lb2_st));

    // 3. lb1 comes back: stale VIP removed, preempts once its backends are
    // up; the connection survives the handover.
    t.br.run(&["ip", "link", "set", "plb1", "master", "br0"])?;
    let t_back = Instant::now();
    let lb1 = Daemon::start(&t.lbs[0], &cfgs[0])?;
    let took = lb1.wait_state("MASTER", Duration::from_secs(10))?;
    lb2.wait_state("BACKUP", Duration::from_secs(3))?;
    stream.wait_more(64 * BLOCK as u64, Duration::from_secs(5))?;
    let holders: Vec<bool> = t.lbs.iter().map(|n| n.has_addr(VIP)).collect();
    ensure!(
        holders == [true, false],
        "exactly one node (lb1) holds the VIP after settling: {holders:?}"
    );
    let stall_back = stream.max_stall_after(t_back);
    eprintln!(
        "e2e_vrrp_failover: lb1 back as MASTER after {:?} (restart {took:?}); connection stalled {stall_back:?}; \
         {} bytes echoed in all",
        t_back.elapsed(),
        stream.bytes()
    );
    if let Some(e) = stream.error() {
        bail!("the connection broke over the preemption: {e}");
    }
    let served3: Vec<u64> = servers
        .iter()
        .map(|s| s.echoed.load(Ordering::Relaxed))
        .collect();
    ensure!(
        served3
            .iter()
            .zip(&served)
            .all(|(now, then)| (*then == 0) == (*now == 0)),
        "the connection moved to another server: {served:?} -> {served3:?}"
    );
    let total = stream.bytes();
    drop(stream);
    ensure!(
        served3.iter().sum::<u64>() >= total,
        "server echoed {served3:?}, client got {total}"
    );
    let mut lb1 = lb1;
    let mut lb2 = lb2;
    ensure!(lb1.send(Cmd::Stop)? == "stopped", "lb1 clean stop");
    ensure!(lb2.send(Cmd::Stop)? == "stopped", "lb2 clean stop");
    ensure!(
        !t.lbs[0].has_addr(VIP) && !t.lbs[1].has_addr(VIP),
        "a clean stop removes the VIP"
    );
    Ok(())
}

/// The master's lbctl process dies (no priority 0, no clean-up: the VIP stays
/// on its interface) while the node stays on the network. With
/// `keep_dataplane_on_exit` the XDP link and maps are pinned from the start,
/// so the dead daemon's data plane keeps forwarding the connection to the same
/// backend until VRRP has moved the VIP: no reset from the dead node's kernel.
#[test]
fn connection_survives_master_daemon_sigkill() -> Result<()> {
    let _serial = serial();
    let t = Topology::new("k")?;
    let _pass = [
        PassHolder::new(&t.br, "plb1")?,
        PassHolder::new(&t.br, "plb2")?,
    ];
    let servers = [
        EchoServer::start(&t.servers[0])?,
        EchoServer::start(&t.servers[1])?,
    ];
    let cfgs = [t.config(0, true)?, t.config(1, true)?];
    let mut lb1 = Daemon::start(&t.lbs[0], &cfgs[0])?;
    lb1.wait_state("MASTER", Duration::from_secs(10))?;
    let mut lb2 = Daemon::start(&t.lbs[1], &cfgs[1])?;
    lb2.wait_state("BACKUP", Duration::from_secs(10))?;

    let stream = Stream::start(&t.client, Duration::from_secs(30))?;
    stream.wait_more(64 * BLOCK as u64, Duration::from_secs(5))?;
    let served: Vec<u64> = servers
        .iter()
        .map(|s| s.echoed.load(Ordering::Relaxed))
        .collect();

    // lb1's daemon dies on the spot; the node stays on the bridge.
    let before = stream.bytes();
    let t_kill = Instant::now();
    ensure!(lb1.send(Cmd::Kill)? == "killed", "lb1 daemon kill");
    ensure!(
        t.lbs[0].has_addr(VIP),
        "a killed daemon leaves the VIP on its node"
    );
    let mdi = master_down_interval(PRIORITIES[1]);
    let tolerance = Duration::from_millis(400);
    lb2.wait_state("MASTER", mdi + tolerance + Duration::from_secs(2))?;
    let failover = t_kill.elapsed();
    stream.wait_more(64 * BLOCK as u64, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(500));
    let after = stream.bytes() - stream.bytes_at(t_kill);
    eprintln!(
        "e2e_vrrp_failover: lbctl on the master SIGKILLed: lb2 MASTER after {failover:?} \
         (Master_Down_Interval {mdi:?}); connection stalled {:?}; echoed {before} bytes before, \
         {after} after",
        stream.max_stall_after(t_kill)
    );
    ensure!(
        failover <= mdi + tolerance,
        "failover took {failover:?}, more than {mdi:?} + {tolerance:?}"
    );
    if let Some(e) = stream.error() {
        bail!("the connection broke when the master's daemon died: {e}");
    }
    let served2: Vec<u64> = servers
        .iter()
        .map(|s| s.echoed.load(Ordering::Relaxed))
        .collect();
    ensure!(
        served2
            .iter()
            .zip(&served)
            .all(|(now, then)| (*then == 0) == (*now == 0)),
        "the connection moved to another server: {served:?} -> {served2:?}"
    );
    drop(stream);
    ensure!(lb2.send(Cmd::Stop)? == "stopped", "lb2 clean stop");
    Ok(())
}
