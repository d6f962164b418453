//! Tracking, notify scripts and the daemon-facing API of the VRRP shell,
//! run in-process inside a network namespace (via `NetNs::enter_thread`)
//! against keepalived as the peer.
//!
//! lbctl (priority 150) tracks a veth `trk0` (weight -100), a
//! `vrrp_script` (`test -e FLAG`, weight -100) and backend health (weight
//! -100); keepalived (priority 100) preempts whenever lbctl's effective
//! priority drops to 50, and lbctl preempts back when it recovers. A
//! notify script logs every transition; the state hook and the watch
//! channel must agree with the VIPs seen in the namespace.
//!
//! Needs root, keepalived and iproute2.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use lbctl::vrrp::{State, StateHook, run_instances};
use tests::netns::{ChildGuard, NetNs, unique_name, veth_pair, wait_until};
use tokio_util::sync::CancellationToken;

const VIP: &str = "10.78.0.100";
const POLL: Duration = Duration::from_millis(10);
const SETTLE: Duration = Duration::from_secs(5);

/// A step of the test: make something fail, or recover.
type Action<'a> = Box<dyn Fn() -> Result<()> + 'a>;

/// Commands from the test thread to the namespace thread.
enum Cmd {
    Backends(bool),
    Stop,
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lb_toml(dir: &std::path::Path) -> String {
    format!(
        r#"
[node]
interface = "eth0"

[[vrrp_instance]]
name = "VI_T"
interface = "eth0"
virtual_router_id = 61
priority = 150
advert_int = "100ms"
virtual_ipaddress = ["{VIP}/32"]
track_interface = [{{ name = "trk0", weight = -100 }}]
track_script = [{{ name = "chk_flag" }}]
track_backends = {{ weight = -100 }}
notify = ["sh", "-c", "echo \"$0 $1\" >> {notify}"]
garp_master_delay = "0s"

[[vrrp_script]]
name = "chk_flag"
command = ["test", "-e", "{flag}"]
interval = "100ms"
timeout = "90ms"
weight = -100
rise = 1
fall = 1
"#,
        notify = dir.join("notify.log").display(),
        flag = dir.join("flag").display(),
    )
}

const KEEPALIVED: &str = "global_defs {
  router_id peer
  script_user root
  enable_script_security
}
vrrp_instance VI_T {
  interface eth0
  state BACKUP
  virtual_router_id 61
  priority 100
  advert_int 0.1
  version 3
  virtual_ipaddress {
    10.78.0.100/32
  }
}
";

