//! `cargo xtask demo`: lbctl on a network it builds itself.
//!
//! Topology (every node a network namespace, one L2 segment through a bridge):
//!
//! ```text
//!   lbd-client 10.99.0.10 ─┐
//!   lbd-lb     10.99.0.2  ─┤  lbd-sw (br0)
//!   lbd-rs1    10.99.0.11 ─┤
//!   lbd-rs2    10.99.0.12 ─┤
//!   lbd-rs3    10.99.0.13 ─┘
//! ```
//!
//! VIP 10.99.0.100:80 (DR: the real servers hold it on `lo` with ARP
//! suppressed) and VIP 10.99.0.101:80 (IPIP: the real servers run
//! `lbctl decap`). The client routes both VIPs via the LB. Each real server
//! runs an HTTP server that answers with its own name; the demo makes
//! connections through the VIPs, shows which backend answered, stops one
//! backend and shows traffic moving away from it, then prints `lbctl stats`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run, run_ok};

const PREFIX: &str = "lbd";
const SERVERS: [(&str, &str, u32); 3] = [
    ("rs1", "10.99.0.11", 100),
    ("rs2", "10.99.0.12", 200),
    ("rs3", "10.99.0.13", 100),
];
const VIP_DR: &str = "10.99.0.100";
const VIP_IPIP: &str = "10.99.0.101";
const REQUESTS: usize = 60;

fn ns(name: &str) -> String {
    format!("{PREFIX}-{name}")
}

fn in_ns(name: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip")
        .args(["netns", "exec", &ns(name)])
        .args(args))
}

fn work_dir() -> PathBuf {
    std::env::temp_dir().join("lbctl-demo")
}

/// Removes every namespace and process a demo made.
pub fn clean() -> Result<()> {
    let list = run_ok(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name.starts_with(&format!("{PREFIX}-")) {
            // Processes inside die with their namespace's last reference only
            // if we kill them: do that first.
            if let Some(pids) = run_ok(Command::new("ip").args(["netns", "pids", name])) {
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").arg(pid).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    let _ = fs::remove_dir_all(work_dir());
    Ok(())
}

struct Demo {
    children: Vec<Child>,
    keep: bool,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for c in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = clean();
    }
}

impl Demo {
    fn spawn(&mut self, node: &str, args: &[&str], log: &Path) -> Result<()> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns(node)])
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawning {args:?} in {node}"))?;
        self.children.push(child);
        Ok(())
    }
}

fn link(node: &str, addr: &str) -> Result<()> {
    let veth = format!("veth-{node}");
    let port = format!("sw-{node}");
    run(Command::new("ip").args([
        "link",
        "add",
        &veth,
        "netns",
        &ns(node),
        "type",
        "veth",
        "peer",
        "name",
        &port,
        "netns",
        &ns("sw"),
    ]))?;
    in_ns("sw", &["ip", "link", "set", &port, "master", "br0", "up"])?;
    in_ns(node, &["ip", "link", "set", "lo", "up"])?;
    in_ns(node, &["ip", "link", "set", &veth, "up"])?;
    in_ns(
        node,
        &["ip", "addr", "add", &format!("{addr}/24"), "dev", &veth],
    )
}

fn built(bin: &str) -> Result<PathBuf> {
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| PathBuf::from("target"), PathBuf::from);
    let p = target.join("debug").join(bin);
    if !p.exists() {
        bail!("{} was not built", p.display());
    }
    Ok(fs::canonicalize(p)?)
}

