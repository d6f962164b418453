//! The guest half of the kernel-VM VLAN test (`tests/tests/vlan_vm.rs` is the
//! host half). The development kernel has no 802.1Q, Debian's has: here
//! lbctl runs the way the README says to on a VLAN, on the VLAN interface
//! (XDP in generic mode: the kernel removes the tag before the program runs
//! and puts it back on the way out), and forwards by DR to real servers on
//! the same VLAN.
//!
//! Namespaces `client`, `lb`, `s1`, `s2` each have a trunk veth `t0` into a
//! bridge (namespace `br`) and their address on `v100`, VLAN 100 over it.
//! The servers hold the VIP on `lo` and answer HTTP-less TCP with their
//! name. Checks, printed as `VLAN-VM:` markers for the host: the program
//! attached in generic mode; 100 connections from the client all reach a
//! server and both servers get some; the program counted them as DR
//! forwards; and every forwarded packet arrived on a server's VLAN
//! interface (a frame sent back untagged would arrive on `t0` instead, and
//! the server's kernel would still accept it, the VIP being local there).
//!
//! Refuses to run unless `LBCTL_VLAN_GUEST=1` (it creates namespaces and
//! runs a daemon), which only the guest's `/init` sets.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use tests::netns::{NetNs, bridge, veth_pair, wait_until};

const LB_IP: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.10";
const SERVERS: [(&str, &str); 2] = [("s1", "10.77.0.11"), ("s2", "10.77.0.12")];
const VIP: &str = "10.77.1.100";
const CONFIG: &str = "/tmp/vlan-lb.toml";
const CONNECTIONS: usize = 100;

fn main() {
    match run() {
        Ok(()) => println!("VLAN-VM: ALL PASS"),
        Err(e) => {
            println!("VLAN-VM: FAIL {e:#}");
            std::process::exit(1);
        }
    }
}

fn pass(step: &str) {
    println!("VLAN-VM: PASS {step}");
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

/// Answers every connection on port 80 with `name`, until `stop`.
fn responder(ns: &NetNs, name: &'static str, stop: Arc<AtomicBool>) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
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

fn rx_packets(ns: &NetNs, dev: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/rx_packets");
    Ok(ns.run(&["cat", &path])?.trim().parse()?)
}

fn lbctl_json(sub: &str) -> Result<serde_json::Value> {
    let out = std::process::Command::new("/bin/lbctl")
        .args([sub, "--json", "--config", CONFIG])
        .output()?;
    ensure!(out.status.success(), "lbctl {sub}: {out:?}");
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn run() -> Result<()> {
    ensure!(
        std::env::var("LBCTL_VLAN_GUEST").as_deref() == Ok("1"),
        "refusing to run outside the kernel-VM guest (LBCTL_VLAN_GUEST=1)"
    );
    for m in ["veth", "8021q", "bridge"] {
        let st = std::process::Command::new("modprobe").arg(m).status()?;
        ensure!(st.success(), "modprobe {m}");
    }
    std::fs::create_dir_all("/run/netns")?;

    let br = NetNs::new("br")?;
    let client = NetNs::new("client")?;
    let lb = NetNs::new("lb")?;
    let s: Vec<NetNs> = SERVERS
        .iter()
        .map(|(n, _)| NetNs::new(n))
        .collect::<Result<_>>()?;
    vlan_node(&client, &br, "pclient", &format!("{CLIENT_IP}/24"))?;
    vlan_node(&lb, &br, "plb", &format!("{LB_IP}/24"))?;
    for (ns, (n, ip)) in s.iter().zip(SERVERS) {
        vlan_node(ns, &br, &format!("p{n}"), &format!("{ip}/24"))?;
        ns.addr_add("lo", &format!("{VIP}/32"))?;
        ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
    }
    bridge(&br, "br0", &["pclient", "plb", "ps1", "ps2"])?;
    client.run(&["ip", "route", "add", "10.77.1.0/24", "via", LB_IP])?;
    // Locally generated packets carry partial checksums, which the program's
    // XDP_TX does not complete: let the client's stack fill them in.
    for dev in ["t0", "v100"] {
        client.run(&["ethtool", "-K", dev, "tx", "off"])?;
    }

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
    let mut daemon = lb.spawn(&["/bin/lbctl", "run", "--config", CONFIG])?;

    // Attached (generic mode on a VLAN device), both backends in the ring.
    let mut last = serde_json::Value::Null;
    let ready = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        let Ok(st) = lbctl_json("status") else {
            return false;
        };
        last = st;
        last["vips"][0]["backends"]
            .as_array()
            .is_some_and(|b| b.len() == 2 && b.iter().all(|b| b["in_ring"] == true))
    });
    ensure!(ready.is_some(), "backends not in the ring: {last}");
    ensure!(
        last["xdp_mode"] == "skb",
        "not attached in generic mode: {last}"
    );
    pass("attach-generic");

    let rx_before: u64 = s
        .iter()
        .map(|ns| rx_packets(ns, "v100"))
        .sum::<Result<_>>()?;
    let vip: SocketAddr = format!("{VIP}:80").parse()?;
    let answers = client
        .enter_thread(move || -> Result<Vec<String>> {
            let mut v = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            for _ in 0..CONNECTIONS {
                ensure!(Instant::now() < deadline, "connections too slow");
                let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(3))
                    .context("connect to the VIP")?;
                c.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut name = String::new();
                c.read_to_string(&mut name).context("read the answer")?;
                v.push(name);
            }
            Ok(v)
        })?
        .join()
        .map_err(|_| anyhow!("client thread panicked"))???;
    let count = |n: &str| answers.iter().filter(|a| *a == n).count();
    let (a, b) = (count("s1"), count("s2"));
    ensure!(
        a + b == CONNECTIONS && a > 10 && b > 10,
        "answers: s1 {a}, s2 {b}, of {CONNECTIONS}: {answers:?}"
    );
    pass("connections");

    let stats = lbctl_json("stats")?;
    let fwd = stats["reasons"]["fwd_dr"].as_u64().unwrap_or(0);
    ensure!(
        fwd >= CONNECTIONS as u64,
        "fwd_dr {fwd}: {}",
        stats["reasons"]
    );
    pass("counted");
    let rx_after: u64 = s
        .iter()
        .map(|ns| rx_packets(ns, "v100"))
        .sum::<Result<_>>()?;
    let rx = rx_after - rx_before;
    ensure!(
        rx >= fwd,
        "servers' VLAN interfaces received {rx} packets, the program forwarded {fwd}"
    );
    println!("VLAN-VM: forwarded {fwd}, received on VLAN 100: {rx}");
    pass("tagged");

    daemon.signal(nix::sys::signal::Signal::SIGTERM)?;
    ensure!(
        daemon.wait_exit(Duration::from_secs(30)),
        "daemon did not stop"
    );
    stop.store(true, Ordering::Relaxed);
    pass("stop");
    Ok(())
}