#[test]
fn tracking_moves_the_vip_and_notifies() -> Result<()> {
    let dir = Dir(std::env::temp_dir().join(unique_name("vrrp-trk", "files")));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let flag = dir.0.join("flag");
    std::fs::write(&flag, "")?;

    let a = NetNs::new(&unique_name("vrrp-trk", "a"))?;
    let b = NetNs::new(&unique_name("vrrp-trk", "b"))?;
    veth_pair(&a, "eth0", &b, "eth0")?;
    a.addr_add("eth0", "10.78.0.1/24")?;
    b.addr_add("eth0", "10.78.0.2/24")?;
    a.link_up("eth0")?;
    b.link_up("eth0")?;
    // The tracked interface: a second veth whose peer we take down, so
    // trk0 loses its carrier like a NIC whose cable is pulled.
    veth_pair(&a, "trk0", &b, "trk0p")?;
    a.link_up("trk0")?;
    b.link_up("trk0p")?;

    let kconf = dir.0.join("k.conf");
    std::fs::write(&kconf, KEEPALIVED)?;
    let klog = std::fs::File::create(dir.0.join("k.log"))?;
    let mut kcmd = b.command("keepalived");
    kcmd.args(["-n", "-l", "-P", "-G", "-f"])
        .arg(&kconf)
        .arg("-p")
        .arg(dir.0.join("k.pid"))
        .arg("-r")
        .arg(dir.0.join("k.vrrp.pid"))
        .arg("-c")
        .arg(dir.0.join("k.chk.pid"))
        .stdin(std::process::Stdio::null())
        .stdout(klog.try_clone()?)
        .stderr(klog);
    let _keepalived = ChildGuard::new(kcmd.spawn().context("start keepalived")?);

    let cfg = lbctl::config::parse(&lb_toml(&dir.0), "lb.toml")?;
    let hooked: Arc<Mutex<Vec<State>>> = Arc::default();
    let hook_log = Arc::clone(&hooked);
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Cmd>();
    let (watch_tx, watch_rx) = std::sync::mpsc::channel::<(State, u8)>();

    // The node: a tokio runtime on a thread inside namespace `a`.
    let node = a.enter_thread(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let hook: StateHook = Arc::new(move |_name: &str, s: State| {
                hook_log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(s);
                None
            });
            let cancel = CancellationToken::new();
            let instances = run_instances(&cfg, Some(hook), &cancel).await?;
            let h = instances.get("VI_T").ok_or_else(|| anyhow!("no VI_T"))?;
            let mut states = h.subscribe();
            let (cmd_atx, mut cmd_arx) = tokio::sync::mpsc::unbounded_channel();
            // Bridge the std channel into the runtime.
            std::thread::spawn(move || {
                while let Ok(c) = cmd_rx.recv() {
                    if cmd_atx.send(c).is_err() {
                        break;
                    }
                }
            });
            loop {
                tokio::select! {
                    r = states.changed() => {
                        if r.is_err() { break; }
                        let s = *states.borrow_and_update();
                        let _ = watch_tx.send((s.state, s.priority));
                    }
                    c = cmd_arx.recv() => match c {
                        Some(Cmd::Backends(up)) => h.set_backends_healthy(up),
                        Some(Cmd::Stop) | None => break,
                    },
                }
            }
            let counters = h.shell_counters();
            let errors = instances.shutdown().await;
            ensure!(errors.is_empty(), "instance errors: {errors:?}");
            ensure!(
                counters.garp_sent > 0,
                "no gratuitous ARP sent: {counters:?}"
            );
            Ok(())
        })
    })?;

    let result = (|| -> Result<()> {
        let holds = |ns: &NetNs| ns.has_addr(VIP);
        wait_until(SETTLE, POLL, || holds(&a) && !holds(&b))
            .context("lbctl never became sole master")?;
        let mut phases = Vec::new();
        // Each way of losing priority: keepalived takes over; recovery: back.
        let steps: [(&str, Action<'_>, Action<'_>); 3] = [
            (
                "interface trk0 loses carrier",
                Box::new(|| b.link_down("trk0p")),
                Box::new(|| b.link_up("trk0p")),
            ),
            (
                "vrrp_script fails",
                Box::new(|| Ok(std::fs::remove_file(&flag)?)),
                Box::new(|| Ok(std::fs::write(&flag, "")?)),
            ),
            (
                "no healthy backend",
                Box::new(|| Ok(cmd_tx.send(Cmd::Backends(false))?)),
                Box::new(|| Ok(cmd_tx.send(Cmd::Backends(true))?)),
            ),
        ];
        for (what, fail, recover) in &steps {
            fail()?;
            let t = wait_until(SETTLE, POLL, || holds(&b) && !holds(&a))
                .with_context(|| format!("{what}: keepalived did not take over"))?;
            recover()?;
            let back = wait_until(SETTLE, POLL, || holds(&a) && !holds(&b))
                .with_context(|| format!("{what} recovered: lbctl did not preempt back"))?;
            println!("TRACK {what}: moved in {t:?}, back in {back:?}");
            phases.push(what);
        }
        ensure!(phases.len() == 3);
        // Priority was published as 50 at least once per step.
        let seen: Vec<(State, u8)> = watch_rx.try_iter().collect();
        ensure!(
            seen.iter().filter(|(_, p)| *p == 50).count() >= 3,
            "watch channel did not carry the lowered priority: {seen:?}"
        );
        Ok(())
    })();

    let _ = cmd_tx.send(Cmd::Stop);
    let node_result = node
        .join()
        .map_err(|_| anyhow!("node thread panicked"))?
        .and_then(|r| r);
    if result.is_err() || node_result.is_err() {
        for f in ["k.log", "notify.log"] {
            eprintln!(
                "==== {f} ====\n{}",
                std::fs::read_to_string(dir.0.join(f)).unwrap_or_default()
            );
        }
    }
    result?;
    node_result?;
    ensure!(!a.has_addr(VIP), "clean shutdown left the VIP behind");

    // Hook and notify saw every transition: Backup, Master, then 3 x
    // (Backup, Master), then STOP.
    let hooked = hooked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let masters = hooked.iter().filter(|s| **s == State::Master).count();
    ensure!(
        masters == 4,
        "hook saw {masters} Master transitions: {hooked:?}"
    );
    ensure!(
        hooked.last() == Some(&State::Initialize),
        "no final stop: {hooked:?}"
    );
    let notify = wait_until(Duration::from_secs(2), POLL, || {
        std::fs::read_to_string(dir.0.join("notify.log")).is_ok_and(|t| {
            t.lines().filter(|l| *l == "VI_T MASTER").count() == 4 && t.contains("VI_T STOP")
        })
    });
    ensure!(
        notify.is_some(),
        "notify log: {}",
        std::fs::read_to_string(dir.0.join("notify.log")).unwrap_or_default()
    );
    Ok(())
}