fn config(dir: &Path) -> Result<PathBuf> {
    let mut t = String::from(
        "# Written by `cargo xtask demo`.\n\
         [node]\ninterface = \"veth-lb\"\nxdp_mode = \"auto\"\n",
    );
    t.push_str(&format!(
        "state_dir = \"{}\"\n\n",
        dir.join("state").display()
    ));
    t.push_str("[ipip]\nsource_v4 = \"10.99.0.2\"\n\n");
    for (name, vip, fwd) in [("web-dr", VIP_DR, "dr"), ("web-ipip", VIP_IPIP, "ipip")] {
        t.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\n\
             forwarding = \"{fwd}\"\n\
             health_check = {{ type = \"http\", path = \"/\", expect_status = [200], interval = \"500ms\", timeout = \"300ms\", rise = 2, fall = 2 }}\n"
        ));
        for (_, addr, weight) in SERVERS {
            t.push_str(&format!(
                "  [[vip.backend]]\n  address = \"{addr}\"\n  weight = {weight}\n"
            ));
        }
        t.push('\n');
    }
    let path = dir.join("lb.toml");
    fs::write(&path, t)?;
    Ok(path)
}

fn request(vip: &str) -> Option<String> {
    run_ok(Command::new("ip").args([
        "netns",
        "exec",
        &ns("client"),
        "curl",
        "-s",
        "--max-time",
        "2",
        &format!("http://{vip}/"),
    ]))
    .map(|s| s.trim().to_owned())
}

fn spread(vip: &str, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let who = request(vip).unwrap_or_else(|| "(failed)".into());
        *m.entry(who).or_insert(0) += 1;
    }
    m
}

fn print_spread(title: &str, m: &BTreeMap<String, usize>) {
    println!("\n{title}");
    let total: usize = m.values().sum();
    for (who, n) in m {
        println!("  {who:<10} {n:>4}  {}", "#".repeat(*n));
    }
    println!("  {:<10} {total:>4}", "total");
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(200));
    }
    bail!("timed out waiting for {what}")
}

