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
//! **trunk**: lbctl natively on a trunk veth carrying VLANs 100 and 200
//! tagged and an untagged native VLAN, as on a switch port facing an edge
//! host; clients on VLAN 100, real server `s1` on VLAN 200 and `s2` on the
//! native VLAN, each reached through the LB node's own VLAN interface (or
//! the trunk itself) and its route. The program must rewrite the tag of a
//! frame to `s1` (100 to 200) and remove it from a frame to `s2`, by DR and
//! by IPIP (`lbctl decap` on the servers). Checks: the status shows each
//! backend's VLAN, and warns that the trunk has receive VLAN offload on;
//! 50 connections to each VIP all answered, by both servers, which accept
//! only frames on their own VLAN (`s1` filters by reverse path, so a frame
//! from the client arriving untagged instead of on `v200` is dropped; `s2`
//! has no VLAN interface, so a frame still tagged is dropped); and each
//! server's interface for its VLAN received at least the packets the
//! program sent it.
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

/// Addresses of the trunk phase: the client's VLAN 100, `s1`'s VLAN 200 and
/// `s2`'s native (untagged) VLAN, one /24 each, the LB node on all three.
mod trunk {
    pub const LB_V100: &str = "10.79.0.1";
    pub const LB_V200: &str = "10.79.2.1";
    pub const LB_NATIVE: &str = "10.79.3.1";
    pub const CLIENT_IP: &str = "10.79.0.10";
    pub const S1_IP: &str = "10.79.2.11";
    pub const S2_IP: &str = "10.79.3.12";
    pub const VIP_DR: &str = "10.79.1.100";
    pub const VIP_IPIP: &str = "10.79.1.101";
    pub const CONFIG: &str = "/tmp/trunk-lb.toml";
    pub const CONNECTIONS: usize = 50;
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
    native_phase().context("native phase")?;
    trunk_phase().context("trunk phase")
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

/// Stops the daemon, then the decapsulators, then the responders.
fn stop_all(daemon: ChildGuard, decaps: Vec<ChildGuard>, responders: &AtomicBool) -> Result<()> {
    stop_daemon(daemon)?;
    for d in decaps {
        stop_daemon(d)?;
    }
    responders.store(true, Ordering::Relaxed);
    Ok(())
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

    stop_all(daemon, Vec::new(), &stop)?;
    pass("vlan stop");
    Ok(())
}

/// `lbctl decap` on `t0` of `ns` (driver mode) for tunnels to `addr`.
fn spawn_decap(ns: &NetNs, addr: &str) -> Result<ChildGuard> {
    ns.spawn(&[
        "/bin/lbctl",
        "decap",
        "--iface",
        "t0",
        "--addr",
        addr,
        "--mode",
        "driver",
    ])
}

/// Writes a config for lbctl natively on `t0`: a DR VIP and an IPIP VIP
/// (`vips`, port 80) with the same two TCP-checked backends, IPIP outer
/// source `ipip_src`.
fn write_two_vip_config(
    path: &str,
    state_dir: &str,
    ipip_src: &str,
    vips: (&str, &str),
    backends: [&str; 2],
) -> Result<()> {
    let (vip_dr, vip_ipip) = vips;
    let backends = format!(
        "[[vip.backend]]\naddress = \"{}\"\n[[vip.backend]]\naddress = \"{}\"\n",
        backends[0], backends[1]
    );
    std::fs::write(
        path,
        format!(
            r#"[node]
interface = "t0"
state_dir = "{state_dir}"
dataplane = "xdp"
xdp_mode = "driver"
[ipip]
source_v4 = "{ipip_src}"
[[vip]]
name = "dr"
address = "{vip_dr}"
port = 80
forwarding = "dr"
health_check = {{ type = "tcp", interval = "200ms", timeout = "100ms", rise = 1, fall = 2 }}
{backends}[[vip]]
name = "ipip"
address = "{vip_ipip}"
port = 80
forwarding = "ipip"
health_check = {{ type = "tcp", interval = "200ms", timeout = "100ms", rise = 1, fall = 2 }}
{backends}"#
        ),
    )?;
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
        decaps.push(spawn_decap(ns, ip)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for (ns, (n, _)) in s.iter().zip(SERVERS) {
        responder(ns, n, Arc::clone(&stop))?;
    }

    write_two_vip_config(
        CONFIG,
        "/tmp/native-st",
        LB_IP,
        (VIP_DR, VIP_IPIP),
        [SERVERS[0].1, SERVERS[1].1],
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

    stop_all(daemon, decaps, &stop)?;
    pass("native stop");
    Ok(())
}

/// A trunk port: veth `t0` into the bridge namespace (port `port`), with
/// `native` (a CIDR) on `t0` itself and a VLAN interface `v<id>` per entry
/// of `vlans`. The bridge port sends tags in the frame, not beside it
/// (`txvlan off`): a program attached natively to `t0` sees only what is in
/// the frame, as on a NIC with receive VLAN offload off.
fn trunk_node(
    ns: &NetNs,
    br: &NetNs,
    port: &str,
    native: Option<&str>,
    vlans: &[(u16, &str)],
) -> Result<()> {
    veth_pair(ns, "t0", br, port)?;
    br.run(&["ethtool", "-K", port, "txvlan", "off"])?;
    ns.link_up("t0")?;
    if let Some(cidr) = native {
        ns.addr_add("t0", cidr)?;
    }
    let mut devs = vec!["all".to_owned(), "default".to_owned(), "t0".to_owned()];
    for (id, cidr) in vlans {
        let dev = format!("v{id}");
        ns.run(&[
            "ip",
            "link",
            "add",
            "link",
            "t0",
            "name",
            &dev,
            "type",
            "vlan",
            "id",
            &id.to_string(),
        ])?;
        ns.addr_add(&dev, cidr)?;
        ns.link_up(&dev)?;
        devs.push(dev);
    }
    for k in devs {
        ns.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
    }
    Ok(())
}

fn trunk_phase() -> Result<()> {
    use trunk::*;
    let br = NetNs::new("kbr")?;
    let client = NetNs::new("kclient")?;
    let lb = NetNs::new("klb")?;
    let s1 = NetNs::new("ks1")?;
    let s2 = NetNs::new("ks2")?;
    trunk_node(
        &client,
        &br,
        "pclient",
        None,
        &[(100, &format!("{CLIENT_IP}/24"))],
    )?;
    trunk_node(
        &lb,
        &br,
        "plb",
        Some(&format!("{LB_NATIVE}/24")),
        &[
            (100, &format!("{LB_V100}/24")),
            (200, &format!("{LB_V200}/24")),
        ],
    )?;
    trunk_node(&s1, &br, "ps1", None, &[(200, &format!("{S1_IP}/24"))])?;
    trunk_node(&s2, &br, "ps2", Some(&format!("{S2_IP}/24")), &[])?;
    bridge(&br, "br0", &["pclient", "plb", "ps1", "ps2"])?;
    // XDP_TX on a veth needs a program on its peer.
    let _pass = PassHolder::new(&br, "plb")?;
    client_via_lb(&client, "10.79.1.0/24", LB_V100, &["t0", "v100"])?;
    // The servers answer the client directly, routed by the LB node's kernel.
    lb.sysctl("net.ipv4.ip_forward", "1")?;
    s1.run(&["ip", "route", "add", "default", "via", LB_V200])?;
    s2.run(&["ip", "route", "add", "default", "via", LB_NATIVE])?;
    // s1 drops what arrives elsewhere than its route back to the sender
    // (strict reverse-path filter): a frame from the client that reached it
    // untagged on the trunk instead of on v200 is dropped, so every answered
    // connection to s1 came tagged with VLAN 200. (s2 has no VLAN interface:
    // a frame still tagged is dropped there anyway.)
    s1.sysctl("net.ipv4.conf.all.rp_filter", "1")?;
    let servers = [(&s1, "s1", S1_IP, "v200"), (&s2, "s2", S2_IP, "t0")];
    let mut decaps = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for (ns, name, ip, _) in servers {
        hold_vips(ns, &[VIP_DR, VIP_IPIP])?;
        decaps.push(spawn_decap(ns, ip)?);
        responder(ns, name, Arc::clone(&stop))?;
    }

    write_two_vip_config(
        CONFIG,
        "/tmp/trunk-st",
        LB_NATIVE,
        (VIP_DR, VIP_IPIP),
        [S1_IP, S2_IP],
    )?;
    let daemon = lb.spawn(&["/bin/lbctl", "run", "--config", CONFIG])?;
    let st = wait_in_ring(CONFIG, 2, 2)?;
    ensure!(
        st["xdp_mode"] == "driver",
        "not attached in driver mode: {st}"
    );
    for vip in st["vips"].as_array().into_iter().flatten() {
        for b in vip["backends"].as_array().into_iter().flatten() {
            let want = if b["address"] == S1_IP {
                serde_json::json!(200)
            } else {
                serde_json::Value::Null
            };
            ensure!(b["vlan"] == want, "backend VLAN: {b}");
        }
    }
    // The trunk carries VLANs and veth starts with receive VLAN offload on
    // (it keeps tags in the frame all the same): the daemon warns.
    ensure!(
        st["dataplane_note"]
            .as_str()
            .is_some_and(|n| n.contains("ethtool -K t0 rxvlan off")),
        "no receive VLAN offload warning: {st}"
    );
    pass("trunk backend vlans");

    let rx = |ns: &NetNs, dev: &str| rx_packets(ns, dev);
    let before = [rx(&s1, "v200")?, rx(&s2, "t0")?];
    let answers = connect_many(&client, VIP_DR, CONNECTIONS)?;
    check_spread(&answers, CONNECTIONS, 5)?;
    pass("trunk dr connections");
    let answers = connect_many(&client, VIP_IPIP, CONNECTIONS)?;
    check_spread(&answers, CONNECTIONS, 5)?;
    pass("trunk ipip connections");

    let stats = lbctl_json("stats", CONFIG)?;
    let after = [rx(&s1, "v200")?, rx(&s2, "t0")?];
    for (i, (_, name, ip, dev)) in servers.iter().enumerate() {
        let sent: u64 = stats["vips"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|v| v["backends"].as_array().into_iter().flatten())
            .filter(|b| b["address"] == *ip)
            .map(|b| b["packets"].as_u64().unwrap_or(0))
            .sum();
        let got = after[i] - before[i];
        ensure!(
            sent > 0 && got >= sent,
            "{name}: the program sent {sent} packets, its {dev} received {got}: {stats}"
        );
        println!("TRAFFIC-VM: trunk {name}: sent {sent}, received on {dev}: {got}");
    }
    pass("trunk tagged");

    stop_all(daemon, decaps, &stop)?;
    pass("trunk stop");
    Ok(())
}
