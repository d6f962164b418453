//! The guest half of the kernel-VM IPVS test (`ipvs_vm.rs` is the host half).
//!
//! Built static and put into the initramfs of a Debian 6.1 kernel that has
//! IPVS; the guest's `/init` runs it with `LBCTL_IPVS_GUEST=1`, and it refuses
//! to run anywhere else (it flushes IPVS and creates interfaces). It programs IPVS through lbctl's data
//! plane, checks `ipvsadm -Ln` (the kernel's view, through ipvsadm's own
//! code) after every step, and prints `IPVS-VM:` markers on the serial
//! console for the host to assert on.
//!
//! Then the daemon: the static `/bin/lbctl` (built next to this binary)
//! runs from an lb.toml with `dataplane = "ipvs"`; script health checks
//! toggled by files, `lbctl reload`, a SIGKILL and restart, and SIGTERM show
//! up in `ipvsadm -Ln` exactly; a service made with ipvsadm survives it all.
//! Last, `dataplane = "auto"` falls back to IPVS (this lbctl is built
//! without its eBPF object, so the XDP program cannot load).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use lbctl::dataplane::{
    BackendSpec, DesiredState, Forwarding, HashFields, NodeSettings, Protocol, VipSpec, VipState,
    ipvs::{IpvsDataplane, IpvsForwarding, IpvsOptions, Scheduler, VipOptions},
};

/// One line of `ipvsadm -Ln`, reduced to what the test compares.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Line {
    /// `PROT ADDR:PORT SCHED [flags...]`
    Service(String),
    /// `SERVICE -> ADDR:PORT FORWARD WEIGHT`
    Dest(String),
}

