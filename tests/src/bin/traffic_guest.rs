//! The guest half of the kernel-VM traffic test (`tests/tests/traffic_vm.rs`
//! is the host half): real connections through lbctl on Debian 12's own
//! kernel (6.1), whose verifier and XDP code are older than the development
//! kernel's. Two phases, each printing `TRAFFIC-VM:` markers for the host.
//!
//! **vlan**: the development kernel has no 802.1Q, Debian's has. lbctl runs
//! the way the README says to on a VLAN, on the VLAN interface (XDP in
//! generic mode: the kernel removes the tag before the program runs and
//! puts it back on the way out), and forwards by DR to real servers on the
//! same VLAN. Namespaces `client`, `lb`, `s1`, `s2` each have a trunk veth
//! `t0` into a bridge (namespace `br`) and their address on `v100`, VLAN 100
//! over it. Checks: the program attached in generic mode; 100 connections
//! from the client all reach a server and both servers get some; the
//! program counted them as DR forwards; and every forwarded packet arrived
//! on a server's VLAN interface (a frame sent back untagged would arrive on
//! `t0` instead, and the server's kernel would still accept it, the VIP
//! being local there).
//!
//! **native**: lbctl on a plain veth in driver (native) mode, as on a NIC,
//! with a DR VIP and an IPIP VIP, and `lbctl decap` (also native) on the
//! real servers: the servers have no tunnel device, so an IPIP connection
//! is answered only when the XDP decapsulator works. Checks: driver mode;
//! 50 connections to each VIP all answered, by both servers; the program
//! counted them as DR and IPIP forwards.
//!
//! Refuses to run unless `LBCTL_TRAFFIC_GUEST=1` (it creates namespaces and
//! runs daemons), which only the guest's `/init` sets.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use tests::netns::{ChildGuard, NetNs, PassHolder, bridge, veth_pair, wait_until};

/// Addresses of the vlan phase.
mod vlan {
    pub const LB_IP: &str = "10.77.0.1";
    pub const CLIENT_IP: &str = "10.77.0.10";
    pub const SERVERS: [(&str, &str); 2] = [("s1", "10.77.0.11"), ("s2", "10.77.0.12")];
    pub const VIP: &str = "10.77.1.100";
    pub const CONFIG: &str = "/tmp/vlan-lb.toml";
    pub const CONNECTIONS: usize = 100;
}

/// Addresses of the native phase.
mod native {
    pub const LB_IP: &str = "10.78.0.1";
    pub const CLIENT_IP: &str = "10.78.0.10";
    pub const SERVERS: [(&str, &str); 2] = [("s1", "10.78.0.11"), ("s2", "10.78.0.12")];
    pub const VIP_DR: &str = "10.78.1.100";
    pub const VIP_IPIP: &str = "10.78.1.101";
    pub const CONFIG: &str = "/tmp/native-lb.toml";
    pub const CONNECTIONS: usize = 50;
}

fn main() {
    match run() {
        Ok(()) => println!("TRAFFIC-VM: ALL PASS"),
        Err(e) => {
            println!("TRAFFIC-VM: FAIL {e:#}");
            std::process::exit(1);
        }
    }
}

fn pass(step: &str) {
    println!("TRAFFIC-VM: PASS {step}");
}

fn run() -> Result<()> {
    ensure!(
        std::env::var("LBCTL_TRAFFIC_GUEST").as_deref() == Ok("1"),
        "refusing to run outside the kernel-VM guest (LBCTL_TRAFFIC_GUEST=1)"
    );
    for m in ["veth", "8021q", "bridge"] {
        let st = std::process::Command::new("modprobe").arg(m).status()?;
        ensure!(st.success(), "modprobe {m}");
    }
    std::fs::create_dir_all("/run/netns")?;
    vlan_phase().context("vlan phase")?;
    native_phase().context("native phase")
}

/// A node on VLAN 100: trunk `t0` into the bridge namespace, `v100` on it.
fn vlan_node(ns: &NetNs, br: &NetNs, port: &str, cidr: &str) -> Result<()> {
    veth_pair(ns, "t0", br, port)?;
    ns.link_up("t0")?;
    ns.run(&[
        "ip", "link", "add", "link", "t0", "name", "v100", "type", "vlan", "id", "100",
    ])?;
    ns.addr_add("v100", cidr)?;
    ns.link_up("v100")?;
    for k in ["all", "default", "v100", "t0"] {
        ns.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
    }
    Ok(())
}

