//! `cargo xtask demo`: lbctl on a network it builds itself.
//!
//! Topology (every node a network namespace, one L2 segment through a bridge):
//!
//! ```text
//!   lbd-client 10.99.0.10 ─┐
//!   lbd-lb1    10.99.0.2  ─┤  VRRP master (priority 150)
//!   lbd-lb2    10.99.0.3  ─┤  VRRP backup (priority 100)   lbd-sw (br0)
//!   lbd-rs1    10.99.0.11 ─┤
//!   lbd-rs2    10.99.0.12 ─┤
//!   lbd-rs3    10.99.0.13 ─┘
//! ```
//!
//! Two lbctl nodes with the same lb.toml (but for interface, state dir and
//! priority) run VRRPv3 for VIP 10.99.0.100:80 (DR: the real servers hold it
//! on `lo` with ARP suppressed) and VIP 10.99.0.101:80 (IPIP: the real
//! servers run `lbctl decap`). The client reaches the VIPs on its own subnet,
//! through whichever node is master. Each real server runs an HTTP server
//! that answers with its own name. The demo shows the weighted spread over
//! both VIPs, a backend failing and leaving the table, then lbctl on the
//! master killed with SIGKILL in the middle of a download: the backup takes
//! the VIPs, the download completes.

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
const LBS: [(&str, &str, u8); 2] = [("lb1", "10.99.0.2", 150), ("lb2", "10.99.0.3", 100)];
const SERVERS: [(&str, &str, u32); 3] = [
    ("rs1", "10.99.0.11", 100),
    ("rs2", "10.99.0.12", 200),
    ("rs3", "10.99.0.13", 100),
];
const VIP_DR: &str = "10.99.0.100";
const VIP_IPIP: &str = "10.99.0.101";
const REQUESTS: usize = 60;
/// The download that runs across the master's death: 24 MiB at 8 MiB/s.
const BIG_MIB: usize = 24;
const RATE: &str = "8M";

fn ns(name: &str) -> String {
    format!("{PREFIX}-{name}")
}

fn in_ns(name: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip")
        .args(["netns", "exec", &ns(name)])
        .args(args))
}

fn in_ns_quiet(name: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip")
        .args(["netns", "exec", &ns(name)])
        .args(args)
        .stdout(Stdio::null()))
}

fn work_dir() -> PathBuf {
    std::env::temp_dir().join("lbctl-demo")
}

