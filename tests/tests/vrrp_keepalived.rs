//! VRRP interop with keepalived (2.2.7, Debian) in network namespaces.
//!
//! Topology per test: two namespaces joined by one veth pair (`eth0` on
//! each side, 10.77.0.1/24 and 10.77.0.2/24, IPv6 link-locals without
//! DAD). One side runs lbctl's VRRP shell (the `vrrp-node` test binary, a
//! separate process so it can be SIGKILLed), the other keepalived with its
//! own config, pid files and log file in a temp dir. VIP presence is read
//! with `ip -o addr` inside each namespace.
//!
//! Failover times are printed (`cargo test -- --nocapture` shows them) so
//! lbctl (as the backup taking over) and keepalived (same) can be compared
//! in one run. Tests take a file-wide lock: they measure time, and running
//! them one at a time keeps the measurement honest on a small machine.
//!
//! Needs root, keepalived and iproute2.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nix::sys::signal::Signal;
use tests::netns::{ChildGuard, NetNs, unique_name, veth_pair, wait_until};

static SERIAL: Mutex<()> = Mutex::new(());

const ADDR_A: &str = "10.77.0.1";
const ADDR_B: &str = "10.77.0.2";
/// How often VIP presence is polled.
const POLL: Duration = Duration::from_millis(10);
/// Allowed lateness of a takeover beyond what the protocol allows: process
/// and netlink latency plus the `ip` polling itself.
const TOLERANCE: Duration = Duration::from_millis(300);

/// Which implementation runs on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Lbctl,
    Keepalived,
}

/// One node's VRRP instance.
#[derive(Clone, Debug)]
struct Inst {
    vrid: u8,
    priority: u8,
    version: u8,
    advert: Duration,
    preempt: bool,
    start_master: bool,
    vip: &'static str,
    auth_pass: Option<&'static str>,
    /// (our address, peer address) for unicast mode.
    unicast: Option<(&'static str, &'static str)>,
}

impl Inst {
    fn v3(priority: u8, vip: &'static str) -> Inst {
        Inst {
            vrid: 51,
            priority,
            version: 3,
            advert: Duration::from_millis(100),
            preempt: true,
            start_master: false,
            vip,
            auth_pass: None,
            unicast: None,
        }
    }

    /// Skew_Time (RFC 5798 §6.1 / RFC 3768 §6.1).
    fn skew(&self) -> Duration {
        let factor = 256 - u32::from(self.priority);
        match self.version {
            2 => Duration::from_secs(1) * factor / 256,
            _ => self.advert * factor / 256,
        }
    }

    /// Master_Down_Interval.
    fn master_down(&self) -> Duration {
        self.advert * 3 + self.skew()
    }