/// A `vrrp_script` tracked by two instances runs once per interval, as in
/// keepalived, and both instances apply its result with their own weight.
/// No VRRP peer needed: a veth pair whose other end is idle.
#[test]
fn shared_script_runs_once() -> Result<()> {
    let dir = Dir(std::env::temp_dir().join(unique_name("vrrp-shs", "files")));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let flag = dir.0.join("flag");
    let runs = dir.0.join("runs");
    std::fs::write(&flag, "")?;
    let ns = NetNs::new(&unique_name("vrrp-shs", "a"))?;
    let idle = NetNs::new(&unique_name("vrrp-shs", "b"))?;
    veth_pair(&ns, "eth0", &idle, "eth0")?;
    ns.addr_add("eth0", "10.79.0.1/24")?;
    ns.link_up("eth0")?;
    idle.link_up("eth0")?;

    let inst = |vrid: u8, weight: i32| {
        format!(
            "[[vrrp_instance]]\nname = \"VI_{vrid}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\n\
             priority = 150\nadvert_int = \"100ms\"\nvirtual_ipaddress = [\"10.79.0.{vrid}/32\"]\n\
             track_script = [{{ name = \"chk\", weight = {weight} }}]\ngarp_master_repeat = 1\n\n"
        )
    };
    let toml = format!(
        "[node]\ninterface = \"eth0\"\n\n{}{}[[vrrp_script]]\nname = \"chk\"\n\
         command = [\"sh\", \"-c\", \"echo run >> {runs}; test -e {flag}\"]\n\
         interval = \"100ms\"\ntimeout = \"90ms\"\nweight = -10\nrise = 1\nfall = 1\n",
        inst(71, -50),
        inst(72, -30),
        runs = runs.display(),
        flag = flag.display(),
    );
    let cfg = lbctl::config::parse(&toml, "lb.toml")?;
    let flag2 = flag.clone();
    let runs2 = runs.clone();
    let node = ns.enter_thread(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let cancel = CancellationToken::new();
            let instances = run_instances(&cfg, None, &cancel).await?;
            let get = |n: &str| instances.get(n).ok_or_else(|| anyhow!("no {n}"));
            let (h1, h2) = (get("VI_71")?, get("VI_72")?);
            // Both instances started (they subscribe from their tasks).
            for _ in 0..300 {
                if h1.state().state != State::Initialize && h2.state().state != State::Initialize {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ensure!(
                h1.state().state != State::Initialize && h2.state().state != State::Initialize,
                "instances did not start: {:?} {:?}",
                h1.state(),
                h2.state()
            );
            ensure!(
                instances.shared_io().scripts.running() == 1,
                "one runner for two instances"
            );
            // Let the script run for a while, all up.
            let start = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let lines = std::fs::read_to_string(&runs2)
                .unwrap_or_default()
                .lines()
                .count();
            let elapsed = start.elapsed();
            let per_interval = elapsed.as_millis() / 100;
            println!(
                "SHARED SCRIPT: {lines} runs in {elapsed:?} (interval 100 ms) for 2 instances"
            );
            ensure!(
                lines >= 3 && (lines as u128) <= per_interval + 3,
                "script ran {lines} times in {elapsed:?}: not once per interval"
            );
            // Failing the script lowers both priorities by their own weights.
            std::fs::remove_file(&flag2)?;
            let t0 = std::time::Instant::now();
            let mut ok = false;
            for _ in 0..200 {
                if h1.state().priority == 100 && h2.state().priority == 120 {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ensure!(
                ok,
                "priorities after failure: {:?} {:?}",
                h1.state(),
                h2.state()
            );
            println!(
                "SHARED SCRIPT: both instances lowered (150-50, 150-30) {:?} after the failure",
                t0.elapsed()
            );
            let errors = instances.shutdown().await;
            ensure!(errors.is_empty(), "instance errors: {errors:?}");
            Ok(())
        })
    })?;
    node.join()
        .map_err(|_| anyhow!("node thread panicked"))?
        .and_then(|r| r)
}

/// Poll `cond` every [`POLL`] until it holds (the time it took) or `limit`
/// passes (an error naming `what`).
async fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Result<Duration> {
    let start = std::time::Instant::now();
    while !cond() {
        ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
    Ok(start.elapsed())
}

/// An instance that cannot start (its interface does not exist yet) is not
/// lost: it shows FAULT with the error, retries with a growing wait, and
/// runs once the interface appears. One whose interface never appears
/// keeps retrying and reports its error at shutdown.
#[test]
fn instance_retries_until_its_interface_appears() -> Result<()> {
    let ns = NetNs::new(&unique_name("vrrp-rty", "a"))?;
    let toml = "[node]\ninterface = \"late0\"\n\n\
        [[vrrp_instance]]\nname = \"VI_L\"\ninterface = \"late0\"\nvirtual_router_id = 81\n\
        priority = 150\nadvert_int = \"100ms\"\nvirtual_ipaddress = [\"10.80.0.100/32\"]\n\
        garp_master_repeat = 1\n\n\
        [[vrrp_instance]]\nname = \"VI_N\"\ninterface = \"never0\"\nvirtual_router_id = 82\n\
        priority = 150\nadvert_int = \"100ms\"\nvirtual_ipaddress = [\"10.80.0.101/32\"]\n";
    let cfg = lbctl::config::parse(toml, "lb.toml")?;
    let node = ns.enter_thread(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let cancel = CancellationToken::new();
            let instances = run_instances(&cfg, None, &cancel).await?;
            let get = |n: &str| instances.get(n).ok_or_else(|| anyhow!("no {n}"));
            let (late, never) = (get("VI_L")?, get("VI_N")?);
            wait_for(
                "VI_L in FAULT with its error",
                Duration::from_secs(3),
                || {
                    late.state().state == State::Fault
                        && late.last_error().is_some_and(|e| e.contains("late0"))
                },
            )
            .await?;
            ensure!(!late.is_finished(), "the failed instance's task ended");
            let run = |args: &[&str]| -> Result<()> {
                let out = std::process::Command::new("ip").args(args).output()?;
                ensure!(out.status.success(), "ip {args:?}: {out:?}");
                Ok(())
            };
            run(&[
                "link", "add", "late0", "type", "veth", "peer", "name", "late0p",
            ])?;
            run(&["addr", "add", "10.80.0.1/24", "dev", "late0"])?;
            run(&["link", "set", "late0p", "up"])?;
            run(&["link", "set", "late0", "up"])?;
            // The retry wait ends when late0 appears (the backoff alone
            // would retry at 1 s, 3 s, 7 s after the first failure); then
            // Master_Down_Interval (about 0.36 s) with no peer.
            let took = wait_for(
                "VI_L Master once late0 exists",
                Duration::from_secs(6),
                || late.state().state == State::Master,
            )
            .await?;
            println!("RETRY: VI_L Master {took:?} after its interface appeared");
            ensure!(late.last_error().is_none(), "error kept after a start");
            let failures = late.shell_counters().start_failures;
            ensure!(failures >= 1, "no start failure counted");
            // The one that cannot start keeps trying (1 s, 2 s, ...).
            ensure!(
                never.state().state == State::Fault,
                "VI_N: {:?}",
                never.state()
            );
            wait_for("VI_N retried", Duration::from_secs(3), || {
                never.shell_counters().start_failures >= 2
            })
            .await
            .with_context(|| format!("{:?}", never.shell_counters()))?;
            ensure!(
                never.state().state == State::Fault,
                "VI_N: {:?}",
                never.state()
            );
            let errors = instances.shutdown().await;
            ensure!(
                errors.len() == 1 && errors[0].to_string().contains("never0"),
                "shutdown errors: {errors:?}"
            );
            Ok(())
        })
    })?;
    node.join()
        .map_err(|_| anyhow!("node thread panicked"))?
        .and_then(|r| r)?;
    ensure!(
        !ns.has_addr("10.80.0.100"),
        "clean shutdown left the VIP behind"
    );
    Ok(())
}