/// A node with its address on `t0`, a veth into the bridge namespace.
fn plain_node(ns: &NetNs, br: &NetNs, port: &str, cidr: &str) -> Result<()> {
    veth_pair(ns, "t0", br, port)?;
    ns.addr_add("t0", cidr)?;
    ns.link_up("t0")?;
    for k in ["all", "default", "t0"] {
        ns.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
    }
    Ok(())
}

/// A real server: holds `vips` on `lo` without answering ARP for them.
fn hold_vips(ns: &NetNs, vips: &[&str]) -> Result<()> {
    for vip in vips {
        ns.addr_add("lo", &format!("{vip}/32"))?;
    }
    ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
    ns.sysctl("net.ipv4.conf.all.arp_announce", "2")
}

/// How a node joins the bridge: [`vlan_node`] or [`plain_node`].
type JoinBridge = fn(&NetNs, &NetNs, &str, &str) -> Result<()>;

/// The namespaces of a phase: a client, an LB and the servers, each joined
/// to a bridge (namespace `br`) through its port `p<role>`, the servers
/// holding the VIPs.
struct Topology {
    br: NetNs,
    client: NetNs,
    lb: NetNs,
    servers: Vec<NetNs>,
}

impl Topology {
    /// Namespaces named `<prefix><role>`, joined by `join` with these
    /// addresses (/24), servers named and addressed by `servers`.
    fn new(
        prefix: &str,
        join: JoinBridge,
        client_ip: &str,
        lb_ip: &str,
        servers: &[(&str, &str)],
        vips: &[&str],
    ) -> Result<Self> {
        let ns = |role: &str| NetNs::new(&format!("{prefix}{role}"));
        let br = ns("br")?;
        let client = ns("client")?;
        let lb = ns("lb")?;
        join(&client, &br, "pclient", &format!("{client_ip}/24"))?;
        join(&lb, &br, "plb", &format!("{lb_ip}/24"))?;
        let mut ports = vec!["pclient".to_owned(), "plb".to_owned()];
        let mut s = Vec::new();
        for (n, ip) in servers {
            let server = ns(n)?;
            let port = format!("p{n}");
            join(&server, &br, &port, &format!("{ip}/24"))?;
            hold_vips(&server, vips)?;
            ports.push(port);
            s.push(server);
        }
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        bridge(&br, "br0", &ports)?;
        Ok(Self {
            br,
            client,
            lb,
            servers: s,
        })
    }
}

/// The client reaches the VIPs' /24 through the LB. Locally generated
/// packets carry partial checksums, which the program's XDP_TX does not
/// complete: the client's stack fills them in (`tx off` on `devs`).
fn client_via_lb(client: &NetNs, vip_net: &str, lb_ip: &str, devs: &[&str]) -> Result<()> {
    client.run(&["ip", "route", "add", vip_net, "via", lb_ip])?;
    for dev in devs {
        client.run(&["ethtool", "-K", dev, "tx", "off"])?;
    }
    Ok(())
}

/// Answers every connection on port 80 with `name`, until `stop`.
fn responder(ns: &NetNs, name: &'static str, stop: Arc<AtomicBool>) -> Result<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    ns.enter_thread(move || -> Result<()> {
        let l = TcpListener::bind("0.0.0.0:80")?;
        l.set_nonblocking(true)?;
        let _ = ready_tx.send(());
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(name.as_bytes());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("{name}: responder did not start"))
}

/// `n` connections from `client` to `vip`:80, one after another (at most
/// 120 s in all); each answer is the name of the server that took it.
fn connect_many(client: &NetNs, vip: &str, n: usize) -> Result<Vec<String>> {
    let vip: SocketAddr = format!("{vip}:80").parse()?;
    client
        .enter_thread(move || -> Result<Vec<String>> {
            let mut v = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            for _ in 0..n {
                ensure!(Instant::now() < deadline, "connections too slow");
                let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(3))
                    .with_context(|| format!("connect to {vip}"))?;
                c.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut name = String::new();
                c.read_to_string(&mut name).context("read the answer")?;
                v.push(name);
            }
            Ok(v)
        })?
        .join()
        .map_err(|_| anyhow!("client thread panicked"))??
}