    fn vip_addr(&self) -> &'static str {
        self.vip.split('/').next().unwrap_or(self.vip)
    }

    fn lb_toml(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "[node]\ninterface = \"eth0\"\n");
        let _ = writeln!(
            t,
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\""
        );
        let _ = writeln!(
            t,
            "state = \"{}\"",
            if self.start_master {
                "MASTER"
            } else {
                "BACKUP"
            }
        );
        let _ = writeln!(t, "virtual_router_id = {}", self.vrid);
        let _ = writeln!(t, "priority = {}", self.priority);
        let _ = writeln!(t, "version = {}", self.version);
        let _ = writeln!(t, "advert_int = \"{}ms\"", self.advert.as_millis());
        let _ = writeln!(t, "preempt = {}", self.preempt);
        let _ = writeln!(t, "virtual_ipaddress = [\"{}\"]", self.vip);
        let _ = writeln!(t, "garp_master_delay = \"1s\"\ngarp_master_repeat = 2");
        if let Some(p) = self.auth_pass {
            let _ = writeln!(
                t,
                "authentication = {{ auth_type = \"PASS\", auth_pass = \"{p}\" }}"
            );
        }
        if let Some((src, peer)) = self.unicast {
            let _ = writeln!(t, "unicast_src_ip = \"{src}\"\nunicast_peer = [\"{peer}\"]");
        }
        t
    }

    fn keepalived_conf(&self, router_id: &str) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "global_defs {{\n  router_id {router_id}\n  script_user root\n  enable_script_security\n  vrrp_garp_master_delay 1\n  vrrp_garp_master_repeat 2\n}}"
        );
        let _ = writeln!(t, "vrrp_instance VI_1 {{\n  interface eth0");
        let _ = writeln!(
            t,
            "  state {}",
            if self.start_master {
                "MASTER"
            } else {
                "BACKUP"
            }
        );
        let _ = writeln!(t, "  virtual_router_id {}", self.vrid);
        let _ = writeln!(t, "  priority {}", self.priority);
        let _ = writeln!(t, "  version {}", self.version);
        let _ = writeln!(t, "  advert_int {}", self.advert.as_secs_f64());
        if !self.preempt {
            let _ = writeln!(t, "  nopreempt");
        }
        if let Some(p) = self.auth_pass {
            let _ = writeln!(
                t,
                "  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}"
            );
        }
        if let Some((src, peer)) = self.unicast {
            let _ = writeln!(
                t,
                "  unicast_src_ip {src}\n  unicast_peer {{\n    {peer}\n  }}"
            );
        }
        let _ = writeln!(t, "  virtual_ipaddress {{\n    {}\n  }}\n}}", self.vip);
        t
    }
}

/// A temp dir removed on drop; on a failing test the node logs are printed
/// first.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(unique_name(&format!("vrrp-{test}"), "files"));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl TempDir {
    /// Print the tail of every node log and stats file (on failure).
    fn dump(&self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log" || x == "stats") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("==== {} (last lines) ====", p.display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running VRRP node (either implementation).
struct Node {
    kind: Impl,
    label: String,
    child: ChildGuard,
    /// keepalived's VRRP child pid file.
    vrrp_pid: PathBuf,
    stats: PathBuf,
}

impl Node {
    fn start(kind: Impl, ns: &NetNs, dir: &Path, label: &str, inst: &Inst) -> Result<Node> {
        let log = dir.join(format!("{label}.log"));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let stats = dir.join(format!("{label}.stats"));
        let vrrp_pid = dir.join(format!("{label}.vrrp.pid"));
        let mut cmd = match kind {
            Impl::Lbctl => {
                let conf = dir.join(format!("{label}.toml"));
                std::fs::write(&conf, inst.lb_toml())?;
                let mut c = ns.command(env!("CARGO_BIN_EXE_vrrp-node"));
                c.arg(&conf).arg(&stats).env("RUST_LOG", "info");
                c
            }
            Impl::Keepalived => {
                let conf = dir.join(format!("{label}.conf"));
                std::fs::write(&conf, inst.keepalived_conf(label))?;
                let mut c = ns.command("keepalived");
                c.args(["-n", "-l", "-D", "-P", "-G", "-f"])
                    .arg(&conf)
                    .arg("-p")
                    .arg(dir.join(format!("{label}.pid")))
                    .arg("-r")
                    .arg(&vrrp_pid)
                    .arg("-c")
                    .arg(dir.join(format!("{label}.checkers.pid")));
                c
            }
        };
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("start {label}"))?;
        Ok(Node {
            kind,
            label: label.to_owned(),
            child: ChildGuard::new(child),
            vrrp_pid,
            stats,
        })
    }

    /// Crash: SIGKILL, no goodbye. For keepalived the VRRP child is the
    /// process that speaks VRRP: stop the parent (so it neither respawns
    /// the child nor forwards a clean shutdown), kill the child, then the
    /// parent.
    fn kill(&mut self) -> Result<()> {
        if self.kind == Impl::Keepalived {
            self.child.signal(Signal::SIGSTOP)?;
            let pid: i32 = std::fs::read_to_string(&self.vrrp_pid)
                .context("keepalived vrrp pid file")?
                .trim()
                .parse()
                .context("vrrp pid")?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL)?;
        }
        self.child.kill();
        Ok(())
    }

    /// Clean stop: SIGTERM and wait for the exit.
    fn stop(&mut self) -> Result<()> {
        self.terminate()?;
        self.wait_exit()
    }

    /// Send SIGTERM.
    fn terminate(&mut self) -> Result<()> {
        self.child.signal(Signal::SIGTERM)
    }

    /// Wait for the exit after [`Node::terminate`].
    fn wait_exit(&mut self) -> Result<()> {
        ensure!(
            self.child.wait_exit(Duration::from_secs(10)),
            "{} did not exit after SIGTERM",
            self.label
        );
        Ok(())
    }

    /// The stats line of lbctl's vrrp-node.
    fn stats(&self) -> String {
        std::fs::read_to_string(&self.stats).unwrap_or_default()
    }
}