/// A namespace (`{test}-a`) whose `eth0`, with address `addr` and up, is a
/// veth to an idle one (`{test}-b`, also returned: it holds the pair), and
/// the config of one instance `name` on `eth0` (advert every 100 ms, one
/// announcement) with `vip` as its one virtual address.
fn lone_node(
    test: &str,
    addr: &str,
    (name, vrid, priority): (&str, u8, u8),
    vip: &str,
) -> Result<(NetNs, NetNs, lbctl::config::Config)> {
    let ns = NetNs::new(&unique_name(test, "a"))?;
    let idle = NetNs::new(&unique_name(test, "b"))?;
    veth_pair(&ns, "eth0", &idle, "eth0")?;
    ns.addr_add("eth0", addr)?;
    ns.link_up("eth0")?;
    idle.link_up("eth0")?;
    let toml = format!(
        "[node]\ninterface = \"eth0\"\n\n\
        [[vrrp_instance]]\nname = \"{name}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\n\
        priority = {priority}\nadvert_int = \"100ms\"\nvirtual_ipaddress = [\"{vip}\"]\n\
        garp_master_repeat = 1\n"
    );
    let cfg = lbctl::config::parse(&toml, "lb.toml")?;
    Ok((ns, idle, cfg))
}

/// The address owner (priority 255, RFC 5798 §1) advertises an address the
/// interface already has: its own. Neither start-up (which removes a killed
/// run's leftover VIPs for every other instance) nor a clean stop removes
/// it. No VRRP peer needed.
#[test]
fn owner_keeps_its_own_address() -> Result<()> {
    // The first address is the primary (advert source); the second is the
    // owner's own address, which it also advertises as its VIP.
    let (ns, _idle, cfg) = lone_node(
        "vrrp-own",
        "10.82.0.2/24",
        ("VI_O", 91, 255),
        "10.82.0.1/24",
    )?;
    ns.addr_add("eth0", "10.82.0.1/24")?;
    let ns_name = ns.name().to_owned();
    let node = ns.enter_thread(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let cancel = CancellationToken::new();
            let instances = run_instances(&cfg, None, &cancel).await?;
            let h = instances.get("VI_O").ok_or_else(|| anyhow!("no VI_O"))?;
            wait_for("owner Master", Duration::from_secs(3), || {
                h.state().state == State::Master
            })
            .await?;
            let c = h.shell_counters();
            ensure!(c.address_errors == 0, "{ns_name}: {c:?}");
            let errors = instances.shutdown().await;
            ensure!(errors.is_empty(), "instance errors: {errors:?}");
            Ok(())
        })
    })?;
    // Meanwhile the address must never go away.
    let start = std::time::Instant::now();
    while !node.is_finished() && start.elapsed() < Duration::from_secs(5) {
        ensure!(
            ns.has_addr("10.82.0.1"),
            "the owner removed its own address"
        );
        std::thread::sleep(POLL);
    }
    node.join()
        .map_err(|_| anyhow!("node thread panicked"))?
        .and_then(|r| r)?;
    ensure!(
        ns.has_addr("10.82.0.1"),
        "the owner's stop removed its own address"
    );
    ensure!(ns.has_addr("10.82.0.2"), "primary address gone");
    Ok(())
}