/// Removes every namespace, process and pin a demo made.
pub fn clean() -> Result<()> {
    let list = run_ok(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name.starts_with(&format!("{PREFIX}-")) {
            if let Some(pids) = run_ok(Command::new("ip").args(["netns", "pids", name])) {
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    // keep_dataplane_on_exit pins the data plane on bpffs, by interface name.
    for (lb, _, _) in LBS {
        let _ = fs::remove_dir_all(format!("/sys/fs/bpf/lbctl/veth-{lb}"));
        // lbctl's lock on those pins (lbctl leaves it; it is ours to remove).
        let _ = fs::remove_file(format!("/run/lock/lbctl-pins-veth-{lb}.lock"));
    }
    let _ = fs::remove_dir("/sys/fs/bpf/lbctl");
    let _ = fs::remove_dir_all(work_dir());
    Ok(())
}

struct Demo {
    children: Vec<(String, Child)>,
    keep: bool,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for (_, c) in &mut self.children {
            // Only the living: the demo kills one lbctl itself.
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, c) in &mut self.children {
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
    fn spawn(&mut self, tag: &str, node: &str, args: &[&str], log: &Path) -> Result<()> {
        self.spawn_in(tag, node, args, log, false)
    }

    /// `net_only`: enter only the network namespace (`nsenter --net`).
    /// `ip netns exec` also gives the process a private mount namespace with
    /// a fresh /sys, so a bpffs mounted there (lbctl's pins) would die with
    /// the process; lbctl must pin on the host's bpffs.
    fn spawn_in(
        &mut self,
        tag: &str,
        node: &str,
        args: &[&str],
        log: &Path,
        net_only: bool,
    ) -> Result<()> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = if net_only {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", ns(node))).arg("--");
            c
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns(node)]);
            c
        };
        let child = cmd
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawning {args:?} in {node}"))?;
        self.children.push((tag.to_owned(), child));
        Ok(())
    }

    /// SIGKILLs the child spawned under `tag` (`ip netns exec` and `nsenter`
    /// exec, so the child is the program itself).
    fn kill(&mut self, tag: &str) -> Result<()> {
        let Some((_, c)) = self.children.iter_mut().find(|(t, _)| t == tag) else {
            bail!("no process {tag}");
        };
        c.kill().context("SIGKILL")?;
        let _ = c.wait();
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

/// lb.toml of LB node `i`: identical for both nodes but for the interface,
/// the state directory, the IPIP source and the VRRP priority, so both build
/// the same Maglev tables.
fn config(dir: &Path, i: usize) -> Result<PathBuf> {
    let (name, addr, prio) = LBS[i];
    let state = dir.join(name);
    fs::create_dir_all(&state)?;
    let mut t = format!(
        "# Written by `cargo xtask demo` for {name}.\n\
         [node]\ninterface = \"veth-{name}\"\nxdp_mode = \"auto\"\n\
         state_dir = \"{}\"\n\
         # the data plane outlives a crashed daemon until VRRP moves the VIPs\n\
         keep_dataplane_on_exit = true\n\n\
         [ipip]\nsource_v4 = \"{addr}\"\n\n",
        state.join("state").display()
    );
    for (vname, vip, fwd) in [("web-dr", VIP_DR, "dr"), ("web-ipip", VIP_IPIP, "ipip")] {
        t.push_str(&format!(
            "[[vip]]\nname = \"{vname}\"\naddress = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\n\
             forwarding = \"{fwd}\"\nvrrp_instance = \"VI_1\"\n\
             health_check = {{ type = \"http\", path = \"/\", expect_status = [200], interval = \"500ms\", timeout = \"300ms\", rise = 2, fall = 2 }}\n"
        ));
        for (_, baddr, weight) in SERVERS {
            t.push_str(&format!(
                "  [[vip.backend]]\n  address = \"{baddr}\"\n  weight = {weight}\n"
            ));
        }
        t.push('\n');
    }
    t.push_str(&format!(
        "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"veth-{name}\"\nvirtual_router_id = 51\n\
         priority = {prio}\nadvert_int = \"100ms\"\nversion = 3\n\
         virtual_ipaddress = [\"{VIP_DR}/32\", \"{VIP_IPIP}/32\"]\n\
         garp_master_repeat = 3\ngarp_interval = \"20ms\"\n"
    ));
    let path = state.join("lb.toml");
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

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return Ok(start.elapsed());
        }
        sleep(Duration::from_millis(10));
    }
    bail!("timed out waiting for {what}")
}

fn holds_vip(node: &str) -> bool {
    run_ok(Command::new("ip").args(["netns", "exec", &ns(node), "ip", "-o", "addr"]))
        .is_some_and(|s| s.contains(&format!("{VIP_DR}/32")))
}

/// Builds the topology, runs two lbctl nodes, shows traffic through the VIPs.
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

    println!("== topology: namespaces {PREFIX}-{{sw,client,lb1,lb2,rs1,rs2,rs3}} on bridge br0");
    for n in ["sw", "client", "lb1", "lb2", "rs1", "rs2", "rs3"] {
        run(Command::new("ip").args(["netns", "add", &ns(n)]))?;
    }
    in_ns("sw", &["ip", "link", "add", "br0", "type", "bridge"])?;
    in_ns("sw", &["ip", "link", "set", "br0", "up"])?;
    link("client", "10.99.0.10")?;
    // The client's TCP stack leaves checksums for the NIC to fill in (partial
    // checksums on veth); XDP_TX forwards the frame as is, so turn that off.
    in_ns_quiet("client", &["ethtool", "-K", "veth-client", "tx", "off"])?;
    for (lb, addr, _) in LBS {
        link(lb, addr)?;
    }
    for (name, addr, _) in SERVERS {
        link(name, addr)?;
    }
    // XDP_TX out of a veth only arrives when the peer runs an XDP program.
    demo.spawn(
        "xdp-pass",
        "sw",
        &[&xdp_pass.to_string_lossy(), "sw-lb1", "sw-lb2"],
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
        fs::write(root.join("big"), vec![b'x'; BIG_MIB << 20])?;
        demo.spawn(
            &format!("{name}-http"),
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
            &format!("{name}-decap"),
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

    let cfgs = [config(&dir, 0)?, config(&dir, 1)?];
    for (i, (lb, _, prio)) in LBS.iter().enumerate() {
        let cfg = cfgs[i].to_string_lossy().into_owned();
        println!("== {lb}: lbctl check, then lbctl run (VRRP priority {prio}; log in {lb}.log)");
        run(Command::new(&lbctl).args(["check", "--config", &cfg]))?;
        demo.spawn_in(
            lb,
            lb,
            &[&lbctl_s, "run", "--config", &cfg],
            &dir.join(format!("{lb}.log")),
            true,
        )?;
        if i == 0 {
            wait_for("lb1 to become VRRP master", Duration::from_secs(10), || {
                holds_vip("lb1")
            })?;
        }
    }
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
    demo.kill("rs2-http")?;
    let gone = wait_for("rs2 to leave the table", Duration::from_secs(10), || {
        let m = spread(VIP_DR, 8);
        !m.contains_key("rs2") && !m.contains_key("(failed)")
    })?;
    println!("   rs2 gone from the VIP after {:.1}s", gone.as_secs_f64());
    print_spread(
        &format!("{REQUESTS} connections to {VIP_DR}:80 with rs2 down:"),
        &spread(VIP_DR, REQUESTS),
    );

    println!("\n== lbctl stats on lb1 (the master)");
    in_ns(
        "lb1",
        &[&lbctl_s, "stats", "--config", &cfgs[0].to_string_lossy()],
    )?;

    println!(
        "\n== failover: a {BIG_MIB} MiB download through {VIP_DR} at {RATE}/s; lbctl on lb1 is SIGKILLed in the middle"
    );
    let out = dir.join("download.out");
    let download = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns("client"),
            "curl",
            "-s",
            "--limit-rate",
            RATE,
        ])
        .args(["--max-time", "30", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code} %{size_download}"])
        .arg(format!("http://{VIP_DR}/big"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the download")?;
    sleep(Duration::from_millis(1200));
    let t_kill = Instant::now();
    demo.kill("lb1")?;
    let took = wait_for("lb2 to take the VIPs", Duration::from_secs(5), || {
        holds_vip("lb2")
    })?;
    println!(
        "   lbctl on lb1 killed; lb2 holds the VIPs after {} ms (lb1's pinned data plane forwarded meanwhile)",
        took.as_millis()
    );
    let served = request(VIP_DR).unwrap_or_else(|| "(failed)".into());
    println!("   a new connection through {VIP_DR} during the download is answered by {served}");
    let result = download.wait_with_output().context("download")?;
    let summary = String::from_utf8_lossy(&result.stdout).into_owned();
    let ok = result.status.success() && summary.starts_with("200 ") && {
        let size: usize = summary
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        size == BIG_MIB << 20
    };
    println!(
        "   download: {} ({summary}) in {:.1}s",
        if ok { "complete, not reset" } else { "FAILED" },
        t_kill.elapsed().as_secs_f64() + 1.2
    );
    println!("\n== lbctl status on lb2 (now master)");
    in_ns(
        "lb2",
        &[&lbctl_s, "status", "--config", &cfgs[1].to_string_lossy()],
    )?;
    if !ok {
        bail!("the download through the VIP did not survive the failover");
    }
    if keep {
        println!("\nleft running; `cargo xtask demo --clean` removes it");
    }
    Ok(())
}