/// Two namespaces on one veth pair.
struct Pair {
    a: NetNs,
    b: NetNs,
    dir: TempDir,
}

impl Pair {
    fn new(test: &str) -> Result<Pair> {
        let a = NetNs::new(&unique_name(&format!("vrrp-{test}"), "a"))?;
        let b = NetNs::new(&unique_name(&format!("vrrp-{test}"), "b"))?;
        veth_pair(&a, "eth0", &b, "eth0")?;
        for (ns, addr) in [(&a, ADDR_A), (&b, ADDR_B)] {
            ns.no_dad("eth0")?;
            // Learn neighbours from gratuitous ARP / unsolicited NA, so the
            // announcements of a new master can be checked.
            ns.sysctl("net.ipv4.conf.eth0.arp_accept", "1")?;
            // (the kernel applies accept_untracked_na only when forwarding)
            ns.sysctl("net.ipv6.conf.eth0.forwarding", "1")?;
            ns.sysctl("net.ipv6.conf.eth0.accept_untracked_na", "1")?;
            ns.addr_add("eth0", &format!("{addr}/24"))?;
            ns.link_up("eth0")?;
        }
        // Link-local addresses come with the link (no DAD): wait for both.
        for ns in [&a, &b] {
            wait_until(Duration::from_secs(5), POLL, || {
                ns.addrs()
                    .is_ok_and(|v| v.iter().any(|x| x.starts_with("fe80:")))
            })
            .context("no link-local address")?;
        }
        Ok(Pair {
            a,
            b,
            dir: TempDir::new(test)?,
        })
    }
}

/// Run `f` on a fresh pair of namespaces, one test at a time; on failure
/// print the node logs before everything is torn down.
fn with_pair(test: &str, f: impl FnOnce(&Pair) -> Result<()>) -> Result<()> {
    let _g = lock();
    let p = Pair::new(test)?;
    let r = f(&p);
    if let Err(e) = &r {
        eprintln!("test {test} failed: {e:#}");
        p.dir.dump();
    }
    r
}

/// The MAC address of `dev` in `ns` (`ip -o link`).
fn mac_of(ns: &NetNs, dev: &str) -> Result<String> {
    let out = ns.run(&["ip", "-o", "link", "show", dev])?;
    let mut w = out.split_whitespace();
    w.position(|x| x == "link/ether")
        .and_then(|_| w.next())
        .map(str::to_owned)
        .with_context(|| format!("no MAC in {out:?}"))
}

/// Wait until `ns` holds `vip`; the time it took.
fn wait_vip(ns: &NetNs, vip: &str, timeout: Duration) -> Option<Duration> {
    wait_until(timeout, POLL, || ns.has_addr(vip))
}