/// `ip ARGS` from the calling thread (so in its network namespace); fails
/// unless it exits 0. Returns stdout.
fn ip(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(out.status.success(), "ip {args:?}: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Create veth `re0` in the calling thread's namespace with address
/// 10.84.0.1/24, its peer `re0p` in namespace `peer_ns` with 10.84.0.2/24,
/// both ends up.
fn create_re0(peer_ns: &str) -> Result<()> {
    ip(&[
        "link", "add", "re0", "type", "veth", "peer", "name", "re0p", "netns", peer_ns,
    ])?;
    ip(&["addr", "add", "10.84.0.1/24", "dev", "re0"])?;
    ip(&["-n", peer_ns, "addr", "add", "10.84.0.2/24", "dev", "re0p"])?;
    ip(&["-n", peer_ns, "link", "set", "re0p", "up"])?;
    ip(&["link", "set", "re0", "up"]).map(drop)
}

/// The index of interface `dev` (`ip -o link show`: "12: re0@re0p: ...").
fn ifindex(dev: &str) -> Result<u32> {
    let out = ip(&["-o", "link", "show", "dev", dev])?;
    let index = out.split(':').next().unwrap_or_default().trim();
    index
        .parse()
        .with_context(|| format!("ifindex of {dev} in {out:?}"))
}

/// Capture up to `count` VRRP packets on `dev` in namespace `ns`, for at
/// most `limit`; returns tcpdump's lines.
async fn capture_vrrp(ns: &str, dev: &str, count: usize, limit: Duration) -> Result<Vec<String>> {
    let secs = limit.as_secs().max(1).to_string();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "timeout", &secs])
        .args(["tcpdump", "-i", dev, "-n", "-p", "-l", "-c"])
        .arg(count.to_string())
        .arg("ip proto 112")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start tcpdump")?;
    // `timeout` ends it; wait a little longer than that, then give up.
    let start = std::time::Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > limit + Duration::from_secs(2) {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("tcpdump on {dev} did not end");
        }
        tokio::time::sleep(POLL).await;
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

const KEEPALIVED_RE: &str = "global_defs {
  router_id peer
}
vrrp_instance VI_R {
  interface re0p
  state BACKUP
  virtual_router_id 84
  priority 200
  advert_int 0.1
  version 3
  virtual_ipaddress {
    10.84.0.100/32
  }
}
";