fn ipvsadm(args: &[&str]) -> String {
    let out = Command::new("ipvsadm")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ipvsadm {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ipvsadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ipvsadm -Ln` as a set of normalised lines (columns joined by one space,
/// connection counters dropped).
fn table() -> BTreeSet<Line> {
    let text = ipvsadm(&["-Ln"]);
    println!("--- ipvsadm -Ln\n{text}---");
    let mut out = BTreeSet::new();
    let mut svc = String::new();
    for l in text.lines() {
        let t: Vec<&str> = l.split_whitespace().collect();
        match t.first() {
            Some(&("TCP" | "UDP" | "FWM")) => {
                svc = t.join(" ");
                out.insert(Line::Service(svc.clone()));
            }
            Some(&"->") if t.get(1) != Some(&"RemoteAddress:Port") => {
                // -> ADDR:PORT FORWARD WEIGHT ACTIVE INACTIVE
                out.insert(Line::Dest(format!("{svc} -> {}", t[1..4].join(" "))));
            }
            _ => {}
        }
    }
    out
}

/// The table lines `want` names (a line with ` -> ` is a real server).
fn lines(want: &[&str]) -> BTreeSet<Line> {
    want.iter()
        .map(|s| {
            if s.contains(" -> ") {
                Line::Dest((*s).to_owned())
            } else {
                Line::Service((*s).to_owned())
            }
        })
        .collect()
}

/// Prints the FAIL marker of `step` and how `got` differs from `want`.
fn report_diff(step: &str, want: &BTreeSet<Line>, got: &BTreeSet<Line>) {
    println!("IPVS-VM: FAIL {step}");
    println!(
        "  missing:    {:?}",
        want.difference(got).collect::<Vec<_>>()
    );
    println!(
        "  unexpected: {:?}",
        got.difference(want).collect::<Vec<_>>()
    );
}

fn expect(step: &str, want: &[&str]) {
    let want = lines(want);
    let got = table();
    if got != want {
        report_diff(step, &want, &got);
        panic!("{step}: ipvsadm -Ln differs");
    }
    println!("IPVS-VM: PASS {step}");
}

/// Sends `sig` to `child` (`what`) and waits up to `limit` for its exit;
/// otherwise calls `on_fail` (to show a log) and panics.
fn signal_and_wait(
    child: &mut std::process::Child,
    sig: nix::sys::signal::Signal,
    what: &str,
    limit: Duration,
    on_fail: impl Fn(),
) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, sig).expect("kill");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() > deadline {
            on_fail();
            panic!("{what} did not exit on {sig}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `limit` until `ipvsadm -Ln` is exactly `want`; on a
/// timeout reports the difference, calls `on_fail` (to show a log) and
/// panics.
fn settle_within(step: &str, want: &[&str], limit: Duration, on_fail: impl Fn()) {
    let want = lines(want);
    let start = Instant::now();
    loop {
        let got = table();
        if got == want {
            println!("{step} settled after {:?}", start.elapsed());
            println!("IPVS-VM: PASS {step}");
            return;
        }
        if start.elapsed() > limit {
            report_diff(step, &want, &got);
            on_fail();
            panic!("{step}: ipvsadm -Ln differs");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn backend(addr: &str, weight: u32) -> BackendSpec {
    BackendSpec {
        addr: addr.parse().expect("address"),
        weight,
        healthy: true,
        mac: None,
        vlan: 0,
    }
}

fn vip(addr: &str, port: Option<u16>, protocol: Protocol, fwd: Forwarding) -> VipState {
    VipState {
        spec: VipSpec {
            addr: addr.parse::<IpAddr>().expect("address"),
            port,
            protocol,
        },
        forwarding: fwd,
        hash: HashFields::default(),
        ring_size: 65537,
        active: true,
        debug: false,
        backends: vec![],
    }
}

fn desired() -> DesiredState {
    let mut web = vip("10.0.0.1", Some(80), Protocol::Tcp, Forwarding::Dr);
    web.backends = vec![backend("10.0.1.1", 1), backend("10.0.1.2", 2)];
    let mut dns = vip("10.0.0.2", Some(53), Protocol::Udp, Forwarding::Ipip);
    dns.backends = vec![backend("10.0.2.1", 3), backend("10.0.2.2", 4)];
    let mut v6 = vip("2001:db8::1", Some(443), Protocol::Tcp, Forwarding::Dr);
    v6.backends = vec![backend("2001:db8::10", 1)];
    let mut any = vip("10.0.0.3", None, Protocol::Tcp, Forwarding::Dr);
    any.hash.src_port = false;
    any.backends = vec![backend("10.0.3.1", 1)];
    DesiredState {
        node: NodeSettings::default(),
        vips: vec![web, dns, v6, any],
    }
}

fn options(dir: &std::path::Path) -> IpvsOptions {
    let mut o = IpvsOptions::new(dir);
    let d = desired();
    o.vips.insert(
        d.vips[1].spec,
        VipOptions {
            scheduler: Some(Scheduler::Wrr),
            ..Default::default()
        },
    );
    o.vips.insert(
        d.vips[2].spec,
        VipOptions {
            scheduler: Some(Scheduler::Sh),
            forwarding: Some(IpvsForwarding::Nat),
            persistence: None,
            unhealthy: None,
        },
    );
    o.vips.insert(
        d.vips[3].spec,
        VipOptions {
            scheduler: Some(Scheduler::Rr),
            ..Default::default()
        },
    );
    o
}

const FOREIGN: &str = "TCP 192.0.2.9:443 rr";
const FOREIGN_DEST: &str = "TCP 192.0.2.9:443 rr -> 192.0.2.10:443 Route 1";

fn main() {
    if std::env::var_os("LBCTL_IPVS_GUEST").is_none() {
        eprintln!("ipvs_guest runs only inside the kernel VM guest (LBCTL_IPVS_GUEST unset)");
        std::process::exit(2);
    }
    println!("IPVS-VM: START");
    let dir = std::env::temp_dir().join("lbctl-state");
    let _ = std::fs::remove_dir_all(&dir);

    // Someone else's service, made with ipvsadm before lbctl starts.
    ipvsadm(&["-A", "-t", "192.0.2.9:443", "-s", "rr"]);
    ipvsadm(&[
        "-a",
        "-t",
        "192.0.2.9:443",
        "-r",
        "192.0.2.10:443",
        "-g",
        "-w",
        "1",
    ]);

    let mut dp = IpvsDataplane::open(options(&dir)).expect("open IPVS");
    let r = dp.apply(&desired()).expect("first apply");
    println!("report: {r:?}");
    assert_eq!((r.services_added, r.dests_added), (4, 6));
    let first = [
        FOREIGN,
        FOREIGN_DEST,
        "TCP 10.0.0.1:80 mh (mh-fallback,mh-port)",
        "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.1:80 Route 1",
        "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.2:80 Route 2",
        "UDP 10.0.0.2:53 wrr",
        "UDP 10.0.0.2:53 wrr -> 10.0.2.1:53 Tunnel 3",
        "UDP 10.0.0.2:53 wrr -> 10.0.2.2:53 Tunnel 4",
        "TCP [2001:db8::1]:443 sh (sh-fallback,sh-port)",
        "TCP [2001:db8::1]:443 sh (sh-fallback,sh-port) -> [2001:db8::10]:443 Masq 1",
        "TCP 10.0.0.3:0 rr persistent 300",
        "TCP 10.0.0.3:0 rr persistent 300 -> 10.0.3.1:0 Route 1",
    ];
    expect("apply", &first);

    // Nothing changed: nothing written.
    let r = dp.apply(&desired()).expect("second apply");
    assert!(r.is_empty(), "{r:?}");
    println!("IPVS-VM: PASS idempotent");

    // Health: 10.0.1.1 fails its check -> weight 0.
    let mut s = desired();
    s.vips[0].backends[0].healthy = false;
    let r = dp.apply(&s).expect("health apply");
    assert_eq!(r.dests_updated, 1, "{r:?}");
    let mut want: Vec<&str> = first.to_vec();
    want[3] = "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.1:80 Route 0";
    expect("health", &want);

    // Reload: a weight changes, the UDP VIP goes, a backend is added.
    s.vips[0].backends[1].weight = 5;
    s.vips[0].backends.push(backend("10.0.1.3", 7));
    s.vips.remove(1);
    let r = dp.apply(&s).expect("reload apply");
    println!("report: {r:?}");
    assert_eq!(
        (r.services_removed, r.dests_updated, r.dests_added),
        (1, 1, 1),
        "{r:?}"
    );
    let reloaded = [
        FOREIGN,
        FOREIGN_DEST,
        "TCP 10.0.0.1:80 mh (mh-fallback,mh-port)",
        "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.1:80 Route 0",
        "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.2:80 Route 5",
        "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.3:80 Route 7",
        "TCP [2001:db8::1]:443 sh (sh-fallback,sh-port)",
        "TCP [2001:db8::1]:443 sh (sh-fallback,sh-port) -> [2001:db8::10]:443 Masq 1",
        "TCP 10.0.0.3:0 rr persistent 300",
        "TCP 10.0.0.3:0 rr persistent 300 -> 10.0.3.1:0 Route 1",
    ];
    expect("reload", &reloaded);

    // Crash and restart: a new process reads the record and the kernel and
    // writes nothing for the same state.
    drop(dp);
    let mut dp = IpvsDataplane::open(options(&dir)).expect("reopen IPVS");
    assert_eq!(dp.owned().len(), 3);
    let r = dp.apply(&s).expect("apply after restart");
    assert!(r.is_empty(), "{r:?}");
    expect("restart", &reloaded);

    // The status view.
    let st = dp.status().expect("status");
    assert_eq!(st.services.len(), 4);
    assert_eq!(st.services.iter().filter(|s| s.owned).count(), 3);
    let stats = dp.stats().expect("stats");
    assert_eq!(stats.vips.len(), 3);
    println!("IPVS-VM: PASS status");

    // Stop: lbctl's services go, the foreign one stays.
    let n = dp.remove_owned().expect("remove_owned");
    assert_eq!(n, 3);
    expect("stop", &[FOREIGN, FOREIGN_DEST]);

    tcp_through_the_vip(&dir);
    drained_server_with_mh(&dir);
    daemon::run();
    keepalived_import::run();
    println!("IPVS-VM: ALL PASS");
}

/// Adds addresses to `lo` (VIPs and real servers of the traffic tests).
fn add_local_addresses(addrs: &[&str]) {
    for a in addrs {
        let st = Command::new("ip")
            .args(["addr", "add", a, "dev", "lo"])
            .status()
            .expect("ip addr add");
        assert!(st.success(), "ip addr add {a}");
    }
}

/// A data plane serving one NAT VIP on `addr`:80/tcp with `servers` (weight
/// 1 each, healthy) and `sched`, applied; and the state it applied.
fn nat_vip(
    dir: &std::path::Path,
    addr: &str,
    servers: &[&str],
    sched: Scheduler,
) -> (IpvsDataplane, DesiredState) {
    let mut web = vip(addr, Some(80), Protocol::Tcp, Forwarding::Dr);
    web.backends = servers.iter().map(|s| backend(s, 1)).collect();
    let s = DesiredState {
        node: NodeSettings::default(),
        vips: vec![web],
    };
    let mut o = IpvsOptions::new(dir);
    o.vips.insert(
        s.vips[0].spec,
        VipOptions {
            scheduler: Some(sched),
            forwarding: Some(IpvsForwarding::Nat),
            persistence: None,
            unhealthy: None,
        },
    );
    let mut dp = IpvsDataplane::open(o).expect("open IPVS");
    dp.apply(&s).expect("apply the NAT VIP");
    (dp, s)
}

/// A real TCP connection from a local client through a NAT VIP to a real
/// server in the guest (IPVS hooks locally originated traffic too).
fn tcp_through_the_vip(dir: &std::path::Path) {
    use std::io::{Read as _, Write as _};
    add_local_addresses(&["10.0.0.100/32", "10.0.0.200/32"]);
    let server = std::net::TcpListener::bind("10.0.0.200:80").expect("bind the real server");
    let t = std::thread::spawn(move || {
        let (mut c, peer) = server.accept().expect("accept");
        c.write_all(format!("hello {peer} from 10.0.0.200\n").as_bytes())
            .expect("write");
    });
    let (mut dp, _) = nat_vip(dir, "10.0.0.100", &["10.0.0.200"], Scheduler::Rr);
    let addr: std::net::SocketAddr = "10.0.0.100:80".parse().expect("address");
    let mut c = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .expect("connect to the VIP");
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut got = String::new();
    c.read_to_string(&mut got).expect("read from the VIP");
    t.join().expect("server thread");
    println!("client got: {got:?}");
    assert!(got.contains("from 10.0.0.200"), "{got:?}");
    // Show the kernel's own counters next to what lbctl decodes.
    ipvsadm(&["-Ln", "--stats"]);
    // The kernel folds its per-CPU counters into the dumped ones in its
    // rate estimator, every 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let svc = loop {
        let st = dp.status().expect("status");
        let svc = st
            .services
            .into_iter()
            .find(|s| s.owned)
            .expect("the NAT service");
        if svc.stats.conns >= 1 || std::time::Instant::now() > deadline {
            break svc;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    println!("service counters: {:?}", svc.stats);
    println!("real server: {:?}", svc.dests);
    ipvsadm(&["-Ln", "--stats"]);
    assert!(svc.stats.conns >= 1, "{:?}", svc.stats);
    dp.remove_owned().expect("remove_owned");
    println!("IPVS-VM: PASS tcp");
}

/// Drain with the default scheduler (`mh`): a real server whose health
/// check failed gets weight 0 and must take no new connection, while every
/// new connection still gets through, to the other one. The kernel keeps a
/// weight-0 server in mh's table (with its last weight), so without the
/// fallback flag the connections hashed to it are refused.
fn drained_server_with_mh(dir: &std::path::Path) {
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};
    const CONNS: usize = 24;
    add_local_addresses(&["10.0.0.101/32", "10.0.0.201/32"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let servers: Vec<std::thread::JoinHandle<usize>> = ["10.0.0.200:80", "10.0.0.201:80"]
        .into_iter()
        .map(|at| {
            let l = std::net::TcpListener::bind(at).expect("bind a real server");
            l.set_nonblocking(true).expect("nonblocking");
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Bounded: serves until told to stop, CONNS connections or 20 s.
                let (mut n, end) = (0, Instant::now() + Duration::from_secs(20));
                while n < CONNS
                    && Instant::now() < end
                    && !stop.load(std::sync::atomic::Ordering::Relaxed)
                {
                    match l.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.set_nonblocking(false);
                            let _ = c.write_all(format!("{at}\n").as_bytes());
                            n += 1;
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                n
            })
        })
        .collect();
    let (mut dp, mut s) = nat_vip(
        dir,
        "10.0.0.101",
        &["10.0.0.200", "10.0.0.201"],
        Scheduler::Mh,
    );
    // Up first, then its check fails: a server added with weight 0 never
    // enters mh's table; one that had a weight stays in it.
    s.vips[0].backends[1].healthy = false;
    dp.apply(&s).expect("drain 10.0.0.201");
    ipvsadm(&["-Ln"]);
    let addr: std::net::SocketAddr = "10.0.0.101:80".parse().expect("address");
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..CONNS {
        // A new source port each time: mh-port spreads them over the table.
        let who = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut got = String::new();
                c.read_to_string(&mut got)?;
                Ok(got.trim().to_owned())
            })
            .unwrap_or_else(|e| format!("error: {e}"));
        *answers.entry(who).or_default() += 1;
    }
    println!("answers with 10.0.0.201 drained: {answers:?}");
    dp.remove_owned().expect("remove_owned");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: Vec<usize> = servers
        .into_iter()
        .map(|t| t.join().expect("server thread"))
        .collect();
    println!("served by 10.0.0.200, 10.0.0.201: {served:?}");
    if answers.get("10.0.0.200:80") == Some(&CONNS) {
        println!("IPVS-VM: PASS drain-mh");
    } else {
        println!("IPVS-VM: FAIL drain-mh");
        panic!("drained mh service: {answers:?}");
    }
}

/// `lbctl run` in the guest.
mod daemon {
    use std::{
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    use nix::sys::signal;

    use super::{FOREIGN, FOREIGN_DEST, lines, report_diff, settle_within, table};

    const LBCTL: &str = "/bin/lbctl";
    const DIR: &str = "/tmp/lbd";
    /// How long a change may take to show in the kernel (checks run every
    /// 300 ms with rise = fall = 1; TCG is slow).
    const SETTLE: Duration = Duration::from_secs(15);

    fn conf() -> PathBuf {
        Path::new(DIR).join("lb.toml")
    }

    fn down_file(addr: &str) -> String {
        format!("{DIR}/down-{addr}")
    }

    /// A script check that fails while `down-ADDR` exists.
    fn check(addr: &str) -> String {
        format!(
            r#"health_check = {{ type = "script", command = ["/bin/sh", "-c", "test ! -e {}"], interval = "300ms", timeout = "250ms", rise = 1, fall = 1 }}"#,
            down_file(addr)
        )
    }

    /// The lb.toml: `web_weight2` is the weight of 10.0.1.2, `reloaded`
    /// drops the UDP VIP and adds 10.0.1.4.
    fn lb_toml(dataplane: &str, web_weight2: u16, reloaded: bool, extra_vip: &str) -> String {
        let mut t = format!(
            r#"[node]
interface = "lo"
dataplane = "{dataplane}"
state_dir = "{DIR}/state"

[ipip]
source_v4 = "10.0.0.254"

[[vip]]
name = "web"
address = "10.0.0.1"
port = 80
{extra_vip}
  [[vip.backend]]
  address = "10.0.1.1"
  weight = 100
  {c1}
  [[vip.backend]]
  address = "10.0.1.2"
  weight = {web_weight2}
  {c2}
"#,
            c1 = check("10.0.1.1"),
            c2 = check("10.0.1.2"),
        );
        if reloaded {
            t.push_str(
                r#"  [[vip.backend]]
  address = "10.0.1.4"
  weight = 10
  health_check = { type = "none" }
"#,
            );
        } else {
            t.push_str(
                r#"
[[vip]]
name = "dns"
address = "10.0.0.2"
port = 53
protocol = "udp"
forwarding = "ipip"
scheduler = "wrr"
health_check = { type = "none" }
  [[vip.backend]]
  address = "10.0.2.1"
  weight = 3
  [[vip.backend]]
  address = "10.0.2.2"
  weight = 4
"#,
            );
        }
        if dataplane == "ipvs" {
            t.push_str(&format!(
                r#"
[[vip]]
name = "web6"
address = "2001:db8::1"
port = 443
forwarding = "nat"
scheduler = "sh"
on_unhealthy = "remove"
  [[vip.backend]]
  address = "2001:db8::10"
  weight = 1
  {c}
"#,
                c = check("2001:db8::10")
            ));
        }
        t.push_str(
            r#"
[[vip]]
name = "any"
address = "10.0.0.3"
hash = ["src_addr", "dst_addr", "protocol"]
scheduler = "rr"
persistence_timeout = "60s"
health_check = { type = "none" }
  [[vip.backend]]
  address = "10.0.3.1"
  weight = 1
"#,
        );
        t
    }

    fn write_conf(text: &str) {
        std::fs::write(conf(), text).expect("writing lb.toml");
    }

    fn lbctl(args: &[&str]) -> (bool, String) {
        let out = Command::new(LBCTL)
            .args(args)
            .arg("--config")
            .arg(conf())
            .output()
            .unwrap_or_else(|e| panic!("lbctl {args:?}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn log_path() -> PathBuf {
        Path::new(DIR).join("lbctl.log")
    }

    fn show_log() {
        let log = std::fs::read_to_string(log_path()).unwrap_or_default();
        println!("--- lbctl log\n{log}---");
    }

    /// Starts `lbctl run` and waits until its control socket answers.
    fn start() -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path())
            .expect("log file");
        Command::new(LBCTL)
            .args(["--log-format", "text", "run", "--config"])
            .arg(conf())
            .env("LBCTL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting lbctl run")
    }

    /// Waits until the control socket of `child` answers.
    fn ready(child: &mut Child) {
        let deadline = Instant::now() + SETTLE;
        while !lbctl(&["status"]).0 {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                show_log();
                panic!("lbctl's control socket did not answer");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal_and_wait(child: &mut Child, sig: signal::Signal) -> std::process::ExitStatus {
        super::signal_and_wait(child, sig, "lbctl", SETTLE, show_log)
    }

    /// Waits until `ipvsadm -Ln` is exactly `want`.
    fn settle(step: &str, want: &[&str]) {
        settle_within(step, want, SETTLE, show_log);
    }

    /// `ipvsadm -Ln` stays exactly `lines` for `d` (nothing rewrote it).
    fn stays(step: &str, want: &[&str], d: Duration) {
        let want = lines(want);
        let end = Instant::now() + d;
        while Instant::now() < end {
            let got = table();
            if got != want {
                report_diff(step, &want, &got);
                show_log();
                panic!("{step}: ipvsadm -Ln changed");
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        println!("IPVS-VM: PASS {step}");
    }

    fn status_json() -> serde_json::Value {
        let (ok, text) = lbctl(&["status", "--json"]);
        assert!(ok, "lbctl status --json: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status JSON: {e}\n{text}"))
    }

    fn backend<'a>(st: &'a serde_json::Value, vip: &str, addr: &str) -> &'a serde_json::Value {
        st["vips"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == vip))
            .and_then(|v| v["backends"].as_array())
            .and_then(|b| b.iter().find(|b| b["address"] == addr))
            .unwrap_or_else(|| panic!("no backend {addr} of {vip} in {st:#}"))
    }

    const WEB: &str = "TCP 10.0.0.1:80 mh (mh-fallback,mh-port)";
    const DNS: &str = "UDP 10.0.0.2:53 wrr";
    const WEB6: &str = "TCP [2001:db8::1]:443 sh (sh-fallback,sh-port)";
    const ANY: &str = "TCP 10.0.0.3:0 rr persistent 60";

    pub fn run() {
        let _ = std::fs::remove_dir_all(DIR);
        std::fs::create_dir_all(DIR).expect("mkdir");
        println!("IPVS-VM: daemon phase");
        write_conf(&lb_toml("ipvs", 50, false, ""));
        let (ok, text) = lbctl(&["check"]);
        assert!(ok, "lbctl check: {text}");

        // Start: every check passes at its first run.
        let mut child = start();
        ready(&mut child);
        let all_up = [
            FOREIGN,
            FOREIGN_DEST,
            WEB,
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.1:80 Route 100",
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.2:80 Route 50",
            DNS,
            "UDP 10.0.0.2:53 wrr -> 10.0.2.1:53 Tunnel 3",
            "UDP 10.0.0.2:53 wrr -> 10.0.2.2:53 Tunnel 4",
            WEB6,
            "TCP [2001:db8::1]:443 sh (sh-fallback,sh-port) -> [2001:db8::10]:443 Masq 1",
            ANY,
            "TCP 10.0.0.3:0 rr persistent 60 -> 10.0.3.1:0 Route 1",
        ];
        settle("daemon-apply", &all_up);

        // Health: 10.0.1.1 fails -> weight 0 (drain); the NAT VIP's only
        // backend fails -> removed (on_unhealthy = "remove").
        for a in ["10.0.1.1", "2001:db8::10"] {
            std::fs::write(down_file(a), b"").expect("down file");
        }
        let down = [
            FOREIGN,
            FOREIGN_DEST,
            WEB,
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.1:80 Route 0",
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.2:80 Route 50",
            DNS,
            "UDP 10.0.0.2:53 wrr -> 10.0.2.1:53 Tunnel 3",
            "UDP 10.0.0.2:53 wrr -> 10.0.2.2:53 Tunnel 4",
            WEB6,
            ANY,
            "TCP 10.0.0.3:0 rr persistent 60 -> 10.0.3.1:0 Route 1",
        ];
        settle("daemon-health", &down);

        // The status view: IPVS, kernel weights, the foreign service.
        let st = status_json();
        println!("{}", lbctl(&["status"]).1);
        assert_eq!(st["dataplane"], "ipvs", "{st:#}");
        assert!(st["dataplane_note"].is_null(), "{st:#}");
        assert_eq!(
            st["foreign_services"],
            serde_json::json!(["TCP 192.0.2.9:443"])
        );
        let b1 = backend(&st, "web", "10.0.1.1");
        assert_eq!(b1["health"], "down", "{b1:#}");
        assert_eq!(b1["weight"], 100, "configured weight");
        assert_eq!(b1["ipvs"]["weight"], 0, "kernel weight");
        assert_eq!(b1["ipvs"]["forwarding"], "Route");
        let b2 = backend(&st, "web", "10.0.1.2");
        assert_eq!(b2["ipvs"]["weight"], 50, "{b2:#}");
        assert!(b2["ipvs"]["active_conns"].is_u64() && b2["ipvs"]["inactive_conns"].is_u64());
        assert!(
            backend(&st, "web6", "2001:db8::10")["ipvs"].is_null(),
            "removed"
        );
        let web = st["vips"].as_array().and_then(|v| v.first()).expect("web");
        assert_eq!(web["ipvs"]["scheduler"], "mh", "{web:#}");
        assert_eq!(
            web["ipvs"]["flags"],
            serde_json::json!(["mh-fallback", "mh-port"])
        );
        assert_eq!(web["ipvs"]["owned"], true);
        println!("IPVS-VM: PASS daemon-status");

        // Reload: 10.0.1.2 50 -> 70, 10.0.1.4 added, the UDP VIP goes.
        write_conf(&lb_toml("ipvs", 70, true, ""));
        let (ok, text) = lbctl(&["reload"]);
        assert!(ok, "lbctl reload: {text}");
        println!("{text}");
        let reloaded = [
            FOREIGN,
            FOREIGN_DEST,
            WEB,
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.1:80 Route 0",
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.2:80 Route 70",
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.4:80 Route 10",
            WEB6,
            ANY,
            "TCP 10.0.0.3:0 rr persistent 60 -> 10.0.3.1:0 Route 1",
        ];
        settle("daemon-reload", &reloaded);

        // A bad reload is refused and changes nothing.
        write_conf(&lb_toml("ipvs", 70, true, "scheduler = \"lc\""));
        let (ok, text) = lbctl(&["reload"]);
        assert!(!ok && text.contains("unknown variant `lc`"), "{text}");
        let (ok, text) = lbctl(&["check"]);
        assert!(!ok, "{text}");
        write_conf(&lb_toml("ipvs", 70, true, ""));
        stays("daemon-bad-reload", &reloaded, Duration::from_secs(1));

        // Crash and restart: the kernel keeps the table; the new process
        // reconciles with it and changes nothing (backends found serving
        // start healthy, 10.0.1.1 is still failing).
        let st = signal_and_wait(&mut child, signal::Signal::SIGKILL);
        println!("lbctl killed: {st}");
        let _ = std::fs::remove_file(Path::new(DIR).join("state/lbctl.sock"));
        stays("daemon-crash", &reloaded, Duration::from_millis(500));
        let mut child = start();
        ready(&mut child);
        stays("daemon-restart", &reloaded, Duration::from_secs(2));

        // Checks pass again: weight back, removed real server back.
        for a in ["10.0.1.1", "2001:db8::10"] {
            std::fs::remove_file(down_file(a)).expect("rm down file");
        }
        let up = [
            FOREIGN,
            FOREIGN_DEST,
            WEB,
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.1:80 Route 100",
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.2:80 Route 70",
            "TCP 10.0.0.1:80 mh (mh-fallback,mh-port) -> 10.0.1.4:80 Route 10",
            WEB6,
            "TCP [2001:db8::1]:443 sh (sh-fallback,sh-port) -> [2001:db8::10]:443 Masq 1",
            ANY,
            "TCP 10.0.0.3:0 rr persistent 60 -> 10.0.3.1:0 Route 1",
        ];
        settle("daemon-rise", &up);

        // SIGTERM: lbctl's services go, the foreign one stays.
        let st = signal_and_wait(&mut child, signal::Signal::SIGTERM);
        assert!(st.success(), "lbctl exit status {st}");
        settle("daemon-stop", &[FOREIGN, FOREIGN_DEST]);

        // auto: the XDP program cannot load (no eBPF object in this build),
        // so IPVS runs and says why.
        write_conf(&lb_toml("auto", 50, false, ""));
        let mut child = start();
        ready(&mut child);
        settle(
            "daemon-auto-apply",
            &all_up
                .iter()
                .copied()
                .filter(|l| !l.contains("2001:db8"))
                .collect::<Vec<_>>(),
        );
        let st = status_json();
        assert_eq!(st["dataplane"], "ipvs", "{st:#}");
        let note = st["dataplane_note"].as_str().unwrap_or_default();
        assert!(note.starts_with("auto: XDP unavailable"), "{st:#}");
        println!("status note: {note}");
        let st = signal_and_wait(&mut child, signal::Signal::SIGTERM);
        assert!(st.success(), "lbctl exit status {st}");
        settle("daemon-auto-stop", &[FOREIGN, FOREIGN_DEST]);
        show_log();
        println!("IPVS-VM: PASS daemon");
    }
}

/// keepalived against `lbctl import-keepalived`: one keepalived.conf
/// (NAT, DR and TUN services, IPv4 and IPv6; wrr, sh, rr, mh; persistence;
/// weights, weight 0; passing and failing MISC_CHECKs, with and without
/// inhibit_on_failure; a sorry server standing in for a failed service)
/// run by keepalived's checker process, then converted and run by
/// `lbctl run`: once each has settled, `ipvsadm -Ln` is the same table.
mod keepalived_import {
    use std::{
        process::{Child, Command, Stdio},
        time::Duration,
    };

    use nix::sys::signal::Signal;

    use super::{FOREIGN, FOREIGN_DEST, settle_within, signal_and_wait};

    const LBCTL: &str = "/bin/lbctl";
    const DIR: &str = "/tmp/kimp";
    /// keepalived and lbctl check every second; TCG is slow.
    const SETTLE: Duration = Duration::from_secs(30);

    fn settle(step: &str, want: &[&str]) {
        settle_within(step, want, SETTLE, || {});
    }

    const CONF: &str = r#"global_defs {
  router_id vm
  script_user root
  enable_script_security
}

virtual_server 10.0.9.1 80 {
  delay_loop 1
  lb_algo wrr
  lb_kind NAT
  protocol TCP
  persistence_timeout 300
  real_server 10.0.9.11 80 {
    weight 3
    MISC_CHECK {
      misc_path /bin/true
    }
  }
  real_server 10.0.9.12 80 {
    weight 1
    MISC_CHECK {
      misc_path /bin/false
    }
  }
}

virtual_server 10.0.9.2 53 {
  lb_algo sh
  sh-fallback
  lb_kind NAT
  protocol UDP
  real_server 10.0.9.21 53 {
    weight 2
  }
  real_server 10.0.9.22 53 {
    weight 0
  }
}

virtual_server 10.0.9.3 443 {
  lb_algo rr
  lb_kind DR
  protocol TCP
  real_server 10.0.9.31 443 {
    weight 1
  }
}

virtual_server 10.0.9.4 8080 {
  lb_algo wrr
  lb_kind TUN
  protocol TCP
  real_server 10.0.9.41 8080 {
    weight 2
  }
}

virtual_server 10.0.9.5 81 {
  delay_loop 1
  lb_algo rr
  lb_kind NAT
  protocol TCP
  real_server 10.0.9.51 81 {
    weight 5
    inhibit_on_failure
    MISC_CHECK {
      misc_path /bin/false
    }
  }
  real_server 10.0.9.52 81 {
    weight 1
    inhibit_on_failure
    MISC_CHECK {
      misc_path /bin/true
    }
  }
}

virtual_server 10.0.9.6 82 {
  delay_loop 1
  lb_algo rr
  lb_kind NAT
  protocol TCP
  sorry_server 10.0.9.69 82
  real_server 10.0.9.61 82 {
    weight 4
    MISC_CHECK {
      misc_path /bin/false
    }
  }
}

virtual_server 10.0.9.7 83 {
  lb_algo mh
  mh-fallback
  lb_kind DR
  protocol TCP
  real_server 10.0.9.71 83 {
    weight 3
  }
}

virtual_server 2001:db8:9::1 80 {
  lb_algo wrr
  lb_kind NAT
  protocol TCP
  real_server 2001:db8:9::11 80 {
    weight 2
  }
}
"#;

    /// What keepalived makes of it (and so must lbctl): the failing server
    /// of the first service removed, the inhibited one at weight 0, the
    /// sorry server in the place of the failed one.
    const WANT: [&str; 20] = [
        FOREIGN,
        FOREIGN_DEST,
        "TCP 10.0.9.1:80 wrr persistent 300",
        "TCP 10.0.9.1:80 wrr persistent 300 -> 10.0.9.11:80 Masq 3",
        "UDP 10.0.9.2:53 sh (sh-fallback)",
        "UDP 10.0.9.2:53 sh (sh-fallback) -> 10.0.9.21:53 Masq 2",
        "UDP 10.0.9.2:53 sh (sh-fallback) -> 10.0.9.22:53 Masq 0",
        "TCP 10.0.9.3:443 rr",
        "TCP 10.0.9.3:443 rr -> 10.0.9.31:443 Route 1",
        "TCP 10.0.9.4:8080 wrr",
        "TCP 10.0.9.4:8080 wrr -> 10.0.9.41:8080 Tunnel 2",
        "TCP 10.0.9.5:81 rr",
        "TCP 10.0.9.5:81 rr -> 10.0.9.51:81 Masq 0",
        "TCP 10.0.9.5:81 rr -> 10.0.9.52:81 Masq 1",
        "TCP 10.0.9.6:82 rr",
        "TCP 10.0.9.6:82 rr -> 10.0.9.69:82 Masq 1",
        "TCP 10.0.9.7:83 mh (mh-fallback)",
        "TCP 10.0.9.7:83 mh (mh-fallback) -> 10.0.9.71:83 Route 3",
        "TCP [2001:db8:9::1]:80 wrr",
        "TCP [2001:db8:9::1]:80 wrr -> [2001:db8:9::11]:80 Masq 2",
    ];

    fn terminate(mut child: Child, what: &str) {
        signal_and_wait(&mut child, Signal::SIGTERM, what, SETTLE, || {});
    }

    pub fn run() {
        let _ = std::fs::remove_dir_all(DIR);
        std::fs::create_dir_all(DIR).expect("dir");
        let conf = format!("{DIR}/keepalived.conf");
        std::fs::write(&conf, CONF).expect("keepalived.conf");
        // keepalived's checker process alone (-C): it programs IPVS.
        let ka = Command::new("keepalived")
            .args(["-n", "-l", "-D", "-C", "-f", &conf])
            .args(["-p", &format!("{DIR}/k.pid")])
            .args(["-c", &format!("{DIR}/kc.pid")])
            .stdin(Stdio::null())
            .spawn()
            .expect("keepalived");
        settle("keepalived-ipvs", &WANT);
        terminate(ka, "keepalived");
        // keepalived takes its services with it.
        settle("keepalived-stop", &[FOREIGN, FOREIGN_DEST]);

        let toml = format!("{DIR}/lb.toml");
        let out = Command::new(LBCTL)
            .args(["import-keepalived", &conf, "--interface", "lo"])
            .args(["--ipip-source", "10.0.9.254", "-o", &toml])
            .output()
            .expect("lbctl import-keepalived");
        println!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "import-keepalived failed");
        let mut text = std::fs::read_to_string(&toml).expect("lb.toml");
        // The converted node's state where the guest can write.
        text = text.replace(
            "[node]\n",
            &format!("[node]\nstate_dir = \"{DIR}/state\"\n"),
        );
        std::fs::write(&toml, &text).expect("lb.toml");
        println!("--- converted lb.toml\n{text}---");

        let lb = Command::new(LBCTL)
            .args(["run", "--config", &toml])
            .stdin(Stdio::null())
            .spawn()
            .expect("lbctl run");
        settle("lbctl-imported-ipvs", &WANT);
        terminate(lb, "lbctl");
        println!("IPVS-VM: PASS keepalived-import");
    }
}