/// For `period`, `holder` has the VIP and `other` never does.
fn assert_sole_holder(holder: &NetNs, other: &NetNs, vip: &str, period: Duration) -> Result<()> {
    let start = Instant::now();
    let mut polls = 0;
    while start.elapsed() < period || polls < 3 {
        ensure!(holder.has_addr(vip), "{} lost VIP {vip}", holder.name());
        ensure!(
            !other.has_addr(vip),
            "{} also holds VIP {vip}",
            other.name()
        );
        polls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn report(what: &str, took: Duration, bound: Duration) {
    println!(
        "FAILOVER {what}: {:.0} ms (bound {:.0} ms + {:.0} ms tolerance)",
        took.as_secs_f64() * 1000.0,
        bound.as_secs_f64() * 1000.0,
        TOLERANCE.as_secs_f64() * 1000.0
    );
}

fn name(k: Impl) -> &'static str {
    match k {
        Impl::Lbctl => "lbctl",
        Impl::Keepalived => "keepalived",
    }
}

/// Addressing of a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// IPv4 multicast.
    V4,
    /// IPv6 multicast (link-local sources, ff02::12).
    V6,
    /// IPv4 unicast peers.
    Unicast,
}

/// The full cycle with `master_impl` (priority 150) on `a` and
/// `backup_impl` (priority 100) on `b`: election, SIGKILL takeover,
/// preemption by the restarted master, clean-stop takeover.
fn cycle(p: &Pair, master_impl: Impl, backup_impl: Impl, mode: Mode) -> Result<()> {
    let vip = if mode == Mode::V6 {
        "2001:db8:77::100/64"
    } else {
        "10.77.0.100/32"
    };
    let mut hi = Inst::v3(150, vip);
    let mut lo = Inst::v3(100, vip);
    if mode == Mode::Unicast {
        hi.unicast = Some((ADDR_A, ADDR_B));
        lo.unicast = Some((ADDR_B, ADDR_A));
    }
    let tag = match mode {
        Mode::V4 => "",
        Mode::V6 => " (IPv6)",
        Mode::Unicast => " (unicast)",
    };
    let v = hi.vip_addr();

    let mut backup = Node::start(backup_impl, &p.b, &p.dir.0, "backup", &lo)?;
    let mut master = Node::start(master_impl, &p.a, &p.dir.0, "master", &hi)?;
    // Election: whoever wins first, the higher priority ends up sole holder.
    wait_vip(&p.a, v, Duration::from_secs(5)).context("master never took the VIP")?;
    wait_until(Duration::from_secs(3), POLL, || !p.b.has_addr(v)).context("backup kept the VIP")?;
    assert_sole_holder(&p.a, &p.b, v, Duration::from_millis(800))?;
    // The master announced the VIP: the backup's neighbour table maps it
    // to the master's MAC (gratuitous ARP / unsolicited NA).
    let mac = mac_of(&p.a, "eth0")?;
    wait_until(Duration::from_secs(2), POLL, || {
        p.b.run(&["ip", "neigh", "show", v, "dev", "eth0"])
            .is_ok_and(|o| o.contains(&mac))
    })
    .with_context(|| format!("{} did not announce {v} with {mac}", name(master_impl)))?;

    // Crash of the master: the backup takes over within Master_Down_Interval.
    let t0 = Instant::now();
    master.kill()?;
    let bound = lo.master_down();
    wait_vip(&p.b, v, bound + Duration::from_secs(3)).context("backup never took over")?;
    let took = t0.elapsed();
    report(
        &format!(
            "SIGKILL {} master -> {} backup{}",
            name(master_impl),
            name(backup_impl),
            tag
        ),
        took,
        bound,
    );
    ensure!(
        took <= bound + TOLERANCE,
        "takeover took {took:?}, bound {bound:?}"
    );
    // The killed lbctl cannot clean up; a killed keepalived neither.
    // Restarting the master removes stale VIPs and preempts.
    let t1 = Instant::now();
    let mut master = Node::start(master_impl, &p.a, &p.dir.0, "master2", &hi)?;
    wait_until(Duration::from_secs(5), POLL, || {
        p.a.has_addr(v) && !p.b.has_addr(v)
    })
    .context("restarted higher-priority node did not preempt")?;
    println!(
        "PREEMPT restarted {} over {}: {:.0} ms after start",
        name(master_impl),
        name(backup_impl),
        t1.elapsed().as_secs_f64() * 1000.0
    );
    assert_sole_holder(&p.a, &p.b, v, Duration::from_millis(800))?;

    // Clean stop: priority 0, the backup takes over after Skew_Time.
    let t2 = Instant::now();
    master.terminate()?;
    let bound = lo.skew();
    wait_vip(&p.b, v, Duration::from_secs(3)).context("no takeover after clean stop")?;
    let took = t2.elapsed();
    master.wait_exit()?;
    report(
        &format!(
            "clean stop {} master -> {} backup{}",
            name(master_impl),
            name(backup_impl),
            tag
        ),
        took,
        bound,
    );
    ensure!(
        took <= bound + TOLERANCE,
        "takeover after stop took {took:?}"
    );
    ensure!(!p.a.has_addr(v), "stopped master left its VIP behind");
    assert_sole_holder(&p.b, &p.a, v, Duration::from_millis(300))?;
    backup.stop()?;
    ensure!(!p.b.has_addr(v), "stopped backup left its VIP behind");
    Ok(())
}