/// An interface deleted and re-created under the same name gets a new
/// index: the instance bound to the old one goes to FAULT, restarts, waits
/// for the interface (woken by its creation, not by the start backoff),
/// and runs on the new one: Master again with its VIP on the new `re0`,
/// its advertisements on the wire, and it hears a peer's: keepalived
/// (priority 200), started on `re0`'s peer only at the end, takes over.
#[test]
fn instance_follows_its_interface_when_re_created() -> Result<()> {
    const VIP_R: &str = "10.84.0.100";
    let dir = Dir(std::env::temp_dir().join(unique_name("vrrp-rel", "files")));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let kconf = dir.0.join("k.conf");
    std::fs::write(&kconf, KEEPALIVED_RE)?;
    let files = dir.0.clone();
    let a = NetNs::new(&unique_name("vrrp-rel", "a"))?;
    let b = NetNs::new(&unique_name("vrrp-rel", "b"))?;
    let b_name = b.name().to_owned();
    let toml = "[node]\ninterface = \"re0\"\n\n\
        [[vrrp_instance]]\nname = \"VI_R\"\ninterface = \"re0\"\nvirtual_router_id = 84\n\
        priority = 150\nadvert_int = \"100ms\"\nvirtual_ipaddress = [\"10.84.0.100/32\"]\n\
        garp_master_repeat = 1\n";
    let cfg = lbctl::config::parse(toml, "lb.toml")?;
    let node = a.enter_thread(move || -> Result<()> {
        create_re0(&b_name)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let cancel = CancellationToken::new();
            let instances = run_instances(&cfg, None, &cancel).await?;
            let h = instances.get("VI_R").ok_or_else(|| anyhow!("no VI_R"))?;
            let vip_on_re0 = || {
                ip(&["-o", "addr", "show", "dev", "re0"])
                    .is_ok_and(|o| o.contains(&format!(" {VIP_R}/32 ")))
            };
            wait_for("VI_R Master with its VIP on re0", SETTLE, || {
                h.state().state == State::Master && vip_on_re0()
            })
            .await?;
            let old_index = ifindex("re0")?;

            ip(&["link", "del", "re0"])?;
            let t = wait_for(
                "VI_R in FAULT after re0 went",
                Duration::from_secs(3),
                || h.state().state == State::Fault && h.shell_counters().restarts == 1,
            )
            .await?;
            println!("RELINK: FAULT {t:?} after re0 was deleted");
            let err = h.last_error().unwrap_or_default();
            ensure!(err.contains("re0"), "last_error: {err:?}");
            // The restarted instance finds no re0: starts fail and wait 1 s,
            // 2 s, then 4 s. Re-create re0 early in that 4 s wait.
            wait_for("3 failed starts", Duration::from_secs(6), || {
                h.shell_counters().start_failures >= 3
            })
            .await?;
            ensure!(h.state().state == State::Fault, "{:?}", h.state());
            let addrs = ip(&["-o", "addr", "show"])?;
            ensure!(!addrs.contains(VIP_R), "VIP left behind: {addrs}");
            let sent_before = h.counters().adverts_sent;

            create_re0(&b_name)?;
            // Start, primary address, Master_Down_Interval (about 0.36 s):
            // well under the 4 s the backoff alone would take.
            let took = wait_for(
                "VI_R Master again with its VIP on the new re0",
                Duration::from_millis(2500),
                || h.state().state == State::Master && vip_on_re0(),
            )
            .await?;
            println!("RELINK: Master {took:?} after re0 was re-created");
            let new_index = ifindex("re0")?;
            ensure!(new_index != old_index, "same ifindex {old_index}");
            let c = h.shell_counters();
            ensure!(c.restarts == 1, "restarts: {c:?}");
            ensure!(h.last_error().is_none(), "error kept after a start");
            // Its advertisements leave through the new re0: its peer gets them.
            let lines = capture_vrrp(&b_name, "re0p", 3, Duration::from_secs(3)).await?;
            ensure!(
                lines.len() == 3 && lines.iter().all(|l| l.contains("vrid 84")),
                "captured on re0p: {lines:?}"
            );
            let sent = h.counters().adverts_sent;
            ensure!(sent > sent_before, "adverts sent {sent_before} -> {sent}");
            println!("RELINK: ifindex {old_index} -> {new_index}, {lines:?}");

            // And it hears the new re0: a higher-priority peer takes over.
            let received_before = h.counters().adverts_received;
            let klog = std::fs::File::create(files.join("k.log"))?;
            let mut kcmd = std::process::Command::new("ip");
            kcmd.args(["netns", "exec", &b_name, "keepalived"])
                .args(["-n", "-l", "-P", "-G", "-f"])
                .arg(&kconf)
                .arg("-p")
                .arg(files.join("k.pid"))
                .arg("-r")
                .arg(files.join("k.vrrp.pid"))
                .arg("-c")
                .arg(files.join("k.chk.pid"))
                .stdin(std::process::Stdio::null())
                .stdout(klog.try_clone()?)
                .stderr(klog);
            let _keepalived = ChildGuard::new(kcmd.spawn().context("start keepalived")?);
            let took = wait_for("VI_R Backup under keepalived", SETTLE, || {
                h.state().state == State::Backup && !vip_on_re0()
            })
            .await?;
            let received = h.counters().adverts_received;
            ensure!(
                received > received_before,
                "adverts received {received_before} -> {received}"
            );
            println!("RELINK: Backup {took:?} after keepalived started ({received} adverts heard)");
            let errors = instances.shutdown().await;
            ensure!(errors.is_empty(), "instance errors: {errors:?}");
            Ok(())
        })
    })?;
    let result = node
        .join()
        .map_err(|_| anyhow!("node thread panicked"))?
        .and_then(|r| r);
    if result.is_err() {
        eprintln!(
            "==== k.log ====\n{}",
            std::fs::read_to_string(dir.0.join("k.log")).unwrap_or_default()
        );
    }
    result?;
    ensure!(!a.has_addr(VIP_R), "clean shutdown left the VIP behind");
    Ok(())
}