/// All `n` answers came, and both servers gave at least `min` of them.
fn check_spread(answers: &[String], n: usize, min: usize) -> Result<()> {
    let count = |s: &str| answers.iter().filter(|a| *a == s).count();
    let (a, b) = (count("s1"), count("s2"));
    ensure!(
        a + b == n && a >= min && b >= min,
        "answers: s1 {a}, s2 {b}, of {n}: {answers:?}"
    );
    Ok(())
}

fn rx_packets(ns: &NetNs, dev: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/rx_packets");
    Ok(ns.run(&["cat", &path])?.trim().parse()?)
}

fn lbctl_json(sub: &str, config: &str) -> Result<serde_json::Value> {
    let out = std::process::Command::new("/bin/lbctl")
        .args([sub, "--json", "--config", config])
        .output()?;
    ensure!(out.status.success(), "lbctl {sub}: {out:?}");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Waits (at most 120 s) until every VIP of the daemon has its `backends`
/// in the ring; returns the last status.
fn wait_in_ring(config: &str, vips: usize, backends: usize) -> Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    let ready = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        let Ok(st) = lbctl_json("status", config) else {
            return false;
        };
        last = st;
        last["vips"].as_array().is_some_and(|v| {
            v.len() == vips
                && v.iter().all(|vip| {
                    vip["backends"].as_array().is_some_and(|b| {
                        b.len() == backends && b.iter().all(|b| b["in_ring"] == true)
                    })
                })
        })
    });
    ensure!(ready.is_some(), "backends not in the ring: {last}");
    Ok(last)
}

/// Stops the daemon with SIGTERM and waits (at most 30 s) for it to exit.
fn stop_daemon(mut daemon: ChildGuard) -> Result<()> {
    daemon.signal(nix::sys::signal::Signal::SIGTERM)?;
    ensure!(
        daemon.wait_exit(Duration::from_secs(30)),
        "daemon did not stop"
    );
    Ok(())
}

fn vlan_phase() -> Result<()> {
    use vlan::*;
    let Topology {
        br: _br,
        client,
        lb,
        servers: s,
    } = Topology::new("", vlan_node, CLIENT_IP, LB_IP, &SERVERS, &[VIP])?;
    client_via_lb(&client, "10.77.1.0/24", LB_IP, &["t0", "v100"])?;

    let stop = Arc::new(AtomicBool::new(false));
    for (ns, (n, _)) in s.iter().zip(SERVERS) {
        responder(ns, n, Arc::clone(&stop))?;
    }

    std::fs::write(
        CONFIG,
        format!(
            r#"[node]
interface = "v100"
state_dir = "/tmp/vlan-st"
[[vip]]
name = "web"
address = "{VIP}"
port = 80
forwarding = "dr"
health_check = {{ type = "tcp", interval = "200ms", timeout = "100ms", rise = 1, fall = 2 }}
[[vip.backend]]
address = "{}"
[[vip.backend]]
address = "{}"
"#,
            SERVERS[0].1, SERVERS[1].1
        ),
    )?;
    let daemon = lb.spawn(&["/bin/lbctl", "run", "--config", CONFIG])?;

    // Attached (generic mode on a VLAN device), both backends in the ring.
    let st = wait_in_ring(CONFIG, 1, 2)?;
    ensure!(
        st["xdp_mode"] == "skb",
        "not attached in generic mode: {st}"
    );
    pass("vlan attach-generic");

    let rx_before: u64 = s
        .iter()
        .map(|ns| rx_packets(ns, "v100"))
        .sum::<Result<_>>()?;
    let answers = connect_many(&client, VIP, CONNECTIONS)?;
    check_spread(&answers, CONNECTIONS, 10)?;
    pass("vlan connections");

    let stats = lbctl_json("stats", CONFIG)?;
    let fwd = stats["reasons"]["fwd_dr"].as_u64().unwrap_or(0);
    ensure!(
        fwd >= CONNECTIONS as u64,
        "fwd_dr {fwd}: {}",
        stats["reasons"]
    );
    pass("vlan counted");
    let rx_after: u64 = s
        .iter()
        .map(|ns| rx_packets(ns, "v100"))
        .sum::<Result<_>>()?;
    let rx = rx_after - rx_before;
    ensure!(
        rx >= fwd,
        "servers' VLAN interfaces received {rx} packets, the program forwarded {fwd}"
    );
    println!("TRAFFIC-VM: forwarded {fwd}, received on VLAN 100: {rx}");
    pass("vlan tagged");

    stop_daemon(daemon)?;
    stop.store(true, Ordering::Relaxed);
    pass("vlan stop");
    Ok(())
}