#[test]
fn v3_lbctl_master_keepalived_backup() -> Result<()> {
    with_pair("lm", |p| cycle(p, Impl::Lbctl, Impl::Keepalived, Mode::V4))
}

#[test]
fn v3_keepalived_master_lbctl_backup() -> Result<()> {
    with_pair("km", |p| cycle(p, Impl::Keepalived, Impl::Lbctl, Mode::V4))
}

#[test]
fn v3_ipv6_lbctl_master_keepalived_backup() -> Result<()> {
    with_pair("l6", |p| cycle(p, Impl::Lbctl, Impl::Keepalived, Mode::V6))
}

#[test]
fn v3_ipv6_keepalived_master_lbctl_backup() -> Result<()> {
    with_pair("k6", |p| cycle(p, Impl::Keepalived, Impl::Lbctl, Mode::V6))
}

#[test]
fn v3_unicast_lbctl_master_keepalived_backup() -> Result<()> {
    with_pair("lu", |p| {
        cycle(p, Impl::Lbctl, Impl::Keepalived, Mode::Unicast)
    })
}

#[test]
fn v3_unicast_keepalived_master_lbctl_backup() -> Result<()> {
    with_pair("ku", |p| {
        cycle(p, Impl::Keepalived, Impl::Lbctl, Mode::Unicast)
    })
}

/// A higher-priority node that does not preempt leaves a running Master
/// alone: lbctl with `preempt = false` against keepalived, then keepalived
/// with `nopreempt` against lbctl.
#[test]
fn v3_preempt_off() -> Result<()> {
    with_pair("np", |p| {
        let vip = "10.77.0.100/32";
        let v = "10.77.0.100";
        for (high_impl, low_impl) in [
            (Impl::Lbctl, Impl::Keepalived),
            (Impl::Keepalived, Impl::Lbctl),
        ] {
            let lo = Inst::v3(100, vip);
            let hi = Inst {
                preempt: false,
                ..Inst::v3(150, vip)
            };
            let mut low = Node::start(
                low_impl,
                &p.b,
                &p.dir.0,
                &format!("low-{}", name(low_impl)),
                &lo,
            )?;
            wait_vip(&p.b, v, Duration::from_secs(5)).context("low node never became master")?;
            let mut high = Node::start(
                high_impl,
                &p.a,
                &p.dir.0,
                &format!("high-{}", name(high_impl)),
                &hi,
            )?;
            // Several Master_Down_Intervals of the high node: it stays Backup.
            assert_sole_holder(&p.b, &p.a, v, hi.master_down() * 4)
                .with_context(|| format!("{} without preempt took over", name(high_impl)))?;
            println!(
                "NOPREEMPT {} (150) left {} (100) as master",
                name(high_impl),
                name(low_impl)
            );
            // And it is a working backup: crash the master, it takes over.
            let t0 = Instant::now();
            low.kill()?;
            wait_vip(&p.a, v, Duration::from_secs(3))
                .context("non-preempting backup never took over")?;
            report(
                &format!(
                    "SIGKILL {} master -> non-preempting {} backup",
                    name(low_impl),
                    name(high_impl)
                ),
                t0.elapsed(),
                hi.master_down(),
            );
            high.stop()?;
            ensure!(!p.a.has_addr(v), "stopped node left its VIP behind");
            // The killed node's VIP (if it was keepalived's or lbctl's) may
            // remain: remove it for the next round.
            let _ = p.b.exec(&["ip", "addr", "del", vip, "dev", "eth0"]);
        }
        Ok(())
    })
}