/// A node whose data plane cannot take over the VIPs must not claim them:
/// when the state hook's acknowledgement of a transition to Master reports
/// a failure, the instance adds no VIP, goes to FAULT (so a peer takes
/// over) with the error in `last_error` and counted, and tries again after
/// the retry wait (1 s, then 2 s). Here the first two activations fail and
/// the third works. No VRRP peer needed.
#[test]
fn failed_activation_faults_without_the_vip() -> Result<()> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const VIP_D: &str = "10.84.0.100";
    let (ns, _idle, cfg) = lone_node(
        "vrrp-dpf",
        "10.84.0.1/24",
        ("VI_D", 84, 150),
        &format!("{VIP_D}/32"),
    )?;
    let activations = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&activations);
    let node = ns.enter_thread(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let hook: StateHook = Arc::new(move |_name: &str, s: State| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let n = if s == State::Master {
                    seen.fetch_add(1, Ordering::SeqCst) + 1
                } else {
                    0
                };
                let r = if (1..=2).contains(&n) {
                    Err("test: the VIP map is full".to_owned())
                } else {
                    Ok(())
                };
                let _ = tx.send(r);
                Some(rx)
            });
            let cancel = CancellationToken::new();
            let instances = run_instances(&cfg, Some(hook), &cancel).await?;
            let h = instances.get("VI_D").ok_or_else(|| anyhow!("no VI_D"))?;
            wait_for(
                "VI_D in FAULT after a failed activation",
                Duration::from_secs(3),
                || {
                    h.state().state == State::Fault
                        && h.shell_counters().dataplane_failures == 1
                        && h.last_error()
                            .is_some_and(|e| e.contains("VIP map is full"))
                },
            )
            .await?;
            let took = wait_for(
                "VI_D Master once the data plane takes over",
                Duration::from_secs(8),
                || h.state().state == State::Master,
            )
            .await?;
            println!("DATAPLANE: VI_D Master {took:?} after the first failure");
            let s = h.shell_counters();
            ensure!(s.dataplane_failures == 2, "{s:?}");
            ensure!(s.address_errors == 0, "{s:?}");
            ensure!(h.last_error().is_none(), "error kept: {:?}", h.last_error());
            let c = h.counters();
            ensure!(c.became_fault >= 2 && c.became_master == 3, "{c:?}");
            // Stay Master: the fault was lifted for good.
            tokio::time::sleep(Duration::from_millis(500)).await;
            ensure!(h.state().state == State::Master, "{:?}", h.state());
            let errors = instances.shutdown().await;
            ensure!(errors.is_empty(), "instance errors: {errors:?}");
            Ok(())
        })
    })?;
    // The VIP may only appear once an activation has worked.
    let start = std::time::Instant::now();
    let mut held = false;
    while !node.is_finished() && start.elapsed() < Duration::from_secs(15) {
        if ns.has_addr(VIP_D) {
            held = true;
            let n = activations.load(Ordering::SeqCst);
            ensure!(n >= 3, "VIP added after activation {n}, which failed");
        }
        std::thread::sleep(POLL);
    }
    node.join()
        .map_err(|_| anyhow!("node thread panicked"))?
        .and_then(|r| r)?;
    ensure!(held, "the VIP was never added");
    ensure!(!ns.has_addr(VIP_D), "clean shutdown left the VIP behind");
    Ok(())
}