/// Builds the topology, runs lbctl, shows traffic through the VIPs.
pub fn demo(keep: bool) -> Result<()> {
    println!("== building lbctl and the xdp-pass test aid");
    run(cargo().args([
        "build",
        "--package",
        "lbctl",
        "--package",
        "tests",
        "--bins",
    ]))?;
    let lbctl = built("lbctl")?;
    let xdp_pass = built("xdp-pass")?;
    let lbctl_s = lbctl.to_string_lossy().into_owned();

    clean()?;
    let dir = work_dir();
    fs::create_dir_all(&dir)?;
    let mut demo = Demo {
        children: Vec::new(),
        keep,
    };

    println!("== topology: namespaces {PREFIX}-{{sw,client,lb,rs1,rs2,rs3}} on bridge br0");
    for n in ["sw", "client", "lb", "rs1", "rs2", "rs3"] {
        run(Command::new("ip").args(["netns", "add", &ns(n)]))?;
    }
    in_ns("sw", &["ip", "link", "add", "br0", "type", "bridge"])?;
    in_ns("sw", &["ip", "link", "set", "br0", "up"])?;
    link("client", "10.99.0.10")?;
    // The client's TCP stack leaves checksums for the NIC to fill in (partial
    // checksums on veth); XDP_TX forwards the frame as is, so turn that off.
    run(Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns("client"),
            "ethtool",
            "-K",
            "veth-client",
            "tx",
            "off",
        ])
        .stdout(Stdio::null()))?;
    link("lb", "10.99.0.2")?;
    for (name, addr, _) in SERVERS {
        link(name, addr)?;
    }
    in_ns(
        "client",
        &[
            "ip",
            "route",
            "add",
            &format!("{VIP_DR}/32"),
            "via",
            "10.99.0.2",
        ],
    )?;
    in_ns(
        "client",
        &[
            "ip",
            "route",
            "add",
            &format!("{VIP_IPIP}/32"),
            "via",
            "10.99.0.2",
        ],
    )?;
    // XDP_TX out of a veth only arrives when the peer runs an XDP program.
    demo.spawn(
        "sw",
        &[&xdp_pass.to_string_lossy(), "sw-lb"],
        &dir.join("xdp-pass.log"),
    )?;

    println!(
        "== real servers: HTTP on :80, both VIPs on lo (ARP suppressed), lbctl decap for IPIP"
    );
    for (name, addr, _) in SERVERS {
        for vip in [VIP_DR, VIP_IPIP] {
            in_ns(
                name,
                &["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"],
            )?;
        }
        in_ns(name, &["sysctl", "-q", "net.ipv4.conf.all.arp_ignore=1"])?;
        in_ns(name, &["sysctl", "-q", "net.ipv4.conf.all.arp_announce=2"])?;
        // decapsulated packets arrive on veth with a destination on lo
        in_ns(name, &["sysctl", "-q", "net.ipv4.conf.all.rp_filter=0"])?;
        in_ns(
            name,
            &[
                "sysctl",
                "-q",
                &format!("net.ipv4.conf.veth-{name}.rp_filter=0"),
            ],
        )?;
        let root = dir.join(name);
        fs::create_dir_all(&root)?;
        fs::write(root.join("index.html"), format!("{name}\n"))?;
        demo.spawn(
            name,
            &[
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                "0.0.0.0",
                "--directory",
                &root.to_string_lossy(),
            ],
            &dir.join(format!("{name}-http.log")),
        )?;
        demo.spawn(
            name,
            &[
                &lbctl_s,
                "decap",
                "--iface",
                &format!("veth-{name}"),
                "--addr",
                addr,
            ],
            &dir.join(format!("{name}-decap.log")),
        )?;
    }
    for (name, addr, _) in SERVERS {
        wait_for(&format!("{name} HTTP"), Duration::from_secs(10), || {
            run_ok(Command::new("ip").args([
                "netns",
                "exec",
                &ns("client"),
                "curl",
                "-s",
                "--max-time",
                "1",
                &format!("http://{addr}/"),
            ]))
            .is_some_and(|s| s.trim() == name)
        })?;
    }

    let cfg = config(&dir)?;
    println!("== lbctl check --config {}", cfg.display());
    run(Command::new(&lbctl).args(["check", "--config", &cfg.to_string_lossy()]))?;
    println!(
        "== lbctl run in {} (log: {})",
        ns("lb"),
        dir.join("lbctl.log").display()
    );
    demo.spawn(
        "lb",
        &[&lbctl_s, "run", "--config", &cfg.to_string_lossy()],
        &dir.join("lbctl.log"),
    )?;
    wait_for(
        "every backend healthy and answering through the VIPs",
        Duration::from_secs(20),
        || {
            let m = spread(VIP_DR, 12);
            m.len() == SERVERS.len() && !m.contains_key("(failed)")
        },
    )?;

    print_spread(
        &format!("{REQUESTS} connections to {VIP_DR}:80 (DR), weights rs1=100 rs2=200 rs3=100:"),
        &spread(VIP_DR, REQUESTS),
    );
    print_spread(
        &format!("{REQUESTS} connections to {VIP_IPIP}:80 (IPIP, decapsulated by lbctl decap):"),
        &spread(VIP_IPIP, REQUESTS),
    );

    println!("\n== stopping rs2's HTTP server: its health check fails and it leaves the table");
    if let Some(pids) = run_ok(Command::new("ip").args(["netns", "pids", &ns("rs2")])) {
        for pid in pids.split_whitespace() {
            let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.contains("http.server") {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
    }
    let t0 = Instant::now();
    wait_for("rs2 to leave the table", Duration::from_secs(10), || {
        let m = spread(VIP_DR, 8);
        !m.contains_key("rs2") && !m.contains_key("(failed)")
    })?;
    println!(
        "   rs2 gone from the VIP after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    print_spread(
        &format!("{REQUESTS} connections to {VIP_DR}:80 with rs2 down:"),
        &spread(VIP_DR, REQUESTS),
    );

    println!("\n== lbctl stats");
    in_ns(
        "lb",
        &[&lbctl_s, "stats", "--config", &cfg.to_string_lossy()],
    )?;
    if keep {
        println!("\nleft running; `cargo xtask demo --clean` removes it");
    }
    Ok(())
}