/// VRRPv2 with `auth_type PASS`: a matching password interoperates; a wrong
/// one is ignored (both sides keep their own view) and counted by lbctl.
#[test]
fn v2_password() -> Result<()> {
    with_pair("v2", |p| {
        let vip = "10.77.0.100/32";
        let v = "10.77.0.100";
        let v2 = |priority, pass| Inst {
            version: 2,
            advert: Duration::from_secs(1),
            auth_pass: Some(pass),
            ..Inst::v3(priority, vip)
        };
        let ka = v2(100, "secret");
        let lb = Inst {
            start_master: true,
            ..v2(150, "secret")
        };
        let mut keepalived = Node::start(Impl::Keepalived, &p.b, &p.dir.0, "k-v2", &ka)?;
        let mut lbctl = Node::start(Impl::Lbctl, &p.a, &p.dir.0, "l-v2", &lb)?;
        wait_vip(&p.a, v, Duration::from_secs(3))
            .context("lbctl (state MASTER) did not take the VIP")?;
        // Longer than keepalived's Master_Down_Interval: it hears us.
        assert_sole_holder(&p.a, &p.b, v, ka.master_down() + Duration::from_millis(700))?;
        let t0 = Instant::now();
        lbctl.kill()?;
        wait_vip(&p.b, v, ka.master_down() + Duration::from_secs(2))
            .context("keepalived did not take over")?;
        let took = t0.elapsed();
        report(
            "SIGKILL lbctl master -> keepalived backup (v2, PASS)",
            took,
            ka.master_down(),
        );
        ensure!(
            took <= ka.master_down() + TOLERANCE,
            "v2 takeover took {took:?}"
        );

        // lbctl with the wrong password: keepalived's adverts are rejected
        // and counted, and keepalived ignores ours (it keeps the VIP even
        // though lbctl has the higher priority).
        let bad = Inst {
            start_master: true,
            ..v2(150, "wrong")
        };
        let l2 = Node::start(Impl::Lbctl, &p.a, &p.dir.0, "l-v2-wrong", &bad)?;
        wait_vip(&p.a, v, Duration::from_secs(3)).context("lbctl did not start as master")?;
        let start = Instant::now();
        let seen = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let s = l2.stats();
            field(&s, "rx_auth_mismatch").is_some_and(|n| n >= 2)
        });
        ensure!(
            seen.is_some(),
            "wrong-password adverts not counted: {}",
            l2.stats()
        );
        let s = l2.stats();
        ensure!(
            field(&s, "adverts_received") == Some(0),
            "accepted a wrong-password advert: {s}"
        );
        // keepalived still master after more than its Master_Down_Interval of our adverts.
        std::thread::sleep(
            (ka.master_down() + Duration::from_millis(500)).saturating_sub(start.elapsed()),
        );
        ensure!(
            p.b.has_addr(v),
            "keepalived obeyed an advert with the wrong password"
        );
        println!(
            "v2 wrong password: rejected and counted by lbctl ({s})",
            s = s.trim()
        );
        keepalived.stop()?;
        Ok(())
    })
}

/// `NAME: N` inside the stats line.
fn field(stats: &str, name: &str) -> Option<u64> {
    let at = stats.find(&format!("{name}: "))? + name.len() + 2;
    stats[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