/// A VIP left on the interface by a killed run is not the owner's own
/// address: lbctl marks the addresses it adds (`IFA_PROTO`), so an owner
/// (priority 255) that finds such an address removes it on a clean stop,
/// as it would have had the run not been killed. The address the owner
/// really owns is covered by `owner_keeps_its_own_address`.
#[test]
fn owner_removes_a_killed_runs_vip() -> Result<()> {
    const LEFT: &str = "10.83.0.5";
    let (ns, _idle, cfg) = lone_node(
        "vrrp-olv",
        "10.83.0.2/24",
        ("VI_O", 92, 255),
        &format!("{LEFT}/32"),
    )?;
    let node = ns.enter_thread(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            // What a killed run leaves: the VIP, added the way lbctl adds it.
            let nl = lbctl::vrrp::netlink::Netlink::connect()?;
            let link = nl.link("eth0").await?;
            let addr: std::net::IpAddr = LEFT.parse()?;
            nl.add_address(link.index, addr, 32).await?;
            let found = nl.addresses(link.index).await?;
            ensure!(
                found.iter().any(|a| a.address == addr && a.added_by_lbctl),
                "the added address is not marked: {found:?}"
            );
            let cancel = CancellationToken::new();
            let instances = run_instances(&cfg, None, &cancel).await?;
            let h = instances.get("VI_O").ok_or_else(|| anyhow!("no VI_O"))?;
            wait_for("owner Master", Duration::from_secs(3), || {
                h.state().state == State::Master
            })
            .await?;
            let errors = instances.shutdown().await;
            ensure!(errors.is_empty(), "instance errors: {errors:?}");
            Ok(())
        })
    })?;
    node.join()
        .map_err(|_| anyhow!("node thread panicked"))?
        .and_then(|r| r)?;
    ensure!(
        !ns.has_addr(LEFT),
        "the owner kept a VIP a killed run had added"
    );
    ensure!(ns.has_addr("10.83.0.2"), "primary address gone");
    Ok(())
}