fn native_phase() -> Result<()> {
    use native::*;
    let Topology {
        br,
        client,
        lb,
        servers: s,
    } = Topology::new(
        "n",
        plain_node,
        CLIENT_IP,
        LB_IP,
        &SERVERS,
        &[VIP_DR, VIP_IPIP],
    )?;
    client_via_lb(&client, "10.78.1.0/24", LB_IP, &["t0"])?;
    let _pass = PassHolder::new(&br, "plb")?;

    // The servers decapsulate with `lbctl decap` only: no tunnel device,
    // and no ipip module that would make one.
    let modules = std::fs::read_to_string("/proc/modules")?;
    ensure!(
        !modules.lines().any(|l| l.starts_with("ipip ")),
        "the ipip module is loaded: {modules}"
    );
    for ns in &s {
        // The whole list: asking for tunl0 by name would load ipip.
        let links = ns.run(&["ip", "-o", "link", "show"])?;
        ensure!(
            !links.contains("tunl0") && !links.contains("ipip"),
            "{} has a tunnel device: {links}",
            ns.name()
        );
    }
    let mut decaps = Vec::new();
    for (ns, (_, ip)) in s.iter().zip(SERVERS) {
        decaps.push(ns.spawn(&[
            "/bin/lbctl",
            "decap",
            "--iface",
            "t0",
            "--addr",
            ip,
            "--mode",
            "driver",
        ])?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for (ns, (n, _)) in s.iter().zip(SERVERS) {
        responder(ns, n, Arc::clone(&stop))?;
    }

    let backends = format!(
        "[[vip.backend]]\naddress = \"{}\"\n[[vip.backend]]\naddress = \"{}\"\n",
        SERVERS[0].1, SERVERS[1].1
    );
    std::fs::write(
        CONFIG,
        format!(
            r#"[node]
interface = "t0"
state_dir = "/tmp/native-st"
dataplane = "xdp"
xdp_mode = "driver"
[ipip]
source_v4 = "{LB_IP}"
[[vip]]
name = "dr"
address = "{VIP_DR}"
port = 80
forwarding = "dr"
health_check = {{ type = "tcp", interval = "200ms", timeout = "100ms", rise = 1, fall = 2 }}
{backends}[[vip]]
name = "ipip"
address = "{VIP_IPIP}"
port = 80
forwarding = "ipip"
health_check = {{ type = "tcp", interval = "200ms", timeout = "100ms", rise = 1, fall = 2 }}
{backends}"#
        ),
    )?;
    let daemon = lb.spawn(&["/bin/lbctl", "run", "--config", CONFIG])?;
    let st = wait_in_ring(CONFIG, 2, 2)?;
    ensure!(
        st["xdp_mode"] == "driver",
        "not attached in driver mode: {st}"
    );
    pass("native attach-driver");

    let answers = connect_many(&client, VIP_DR, CONNECTIONS)?;
    check_spread(&answers, CONNECTIONS, 5)?;
    pass("native dr connections");
    let answers = connect_many(&client, VIP_IPIP, CONNECTIONS)?;
    check_spread(&answers, CONNECTIONS, 5)?;
    pass("native ipip connections");

    let stats = lbctl_json("stats", CONFIG)?;
    let r = &stats["reasons"];
    let (dr, ipip) = (
        r["fwd_dr"].as_u64().unwrap_or(0),
        r["fwd_ipip"].as_u64().unwrap_or(0),
    );
    ensure!(
        dr >= CONNECTIONS as u64 && ipip >= CONNECTIONS as u64,
        "fwd_dr {dr}, fwd_ipip {ipip}: {r}"
    );
    println!("TRAFFIC-VM: native forwarded dr {dr}, ipip {ipip}");
    pass("native counted");

    stop_daemon(daemon)?;
    for d in decaps {
        stop_daemon(d)?;
    }
    stop.store(true, Ordering::Relaxed);
    pass("native stop");
    Ok(())
}
